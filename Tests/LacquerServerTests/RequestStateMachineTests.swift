import CachePolicy
import CacheStore
import LacquerTesting
import NIOCore
import NIOHTTP1
import Testing
import VCL

@testable import LacquerServer

/// The request's steps without sockets, disk or clock: events in, actions out. Time is whatever
/// the events say it is.
@Suite("Request steps (state machine)")
struct RequestStateMachineTests {
    typealias Machine = RequestStateMachine
    typealias Step = RequestStateMachine.Step

    static let now = 1_000_000.0
    static let key = CacheKey(host: "example.com", target: "/a")
    /// The configured stale-if-error window used by every machine here.
    static let staleIfError = 30.0

    /// A stored copy that went stale 5 s before `now` (ttl 10 s), with `grace` seconds of grace.
    static func copy(grace: Double = 0, mustRevalidate: Bool = false) -> StaleCopy {
        let origin = now - 15
        return .memory(
            StoredObject(
                key: key, variant: "", varyNames: [], status: 200, reason: "OK", headers: [:],
                body: ByteBuffer(string: "stored"), requestTime: origin, responseTime: origin, origin: origin, ttl: 10,
                grace: grace, keep: 0, mustRevalidate: mustRevalidate))
    }

    static func machine(disk: Bool = false) -> Machine {
        Machine(hasDiskTier: disk, staleIfErrorDefault: staleIfError)
    }

    static let allErrors: [BackendError] = [
        .connectFailed("refused"), .connectTimeout, .queueTimeout, .firstByteTimeout, .betweenBytesTimeout,
        .closedBeforeHead, .closedMidBody, .framing("bad"), .headersTooLarge, .noBackend, .allBackendsSick,
    ]

    // MARK: Reaching each step

    /// The events that take a new request to `step` (a cache miss that leads its fill when the
    /// step is fetch or deliver).
    static func route(to step: Step) -> [Machine.Event] {
        let hashed = Machine.Event.hashed(key, alwaysMiss: false, ignoreBusy: false, onlyIfCached: false)
        let toMiss: [Machine.Event] = [.start, .sub(.recv, .returned(.hash)), hashed, .lookedUp(.miss(fwd: .uriMiss), .memory, now: now)]
        let toFetch = toMiss + [.sub(.miss, .builtin), .joined(.leader), .sub(.backendFetch, .builtin)]
        switch step {
        case .recv: return [.start]
        case .hash: return [.start, .sub(.recv, .returned(.hash))]
        case .lookup: return [.start, .sub(.recv, .returned(.hash)), hashed]
        case .hit: return [.start, .sub(.recv, .returned(.hash)), hashed, .lookedUp(.hit(copy()), .memory, now: now)]
        case .miss: return toMiss
        case .pass: return [.start, .sub(.recv, .returned(.pass))]
        case .purge: return [.start, .sub(.recv, .returned(.purge)), hashed]
        case .fetch: return toFetch
        case .deliver: return toFetch + [.backendConnected, .backendHead(.streaming(sendsBody: true))]
        case .synth: return [.start, .sub(.recv, .returned(.synth(status: 403, reason: nil)))]
        case .done:
            return toFetch + [.backendConnected, .backendHead(.streaming(sendsBody: true)), .backendEnd]
        }
    }

    static func machine(at step: Step) -> Machine {
        var machine = Self.machine()
        for event in route(to: step) { _ = machine.take(event) }
        return machine
    }

