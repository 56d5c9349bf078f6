import NIOCore
import NIOHTTP1

/// Notes the first bytes of each request so the header timeout (10 s from the first byte)
/// can replace the keep-alive idle timeout. Sits before the HTTP decoder.
final class FirstByteObserver: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    var onBytes: (() -> Void)?
    /// The first bytes of the latest read (at most ``prefixLimit``), copied into storage
    /// allocated once: enough to tell an unknown method from a malformed request line when the
    /// parser rejects the method.
    private(set) var prefix: [UInt8] = []
    static let prefixLimit = 256

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.onBytes?()
        let buffer = self.unwrapInboundIn(data)
        let count = min(buffer.readableBytes, Self.prefixLimit)
        if self.prefix.capacity < Self.prefixLimit {
            self.prefix.reserveCapacity(Self.prefixLimit)
        }
        self.prefix.removeAll(keepingCapacity: true)
        buffer.withUnsafeReadableBytes { bytes in
            self.prefix.append(contentsOf: bytes.prefix(count))
        }
        context.fireChannelRead(data)
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

/// One client connection: validates each request head, runs one `RequestFlow` per request,
/// streams request bodies to it, and enforces the client limits and timeouts of HARDENING.md §2/§4.
///
/// `HTTPServerPipelineHandler` (before us) holds pipelined requests back until the previous
/// response's `.end` is written, so at most one flow runs per connection at a time.
///
/// A request with a body starts its flow as soon as its head is valid; the body's parts go to a
/// `RequestBodyStream` as they arrive, and the stream stops our reads from the socket (we
/// swallow `read()`) while the backend does not keep up, so an upload of any size holds only
/// a few reads in memory. A response that ends before the request body does leaves the rest
/// to be drained (at most `drainBytes`) or the connection closed.
///
/// States: idle (keep-alive timer) → head received (no body: until `.end`) → processing (flow
/// owns the response; body timer while a body arrives) → idle, or discarding the rest of a body
/// → idle … ; `closing` after any response that ends the connection.
final class ClientChannelHandler: ChannelDuplexHandler, RemovableChannelHandler, RequestBodySource {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private enum State {
        case idle
        /// A request without a body, until its `.end`.
        case receiving(head: HTTPRequestHead, host: String)
        /// A request we already answered whose remaining body we skip.
        case discarding(bytes: Int)
        case processing(RequestFlow)
        case closing
    }

    let server: ServerContext
    private var state: State = .idle
    private var context: ChannelHandlerContext?
    private var timer: Scheduled<Void>?
    private var deadline = NIODeadline.distantFuture
    private var deadlineCounter = Counter.sessClosedIdle
    private var deadlineArmed = false
    /// When the current request's body must be complete (set when its head arrives).
    private var bodyDeadline: NIODeadline?
    private var requestsServed = 0
    /// Responses completed (or refusals written) for requests that came through the decoder;
    /// `HitFastLane` compares it with the requests it handed over.
    private(set) var responsesCompleted = 0
    private var sawFirstByte = false
    /// The body of the request being processed, while it is still arriving.
    private var upload: RequestBodyStream?
    /// Set while the upload's backend does not keep up: `read()` is held back.
    private var readingPaused = false
    private var readPending = false
    /// Whether the current request's final response head was written.
    private var responseStarted = false
    private(set) var peer: SocketAddress?
    private(set) var local: SocketAddress?

    /// The byte observer before the decoder (for classifying parser errors).
    weak var observer: FirstByteObserver?
    /// The response encoder (told which responses answer HEAD and which are pre-encoded).
    weak var encoder: ResponseEncoder?

    /// The connection's event loop, captured once: a flow may ask for it after the handler was
    /// removed from its pipeline (the client left), so it never depends on the context.
    let eventLoop: any EventLoop

    init(server: ServerContext, eventLoop: any EventLoop) {
        self.server = server
        self.eventLoop = eventLoop
    }

