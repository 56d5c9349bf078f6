import NIOCore
import NIOHTTP1

/// What a backend exchange reports to whoever waits for the response (the fetch).
/// All calls arrive on the connection's event loop.
protocol BackendExchangeDelegate: AnyObject {
    /// An interim (1xx) response, e.g. 103 Early Hints; the final response follows.
    func backendInterimResponse(_ head: HTTPResponseHead)
    func backendResponseHead(_ head: HTTPResponseHead)
    func backendResponseBody(_ buffer: ByteBuffer)
    /// The response is complete; `reusable` says whether the connection went back to the pool.
    func backendResponseEnd()
    func backendFailed(_ error: BackendError, beforeHead: Bool)
}

/// The request body of one exchange.
enum OutgoingBody {
    case none
    /// Complete, sent at once (small bodies the flow keeps for a retry).
    case buffered(ByteBuffer)
    /// Streamed as the client sends it, at the pace the backend takes it.
    case streamed(RequestBodyStream)
}

/// Drives one backend connection: one request/response exchange at a time, demand-driven reads
/// (the consumer's pace — NIO backpressure, so a slow client never makes us buffer a whole body),
/// first-byte and between-bytes timeouts.
///
/// Lifecycle: idle (in the pool, one read outstanding to notice a close) → awaitingHead (request
/// written — a streamed request body may still be going out, and the first-byte timer starts
/// once it is all written; while the backend does not take it, the between-bytes timeout
/// applies) → body (between-bytes timer) → idle again on `.end` if the response
/// allows keep-alive, else closed. Any error, early close or unsolicited data closes the channel:
/// a connection is never reused after an error or a partial body (HARDENING.md §5).
final class BackendChannelHandler: ChannelDuplexHandler, RequestBodySink {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = HTTPClientRequestPart

    enum State {
        case idle
        case awaitingHead
        case body
        case closed
    }

    private(set) var state: State = .idle
    private var context: ChannelHandlerContext?
    /// Held strongly for the length of an exchange (released on end, failure or abandon): a fill
    /// must finish and be stored even after the client that started it has gone.
    private var delegate: (any BackendExchangeDelegate)?
    private var timer: Scheduled<Void>?
    private var firstByteTimeout: TimeAmount = .seconds(60)
    private var betweenBytesTimeout: TimeAmount = .seconds(60)
    private var readPending = false
    private var paused = false
    private var keepAlive = true
    private var isHeadRequest = false
    /// The request body still being streamed out, if any.
    private var upload: RequestBodyStream?
    /// Runs while a streamed request body is blocked on a non-writable channel.
    private var sendTimer: Scheduled<Void>?
    /// Called when an exchange ends with the connection still usable.
    var onIdle: ((BackendChannelHandler) -> Void)?
    /// Called once when the channel closes.
    var onClose: ((BackendChannelHandler) -> Void)?
    /// Exchanges completed on this connection (a reused connection has > 0).
    private(set) var exchanges = 0
    let maxResponseHeaderBytes: Int
    let maxResponseHeaderFields: Int
    /// Where failed exchanges are counted per kind (nil in handler tests).
    let stats: BackendStats?

    init(maxResponseHeaderBytes: Int, maxResponseHeaderFields: Int, stats: BackendStats? = nil) {
        self.maxResponseHeaderBytes = maxResponseHeaderBytes
        self.maxResponseHeaderFields = maxResponseHeaderFields
        self.stats = stats
    }

    var isUsable: Bool {
        self.state == .idle && self.context?.channel.isActive == true
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        self.issueRead()
        context.fireChannelActive()
    }