    /// Every event that may follow, in an order a driver could report them.
    static let followUps: [Machine.Event] = [
        .sub(.recv, .builtin), .sub(.hit, .builtin), .sub(.miss, .builtin), .sub(.pass, .builtin),
        .sub(.purge, .builtin), .sub(.synth, .builtin), .sub(.backendFetch, .builtin), .sub(.backendError, .builtin),
        .hashed(key, alwaysMiss: false, ignoreBusy: false, onlyIfCached: false),
        .lookedUp(.hit(copy()), .memory, now: now), .lookedUp(.miss(fwd: .miss), .disk, now: now),
        .purged(count: 1), .joined(.waiter), .busyHead(forUs: true), .busyData, .busyFinished(.complete, now: now),
        .timer(now: now), .diskReadFailed(key), .codingUnavailable, .headWritten(.disk), .headWritten(.slices), .backendConnected,
        .backendHead(.streaming(sendsBody: true)), .backendBody(ByteBuffer(), needed: true), .backendBody(ByteBuffer(), needed: false),
        .backendEnd, .backendFailed(.closedMidBody, beforeHead: false, retryable: false, now: now),
        .revalidated(ok: true), .revalidated(ok: false), .deliverReplaced(status: 500, reason: "x"), .delivered,
        .deliveryFailed, .clientWritable,
    ]

    @Test("every route reaches the step it names")
    func routes() {
        for step in Step.allCases {
            let machine = Self.machine(at: step)
            #expect(machine.step == step, "route to \(step)")
        }
    }

    // MARK: The client leaves at every step

    @Test("a client that leaves at any step gets no write and no call back, whatever follows", arguments: Step.allCases)
    func clientGoneAtEveryStep(step: Step) {
        var machine = Self.machine(at: step)
        let onLeaving = machine.take(.clientGone)
        #expect(machine.step == .done)
        #expect(!onLeaving.contains(where: Self.touchesClient), "at \(step): \(onLeaving)")
        for event in Self.followUps {
            let actions = machine.take(event)
            #expect(!actions.contains(where: Self.touchesClient), "at \(step), after \(event): \(actions)")
        }
        #expect(machine.step == .done)
    }

    @Test("a fill whose client left goes on: it stores and releases its waiters; a pass is abandoned")
    func fillOutlivesItsClient() {
        var fill = Self.machine(at: .deliver)
        #expect(fill.take(.clientGone) == ["resume fetch"])
        #expect(fill.take(.backendBody(ByteBuffer(), needed: true)) == [])
        #expect(fill.take(.backendEnd) == ["complete fetch"])

        var leftBeforeHead = Self.machine(at: .fetch)
        _ = leftBeforeHead.take(.backendConnected)
        #expect(leftBeforeHead.take(.clientGone) == ["resume fetch"])
        #expect(leftBeforeHead.take(.backendHead(.streaming(sendsBody: true))) == [])
        #expect(leftBeforeHead.take(.backendBody(ByteBuffer(), needed: true)) == [])
        #expect(leftBeforeHead.take(.backendEnd) == ["complete fetch"])

        var failing = Self.machine(at: .deliver)
        _ = failing.take(.clientGone)
        #expect(failing.take(.backendFailed(.betweenBytesTimeout, beforeHead: false, retryable: false, now: Self.now)) == ["fail fetch"])

        var unwanted = Self.machine(at: .deliver)
        _ = unwanted.take(.clientGone)
        #expect(unwanted.take(.backendBody(ByteBuffer(), needed: false)) == ["abandon fetch", "fail fetch"])
        #expect(unwanted.take(.backendEnd) == [])

        var pass = Self.machine()
        for event in Self.route(to: .pass) { _ = pass.take(event) }
        #expect(pass.take(.sub(.pass, .builtin)) == ["prepare pass"])
        #expect(pass.take(.sub(.backendFetch, .builtin)) == ["start fetch"])
        #expect(pass.take(.clientGone) == ["abandon fetch"])
        #expect(pass.take(.backendConnected) == ["abandon fetch"], "a connection made after the client left goes back")
        #expect(pass.take(.backendHead(.streaming(sendsBody: true))) == [])
    }

