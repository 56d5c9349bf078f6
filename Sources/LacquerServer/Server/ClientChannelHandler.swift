import CachePolicy
import CacheStore
import NIOCore
import NIOHTTP1
import Synchronization

/// Notes the first bytes of each request so the header timeout (10 s from the first byte)
/// can replace the keep-alive idle timeout. Sits before the HTTP decoder.
final class FirstByteObserver: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = IOData
    typealias OutboundOut = IOData
    var onBytes: (() -> Void)?
    /// Where bytes in and out are counted (`client_bytes_received`, `client_bytes_sent`): the
    /// loop's own figures, so loops never contend for a cache line.
    var traffic: LoopTraffic?
    /// The first bytes of the latest read (at most ``prefixLimit``), copied into storage
    /// allocated once: enough to tell an unknown method from a malformed request line when the
    /// parser rejects the method. Kept only once the connection has a decoder
    /// (`startKeepingPrefix`): reads the hit lane answers need none.
    private(set) var prefix: [UInt8] = []
    static let prefixLimit = 256
    private var keepsPrefix = false
    /// The read being passed on, while it is (so the decoder added for it can have its prefix).
    private var current: ByteBuffer?

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if let traffic = self.traffic {
            traffic.sent.wrappingAdd(self.unwrapOutboundIn(data).readableBytes, ordering: .relaxed)
        }
        context.write(data, promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.onBytes?()
        let buffer = self.unwrapInboundIn(data)
        self.traffic?.received.wrappingAdd(buffer.readableBytes, ordering: .relaxed)
        if self.keepsPrefix {
            self.keepPrefix(of: buffer)
            return context.fireChannelRead(data)
        }
        self.current = buffer
        context.fireChannelRead(data)
        self.current = nil
    }

    /// The decoder was added: from now on (from the read being passed on, if any) each read's
    /// start is kept.
    func startKeepingPrefix() {
        self.keepsPrefix = true
        if let current = self.current { self.keepPrefix(of: current) }
    }

    private func keepPrefix(of buffer: ByteBuffer) {
        let count = min(buffer.readableBytes, Self.prefixLimit)
        if self.prefix.capacity < Self.prefixLimit {
            self.prefix.reserveCapacity(Self.prefixLimit)
        }
        self.prefix.removeAll(keepingCapacity: true)
        buffer.withUnsafeReadableBytes { bytes in
            self.prefix.append(contentsOf: bytes.prefix(count))
        }
    }


    /// Whether `bytes` start like a well-formed request line (RFC 9112 §3: token SP target SP
    /// HTTP-version) whose method the parser merely does not know: 501, not 400.
    static func looksLikeUnknownMethod(_ bytes: [UInt8]) -> Bool {
        guard let space = bytes.firstIndex(of: UInt8(ascii: " ")), space > 0 else { return false }
        guard bytes[..<space].allSatisfy(FastRequestHead.isTokenByte) else { return false }
        let afterMethod = bytes[(space + 1)...]
        let lineEnd = afterMethod.firstIndex(of: UInt8(ascii: "\n"))
        var line = lineEnd.map { afterMethod[..<$0] } ?? afterMethod
        if line.last == UInt8(ascii: "\r") { line = line.dropLast() }
        guard let first = line.first, first == UInt8(ascii: "/") || first == UInt8(ascii: "*") else { return false }
        let parts = line.split(separator: UInt8(ascii: " "), omittingEmptySubsequences: false)
        if lineEnd == nil {
            // Cut off inside the target: judge what arrived.
            return parts.count <= 2 && !parts[0].contains(where: { $0 < 0x21 || $0 == 0x7F })
        }
        guard parts.count == 2, !parts[0].contains(where: { $0 < 0x21 || $0 == 0x7F }) else { return false }
        let version = Array(parts[1])
        return version.count == 8 && version.starts(with: Array("HTTP/".utf8))
            && (0x30...0x39).contains(version[5]) && version[6] == UInt8(ascii: ".")
            && (0x30...0x39).contains(version[7])
    }
}

