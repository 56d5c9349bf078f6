import NIOCore
import NIOHTTP1
import NIOPosix

/// The slow origin `--demo` puts behind the cache: part of the product, small on purpose.
///
/// Every answer takes `/delay/MS/…` milliseconds (1 s when the path does not say), and carries
/// `Cache-Control` from `?cc=` and its body from `?body=` (`+` and `%XX` decoded), so the curl
/// lines the demo prints show a slow MISS, then an instant HIT.
final class DemoOrigin: Sendable {
    private let channel: any Channel
    private let group: MultiThreadedEventLoopGroup

    private init(channel: any Channel, group: MultiThreadedEventLoopGroup) {
        self.channel = channel
        self.group = group
    }

    var port: Int { self.channel.localAddress?.port ?? 0 }

    /// Starts listening on 127.0.0.1, on any free port.
    static func start() async throws -> DemoOrigin {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        do {
            let channel = try await ServerBootstrap(group: group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelInitializer { channel in
                    channel.pipeline.configureHTTPServerPipeline(withErrorHandling: true).flatMapThrowing {
                        try channel.pipeline.syncOperations.addHandler(Handler())
                    }
                }
                .bind(host: "127.0.0.1", port: 0).get()
            return DemoOrigin(channel: channel, group: group)
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
    }

    func shutdown() async throws {
        try? await self.channel.close().get()
        try await self.group.shutdownGracefully()
    }

    private final class Handler: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard case .head(let head) = self.unwrapInboundIn(data) else { return }
            let (delay, headers, body) = Self.answer(uri: head.uri)
            let keepAlive = head.isKeepAlive
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            context.eventLoop.scheduleTask(in: .milliseconds(Int64(delay))) {
                let (handler, context) = loopBound.value
                var buffer = context.channel.allocator.buffer(capacity: body.utf8.count)
                buffer.writeString(body)
                var fields = headers
                fields.add(name: "Content-Length", value: String(buffer.readableBytes))
                if !keepAlive { fields.add(name: "Connection", value: "close") }
                context.write(handler.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: fields))), promise: nil)
                context.write(handler.wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
                context.writeAndFlush(handler.wrapOutboundOut(.end(nil)), promise: nil)
            }
        }

        /// The delay, header fields and body for a request target.
        static func answer(uri: String) -> (delay: Int, headers: HTTPHeaders, body: String) {
            let parts = uri.split(separator: "?", maxSplits: 1)
            let segments = parts.first.map { $0.split(separator: "/") } ?? []
            var delay = 1000
            if segments.count >= 2, segments[0] == "delay", let milliseconds = Int(segments[1]) {
                delay = min(max(0, milliseconds), 60_000)
            }
            var headers = HTTPHeaders([("Content-Type", "text/plain; charset=utf-8")])
            var body = "Hello from the Lacquer demo origin\n"
            for pair in parts.count > 1 ? parts[1].split(separator: "&") : [] {
                let field = pair.split(separator: "=", maxSplits: 1)
                guard field.count == 2 else { continue }
                let value = Self.decode(field[1])
                switch field[0] {
                case "cc": headers.add(name: "Cache-Control", value: value)
                case "body": body = value + "\n"
                default: break
                }
            }
            return (delay, headers, body)
        }

        /// `+` as space and `%XX` escapes; malformed escapes are kept as they are.
        static func decode(_ text: Substring) -> String {
            var bytes: [UInt8] = []
            var iterator = Array(text.utf8)[...]
            while let byte = iterator.popFirst() {
                if byte == UInt8(ascii: "+") {
                    bytes.append(UInt8(ascii: " "))
                } else if byte == UInt8(ascii: "%"), iterator.count >= 2,
                    let value = UInt8(String(decoding: iterator.prefix(2), as: UTF8.self), radix: 16)
                {
                    bytes.append(value)
                    iterator = iterator.dropFirst(2)
                } else {
                    bytes.append(byte)
                }
            }
            // Control bytes would make an invalid field value: spaces instead.
            return String(decoding: bytes.map { $0 < 0x20 || $0 == 0x7F ? UInt8(ascii: " ") : $0 }, as: UTF8.self)
        }
    }
}