    @Test("a waiter that leaves stops waiting and writes nothing")
    func waiterLeaves() {
        var machine = Self.machine(at: .miss)
        _ = machine.take(.sub(.miss, .builtin))
        #expect(machine.take(.joined(.waiter)) == ["wait"])
        #expect(machine.take(.clientGone) == ["stop waiting"])
        #expect(machine.take(.busyHead(forUs: true)) == [])
        #expect(machine.take(.busyFinished(.failed(.closedMidBody), now: Self.now)) == [])

        var streaming = Self.machine(at: .miss)
        _ = streaming.take(.sub(.miss, .builtin))
        _ = streaming.take(.joined(.waiter))
        #expect(streaming.take(.busyHead(forUs: true)) == ["write waiter head"])
        #expect(streaming.take(.busyData) == ["pump waiter"])
        #expect(streaming.take(.clientGone) == ["stop waiting"])
        #expect(streaming.take(.busyData) == [])
        #expect(streaming.take(.clientWritable) == [])
    }

    // MARK: Backend errors

    @Test("a backend error before the head: the fill's waiters are released, vcl_backend_error, then the error", arguments: allErrors)
    func errorBeforeHead(error: BackendError) {
        var machine = Self.machine(at: .fetch)
        _ = machine.take(.backendConnected)
        #expect(machine.take(.backendFailed(error, beforeHead: true, retryable: false, now: Self.now)) == ["fail fetch", "run vcl_backend_error"])
        #expect(machine.take(.sub(.backendError, .builtin)) == ["run vcl_synth \(error.status)"])
        #expect(machine.take(.sub(.synth, .builtin)) == ["write synth \(error.status)", "finish"])
        #expect(machine.step == .done)
    }

    @Test("a backend error after the head cuts the connection (never a clean end) and fails the waiters", arguments: allErrors)
    func errorAfterHead(error: BackendError) {
        var machine = Self.machine(at: .deliver)
        #expect(machine.take(.backendBody(ByteBuffer(), needed: true)) == ["write body"])
        #expect(machine.take(.backendFailed(error, beforeHead: false, retryable: false, now: Self.now)) == ["fail fetch", "abort"])
        #expect(machine.step == .done)
        #expect(machine.take(.backendEnd) == [])
    }

    @Test("a backend error at every step: only a running fetch reacts, and never twice", arguments: Step.allCases)
    func errorsAtEveryStep(step: Step) {
        for error in Self.allErrors {
            for beforeHead in [true, false] {
                var machine = Self.machine(at: step)
                let first = machine.take(.backendFailed(error, beforeHead: beforeHead, retryable: false, now: Self.now))
                switch step {
                case .fetch:
                    #expect(first == ["fail fetch", "run vcl_backend_error"], "\(error)")
                case .deliver:
                    #expect(first == ["fail fetch", "abort"], "\(error)")
                default:
                    #expect(first == [], "at \(step): \(error)")
                }
                let second = machine.take(.backendFailed(error, beforeHead: beforeHead, retryable: false, now: Self.now))
                #expect(second == [], "a second report is ignored at \(step)")
            }
        }
    }

    @Test("a reused connection the origin had closed is retried once, then the error stands")
    func closedConnectionRetriedOnce() {
        var machine = Self.machine(at: .fetch)
        #expect(machine.take(.backendFailed(.closedBeforeHead, beforeHead: true, retryable: true, now: Self.now)) == ["prepare fill"])
        #expect(machine.take(.sub(.backendFetch, .builtin)) == ["start fetch"])
        #expect(machine.take(.backendFailed(.closedBeforeHead, beforeHead: true, retryable: true, now: Self.now)) == ["fail fetch", "run vcl_backend_error"])
    }

