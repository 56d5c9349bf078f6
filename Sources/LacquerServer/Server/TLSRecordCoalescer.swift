import NIOCore

/// Sits right after the TLS handler and holds the writes between two flushes, so that a run of
/// small ones (an HTTP/2 answer is a HEADERS frame, a DATA frame header and its payload; a read
/// answers several streams) is handed to TLS as one buffer and sealed as one record of up to
/// 2^14 bytes (RFC 8446 §5.1) instead of one record per piece: fewer seal operations, 22 bytes
/// of record overhead less per piece. Larger writes, and runs of one, go on unchanged; order and
/// promises are kept.
final class TLSRecordCoalescer: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = IOData
    typealias OutboundOut = IOData

    /// TLS's largest record plaintext.
    static let recordBytes = 16 * 1024
    /// Writes up to this size are gathered; larger ones are a record of their own anyway.
    static let smallWrite = 4 * 1024

    private var pending: [(data: IOData, promise: EventLoopPromise<Void>?)] = []
    /// The array being written out (kept to reuse its storage).
    private var writing: [(data: IOData, promise: EventLoopPromise<Void>?)] = []
    private var isWriting = false

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        self.pending.append((self.unwrapOutboundIn(data), promise))
    }

    func flush(context: ChannelHandlerContext) {
        self.writePending(context: context)
        context.flush()
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        self.writePending(context: context)
        context.close(mode: mode, promise: promise)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        if context.channel.isActive {
            self.writePending(context: context)
        } else {
            let dropped = self.pending
            self.pending.removeAll()
            for write in dropped { write.promise?.fail(ChannelError.ioOnClosedChannel) }
        }
    }

    /// Hands the held writes on in order, each run of two or more small buffers (together at
    /// most a record) joined into one.
    private func writePending(context: ChannelHandlerContext) {
        guard !self.isWriting else { return }  // a write's callback flushed; the loop below takes it
        self.isWriting = true
        defer { self.isWriting = false }
        while !self.pending.isEmpty {
            swap(&self.pending, &self.writing)
            var index = 0
            let count = self.writing.count
            while index < count {
                var end = index
                var bytes = 0
                while end < count, case .byteBuffer(let buffer) = self.writing[end].data,
                    buffer.readableBytes <= Self.smallWrite, bytes + buffer.readableBytes <= Self.recordBytes
                {
                    bytes += buffer.readableBytes
                    end += 1
                }
                if end - index < 2 {
                    let write = self.writing[index]
                    context.write(self.wrapOutboundOut(write.data), promise: write.promise)
                    index += 1
                    continue
                }
                var joined = context.channel.allocator.buffer(capacity: bytes)
                var promise: EventLoopPromise<Void>?
                for write in self.writing[index..<end] {
                    if case .byteBuffer(let buffer) = write.data { joined.writeImmutableBuffer(buffer) }
                    guard let each = write.promise else { continue }
                    if let first = promise {
                        let all = context.eventLoop.makePromise(of: Void.self)
                        all.futureResult.cascade(to: first)
                        all.futureResult.cascade(to: each)
                        promise = all
                    } else {
                        promise = each
                    }
                }
                context.write(self.wrapOutboundOut(.byteBuffer(joined)), promise: promise)
                index = end
            }
            self.writing.removeAll(keepingCapacity: true)
        }
    }
}
