import FixtureOrigin
import LacquerServer
import LacquerTesting
import Testing

@testable import LacquerServer

/// Per-client request limits (nginx's limit_req): a token bucket per address, time from the
/// caller; over the limit, 429 with Retry-After, for hits as for misses.
@Suite("Rate limits")
struct TokenBucketTests {
    @Test("a burst goes at once, then one request per 1/rate seconds; Retry-After says how long")
    func bucket() {
        var bucket = TokenBucket(burst: 3, now: 0)
        for _ in 0..<3 {
            let taken = bucket.take(now: 0, rate: 0.5, burst: 3)
            #expect(taken == nil)
        }
        let denied = bucket.take(now: 0, rate: 0.5, burst: 3)
        #expect(denied == 2, "one token takes 2 s at 0.5/s")
        let stillDenied = bucket.take(now: 1.5, rate: 0.5, burst: 3)
        #expect(stillDenied == 1)
        let allowed = bucket.take(now: 2, rate: 0.5, burst: 3)
        #expect(allowed == nil)
        #expect(!bucket.isFull(now: 2, rate: 0.5, burst: 3))
        #expect(bucket.isFull(now: 8, rate: 0.5, burst: 3))
    }

    @Test("clients are kept apart; the table forgets full buckets first when it is full")
    func limiter() {
        var configuration = RateLimitConfiguration(rate: 1, burst: 1)
        configuration.maxClients = 16
        let limiter = RateLimiter(configuration)
        #expect(limiter.take(client: "10.0.0.1", now: 0) == nil)
        #expect(limiter.take(client: "10.0.0.1", now: 0) == 1)
        #expect(limiter.take(client: "10.0.0.2", now: 0) == nil)
        for index in 0..<200 {
            _ = limiter.take(client: "10.1.0.\(index)", now: 100)
        }
        #expect(limiter.take(client: "10.0.0.3", now: 100) == nil, "a new client is never refused for lack of room")
    }
}

@Suite("Rate limits over sockets", .serialized, .timeLimit(.minutes(1)))
struct RateLimitIntegrationTests {
    @Test("over the limit: 429, Retry-After, counted; hits are limited too; time refills the bucket")
    func overTheLimit() async throws {
        let clock = TestClock()
        try await withLacquer(configure: { $0.rateLimit = RateLimitConfiguration(rate: 1, burst: 2) }, clock: clock.now) {
            lacquer, port, origin async throws in
            #expect(try httpGet(port: port, "/bytes/10?cc=max-age%3D600").status == 200)
            #expect(try httpGet(port: port, "/bytes/10?cc=max-age%3D600").header("X-Cache-Status") == "HIT")
            let client = try RawHTTPClient(port: port, timeout: 5)
            defer { client.close() }
            try client.send("GET /bytes/10?cc=max-age%3D600 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            let limited = try client.readResponse()
            #expect(limited.status == 429)
            #expect(limited.header("Retry-After") == "1")
            #expect(lacquer.counters[.clientReq429] == 1)
            #expect(origin.requestCount(path: "/bytes/10") == 1)
            clock.advance(1)
            #expect(try httpGet(port: port, "/bytes/10?cc=max-age%3D600").header("X-Cache-Status") == "HIT")
        }
    }

    @Test("one address may hold only so many connections: more are closed at once, counted; closing one frees a place")
    func connectionsPerClient() async throws {
        try await withLacquer(configure: { $0.limits.connectionsPerClient = 2 }) { lacquer, port, _ async throws in
            let first = try RawHTTPClient(port: port, timeout: 5)
            defer { first.close() }
            let second = try RawHTTPClient(port: port, timeout: 5)
            defer { second.close() }
            try first.send("GET /bytes/3 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            #expect(try first.readResponse().status == 200)
            try second.send("GET /bytes/3 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            #expect(try second.readResponse().status == 200)
            let third = try RawHTTPClient(port: port, timeout: 5)
            defer { third.close() }
            _ = try? third.send("GET /bytes/3 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            #expect((try? third.readToEOF())?.isEmpty ?? true, "closed without an answer")
            #expect(lacquer.counters[.sessDroppedClient] == 1)
            first.close()
            for _ in 0..<100 {
                // The place is free once the server has seen the close.
                let probe = try RawHTTPClient(port: port, timeout: 5)
                defer { probe.close() }
                try? probe.send("GET /bytes/3 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                if let response = try? probe.readResponse(), response.status == 200 { return }
                try await Task.sleep(for: .milliseconds(20))
            }
            Issue.record("no place came free after a connection closed")
        }
    }
}