/// One client connection: a thin driver of `ClientConnectionStateMachine`. It turns pipeline
/// events into the machine's events and carries out the actions it returns: start a flow per
/// request, stream request bodies to it, write the ends of responses and refusals, schedule the
/// one timer, close. It decides nothing itself, so a confused peer can close the connection but
/// never trap the process.
///
/// `HTTPServerPipelineHandler` (before us) holds pipelined requests back until the previous
/// response's `.end` is written, so at most one flow runs per connection at a time.
///
/// A request with a body starts its flow as soon as its head is valid; the body's parts go to a
/// `RequestBodyStream` as they arrive, and the stream stops our reads from the socket (we
/// swallow `read()`) while the backend does not keep up, so an upload of any size holds only
/// a few reads in memory.
final class ClientChannelHandler: ChannelDuplexHandler, RemovableChannelHandler, RequestBodySource {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart
    typealias StateMachine = ClientConnectionStateMachine<RequestFlow, RequestBodyStream>

    let server: ServerContext
    private var state: StateMachine
    private var context: ChannelHandlerContext?
    private var timer: Scheduled<Void>?
    /// The connection's addresses (the socket's, or those a PROXY header named) and TLS facts.
    let facts: ConnectionFacts
    var peer: SocketAddress? { self.facts.peer }
    var local: SocketAddress? { self.facts.local }
    var tls: TLSFacts? { self.facts.tls }
    /// One stream of an HTTP/2 connection: the connection itself is counted, drained and
    /// timed by its HTTP/2 handlers, and responses go through NIO's codec, never pre-encoded.
    let isStream: Bool
    /// Whether responses may be written as HTTP/1.1 bytes the flow encoded itself.
    var takesPreEncoded: Bool { !self.isStream }
    /// Whether a stored body may be sent from its disk file (`FileBody`): HTTP/1.1 over plain
    /// TCP, set when the pipeline is built.
    var sendsFiles = false
    private var activated = false
    /// Set when the hit fast lane took a rate-limit token for the request it then left to the
    /// decoder (so the request does not pay twice).
    private var admittedByFastLane = false
    /// Methods of requests the fast lane handed to the decoder under the placeholder method,
    /// in order (`ExtensionMethods`).
    private var queuedMethods: [String] = []
    /// The connection's event loop, captured once: a flow may ask for it after the handler was
    /// removed from its pipeline (the client left), so it never depends on the context.
    let eventLoop: any EventLoop
    /// The clock deadlines are measured on (NIO's monotonic one; tests may pass their own).
    private let now: @Sendable () -> NIODeadline

    /// The key the hit lane found nothing stored under, for the request it handed over next
    /// (cleared by that request's disk lookup or at the end of its response).
    private var nothingStored: CacheKey?
    /// The chunk-size reader before the decoder (a parse error it raised is counted as such).
    weak var framingGuard: ChunkedFramingGuard?
    /// The response encoder (told which responses answer HEAD and which are pre-encoded).
    weak var encoder: ResponseEncoder?
    /// The access log record of the request being answered (nil while the log captures nothing).
    /// Kept in storage the connection allocates the first time it logs a request through the
    /// flow and then reuses: a connection that never does (its requests were all hits the lane
    /// answered, or the log is off) carries no record inline.
    private var logRecord: AccessRecord? {
        get { self.logBox?.record }
        set {
            if let box = self.logBox {
                box.record = newValue
            } else if newValue != nil {
                self.logBox = LogRecordBox(newValue)
            }
        }
        _modify {
            let box = self.logBox ?? LogRecordBox(nil)
            self.logBox = box
            yield &box.record
        }
    }
    private var logBox: LogRecordBox?

