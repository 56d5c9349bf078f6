import NIOCore
import NIOPosix
import Synchronization

/// An origin that answers each request head with bytes a test scripts exactly: a broken or
/// hostile origin (a bad status line, a lying chunk size, an unsolicited 304) that a real HTTP
/// server library would refuse to produce. Loopback only; `shutdown()` stops it.
public final class RawOrigin: Sendable {
    /// What to send for one request: these bytes, then close the connection or keep it open.
    public struct Reply: Sendable {
        public var bytes: [UInt8]
        public var close: Bool
        /// More bytes, sent this many milliseconds after the first ones (a stream that goes
        /// wrong mid-body).
        public var later: (milliseconds: Int64, bytes: [UInt8])?

        public init(_ text: String, close: Bool = false, later: (milliseconds: Int64, text: String)? = nil) {
            self.bytes = Array(text.utf8)
            self.close = close
            self.later = later.map { ($0.milliseconds, Array($0.text.utf8)) }
        }
    }

    private let script: @Sendable (_ requestHead: String) -> Reply
    private let received = Mutex<[String]>([])
    private let group: MultiThreadedEventLoopGroup
    private let channel = Mutex<(any Channel)?>(nil)

    private init(script: @escaping @Sendable (String) -> Reply) {
        self.script = script
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    }

    /// Starts listening on 127.0.0.1 (any free port); `script` gets each request's head (the
    /// text up to its blank line) and says what to send back.
    public static func start(_ script: @escaping @Sendable (_ requestHead: String) -> Reply) async throws -> RawOrigin {
        let origin = RawOrigin(script: script)
        let channel = try await ServerBootstrap(group: origin.group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(RawOriginHandler(origin: origin))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        origin.channel.withLock { $0 = channel }
        return origin
    }

    public var port: Int { self.channel.withLock { $0?.localAddress?.port ?? 0 } }

    /// The request heads received so far, in order.
    public var requests: [String] { self.received.withLock { $0 } }

    fileprivate func reply(to head: String) -> Reply {
        self.received.withLock { $0.append(head) }
        return self.script(head)
    }

    public func shutdown() async {
        let channel = self.channel.withLock { $0 }
        try? await channel?.close()
        try? await self.group.shutdownGracefully()
    }
}

private final class RawOriginHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let origin: RawOrigin
    private var pending: [UInt8] = []

    init(origin: RawOrigin) {
        self.origin = origin
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = Self.unwrapInboundIn(data)
        self.pending.append(contentsOf: buffer.readBytes(length: buffer.readableBytes) ?? [])
        // Request bodies are not read: a scripted origin answers heads.
        while let end = Self.headEnd(self.pending) {
            let head = String(decoding: self.pending[..<end], as: UTF8.self)
            self.pending.removeFirst(end)
            let reply = self.origin.reply(to: head)
            let out = context.channel.allocator.buffer(bytes: reply.bytes)
            if reply.close {
                let channel = context.channel
                context.writeAndFlush(Self.wrapOutboundOut(out)).whenComplete { _ in channel.close(promise: nil) }
                return
            }
            context.writeAndFlush(Self.wrapOutboundOut(out), promise: nil)
            if let later = reply.later {
                let channel = context.channel
                let bytes = later.bytes
                context.eventLoop.scheduleTask(in: .milliseconds(later.milliseconds)) {
                    channel.writeAndFlush(channel.allocator.buffer(bytes: bytes), promise: nil)
                }
            }
        }
    }

    private static func headEnd(_ bytes: [UInt8]) -> Int? {
        guard bytes.count >= 4 else { return nil }
        for i in 0...(bytes.count - 4)
        where bytes[i] == 13 && bytes[i + 1] == 10 && bytes[i + 2] == 13 && bytes[i + 3] == 10 {
            return i + 4
        }
        return nil
    }
}
