import CacheStore
import FixtureOrigin
import LacquerServer
import LacquerTesting
import NIOCore
import Testing

/// The safe defaults of HARDENING.md over real sockets: each rejection answers the listed status,
/// closes the connection, is counted, and never reaches the origin.
@Suite("Hardening", .serialized, .timeLimit(.minutes(2)))
struct HardeningTests {
    /// Sends `raw`, reads one response, and checks that the connection is then closed.
    func rejects(_ raw: String, port: Int) throws -> RawHTTPResponse {
        let client = try RawHTTPClient(port: port, timeout: 5)
        defer { client.close() }
        try client.send(raw)
        let response = try client.readResponse()
        _ = try client.readToEOF()
        #expect(client.isClosedByPeer)
        #expect(response.header("Connection")?.lowercased() == "close")
        return response
    }

    @Test("a request-target over 8 KiB is refused with 414")
    func longTarget() async throws {
        try await withLacquer { lacquer, port, origin async throws in
            let target = "/" + String(repeating: "a", count: 9 * 1024)
            let response = try rejects("GET \(target) HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", port: port)
            #expect(response.status == 414)
            #expect(lacquer.counters[.clientReq414] == 1)
            #expect(origin.requestCount() == 0)
        }
    }

    @Test("more than 100 header fields are refused with 431")
    func tooManyFields() async throws {
        try await withLacquer { lacquer, port, origin async throws in
            let fields = (0..<101).map { "X-F\($0): v\r\n" }.joined()
            let response = try rejects("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\(fields)\r\n", port: port)
            #expect(response.status == 431)
            #expect(lacquer.counters[.clientReq431] == 1)
            #expect(origin.requestCount() == 0)
        }
    }

    @Test("a header field over 8 KiB is refused with 431")
    func hugeField() async throws {
        try await withLacquer { _, port, _ async throws in
            let value = String(repeating: "b", count: 9 * 1024)
            #expect(try rejects("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: \(value)\r\n\r\n", port: port).status == 431)
        }
    }

    @Test("a header section over 32 KiB is refused with 431")
    func hugeHeaderSection() async throws {
        try await withLacquer { _, port, _ async throws in
            let fields = (0..<9).map { "X-F\($0): \(String(repeating: "c", count: 4000))\r\n" }.joined()
            #expect(try rejects("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\(fields)\r\n", port: port).status == 431)
        }
    }

    @Test("an origin response whose header section exceeds 32 KiB is a 502, counted, never stored (HARDENING.md §3)")
    func oversizedResponseHeaders() async throws {
        try await withLacquer { lacquer, port, origin async throws in
            let target = "/big-head?cc=max-age%3D60&hbytes=33000"
            let response = try httpGet(port: port, target)
            #expect(response.status == 502)
            #expect(response.bodyString.contains("exceed the limits"))
            #expect(lacquer.counters[.fetchTooLargeHeaders] == 1)
            #expect(try httpGet(port: port, target).status == 502)
            #expect(origin.requestCount(path: "/big-head") == 2)
            // Below the limit the same origin is served and stored.
            let fits = try httpGet(port: port, "/big-head?cc=max-age%3D60&hbytes=20000")
            #expect(fits.status == 200)
            #expect(try httpGet(port: port, "/big-head?cc=max-age%3D60&hbytes=20000").header("X-Cache-Status") == "HIT")
        }
    }

    @Test("absolute-form targets are refused: Lacquer is not an open proxy")
    func absoluteForm() async throws {
        try await withLacquer { lacquer, port, origin async throws in
            let response = try rejects("GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n", port: port)
            #expect(response.status == 400)
            #expect(lacquer.counters[.clientReqAbsoluteForm] == 1)
            #expect(origin.requestCount() == 0)
        }
    }

    @Test("HTTP/1.1 without Host, or with two Host fields, is refused with 400")
    func hostRequired() async throws {
        try await withLacquer { _, port, origin async throws in
            #expect(try rejects("GET / HTTP/1.1\r\n\r\n", port: port).status == 400)
            #expect(try rejects("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", port: port).status == 400)
            #expect(try rejects("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", port: port).status == 400)
            #expect(origin.requestCount() == 0)
        }
    }

    @Test("malformed HTTP gets 400 and a close")
    func garbage() async throws {
        try await withLacquer { lacquer, port, origin async throws in
            #expect(try rejects("THIS IS NOT HTTP\r\n\r\n", port: port).status == 400)
            #expect(try rejects("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", port: port).status == 400)
            #expect(try rejects("GET / HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n", port: port).status == 400)
            #expect(lacquer.counters[.clientReq400] == 3)
            #expect(origin.requestCount() == 0)
        }
    }

    @Test("an unknown method in a well-formed request line gets 501; a malformed method token, 400")
    func unknownMethod() async throws {
        try await withLacquer { _, port, origin async throws in
            // Without a body its framing is known: builtin.vcl answers 501 and the connection goes on.
            let client = try RawHTTPClient(port: port, timeout: 5)
            defer { client.close() }
            try client.send("FROB /x HTTP/1.1\r\nHost: x\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n")
            let unknown = try client.readResponse()
            #expect(unknown.status == 501)
            #expect(unknown.bodyString.contains("Method not implemented"))
            #expect(try client.readResponse().status == 200)
            // With a body the decoder refuses it before anything reads it: 501 and close.
            let withBody = try rejects("FROB /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", port: port)
            #expect(withBody.status == 501)
            #expect(try rejects("FR{B /x HTTP/1.1\r\nHost: x\r\n\r\n", port: port).status == 400)
            #expect(try rejects("FROB x HTTP/1.1\r\nHost: x\r\n\r\n", port: port).status == 400)
            #expect(try rejects("FROB /x HTTP/one\r\nHost: x\r\n\r\n", port: port).status == 400)
            #expect(origin.requestCount() == 1)  // /after
        }
    }

    @Test("a request body over the limit is refused with 413 before it is read")
    func bodyTooLarge() async throws {
        try await withLacquer(configure: { $0.limits.requestBodyBytes = 1000 }) { lacquer, port, origin in
            let response = try rejects("POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n", port: port)
            #expect(response.status == 413)
            #expect(lacquer.counters[.clientReq413] == 1)
            #expect(origin.requestCount() == 0)
        }
    }

    @Test("client copies of X-Cache-Status never reach the client's answer either")
    func cacheStatusNotSpoofable() async throws {
        try await withLacquer { _, port, _ async throws in
            let response = try httpGet(port: port, "/spoof?h=X-Cache-Status%3AHIT")
            #expect(response.headers("X-Cache-Status") == ["MISS"])
        }
    }

    @Test("an idle keep-alive connection is closed after the idle timeout")
    func idleTimeout() async throws {
        try await withLacquer(configure: { $0.clientTimeouts.idle = .milliseconds(200) }) { lacquer, port, _ in
            let client = try RawHTTPClient(port: port, timeout: 5)
            defer { client.close() }
            #expect(try client.request("GET", "/i").status == 200)
            _ = try client.readToEOF()
            #expect(client.isClosedByPeer)
            #expect(lacquer.counters[.sessClosedIdle] == 1)
        }
    }

    @Test("Connection: close from the client closes after the response")
    func clientClose() async throws {
        try await withLacquer { _, port, _ async throws in
            let client = try RawHTTPClient(port: port, timeout: 5)
            defer { client.close() }
            let response = try client.request("GET", "/cc", headers: [("Connection", "close")])
            #expect(response.header("Connection") == "close")
            _ = try client.readToEOF()
            #expect(client.isClosedByPeer)
        }
    }
}
