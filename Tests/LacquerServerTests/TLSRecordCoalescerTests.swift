import NIOCore
import NIOEmbedded
import Testing

@testable import LacquerServer

/// The writer before the TLS handler on its own: what reaches TLS for a flush of small and large
/// writes, in which order, and what becomes of the writes' promises.
@Suite("TLS record coalescer")
struct TLSRecordCoalescerTests {
    private func channel() throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(TLSRecordCoalescer())
        return channel
    }

    /// The buffers that reached the head of the pipeline, as strings.
    private func written(_ channel: EmbeddedChannel) throws -> [String] {
        var pieces: [String] = []
        while let data = try channel.readOutbound(as: IOData.self) {
            guard case .byteBuffer(let buffer) = data else { continue }
            pieces.append(String(buffer: buffer))
        }
        return pieces
    }

    private func write(_ channel: EmbeddedChannel, _ text: String) -> EventLoopFuture<Void> {
        let promise = channel.eventLoop.makePromise(of: Void.self)
        channel.write(IOData.byteBuffer(ByteBuffer(string: text)), promise: promise)
        return promise.futureResult
    }

    @Test("small writes between two flushes reach TLS as one buffer, and every write's promise succeeds")
    func smallWritesJoin() throws {
        let channel = try self.channel()
        let futures = ["HEADERS", "DATA-HEAD", "body bytes"].map { self.write(channel, $0) }
        #expect(try self.written(channel).isEmpty, "nothing goes on before the flush")
        channel.flush()
        #expect(try self.written(channel) == ["HEADERSDATA-HEADbody bytes"])
        for future in futures {
            #expect(throws: Never.self) { try future.wait() }
        }
        // The next flush starts afresh; a lone write goes on as it is.
        _ = self.write(channel, "PING")
        channel.flush()
        #expect(try self.written(channel) == ["PING"])
        #expect(try channel.finish().isClean)
    }

    @Test("a large write goes on unchanged and in order; runs around it are joined up to a record's size")
    func orderAndRecordSize() throws {
        let channel = try self.channel()
        let large = String(repeating: "L", count: TLSRecordCoalescer.smallWrite + 1)
        let quarter = String(repeating: "q", count: TLSRecordCoalescer.recordBytes / 4)
        for text in ["a", large, "b", "c", quarter, quarter, quarter, quarter, "d"] {
            _ = self.write(channel, text)
        }
        channel.flush()
        let pieces = try self.written(channel)
        #expect(pieces.joined() == "a" + large + "bc" + quarter + quarter + quarter + quarter + "d", "bytes and order kept")
        #expect(pieces.map(\.count) == [1, large.count, 2 + 3 * quarter.count, quarter.count + 1])
        #expect(pieces.allSatisfy { $0.count <= TLSRecordCoalescer.recordBytes })
        #expect(try channel.finish().isClean)
    }

    /// Records what reaches it from the coalescer, at the head's side of it.
    final class Recorder: ChannelOutboundHandler {
        typealias OutboundIn = IOData
        var events: [String] = []
        var context: ChannelHandlerContext?
        func handlerAdded(context: ChannelHandlerContext) { self.context = context }
        func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
            if case .byteBuffer(let buffer) = self.unwrapOutboundIn(data) { self.events.append("write " + String(buffer: buffer)) }
            context.write(data, promise: promise)
        }
        func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
            self.events.append("close")
            context.close(mode: mode, promise: promise)
        }
    }

    @Test("writes held when the connection is closed go on before the close; held when it closes from below, their promises fail")
    func closeWithHeldWrites() throws {
        let channel = EmbeddedChannel()
        let recorder = Recorder()
        try channel.pipeline.syncOperations.addHandlers([recorder, TLSRecordCoalescer()])
        _ = self.write(channel, "one")
        _ = self.write(channel, "two")
        channel.close(promise: nil)
        channel.embeddedEventLoop.run()
        #expect(recorder.events == ["write onetwo", "close"])

        // The socket fails under the coalescer (a reset): the channel closes without passing it.
        let failed = EmbeddedChannel()
        let below = Recorder()
        try failed.pipeline.syncOperations.addHandlers([below, TLSRecordCoalescer()])
        let held = [self.write(failed, "three"), self.write(failed, "four")]
        below.context?.close(promise: nil)
        failed.embeddedEventLoop.run()
        #expect(below.events.isEmpty, "nothing is written after the close")
        for future in held {
            #expect(throws: ChannelError.ioOnClosedChannel) { try future.wait() }
        }
    }
}
