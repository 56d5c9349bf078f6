import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOSSL
import NIOTLS
import Synchronization

/// What one client connection's requests may want to know beyond their own bytes: the
/// addresses (those of the TCP socket, or those a PROXY protocol header named) and, behind TLS,
/// the session's facts. Shared by every request of the connection (every stream of an HTTP/2
/// connection); confined to the connection's event loop.
final class ConnectionFacts {
    var peer: SocketAddress?
    var local: SocketAddress?
    var tls: TLSFacts?

    init(peer: SocketAddress?, local: SocketAddress?) {
        self.peer = peer
        self.local = local
    }
}

/// A TLS session as VCL and the origin see it (Varnish Enterprise's vmod tls names).
public struct TLSFacts: Sendable, Hashable {
    /// `TLSv1.2` or `TLSv1.3`.
    public var version: String
    /// The name the client asked for (SNI), if it sent one.
    public var serverName: String?
    /// The protocol ALPN settled on (`h2`, `http/1.1`), if any.
    public var alpn: String?

    static func versionName(_ version: TLSVersion?) -> String {
        switch version {
        case .tlsv13: "TLSv1.3"
        case .tlsv12: "TLSv1.2"
        case .tlsv11: "TLSv1.1"
        case .tlsv1: "TLSv1"
        case nil: "-"
        }
    }
}

/// Builds a client connection's pipeline for its listener: optional PROXY header, optional
/// TLS (certificate by SNI, protocol by ALPN), then HTTP/1.1 or HTTP/2. Every protocol ends in
/// the same `ClientChannelHandler` and request flow.
enum ClientPipeline {
    /// The HTTP/2 connection preface (RFC 9113 §3.4), which a prior-knowledge client sends first.
    static let http2Preface: [UInt8] = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    /// Called in the child channel initializer, once the connection limits admitted it.
    static func configure(
        _ channel: any Channel, listener: HostAndPort, context: ServerContext, tls: TLSCertificates?
    ) throws {
        let facts = ConnectionFacts(peer: channel.remoteAddress, local: channel.localAddress)
        let sync = channel.pipeline.syncOperations
        if listener.tls, let tls {
            if listener.proxyProtocol {
                try sync.addHandler(ProxyProtocolHandler(counters: context.counters) { facts.adopt(source: $0, destination: $1) })
            }
            try self.addTLS(channel, facts: facts, context: context, certificates: tls, listener: listener)
        } else if listener.http2PriorKnowledge {
            if listener.proxyProtocol {
                try sync.addHandler(ProxyProtocolHandler(counters: context.counters) { facts.adopt(source: $0, destination: $1) })
            }
            try sync.addHandler(
                HTTP2PrefaceDetector { isHTTP2 in
                    if isHTTP2 {
                        try self.addHTTP2(channel, facts: facts, context: context)
                    } else {
                        try self.addHTTP1(channel, facts: facts, context: context, proxyProtocol: false)
                    }
                })
        } else {
            try self.addHTTP1(channel, facts: facts, context: context, proxyProtocol: listener.proxyProtocol)
        }
    }