    @Test("stale-if-error stands in for a failed fill while its window (at the event's time) lasts")
    func staleOnErrorUsesTheEventsClock() {
        func failingRefresh(at now: Double) -> [String] {
            var machine = Self.machine()
            for event in Self.route(to: .lookup) { _ = machine.take(event) }
            _ = machine.take(.lookedUp(.refresh(Self.copy(), fwd: .stale), .memory, now: Self.now))
            #expect(machine.take(.sub(.hit, .builtin)) == ["run vcl_miss"])
            _ = machine.take(.sub(.miss, .builtin))
            _ = machine.take(.joined(.leader))
            _ = machine.take(.sub(.backendFetch, .builtin))
            return machine.take(.backendFailed(.connectTimeout, beforeHead: true, retryable: false, now: now))
        }
        // Stale since now - 5; the configured window is 30 s.
        #expect(failingRefresh(at: Self.now + 20) == ["fail fetch", "deliver STALE stale-if-error"])
        #expect(failingRefresh(at: Self.now + 30) == ["fail fetch", "run vcl_backend_error"])
    }

    @Test("grace: a copy inside its grace at lookup time is delivered while one refresh runs, else fetched")
    func graceUsesTheLookupsClock() {
        func lookup(grace: Double, at now: Double) -> [String] {
            var machine = Self.machine()
            for event in Self.route(to: .lookup) { _ = machine.take(event) }
            _ = machine.take(.lookedUp(.refresh(Self.copy(grace: grace), fwd: .stale), .memory, now: now))
            return machine.take(.sub(.hit, .builtin))
        }
        #expect(lookup(grace: 60, at: Self.now) == ["deliver UPDATING stale-while-revalidate refresh"])
        #expect(lookup(grace: 60, at: Self.now + 60) == ["run vcl_miss"])
        #expect(lookup(grace: 0, at: Self.now) == ["run vcl_miss"])
    }

    @Test("a waiter whose fill takes too long gets a stale copy or the timeout, at the timer's time")
    func waiterTimeout() {
        func waiting(stale: StaleCopy?) -> Machine {
            var machine = Self.machine()
            for event in Self.route(to: .lookup) { _ = machine.take(event) }
            if let stale {
                _ = machine.take(.lookedUp(.refresh(stale, fwd: .stale), .memory, now: Self.now))
                _ = machine.take(.sub(.hit, .builtin))
            } else {
                _ = machine.take(.lookedUp(.miss(fwd: .uriMiss), .memory, now: Self.now))
            }
            _ = machine.take(.sub(.miss, .builtin))
            #expect(machine.take(.joined(.waiter)) == ["wait"])
            return machine
        }
        var none = waiting(stale: nil)
        let timeout = BackendError.firstByteTimeout.status
        #expect(none.take(.timer(now: Self.now + 60)) == ["stop waiting", "run vcl_synth \(timeout)"])
        var withStale = waiting(stale: Self.copy())
        #expect(withStale.take(.timer(now: Self.now + 10)) == ["stop waiting", "deliver STALE stale-if-error"])
        var tooOld = waiting(stale: Self.copy())
        #expect(tooOld.take(.timer(now: Self.now + 100)) == ["stop waiting", "run vcl_synth \(timeout)"])
        // A timer that fires after streaming began changes nothing.
        var streaming = waiting(stale: nil)
        _ = streaming.take(.busyHead(forUs: true))
        #expect(streaming.take(.timer(now: Self.now + 60)) == [])
    }

