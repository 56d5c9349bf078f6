import NIOCore
import NIOHTTP1

/// The limits and timeouts of a server's client connections: one instance per server, which
/// every connection refers to.
final class ConnectionSettings: Sendable {
    let limits: Limits
    let timeouts: ClientTimeouts

    init(limits: Limits, timeouts: ClientTimeouts) {
        self.limits = limits
        self.timeouts = timeouts
    }
}

/// The life of one client connection, decided without I/O: `ClientChannelHandler` feeds it
/// events (bytes, parsed request parts, the flow's response ending, timers, the peer leaving)
/// and carries out the action each returns. Modelled on swift-nio's
/// `HTTPServerPipelineHandler.ConnectionState`: an event that makes no sense in the current
/// state closes the connection; nothing here can trap.
///
/// ```
/// idle ──head (no body)──▶ head ──end──▶ responding ──response ends──▶ idle
///   │                                        ▲            │
///   └──head (body)──▶ responding + body ─────┘            ├─ body still arriving: discarding ──end──▶ idle
///                                                         └─ must close ───────────────────────▶ closed
/// any ──refusal, timeout, parser error, peer gone, abort──▶ closed
/// ```
///
/// Timers are one per connection and lazy (as Varnish's session timeouts): the machine keeps
/// the deadline; the handler schedules a task only when `timerToSchedule()` asks, and a task
/// that fires early (the deadline moved later) asks for one more.
///
/// A response handed over whole (a hit) leaves the connection idle while its bytes may still
/// be on their way to a slow reader. The keep-alive time counts from when the last byte left
/// (as nginx's `keepalive_timeout` starts once the response is sent): when it runs out, the
/// handler measures what is still unsent (`.measureUnsent`, answered by `unsentMeasured`), and
/// a connection still sending stays open while it makes progress, under the send-idle and
/// send-total timeouts.
///
/// Generic over the flow and the upload so tests drive it with stand-ins; time comes in with
/// each event that needs it.
struct ClientConnectionStateMachine<Flow: AnyObject, Upload: AnyObject> {
    enum State {
        /// Between requests; `sawFirstByte` once the next one started arriving.
        case idle(sawFirstByte: Bool)
        /// A request without a body, until its end.
        case head(HTTPRequestHead, host: String)
        /// A flow owns the response. `upload` while the request body is still arriving.
        case responding(Flow, upload: Upload?)
        /// The response ended before the request body: the rest is read and dropped.
        case discarding(bytes: Int)
        /// The connection is closing: every later event is ignored.
        case closed
    }

    /// A response the connection writes itself before closing.
    struct Refusal: Equatable {
        var status: Int
        var reason: String
        var counter: Counter?
        var headRequest: Bool
        /// Seconds for `Retry-After` (a 429).
        var retryAfter: Int? = nil
    }

    enum Action {
        case none
        /// Write `refusal`, then close.
        case refuse(Refusal)
        /// Write a 100 Continue (an HTTP/1.1 client asked for it), nothing else.
        case writeContinue
        /// Start a flow for this request (with a body stream when `body` is set), then report
        /// it with `flowStarted`. `sendContinue`: write a 100 Continue first.
        case startFlow(HTTPRequestHead, host: String, body: RequestBodyStream.Framing?, sendContinue: Bool)
        /// Hand the part to the upload.
        case appendBody(Upload)
        /// The request body ended: tell the upload.
        case endBody(Upload)
        /// The request body went over the limit: abort the upload, release the flow, then answer
        /// `refusal` and close (or just close when the response already started).
        case bodyTooLarge(Flow, Upload, refusal: Refusal?)
        /// A malformed body before the response started: abort the upload, release the flow,
        /// answer `refusal` and close.
        case malformedBody(Flow, Upload, refusal: Refusal)
        /// Write the end of the response; `detach` the upload whose rest is not wanted; close
        /// after the end is flushed when `close`; issue a held-back read when `read`.
        case finishResponse(close: Bool, detach: Upload?, read: Bool)
        /// Cut the connection (the flow gave up mid-response); abort the upload if any.
        case abort(Upload?)
        /// The peer left, the input broke or a timer ran out: count `counter` (if set), abort the
        /// upload (counted as cut mid-upload when `uploadCut`), tell the flow, close.
        case clientGone(Flow?, upload: Upload?, uploadCut: Bool, counter: Counter?)
        /// Close now; count `counter` if set (a timeout).
        case close(Counter?)
        /// Close without cutting what was written: the last response (a hit answered at once may
        /// still be on its way to a slow client) goes out first (a drain).
        case closeWhenSent
        /// Issue the read that was held back.
        case read
        /// Measure the bytes written but not yet sent (the channel's and the kernel's send
        /// queue) and report them with `unsentMeasured`.
        case measureUnsent
    }