    private final class LogRecordBox {
        var record: AccessRecord?
        init(_ record: AccessRecord?) { self.record = record }
    }
    /// When the head of the request being answered arrived (nil between requests).
    private var requestStart: NIODeadline?
    /// The X-Cache-Status of the response being written (for the duration histogram).
    private var responseCache: String?
    /// The client's address as the log writes it (taken once per connection).
    private var logClient: String?
    /// The access log queue this connection's loop writes to.
    let logShard: Int

    init(
        server: ServerContext, eventLoop: any EventLoop, facts: ConnectionFacts, isStream: Bool = false,
        now: @escaping @Sendable () -> NIODeadline = { .now() }
    ) {
        self.server = server
        self.eventLoop = eventLoop
        self.facts = facts
        self.isStream = isStream
        self.now = now
        self.state = StateMachine(settings: server.connectionSettings, isHTTP2Stream: isStream)
        self.logShard = server.loopIndex(eventLoop)
    }

    var allocator: ByteBufferAllocator { self.context?.channel.allocator ?? ByteBufferAllocator() }
    var isWritable: Bool { self.context?.channel.isWritable ?? false }
    var isActive: Bool { self.context?.channel.isActive ?? false }
    /// Responses completed for requests that came through the decoder (see the state machine).
    var responsesCompleted: Int { self.state.responsesCompleted }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive {
            // Added once TLS or the protocol choice was done: the channel is active already.
            self.activate(context: context)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.server.unregister(self)
        self.finishRequest(incomplete: true)
        self.dropTimer()
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        self.activate(context: context)
        context.fireChannelActive()
    }

    private func activate(context: ChannelHandlerContext) {
        guard !self.activated else { return }
        self.activated = true
        if !self.isStream { self.server.counters.increment(.sessConn) }
        self.state.activated(now: self.now())
        self.scheduleTimerIfAsked()
        if self.isStream { return }  // an HTTP/2 connection is drained as a whole (GOAWAY)
        self.server.register(self)
        if self.server.draining.load(ordering: .relaxed) {
            self.drain()  // accepted while the listeners were closing
        }
    }

    /// The server is draining: close now if idle, else after the current response.
    func drain() {
        self.run(self.state.drain())
    }

    /// The PROXY protocol header named the client (and the address it connected to) in the
    /// connection's facts: they stand for the TCP peer from now on (logs, X-Forwarded-For,
    /// client.ip, the purge ACL).
    func adoptProxiedAddresses() {
        self.logClient = nil
    }

    /// The fast lane handed the decoder a request whose method travels as the placeholder.
    func queueRequestMethod(_ method: String) {
        self.queuedMethods.append(method)
    }