    @Test("waiting list: collapsed streaming, a failed fill mid-body cuts the waiter, uncacheable fetches its own")
    func waitingList() {
        func waiter() -> Machine {
            var machine = Self.machine(at: .miss)
            _ = machine.take(.sub(.miss, .builtin))
            _ = machine.take(.joined(.waiter))
            return machine
        }
        var complete = waiter()
        #expect(complete.take(.busyHead(forUs: false)) == [], "another variant: wait for the stored object")
        #expect(complete.take(.busyHead(forUs: true)) == ["write waiter head"])
        #expect(complete.take(.busyFinished(.complete, now: Self.now)) == ["pump waiter"])
        #expect(complete.take(.delivered) == ["stop waiting", "finish"])

        var failed = waiter()
        _ = failed.take(.busyHead(forUs: true))
        #expect(failed.take(.busyFinished(.failed(.closedMidBody), now: Self.now)) == ["stop waiting", "abort"])

        var uncacheable = waiter()
        #expect(uncacheable.take(.busyFinished(.uncacheable, now: Self.now)) == ["stop waiting", "prepare fill"])

        var lookAgain = waiter()
        #expect(lookAgain.take(.busyFinished(.retryLookup, now: Self.now)) == ["stop waiting", "hash"])

        // A lookup that found nothing rechecks memory when it leads; a miss VCL forced does not.
        var found = Self.machine(at: .miss)
        #expect(found.take(.sub(.miss, .builtin)) == ["join, recheck"])
        var forced = Self.machine()
        for event in [Machine.Event.start, .sub(.recv, .returned(.hash))] { _ = forced.take(event) }
        _ = forced.take(.hashed(Self.key, alwaysMiss: true, ignoreBusy: false, onlyIfCached: false))
        #expect(forced.take(.sub(.miss, .builtin)) == ["join"])

        // Joining after a fill stored and let go: another lookup, not a fetch; at most 3 times.
        var storedMeanwhile = Self.machine(at: .miss)
        _ = storedMeanwhile.take(.sub(.miss, .builtin))
        #expect(storedMeanwhile.take(.joined(.storedMeanwhile)) == ["hash"])
        var keepsMissing = Self.machine(at: .miss)
        _ = keepsMissing.take(.sub(.miss, .builtin))
        for _ in 0..<3 {
            #expect(keepsMissing.take(.joined(.storedMeanwhile)) == ["hash"])
            _ = keepsMissing.take(.hashed(Self.key, alwaysMiss: false, ignoreBusy: false, onlyIfCached: false))
            _ = keepsMissing.take(.lookedUp(.miss(fwd: .uriMiss), .memory, now: Self.now))
            _ = keepsMissing.take(.sub(.miss, .builtin))
        }
        #expect(keepsMissing.take(.joined(.storedMeanwhile)) == ["prepare fill"])

        var failedBeforeHead = waiter()
        #expect(
            failedBeforeHead.take(.busyFinished(.failed(.connectTimeout), now: Self.now))
                == ["stop waiting", "run vcl_synth \(BackendError.connectTimeout.status)"])
    }

    // MARK: VCL

    @Test("vcl_recv's answers take the request where Varnish takes it")
    func recvActions() {
        func after(_ result: Machine.SubResult) -> ([String], Step) {
            var machine = Self.machine()
            _ = machine.take(.start)
            let actions = machine.take(.sub(.recv, result))
            return (actions, machine.step)
        }
        #expect(after(.returned(.hash)) == (["hash"], .hash))
        #expect(after(.returned(.pass)) == (["run vcl_pass"], .pass))
        #expect(after(.returned(.pipe)) == (["run vcl_pass"], .pass))
        #expect(after(.returned(.purge)) == (["hash"], .hash))
        #expect(after(.returned(.synth(status: 403, reason: "No"))) == (["run vcl_synth 403"], .synth))
        #expect(after(.returned(.restart)) == (["run vcl_recv"], .recv))
        #expect(after(.returned(.deliver)) == (["run vcl_synth 503"], .synth))
        #expect(after(.failed) == (["run vcl_synth 503"], .synth))
    }

    @Test("a VCL failure in any sub ends in a 503 (natively when vcl_synth itself failed)")
    func vclFailures() {
        var hit = Self.machine(at: .hit)
        #expect(hit.take(.sub(.hit, .failed)) == ["run vcl_synth 503"])
        var miss = Self.machine(at: .miss)
        #expect(miss.take(.sub(.miss, .failed)) == ["run vcl_synth 503"])
        var pass = Self.machine(at: .pass)
        #expect(pass.take(.sub(.pass, .failed)) == ["run vcl_synth 503"])
        var hash = Self.machine(at: .hash)
        #expect(hash.take(.sub(.hash, .failed)) == ["run vcl_synth 503"])
        var synth = Self.machine(at: .synth)
        #expect(synth.take(.sub(.synth, .failed)) == ["write synth 503", "finish"])
        var fetch = Self.machine(at: .miss)
        _ = fetch.take(.sub(.miss, .builtin))
        _ = fetch.take(.joined(.leader))
        #expect(fetch.take(.sub(.backendFetch, .failed)) == ["fail fetch", "run vcl_synth 503"])
    }

    @Test("restarts are capped (max_restarts): the fifth ends in a 503")
    func restartCap() {
        var machine = Self.machine()
        _ = machine.take(.start)
        for _ in 0..<Machine.maxRestarts {
            #expect(machine.take(.sub(.recv, .returned(.restart))) == ["run vcl_recv"])
        }
        #expect(machine.take(.sub(.recv, .returned(.restart))) == ["run vcl_synth 503"])
    }

    @Test("vcl_backend_response retry refetches up to max_retries, then the fetch is abandoned with a 503")
    func retryCap() {
        var machine = Self.machine(at: .fetch)
        for _ in 0..<Machine.maxRetries {
            _ = machine.take(.backendConnected)
            #expect(machine.take(.backendHead(.retry)) == ["abandon fetch", "prepare fill"])
            #expect(machine.take(.sub(.backendFetch, .builtin)) == ["start fetch"])
        }
        #expect(machine.take(.backendHead(.retry)) == ["abandon fetch", "fail fetch", "run vcl_synth 503"])
    }

    @Test("vcl_deliver replacing a fetched response: the synthetic answer goes out, the fill goes on")
    func deliverReplaced() {
        var machine = Self.machine(at: .fetch)
        _ = machine.take(.backendConnected)
        #expect(machine.take(.deliverReplaced(status: 403, reason: "Forbidden")) == ["run vcl_synth 403"])
        #expect(machine.take(.backendHead(.streaming(sendsBody: true))) == [])
        #expect(machine.take(.sub(.synth, .builtin)) == ["write synth 403", "finish"])
        #expect(machine.take(.backendBody(ByteBuffer(), needed: true)) == [])
        #expect(machine.take(.backendEnd) == ["complete fetch"])
    }

    @Test("purge: vcl_purge, then 200 or 404; a disk that cannot commit is a 503")
    func purge() {
        var machine = Self.machine(at: .purge)
        #expect(machine.take(.purged(count: 2)) == ["run vcl_purge"])
        #expect(machine.take(.sub(.purge, .builtin)) == ["run vcl_synth 200"])
        #expect(machine.take(.sub(.synth, .builtin)) == ["write synth 200 purged", "finish"])
        var none = Self.machine(at: .purge)
        _ = none.take(.purged(count: 0))
        #expect(none.take(.sub(.purge, .builtin)) == ["run vcl_synth 404"])
        var failed = Self.machine(at: .purge)
        #expect(failed.take(.purgeFailed) == ["run vcl_synth 503"])
    }

    @Test("only-if-cached: a miss or a stale copy is a 504, no fetch")
    func onlyIfCached() {
        var machine = Self.machine()
        for event in Self.route(to: .hash) { _ = machine.take(event) }
        _ = machine.take(.hashed(Self.key, alwaysMiss: false, ignoreBusy: false, onlyIfCached: true))
        #expect(machine.take(.lookedUp(.miss(fwd: .uriMiss), .memory, now: Self.now)) == ["run vcl_synth 504"])
    }

    @Test("a memory miss looks on disk; a disk body that cannot be read is a miss; a coding we cannot decode passes")
    func diskTier() {
        var machine = Self.machine(disk: true)
        for event in Self.route(to: .lookup) { _ = machine.take(event) }
        #expect(machine.take(.lookedUp(.miss(fwd: .varyMiss), .memory, now: Self.now)) == ["lookup disk"])
        #expect(machine.take(.lookedUp(.hit(Self.copy()), .disk, now: Self.now)) == ["run vcl_hit"])
        #expect(machine.take(.sub(.hit, .builtin)) == ["deliver HIT"])
        #expect(machine.take(.diskReadFailed(Self.key)) == ["run vcl_miss"])

        var stream = Self.machine(disk: true)
        for event in Self.route(to: .hit) { _ = stream.take(event) }
        _ = stream.take(.sub(.hit, .builtin))
        #expect(stream.take(.headWritten(.disk)) == [])
        #expect(stream.take(.clientWritable) == ["resume disk read"])
        #expect(stream.take(.clientGone) == ["close disk reader"])

        // A sliced object's body (SliceWalker) is paced and stopped the same way.
        var slices = Self.machine(disk: true)
        for event in Self.route(to: .hit) { _ = slices.take(event) }
        _ = slices.take(.sub(.hit, .builtin))
        #expect(slices.take(.headWritten(.slices)) == [])
        #expect(slices.take(.clientWritable) == ["resume slices"])
        #expect(slices.take(.deliveryFailed) == ["abort"])
        #expect(slices.take(.clientWritable) == [], "nothing after the response is over")
        var leaving = Self.machine(disk: true)
        for event in Self.route(to: .hit) { _ = leaving.take(event) }
        _ = leaving.take(.sub(.hit, .builtin))
        _ = leaving.take(.headWritten(.slices))
        #expect(leaving.take(.clientGone) == ["close slices"])

        var coding = Self.machine(disk: true)
        for event in Self.route(to: .hit) { _ = coding.take(event) }
        _ = coding.take(.sub(.hit, .builtin))
        #expect(coding.take(.codingUnavailable) == ["prepare pass"])
    }

    @Test("a 304 to our conditional fill: the copy is updated at the end, then delivered (or refetched)")
    func revalidation() {
        var machine = Self.machine(at: .fetch)
        _ = machine.take(.backendConnected)
        #expect(machine.take(.backendHead(.notModified)) == [])
        #expect(machine.take(.backendEnd) == ["complete revalidation"])
        #expect(machine.take(.revalidated(ok: true)) == ["deliver revalidated"])
        #expect(machine.take(.delivered) == ["finish"])

        var bodyGone = Self.machine(at: .fetch)
        _ = bodyGone.take(.backendConnected)
        _ = bodyGone.take(.backendHead(.notModified))
        _ = bodyGone.take(.backendEnd)
        #expect(bodyGone.take(.revalidated(ok: false)) == ["prepare fill"])

        var leftMeanwhile = Self.machine(at: .fetch)
        _ = leftMeanwhile.take(.backendConnected)
        _ = leftMeanwhile.take(.backendHead(.notModified))
        _ = leftMeanwhile.take(.clientGone)
        #expect(leftMeanwhile.take(.backendEnd) == ["complete revalidation"], "the waiters still get the update")
        #expect(leftMeanwhile.take(.revalidated(ok: true)) == [])
    }

    @Test("a background refresh has no client: it fetches, stores and never writes")
    func backgroundRefresh() {
        var machine = Self.machine()
        #expect(machine.take(.startRefresh(key: Self.key, stale: Self.copy())) == ["prepare fill"])
        #expect(machine.take(.sub(.backendFetch, .builtin)) == ["start fetch"])
        #expect(machine.take(.backendConnected) == [])
        #expect(machine.take(.backendHead(.streaming(sendsBody: true))) == [])
        #expect(machine.take(.backendBody(ByteBuffer(), needed: true)) == [])
        #expect(machine.take(.backendEnd) == ["complete fetch"])
    }

    // MARK: Random event sequences

    @Test("seeded random event sequences: no write after the client left, one end of the response at most")
    func randomSequences() {
        let seed = SeededRandom.seed(fallback: 0x5EED_0013)
        var random = SeededRandom(seed: seed)
        print("request state machine fuzz seed \(seed) (replay with LACQUER_SEED)")
        let events = Self.followUps + [
            .clientGone, .sub(.recv, .returned(.pass)), .sub(.recv, .returned(.purge)), .joined(.leader),
            .sub(.hit, .returned(.miss)), .backendHead(.answered(keepFetching: true)), .backendHead(.notModified),
            .backendHead(.retry), .backendHead(.serverError(Self.copy())),
            .backendFailed(.closedBeforeHead, beforeHead: true, retryable: true, now: Self.now),
            .busyFinished(.failed(.firstByteTimeout), now: Self.now), .sub(.synth, .returned(.restart)),
        ]
        for round in 0..<2_000 {
            var machine = Self.machine(disk: Bool.random(using: &random))
            var trace: [String] = []
            var gone = false
            var ends = 0
            _ = machine.take(.start)
            for _ in 0..<Int.random(in: 1...40, using: &random) {
                let event = events[Int.random(in: 0..<events.count, using: &random)]
                if case .clientGone = event { gone = true }
                let actions = machine.take(event)
                trace.append("\(event) -> \(actions)")
                if gone {
                    #expect(!actions.contains(where: Self.touchesClient), "seed \(seed) round \(round): \(trace)")
                }
                ends += actions.filter { $0 == "finish" || $0 == "abort" }.count
            }
            #expect(ends <= 1, "seed \(seed) round \(round): \(trace)")
        }
    }

    // MARK: Helpers

    /// Actions that write to the client or call back into its connection.
    static func touchesClient(_ action: String) -> Bool {
        action.hasPrefix("write") || action.hasPrefix("deliver") || action.hasPrefix("pump")
            || action.hasPrefix("run vcl_synth") || action == "finish" || action == "abort" || action == "resume disk read"
            || action == "resume slices"
    }
}