    /// Shared by every connection of the server (a reference: an idle connection keeps no copy).
    let settings: ConnectionSettings
    var limits: Limits { self.settings.limits }
    var timeouts: ClientTimeouts { self.settings.timeouts }
    private(set) var state: State = .idle(sawFirstByte: false)
    /// Requests answered on this connection (flow or fast lane).
    private(set) var requestsServed = 0
    /// Responses completed (or refusals written) for requests that came through the decoder;
    /// the hit fast lane compares it with the requests it handed over.
    private(set) var responsesCompleted = 0
    /// Whether the current request's final response head was written.
    private(set) var responseStarted = false
    private var bodyFraming: RequestBodyStream.Framing?
    private var bodyReceived = 0
    /// The current request announced a body whose end has not been read (refused or not).
    private var requestBodyOpen = false
    private var readingPaused = false
    private var readPending = false
    private var deadline: NIODeadline?
    /// Whether `deadline` is a sending one (send-idle or send-total: a response being written).
    private var sendIdleArmed = false
    /// When the response being written must be complete.
    private var sendTotalDeadline: NIODeadline?
    private var deadlineCounter = Counter.sessClosedIdle
    private var bodyDeadline: NIODeadline?
    private var timerScheduled = false
    /// Set by `drain`: the connection closes after the response it is working on.
    private(set) var draining = false
    private var timerRequest: NIODeadline?
    /// When the connection last went idle (a response handed over, or the connection opened):
    /// the send-total timeout of a response still being sent counts from here.
    private var idleSince: NIODeadline?
    /// Set while the keep-alive time ran out and the handler is measuring what is unsent.
    private var measuringUnsent = false
    /// The last response is still leaving: the bytes unsent at the last measure, and when they
    /// last went down.
    private var stillSending: (unsent: Int, progressAt: NIODeadline)?

    /// Requests arrive as HTTP/2 streams (one request each; version 2.0).
    let isHTTP2Stream: Bool

    init(settings: ConnectionSettings, isHTTP2Stream: Bool = false) {
        self.settings = settings
        self.isHTTP2Stream = isHTTP2Stream
    }

    init(limits: Limits, timeouts: ClientTimeouts, isHTTP2Stream: Bool = false) {
        self.init(settings: ConnectionSettings(limits: limits, timeouts: timeouts), isHTTP2Stream: isHTTP2Stream)
    }

    var isClosed: Bool {
        if case .closed = self.state { return true }
        return false
    }

    /// The flow that owns the response now, if any.
    var currentFlow: Flow? {
        if case .responding(let flow, _) = self.state { return flow }
        return nil
    }

    var currentUpload: Upload? {
        if case .responding(_, let upload) = self.state { return upload }
        return nil
    }

    /// A timer task the handler must schedule (once; nil when none is needed).
    mutating func timerToSchedule() -> NIODeadline? {
        defer { self.timerRequest = nil }
        return self.timerRequest
    }

    // MARK: Connection events

    mutating func activated(now: NIODeadline) {
        self.armIdle(now: now)
    }

    /// Bytes of a new request arrived: the header timer replaces the idle timer.
    mutating func bytesArrived(now: NIODeadline) {
        guard case .idle(false) = self.state else { return }
        self.state = .idle(sawFirstByte: true)
        self.measuringUnsent = false
        self.stillSending = nil
        self.arm(now + self.timeouts.header, counter: .sessClosedTimeout)
    }

