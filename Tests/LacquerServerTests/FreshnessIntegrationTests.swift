import FixtureOrigin
import LacquerServer
import LacquerTesting
import Testing

/// RFC 9111 freshness and request directives end to end (§4.2, §5.2.1), one test per rule.
@Suite("Freshness and request directives", .serialized, .timeLimit(.minutes(2)))
struct FreshnessIntegrationTests {
    @Test("only-if-cached answers 504 when nothing fits, and serves a stored object (§5.2.1.7)")
    func onlyIfCached() async throws {
        try await withLacquer { _, port, origin async throws in
            let cold = try httpGet(port: port, "/oic?cc=max-age%3D60", headers: [("Cache-Control", "only-if-cached")])
            #expect(cold.status == 504)
            #expect(origin.requestCount(path: "/oic") == 0)
            _ = try httpGet(port: port, "/oic?cc=max-age%3D60")
            let warm = try httpGet(port: port, "/oic?cc=max-age%3D60", headers: [("Cache-Control", "only-if-cached")])
            #expect(warm.status == 200)
            #expect(warm.header("X-Cache-Status") == "HIT")
        }
    }

    @Test("max-stale lets a client take a stale copy (STALE); must-revalidate forbids it (§5.2.1.2, §5.2.2.2)")
    func maxStale() async throws {
        let clock = TestClock()
        try await withLacquer(clock: clock.now) { _, port, origin async throws in
            _ = try httpGet(port: port, "/ms?cc=max-age%3D10&nodate=1")
            _ = try httpGet(port: port, "/mr?cc=max-age%3D10%2C+must-revalidate&nodate=1")
            clock.advance(20)
            let stale = try httpGet(port: port, "/ms?cc=max-age%3D10&nodate=1", headers: [("Cache-Control", "max-stale=60")])
            #expect(stale.header("X-Cache-Status") == "STALE")
            #expect(origin.requestCount(path: "/ms") == 1)
            let tooStale = try httpGet(port: port, "/ms?cc=max-age%3D10&nodate=1", headers: [("Cache-Control", "max-stale=5")])
            #expect(tooStale.header("X-Cache-Status") == "EXPIRED")
            let forbidden = try httpGet(port: port, "/mr?cc=max-age%3D10%2C+must-revalidate&nodate=1", headers: [("Cache-Control", "max-stale")])
            #expect(forbidden.header("X-Cache-Status") == "EXPIRED")
        }
    }

    @Test("min-fresh refuses a copy that will not stay fresh long enough (§5.2.1.3)")
    func minFresh() async throws {
        try await withLacquer { _, port, origin async throws in
            _ = try httpGet(port: port, "/mf?cc=max-age%3D30")
            let refused = try httpGet(port: port, "/mf?cc=max-age%3D30", headers: [("Cache-Control", "min-fresh=60")])
            #expect(refused.header("X-Cache-Status") == "MISS")
            #expect(refused.header("Cache-Status")?.contains("fwd=request") == true)
            #expect(origin.requestCount(path: "/mf") == 2)
        }
    }

    @Test("Age from upstream counts towards the stored object's age (§4.2.3)")
    func upstreamAge() async throws {
        try await withLacquer { _, port, origin async throws in
            let first = try httpGet(port: port, "/ua?cc=max-age%3D600&age=100")
            #expect(Int(first.header("Age") ?? "") ?? 0 >= 100)
            let hit = try httpGet(port: port, "/ua?cc=max-age%3D600&age=100")
            #expect(Int(hit.header("Age") ?? "") ?? 0 >= 100)
            #expect(hit.header("X-Cache-Status") == "HIT")
            // Older than its max-age on arrival: stored, but never fresh.
            _ = try httpGet(port: port, "/old?cc=max-age%3D60&age=100&etag=o")
            #expect(try httpGet(port: port, "/old?cc=max-age%3D60&age=100&etag=o").header("X-Cache-Status") == "REVALIDATED")
            #expect(origin.requestCount(path: "/old") == 2)
        }
    }

    @Test("heuristic freshness from Last-Modified, only for heuristically cacheable statuses (§4.2.2)")
    func heuristic() async throws {
        try await withLacquer { _, port, origin async throws in
            _ = try httpGet(port: port, "/heur?lm=-36000")
            #expect(try httpGet(port: port, "/heur?lm=-36000").header("X-Cache-Status") == "HIT")
            _ = try httpGet(port: port, "/h302?status=302&lm=-36000&h=Location%3A%2Fx")
            _ = try httpGet(port: port, "/h302?status=302&lm=-36000&h=Location%3A%2Fx")
            #expect(origin.requestCount(path: "/h302") == 2)
            _ = try httpGet(port: port, "/e302?status=302&cc=max-age%3D60&h=Location%3A%2Fx")
            #expect(try httpGet(port: port, "/e302?status=302&cc=max-age%3D60&h=Location%3A%2Fx").header("X-Cache-Status") == "HIT")
        }
    }

    @Test("an invalid Expires means already expired (§5.3)")
    func invalidExpires() async throws {
        try await withLacquer { _, port, origin async throws in
            _ = try httpGet(port: port, "/ie?expires=0-not-a-date")
            _ = try httpGet(port: port, "/ie?expires=0-not-a-date")
            #expect(origin.requestCount(path: "/ie") == 2)
        }
    }

    @Test("s-maxage beats max-age for a shared cache (§5.2.2.10)")
    func sMaxAge() async throws {
        let clock = TestClock()
        try await withLacquer(clock: clock.now) { _, port, _ async throws in
            let target = "/sm?cc=max-age%3D10%2C+s-maxage%3D100&nodate=1"
            _ = try httpGet(port: port, target)
            clock.advance(50)
            #expect(try httpGet(port: port, target).header("X-Cache-Status") == "HIT")
        }
    }

    @Test("a missing Date is supplied (RFC 9110 §6.6.1)")
    func dateSupplied() async throws {
        try await withLacquer { _, port, _ async throws in
            let response = try httpGet(port: port, "/nd?nodate=1&cc=max-age%3D60")
            #expect(response.header("Date") != nil)
            #expect(try httpGet(port: port, "/nd?nodate=1&cc=max-age%3D60").header("Date") != nil)
        }
    }

    @Test("error statuses with explicit freshness are stored, capped at 10 s (CPDoS defence)")
    func errorStatusCap() async throws {
        let clock = TestClock()
        try await withLacquer(clock: clock.now) { _, port, origin async throws in
            let target = "/e404?status=404&cc=max-age%3D3600&nodate=1"
            _ = try httpGet(port: port, target)
            #expect(try httpGet(port: port, target).header("X-Cache-Status") == "HIT")
            clock.advance(11)
            #expect(try httpGet(port: port, target).header("X-Cache-Status") == "EXPIRED")
            #expect(origin.requestCount(path: "/e404") == 2)
            _ = try httpGet(port: port, "/e500?status=500")
            _ = try httpGet(port: port, "/e500?status=500")
            #expect(origin.requestCount(path: "/e500") == 2)
        }
    }
}
