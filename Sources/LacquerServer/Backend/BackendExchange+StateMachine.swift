import NIOHTTP1

/// One backend connection's exchanges, decided without I/O (async-http-client's
/// `HTTP1ConnectionStateMachine` in spirit): `BackendChannelHandler` feeds it what the
/// connection does and carries out the returned action.
///
/// ```
/// idle ──start──▶ awaitingHead ──head──▶ body ──end, keep-alive──▶ idle
///                     │  (1xx: stays)          └─end, close─────▶ closed
///                     └──────────── error, timeout, close, bad input ──▶ closed
/// ```
///
/// Rules it keeps (HARDENING.md §5 in the repository's terms: no reuse after an error or a
/// partial body): a response part outside its place is a framing error; a response that ends
/// before the streamed request body was all sent makes the connection unusable; any failure
/// closes the connection and tells the exchange's owner exactly once, whether it came before the
/// head or mid-body. Reads are demand-driven: none while the consumer has paused, except on an
/// idle pooled connection, which keeps one read outstanding to notice the backend closing it.
struct BackendExchangeStateMachine: Sendable {
    enum State: Equatable, Sendable {
        case idle
        /// The request is out (or its body still going out); no final head yet.
        case awaitingHead
        case body
        case closed
    }

    enum Timer: Equatable, Sendable {
        case firstByte, betweenBytes
    }

    enum Action: Equatable, Sendable {
        case none
        /// Issue a read on the channel.
        case read
        /// Write the request; arm the first-byte timer unless the body is still streaming; read.
        case sendRequest(armFirstByte: Bool)
        /// The connection is not idle: the new exchange fails at once, before anything is sent.
        case refuseExchange
        /// Arm (or re-arm) the exchange timer.
        case arm(Timer)
        /// Pass the interim (1xx) head on.
        case deliverInterim
        /// Pass the final head on, after arming the between-bytes timer.
        case deliverHead
        /// Pass the body part on, after re-arming the between-bytes timer.
        case deliverBody
        /// The response is complete: stop the timer, stop the upload when `stopUpload`, tell
        /// the owner, then go back to the pool and read (`reuse`) or close.
        case finish(reuse: Bool, stopUpload: Bool)
        /// Stop the timers and the upload and close; when `notify`, tell the owner `error`
        /// (before the head when `beforeHead`).
        case fail(BackendError, notify: Bool, beforeHead: Bool)
    }

    let maxResponseHeaderBytes: Int
    let maxResponseHeaderFields: Int
    private(set) var state: State = .idle
    private(set) var exchanges = 0
    private var uploading = false
    private var paused = false
    private var readPending = false
    private var keepAlive = true

    init(maxResponseHeaderBytes: Int, maxResponseHeaderFields: Int) {
        self.maxResponseHeaderBytes = maxResponseHeaderBytes
        self.maxResponseHeaderFields = maxResponseHeaderFields
    }

    var isIdle: Bool { self.state == .idle }

    // MARK: The exchange's owner

    /// A new exchange on this connection; `streamedBody` when the request body follows as it arrives.
    mutating func startExchange(streamedBody: Bool) -> Action {
        guard self.state == .idle else { return .refuseExchange }
        self.state = .awaitingHead
        self.paused = false
        self.keepAlive = true
        self.uploading = streamedBody
        return .sendRequest(armFirstByte: !streamedBody)
    }

    /// The streamed request body is all written: the first-byte timer starts now.
    mutating func requestBodyEnded() -> Action {
        guard self.uploading else { return .none }
        self.uploading = false
        return self.state == .awaitingHead ? .arm(.firstByte) : .none
    }

    /// The streamed request body will not be sent any more (it ended, failed or was abandoned).
    mutating func uploadStopped() {
        self.uploading = false
    }

    mutating func pause() {
        self.paused = true
    }

    mutating func resume() -> Action {
        guard self.paused else { return .none }
        self.paused = false
        return self.takeRead()
    }

    /// The owner gives the exchange up: the connection closes, the owner hears nothing more.
    mutating func abandon() -> Action {
        self.state = .closed
        self.uploading = false
        return .fail(.closedMidBody, notify: false, beforeHead: false)
    }