    mutating func requestHead(_ head: HTTPRequestHead, now: NIODeadline, rateLimitedFor retryAfter: Int? = nil) -> Action {
        guard case .idle = self.state else {
            if case .closed = self.state { return .none }
            self.state = .closed
            return .close(nil)
        }
        let headRequest = head.method == .HEAD
        self.requestBodyOpen = Self.bodyFraming(head) != nil
        if let retryAfter {
            // Over the client's request rate (nginx's limit_req): 429, and the connection closes.
            return self.refuse(
                Refusal(
                    status: 429, reason: "Too Many Requests", counter: .clientReq429, headRequest: headRequest,
                    retryAfter: retryAfter))
        }
        let host: String
        do {
            host = try RequestValidation.validate(head, limits: self.limits, http2: self.isHTTP2Stream)
        } catch {
            return self.refuse(Refusal(status: error.status, reason: error.reason, counter: error.counter, headRequest: headRequest))
        }
        if let length = head.headers.first(name: "content-length").flatMap(Int.init), length > self.limits.requestBodyBytes {
            return self.refuse(
                Refusal(
                    status: 413, reason: "Request body larger than \(self.limits.requestBodyBytes) bytes",
                    counter: .clientReq413, headRequest: false))
        }
        var sendContinue = false
        if let expect = head.headers.first(name: "expect") {
            guard expect.lowercased() == "100-continue" else {
                return self.refuse(Refusal(status: 417, reason: "Unsupported Expect value", counter: nil, headRequest: false))
            }
            sendContinue = head.version.minor >= 1
        }
        self.responseStarted = false
        guard let framing = Self.bodyFraming(head) else {
            self.state = .head(head, host: host)
            self.armBody(now: now)
            return sendContinue ? .writeContinue : .none
        }
        self.bodyFraming = framing
        self.bodyReceived = 0
        return .startFlow(head, host: host, body: framing, sendContinue: sendContinue)
    }

    /// The flow asked for by `.startFlow` exists (with its upload when the request has a body).
    mutating func flowStarted(_ flow: Flow, upload: Upload?, now: NIODeadline) {
        switch self.state {
        case .idle, .head:
            self.state = .responding(flow, upload: upload)
            if upload != nil {
                self.armBody(now: now)
            } else {
                self.deadline = nil
            }
        case .responding, .discarding, .closed:
            // Cannot happen (a flow starts only from idle or head); keep the connection's state.
            break
        }
    }

    /// How a request's body is framed, or nil when it has none (RFC 9112 §6.3: a request
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

    mutating func requestBody(bytes: Int, now: NIODeadline) -> Action {
        switch self.state {
        case .responding(let flow, let upload?):
            let limit = self.limits.requestBodyBytes
            if self.bodyReceived + bytes > limit {
                // A chunked body (a Content-Length over the limit was refused at the head).
                self.state = .closed
                self.deadline = nil
                let refusal =
                    self.responseStarted
                    ? nil
                    : Refusal(
                        status: 413, reason: "Request body larger than \(limit) bytes", counter: nil, headRequest: false)
                if refusal != nil { self.responsesCompleted += 1 }
                return .bodyTooLarge(flow, upload, refusal: refusal)
            }
            self.bodyReceived += bytes
            if !self.readingPaused {
                self.armBody(now: now)
            }
            return .appendBody(upload)
        case .discarding(let count):
            let total = count + bytes
            if total > self.limits.drainBytes {
                self.state = .closed
                return .close(nil)
            }
            self.state = .discarding(bytes: total)
            return .none
        case .closed:
            return .none
        case .idle, .head, .responding(_, upload: nil):
            return self.unexpectedRequestPart()
        }
    }

    mutating func requestEnd(now: NIODeadline) -> Action {
        self.requestBodyOpen = false
        switch self.state {
        case .head(let head, let host):
            self.deadline = nil
            self.bodyFraming = nil
            return .startFlow(head, host: host, body: nil, sendContinue: false)
        case .responding(let flow, let upload?):
            self.state = .responding(flow, upload: nil)
            self.deadline = nil
            return .endBody(upload)
        case .discarding:
            if self.draining {
                self.state = .closed
                return .close(nil)
            }
            self.armIdle(now: now)
            return .none
        case .closed:
            return .none
        case .idle, .responding(_, upload: nil):
            return self.unexpectedRequestPart()
        }
    }

