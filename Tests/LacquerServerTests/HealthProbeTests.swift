import FixtureOrigin
import Foundation
import LacquerServer
import LacquerTesting
import NIOCore
import Testing

/// Backend health probes, the director skipping sick backends, and per-backend figures in
/// `/stats`, over real sockets. Probes run every 50 ms; every wait is bounded in time and count.
@Suite("Health probes and the director", .serialized, .timeLimit(.minutes(2)))
struct HealthProbeTests {
    /// A fast probe: every 50 ms, healthy while 2 of the last 3 succeed.
    /// (A generous timeout: a loaded test machine must not make a healthy origin look sick.)
    static func fastProbe(timeout: TimeAmount = .seconds(2)) -> ProbeConfiguration {
        var probe = ProbeConfiguration(url: "/health")
        probe.interval = .milliseconds(50)
        probe.timeout = timeout
        probe.window = 3
        probe.threshold = 2
        return probe
    }

    /// Polls `condition` every 20 ms until it holds, for at most `seconds` (and 1000 tries); the
    /// bound is generous because the whole suite, chaos test included, shares two cores.
    func waitUntil(
        _ what: String, seconds: Double = 30, sourceLocation: SourceLocation = #_sourceLocation,
        _ condition: () throws -> Bool
    ) async throws {
        let deadline = Date().addingTimeInterval(seconds)
        var tries = 0
        while Date() < deadline && tries < 1000 {
            if try condition() { return }
            tries += 1
            try await Task.sleep(for: .milliseconds(20))
        }
        Issue.record("timed out waiting until \(what)", sourceLocation: sourceLocation)
        throw HealthProbeTestError.timedOut(what)
    }

    func backend(_ lacquer: LacquerServer, _ name: String) -> BackendSnapshot? {
        lacquer.backendSnapshots.first { $0.name == name }
    }

    /// Requests to `/PREFIX/i` the origin saw.
    func count(_ origin: FixtureOrigin, prefix: String) -> Int {
        origin.requests().filter { $0.path.hasPrefix("/\(prefix)/") }.count
    }

    @Test("a backend whose probe fails gets no traffic until it recovers; then it gets its share again")
    func sickBackendSkipped() async throws {
        let second = try await FixtureOrigin.start()
        do {
            try await withLacquer(configure: { configuration in
                configuration.backends[0].probe = Self.fastProbe()
                var other = BackendConfiguration(name: "second", host: "127.0.0.1", port: second.port)
                other.probe = Self.fastProbe()
                configuration.backends.append(other)
            }) { lacquer, port, origin async throws in
                try await waitUntil("both backends are healthy") { lacquer.backendSnapshots.allSatisfy(\.healthy) }

                second.health = .status(503)
                try await waitUntil("the second backend is sick") { backend(lacquer, "second")?.healthy == false }
                for index in 0..<10 {
                    let response = try httpGet(port: port, "/sick/\(index)?cc=no-store")
                    #expect(response.status == 200)
                }
                #expect(count(origin, prefix: "sick") == 10)
                #expect(count(second, prefix: "sick") == 0)

                second.health = .status(200)
                try await waitUntil("the second backend is healthy again") { backend(lacquer, "second")?.healthy == true }
                for index in 0..<10 {
                    let response = try httpGet(port: port, "/back/\(index)?cc=no-store")
                    #expect(response.status == 200)
                }
                // Round-robin per event loop: each backend gets about half.
                #expect(count(origin, prefix: "back") + count(second, prefix: "back") == 10)
                #expect(count(second, prefix: "back") >= 3)
                #expect(count(origin, prefix: "back") >= 3)
                let snapshot = try #require(backend(lacquer, "second"))
                #expect(snapshot.probe?.changes ?? 0 >= 3)  // sick → healthy → sick → healthy
            }
        } catch {
            try? await second.shutdown()
            throw error
        }
        try await second.shutdown()
    }

