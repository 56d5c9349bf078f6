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

    // MARK: A broken or hostile origin

    /// Lacquer in front of an origin that answers with scripted bytes.
    func withRawOrigin(
        _ script: @escaping @Sendable (_ requestHead: String) -> RawOrigin.Reply,
        _ body: (_ lacquer: LacquerServer, _ port: Int, _ origin: RawOrigin) async throws -> Void
    ) async throws {
        let raw = try await RawOrigin.start(script)
        do {
            try await withLacquer(configure: {
                $0.backends = [BackendConfiguration(name: "raw", host: "127.0.0.1", port: raw.port)]
            }) { lacquer, port, _ async throws in
                try await body(lacquer, port, raw)
            }
        } catch {
            await raw.shutdown()
            throw error
        }
        await raw.shutdown()
    }

    @Test("an origin status outside 100-599 (099) is one 502, never a head of its own")
    func invalidOriginStatus() async throws {
        try await self.withRawOrigin({ head in
            head.hasPrefix("GET /odd")
                ? RawOrigin.Reply("HTTP/1.1 099 Odd\r\nContent-Length: 2\r\n\r\nok")
                : RawOrigin.Reply("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        }) { lacquer, port, _ async throws in
            let client = try RawHTTPClient(port: port, timeout: 5)
            defer { client.close() }
            try client.send("GET /odd HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            let first = try client.readResponse(returnInterim: true)
            #expect(first.status == 502)
            #expect(lacquer.counters[.fetchFramingError] == 1)
            // The same connection carries the next exchange: nothing else was written for the first.
            try client.send("GET /fine HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            let next = try client.readResponse(returnInterim: true)
            #expect(next.status == 200)
            #expect(next.bodyString == "ok")
        }
    }

    @Test("a 304 answering an unconditional request is a 502 and nothing is stored (Varnish: Unexpected 304)")
    func unexpectedNotModified() async throws {
        try await self.withRawOrigin({ head in
            RawOrigin.Reply("HTTP/1.1 304 Not Modified\r\nCache-Control: max-age=60\r\nETag: \"v1\"\r\n\r\n")
        }) { lacquer, port, origin async throws in
            #expect(try httpGet(port: port, "/u").status == 502)
            #expect(try httpGet(port: port, "/u").status == 502)
            #expect(origin.requests.count == 2, "never stored")
            #expect(lacquer.counters[.objectsStored] == 0)
        }
    }

    @Test("a 304 to a client's own validator on a pass is the client's answer")
    func passedNotModified() async throws {
        try await self.withRawOrigin({ _ in
            RawOrigin.Reply("HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n")
        }) { _, port, origin async throws in
            let client = try RawHTTPClient(port: port, timeout: 5)
            defer { client.close() }
            try client.send("GET /p HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: a=b\r\nIf-None-Match: \"v1\"\r\n\r\n")
            #expect(try client.readResponse().status == 304)
            #expect(origin.requests.first?.lowercased().contains("if-none-match") == true)
        }
    }

    @Test("Content-Range on a 200 is stored and forwarded as received (RFC 9111 §3.1), never taken for a range: a 206 made from the object states its own")
    func contentRangeOnFullResponse() async throws {
        try await self.withRawOrigin({ _ in
            RawOrigin.Reply(
                "HTTP/1.1 200 OK\r\nContent-Range: bytes 0-1/10\r\nContent-Length: 2\r\nCache-Control: max-age=60\r\n\r\nok")
        }) { _, port, _ async throws in
            let miss = try httpGet(port: port, "/cr")
            #expect(miss.status == 200 && miss.bodyString == "ok")
            #expect(miss.header("Content-Range") == "bytes 0-1/10")
            let hit = try httpGet(port: port, "/cr")
            #expect(hit.header("X-Cache-Status") == "HIT" && hit.status == 200)
            #expect(hit.header("Content-Range") == "bytes 0-1/10")
            #expect(hit.bodyString == "ok")
            let part = try httpGet(port: port, "/cr", headers: [("Range", "bytes=1-1")])
            #expect(part.status == 206 && part.bodyString == "k")
            #expect(part.headers.filter { $0.name.lowercased() == "content-range" }.map(\.value) == ["bytes 1-1/2"])
        }
    }

    @Test("a 304 whose merged header section would exceed 32 KiB is not merged: the object is fetched afresh")
    func oversizedNotModifiedMerge() async throws {
        let pad = String(repeating: "p", count: 7 * 1024)
        try await self.withRawOrigin({ head in
            if head.lowercased().contains("if-none-match") {
                let fields = (1...3).map { "X-B\($0): \(pad)\r\n" }.joined()
                return RawOrigin.Reply("HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\(fields)\r\n")
            }
            let fields = (1...3).map { "X-A\($0): \(pad)\r\n" }.joined()
            return RawOrigin.Reply(
                "HTTP/1.1 200 OK\r\nCache-Control: no-cache, max-age=60\r\nETag: \"v1\"\r\n\(fields)Content-Length: 5\r\n\r\nfresh")
        }) { lacquer, port, origin async throws in
            #expect(try httpGet(port: port, "/m").status == 200)
            let again = try httpGet(port: port, "/m")
            #expect(again.status == 200)
            #expect(again.bodyString == "fresh")
            #expect(again.header("X-B1") == nil, "the 304's fields were not merged")
            let requests = origin.requests
            #expect(requests.count == 3, "stored, revalidated (refused merge), fetched afresh")
            if requests.count == 3 {
                #expect(requests[1].lowercased().contains("if-none-match"))
                #expect(!requests[2].lowercased().contains("if-none-match"))
            }
            #expect(lacquer.counters[.fetchTooLargeHeaders] == 1)
        }
    }

    // MARK: Chunk sizes and extensions

    @Test("a client chunk size beyond 2^63 is a 400 at once, never forwarded (RFC 9112 §7.1)")
    func clientChunkSizeOverflow() async throws {
        try await self.row(
            "POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFED\r\nabcdefghijkl",
            status: 400, counter: .clientReqBadFraming)
    }

    @Test("a client chunk size beyond 2^63 after the head went on: 400 and a close, without waiting for a timeout")
    func clientChunkSizeOverflowLater() async throws {
        try await withLacquer { lacquer, port, _ async throws in
            let client = try RawHTTPClient(port: port, timeout: 5)
            defer { client.close() }
            try client.send("POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
            try await Task.sleep(for: .milliseconds(100))
            let started = ContinuousClock.now
            try client.send("FFFFFFFFFFFFFFED\r\nabcdefghijkl")
            let response = try client.readResponse()
            _ = try client.readToEOF()
            #expect(response.status == 400)
            #expect(client.isClosedByPeer)
            #expect(ContinuousClock.now - started < .seconds(4))
            #expect(lacquer.counters[.clientReqBadFraming] == 1)
            #expect(try httpGet(port: port, "/bytes/10").status == 200)
        }
    }

    @Test("a 64 KiB chunk extension is a 400")
    func longChunkExtension() async throws {
        let ext = String(repeating: "e", count: 64 * 1024)
        try await self.row(
            "POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n5;\(ext)\r\nhello\r\n0\r\n\r\n",
            status: 400, counter: .clientReqBadFraming)
    }

    @Test("chunk extensions within the limit still pass through")
    func shortChunkExtension() async throws {
        try await withLacquer { _, port, origin async throws in
            let client = try RawHTTPClient(port: port, timeout: 5)
            defer { client.close() }
            try client.send(
                "POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n0\r\n\r\n")
            let response = try client.readResponse()
            #expect(response.status == 200)
            #expect(response.bodyString.hasPrefix("bytes=5 "))
            #expect(origin.requestCount(path: "/upload") == 1)
        }
    }

    @Test("an origin chunk size beyond 2^63 with the head: one 502, nothing stored, the next fetch goes to the origin")
    func originChunkSizeOverflowWithHead() async throws {
        try await self.withRawOrigin({ _ in
            RawOrigin.Reply(
                "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFED\r\nabcdefghijkl")
        }) { lacquer, port, origin async throws in
            let started = ContinuousClock.now
            #expect(try httpGet(port: port, "/o").status == 502)
            #expect(ContinuousClock.now - started < .seconds(4))
            #expect(try httpGet(port: port, "/o").status == 502)
            #expect(origin.requests.count == 2)
            #expect(lacquer.counters[.objectsStored] == 0)
        }
    }

    @Test("an origin chunk size beyond 2^63 mid-body: the client and a collapsed waiter see the cut at once, nothing is stored")
    func originChunkSizeOverflowMidBody() async throws {
        try await self.withRawOrigin({ _ in
            RawOrigin.Reply(
                "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
                later: (400, "FFFFFFFFFFFFFFED\r\nabcdefghijkl"))
        }) { lacquer, port, origin async throws in
            let started = ContinuousClock.now
            let first = try RawHTTPClient(port: port, timeout: 5)
            defer { first.close() }
            try first.send("GET /mid HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            #expect(try first.readResponseHead().status == 200)
            let second = try RawHTTPClient(port: port, timeout: 5)
            defer { second.close() }
            try second.send("GET /mid HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            let waiter = try second.readResponseHead()
            #expect(waiter.header("Cache-Status")?.contains("collapsed") == true)
            for client in [first, second] {
                let rest = try client.readToEOF()
                #expect(client.isClosedByPeer, "the truncation is visible: the connection is cut")
                #expect(!String(decoding: rest, as: UTF8.self).contains("0\r\n\r\n"), "never a clean chunked end")
            }
            #expect(ContinuousClock.now - started < .seconds(4), "detected at once, not at a timeout")
            #expect(lacquer.counters[.objectsStored] == 0)
            let third = try RawHTTPClient(port: port, timeout: 5)
            defer { third.close() }
            try third.send("GET /mid HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            #expect(try third.readResponseHead().header("X-Cache-Status") != "HIT")
            #expect(origin.requests.count == 2, "nothing was stored: the next request fetched again")
        }
    }
}