extension RequestStateMachine {
    /// Takes `event` and returns the actions it asked for, named.
    mutating func take(_ event: Event) -> [String] {
        self.handle(event)
        var names: [String] = []
        while let action = self.nextPendingAction() {
            names.append(Self.name(action))
        }
        return names
    }

    static func name(_ action: Action) -> String {
        switch action {
        case .runSub(let sub): "run \(sub.rawValue)"
        case .runHit: "run vcl_hit"
        case .runSynth(let status, _): "run vcl_synth \(status)"
        case .runBackendError: "run vcl_backend_error"
        case .hash: "hash"
        case .lookUp(_, let tier): "lookup \(tier)"
        case .purge: "purge"
        case .join(_, let recheck): recheck ? "join, recheck" : "join"
        case .wait: "wait"
        case .stopWaiting: "stop waiting"
        case .writeWaiterHead: "write waiter head"
        case .pumpWaiter: "pump waiter"
        case .prepareFetch(let mode): mode.isFill ? "prepare fill" : "prepare pass"
        case .startFetch: "start fetch"
        case .abandonFetch: "abandon fetch"
        case .pauseFetch: "pause fetch"
        case .resumeFetch: "resume fetch"
        case .writeFetchedBody: "write body"
        case .completeFetch: "complete fetch"
        case .failFetch: "fail fetch"
        case .completeRevalidation: "complete revalidation"
        case .deliver(_, let status, let detail, let refresh):
            ["deliver", status.rawValue, detail, refresh == nil ? nil : "refresh"].compactMap { $0 }.joined(separator: " ")
        case .deliverRevalidated: "deliver revalidated"
        case .resumeDiskRead: "resume disk read"
        case .closeDiskReader: "close disk reader"
        case .resumeSlices: "resume slices"
        case .closeSlices: "close slices"
        case .writeSynthetic(let status, _, let body):
            body == nil ? "write synth \(status)" : "write synth \(status) \(body == .notInCache ? "not-in-cache" : "purged")"
        case .writeVCLSynthetic(let sub, _): "write vcl synth \(sub.rawValue)"
        case .finish: "finish"
        case .abort: "abort"
        }
    }
}