    @Test("every backend sick: 503 with a body saying so, and the origin is not asked")
    func allSick() async throws {
        try await withLacquer(configure: { $0.backends[0].probe = Self.fastProbe() }) { lacquer, port, origin async throws in
            origin.health = .status(503)
            // The first probe may have answered 200 before the switch: wait for enough failures.
            try await waitUntil("the backend is sick after failed probes") {
                let origin = backend(lacquer, "origin")
                return origin?.healthy == false && origin?.probe?.last?.hasPrefix("failed") == true
            }
            let response = try httpGet(port: port, "/nobody?cc=max-age%3D60")
            #expect(response.status == 503)
            #expect(response.bodyString.contains("no healthy backend"), "\(response.bodyString)")
            #expect(origin.requestCount(path: "/nobody") == 0)
            #expect(lacquer.counters[.backendUnhealthy] >= 1)
            #expect(lacquer.counters[.synth503] >= 1)
            let last = backend(lacquer, "origin")?.probe?.last
            #expect(last == "failed: status 503, expected 200", "\(String(describing: last))")
        }
    }

    @Test("every backend sick: a stored copy inside stale-if-error is served STALE")
    func allSickServesStale() async throws {
        let clock = TestClock()
        try await withLacquer(configure: { $0.backends[0].probe = Self.fastProbe() }, clock: clock.now) {
            lacquer, port, origin async throws in
            try await waitUntil("the backend is healthy") { backend(lacquer, "origin")?.healthy == true }
            let target = "/keep?cc=max-age%3D10%2C+stale-if-error%3D300&nodate=1"
            let original = try httpGet(port: port, target)
            #expect(original.status == 200)
            origin.health = .status(503)
            try await waitUntil("the backend is sick") { backend(lacquer, "origin")?.healthy == false }
            clock.advance(60)
            let stale = try httpGet(port: port, target)
            #expect(stale.status == 200)
            #expect(stale.header("X-Cache-Status") == "STALE")
            #expect(stale.body == original.body)
            #expect(origin.requestCount(path: "/keep") == 1)
            // Outside any stale window the same sickness is a 503.
            let other = try httpGet(port: port, "/nokeep?cc=max-age%3D10")
            #expect(other.status == 503)
        }
    }

    @Test("a probe that gets no answer within its timeout counts as failed")
    func probeTimeout() async throws {
        try await withLacquer(configure: { $0.backends[0].probe = Self.fastProbe(timeout: .milliseconds(200)) }) {
            lacquer, port, origin async throws in
            try await waitUntil("the backend is healthy") { backend(lacquer, "origin")?.healthy == true }
            origin.health = .hang
            try await waitUntil("the backend is sick") { backend(lacquer, "origin")?.healthy == false }
            let snapshot = try #require(backend(lacquer, "origin"))
            #expect(snapshot.probe?.last == "failed: timeout")
            #expect(snapshot.probe?.good ?? 3 < 2)
            #expect(try httpGet(port: port, "/during?cc=no-store").status == 503)
            origin.health = .status(200)
            try await waitUntil("the backend is healthy again") { backend(lacquer, "origin")?.healthy == true }
            #expect(try httpGet(port: port, "/after?cc=no-store").status == 200)
        }
    }

    @Test("probes send GET URL with the backend's Host and Connection: close, on a fresh connection each")
    func probeRequest() async throws {
        try await withLacquer(configure: { $0.backends[0].probe = Self.fastProbe() }) { lacquer, _, origin async throws in
            try await waitUntil("three probes arrived") { origin.requestCount(path: "/health") >= 3 }
            let probe = try #require(origin.requests(path: "/health").first)
            #expect(probe.method == "GET")
            #expect(probe.header("Host") == "127.0.0.1:\(origin.port)")
            #expect(probe.header("Connection") == "close")
            #expect(origin.connectionsAccepted >= 3)
        }
    }