    /// A request part where none can come (the decoder would not send it): the connection
    /// closes, and a flow that is answering hears that its client is gone.
    private mutating func unexpectedRequestPart() -> Action {
        let previous = self.state
        self.state = .closed
        if case .responding(let flow, _) = previous {
            return .clientGone(flow, upload: nil, uploadCut: false, counter: nil)
        }
        return .close(nil)
    }

    // MARK: The flow's response

    /// A final response head went out for the current request.
    mutating func responseHeadWritten(now: NIODeadline) {
        self.responseStarted = true
        // The whole response must be sent within the send-total timeout (HARDENING.md §4).
        guard self.sendTotalDeadline == nil, case .responding = self.state, self.currentUpload == nil else { return }
        let deadline = now + self.timeouts.sendTotal
        self.sendTotalDeadline = deadline
        self.arm(deadline, counter: .sessClosedTimeout)
        self.sendIdleArmed = true
    }

    /// Whether the connection must close after the response to `head` (the client asked, the
    /// per-connection limit is reached, or a request body too long to drain is still arriving).
    func mustCloseAfter(_ head: HTTPRequestHead) -> Bool {
        self.draining || !head.isKeepAlive || self.requestsServed + 1 >= self.limits.requestsPerConnection || !self.bodyLeftIsDrainable
    }

    /// Whether what is left of the current request body may be drained after the response (a
    /// known remainder within `drainBytes`) rather than the connection closed.
    private var bodyLeftIsDrainable: Bool {
        guard self.currentUpload != nil, let framing = self.bodyFraming else { return true }
        if case .length(let length) = framing {
            return length - self.bodyReceived <= self.limits.drainBytes
        }
        return false
    }

    /// `flow` ended its response; `close` when the response itself requires it.
    mutating func responseFinished(_ flow: Flow, close: Bool, now: NIODeadline) -> Action {
        guard case .responding(let current, let upload) = self.state, current === flow else { return .none }
        self.requestsServed += 1
        self.responsesCompleted += 1
        var mustClose = close || self.draining || self.requestsServed >= self.limits.requestsPerConnection
        if upload != nil {
            // Answered before the request body ended: the exchange wants no more of it.
            mustClose = mustClose || !self.bodyLeftIsDrainable
        }
        if mustClose {
            self.state = .closed
            self.deadline = nil
            return .finishResponse(close: true, detach: upload, read: false)
        }
        if upload != nil {
            self.state = .discarding(bytes: 0)
            let read = self.takePendingRead()
            self.armBody(now: now)
            return .finishResponse(close: false, detach: upload, read: read)
        }
        self.armIdle(now: now)
        return .finishResponse(close: false, detach: nil, read: false)
    }

    /// `flow` cannot finish its response honestly (the head is out): the connection is cut.
    mutating func flowAborted(_ flow: Flow) -> Action {
        guard case .responding(let current, let upload) = self.state, current === flow else { return .none }
        self.state = .closed
        self.deadline = nil
        return .abort(upload)
    }

    /// A response the connection wrote itself (a refusal) completed a request.
    private mutating func refuse(_ refusal: Refusal) -> Action {
        self.state = .closed
        self.deadline = nil
        self.responsesCompleted += 1
        return .refuse(refusal)
    }

    // MARK: The peer, the parser, the clock

    mutating func inactive() -> Action {
        let previous = self.state
        self.state = .closed
        self.deadline = nil
        switch previous {
        case .responding(let flow, let upload):
            return .clientGone(flow, upload: upload, uploadCut: upload != nil, counter: nil)
        default:
            return .clientGone(nil, upload: nil, uploadCut: false, counter: nil)
        }
    }

