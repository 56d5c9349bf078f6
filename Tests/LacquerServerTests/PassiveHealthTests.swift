import LacquerServer
import LacquerTesting
import Synchronization
import Testing

@testable import LacquerServer

/// Passive health: failed fetches open a backend's circuit (no fetch goes while it is open,
/// stale copies stand in), and after the cooldown one trial decides. Time is the events'.
@Suite("Passive health (circuit breaker)")
struct CircuitBreakerTests {
    @Test("failures in a row open it; a success in between starts the count again")
    func opensAfterThreshold() {
        var breaker = CircuitBreaker(failureThreshold: 3, cooldown: 10)
        do {
            let result = breaker.recordFailure(now: 0)
            #expect(!result)
        }
        do {
            let result = breaker.recordFailure(now: 1)
            #expect(!result)
        }
        breaker.recordSuccess()
        do {
            let result = breaker.recordFailure(now: 2)
            #expect(!result)
        }
        do {
            let result = breaker.recordFailure(now: 3)
            #expect(!result)
        }
        do {
            let result = breaker.recordFailure(now: 4)
            #expect(result)
        }
        #expect(breaker.state == .open(until: 14))
        #expect(!breaker.isHealthy(now: 13.9))
        do {
            let result = breaker.allowsFetch(now: 13.9)
            #expect(!result)
        }
        #expect(breaker.trips == 1)
    }

    @Test("after the cooldown exactly one trial goes; its success closes, its failure reopens")
    func halfOpenTrial() {
        var breaker = CircuitBreaker(failureThreshold: 1, cooldown: 10)
        breaker.recordFailure(now: 0)
        do {
            let result = breaker.allowsFetch(now: 10)
            #expect(result)
        }
        do {
            let result = breaker.allowsFetch(now: 10.5)
            #expect(!result, "one trial at a time")
        }
        breaker.recordSuccess()
        do {
            let result = breaker.allowsFetch(now: 11)
            #expect(result)
        }
        #expect(breaker.state == .closed(failures: 0))

        var failing = CircuitBreaker(failureThreshold: 1, cooldown: 10)
        failing.recordFailure(now: 0)
        do {
            let result = failing.allowsFetch(now: 10)
            #expect(result)
        }
        do {
            let result = failing.recordFailure(now: 12)
            #expect(result)
        }
        #expect(failing.state == .open(until: 22))
        #expect(failing.trips == 2)
    }

    @Test("a trial that never reports does not hold the backend forever: another goes a cooldown later")
    func lostTrial() {
        var breaker = CircuitBreaker(failureThreshold: 1, cooldown: 10)
        breaker.recordFailure(now: 0)
        do {
            let result = breaker.allowsFetch(now: 10)
            #expect(result)
        }
        do {
            let result = breaker.allowsFetch(now: 19)
            #expect(!result)
        }
        do {
            let result = breaker.allowsFetch(now: 20)
            #expect(result)
        }
    }
}

@Suite("Passive health over sockets", .serialized, .timeLimit(.minutes(1)))
struct PassiveHealthIntegrationTests {
    @Test("an origin that keeps failing is left alone while its circuit is open; stale copies stand in; a trial follows the cooldown")
    func failingOriginIsSpared() async throws {
        let answers = Mutex(0)
        let raw = try await RawOrigin.start { _ in
            let n = answers.withLock { count -> Int in
                count += 1
                return count
            }
            // The first fetch stores the object; every later one finds the origin failing.
            return n == 1
                ? RawOrigin.Reply("HTTP/1.1 200 OK\r\nCache-Control: max-age=1, stale-if-error=3600\r\nContent-Length: 5\r\n\r\nfresh")
                : RawOrigin.Reply("", close: true)
        }
        let clock = TestClock()
        do {
            try await withLacquer(
                configure: {
                    var backend = BackendConfiguration(name: "raw", host: "127.0.0.1", port: raw.port)
                    var passive = PassiveHealthConfiguration()
                    passive.failureThreshold = 3
                    passive.cooldown = 30
                    backend.passiveHealth = passive
                    $0.backends = [backend]
                }, clock: clock.now
            ) { lacquer, port, _ async throws in
                #expect(try httpGet(port: port, "/x").bodyString == "fresh")
                clock.advance(10)
                for round in 1...3 {
                    let stale = try httpGet(port: port, "/x")
                    #expect(stale.header("X-Cache-Status") == "STALE", "round \(round)")
                    #expect(stale.bodyString == "fresh")
                }
                #expect(lacquer.counters[.backendCircuitOpened] == 1)
                let requestsWhenOpened = raw.requests.count
                // Open: no fetch reaches the origin; the stale copy still answers.
                for _ in 1...5 {
                    let spared = try httpGet(port: port, "/x")
                    #expect(spared.header("X-Cache-Status") == "STALE")
                }
                #expect(raw.requests.count == requestsWhenOpened)
                #expect(lacquer.backendSnapshots.first?.healthy == false)
                // After the cooldown one trial goes (and fails: the circuit opens again).
                clock.advance(31)
                #expect(try httpGet(port: port, "/x").header("X-Cache-Status") == "STALE")
                #expect(raw.requests.count > requestsWhenOpened)
                #expect(lacquer.counters[.backendCircuitOpened] == 2)
            }
        } catch {
            await raw.shutdown()
            throw error
        }
        await raw.shutdown()
    }

    @Test("5xx answers do not count unless configured; connect failures do")
    func whatCounts() {
        #expect(RequestFlow.countsAgainstBackend(.connectFailed("refused")))
        #expect(RequestFlow.countsAgainstBackend(.firstByteTimeout))
        #expect(RequestFlow.countsAgainstBackend(.framing("bad")))
        #expect(!RequestFlow.countsAgainstBackend(.queueTimeout), "our own pool limit says nothing of the origin")
        #expect(!RequestFlow.countsAgainstBackend(.allBackendsSick))
        #expect(PassiveHealthConfiguration().serverErrorsCount == false)
    }
}