    /// Sends a request; the response is reported to `delegate`.
    func startExchange(
        head: HTTPRequestHead,
        body: OutgoingBody,
        delegate: any BackendExchangeDelegate,
        firstByteTimeout: TimeAmount,
        betweenBytesTimeout: TimeAmount
    ) {
        guard let context = self.context, self.state == .idle else {
            delegate.backendFailed(.closedBeforeHead, beforeHead: true)
            return
        }
        self.delegate = delegate
        self.state = .awaitingHead
        self.paused = false
        self.keepAlive = true
        self.isHeadRequest = head.method == .HEAD
        self.firstByteTimeout = firstByteTimeout
        self.betweenBytesTimeout = betweenBytesTimeout
        context.write(self.wrapOutboundOut(.head(head)), promise: nil)
        switch body {
        case .none:
            context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
            self.arm(firstByteTimeout, error: .firstByteTimeout)
        case .buffered(let buffer):
            if buffer.readableBytes > 0 {
                context.write(self.wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
            }
            context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
            self.arm(firstByteTimeout, error: .firstByteTimeout)
        case .streamed(let stream):
            context.flush()
            self.upload = stream
            self.issueRead()  // an early answer or a close must be noticed while uploading
            stream.attach(self)
            return
        }
        self.issueRead()
    }

    // MARK: RequestBodySink

    var canTakeBody: Bool {
        self.upload != nil && self.context?.channel.isWritable == true
    }

    func writeRequestBody(_ buffer: ByteBuffer) {
        guard self.upload != nil, let context = self.context else { return }
        context.writeAndFlush(self.wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        if !context.channel.isWritable {
            self.armSendTimer()
        }
    }

    func endRequestBody() {
        guard self.upload != nil, let context = self.context else { return }
        self.upload = nil
        self.cancelSendTimer()
        context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
        if self.state == .awaitingHead {
            self.arm(self.firstByteTimeout, error: .firstByteTimeout)
        }
    }

    func abortRequestBody() {
        guard self.upload != nil else { return }
        self.upload = nil
        self.abandon()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if let upload = self.upload {
            if context.channel.isWritable {
                self.cancelSendTimer()
                upload.sinkWritable()
            } else {
                self.armSendTimer()
            }
        }
        context.fireChannelWritabilityChanged()
    }

    /// The backend stopped taking the request body: as long as the between-bytes timeout, then fail.
    private func armSendTimer() {
        guard self.sendTimer == nil, let context = self.context else { return }
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        self.sendTimer = context.eventLoop.scheduleTask(in: self.betweenBytesTimeout) {
            let handler = loopBound.value
            handler.sendTimer = nil
            guard let context = handler.context, handler.upload != nil else { return }
            handler.fail(.betweenBytesTimeout, context: context)
        }
    }

    private func cancelSendTimer() {
        self.sendTimer?.cancel()
        self.sendTimer = nil
    }

    /// The exchange no longer sends its request body (it ended, failed or was abandoned).
    private func stopUpload() {
        self.cancelSendTimer()
        if let upload = self.upload {
            self.upload = nil
            upload.detach()
        }
    }

    /// The consumer cannot take more now: stop reading from the socket (TCP backpressure).
    func pause() {
        self.paused = true
    }

    /// The consumer wants more.
    func resume() {
        guard self.paused else { return }
        self.paused = false
        self.issueRead()
    }

    /// Abandons the exchange and closes the connection (e.g. a pass whose client went away).
    func abandon() {
        self.delegate = nil
        self.stopUpload()
        self.closeChannel()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            guard self.state == .awaitingHead else {
                return self.fail(.framing("unsolicited response"), context: context)
            }
            if head.status.code < 200 {
                if head.status.code != 101 {
                    self.delegate?.backendInterimResponse(head)
                }
                return
            }
            var bytes = 0
            for (name, value) in head.headers { bytes += name.utf8.count + value.utf8.count + 4 }
            if bytes > self.maxResponseHeaderBytes || head.headers.count > self.maxResponseHeaderFields {
                return self.fail(.framing("response headers exceed limits"), context: context)
            }
            self.keepAlive = head.isKeepAlive
            self.state = .body
            self.arm(self.betweenBytesTimeout, error: .betweenBytesTimeout)
            self.delegate?.backendResponseHead(head)
        case .body(let buffer):
            guard self.state == .body else {
                return self.fail(.framing("body outside a response"), context: context)
            }
            self.arm(self.betweenBytesTimeout, error: .betweenBytesTimeout)
            self.delegate?.backendResponseBody(buffer)
        case .end:
            guard self.state == .body else {
                return self.fail(.framing("end outside a response"), context: context)
            }
            self.timer?.cancel()
            self.timer = nil
            self.exchanges += 1
            let delegate = self.delegate
            self.delegate = nil
            if self.upload != nil {
                // Answered before the request body was all sent: the backend may not have read
                // the rest, so the connection cannot carry another exchange.
                self.keepAlive = false
                self.stopUpload()
            }
            if self.keepAlive && context.channel.isActive {
                self.state = .idle
                self.paused = false
                delegate?.backendResponseEnd()
                self.onIdle?(self)
                self.issueRead()
            } else {
                self.state = .closed
                delegate?.backendResponseEnd()
                context.close(promise: nil)
            }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.readPending = false
        if !self.paused || self.state == .idle {
            self.issueRead()
        }
    }

    func read(context: ChannelHandlerContext) {
        // Reads are issued by this handler only (autoRead is off); pass explicit ones through.
        context.read()
    }

    func channelInactive(context: ChannelHandlerContext) {
        let previous = self.state
        self.state = .closed
        self.timer?.cancel()
        self.timer = nil
        self.stopUpload()
        switch previous {
        case .awaitingHead:
            self.failDelegate(.closedBeforeHead, beforeHead: true)
        case .body:
            self.failDelegate(.closedMidBody, beforeHead: false)
        case .idle, .closed:
            break
        }
        self.onClose?(self)
        self.onClose = nil
        self.onIdle = nil
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if error is HTTPParserError {
            self.fail(.framing("\(error)"), context: context)
        } else {
            self.fail(self.state == .awaitingHead ? .closedBeforeHead : .closedMidBody, context: context)
        }
    }

    private func fail(_ error: BackendError, context: ChannelHandlerContext) {
        let previous = self.state
        self.state = .closed
        self.timer?.cancel()
        self.timer = nil
        self.stopUpload()
        if previous == .awaitingHead || previous == .body {
            self.failDelegate(error, beforeHead: previous == .awaitingHead)
        }
        context.close(promise: nil)
    }

    private func failDelegate(_ error: BackendError, beforeHead: Bool) {
        let delegate = self.delegate
        self.delegate = nil
        if delegate != nil {
            self.stats?.countFailure(error)
        }
        delegate?.backendFailed(error, beforeHead: beforeHead)
    }

    private func arm(_ timeout: TimeAmount, error: BackendError) {
        self.timer?.cancel()
        guard let context = self.context else { return }
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        self.timer = context.eventLoop.scheduleTask(in: timeout) {
            let handler = loopBound.value
            guard let context = handler.context else { return }
            handler.fail(error, context: context)
        }
    }

    private func issueRead() {
        guard !self.readPending, let context = self.context, context.channel.isActive else { return }
        self.readPending = true
        context.read()
    }

    private func closeChannel() {
        self.state = .closed
        self.timer?.cancel()
        self.timer = nil
        self.context?.close(promise: nil)
    }
}