    /// The HTTP/1 decoder refused the input. `unknownMethod`: the request line was well-formed
    /// but for a method the parser does not know (501, not 400).
    mutating func parserError(_ error: HTTPParserError, unknownMethod: Bool, requestLineTooLong: Bool = false) -> Action {
        switch self.state {
        case .idle, .head, .discarding:
            switch error {
            case .headerOverflow where requestLineTooLong:
                return self.refuse(Refusal(status: 414, reason: "Request-target too long", counter: .clientReq414, headRequest: false))
            case .headerOverflow:
                return self.refuse(
                    Refusal(status: 431, reason: "Request header section too large", counter: .clientReq431, headRequest: false))
            case .invalidMethod where unknownMethod:
                // RFC 9110 §9.1: a method the server does not know is 501.
                return self.refuse(Refusal(status: 501, reason: "Method not implemented", counter: .clientReq501, headRequest: false))
            default:
                return self.refuse(Refusal(status: 400, reason: "Malformed request", counter: .clientReq400, headRequest: false))
            }
        case .responding(let flow, let upload):
            self.state = .closed
            self.deadline = nil
            if let upload, error != .invalidEOFState, !self.responseStarted {
                // A malformed body (bad chunking): refused like a malformed head.
                self.responsesCompleted += 1
                return .malformedBody(
                    flow, upload,
                    refusal: Refusal(status: 400, reason: "Malformed request", counter: .clientReq400, headRequest: false))
            }
            // The client closed mid-upload (EOF inside the body), or the response already started.
            return .clientGone(flow, upload: upload, uploadCut: upload != nil && error == .invalidEOFState, counter: nil)
        case .closed:
            return .close(nil)
        }
    }

    /// The timer task fired.
    mutating func timerFired(now: NIODeadline) -> Action {
        self.timerScheduled = false
        guard let deadline = self.deadline else { return .none }
        if case .responding(_, upload: nil) = self.state, !self.sendIdleArmed {
            return .none  // the flow has its own (backend) timeouts; the next arm schedules again
        }
        if now < deadline {
            self.requestTimer(at: deadline)
            return .none
        }
        if case .idle(sawFirstByte: false) = self.state, self.deadlineCounter == .sessClosedIdle, !self.isHTTP2Stream {
            // Keep-alive time is over, unless the last response is still being sent.
            self.deadline = nil
            self.measuringUnsent = true
            return .measureUnsent
        }
        let previous = self.state
        self.state = .closed
        self.deadline = nil
        if case .responding(let flow, let upload) = previous {
            // A request body that stopped arriving mid-upload: the exchange is abandoned.
            return .clientGone(flow, upload: upload, uploadCut: upload != nil, counter: self.deadlineCounter)
        }
        return .close(self.deadlineCounter)
    }

    // MARK: Sending

    /// What `.measureUnsent` found: `unsent` bytes written but not yet sent. None: the keep-alive
    /// time is over (counted from when the last byte left). Some, going down: the connection
    /// stays open and is measured again. None sent for the send-idle timeout, or the response
    /// older than the send-total timeout: the client is cut (HARDENING.md §4).
    mutating func unsentMeasured(_ unsent: Int, now: NIODeadline) -> Action {
        guard self.measuringUnsent, case .idle(sawFirstByte: false) = self.state else { return .none }
        self.measuringUnsent = false
        let previous = self.stillSending
        self.stillSending = nil
        if unsent <= 0 {
            if previous != nil {
                // The last byte left since the previous measure: the keep-alive time starts.
                self.arm(now + self.timeouts.idle, counter: .sessClosedIdle)
                return .none
            }
            self.state = .closed
            return .close(.sessClosedIdle)
        }
        var progressAt = now
        if let previous, unsent >= previous.unsent { progressAt = previous.progressAt }
        let sendTotal = (self.idleSince ?? now) + self.timeouts.sendTotal
        let sendIdle = progressAt + self.timeouts.sendIdle
        if now >= sendIdle || now >= sendTotal {
            self.state = .closed
            return .close(.sessClosedTimeout)
        }
        self.stillSending = (unsent, progressAt)
        let next = now + min(self.timeouts.idle, self.timeouts.sendIdle)
        self.arm(min(next, sendIdle, sendTotal), counter: .sessClosedIdle)
        return .none
    }

