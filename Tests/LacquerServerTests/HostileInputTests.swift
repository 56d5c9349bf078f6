import CacheStore
import FixtureOrigin
import LacquerServer
import LacquerTesting
import NIOCore
import Testing

/// Smuggling and poisoning shapes from outside, over raw sockets: each is refused with the status
/// Varnish answers (RFC 9112 §6, §7; VSV00001-VSV00018), closed, counted by class and by status,
/// never forwarded; and the next normal request is answered.
@Suite("Hostile input", .serialized, .timeLimit(.minutes(2)))
struct HostileInputTests {
    /// Sends `raw`, reads one response and expects the connection closed after it.
    func refused(_ raw: String, port: Int) throws -> RawHTTPResponse {
        let client = try RawHTTPClient(port: port, timeout: 5)
        defer { client.close() }
        try client.send(raw)
        let response = try client.readResponse(isHead: raw.hasPrefix("HEAD "))
        _ = try client.readToEOF()
        #expect(client.isClosedByPeer)
        #expect(response.header("Connection")?.lowercased() == "close")
        return response
    }

    /// One row: the request is refused with `status`, counted under `counter` (and its status),
    /// the origin never sees it, and a normal request afterwards is answered.
    func row(_ raw: String, status: Int, counter: Counter, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        try await withLacquer { lacquer, port, origin async throws in
            let response = try refused(raw, port: port)
            #expect(response.status == status, sourceLocation: sourceLocation)
            #expect(lacquer.counters[counter] == 1, sourceLocation: sourceLocation)
            if let byStatus = Counter.clientRequest(status: status) {
                #expect(lacquer.counters[byStatus] == 1, sourceLocation: sourceLocation)
            }
            #expect(origin.requestCount() == 0, "refused requests never reach the origin", sourceLocation: sourceLocation)
            let normal = try httpGet(port: port, "/bytes/10")
            #expect(normal.status == 200, sourceLocation: sourceLocation)
        }
    }

    @Test("Connection naming Content-Length, Transfer-Encoding or Host is a 400 (VSV00010)", arguments: [
        "Content-Length", "transfer-encoding", "Host", "keep-alive, Host",
    ])
    func connectionNamesFramingField(token: String) async throws {
        try await self.row(
            "GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: \(token)\r\n\r\n", status: 400, counter: .clientReqBadFraming)
    }

    @Test("a POST with Connection: Content-Length is refused before its body is forwarded")
    func connectionContentLengthPost() async throws {
        try await self.row(
            "POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\nConnection: Content-Length\r\n\r\nhello",
            status: 400, counter: .clientReqBadFraming)
    }

    @Test("Content_Length, Transfer_Encoding and Host_ look-alikes are a 400, never forwarded", arguments: [
        "Content_Length: 5", "transfer_encoding: chunked", "Host_: evil.example",
    ])
    func underscoreFramingNames(field: String) async throws {
        if field.hasPrefix("Host_") {
            // Not a look-alike: `host-` is no framing field; forwarded as any other field.
            try await withLacquer { _, port, _ async throws in
                let client = try RawHTTPClient(port: port, timeout: 5)
                defer { client.close() }
                try client.send("GET /bytes/3 HTTP/1.1\r\nHost: 127.0.0.1\r\n\(field)\r\n\r\n")
                #expect(try client.readResponse().status == 200)
            }
            return
        }
        try await self.row(
            "GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\n\(field)\r\n\r\n", status: 400, counter: .clientReqBadFraming)
    }

    @Test("a HEAD with a body is a 400 (Varnish: a hard error)")
    func headWithBody() async throws {
        try await self.row(
            "HEAD /x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4\r\n\r\nabcd", status: 400,
            counter: .clientReqBadFraming)
    }

    @Test("a HEAD with Content-Length: 0 is an ordinary HEAD")
    func headWithZeroLength() async throws {
        try await withLacquer { _, port, _ async throws in
            let client = try RawHTTPClient(port: port, timeout: 5)
            defer { client.close() }
            try client.send("HEAD /bytes/7 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n")
            let response = try client.readResponseHead()
            #expect(response.status == 200)
        }
    }

    @Test("HTTP/1.0 POST or PUT without Content-Length is a 411", arguments: ["POST", "PUT"])
    func http10WithoutLength(method: String) async throws {
        try await self.row("\(method) /echo HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", status: 411, counter: .clientReq411)
    }

    @Test("Transfer-Encoding in an HTTP/1.0 request is faulty framing: 400 (RFC 9112 §6.1)")
    func http10TransferEncoding() async throws {
        try await self.row(
            "POST /echo HTTP/1.0\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            status: 400, counter: .clientReqBadFraming)
    }

    @Test("a 100 KiB request-target is a request-line problem: 414, not 431")
    func hugeTargetIs414() async throws {
        try await withLacquer { lacquer, port, origin async throws in
            let target = "/" + String(repeating: "t", count: 100 * 1024)
            let response = try refused("GET \(target) HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", port: port)
            #expect(response.status == 414)
            #expect(lacquer.counters[.clientReq414] == 1)
            #expect(lacquer.counters[.clientReq431] == 0)
            #expect(origin.requestCount() == 0)
            // A huge header field after a normal request line stays a 431.
            let value = String(repeating: "v", count: 100 * 1024)
            let field = try refused("GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: \(value)\r\n\r\n", port: port)
            #expect(field.status == 431)
            #expect(try httpGet(port: port, "/bytes/10").status == 200)
        }
    }
}