    @Test("/stats shows each backend's health, probe window and failures per kind")
    func statsPerBackend() async throws {
        try await withLacquer(configure: { configuration in
            configuration.backends[0].probe = Self.fastProbe()
            configuration.backends[0].firstByteTimeout = .milliseconds(300)
        }) { lacquer, port, origin async throws in
            try await waitUntil("the backend is healthy") { backend(lacquer, "origin")?.healthy == true }
            #expect(try httpGet(port: port, "/hang").status == 504)
            #expect(try httpGet(port: port, "/drop").status == 502)
            #expect(try httpGet(port: port, "/fine?cc=no-store").status == 200)
            let adminPort = try #require(lacquer.adminAddress?.port)
            let body = try httpGet(port: adminPort, "/stats").body
            let json = try #require(try JSONSerialization.jsonObject(with: Data(body)) as? [String: Any])
            let backends = try #require(json["backends"] as? [[String: Any]])
            #expect(backends.count == 1)
            let entry = try #require(backends.first)
            #expect(entry["name"] as? String == "origin")
            #expect(entry["address"] as? String == "127.0.0.1:\(origin.port)")
            #expect(entry["healthy"] as? Bool == true)
            let probe = try #require(entry["probe"] as? [String: Any])
            #expect(probe["window"] as? Int == 3)
            #expect(probe["threshold"] as? Int == 2)
            #expect((probe["good"] as? Int ?? 0) >= 2)
            #expect(probe["last"] as? String == "ok")
            #expect(probe["changes"] as? Int == 1)
            let failures = try #require(entry["failures"] as? [String: Int])
            #expect(failures["first_byte_timeout"] == 1)
            #expect((failures["closed"] ?? 0) >= 1)
            #expect(failures["connect_failed"] == 0)
            #expect(failures["between_bytes_timeout"] == 0)
            #expect(Set(failures.keys) == [
                "connect_failed", "connect_timeout", "queue_timeout", "first_byte_timeout", "between_bytes_timeout",
                "closed", "framing",
            ])
            #expect((entry["requests"] as? Int ?? 0) >= 3)
            let connections = try #require(entry["connections"] as? [String: Int])
            #expect(connections["open"] != nil && connections["idle"] != nil)
            #expect(entry["queued"] as? Int == 0)
            let counters = try #require(json["counters"] as? [String: Int])
            #expect(counters["cache_hitmiss"] != nil)
            #expect(counters["backend_unhealthy"] == 0)
            let metrics = try httpGet(port: adminPort, "/metrics").bodyString
            #expect(metrics.contains("lacquer_backend_healthy{backend=\"origin\"} 1"))
            #expect(metrics.contains("lacquer_backend_failures_total{backend=\"origin\",kind=\"first_byte_timeout\"} 1"))
        }
    }

    @Test("a backend without a probe is always healthy, shows probe null, and counts refused connections")
    func noProbeConnectFailed() async throws {
        try await withLacquer(configure: { configuration in
            configuration.backends = [BackendConfiguration(name: "dead", host: "127.0.0.1", port: 1)]
        }) { lacquer, port, _ async throws in
            #expect(try httpGet(port: port, "/refused").status == 502)
            let adminPort = try #require(lacquer.adminAddress?.port)
            let body = try httpGet(port: adminPort, "/stats").body
            let json = try #require(try JSONSerialization.jsonObject(with: Data(body)) as? [String: Any])
            let entry = try #require((json["backends"] as? [[String: Any]])?.first)
            #expect(entry["name"] as? String == "dead")
            #expect(entry["healthy"] as? Bool == true)
            #expect(entry["probe"] is NSNull)
            let failures = try #require(entry["failures"] as? [String: Int])
            #expect(failures["connect_failed"] == 1)
            #expect(entry["requests"] as? Int == 1)
        }
    }

    @Test("a probe on a refused port fails with the reason; the backend stays sick and gets nothing")
    func probeConnectRefused() async throws {
        try await withLacquer(configure: { configuration in
            var dead = BackendConfiguration(name: "dead", host: "127.0.0.1", port: 1)
            dead.probe = Self.fastProbe()
            configuration.backends[0].probe = Self.fastProbe()
            configuration.backends.append(dead)
        }) { lacquer, port, origin async throws in
            try await waitUntil("the origin is healthy and the dead backend has been probed") {
                backend(lacquer, "origin")?.healthy == true && backend(lacquer, "dead")?.probe?.last != nil
            }
            let dead = try #require(backend(lacquer, "dead"))
            #expect(!dead.healthy)
            #expect(dead.probe?.last?.hasPrefix("failed: connect failed") == true, "\(String(describing: dead.probe?.last))")
            for index in 0..<6 {
                #expect(try httpGet(port: port, "/alive/\(index)?cc=no-store").status == 200)
            }
            #expect(count(origin, prefix: "alive") == 6)
            #expect(backend(lacquer, "dead")?.requests == 0)
        }
    }

    @Test("a VCL fallback director over probed backends uses the first healthy one; none healthy → 503")
    func vclDirectorSkipsSick() async throws {
        let second = try await FixtureOrigin.start()
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        do {
            try await withLacquer(configure: { configuration in
                let path = directory + "/director.vcl"
                let text = """
                    vcl 4.1;
                    import directors;
                    probe fast { .url = "/health"; .interval = 0.05s; .timeout = 2s; .window = 3; .threshold = 2; }
                    backend one { .host = "127.0.0.1"; .port = "\(configuration.backends[0].port)"; .probe = fast; }
                    backend two { .host = "127.0.0.1"; .port = "\(second.port)"; .probe = fast; }
                    sub vcl_init {
                        new safe = directors.fallback();
                        safe.add_backend(one);
                        safe.add_backend(two);
                    }
                    sub vcl_recv {
                        set req.backend_hint = safe.backend();
                    }
                    """
                guard (try? text.write(toFile: path, atomically: true, encoding: .utf8)) != nil,
                    let vcl = try? VCLLoader.load(path: path, purgeACL: .loopback)
                else {
                    Issue.record("the director VCL did not load")
                    return
                }
                configuration.vcl = vcl
                configuration.backends = VCLLoader.backendConfigurations(vcl)
            }) { lacquer, port, origin async throws in
                try await waitUntil("both backends are healthy") {
                    lacquer.backendSnapshots.count == 2 && lacquer.backendSnapshots.allSatisfy(\.healthy)
                }
                for index in 0..<4 {
                    #expect(try httpGet(port: port, "/first/\(index)?cc=no-store").status == 200)
                }
                #expect(count(origin, prefix: "first") == 4)
                origin.health = .status(500)
                try await waitUntil("backend one is sick") { backend(lacquer, "one")?.healthy == false }
                for index in 0..<4 {
                    #expect(try httpGet(port: port, "/then/\(index)?cc=no-store").status == 200)
                }
                #expect(count(second, prefix: "then") == 4)
                #expect(count(origin, prefix: "then") == 0)
                second.health = .status(503)
                try await waitUntil("backend two is sick") { backend(lacquer, "two")?.healthy == false }
                let none = try httpGet(port: port, "/none?cc=no-store")
                #expect(none.status == 503)
                #expect(none.bodyString.contains("no healthy backend"))
            }
        } catch {
            try? await second.shutdown()
            throw error
        }
        try await second.shutdown()
    }

    @Test("an invalid probe stops start-up with a message naming the backend")
    func invalidProbe() async throws {
        var probe = ProbeConfiguration(url: "/health")
        probe.window = 4
        probe.threshold = 5
        do {
            try await withLacquer(configure: { $0.backends[0].probe = probe }) { _, _, _ async throws -> Void in
                Issue.record("started with threshold > window")
            }
        } catch let error as LacquerServerError {
            #expect(error.description == "backend origin: probe threshold 5 must be between 1 and the window (4)")
        }
    }

    @Test("servers with probes start and stop repeatedly without leaking probe timers or connections")
    func repeatedStartStop() async throws {
        for _ in 0..<5 {
            try await withLacquer(configure: { $0.backends[0].probe = Self.fastProbe() }) { lacquer, _, origin async throws in
                try await waitUntil("the backend is healthy") { backend(lacquer, "origin")?.healthy == true }
                #expect(origin.requestCount(path: "/health") >= 1)
            }
        }
    }
}

enum HealthProbeTestError: Error {
    case timedOut(String)
}