    /// The connection stopped (or went back to) taking response bytes. A client that takes
    /// nothing for the send-idle timeout is cut (HARDENING.md §4; Varnish's send_timeout idea):
    /// the response would otherwise hold its connection and its backend forever. Only while no
    /// request body is still arriving (that has its own timer).
    mutating func writabilityChanged(isWritable: Bool, now: NIODeadline) {
        guard case .responding = self.state, self.currentUpload == nil else { return }
        if isWritable {
            // Back to the send-total deadline, if the response has one.
            if let total = self.sendTotalDeadline {
                self.arm(total, counter: .sessClosedTimeout)
                self.sendIdleArmed = true
            } else {
                if self.sendIdleArmed { self.deadline = nil }
                self.sendIdleArmed = false
            }
        } else {
            let idle = now + self.timeouts.sendIdle
            self.arm(min(idle, self.sendTotalDeadline ?? idle), counter: .sessClosedTimeout)
            self.sendIdleArmed = true
        }
    }

    // MARK: Request body backpressure

    /// The upload's backend does not keep up: hold reads back (and stop the body timer: the
    /// client is not stalling, we are).
    mutating func pauseReading() {
        guard !self.readingPaused else { return }
        self.readingPaused = true
        if self.currentUpload != nil { self.deadline = nil }
    }

    mutating func resumeReading(now: NIODeadline) -> Action {
        guard self.readingPaused else { return .none }
        self.readingPaused = false
        if self.currentUpload != nil {
            self.armBody(now: now)
        }
        return self.takePendingRead() ? .read : .none
    }

    /// The pipeline asks for a read: `true` to pass it on, `false` when it is held back.
    mutating func readRequested() -> Bool {
        if self.readingPaused {
            self.readPending = true
            return false
        }
        return true
    }

    private mutating func takePendingRead() -> Bool {
        self.readingPaused = false
        defer { self.readPending = false }
        return self.readPending
    }

    /// Whether a close after the response must linger (RFC 9112 §9.6): the client may still be
    /// sending the request body, and closing with unread bytes would send a reset that can make
    /// it lose the response. An HTTP/2 stream never lingers (it ends with its own frames).
    var lingersOnClose: Bool {
        !self.isHTTP2Stream && self.requestBodyOpen
    }

    // MARK: Draining (SIGTERM)

    /// The server is draining (nginx's graceful `quit`): an idle keep-alive connection closes at
    /// once; one with a request under way finishes that response, with `Connection: close`,
    /// then closes. A request whose first bytes have arrived is answered too.
    mutating func drain() -> Action {
        self.draining = true
        switch self.state {
        case .idle(sawFirstByte: false):
            self.state = .closed
            self.deadline = nil
            return .closeWhenSent
        case .idle(sawFirstByte: true), .head, .responding, .discarding, .closed:
            return .none
        }
    }

    // MARK: The hit fast lane

    /// Whether `HitFastLane` may answer the next request itself: the connection is idle, every
    /// request it handed to the decoder has been answered, and this is not the connection's last
    /// request (that one goes through the flow, which adds `Connection: close`).
    func fastLaneMayAnswer(handedOver: Int) -> Bool {
        guard !self.draining, case .idle = self.state, handedOver == self.responsesCompleted else { return false }
        return self.requestsServed + 1 < self.limits.requestsPerConnection
    }

    mutating func fastLaneAnswered(now: NIODeadline) {
        self.requestsServed += 1
        self.armIdle(now: now)
    }

    // MARK: Deadlines

    private mutating func armIdle(now: NIODeadline) {
        self.bodyDeadline = nil
        self.sendTotalDeadline = nil
        self.idleSince = now
        self.measuringUnsent = false
        self.stillSending = nil
        if !self.isClosed { self.state = .idle(sawFirstByte: false) }
        self.arm(now + self.timeouts.idle, counter: .sessClosedIdle)
    }

    /// The request-body timer: the next read within `bodyIdle`, the whole body within `bodyTotal`.
    private mutating func armBody(now: NIODeadline) {
        let total = self.bodyDeadline ?? (now + self.timeouts.bodyTotal)
        self.bodyDeadline = total
        self.arm(min(now + self.timeouts.bodyIdle, total), counter: .sessClosedTimeout)
    }

    private mutating func arm(_ deadline: NIODeadline, counter: Counter) {
        self.sendIdleArmed = false
        self.deadline = deadline
        self.deadlineCounter = counter
        if !self.timerScheduled {
            self.requestTimer(at: deadline)
        }
    }

    private mutating func requestTimer(at deadline: NIODeadline) {
        self.timerScheduled = true
        self.timerRequest = deadline
    }
}
