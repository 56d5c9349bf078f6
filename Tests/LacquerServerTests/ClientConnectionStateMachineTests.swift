import CacheStore
import Logging
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import LacquerServer

/// The client connection's state machine, driven event by event without sockets or clocks of
/// its own: every state crossed with the client leaving, timers, refusals and bodies.
@Suite("Client connection state machine")
struct ClientConnectionStateMachineTests {
    final class FakeFlow {}
    final class FakeUpload {}
    typealias Machine = ClientConnectionStateMachine<FakeFlow, FakeUpload>

    static let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000)

    func machine(_ configure: (inout Limits, inout ClientTimeouts) -> Void = { _, _ in }) -> Machine {
        var limits = Limits()
        var timeouts = ClientTimeouts()
        configure(&limits, &timeouts)
        var machine = Machine(limits: limits, timeouts: timeouts)
        machine.activated(now: Self.t0)
        return machine
    }

    func head(_ method: HTTPMethod = .GET, _ uri: String = "/", _ headers: [(String, String)] = [], keepAlive: Bool = true)
        -> HTTPRequestHead
    {
        var fields = HTTPHeaders([("Host", "example.com")])
        for (name, value) in headers { fields.add(name: name, value: value) }
        if !keepAlive { fields.add(name: "Connection", value: "close") }
        return HTTPRequestHead(version: .http1_1, method: method, uri: uri, headers: fields)
    }

    /// Starts a request; returns its flow (and upload when it has a body).
    func start(_ machine: inout Machine, _ head: HTTPRequestHead) -> (FakeFlow, FakeUpload?) {
        var action = machine.requestHead(head, now: Self.t0)
        if case .none = action { action = machine.requestEnd(now: Self.t0) }
        guard case .startFlow(_, _, let body, _) = action else {
            Issue.record("expected startFlow, got \(action)")
            return (FakeFlow(), nil)
        }
        let flow = FakeFlow()
        let upload = body.map { _ in FakeUpload() }
        machine.flowStarted(flow, upload: upload, now: Self.t0)
        return (flow, upload)
    }

    @Test("a keep-alive request: head, end, flow, response end; back to idle with the idle timer")
    func keepAliveRequest() {
        var machine = self.machine()
        #expect(machine.timerToSchedule() == Self.t0 + .seconds(5))
        #expect(machine.requestHead(self.head(), now: Self.t0).isNone)
        guard case .startFlow(let head, let host, nil, false) = machine.requestEnd(now: Self.t0) else {
            Issue.record("no flow started"); return
        }
        #expect(head.uri == "/" && host == "example.com")
        let flow = FakeFlow()
        machine.flowStarted(flow, upload: nil, now: Self.t0)
        #expect(!machine.mustCloseAfter(head))
        guard case .finishResponse(false, nil, false) = machine.responseFinished(flow, close: false, now: Self.t0) else {
            Issue.record("response not finished"); return
        }
        #expect(machine.requestsServed == 1 && machine.responsesCompleted == 1)
        guard case .idle(false) = machine.state else { Issue.record("not idle: \(machine.state)"); return }
    }

    @Test("drain: an idle connection closes at once; a request in progress finishes, then the connection closes")
    func drain() {
        var idle = self.machine()
        guard case .closeWhenSent = idle.drain() else { Issue.record("an idle connection was not closed"); return }
        #expect(idle.isClosed)

        var busy = self.machine()
        let (flow, _) = self.start(&busy, self.head())
        #expect(busy.drain().isNone)
        #expect(busy.mustCloseAfter(self.head()))  // the response says Connection: close
        #expect(!busy.fastLaneMayAnswer(handedOver: 0))
        guard case .finishResponse(close: true, _, _) = busy.responseFinished(flow, close: false, now: Self.t0) else {
            Issue.record("the response did not close the draining connection"); return
        }
        #expect(busy.isClosed)

        // Bytes of the next request had arrived: it is answered, then the connection closes.
        var arriving = self.machine()
        arriving.bytesArrived(now: Self.t0)
        #expect(arriving.drain().isNone)
        let (next, _) = self.start(&arriving, self.head())
        guard case .finishResponse(close: true, _, _) = arriving.responseFinished(next, close: false, now: Self.t0) else {
            Issue.record("the last response did not close"); return
        }

        // A body left to drain after the answer: the connection closes when it ends.
        var discarding = self.machine()
        let (uploadFlow, _) = self.start(&discarding, self.head(.POST, "/u", [("Content-Length", "10")]))
        _ = discarding.responseFinished(uploadFlow, close: false, now: Self.t0)
        #expect(discarding.drain().isNone)
        _ = discarding.requestBody(bytes: 10, now: Self.t0)
        guard case .close(nil) = discarding.requestEnd(now: Self.t0) else {
            Issue.record("the drained body did not close the connection"); return
        }
    }

    @Test("an invalid head is refused with its status and counter, and nothing follows it")
    func refusal() {
        var machine = self.machine()
        guard case .refuse(let refusal) = machine.requestHead(self.head(.GET, "http://evil/"), now: Self.t0) else {
            Issue.record("not refused"); return
        }
        #expect(refusal.status == 400 && refusal.counter == .clientReqAbsoluteForm)
        #expect(machine.isClosed)
        #expect(machine.requestEnd(now: Self.t0).isNone)
        #expect(machine.requestBody(bytes: 10, now: Self.t0).isNone)
        #expect(machine.requestHead(self.head(), now: Self.t0).isNone)
    }

    @Test("Expect: 100-continue gets a 100 first; another expectation is 417")
    func expectations() {
        var machine = self.machine()
        guard case .startFlow(_, _, .length(5), true) = machine.requestHead(
            self.head(.POST, "/", [("Content-Length", "5"), ("Expect", "100-continue")]), now: Self.t0)
        else { Issue.record("no flow with a 100"); return }
        var other = self.machine()
        guard case .refuse(let refusal) = other.requestHead(self.head(.GET, "/", [("Expect", "magic")]), now: Self.t0) else {
            Issue.record("not refused"); return
        }
        #expect(refusal.status == 417)
    }

    @Test("the client leaving, in every state: the flow (and upload) are told exactly when there is one")
    func clientGoneInEveryState() {
        // idle
        var idle = self.machine()
        guard case .clientGone(nil, nil, false, nil) = idle.inactive() else { Issue.record("idle"); return }
        // head received, no body yet
        var head = self.machine()
        _ = head.requestHead(self.head(), now: Self.t0)
        guard case .clientGone(nil, nil, false, nil) = head.inactive() else { Issue.record("head"); return }
        // responding
        var responding = self.machine()
        let (flow, _) = self.start(&responding, self.head())
        guard case .clientGone(let told?, nil, false, nil) = responding.inactive(), told === flow else {
            Issue.record("responding"); return
        }
        // After that the flow can finish or abort: the connection ignores it.
        #expect(responding.responseFinished(flow, close: false, now: Self.t0).isNone)
        #expect(responding.flowAborted(flow).isNone)
        // responding while the body arrives
        var uploading = self.machine()
        let (uploadFlow, upload) = self.start(&uploading, self.head(.POST, "/", [("Content-Length", "100")]))
        guard case .clientGone(let told?, let cut?, true, nil) = uploading.inactive(), told === uploadFlow, cut === upload else {
            Issue.record("uploading"); return
        }
        // discarding the rest of a body
        var discarding = self.machine()
        let (early, _) = self.start(&discarding, self.head(.POST, "/", [("Content-Length", "100")]))
        _ = discarding.responseFinished(early, close: false, now: Self.t0)
        guard case .discarding = discarding.state else { Issue.record("not discarding: \(discarding.state)"); return }
        guard case .clientGone(nil, nil, false, nil) = discarding.inactive() else { Issue.record("discarding"); return }
    }

    @Test("a response from a flow that is not the current one is ignored")
    func staleFlow() {
        var machine = self.machine()
        _ = self.start(&machine, self.head())
        #expect(machine.responseFinished(FakeFlow(), close: false, now: Self.t0).isNone)
        #expect(machine.flowAborted(FakeFlow()).isNone)
        #expect(machine.currentFlow != nil)
    }

    @Test("the idle timer: early firing asks for another task, on time closes and counts")
    func idleTimer() {
        var machine = self.machine()
        _ = machine.timerToSchedule()
        #expect(machine.timerFired(now: Self.t0 + .seconds(1)).isNone)
        #expect(machine.timerToSchedule() == Self.t0 + .seconds(5))
        guard case .measureUnsent = machine.timerFired(now: Self.t0 + .seconds(5)) else {
            Issue.record("keep-alive time over without asking what is unsent"); return
        }
        guard case .close(.sessClosedIdle?) = machine.unsentMeasured(0, now: Self.t0 + .seconds(5)) else {
            Issue.record("not closed as idle"); return
        }
        #expect(machine.isClosed)
    }

    /// A machine whose response (a hit handed over whole) ended at t0, with its keep-alive time
    /// (5 s) just run out and the unsent bytes being measured.
    func keepAliveRanOut(_ configure: (inout Limits, inout ClientTimeouts) -> Void = { _, _ in }) -> Machine {
        var machine = self.machine(configure)
        let (flow, _) = self.start(&machine, self.head())
        machine.responseHeadWritten(now: Self.t0)
        _ = machine.responseFinished(flow, close: false, now: Self.t0)
        _ = machine.timerToSchedule()
        guard case .measureUnsent = machine.timerFired(now: Self.t0 + .seconds(5)) else {
            Issue.record("keep-alive time over without asking what is unsent")
            return machine
        }
        return machine
    }

    @Test("a response still leaving when the keep-alive time runs out keeps its connection; the keep-alive time starts after its last byte")
    func keepAliveWaitsForTheLastByte() {
        var machine = self.keepAliveRanOut()
        #expect(machine.unsentMeasured(4_000_000, now: Self.t0 + .seconds(5)).isNone)
        #expect(!machine.isClosed)
        #expect(machine.timerToSchedule() == Self.t0 + .seconds(10), "measured again after min(idle, send-idle)")
        guard case .measureUnsent = machine.timerFired(now: Self.t0 + .seconds(10)) else {
            Issue.record("not measured again"); return
        }
        #expect(machine.unsentMeasured(1_000, now: Self.t0 + .seconds(10)).isNone, "progress: still open")
        guard case .measureUnsent = machine.timerFired(now: Self.t0 + .seconds(15)) else {
            Issue.record("not measured again"); return
        }
        #expect(machine.unsentMeasured(0, now: Self.t0 + .seconds(15)).isNone, "the last byte left: a full keep-alive time follows")
        #expect(machine.timerToSchedule() == Self.t0 + .seconds(20))
        #expect(machine.fastLaneMayAnswer(handedOver: machine.responsesCompleted), "the connection takes its next request")
        guard case .measureUnsent = machine.timerFired(now: Self.t0 + .seconds(20)) else {
            Issue.record("keep-alive time over without asking what is unsent"); return
        }
        guard case .close(.sessClosedIdle?) = machine.unsentMeasured(0, now: Self.t0 + .seconds(20)) else {
            Issue.record("not closed as idle"); return
        }
    }

    @Test("a reader that takes nothing for the send-idle timeout is cut, counted as a timeout")
    func stalledReaderAfterTheResponse() {
        var machine = self.keepAliveRanOut { _, timeouts in timeouts.sendIdle = .seconds(8) }
        #expect(machine.unsentMeasured(4_000_000, now: Self.t0 + .seconds(5)).isNone)
        #expect(machine.timerToSchedule() == Self.t0 + .seconds(10))
        _ = machine.timerFired(now: Self.t0 + .seconds(10))
        #expect(machine.unsentMeasured(4_000_000, now: Self.t0 + .seconds(10)).isNone, "no progress yet, within send-idle")
        #expect(machine.timerToSchedule() == Self.t0 + .seconds(13), "the send-idle deadline comes before the next measure")
        guard case .measureUnsent = machine.timerFired(now: Self.t0 + .seconds(13)) else {
            Issue.record("not measured at the send-idle deadline"); return
        }
        guard case .close(.sessClosedTimeout?) = machine.unsentMeasured(4_000_000, now: Self.t0 + .seconds(13)) else {
            Issue.record("a stalled reader was not cut"); return
        }
        #expect(machine.isClosed)
    }

    @Test("a reader that keeps taking bytes is still cut at the send-total timeout, counted from the response")
    func slowReaderHitsSendTotal() {
        var machine = self.keepAliveRanOut { _, timeouts in timeouts.sendTotal = .seconds(12) }
        var unsent = 4_000_000
        #expect(machine.unsentMeasured(unsent, now: Self.t0 + .seconds(5)).isNone)
        #expect(machine.timerToSchedule() == Self.t0 + .seconds(10))
        _ = machine.timerFired(now: Self.t0 + .seconds(10))
        unsent -= 1_000
        #expect(machine.unsentMeasured(unsent, now: Self.t0 + .seconds(10)).isNone)
        #expect(machine.timerToSchedule() == Self.t0 + .seconds(12))
        _ = machine.timerFired(now: Self.t0 + .seconds(12))
        unsent -= 1_000
        guard case .close(.sessClosedTimeout?) = machine.unsentMeasured(unsent, now: Self.t0 + .seconds(12)) else {
            Issue.record("not cut at the send-total timeout"); return
        }
    }

    @Test("a request arriving while the unsent bytes are measured takes over: the measure is ignored")
    func requestDuringTheMeasure() {
        var machine = self.keepAliveRanOut()
        machine.bytesArrived(now: Self.t0 + .seconds(5))
        #expect(machine.unsentMeasured(0, now: Self.t0 + .seconds(5)).isNone)
        #expect(!machine.isClosed)
        #expect(machine.timerToSchedule() == Self.t0 + .seconds(15), "the header timer runs")
        #expect(machine.requestHead(self.head(), now: Self.t0 + .seconds(5)).isNone)
    }

    @Test("a drain while a response is still leaving closes only once it has left")
    func drainWhileStillSending() {
        var machine = self.keepAliveRanOut()
        #expect(machine.unsentMeasured(4_000_000, now: Self.t0 + .seconds(5)).isNone)
        guard case .closeWhenSent = machine.drain() else {
            Issue.record("a drain cut a response still leaving"); return
        }
        #expect(machine.isClosed)
        #expect(machine.unsentMeasured(0, now: Self.t0 + .seconds(6)).isNone, "a late measure changes nothing")
    }

    @Test("the header timer replaces the idle timer at the first byte")
    func headerTimer() {
        var machine = self.machine()
        _ = machine.timerToSchedule()
        machine.bytesArrived(now: Self.t0 + .seconds(4))
        #expect(machine.timerToSchedule() == nil)  // the task already scheduled fires first and reschedules
        #expect(machine.timerFired(now: Self.t0 + .seconds(5)).isNone)
        #expect(machine.timerToSchedule() == Self.t0 + .seconds(14))
        guard case .close(.sessClosedTimeout?) = machine.timerFired(now: Self.t0 + .seconds(14)) else {
            Issue.record("not closed on the header timeout"); return
        }
    }

    @Test("a stalled upload: the body timer abandons the flow and the upload")
    func stalledUpload() {
        var machine = self.machine { _, timeouts in timeouts.bodyIdle = .seconds(2) }
        let (flow, upload) = self.start(&machine, self.head(.POST, "/", [("Content-Length", "100")]))
        _ = machine.timerToSchedule()
        guard case .clientGone(let told?, let cut?, true, .sessClosedTimeout?) = machine.timerFired(now: Self.t0 + .seconds(2)),
            told === flow, cut === upload
        else { Issue.record("stalled upload not abandoned"); return }
    }

    @Test("a client that stops taking the response is cut after the send-idle timeout; taking again re-arms the total")
    func sendIdle() {
        var machine = self.machine { _, timeouts in
            timeouts.sendIdle = .seconds(3)
            timeouts.sendTotal = .seconds(100)
        }
        let (flow, _) = self.start(&machine, self.head())
        machine.responseHeadWritten(now: Self.t0)
        machine.writabilityChanged(isWritable: false, now: Self.t0 + .seconds(1))
        machine.writabilityChanged(isWritable: true, now: Self.t0 + .seconds(2))
        #expect(machine.timerFired(now: Self.t0 + .seconds(5)).isNone, "progress was made: only the total deadline is left")
        machine.writabilityChanged(isWritable: false, now: Self.t0 + .seconds(10))
        #expect(machine.timerFired(now: Self.t0 + .seconds(12)).isNone)
        guard case .clientGone(let told?, nil, false, .sessClosedTimeout?) = machine.timerFired(now: Self.t0 + .seconds(13)),
            told === flow
        else { Issue.record("a stalled reader was not cut"); return }
    }

    @Test("a response still being sent at the send-total timeout is cut, however steadily the client reads")
    func sendTotal() {
        var machine = self.machine { _, timeouts in timeouts.sendTotal = .seconds(20) }
        let (flow, _) = self.start(&machine, self.head())
        machine.responseHeadWritten(now: Self.t0)
        for second in stride(from: 1, to: 20, by: 2) {
            machine.writabilityChanged(isWritable: false, now: Self.t0 + .seconds(Int64(second)))
            machine.writabilityChanged(isWritable: true, now: Self.t0 + .seconds(Int64(second + 1)))
        }
        #expect(machine.timerFired(now: Self.t0 + .seconds(19)).isNone)
        guard case .clientGone(let told?, nil, false, .sessClosedTimeout?) = machine.timerFired(now: Self.t0 + .seconds(20)),
            told === flow
        else { Issue.record("a response over the send-total time was not cut"); return }
        // The next connection's response starts its own clock.
        var next = self.machine { _, timeouts in timeouts.sendTotal = .seconds(20) }
        _ = self.start(&next, self.head())
        #expect(next.timerFired(now: Self.t0 + .seconds(100)).isNone, "no head written yet: the flow's timeouts rule")
    }

    @Test("while a flow answers a bodiless request its own timeouts rule: the connection's timer stays quiet")
    func timerQuietWhileResponding() {
        var machine = self.machine()
        _ = self.start(&machine, self.head())
        #expect(machine.timerFired(now: Self.t0 + .seconds(100)).isNone)
        #expect(!machine.isClosed)
    }

    @Test("a chunked body over the limit: 413 before the response, a plain close after it")
    func bodyTooLarge() {
        var before = self.machine { limits, _ in limits.requestBodyBytes = 100 }
        let (flow, upload) = self.start(&before, self.head(.POST, "/", [("Transfer-Encoding", "chunked")]))
        guard case .appendBody(let same) = before.requestBody(bytes: 60, now: Self.t0), same === upload else {
            Issue.record("body not appended"); return
        }
        guard case .bodyTooLarge(let told, _, let refusal?) = before.requestBody(bytes: 60, now: Self.t0), told === flow else {
            Issue.record("no 413"); return
        }
        #expect(refusal.status == 413)
        var after = self.machine { limits, _ in limits.requestBodyBytes = 100 }
        _ = self.start(&after, self.head(.POST, "/", [("Transfer-Encoding", "chunked")]))
        after.responseHeadWritten(now: Self.t0)
        guard case .bodyTooLarge(_, _, nil) = after.requestBody(bytes: 101, now: Self.t0) else {
            Issue.record("expected a plain close"); return
        }
    }

    @Test("a close lingers only while the request body may still be arriving (RFC 9112 §9.6)")
    func lingersOnClose() {
        // Refused by its Content-Length: the body is on its way.
        var refused = self.machine { limits, _ in limits.requestBodyBytes = 100 }
        guard case .refuse(let refusal) = refused.requestHead(self.head(.POST, "/", [("Content-Length", "1000")]), now: Self.t0) else {
            Issue.record("no refusal"); return
        }
        #expect(refusal.status == 413 && refused.lingersOnClose)
        // A refused request without a body, or one whose body ended, does not linger.
        var bodiless = self.machine()
        _ = bodiless.requestHead(self.head(.GET, "/", [("Expect", "nonsense")]), now: Self.t0)
        #expect(!bodiless.lingersOnClose)
        var ended = self.machine()
        let (flow, upload) = self.start(&ended, self.head(.POST, "/", [("Content-Length", "10")]))
        _ = ended.requestBody(bytes: 10, now: Self.t0)
        #expect(ended.lingersOnClose)
        guard case .endBody(let same) = ended.requestEnd(now: Self.t0), same === upload else {
            Issue.record("body not ended"); return
        }
        _ = ended.responseFinished(flow, close: true, now: Self.t0)
        #expect(!ended.lingersOnClose)
        // Answered and closed with the upload still coming: lingers.
        var early = self.machine()
        let (earlyFlow, _) = self.start(&early, self.head(.POST, "/", [("Content-Length", "10000000")]))
        guard case .finishResponse(close: true, _, _) = early.responseFinished(earlyFlow, close: false, now: Self.t0) else {
            Issue.record("expected a close"); return
        }
        #expect(early.lingersOnClose)
        // An HTTP/2 stream never lingers.
        var stream = Machine(limits: Limits(), timeouts: ClientTimeouts(), isHTTP2Stream: true)
        _ = stream.requestHead(self.head(.POST, "/", [("Content-Length", "1000000000000")]), now: Self.t0)
        #expect(!stream.lingersOnClose)
    }

    @Test("answered before the body ended: a drainable rest is discarded, a long one closes")
    func earlyResponse() {
        var short = self.machine()
        let (flow, upload) = self.start(&short, self.head(.POST, "/", [("Content-Length", "1000")]))
        guard case .finishResponse(false, let detached?, _) = short.responseFinished(flow, close: false, now: Self.t0),
            detached === upload
        else { Issue.record("not drained"); return }
        #expect(short.requestBody(bytes: 1000, now: Self.t0).isNone)
        #expect(short.requestEnd(now: Self.t0).isNone)
        guard case .idle = short.state else { Issue.record("not idle after draining"); return }

        var long = self.machine()
        let (longFlow, _) = self.start(&long, self.head(.POST, "/", [("Content-Length", "1000000")]))
        #expect(long.mustCloseAfter(self.head(.POST)))
        guard case .finishResponse(true, _, _) = long.responseFinished(longFlow, close: false, now: Self.t0) else {
            Issue.record("a long rest must close"); return
        }
    }

    @Test("the last request a connection may carry closes it")
    func requestsPerConnection() {
        var machine = self.machine { limits, _ in limits.requestsPerConnection = 2 }
        let (first, _) = self.start(&machine, self.head())
        #expect(!machine.mustCloseAfter(self.head()))
        _ = machine.responseFinished(first, close: false, now: Self.t0)
        #expect(!machine.fastLaneMayAnswer(handedOver: 1))  // the last request goes through the flow
        let (second, _) = self.start(&machine, self.head())
        #expect(machine.mustCloseAfter(self.head()))
        guard case .finishResponse(true, _, _) = machine.responseFinished(second, close: false, now: Self.t0) else {
            Issue.record("not closed"); return
        }
    }

    @Test("parser errors: 400, 431, 501 for an unknown method; EOF mid-upload is the client leaving")
    func parserErrors() {
        var malformed = self.machine()
        guard case .refuse(let bad) = malformed.parserError(.invalidCharactersUsed, unknownMethod: false) else {
            Issue.record("no 400"); return
        }
        #expect(bad.status == 400 && bad.reason == "Malformed request")
        var overflow = self.machine()
        guard case .refuse(let big) = overflow.parserError(.headerOverflow, unknownMethod: false) else { Issue.record("no 431"); return }
        #expect(big.status == 431)
        var unknown = self.machine()
        guard case .refuse(let method) = unknown.parserError(.invalidMethod, unknownMethod: true) else { Issue.record("no 501"); return }
        #expect(method.status == 501)
        var uploading = self.machine()
        _ = self.start(&uploading, self.head(.POST, "/", [("Content-Length", "100")]))
        guard case .clientGone(_, _, true, nil) = uploading.parserError(.invalidEOFState, unknownMethod: false) else {
            Issue.record("EOF mid-upload"); return
        }
        var chunking = self.machine()
        _ = self.start(&chunking, self.head(.POST, "/", [("Transfer-Encoding", "chunked")]))
        guard case .malformedBody(_, _, let refusal) = chunking.parserError(.invalidChunkSize, unknownMethod: false) else {
            Issue.record("bad chunking"); return
        }
        #expect(refusal.status == 400)
    }

    @Test("reads are held back while the upload's backend is slow, and issued once it catches up")
    func backpressure() {
        var machine = self.machine()
        _ = self.start(&machine, self.head(.POST, "/", [("Content-Length", "100000")]))
        machine.pauseReading()
        let passedWhilePaused = machine.readRequested()
        #expect(!passedWhilePaused)
        guard case .read = machine.resumeReading(now: Self.t0) else { Issue.record("held read not issued"); return }
        let passedAfter = machine.readRequested()
        #expect(passedAfter)
    }

    @Test("events that make no sense close the connection instead of trapping")
    func invalidTransitions() {
        var endWhileIdle = self.machine()
        guard case .close(nil) = endWhileIdle.requestEnd(now: Self.t0) else { Issue.record("end while idle"); return }
        var bodyWhileIdle = self.machine()
        guard case .close(nil) = bodyWhileIdle.requestBody(bytes: 1, now: Self.t0) else { Issue.record("body while idle"); return }
        var headTwice = self.machine()
        _ = headTwice.requestHead(self.head(), now: Self.t0)
        guard case .close(nil) = headTwice.requestHead(self.head(), now: Self.t0) else { Issue.record("two heads"); return }
        var bodyWhileResponding = self.machine()
        let (flow, _) = self.start(&bodyWhileResponding, self.head())
        guard case .clientGone(let told?, nil, false, nil) = bodyWhileResponding.requestBody(bytes: 1, now: Self.t0), told === flow
        else { Issue.record("body after a bodiless request"); return }
        var closed = self.machine()
        _ = closed.inactive()
        closed.flowStarted(FakeFlow(), upload: nil, now: Self.t0)
        #expect(closed.isClosed)
    }
}

