import FixtureOrigin
import Foundation
import LacquerTesting
import Testing

/// The fixture origin, driven over real sockets by `RawHTTPClient`: each route does what its
/// documentation says, so that proxy tests built on it test the proxy.
///
/// Blocking client calls run through `runBlocking`, off Swift's cooperative pool.
@Suite("FixtureOrigin")
struct FixtureOriginTests {
    /// Starts an origin, runs `body` on a plain thread with it, shuts it down.
    private func withOrigin<T: Sendable>(
        _ body: @escaping @Sendable (FixtureOrigin) throws -> T
    ) async throws -> T {
        let origin = try await FixtureOrigin.start()
        do {
            let result = try await runBlocking { try body(origin) }
            try await origin.shutdown()
            return result
        } catch {
            try? await origin.shutdown()
            throw error
        }
    }

    @Test func defaultRouteCountsPerPathAndSendsDate() async throws {
        try await withOrigin { origin in
            #expect(origin.baseURL == "http://127.0.0.1:\(origin.port)")
            let client = try RawHTTPClient(port: origin.port)
            let first = try client.request("GET", "/hello?x=1")
            #expect(first.status == 200)
            #expect(first.version == "HTTP/1.1")
            #expect(first.bodyString == "ok /hello\n")
            #expect(first.header("x-origin-count") == "1")
            #expect(first.header("Content-Length") == "10")
            #expect(first.header("Date")?.hasSuffix(" GMT") == true)
            let second = try client.request("GET", "/hello?nodate=1")
            #expect(second.header("X-Origin-Count") == "2")
            #expect(second.header("Date") == nil)
            let other = try client.request("GET", "/other")
            #expect(other.header("X-Origin-Count") == "1")
            #expect(origin.requestCount(path: "/hello") == 2)
            #expect(origin.requestCount(path: "/other") == 1)
            #expect(origin.requestCount() == 3)
            #expect(origin.requests(path: "/hello").map(\.uri) == ["/hello?x=1", "/hello?nodate=1"])
            #expect(origin.connectionsAccepted == 1)
            origin.resetCounts()
            #expect(origin.requestCount() == 0)
            #expect(origin.connectionsAccepted == 0)
            #expect(try client.request("GET", "/hello").header("X-Origin-Count") == "1")
        }
    }

    @Test func queryParametersBecomeHeaders() async throws {
        try await withOrigin { origin in
            let target =
                "/h?cc=max-age%3D60,+public&h=X-One:1&h=X-Two:+two+words&etag=abc&vary=Accept-Encoding"
                + "&age=30&setcookie=a%3Db&lm=-3600&expires=60&date=-10&body=hello+world%21"
            let response = try httpGet(port: origin.port, target)
            #expect(response.header("Cache-Control") == "max-age=60, public")
            #expect(response.header("X-One") == "1")
            #expect(response.header("X-Two") == "two words")
            #expect(response.header("ETag") == "\"abc\"")
            #expect(response.header("Vary") == "Accept-Encoding")
            #expect(response.header("Age") == "30")
            #expect(response.header("Set-Cookie") == "a=b")
            #expect(response.bodyString == "hello world!")
            let date = try #require(response.header("Date").flatMap(Self.parseDate))
            let expires = try #require(response.header("Expires").flatMap(Self.parseDate))
            let lastModified = try #require(response.header("Last-Modified").flatMap(Self.parseDate))
            let now = Date().timeIntervalSince1970
            #expect(abs(date - (now - 10)) <= 5)
            #expect(abs(expires - (now + 60)) <= 5)
            // `lm` counts from the origin's start (so Last-Modified stays put); the origin is a few
            // seconds old at most here, however loaded the machine.
            #expect(lastModified <= now - 3600 + 1)
            #expect(lastModified >= now - 3600 - 120)
            let quoted = try httpGet(port: origin.port, "/h?etag=W/%22weak%22")
            #expect(quoted.header("ETag") == "W/\"weak\"")
        }
    }

    @Test func bytesRouteSendsThePattern() async throws {
        try await withOrigin { origin in
            let client = try RawHTTPClient(port: origin.port)
            for size in [0, 1, 27, 65_536, 200_001] {
                let response = try client.request("GET", "/bytes/\(size)")
                #expect(response.header("Content-Length") == "\(size)")
                #expect(response.body == FixtureOrigin.pattern(size))
            }
            let sized = try client.request("GET", "/anything?size=30")
            #expect(sized.body == FixtureOrigin.pattern(30))
            let (head, length, checksum) = try {
                try client.send("GET /bytes/1048583 HTTP/1.1\r\nHost: x\r\n\r\n")
                return try client.readResponseDiscardingBody()
            }()
            #expect(head.status == 200 && head.body.isEmpty)
            #expect(length == 1_048_583)
            #expect(checksum == RawHTTPClient.fnv1a(FixtureOrigin.pattern(1_048_583)))
        }
    }