    /// SNI picks the certificate; the handshake must finish within the header timeout; ALPN then
    /// picks HTTP/2 or HTTP/1.1.
    private static func addTLS(
        _ channel: any Channel, facts: ConnectionFacts, context: ServerContext, certificates: TLSCertificates, listener: HostAndPort
    ) throws {
        let loop = channel.eventLoop
        let counters = context.counters
        let timeout = context.configuration.clientTimeouts.header
        let handshakeTimer = loop.scheduleTask(in: timeout) {
            counters.increment(.tlsHandshakeTimeouts)
            channel.close(promise: nil)
        }
        channel.closeFuture.whenComplete { _ in handshakeTimer.cancel() }
        let sni = ByteToMessageHandler(
            SNIHandler { result in
                var serverName: String?
                if case .hostname(let name) = result { serverName = name }
                let tlsHandler = NIOSSLServerHandler(context: certificates.context(for: serverName))
                let negotiation = ApplicationProtocolNegotiationHandler { alpn, channel in
                    handshakeTimer.cancel()
                    counters.increment(.tlsHandshakes)
                    var protocolName: String?
                    if case .negotiated(let name) = alpn { protocolName = name }
                    let version = try? channel.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self).tlsVersion
                    facts.tls = TLSFacts(version: TLSFacts.versionName(version), serverName: serverName, alpn: protocolName)
                    return channel.eventLoop.makeCompletedFuture {
                        if protocolName == "h2" {
                            try self.addHTTP2(channel, facts: facts, context: context)
                        } else {
                            try self.addHTTP1(channel, facts: facts, context: context, proxyProtocol: false)
                        }
                    }
                }
                return channel.eventLoop.makeCompletedFuture {
                    // The counter sits before the negotiation handler, which keeps the
                    // handshake-completed event to itself; the coalescer joins small writes
                    // into full records.
                    try channel.pipeline.syncOperations.addHandlers([
                        tlsHandler, TLSRecordCoalescer(), TLSFailureCounter(counters: counters), negotiation,
                    ])
                }
            })
        try channel.pipeline.syncOperations.addHandler(sni)
    }

    /// The HTTP/1.1 pipeline: the byte observer, the hit fast lane, then the connection; the
    /// lane adds the rest (`addRequestDecoder`) before the connection when it first needs it.
    static func addHTTP1(_ channel: any Channel, facts: ConnectionFacts, context: ServerContext, proxyProtocol: Bool) throws {
        let handler = ClientChannelHandler(server: context, eventLoop: channel.eventLoop, facts: facts)
        // Behind TLS the session is known by now (ALPN chose HTTP/1.1); only plain TCP takes files.
        handler.sendsFiles = facts.tls == nil && context.configuration.sendfile
        let observer = FirstByteObserver()
        observer.traffic = context.traffic(on: channel.eventLoop)
        let sync = channel.pipeline.syncOperations
        try sync.addHandler(observer)
        if proxyProtocol {
            try sync.addHandler(
                ProxyProtocolHandler(counters: context.counters) { source, destination in
                    facts.adopt(source: source, destination: destination)
                    handler.adoptProxiedAddresses()
                })
        }
        let settings = context.connectionSettings  // a reference: no copy of the limits per connection
        // The lane holds the connection and the observer strongly (neither holds the lane, so
        // there is no cycle): a weak reference would give each a side table, and every retain
        // and release NIO makes of them per event would take the runtime's slow path.
        try sync.addHandler(
            HitFastLane(server: context, connection: handler) { pipeline in
                try self.addRequestDecoder(pipeline, before: handler, limits: settings.limits)
                observer.startKeepingPrefix()
            })
        try sync.addHandler(handler)
        let bound = NIOLoopBound(handler, eventLoop: channel.eventLoop)
        observer.onBytes = { bound.value.bytesArrived() }
    }

    /// The response encoder, the HTTP/1.1 request decoder and NIO's pipelining handler, added
    /// before `handler` when the hit lane first hands it a request: a connection whose requests
    /// the lane answers (hits, written as bytes) never builds them, which keeps an idle
    /// keep-alive connection smaller.
    static func addRequestDecoder(_ pipeline: ChannelPipeline.SynchronousOperations, before handler: ClientChannelHandler, limits: Limits) throws {
        // Generous parser limits; the exact HARDENING limits (414/431) are checked on the parsed head.
        var decoderLimits = NIOHTTPDecoderLimitConfiguration()
        decoderLimits.maxHeaderFieldSize = max(limits.requestLineBytes, limits.headerFieldBytes) * 2
        decoderLimits.maxHeaderListSize = limits.headerTotalBytes * 2
        decoderLimits.maxHeaderFieldCount = limits.headerFieldCount * 2
        let encoder = ResponseEncoder()
        handler.encoder = encoder
        let framingGuard = ChunkedFramingGuard(side: .request, maxChunkExtensionBytes: limits.chunkExtensionBytes)
        handler.framingGuard = framingGuard
        try pipeline.addHandlers(
            [
                encoder,
                framingGuard,
                ByteToMessageHandler(
                    HTTPRequestDecoder(
                        leftOverBytesStrategy: .dropBytes, informationalResponseStrategy: .drop, limitConfiguration: decoderLimits)),
                HTTPServerPipelineHandler(),
            ],
            position: .before(handler))
    }

    /// The HTTP/2 pipeline (RFC 9113): NIO's frame handler with our limits, its connection
    /// manager (idle close, graceful GOAWAY on drain), and per stream the HTTP/1-style codec, an
    /// adapter for what HTTP/2 does differently, and the same connection handler as HTTP/1.1.
    static func addHTTP2(_ channel: any Channel, facts: ConnectionFacts, context: ServerContext) throws {
        let configuration = context.configuration
        let observer = FirstByteObserver()
        observer.traffic = context.traffic(on: channel.eventLoop)
        let sync = channel.pipeline.syncOperations
        try sync.addHandler(observer)
        var connection = NIOHTTP2Handler.ConnectionConfiguration()
        connection.initialSettings = [
            HTTP2Setting(parameter: .maxConcurrentStreams, value: configuration.limits.http2MaxConcurrentStreams),
            HTTP2Setting(parameter: .maxHeaderListSize, value: configuration.limits.headerTotalBytes),
            HTTP2Setting(parameter: .initialWindowSize, value: 1 << 20),
        ]
        // CVE-2024-27316: a header block may not go on in CONTINUATION frames for ever.
        connection.maximumSequentialContinuationFrames = 5
        connection.maximumRecentlyResetStreams = 32
        connection.targetWindowSize = 4 << 20
        var stream = NIOHTTP2Handler.StreamConfiguration()
        stream.targetWindowSize = 1 << 20
        // CVE-2023-44487 (rapid reset): a client that opens and cancels streams faster than
        // this is sent GOAWAY (ENHANCE_YOUR_CALM) and closed.
        stream.streamResetFrameRateLimit.maximumCount = configuration.limits.http2MaxResetsPer30s
        stream.streamResetFrameRateLimit.windowLength = .seconds(30)
        stream.outboundBufferSizeHighWatermark = 64 << 10
        stream.outboundBufferSizeLowWatermark = 16 << 10
        let manager = NIOHTTP2ServerConnectionManagementHandler(
            eventLoop: channel.eventLoop,
            configuration: .init(
                maxIdleTime: configuration.clientTimeouts.idle, maxAge: nil,
                maxGraceTime: .milliseconds(Int64(max(1, configuration.drainTimeout) * 1000)), keepalive: nil))
        let counters = context.counters
        let boundFacts = NIOLoopBound(facts, eventLoop: channel.eventLoop)
        // NIO's handler passes frames on; the hit lane answers plain hits before any stream
        // channel exists, and the multiplexer gives every other stream the full pipeline.
        try sync.addHandler(NIOHTTP2Handler(mode: .server, connectionConfiguration: connection, streamConfiguration: stream))
        try sync.addHandler(manager)
        try sync.addHandler(HTTP2HitLane(server: context, facts: facts))
        try sync.addHandler(
            HTTP2StreamMultiplexer(
                mode: .server, channel: channel, targetWindowSize: stream.targetWindowSize,
                outboundBufferSizeHighWatermark: stream.outboundBufferSizeHighWatermark,
                outboundBufferSizeLowWatermark: stream.outboundBufferSizeLowWatermark
            ) { streamChannel in
                streamChannel.eventLoop.makeCompletedFuture {
                    let handler = ClientChannelHandler(
                        server: context, eventLoop: streamChannel.eventLoop, facts: boundFacts.value, isStream: true)
                    try streamChannel.pipeline.syncOperations.addHandlers([
                        HTTP2FramePayloadToHTTP1ServerCodec(normalizeHTTPHeaders: true), HTTP2StreamAdapter(), handler,
                    ])
                }
            })
        try sync.addHandler(HTTP2ConnectionErrorHandler(counters: counters))
        counters.increment(.http2Connections)
        let drain = HTTP2ConnectionDrain(channel: channel)
        context.register(drain)
        let boundDrain = NIOLoopBound(drain, eventLoop: channel.eventLoop)
        channel.closeFuture.whenComplete { _ in context.unregister(boundDrain.value) }
        if context.draining.load(ordering: .relaxed) { drain.drain() }
    }
}