extension ClientConnectionStateMachine.Action {
    var isNone: Bool {
        if case .none = self { return true }
        return false
    }
}

/// The handler on an `EmbeddedChannel`: what it writes for the machine's refusals and timers.
@Suite("Client channel handler")
struct ClientChannelHandlerTests {
    func channel() throws -> (EmbeddedChannel, EmbeddedEventLoop) {
        let loop = EmbeddedEventLoop()
        var configuration = ServerConfiguration()
        configuration.clientTimeouts.idle = .seconds(5)
        let context = ServerContext(
            configuration: configuration, memory: MemoryTier(capacityBytes: 1 << 20), disk: nil, counters: Counters(),
            logger: Logger(label: "test"), clock: { 1_000_000 }, eventLoops: [loop])
        let handler = ClientChannelHandler(server: context, eventLoop: loop, facts: ConnectionFacts(peer: nil, local: nil), now: { loop.now })
        let channel = EmbeddedChannel(handler: handler, loop: loop)
        return (channel, loop)
    }

    @Test("an absolute-form request is answered 400 and the connection closes")
    func refusalIsWrittenThenClosed() throws {
        let (channel, _) = try self.channel()
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: "http://evil/", headers: ["Host": "evil"])
        try channel.writeInbound(HTTPServerRequestPart.head(head))
        guard case .head(let response)? = try channel.readOutbound(as: HTTPServerResponsePart.self) else {
            Issue.record("no response head"); return
        }
        #expect(response.status == .badRequest)
        #expect(response.headers["connection"].first == "close")
        guard case .body? = try channel.readOutbound(as: HTTPServerResponsePart.self) else { Issue.record("no body"); return }
        guard case .end? = try channel.readOutbound(as: HTTPServerResponsePart.self) else { Issue.record("no end"); return }
        #expect(!channel.isActive)
    }

    @Test("a connection whose requests the hit lane answers never builds the HTTP/1.1 decoder; the first request handed over builds it")
    func decoderBuiltOnFirstHandOver() throws {
        let loop = EmbeddedEventLoop()
        let context = ServerContext(
            configuration: ServerConfiguration(), memory: MemoryTier(capacityBytes: 1 << 20), disk: nil, counters: Counters(),
            logger: Logger(label: "test"), clock: { 1_000_000 }, eventLoops: [loop])
        var body = ByteBuffer()
        body.writeString("stored")
        _ = context.memory.insert(
            StoredObject(
                key: CacheKey(host: "a", target: "/x"), variant: "", varyNames: [], status: 200, reason: "OK",
                headers: HTTPHeaders([("Cache-Control", "max-age=600")]), body: body, requestTime: 1_000_000,
                responseTime: 1_000_000, origin: 1_000_000, ttl: 600, grace: 0, keep: 0, mustRevalidate: false))
        let channel = EmbeddedChannel(loop: loop)
        try ClientPipeline.addHTTP1(channel, facts: ConnectionFacts(peer: nil, local: nil), context: context, proxyProtocol: false)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        let decoderPresent = { (try? channel.pipeline.syncOperations.handler(type: HTTPServerPipelineHandler.self)) != nil }

        for _ in 0..<3 {
            try channel.writeInbound(ByteBuffer(string: "GET /x HTTP/1.1\r\nHost: a\r\n\r\n"))
            let response = try #require(try channel.readOutbound(as: ByteBuffer.self))
            #expect(String(buffer: response).hasPrefix("HTTP/1.1 200 OK\r\n"))
            #expect(String(buffer: response).hasSuffix("\r\n\r\nstored"))
        }
        #expect(context.counters[.cacheHitFast] == 3)
        #expect(!decoderPresent(), "hits alone built the decoder")
        #expect((try? channel.pipeline.syncOperations.handler(type: ResponseEncoder.self)) == nil, "hits alone built the encoder")

        // A request the lane does not answer (a PURGE) goes to the decoder, built for it.
        try channel.writeInbound(ByteBuffer(string: "PURGE /x HTTP/1.1\r\nHost: a\r\n\r\n"))
        #expect(decoderPresent())
        #expect((try? channel.pipeline.syncOperations.handler(type: ResponseEncoder.self)) != nil)
        #expect(context.counters[.clientReq] == 4, "the handed-over request did not reach the connection handler")
        _ = try? channel.finish()
    }

    @Test("an idle connection closes when its keep-alive timer runs out, not before")
    func idleTimeout() throws {
        let (channel, loop) = try self.channel()
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        loop.advanceTime(by: .seconds(4))
        #expect(channel.isActive)
        loop.advanceTime(by: .seconds(1))
        #expect(!channel.isActive)
    }
}
