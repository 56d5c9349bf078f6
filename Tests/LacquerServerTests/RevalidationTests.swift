import FixtureOrigin
import LacquerServer
import LacquerTesting
import Testing

/// Validation (RFC 9111 §4.3): stale copies with validators are revalidated with a conditional
/// request, a 304 updates the stored header fields and is served as REVALIDATED, and clients'
/// own conditionals are answered 304 from the cache.
@Suite("Revalidation", .serialized, .timeLimit(.minutes(2)))
struct RevalidationTests {
    @Test("a stale object with an ETag is revalidated with If-None-Match; a 304 serves it as REVALIDATED")
    func etagRevalidation() async throws {
        let clock = TestClock()
        try await withLacquer(clock: clock.now) { lacquer, port, origin async throws in
            let target = "/rv?cc=max-age%3D10&etag=v1&nodate=1"
            let first = try httpGet(port: port, target)
            #expect(first.header("X-Cache-Status") == "MISS")
            clock.advance(30)
            let second = try httpGet(port: port, target)
            #expect(second.status == 200)
            #expect(second.header("X-Cache-Status") == "REVALIDATED")
            #expect(second.header("Cache-Status")?.contains("fwd=stale; fwd-status=304") == true)
            #expect(second.body == first.body)
            #expect(second.header("Content-Length") == String(first.body.count))
            // The 304's fields replace the stored ones (the origin counts its answers).
            #expect(second.header("X-Origin-Count") == "2")
            let sent = origin.requests(path: "/rv").last
            #expect(sent?.header("If-None-Match") == "\"v1\"")
            // Freshness restarts from the 304.
            #expect(try httpGet(port: port, target).header("X-Cache-Status") == "HIT")
            #expect(origin.requestCount(path: "/rv") == 2)
            #expect(lacquer.counters[.cacheRevalidated] == 1)
        }
    }

    @Test("a stale object with only Last-Modified is revalidated with If-Modified-Since")
    func lastModifiedRevalidation() async throws {
        let clock = TestClock()
        try await withLacquer(clock: clock.now) { _, port, origin async throws in
            let target = "/lm?cc=max-age%3D10&lm=-3600&nodate=1"
            _ = try httpGet(port: port, target)
            clock.advance(30)
            let second = try httpGet(port: port, target)
            #expect(second.header("X-Cache-Status") == "REVALIDATED")
            #expect(origin.requests(path: "/lm").last?.header("If-Modified-Since") != nil)
        }
    }

    @Test("a changed object (200 to the conditional request) replaces the stored one")
    func changedObjectReplaces() async throws {
        let clock = TestClock()
        try await withLacquer(clock: clock.now) { _, port, origin async throws in
            // The origin sends an ETag it does not honour in conditionals: it always answers 200.
            let target = "/chg?cc=max-age%3D10&nodate=1&h=ETag%3A%22zz%22"
            _ = try httpGet(port: port, target)
            clock.advance(30)
            let refreshed = try httpGet(port: port, target)
            #expect(refreshed.status == 200)
            #expect(refreshed.header("X-Cache-Status") == "EXPIRED")
            #expect(refreshed.header("X-Origin-Count") == "2")
            #expect(origin.requests(path: "/chg").last?.header("If-None-Match") == "\"zz\"")
            let hit = try httpGet(port: port, target)
            #expect(hit.header("X-Cache-Status") == "HIT")
            #expect(hit.header("X-Origin-Count") == "2")
        }
    }

    @Test("request Cache-Control max-age=0 forces revalidation (fwd=request)")
    func requestMaxAgeZero() async throws {
        try await withLacquer { _, port, _ async throws in
            let target = "/rq?cc=max-age%3D600&etag=x"
            _ = try httpGet(port: port, target)
            let forced = try httpGet(port: port, target, headers: [("Cache-Control", "max-age=0")])
            #expect(forced.header("X-Cache-Status") == "REVALIDATED")
            #expect(forced.header("Cache-Status")?.contains("fwd=request") == true)
        }
    }

    @Test("a reload storm (concurrent no-cache, max-age=0 and Pragma requests) makes one revalidation at the origin")
    func reloadsCollapse() async throws {
        try await withLacquer { _, port, origin async throws in
            let target = "/delay/800/storm?cc=max-age%3D600&etag=s"
            _ = try httpGet(port: port, target)
            let reloads: [(String, String)] = [
                ("Cache-Control", "no-cache"), ("Cache-Control", "max-age=0"), ("Pragma", "no-cache"),
                ("Cache-Control", "no-cache"), ("Cache-Control", "max-age=0"), ("Cache-Control", "no-cache"),
            ]
            let answers = try await withThrowingTaskGroup(of: RawHTTPResponse.self) { group in
                for field in reloads {
                    group.addTask { try await runBlocking { try httpGet(port: port, target, headers: [field]) } }
                }
                var all: [RawHTTPResponse] = []
                for try await answer in group { all.append(answer) }
                return all
            }
            #expect(answers.count == 6 && answers.allSatisfy { $0.status == 200 && $0.body == Array("ok /delay/800/storm\n".utf8) })
            #expect(origin.requestCount(path: "/delay/800/storm") == 2, "one fill, then one revalidation for all six reloads")
            #expect(origin.requests(path: "/delay/800/storm").last?.header("If-None-Match") == "\"s\"")
        }
    }