extension ConnectionFacts {
    func adopt(source: SocketAddress?, destination: SocketAddress?) {
        if let source { self.peer = source }
        if let destination { self.local = destination }
    }
}

/// Counts handshakes that failed (bad client hello, no shared cipher or version, …) and closes
/// their connections; it leaves once a handshake completes, so a client that later goes away
/// without a TLS close is not counted.
final class TLSFailureCounter: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    private let counters: Counters
    private var established = false

    init(counters: Counters) {
        self.counters = counters
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .handshakeCompleted = event as? TLSUserEvent {
            self.established = true
            context.fireUserInboundEventTriggered(event)
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !self.established, error is NIOSSLError || error is BoringSSLError {
            self.counters.increment(.tlsHandshakeFailures)
            self.established = true  // counted once
        }
        context.close(promise: nil)
    }
}

/// The end of an HTTP/2 connection's pipeline: a connection error NIO's handler raised (a
/// protocol violation, a flood it refused) has been answered with GOAWAY; the connection closes.
/// Any other error (the client reset the socket, TLS ended without close_notify) closes it too,
/// but is not counted as a protocol error.
final class HTTP2ConnectionErrorHandler: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame
    private let counters: Counters
    private var counted = false

    init(counters: Counters) {
        self.counters = counters
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !self.counted, error is any NIOHTTP2Error {
            self.counted = true  // one connection, one count
            self.counters.increment(.http2ConnectionErrors)
        }
        context.close(promise: nil)
    }
}

