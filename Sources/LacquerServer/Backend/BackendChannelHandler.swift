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

/// Drives one backend connection, a thin driver of `BackendExchangeStateMachine`: one
/// request/response exchange at a time, demand-driven reads (the consumer's pace — NIO
/// backpressure, so a slow client never makes us buffer a whole body), first-byte and
/// between-bytes timeouts. The machine decides; this handler writes, reads, schedules and
/// reports to the exchange's owner.
///
/// A streamed request body may still be going out while the response is awaited: the
/// first-byte timer starts once it is all written, and while the backend does not take it the
/// between-bytes timeout applies. Any error, early close or unsolicited data closes the channel:
/// a connection is never reused after an error or a partial body.
final class BackendChannelHandler: ChannelDuplexHandler, RequestBodySink {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = HTTPClientRequestPart

    private var machine: BackendExchangeStateMachine
    private var context: ChannelHandlerContext?
    /// Held strongly for the length of an exchange (released on end, failure or abandon): a fill
    /// must finish and be stored even after the client that started it has gone.
    private var delegate: (any BackendExchangeDelegate)?
    private var timer: Scheduled<Void>?
    private var firstByteTimeout: TimeAmount = .seconds(60)
    private var betweenBytesTimeout: TimeAmount = .seconds(60)
    /// The request body still being streamed out, if any.
    private var upload: RequestBodyStream?
    /// Runs while a streamed request body is blocked on a non-writable channel.
    private var sendTimer: Scheduled<Void>?
    /// Called when an exchange ends with the connection still usable.
    var onIdle: ((BackendChannelHandler) -> Void)?
    /// Called once when the channel closes.
    var onClose: ((BackendChannelHandler) -> Void)?
    /// Where failed exchanges are counted per kind (nil in handler tests).
    let stats: BackendStats?
    /// The scanner of this connection's chunk-size lines (told which response answers a HEAD).
    var framingGuard: ChunkedFramingGuard?

    init(maxResponseHeaderBytes: Int, maxResponseHeaderFields: Int, stats: BackendStats? = nil) {
        self.machine = BackendExchangeStateMachine(
            maxResponseHeaderBytes: maxResponseHeaderBytes, maxResponseHeaderFields: maxResponseHeaderFields)
        self.stats = stats
    }

    var state: BackendExchangeStateMachine.State { self.machine.state }
    /// Exchanges completed on this connection (a reused connection has > 0).
    var exchanges: Int { self.machine.exchanges }

    var isUsable: Bool {
        self.machine.isIdle && self.context?.channel.isActive == true
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        self.run(self.machine.channelActive())
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
        var streamed = false
        if case .streamed = body { streamed = true }
        guard let context = self.context else {
            delegate.backendFailed(.closedBeforeHead, beforeHead: true)
            return
        }
        let action = self.machine.startExchange(streamedBody: streamed)
        guard case .sendRequest(let armFirstByte) = action else {
            delegate.backendFailed(.closedBeforeHead, beforeHead: true)
            return
        }
        self.delegate = delegate
        self.framingGuard?.scanner.respondingToHead = head.method == .HEAD
        self.firstByteTimeout = firstByteTimeout
        self.betweenBytesTimeout = betweenBytesTimeout
        context.write(self.wrapOutboundOut(.head(head)), promise: nil)
        switch body {
        case .none:
            context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
        case .buffered(let buffer):
            if buffer.readableBytes > 0 {
                context.write(self.wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
            }
            context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
        case .streamed(let stream):
            context.flush()
            self.upload = stream
        }
        if armFirstByte { self.arm(.firstByte) }
        // An early answer or a close must be noticed, also while uploading.
        self.run(self.machine.wantRead())
        if case .streamed(let stream) = body {
            stream.attach(self)
        }
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
        self.run(self.machine.requestBodyEnded())
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
            guard handler.upload != nil else { return }
            handler.run(handler.machine.sendTimedOut())
        }
    }

    private func cancelSendTimer() {
        self.sendTimer?.cancel()
        self.sendTimer = nil
    }

    /// The exchange no longer sends its request body (it ended, failed or was abandoned).
    private func stopUpload() {
        self.cancelSendTimer()
        self.machine.uploadStopped()
        if let upload = self.upload {
            self.upload = nil
            upload.detach()
        }
    }

    /// The consumer cannot take more now: stop reading from the socket (TCP backpressure).
    func pause() {
        self.machine.pause()
    }

    /// The consumer wants more.
    func resume() {
        self.run(self.machine.resume())
    }

    /// Abandons the exchange and closes the connection (e.g. a pass whose client went away).
    func abandon() {
        self.delegate = nil
        self.run(self.machine.abandon())
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            switch self.machine.responseHead(head) {
            case .deliverInterim:
                self.delegate?.backendInterimResponse(head)
            case .deliverHead:
                self.arm(.betweenBytes)
                self.delegate?.backendResponseHead(head)
            case let other:
                self.run(other)
            }
        case .body(let buffer):
            switch self.machine.responseBody() {
            case .deliverBody:
                self.arm(.betweenBytes)
                self.delegate?.backendResponseBody(buffer)
            case let other:
                self.run(other)
            }
        case .end:
            self.run(self.machine.responseEnd(channelIsActive: context.channel.isActive))
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.run(self.machine.readComplete())
    }

    func read(context: ChannelHandlerContext) {
        // Reads are issued by this handler only (autoRead is off); pass explicit ones through.
        context.read()
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.run(self.machine.channelInactive())
        self.onClose?(self)
        self.onClose = nil
        self.onIdle = nil
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // ChunkedFramingGuard raises what the decoder would have: a parse error.
        self.run(self.machine.errorCaught(parser: error is HTTPParserError))
    }

    // MARK: Carrying out actions

    private func run(_ action: BackendExchangeStateMachine.Action) {
        switch action {
        case .none, .deliverInterim, .deliverHead, .deliverBody, .sendRequest:
            // The part-carrying actions are handled where the part is (channelRead, startExchange).
            break
        case .read:
            self.issueRead()
        case .refuseExchange:
            break
        case .arm(let timer):
            self.arm(timer)
        case .finish(let reuse, let stopUpload):
            self.cancelTimer()
            if stopUpload { self.stopUpload() }
            let delegate = self.delegate
            self.delegate = nil
            delegate?.backendResponseEnd()
            if reuse {
                self.onIdle?(self)
                self.run(self.machine.wantRead())
            } else {
                self.context?.close(promise: nil)
            }
        case .fail(let error, let notify, let beforeHead):
            self.cancelTimer()
            self.stopUpload()
            let delegate = self.delegate
            self.delegate = nil
            if notify, let delegate {
                self.stats?.countFailure(error)
                delegate.backendFailed(error, beforeHead: beforeHead)
            }
            self.context?.close(promise: nil)
        }
    }

    private func arm(_ timer: BackendExchangeStateMachine.Timer) {
        self.timer?.cancel()
        guard let context = self.context else { return }
        let timeout = timer == .firstByte ? self.firstByteTimeout : self.betweenBytesTimeout
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        self.timer = context.eventLoop.scheduleTask(in: timeout) {
            let handler = loopBound.value
            handler.timer = nil
            handler.run(handler.machine.timerFired(timer))
        }
    }

    private func cancelTimer() {
        self.timer?.cancel()
        self.timer = nil
    }

    private func issueRead() {
        guard let context = self.context, context.channel.isActive else { return }
        context.read()
    }
}