    @Test func statusRoutes() async throws {
        try await withOrigin { origin in
            let client = try RawHTTPClient(port: origin.port)
            let notFound = try client.request("GET", "/status/404")
            #expect(notFound.status == 404)
            #expect(notFound.reason == "Not Found")
            #expect(notFound.bodyString == "status 404\n")
            let noContent = try client.request("GET", "/status/204")
            #expect(noContent.status == 204)
            #expect(noContent.header("Content-Length") == nil)
            #expect(noContent.body.isEmpty)
            let notModified = try client.request("GET", "/status/304")
            #expect(notModified.status == 304 && notModified.body.isEmpty)
            let overridden = try client.request("GET", "/bytes/5?status=503")
            #expect(overridden.status == 503)
            #expect(overridden.bodyString == "abcde")
            // Keep-alive survived bodiless responses.
            #expect(try client.request("GET", "/after").bodyString == "ok /after\n")
            let hinted = try client.request("GET", "/status/103")
            #expect(hinted.status == 200)
            #expect(hinted.interimResponses.map(\.status) == [103])
            try client.send("GET /status/103 HTTP/1.1\r\nHost: x\r\n\r\n")
            let interim = try client.readResponse(returnInterim: true)
            #expect(interim.status == 103)
            #expect(try client.readResponse().status == 200)
            #expect(origin.connectionsAccepted == 1)
        }
    }

    @Test func chunkedRoutes() async throws {
        try await withOrigin { origin in
            let client = try RawHTTPClient(port: origin.port)
            let chunked = try client.request("GET", "/chunked")
            #expect(chunked.header("Transfer-Encoding") == "chunked")
            #expect(chunked.header("Content-Length") == nil)
            #expect(chunked.bodyString == "chunk 1 of 4\nchunk 2 of 4\nchunk 3 of 4\nchunk 4 of 4\n")
            let big = try client.request("GET", "/bytes/150000?chunked=1")
            #expect(big.header("Transfer-Encoding") == "chunked")
            #expect(big.body == FixtureOrigin.pattern(150_000))
            let small = try client.request("GET", "/x?chunked=1")
            #expect(small.bodyString == "ok /x\n")
            // The wire format really is several chunks.
            try client.send("GET /chunked HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            let raw = String(decoding: try client.readToEOF(), as: UTF8.self)
            #expect(raw.hasSuffix("\r\nd\r\nchunk 4 of 4\n\r\n0\r\n\r\n"))
            #expect(raw.components(separatedBy: "\r\nd\r\n").count == 5)
        }
    }

    @Test func echoDumpsTheRequest() async throws {
        try await withOrigin { origin in
            let client = try RawHTTPClient(port: origin.port)
            let response = try client.request(
                "POST",
                "/echo?q=1",
                headers: [("Host", "origin.test"), ("X-B", "2"), ("x-a", "1"), ("X-B", "3")],
                body: Array("hello".utf8)
            )
            #expect(
                response.bodyString
                    == "POST /echo?q=1\nHost: origin.test\nX-B: 2\nx-a: 1\nX-B: 3\nContent-Length: 5\n\n5\n"
            )
            let recorded = try #require(origin.requests(path: "/echo").first)
            #expect(recorded.method == "POST")
            #expect(recorded.bodyLength == 5)
            #expect(recorded.headers("x-b") == ["2", "3"])
            #expect(recorded.header("HOST") == "origin.test")
        }
    }

