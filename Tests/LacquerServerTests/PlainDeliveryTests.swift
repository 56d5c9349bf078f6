import CacheStore
import FixtureOrigin
import LacquerServer
import LacquerTesting
import Testing

/// Hits written from the stored bytes (status line, stored fields as they are, this delivery's
/// fields, body), and the response encoder around them: framing on a kept-alive connection,
/// pipelining, HEAD, Connection: close, and upstream fields that must be merged.
@Suite("Plain delivery", .serialized, .timeLimit(.minutes(2)))
struct PlainDeliveryTests {
    @Test("GET and HEAD hits of inline and large bodies on one connection are each framed exactly")
    func framingOnOneConnection() async throws {
        try await withLacquer { _, port, origin async throws in
            try await runBlocking {
                let client = try RawHTTPClient(port: port)
                defer { client.close() }
                let large = "/bytes/40000?cc=max-age%3D60"
                let small = "/bytes/10?cc=max-age%3D60"
                let miss = try client.request("GET", large)
                #expect(miss.header("X-Cache-Status") == "MISS")
                for _ in 0..<2 {
                    let hit = try client.request("GET", large)
                    #expect(hit.header("X-Cache-Status") == "HIT")
                    #expect(hit.header("Content-Length") == "40000")
                    #expect(hit.body == miss.body)
                    let head = try client.request("HEAD", large)
                    #expect(head.header("X-Cache-Status") == "HIT")
                    #expect(head.header("Content-Length") == "40000")
                    #expect(head.body.isEmpty)
                }
                let smallMiss = try client.request("GET", small)
                let smallHit = try client.request("GET", small)
                #expect(smallHit.header("X-Cache-Status") == "HIT")
                #expect(smallHit.body == smallMiss.body)
                #expect(smallHit.body.count == 10)
                #expect(smallHit.headers("Content-Length") == ["10"])
                #expect(smallHit.headers("Accept-Ranges") == ["bytes"])
                #expect(smallHit.headers("Via") == ["1.1 lacquer"])
                #expect(smallHit.header("Date") != nil)
                #expect(smallHit.header("Cache-Control") == "max-age=60")
            }
            #expect(origin.requestCount(path: "/bytes/40000") == 1)
            #expect(origin.requestCount(path: "/bytes/10") == 1)
        }
    }

    @Test("a body of exactly the memory tier's 1 MiB limit is kept in memory and hit from there")
    func oneMebibyteInMemory() async throws {
        try await withLacquer { lacquer, port, origin async throws in
            let target = "/bytes/1048576?cc=max-age%3D60"
            let miss = try httpGet(port: port, target)
            #expect(miss.header("X-Cache-Status") == "MISS")
            for _ in 0..<3 {
                let hit = try httpGet(port: port, target)
                #expect(hit.header("X-Cache-Status") == "HIT")
                #expect(hit.body == miss.body)
            }
            #expect(miss.body.count == 1_048_576)
            #expect(lacquer.counters[.diskHit] == 0)
            #expect(lacquer.memory.stats.objects == 1)
            #expect(origin.requestCount(path: "/bytes/1048576") == 1)
        }
    }

    @Test("pipelined hits are answered in request order")
    func pipelinedHits() async throws {
        try await withLacquer { _, port, _ async throws in
            try await runBlocking {
                _ = try httpGet(port: port, "/bytes/11?cc=max-age%3D60")
                _ = try httpGet(port: port, "/bytes/22?cc=max-age%3D60")
                let client = try RawHTTPClient(port: port)
                defer { client.close() }
                try client.send(
                    bytes: RawHTTPClient.serialize("GET", "/bytes/11?cc=max-age%3D60")
                        + RawHTTPClient.serialize("HEAD", "/bytes/22?cc=max-age%3D60")
                        + RawHTTPClient.serialize("GET", "/bytes/22?cc=max-age%3D60"))
                let first = try client.readResponse()
                let second = try client.readResponse(isHead: true)
                let third = try client.readResponse()
                #expect(first.body.count == 11)
                #expect(second.header("Content-Length") == "22")
                #expect(second.body.isEmpty)
                #expect(third.body.count == 22)
                #expect([first, second, third].allSatisfy { $0.header("X-Cache-Status") == "HIT" })
            }
        }
    }

    @Test("a hit for a request asking to close says Connection: close and closes")
    func closeAfterHit() async throws {
        try await withLacquer { _, port, _ async throws in
            try await runBlocking {
                _ = try httpGet(port: port, "/bytes/12?cc=max-age%3D60")
                let client = try RawHTTPClient(port: port)
                defer { client.close() }
                let hit = try client.request("GET", "/bytes/12?cc=max-age%3D60", headers: [("Connection", "close")])
                #expect(hit.header("X-Cache-Status") == "HIT")
                #expect(hit.header("Connection") == "close")
                #expect(hit.body.count == 12)
                #expect(try client.readToEOF().isEmpty)
            }
        }
    }

    @Test("an origin's own Via and Cache-Status are kept and extended on a hit (RFC 9110 §7.6.3, RFC 9211 §2)")
    func upstreamFieldsMerged() async throws {
        try await withLacquer { _, port, _ async throws in
            let target = "/bytes/13?cc=max-age%3D60&h=Via:1.1%20upstream&h=Cache-Status:upstream%3B%20hit"
            _ = try httpGet(port: port, target)
            let hit = try httpGet(port: port, target)
            #expect(hit.header("X-Cache-Status") == "HIT")
            #expect(hit.headers("Via") == ["1.1 upstream, 1.1 lacquer"])
            #expect(hit.headers("Cache-Status").count == 1)
            #expect(hit.header("Cache-Status")?.hasPrefix("upstream; hit, Lacquer; hit") == true)
            #expect(hit.body.count == 13)
        }
    }

    @Test("a passed HEAD whose origin answer is chunked ends with its head; the connection stays usable")
    func headPassChunked() async throws {
        try await withLacquer { _, port, _ async throws in
            try await runBlocking {
                let client = try RawHTTPClient(port: port)
                defer { client.close() }
                let head = try client.request("HEAD", "/chunked?cc=no-store")
                #expect(head.status == 200)
                #expect(head.body.isEmpty)
                let next = try client.request("GET", "/bytes/14?cc=no-store")
                #expect(next.status == 200)
                #expect(next.body.count == 14)
            }
        }
    }
}