    /// Called by `FirstByteObserver` and the fast lane: a new request started arriving.
    func bytesArrived() {
        self.state.bytesArrived(now: self.now())
        self.scheduleTimerIfAsked()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(var head):
            if head.method == .SOURCE, !self.queuedMethods.isEmpty {
                head.method = HTTPMethod(rawValue: self.queuedMethods.removeFirst())
            }
            self.server.counters.increment(.clientReq)
            self.requestStart = self.now()
            self.responseCache = nil
            if self.server.accessLog.isCapturing { self.startLogRecord(head) }
            self.encoder?.respondingToHead = head.method == .HEAD
            var retryAfter: Int?
            if self.admittedByFastLane {
                self.admittedByFastLane = false  // the lane took this request's token, then handed it over
            } else if let limiter = self.server.rateLimiter {
                retryAfter = limiter.take(client: self.peer?.ipAddress ?? "", now: self.server.clock())
            }
            self.run(self.state.requestHead(head, now: self.now(), rateLimitedFor: retryAfter))
        case .body(let buffer):
            self.run(self.state.requestBody(bytes: buffer.readableBytes, now: self.now()), body: buffer)
        case .end:
            self.run(self.state.requestEnd(now: self.now()))
        }
    }

    // MARK: - Carrying out actions

    /// Carries out `action`; `body` is the request body part the action is about, if any.
    private func run(_ action: StateMachine.Action, body: ByteBuffer? = nil) {
        switch action {
        case .none:
            break
        case .refuse(let refusal):
            self.writeRefusal(refusal)
        case .writeContinue:
            self.writeContinue()
        case .startFlow(let head, let host, let framing, let sendContinue):
            if sendContinue { self.writeContinue() }
            let upload = framing.map { RequestBodyStream(framing: $0, source: self) }
            let flow = RequestFlow(server: self.server, client: self, head: head, host: host, body: upload)
            self.state.flowStarted(flow, upload: upload, now: self.now())
            self.scheduleTimerIfAsked()
            flow.start()
        case .appendBody(let upload):
            if let body { upload.append(body) }
        case .endBody(let upload):
            if case .read = self.state.resumeReading(now: self.now()) { self.context?.read() }
            upload.end()
        case .bodyTooLarge(let flow, let upload, let refusal):
            upload.abort()
            flow.abandonRequest()
            if let refusal {
                self.writeRefusal(refusal)  // counted under its status
            } else {
                self.server.counters.increment(.clientReq413)
                self.closeNow()
            }
        case .malformedBody(let flow, let upload, let refusal):
            upload.abort()
            flow.abandonRequest()
            self.writeRefusal(refusal)
        case .finishResponse(let close, let detach, let read):
            detach?.detach()
            self.writeEnd(close: close)
            self.finishRequest(incomplete: false)
            if read { self.context?.read() }
        case .abort(let upload):
            upload?.abort()
            self.finishRequest(incomplete: true)
            self.closeNow()
        case .clientGone(let flow, let upload, let uploadCut, let counter):
            if let counter { self.server.counters.increment(counter) }
            if let upload {
                // Gone mid-upload: the backend exchange is abandoned (its connection closed, not reused).
                if uploadCut { self.server.counters.increment(.clientGoneMidUpload) }
                upload.abort()
            }
            if let flow { self.noteFlow(flow) }
            flow?.clientGone()
            self.finishRequest(incomplete: true)
            self.closeNow()
        case .close(let counter):
            if let counter { self.server.counters.increment(counter) }
            self.finishRequest(incomplete: true)
            self.closeNow()
        case .closeWhenSent:
            self.finishRequest(incomplete: true)
            self.closeWhenSent()
        case .read:
            self.context?.read()
        case .measureUnsent:
            self.measureUnsent { handler, unsent in
                handler.run(handler.state.unsentMeasured(unsent, now: handler.now()))
            }
        }
        self.scheduleTimerIfAsked()
    }

    // MARK: - The fast lane

    /// Whether `HitFastLane` may answer the next request itself.
    func fastLaneMayAnswer(handedOver: Int) -> Bool {
        guard self.state.fastLaneMayAnswer(handedOver: handedOver) else { return false }
        if let limiter = self.server.rateLimiter {
            // The rate limit covers hits too; a request over it goes to the decoder, which refuses it.
            guard limiter.take(client: self.peer?.ipAddress ?? "", now: self.server.clock()) == nil else { return false }
            self.admittedByFastLane = true
        }
        return true
    }

    /// `HitFastLane` answered a request: count it (and log it) and go back to waiting for the next one.
    func fastLaneAnswered(log record: AccessRecord? = nil) {
        if let record { self.server.accessLog.record(record, shard: self.logShard) }
        self.admittedByFastLane = false
        self.server.counters.increment(.clientReq)
        self.state.fastLaneAnswered(now: self.now())
        self.scheduleTimerIfAsked()
    }

    // MARK: - Request body backpressure

    func pauseReading() {
        self.state.pauseReading()
    }

    func resumeReading() {
        self.run(self.state.resumeReading(now: self.now()))
    }

    func read(context: ChannelHandlerContext) {
        if self.state.readRequested() {
            context.read()
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        let isWritable = context.channel.isWritable
        self.state.writabilityChanged(isWritable: isWritable, now: self.now())
        self.scheduleTimerIfAsked()
        if isWritable, let flow = self.state.currentFlow {
            flow.clientWritable()
        }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.server.unregister(self)
        self.dropTimer()
        let action = self.state.inactive()
        if case .clientGone(let flow, let upload, let uploadCut, _) = action {
            if let upload {
                if uploadCut { self.server.counters.increment(.clientGoneMidUpload) }
                upload.abort()
            }
            if let flow { self.noteFlow(flow) }
            flow?.clientGone()
        }
        self.finishRequest(incomplete: true)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let parserError = error as? HTTPParserError else {
            return self.closeNow()
        }
        if self.framingGuard?.takeProblem() != nil {
            // A chunk size or extension the decoder would have taken (ChunkedFramingGuard).
            self.server.counters.increment(.clientReqBadFraming)
        }
        let unknownMethod =
            parserError == .invalidMethod && FirstByteObserver.looksLikeUnknownMethod(Self.observedPrefix(context))
        let requestLineTooLong = parserError == .headerOverflow && (self.framingGuard?.scanner.readingStartLine ?? false)
        self.run(self.state.parserError(parserError, unknownMethod: unknownMethod, requestLineTooLong: requestLineTooLong))
    }

    /// The first bytes the connection's byte observer kept (for classifying a parser error),
    /// found through the pipeline on this rare path. Neither handler keeps a weak reference
    /// to the other: a weakly referenced object's every retain and release takes the Swift
    /// runtime's slow path (a side table), and NIO retains handlers on every event.
    private static func observedPrefix(_ context: ChannelHandlerContext) -> [UInt8] {
        (try? context.pipeline.syncOperations.handler(type: FirstByteObserver.self))?.prefix ?? []
    }

    // MARK: - Writing, called by the flow

    func writeHead(_ head: HTTPResponseHead) {
        if head.status.code >= 200 {
            let now = self.now()
            self.state.responseHeadWritten(now: now)
            self.scheduleTimerIfAsked()
            let cache = head.headers.first(name: "x-cache-status")
            self.responseCache = cache
            if self.logRecord != nil {
                self.logRecord?.status = Int(head.status.code)
                self.logRecord?.cache = cache ?? "-"
                self.logRecord?.timeToFirstByte = Self.seconds(now - (self.requestStart ?? now))
            }
        }
        self.context?.write(self.wrapOutboundOut(.head(head)), promise: nil)
    }

    /// The placeholder head that carries a pre-encoded response through the pipeline handler.
    private static let preEncodedPlaceholder = HTTPResponseHead(version: .http1_1, status: .ok)

    func writePreEncoded(_ bytes: ByteBuffer, status: Int, cache: XCacheStatus, bodyBytes: Int) {
        guard let context = self.context, let encoder = self.encoder else { return }
        let now = self.now()
        self.state.responseHeadWritten(now: now)
        self.scheduleTimerIfAsked()
        self.responseCache = cache.rawValue
        if self.logRecord != nil {
            self.logRecord?.status = status
            self.logRecord?.cache = cache.rawValue
            self.logRecord?.timeToFirstByte = Self.seconds(now - (self.requestStart ?? now))
            self.logRecord?.bytes += bodyBytes
        }
        encoder.expectPreEncodedHead()
        context.write(self.wrapOutboundOut(.head(Self.preEncodedPlaceholder)), promise: nil)
        context.write(self.wrapOutboundOut(.body(.byteBuffer(bytes))), promise: nil)
    }

    /// The hit lane found nothing stored under `key` for the request it is handing over.
    func noteNothingStored(_ key: CacheKey) {
        self.nothingStored = key
    }

    func takeNothingStored(_ key: CacheKey) -> Bool {
        defer { self.nothingStored = nil }
        return self.nothingStored == key
    }

    func flush() {
        self.context?.flush()
    }

    func writeBody(_ buffer: ByteBuffer) {
        guard let context = self.context else { return }
        if self.logRecord != nil { self.logRecord?.bytes += buffer.readableBytes }
        context.writeAndFlush(self.wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
    }

    /// Writes body bytes that the end of the response follows at once (one flush for both).
    func writeFinalBody(_ buffer: ByteBuffer) {
        if self.logRecord != nil { self.logRecord?.bytes += buffer.readableBytes }
        self.context?.write(self.wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
    }

    func writeStoredBody(_ buffer: ByteBuffer, of object: StoredObject) {
        guard let context = self.context else { return }
        if self.logRecord != nil { self.logRecord?.bytes += buffer.readableBytes }
        FileBody.write(buffer, of: object, allowed: self.sendsFiles, server: self.server, loop: self.eventLoop) { part, promise in
            context.write(self.wrapOutboundOut(.body(part)), promise: promise)
        }
    }

    func writeBodyFile(_ file: OpenBodyFile, offset: Int, count: Int) {
        guard let context = self.context else { return }
        if self.logRecord != nil { self.logRecord?.bytes += count }
        FileBody.writeRegion(of: file, offset: offset, count: count, loop: self.eventLoop) { part, promise in
            context.write(self.wrapOutboundOut(.body(part)), promise: promise)
        }
    }

    /// Ends the current response; `close` ends the connection after it is flushed.
    func finishResponse(_ flow: RequestFlow, close: Bool) {
        self.nothingStored = nil  // a note its flow did not use is about no later request
        self.noteFlow(flow)
        self.run(self.state.responseFinished(flow, close: close, now: self.now()))
    }

    /// Whether the connection must close after this response (limits reached or client asked).
    func mustCloseAfter(_ head: HTTPRequestHead) -> Bool {
        self.state.mustCloseAfter(head)
    }

    /// Tears the connection down: the client sees a truncated response, never a corrupt one.
    func abort(_ flow: RequestFlow) {
        self.noteFlow(flow)
        self.run(self.state.flowAborted(flow))
    }

    // MARK: - The access log

    var logClientAddress: String {
        if let client = self.logClient { return client }
        let client = self.peer?.ipAddress ?? "-"
        self.logClient = client
        return client
    }

    private func startLogRecord(_ head: HTTPRequestHead) {
        var record = AccessRecord(
            time: self.server.clock(), client: self.logClientAddress, method: head.method.rawValue, target: head.uri,
            proto: Self.protocolName(head.version))
        record.host = head.headers.first(name: "host")
        record.referer = head.headers.first(name: "referer")
        record.userAgent = head.headers.first(name: "user-agent")
        self.logRecord = record
    }

    /// The flow answering the logged request: its transaction id and the backend it fetched from.
    private func noteFlow(_ flow: RequestFlow) {
        guard self.logRecord != nil else { return }
        self.logRecord?.xid = flow.xid
        self.logRecord?.backend = flow.ctx.fetchedFrom
    }

    /// The request being answered is over (answered, cut or abandoned): its duration goes to
    /// the histogram and its record, if any, to the access log.
    private func finishRequest(incomplete: Bool) {
        guard let start = self.requestStart else { return }
        self.requestStart = nil
        let duration = Self.seconds(self.now() - start)
        self.server.requestDurations.observe(cache: self.responseCache, seconds: duration)
        guard var record = self.logRecord else { return }
        self.logRecord = nil
        record.duration = duration
        record.incomplete = incomplete
        self.server.accessLog.record(record, shard: self.logShard)
    }

    static func seconds(_ amount: TimeAmount) -> Double {
        Double(amount.nanoseconds) / 1e9
    }

    static func protocolName(_ version: HTTPVersion) -> String {
        switch (version.major, version.minor) {
        case (1, 1): "HTTP/1.1"
        case (1, 0): "HTTP/1.0"
        default: "HTTP/\(version.major).\(version.minor)"
        }
    }

    // MARK: - Helpers

    private func writeContinue() {
        self.context?.writeAndFlush(
            self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .continue))), promise: nil)
    }

    private func writeEnd(close: Bool) {
        guard let context = self.context else { return }
        if close {
            let channel = context.channel
            let done = context.eventLoop.makePromise(of: Void.self)
            context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: done)
            let timeouts = self.state.lingersOnClose ? self.state.timeouts : nil
            let now = self.now
            done.futureResult.whenComplete { result in
                if let timeouts, case .success = result {
                    LingeringClose.start(on: channel, idle: timeouts.lingerIdle, total: timeouts.lingerTotal, now: now)
                } else {
                    channel.close(promise: nil)
                }
            }
        } else {
            context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
        }
    }

    /// A response of the connection's own (always followed by a close).
    private func writeRefusal(_ refusal: StateMachine.Refusal) {
        if let counter = refusal.counter { self.server.counters.increment(counter) }
        if let byStatus = Counter.clientRequest(status: refusal.status), byStatus != refusal.counter {
            // A class of rejection (e.g. client_req_bad_framing) also counts under its status.
            self.server.counters.increment(byStatus)
        }
        let now = self.now()
        if self.requestStart == nil {
            self.requestStart = now  // refused before a request head was parsed
        }
        if self.server.accessLog.isCapturing {
            if self.logRecord == nil {
                // Logged with the request line "-".
                self.logRecord = AccessRecord(
                    time: self.server.clock(), client: self.logClientAddress, method: "-", target: "-", proto: "-")
            }
            self.logRecord?.status = refusal.status
            self.logRecord?.timeToFirstByte = Self.seconds(now - (self.requestStart ?? now))
        }
        defer { self.finishRequest(incomplete: false) }
        guard let context = self.context else { return }
        self.encoder?.respondingToHead = refusal.headRequest
        var response = Synthetic.response(
            status: refusal.status, reason: refusal.reason, now: self.server.clock(), close: true,
            cacheName: self.server.configuration.cacheName)
        if let retryAfter = refusal.retryAfter {
            response.head.headers.replaceOrAdd(name: "Retry-After", value: String(retryAfter))
        }
        context.write(self.wrapOutboundOut(.head(response.head)), promise: nil)
        if !refusal.headRequest {
            context.write(self.wrapOutboundOut(.body(.byteBuffer(response.body))), promise: nil)
        }
        self.writeEnd(close: true)
    }

    /// Schedules the connection's one timer task when the state machine asks for it.
    private func scheduleTimerIfAsked() {
        guard let deadline = self.state.timerToSchedule(), let context = self.context else { return }
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        self.timer = context.eventLoop.scheduleTask(deadline: deadline) {
            bound.value.timerFired()
        }
    }

    private func timerFired() {
        self.timer = nil
        self.run(self.state.timerFired(now: self.now()))
    }

    private func dropTimer() {
        self.timer?.cancel()
        self.timer = nil
    }

    private func closeNow() {
        self.dropTimer()
        self.context?.close(promise: nil)
    }

    /// Closes once every byte written so far has left: with bytes still unsent (a large
    /// response to a slow reader), NIO writes them, then shuts the output down, and the client's
    /// end of the connection closes it (the drain timeout bounds a client that never does).
    private func closeWhenSent() {
        self.dropTimer()
        self.measureUnsent { handler, unsent in
            handler.context?.close(mode: unsent > 0 ? .output : .all, promise: nil)
        }
    }

    /// Measures what is written but not yet sent (`UnsentBytes`); reports on the loop, 0 without a channel.
    private func measureUnsent(_ report: @escaping (ClientChannelHandler, Int) -> Void) {
        guard let context = self.context else { return report(self, 0) }
        UnsentBytes.measure(context.channel) { unsent in report(self, unsent) }
    }
}