    // MARK: The connection

    mutating func channelActive() -> Action {
        self.takeRead()
    }

    /// The handler wants a read outstanding (an exchange started, or the connection went back
    /// to the pool and must notice the backend closing it): `.read` unless one is already.
    mutating func wantRead() -> Action {
        self.takeRead()
    }

    mutating func responseHead(_ head: HTTPResponseHead) -> Action {
        guard self.state == .awaitingHead else {
            return self.failure(.framing("unsolicited response"))
        }
        if head.status.code < 100 || head.status.code > 599 {
            // RFC 9110 §15: a status code is 100-599; anything else is not HTTP (one 502, never
            // a head of its own towards the client).
            return self.failure(.framing("invalid status code \(head.status.code)"))
        }
        if head.status.code < 200 {
            // 101 is not an interim answer we can use; 100 and the rest (103) go to the owner.
            return head.status.code == 101 ? .none : .deliverInterim
        }
        if Limits.headerSection(head.headers, exceedsBytes: self.maxResponseHeaderBytes, fields: self.maxResponseHeaderFields) {
            return self.failure(.headersTooLarge)
        }
        self.keepAlive = head.isKeepAlive
        self.state = .body
        return .deliverHead
    }

    mutating func responseBody() -> Action {
        guard self.state == .body else { return self.failure(.framing("body outside a response")) }
        return .deliverBody
    }

    /// The response ended; `channelIsActive` whether the connection can still carry another.
    mutating func responseEnd(channelIsActive: Bool) -> Action {
        guard self.state == .body else { return self.failure(.framing("end outside a response")) }
        self.exchanges += 1
        let stopUpload = self.uploading
        if stopUpload {
            // Answered before the request body was all sent: the backend may not have read the
            // rest, so the connection cannot carry another exchange.
            self.keepAlive = false
            self.uploading = false
        }
        if self.keepAlive && channelIsActive {
            self.state = .idle
            self.paused = false
            return .finish(reuse: true, stopUpload: stopUpload)
        }
        self.state = .closed
        return .finish(reuse: false, stopUpload: stopUpload)
    }

    /// A read completed: read again unless the consumer paused (an idle connection always reads).
    mutating func readComplete() -> Action {
        self.readPending = false
        if !self.paused || self.state == .idle {
            return self.takeRead()
        }
        return .none
    }

    /// The read an action asked for was issued (or not needed): one at a time.
    private mutating func takeRead() -> Action {
        guard !self.readPending, self.state != .closed else { return .none }
        self.readPending = true
        return .read
    }

    mutating func channelInactive() -> Action {
        let previous = self.state
        self.state = .closed
        self.uploading = false
        switch previous {
        case .awaitingHead: return .fail(.closedBeforeHead, notify: true, beforeHead: true)
        case .body: return .fail(.closedMidBody, notify: true, beforeHead: false)
        case .idle, .closed: return .fail(.closedMidBody, notify: false, beforeHead: false)
        }
    }

    /// The decoder refused the response (`parser`), or the channel reported another error.
    mutating func errorCaught(parser: Bool) -> Action {
        if parser { return self.failure(.framing("malformed response")) }
        return self.failure(self.state == .awaitingHead ? .closedBeforeHead : .closedMidBody)
    }

    /// The exchange timer ran out.
    mutating func timerFired(_ timer: Timer) -> Action {
        self.failure(timer == .firstByte ? .firstByteTimeout : .betweenBytesTimeout)
    }

    /// The backend stopped taking the streamed request body for the between-bytes timeout.
    mutating func sendTimedOut() -> Action {
        guard self.uploading else { return .none }
        return self.failure(.betweenBytesTimeout)
    }

    private mutating func failure(_ error: BackendError) -> Action {
        let previous = self.state
        self.state = .closed
        self.uploading = false
        let inExchange = previous == .awaitingHead || previous == .body
        return .fail(error, notify: inExchange, beforeHead: previous == .awaitingHead)
    }
}