/// On a listener that takes HTTP/2 with prior knowledge (`,h2c`): looks at the first bytes; the
/// HTTP/2 preface (RFC 9113 §3.4) makes the connection HTTP/2, anything else HTTP/1.1.
final class HTTP2PrefaceDetector: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private var buffered: ByteBuffer?
    private let decided: (Bool) throws -> Void
    private var done = false

    init(decided: @escaping (Bool) throws -> Void) {
        self.decided = decided
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !self.done else { return context.fireChannelRead(data) }
        var buffer = self.unwrapInboundIn(data)
        if var buffered = self.buffered {
            self.buffered = nil
            buffered.writeBuffer(&buffer)
            buffer = buffered
        }
        let preface = ClientPipeline.http2Preface
        let count = min(buffer.readableBytes, preface.count)
        let matches = buffer.withUnsafeReadableBytes { bytes in bytes.prefix(count).elementsEqual(preface.prefix(count)) }
        if matches && count < preface.count {
            self.buffered = buffer
            return
        }
        self.done = true
        do {
            try self.decided(matches)
        } catch {
            context.close(promise: nil)
            return
        }
        context.fireChannelRead(self.wrapInboundOut(buffer))
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}

/// Between NIO's HTTP/2-to-HTTP/1 codec and the connection handler of a stream: the flow
/// writes HTTP/1.1-style responses, and this makes them right for HTTP/2.
/// - Cookie fields a client split (RFC 9113 §8.2.3) are joined into one with "; " for the
///   flow, VCL and the origin.
/// - A response to HEAD carries no DATA (RFC 9110 §9.3.2): body parts are dropped.
/// - Connection-specific fields are removed by the codec (RFC 9113 §8.2.2).
final class HTTP2StreamAdapter: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private var respondingToHead = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(var head) = self.unwrapInboundIn(data) else {
            return context.fireChannelRead(data)
        }
        self.respondingToHead = head.method == .HEAD
        let cookies = head.headers["cookie"]
        if cookies.count > 1 {
            head.headers.remove(name: "cookie")
            head.headers.add(name: "Cookie", value: cookies.joined(separator: "; "))
        }
        context.fireChannelRead(self.wrapInboundOut(.head(head)))
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if self.respondingToHead, case .body = self.unwrapOutboundIn(data) {
            promise?.succeed(())
            return
        }
        context.write(data, promise: promise)
    }
}

/// A drain (SIGTERM) of an HTTP/2 connection: GOAWAY, then close once its streams are done
/// (NIO's connection manager, asked with `ChannelShouldQuiesceEvent`).
final class HTTP2ConnectionDrain: DrainableConnection {
    let eventLoop: any EventLoop
    private let channel: any Channel

    init(channel: any Channel) {
        self.channel = channel
        self.eventLoop = channel.eventLoop
    }

    func drain() {
        self.channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
    }
}