    @Test("--ignore-request-cache-control, or the VCL idiom, answers reloads from the cache")
    func reloadsIgnored() async throws {
        try await withLacquer(configure: { $0.ignoreRequestCacheControl = true }) { _, port, origin async throws in
            let target = "/ig?cc=max-age%3D600"
            _ = try httpGet(port: port, target)
            for field in [("Cache-Control", "no-cache"), ("Cache-Control", "max-age=0"), ("Pragma", "no-cache"), ("Cache-Control", "no-store")] {
                #expect(try httpGet(port: port, target, headers: [field]).header("X-Cache-Status") == "HIT", "\(field)")
            }
            #expect(origin.requestCount(path: "/ig") == 1)
        }
        let idiom = """
            vcl 4.1;
            backend origin { .host = "127.0.0.1"; .port = "1"; }
            sub vcl_recv {
                unset req.http.Cache-Control;
                unset req.http.Pragma;
            }
            """
        try await VCLIntegrationTests().withVCL(idiom) { _, port, origin in
            let target = "/ig2?cc=max-age%3D600"
            _ = try httpGet(port: port, target)
            #expect(try httpGet(port: port, target, headers: [("Cache-Control", "no-cache")]).header("X-Cache-Status") == "HIT")
            #expect(try httpGet(port: port, target, headers: [("Pragma", "no-cache")]).header("X-Cache-Status") == "HIT")
            #expect(origin.requestCount(path: "/ig2") == 1)
        }
    }

    @Test("a no-cache response is stored but revalidated on every use")
    func noCacheAlwaysRevalidates() async throws {
        try await withLacquer { _, port, origin async throws in
            let target = "/nc?cc=no-cache&etag=n"
            #expect(try httpGet(port: port, target).header("X-Cache-Status") == "MISS")
            #expect(try httpGet(port: port, target).header("X-Cache-Status") == "REVALIDATED")
            #expect(try httpGet(port: port, target).header("X-Cache-Status") == "REVALIDATED")
            #expect(origin.requestCount(path: "/nc") == 3)
        }
    }

    @Test("a client's If-None-Match is answered 304 from a fresh stored object, for GET and HEAD")
    func clientConditionalOnHit() async throws {
        try await withLacquer { _, port, _ async throws in
            let target = "/cond?cc=max-age%3D600&etag=abc"
            _ = try httpGet(port: port, target)
            let get = try httpGet(port: port, target, headers: [("If-None-Match", "W/\"abc\"")])
            #expect(get.status == 304)
            #expect(get.header("X-Cache-Status") == "HIT")
            #expect(get.header("ETag") == "\"abc\"")
            #expect(get.body.isEmpty)
            let head = try httpGet(port: port, target, method: "HEAD", headers: [("If-None-Match", "\"abc\"")])
            #expect(head.status == 304)
            let other = try httpGet(port: port, target, headers: [("If-None-Match", "\"zzz\"")])
            #expect(other.status == 200)
        }
    }

    @Test("a client's conditional on a miss gets 304, and the full object is still stored")
    func clientConditionalOnMiss() async throws {
        try await withLacquer { lacquer, port, origin async throws in
            let target = "/condmiss?cc=max-age%3D600&etag=m1"
            let first = try httpGet(port: port, target, headers: [("If-None-Match", "\"m1\"")])
            #expect(first.status == 304)
            #expect(first.header("X-Cache-Status") == "MISS")
            #expect(origin.requests(path: "/condmiss").first?.header("If-None-Match") == nil)
            // The 304 leaves before the fill completes; without coalescing, wait for the store.
            for _ in 0..<200 where lacquer.counters[.objectsStored] < 1 {
                try await Task.sleep(for: .milliseconds(5))
            }
            let full = try httpGet(port: port, target)
            #expect(full.status == 200)
            #expect(full.header("X-Cache-Status") == "HIT")
            #expect(full.bodyString == "ok /condmiss\n")
        }
    }
}

/// Interim responses and bodiless statuses (RFC 9110 §15.2, §15.3.5, §15.4.5).
@Suite("Interim and bodiless responses", .serialized, .timeLimit(.minutes(2)))
struct InterimResponseTests {
    @Test("a 103 Early Hints from the origin reaches the client before the final response")
    func earlyHints() async throws {
        try await withLacquer { _, port, _ async throws in
            let client = try RawHTTPClient(port: port)
            defer { client.close() }
            try client.send("GET /hints?status=103&h=Link%3A%3C%2Fs.css%3E HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            let response = try client.readResponse()
            #expect(response.status == 200)
            #expect(response.interimResponses.map(\.status) == [103])
        }
    }

    @Test("Expect: 100-continue gets a 100 before the body is sent, and the POST goes through")
    func expectContinue() async throws {
        try await withLacquer { _, port, origin async throws in
            let client = try RawHTTPClient(port: port)
            defer { client.close() }
            try client.send("POST /up HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
            let interim = try client.readResponse(returnInterim: true)
            #expect(interim.status == 100)
            try client.send("hello")
            let final = try client.readResponse()
            #expect(final.status == 200)
            #expect(origin.requests(path: "/up").first?.bodyLength == 5)
        }
    }

    @Test("204 and 304 carry no body, even from the cache")
    func bodiless() async throws {
        try await withLacquer { _, port, _ async throws in
            let client = try RawHTTPClient(port: port)
            defer { client.close() }
            let first = try client.request("GET", "/nobody?status=204&cc=max-age%3D60")
            #expect(first.status == 204)
            #expect(first.body.isEmpty)
            let second = try client.request("GET", "/nobody?status=204&cc=max-age%3D60")
            #expect(second.status == 204)
            #expect(second.header("X-Cache-Status") == "HIT")
            #expect(second.header("Content-Length") == nil)
            // The connection is still in step: a following request gets its own answer.
            #expect(try client.request("GET", "/after").bodyString == "ok /after\n")
        }
    }
}