    var allocator: ByteBufferAllocator { self.context?.channel.allocator ?? ByteBufferAllocator() }
    var isWritable: Bool { self.context?.channel.isWritable ?? false }
    var isActive: Bool { self.context?.channel.isActive ?? false }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.peer = context.channel.remoteAddress
        self.local = context.channel.localAddress
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.dropTimer()
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        self.server.counters.increment(.sessConn)
        self.armIdleTimer()
        context.fireChannelActive()
    }

    /// Called by `FirstByteObserver`: a new request started arriving.
    func bytesArrived() {
        guard !self.sawFirstByte, case .idle = self.state else { return }
        self.sawFirstByte = true
        self.arm(self.server.configuration.clientTimeouts.header, counter: .sessClosedTimeout)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            self.receivedHead(head, context: context)
        case .body(let buffer):
            self.receivedBody(buffer, context: context)
        case .end:
            self.receivedEnd(context: context)
        }
    }

    private func receivedHead(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        guard case .idle = self.state else {
            if case .closing = self.state { return }
            return self.closeNow()
        }
        self.server.counters.increment(.clientReq)
        self.encoder?.respondingToHead = head.method == .HEAD
        let limits = self.server.configuration.limits
        let host: String
        do {
            host = try RequestValidation.validate(head, limits: limits)
        } catch {
            self.server.counters.increment(error.counter)
            self.state = .closing
            self.writeSynthetic(status: error.status, reason: error.reason, close: true, headRequest: head.method == .HEAD)
            return
        }
        if let length = head.headers.first(name: "content-length").flatMap(Int.init), length > limits.requestBodyBytes {
            self.server.counters.increment(.clientReq413)
            self.state = .closing
            self.writeSynthetic(status: 413, reason: "Request body larger than \(limits.requestBodyBytes) bytes", close: true, headRequest: false)
            return
        }
        if let expect = head.headers.first(name: "expect") {
            guard expect.lowercased() == "100-continue" else {
                self.state = .closing
                self.writeSynthetic(status: 417, reason: "Unsupported Expect value", close: true, headRequest: false)
                return
            }
            if head.version.minor >= 1 {
                context.writeAndFlush(
                    self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .continue))), promise: nil)
            }
        }
        self.responseStarted = false
        guard let framing = Self.bodyFraming(head) else {
            self.state = .receiving(head: head, host: host)
            self.armBodyTimer()
            return
        }
        // A body: the flow starts now and the body streams to it.
        let upload = RequestBodyStream(framing: framing, source: self)
        self.upload = upload
        let flow = RequestFlow(server: self.server, client: self, head: head, host: host, body: upload)
        self.state = .processing(flow)
        self.armBodyTimer()
        flow.start()
    }

    /// How the request's body is framed, or nil when it has none (RFC 9112 §6.3: a request
    /// without Content-Length or Transfer-Encoding, HTTP/1.0 included, has no body).
    static func bodyFraming(_ head: HTTPRequestHead) -> RequestBodyStream.Framing? {
        if head.headers.contains(name: "transfer-encoding") {
            return .chunked
        }
        if let length = head.headers.first(name: "content-length").flatMap(Int.init), length > 0 {
            return .length(length)
        }
        return nil
    }

    private func receivedBody(_ buffer: ByteBuffer, context: ChannelHandlerContext) {
        switch self.state {
        case .processing(let flow):
            guard let upload = self.upload else { return self.closeNow() }
            let limit = self.server.configuration.limits.requestBodyBytes
            if upload.received + buffer.readableBytes > limit {
                // A chunked body (a Content-Length over the limit was refused at the head).
                self.server.counters.increment(.clientReq413)
                self.upload = nil
                upload.abort()
                self.state = .closing
                flow.abandonRequest()
                if self.responseStarted {
                    self.closeNow()
                } else {
                    self.writeSynthetic(
                        status: 413, reason: "Request body larger than \(limit) bytes", close: true, headRequest: false)
                }
                return
            }
            upload.append(buffer)
            if !self.readingPaused, self.upload != nil {
                self.armBodyTimer()
            }
        case .discarding(let bytes):
            let total = bytes + buffer.readableBytes
            if total > self.server.configuration.limits.drainBytes {
                self.closeNow()
            } else {
                self.state = .discarding(bytes: total)
            }
        case .closing:
            break
        case .idle, .receiving:
            self.closeNow()
        }
    }

    private func receivedEnd(context: ChannelHandlerContext) {
        switch self.state {
        case .receiving(let head, let host):
            self.cancelTimer()
            let flow = RequestFlow(server: self.server, client: self, head: head, host: host, body: nil)
            self.state = .processing(flow)
            flow.start()
        case .processing:
            guard let upload = self.upload else { return self.closeNow() }
            self.upload = nil
            self.cancelTimer()
            self.resumeReading()
            upload.end()
        case .discarding:
            self.state = .idle
            self.armIdleTimer()
        case .closing:
            break
        case .idle:
            self.closeNow()
        }
    }

    // MARK: - The fast lane

    /// Whether `HitFastLane` may answer the next request itself: the connection is idle, every
    /// request it handed to the decoder has been answered, and this is not the connection's
    /// last request (that one goes through the flow, which adds `Connection: close`).
    func fastLaneMayAnswer(handedOver: Int) -> Bool {
        guard case .idle = self.state, handedOver == self.responsesCompleted else { return false }
        return self.requestsServed + 1 < self.server.configuration.limits.requestsPerConnection
    }

    /// `HitFastLane` answered a request: count it and go back to waiting for the next one.
    func fastLaneAnswered() {
        self.server.counters.increment(.clientReq)
        self.requestsServed += 1
        self.armIdleTimer()
    }

    // MARK: - Request body backpressure

    func pauseReading() {
        guard !self.readingPaused else { return }
        self.readingPaused = true
        // The client is not stalling: we are holding it back. No body timer meanwhile.
        if self.upload != nil { self.cancelTimer() }
    }

    func resumeReading() {
        guard self.readingPaused else { return }
        self.readingPaused = false
        if self.upload != nil {
            self.armBodyTimer()
        }
        if self.readPending {
            self.readPending = false
            self.context?.read()
        }
    }

    func read(context: ChannelHandlerContext) {
        if self.readingPaused {
            self.readPending = true
            return
        }
        context.read()
    }

    /// Whether what is left of the current request body may be drained after the response
    /// (a known remainder within `drainBytes`) rather than the connection closed.
    private var bodyLeftIsDrainable: Bool {
        guard let upload = self.upload else { return true }
        if case .length(let length) = upload.framing {
            return length - upload.received <= self.server.configuration.limits.drainBytes
        }
        return false
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if case .processing(let flow) = self.state, context.channel.isWritable {
            flow.clientWritable()
        }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.dropTimer()
        if let upload = self.upload {
            // Gone mid-upload: the backend exchange is abandoned (its connection closed, not reused).
            self.upload = nil
            self.server.counters.increment(.clientGoneMidUpload)
            upload.abort()
        }
        if case .processing(let flow) = self.state {
            self.state = .closing
            flow.clientGone()
        }
        self.state = .closing
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let parserError = error as? HTTPParserError {
            switch self.state {
            case .idle, .receiving, .discarding:
                self.state = .closing
                switch parserError {
                case .headerOverflow:
                    self.server.counters.increment(.clientReq431)
                    self.writeSynthetic(status: 431, reason: "Malformed request (\(parserError))", close: true, headRequest: false)
                case .invalidMethod where FirstByteObserver.looksLikeUnknownMethod(self.observer?.prefix ?? []):
                    // A well-formed request line with a method the parser does not know:
                    // RFC 9110 §9.1 says 501, not a framing error.
                    self.server.counters.increment(.clientReq501)
                    self.writeSynthetic(status: 501, reason: "Method not implemented", close: true, headRequest: false)
                default:
                    self.server.counters.increment(.clientReq400)
                    self.writeSynthetic(status: 400, reason: "Malformed request (\(parserError))", close: true, headRequest: false)
                }
            case .processing(let flow):
                self.state = .closing
                if let upload = self.upload, parserError == .invalidEOFState {
                    // The client closed mid-upload (the decoder saw EOF inside the body).
                    self.upload = nil
                    self.server.counters.increment(.clientGoneMidUpload)
                    upload.abort()
                } else if let upload = self.upload, !self.responseStarted {
                    // A malformed body (bad chunking): refused like a malformed head.
                    self.upload = nil
                    upload.abort()
                    flow.abandonRequest()
                    self.server.counters.increment(.clientReq400)
                    self.writeSynthetic(status: 400, reason: "Malformed request (\(parserError))", close: true, headRequest: false)
                    return
                }
                flow.clientGone()
                self.closeNow()
            case .closing:
                self.closeNow()
            }
            return
        }
        self.closeNow()
    }

    // MARK: - Writing, called by the flow

    func writeHead(_ head: HTTPResponseHead) {
        if head.status.code >= 200 { self.responseStarted = true }
        self.context?.write(self.wrapOutboundOut(.head(head)), promise: nil)
    }

    /// The placeholder head that carries a pre-encoded response through the pipeline handler.
    private static let preEncodedPlaceholder = HTTPResponseHead(version: .http1_1, status: .ok)

    func writePreEncoded(_ bytes: ByteBuffer) {
        guard let context = self.context, let encoder = self.encoder else { return }
        self.responseStarted = true
        encoder.expectPreEncodedHead()
        context.write(self.wrapOutboundOut(.head(Self.preEncodedPlaceholder)), promise: nil)
        context.write(self.wrapOutboundOut(.body(.byteBuffer(bytes))), promise: nil)
    }

    func flush() {
        self.context?.flush()
    }

    func writeBody(_ buffer: ByteBuffer) {
        guard let context = self.context else { return }
        context.writeAndFlush(self.wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
    }

    /// Writes body bytes that the end of the response follows at once (one flush for both).
    func writeFinalBody(_ buffer: ByteBuffer) {
        self.context?.write(self.wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
    }

    /// Ends the current response; `close` ends the connection after it is flushed.
    func finishResponse(_ flow: RequestFlow, close: Bool) {
        guard let context = self.context else { return }
        guard case .processing(let current) = self.state, current === flow else { return }
        self.requestsServed += 1
        self.responsesCompleted += 1
        var mustClose = close || self.requestsServed >= self.server.configuration.limits.requestsPerConnection
        let bodyLeft = self.upload
        if let bodyLeft {
            // Answered before the request body ended: the exchange wants no more of it.
            mustClose = mustClose || !self.bodyLeftIsDrainable
            self.upload = nil
            bodyLeft.detach()
        }
        if mustClose {
            self.state = .closing
            let channel = context.channel
            let done = context.eventLoop.makePromise(of: Void.self)
            context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: done)
            done.futureResult.whenComplete { _ in channel.close(promise: nil) }
        } else if bodyLeft != nil {
            self.state = .discarding(bytes: 0)
            context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
            self.resumeReading()
            self.armBodyTimer()
        } else {
            self.state = .idle
            context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
            self.armIdleTimer()
        }
    }

    /// Whether the connection must close after this response (limits reached or client asked).
    func mustCloseAfter(_ head: HTTPRequestHead) -> Bool {
        !head.isKeepAlive || self.requestsServed + 1 >= self.server.configuration.limits.requestsPerConnection
            || !self.bodyLeftIsDrainable
    }

    /// Tears the connection down: the client sees a truncated response, never a corrupt one.
    func abort(_ flow: RequestFlow) {
        guard case .processing(let current) = self.state, current === flow else { return }
        self.state = .closing
        if let upload = self.upload {
            self.upload = nil
            upload.abort()
        }
        self.closeNow()
    }

    // MARK: - Helpers

    private func writeSynthetic(status: Int, reason: String, close: Bool, headRequest: Bool) {
        guard let context = self.context else { return }
        self.responsesCompleted += 1
        self.encoder?.respondingToHead = headRequest
        let response = Synthetic.response(
            status: status, reason: reason, now: self.server.clock(), close: close, cacheName: self.server.configuration.cacheName)
        context.write(self.wrapOutboundOut(.head(response.head)), promise: nil)
        if !headRequest {
            context.write(self.wrapOutboundOut(.body(.byteBuffer(response.body))), promise: nil)
        }
        let channel = context.channel
        let done = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: done)
        if close {
            done.futureResult.whenComplete { _ in channel.close(promise: nil) }
        }
    }

    /// The request-body timer: the next read within `bodyIdle`, the whole body within `bodyTotal`.
    private func armBodyTimer() {
        let timeouts = self.server.configuration.clientTimeouts
        let total = self.bodyDeadline ?? (.now() + timeouts.bodyTotal)
        self.bodyDeadline = total
        self.armDeadline(min(.now() + timeouts.bodyIdle, total), counter: .sessClosedTimeout)
    }

    private func armIdleTimer() {
        self.bodyDeadline = nil
        self.sawFirstByte = false
        self.arm(self.server.configuration.clientTimeouts.idle, counter: .sessClosedIdle)
    }

    /// Sets the connection's one deadline. Timers are lazy (as Varnish's session timeouts): at
    /// most one task is scheduled per connection, and moving the deadline is only a store; when
    /// the task fires early (the deadline moved later) it reschedules itself once. This keeps the
    /// three deadline changes of every request off the event loop's timer queue.
    private func arm(_ timeout: TimeAmount, counter: Counter) {
        self.armDeadline(.now() + timeout, counter: counter)
    }

    private func armDeadline(_ deadline: NIODeadline, counter: Counter) {
        self.deadline = deadline
        self.deadlineCounter = counter
        self.deadlineArmed = true
        if self.timer == nil {
            self.scheduleTimer(at: self.deadline)
        }
    }

    private func scheduleTimer(at deadline: NIODeadline) {
        guard let context = self.context else { return }
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        self.timer = context.eventLoop.scheduleTask(deadline: deadline) {
            bound.value.timerFired()
        }
    }

    private func timerFired() {
        self.timer = nil
        guard self.deadlineArmed else { return }
        if case .processing = self.state, self.upload == nil {
            return  // the flow has its own (backend) timeouts; the next arm schedules again
        }
        if NIODeadline.now() < self.deadline {
            return self.scheduleTimer(at: self.deadline)
        }
        // Includes a request body that stopped arriving mid-upload: the connection closes,
        // which abandons the backend exchange.
        self.server.counters.increment(self.deadlineCounter)
        self.closeNow()
    }

    private func cancelTimer() {
        self.deadlineArmed = false
    }

    private func dropTimer() {
        self.deadlineArmed = false
        self.timer?.cancel()
        self.timer = nil
    }

    private func closeNow() {
        self.dropTimer()
        self.context?.close(promise: nil)
    }
}