    @Test func requestBodiesAreReadAndCounted() async throws {
        try await withOrigin { origin in
            let client = try RawHTTPClient(port: origin.port)
            let body = [UInt8](repeating: 0x41, count: 300_000)
            let response = try client.request("PUT", "/upload", body: body)
            #expect(response.status == 200)
            try client.send("POST /chunked-upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            try client.send("3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n")
            #expect(try client.readResponse().status == 200)
            #expect(origin.requests(path: "/upload").first?.bodyLength == 300_000)
            #expect(origin.requests(path: "/chunked-upload").first?.bodyLength == 7)
            // Expect: 100-continue gets an interim 100 as soon as the head arrives.
            try client.send("POST /continue HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
            let interim = try client.readResponse(returnInterim: true)
            #expect(interim.status == 100)
            try client.send("xyz")
            #expect(try client.readResponse().bodyString == "ok /continue\n")
        }
    }

    @Test func closeDropHangAndTruncate() async throws {
        try await withOrigin { origin in
            let closing = try RawHTTPClient(port: origin.port)
            let closed = try closing.request("GET", "/close")
            #expect(closed.header("Connection") == "close")
            #expect(closed.bodyString == "ok /close\n")
            #expect(try closing.readToEOF().isEmpty)
            #expect(closing.isClosedByPeer)

            let dropping = try RawHTTPClient(port: origin.port)
            #expect(throws: RawHTTPError.self) { try dropping.request("GET", "/drop") }
            #expect(dropping.isClosedByPeer)
            #expect(origin.requestCount(path: "/drop") == 1)

            let hanging = try RawHTTPClient(port: origin.port, timeout: 0.3)
            do {
                _ = try hanging.request("GET", "/hang")
                Issue.record("/hang answered")
            } catch RawHTTPError.timedOut {
            }
            #expect(!hanging.isClosedByPeer)

            let truncating = try RawHTTPClient(port: origin.port)
            do {
                _ = try truncating.request("GET", "/truncate/1001")
                Issue.record("/truncate sent a complete body")
            } catch RawHTTPError.incompleteBody(let partial, let expected) {
                #expect(expected == 1001)
                #expect(partial.body == FixtureOrigin.pattern(500))
            }
        }
    }

    @Test func delaysAndSlowBodies() async throws {
        try await withOrigin { origin in
            let client = try RawHTTPClient(port: origin.port)
            var start = Date()
            let delayed = try client.request("GET", "/delay/300/anything")
            #expect(Date().timeIntervalSince(start) >= 0.29)
            #expect(delayed.bodyString == "ok /delay/300/anything\n")
            start = Date()
            _ = try client.request("GET", "/x?delay=200")
            #expect(Date().timeIntervalSince(start) >= 0.19)
            start = Date()
            let slow = try client.request("GET", "/slowbody/1000/40")
            let elapsed = Date().timeIntervalSince(start)
            #expect(elapsed >= 0.35)
            #expect(elapsed < 5)
            #expect(slow.header("Content-Length") == "1000")
            #expect(slow.body == FixtureOrigin.pattern(1000))
            let slowChunked = try client.request("GET", "/slowbody/95/5?chunked=1")
            #expect(slowChunked.body == FixtureOrigin.pattern(95))
        }
    }

    @Test func keepAliveAndPipelining() async throws {
        try await withOrigin { origin in
            let client = try RawHTTPClient(port: origin.port)
            // The slow first response must still come first.
            try client.send(
                "GET /delay/200 HTTP/1.1\r\nHost: x\r\n\r\n"
                    + "GET /bytes/70000 HTTP/1.1\r\nHost: x\r\n\r\n"
                    + "HEAD /chunked HTTP/1.1\r\nHost: x\r\n\r\n"
                    + "HEAD /bytes/100 HTTP/1.1\r\nHost: x\r\n\r\n"
                    + "GET /status/204 HTTP/1.1\r\nHost: x\r\n\r\n"
                    + "GET /last HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            #expect(try client.readResponse().bodyString == "ok /delay/200\n")
            #expect(try client.readResponse().body == FixtureOrigin.pattern(70_000))
            let headChunked = try client.readResponse(isHead: true)
            #expect(headChunked.status == 200 && headChunked.body.isEmpty)
            let headBytes = try client.readResponse(isHead: true)
            #expect(headBytes.header("Content-Length") == "100")
            #expect(try client.readResponse().status == 204)
            #expect(try client.readResponse().bodyString == "ok /last\n")
            #expect(origin.connectionsAccepted == 1)
            #expect(!client.isClosedByPeer)
        }
    }

    @Test func http10ClosesAfterTheResponse() async throws {
        try await withOrigin { origin in
            let client = try RawHTTPClient(port: origin.port)
            try client.send("GET /chunked HTTP/1.0\r\n\r\n")
            let response = try client.readResponse()
            #expect(response.version == "HTTP/1.0")
            #expect(response.header("Transfer-Encoding") == nil)
            #expect(response.bodyString == "chunk 1 of 4\nchunk 2 of 4\nchunk 3 of 4\nchunk 4 of 4\n")
            #expect(client.isClosedByPeer)
            let keepAlive = try RawHTTPClient(port: origin.port)
            try keepAlive.send("GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            #expect(try keepAlive.readResponse().header("Connection") == "keep-alive")
            try keepAlive.send("GET /b HTTP/1.0\r\n\r\n")
            #expect(try keepAlive.readResponse().bodyString == "ok /b\n")
        }
    }

    @Test func conditionalRequests() async throws {
        try await withOrigin { origin in
            let client = try RawHTTPClient(port: origin.port)
            let target = "/doc?etag=v1&cc=max-age%3D5&lm=-3600&h=X-Meta:1"
            let full = try client.request("GET", target)
            #expect(full.status == 200)
            let lastModified = try #require(full.header("Last-Modified"))

            let matched = try client.request("GET", target, headers: [("If-None-Match", "\"v0\", W/\"v1\"")])
            #expect(matched.status == 304)
            #expect(matched.body.isEmpty)
            #expect(matched.header("ETag") == "\"v1\"")
            #expect(matched.header("Cache-Control") == "max-age=5")
            #expect(matched.header("Last-Modified") == lastModified)
            #expect(matched.header("X-Origin-Count") == "2")
            #expect(matched.header("X-Meta") == "1")
            #expect(matched.header("Content-Length") == nil)
            #expect(matched.header("Date") != nil)

            #expect(try client.request("GET", target, headers: [("If-None-Match", "*")]).status == 304)
            #expect(try client.request("GET", target, headers: [("If-None-Match", "\"v2\"")]).status == 200)
            // If-None-Match wins over If-Modified-Since.
            let both = [("If-None-Match", "\"v2\""), ("If-Modified-Since", lastModified)]
            #expect(try client.request("GET", target, headers: both).status == 200)
            #expect(try client.request("GET", target, headers: [("If-Modified-Since", lastModified)]).status == 304)
            #expect(try client.request("HEAD", target, headers: [("If-Modified-Since", lastModified)]).status == 304)
            let earlier = "Thu, 01 Jan 1970 00:00:00 GMT"
            #expect(try client.request("GET", target, headers: [("If-Modified-Since", earlier)]).status == 200)
            #expect(try client.request("GET", "/plain", headers: [("If-None-Match", "*")]).status == 200)
            #expect(try client.request("POST", target, headers: [("If-None-Match", "\"v1\"")]).status == 200)
        }
    }

    @Test func absoluteFormTargetsCountByPath() async throws {
        try await withOrigin { origin in
            let response = try httpGet(port: origin.port, "http://origin.test/abs?x=1")
            #expect(response.bodyString == "ok /abs\n")
            #expect(origin.requestCount(path: "/abs") == 1)
        }
    }

    @Test func malformedRequestGets400() async throws {
        try await withOrigin { origin in
            let client = try RawHTTPClient(port: origin.port)
            try client.send("NOT HTTP AT ALL\r\n\r\n")
            #expect(try client.readResponse().status == 400)
        }
    }

    @Test func shutdownClosesOpenConnections() async throws {
        let origin = try await FixtureOrigin.start()
        let port = origin.port
        let client = try RawHTTPClient(port: port, timeout: 5)
        try client.send("GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
        while origin.requestCount(path: "/hang") == 0 { try await Task.sleep(for: .milliseconds(5)) }
        try await origin.shutdown()
        let rest = try await runBlocking { try client.readToEOF() }
        #expect(rest.isEmpty)
        #expect(client.isClosedByPeer)
        #expect(throws: RawHTTPError.self) { try httpGet(port: port, "/after", timeout: 1) }
    }

    @Test func concurrentConnections() async throws {
        let origin = try await FixtureOrigin.start()
        let port = origin.port
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<8 {
                group.addTask {
                    let bodies = try await runBlocking {
                        let client = try RawHTTPClient(port: port)
                        return try (0..<5).map { _ in try client.request("GET", "/bytes/\(1000 + index)").body }
                    }
                    #expect(bodies.allSatisfy { $0 == FixtureOrigin.pattern(1000 + index) })
                }
            }
            try await group.waitForAll()
        }
        #expect(origin.connectionsAccepted == 8)
        #expect(origin.requestCount() == 40)
        try await origin.shutdown()
    }

    /// 1 GiB through /bytes must stream: neither side may hold the body. The RSS figure is
    /// printed, not asserted (the test process also holds the origin, so it measures both).
    @Test func oneGibibyteStreams() async throws {
        let size = 1 << 30
        try await withOrigin { origin in
            let before = Self.residentKiB()
            let start = Date()
            let client = try RawHTTPClient(port: origin.port, timeout: 30)
            try client.send("GET /bytes/\(size) HTTP/1.1\r\nHost: x\r\n\r\n")
            let (response, length, checksum) = try client.readResponseDiscardingBody()
            let after = Self.residentKiB()
            #expect(response.status == 200)
            #expect(response.header("Content-Length") == "\(size)")
            #expect(length == size)
            #expect(checksum != RawHTTPClient.fnvOffsetBasis)
            print(
                "1 GiB via /bytes: \(Int(Date().timeIntervalSince(start) * 1000)) ms, "
                    + "VmRSS \(before) KiB -> \(after) KiB"
            )
            #expect(after - before < 256 * 1024, "RSS grew by \(after - before) KiB")
            // The connection is still usable after the big body.
            #expect(try client.request("GET", "/small").bodyString == "ok /small\n")
        }
    }

    private static func residentKiB() -> Int {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            return Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0
        }
        return 0
    }

    private static func parseDate(_ text: String) -> Double? {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
        return formatter.date(from: text)?.timeIntervalSince1970
    }
}
