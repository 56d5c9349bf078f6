import FixtureOrigin
import Foundation
import LacquerServer
import LacquerTesting
import NIOCore
import Testing

/// Plain hits answered before the HTTP decoder (`HitFastLane`): the same bytes as the flow,
/// responses in request order whatever mix of requests shares a connection, and every case
/// that needs the flow (VCL, bans, Vary, a body, the connection's last request) left to it.
@Suite("Hit fast lane", .serialized, .timeLimit(.minutes(2)))
struct HitFastLaneTests {
    /// A response's fields without the ones that move with time.
    private static func stableFields(_ response: RawHTTPResponse) -> [String] {
        response.headers.filter { !["age", "cache-status"].contains($0.name.lowercased()) }.map { "\($0.name): \($0.value)" }
    }

    @Test("a plain hit from the lane carries exactly the fields and body the flow writes")
    func sameBytesAsTheFlow() async throws {
        try await withLacquer { lacquer, port, origin async throws in
            let target = "/bytes/300?cc=max-age%3D60&h=X-Extra:1&etag=v1"
            let miss = try httpGet(port: port, target)
            #expect(miss.header("X-Cache-Status") == "MISS")
            let fast = try httpGet(port: port, target)
            #expect(lacquer.counters[.cacheHitFast] == 1)
            // A field outside the lane's allow-list sends the same request through the flow.
            let flow = try httpGet(port: port, target, headers: [("X-Client", "1")])
            #expect(lacquer.counters[.cacheHitFast] == 1)
            #expect(lacquer.counters[.cacheHit] == 2)
            #expect(fast.status == 200 && flow.status == 200)
            #expect(Self.stableFields(fast) == Self.stableFields(flow))
            #expect(fast.header("X-Cache-Status") == "HIT")
            #expect(fast.header("Cache-Status")?.hasPrefix("Lacquer; hit; ttl=") == true)
            #expect(fast.header("Age") != nil)
            #expect(fast.body == miss.body)
            #expect(flow.body == miss.body)
            #expect(origin.requestCount(path: "/bytes/300") == 1)
            #expect(lacquer.counters[.clientReq] == 3)
        }
    }

    @Test("a hit pipelined behind a slow miss waits for it; hits behind that are answered in order")
    func orderBehindASlowRequest() async throws {
        try await withLacquer { lacquer, port, _ async throws in
            try await runBlocking {
                _ = try httpGet(port: port, "/bytes/5?cc=max-age%3D60")
                _ = try httpGet(port: port, "/bytes/6?cc=max-age%3D60")
                let client = try RawHTTPClient(port: port)
                defer { client.close() }
                try client.send(
                    bytes: RawHTTPClient.serialize("GET", "/bytes/5?cc=max-age%3D60")
                        + RawHTTPClient.serialize("GET", "/delay/300/slow?cc=max-age%3D60")
                        + RawHTTPClient.serialize("GET", "/bytes/6?cc=max-age%3D60")
                        + RawHTTPClient.serialize("HEAD", "/bytes/5?cc=max-age%3D60"))
                let first = try client.readResponse()
                let second = try client.readResponse()
                let third = try client.readResponse()
                let fourth = try client.readResponse(isHead: true)
                #expect(first.body.count == 5)
                #expect(second.header("X-Cache-Status") == "MISS")
                #expect(second.bodyString == "ok /delay/300/slow\n")
                #expect(third.body.count == 6)
                #expect(third.header("X-Cache-Status") == "HIT")
                #expect(fourth.header("Content-Length") == "5")
                #expect(fourth.body.isEmpty)
                // Once the slow request is answered, the lane takes the next hits again.
                let before = lacquer.counters[.cacheHitFast]
                let again = try client.request("GET", "/bytes/6?cc=max-age%3D60")
                #expect(again.body.count == 6)
                #expect(lacquer.counters[.cacheHitFast] == before + 1)
            }
        }
    }

    @Test("random pipelined mixes of hits, misses, passes, ranges, cookies and slow answers come back in order")
    func randomPipelinedMixes() async throws {
        try await withLacquer { lacquer, port, _ async throws in
            try await runBlocking {
                _ = try httpGet(port: port, "/bytes/5?cc=max-age%3D60")
                _ = try httpGet(port: port, "/bytes/900?cc=max-age%3D60")
                var random = SystemRandomNumberGenerator()
                let client = try RawHTTPClient(port: port)
                defer { client.close() }
                var sent = 0
                var unique = 0
                for _ in 0..<60 {
                    var batch: [UInt8] = []
                    var expected: [(isHead: Bool, label: String, check: (RawHTTPResponse) -> Bool)] = []
                    for _ in 0..<Int.random(in: 1...5, using: &random) {
                        switch Int.random(in: 0..<8, using: &random) {
                        case 0:
                            batch += RawHTTPClient.serialize("GET", "/bytes/5?cc=max-age%3D60")
                            expected.append((false, "hit 5", { $0.status == 200 && $0.body == Array("abcde".utf8) }))
                        case 1:
                            batch += RawHTTPClient.serialize("HEAD", "/bytes/900?cc=max-age%3D60")
                            expected.append((true, "head 900", { $0.status == 200 && $0.header("Content-Length") == "900" && $0.body.isEmpty }))
                        case 2:
                            unique += 1
                            batch += RawHTTPClient.serialize("GET", "/bytes/7?cc=max-age%3D60&u=\(unique)")
                            expected.append((false, "miss 7", { $0.header("X-Cache-Status") == "MISS" && $0.body.count == 7 }))
                        case 3:
                            batch += RawHTTPClient.serialize("GET", "/bytes/11?cc=no-store")
                            expected.append((false, "pass 11", { $0.status == 200 && $0.body.count == 11 }))
                        case 4:
                            batch += RawHTTPClient.serialize("GET", "/bytes/900?cc=max-age%3D60", headers: [("Range", "bytes=0-2")])
                            expected.append((false, "range", { $0.status == 206 && $0.body == Array("abc".utf8) }))
                        case 5:
                            batch += RawHTTPClient.serialize("GET", "/bytes/5?cc=max-age%3D60", headers: [("Cookie", "a=1")])
                            expected.append((false, "cookie", { $0.status == 200 && $0.body.count == 5 }))
                        case 6:
                            batch += RawHTTPClient.serialize("GET", "/delay/20/d?cc=no-store")
                            expected.append((false, "slow", { $0.bodyString == "ok /delay/20/d\n" }))
                        default:
                            batch += RawHTTPClient.serialize("GET", "/bytes/900?cc=max-age%3D60")
                            expected.append((false, "hit 900", { $0.status == 200 && $0.body.count == 900 }))
                        }
                    }
                    // Sometimes split the batch at a random byte, as TCP may.
                    let cut = Int.random(in: 0...batch.count, using: &random)
                    try client.send(bytes: Array(batch[..<cut]))
                    if cut < batch.count {
                        Thread.sleep(forTimeInterval: 0.002)
                        try client.send(bytes: Array(batch[cut...]))
                    }
                    for item in expected {
                        let response = try client.readResponse(isHead: item.isHead)
                        #expect(item.check(response), "\(item.label): \(response.status) \(response.headers)")
                        sent += 1
                    }
                }
                #expect(sent > 60)
            }
            #expect(lacquer.counters[.cacheHitFast] > 0)
        }
    }

    @Test("a head that arrives a few bytes at a time is answered once complete")
    func headInPieces() async throws {
        try await withLacquer { lacquer, port, _ async throws in
            try await runBlocking {
                _ = try httpGet(port: port, "/bytes/7?cc=max-age%3D60")
                let client = try RawHTTPClient(port: port)
                defer { client.close() }
                let bytes = RawHTTPClient.serialize("GET", "/bytes/7?cc=max-age%3D60")
                var index = 0
                while index < bytes.count {
                    let end = min(index + 5, bytes.count)
                    try client.send(bytes: Array(bytes[index..<end]))
                    index = end
                    Thread.sleep(forTimeInterval: 0.002)
                }
                let hit = try client.readResponse()
                #expect(hit.body.count == 7)
                #expect(hit.header("X-Cache-Status") == "HIT")
                #expect(lacquer.counters[.cacheHitFast] == 1)
            }
        }
    }

    @Test("a head still incomplete past 4 KiB goes to the decoder, which answers it")
    func longTrickledHead() async throws {
        try await withLacquer { lacquer, port, _ async throws in
            try await runBlocking {
                _ = try httpGet(port: port, "/bytes/3?cc=max-age%3D60")
                let client = try RawHTTPClient(port: port)
                defer { client.close() }
                try client.send("GET /bytes/3?cc=max-age%3D60 HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                Thread.sleep(forTimeInterval: 0.05)
                for _ in 0..<3 {
                    try client.send("User-Agent: " + String(repeating: "u", count: 2_000) + "\r\n")
                    Thread.sleep(forTimeInterval: 0.05)
                }
                try client.send("\r\n")
                let hit = try client.readResponse()
                #expect(hit.header("X-Cache-Status") == "HIT")
                #expect(hit.body.count == 3)
                #expect(lacquer.counters[.cacheHitFast] == 0)
                #expect(try client.request("GET", "/bytes/3?cc=max-age%3D60").body.count == 3)
                #expect(lacquer.counters[.cacheHitFast] == 0)
            }
        }
    }

    @Test("a request with a body hands the connection to the decoder; hits after it are still right")
    func bodyThenHits() async throws {
        try await withLacquer { lacquer, port, _ async throws in
            try await runBlocking {
                _ = try httpGet(port: port, "/bytes/8?cc=max-age%3D60")
                let client = try RawHTTPClient(port: port)
                defer { client.close() }
                #expect(try client.request("GET", "/bytes/8?cc=max-age%3D60").body.count == 8)
                #expect(lacquer.counters[.cacheHitFast] == 1)
                // The body is sent in the same write as the next request.
                try client.send(
                    bytes: RawHTTPClient.serialize("POST", "/upload?cc=no-store", headers: [("Content-Length", "5")]) + Array("hello".utf8)
                        + RawHTTPClient.serialize("GET", "/bytes/8?cc=max-age%3D60"))
                let upload = try client.readResponse()
                #expect(upload.bodyString.hasPrefix("bytes=5 "))
                let hit = try client.readResponse()
                #expect(hit.body.count == 8)
                #expect(hit.header("X-Cache-Status") == "HIT")
                #expect(lacquer.counters[.cacheHitFast] == 1)
                // A new connection gets the lane again.
                #expect(try httpGet(port: port, "/bytes/8?cc=max-age%3D60").body.count == 8)
                #expect(lacquer.counters[.cacheHitFast] == 2)
            }
        }
    }

    @Test("after a hit from the lane, the idle timeout and then the header timeout still apply")
    func timeoutsAfterLaneHits() async throws {
        try await withLacquer(configure: {
            $0.clientTimeouts.idle = .milliseconds(300)
            $0.clientTimeouts.header = .milliseconds(300)
        }) { lacquer, port, _ async throws in
            try await runBlocking {
                _ = try httpGet(port: port, "/bytes/4?cc=max-age%3D60")
                let idle = try RawHTTPClient(port: port, timeout: 5)
                defer { idle.close() }
                #expect(try idle.request("GET", "/bytes/4?cc=max-age%3D60").body.count == 4)
                _ = try idle.readToEOF()
                #expect(idle.isClosedByPeer)

                // A hit, then the start of another head in the same write: the header timer runs.
                let stalled = try RawHTTPClient(port: port, timeout: 5)
                defer { stalled.close() }
                try stalled.send(bytes: RawHTTPClient.serialize("GET", "/bytes/4?cc=max-age%3D60") + Array("GET /bytes/4 HTTP/1.1\r\nHo".utf8))
                #expect(try stalled.readResponse().body.count == 4)
                _ = try stalled.readToEOF()
                #expect(stalled.isClosedByPeer)
            }
            #expect(lacquer.counters[.cacheHitFast] == 2)
            #expect(lacquer.counters[.sessClosedIdle] == 1)
            #expect(lacquer.counters[.sessClosedTimeout] == 1)
        }
    }

    @Test("malformed bytes after hits are refused by the decoder as before")
    func malformedAfterHits() async throws {
        try await withLacquer { lacquer, port, _ async throws in
            try await runBlocking {
                _ = try httpGet(port: port, "/bytes/9?cc=max-age%3D60")
                let client = try RawHTTPClient(port: port)
                defer { client.close() }
                #expect(try client.request("GET", "/bytes/9?cc=max-age%3D60").body.count == 9)
                try client.send("GET /bytes/9 HTTP/1.1\r\nHost : 127.0.0.1\r\n\r\n")
                let refused = try client.readResponse()
                #expect(refused.status == 400)
                #expect(try client.readToEOF().isEmpty)
                #expect(lacquer.counters[.clientReq400] == 1)
            }
        }
    }

    @Test("the connection's last allowed request goes through the flow, says close and closes")
    func lastRequestCloses() async throws {
        try await withLacquer(configure: { $0.limits.requestsPerConnection = 3 }) { lacquer, port, _ async throws in
            try await runBlocking {
                _ = try httpGet(port: port, "/bytes/10?cc=max-age%3D60")
                let client = try RawHTTPClient(port: port)
                defer { client.close() }
                for _ in 0..<2 {
                    let hit = try client.request("GET", "/bytes/10?cc=max-age%3D60")
                    #expect(hit.header("Connection") == nil)
                }
                let last = try client.request("GET", "/bytes/10?cc=max-age%3D60")
                #expect(last.header("X-Cache-Status") == "HIT")
                #expect(last.header("Connection") == "close")
                #expect(try client.readToEOF().isEmpty)
                #expect(lacquer.counters[.cacheHitFast] == 2)
            }
        }
    }

    @Test("Vary on other fields, gzip for a client without gzip, and stale objects are left to the flow")
    func objectsTheLaneLeaves() async throws {
        try await withLacquer { lacquer, port, _ async throws in
            let varied = "/v?cc=max-age%3D60&vary=Accept-Language"
            _ = try httpGet(port: port, varied, headers: [("Accept-Language", "fr")])
            #expect(try httpGet(port: port, varied, headers: [("Accept-Language", "fr")]).header("X-Cache-Status") == "HIT")
            #expect(try httpGet(port: port, varied, headers: [("Accept-Language", "de")]).header("X-Cache-Status") == "MISS")
            let gzipped = "/g?cc=max-age%3D60&h=Content-Encoding:gzip&h=X-Note:1"
            _ = try httpGet(port: port, gzipped, headers: [("Accept-Encoding", "gzip")])
            let forIdentity = try httpGet(port: port, gzipped, headers: [("Accept-Encoding", "identity")])
            #expect(forIdentity.header("X-Cache-Status") == "HIT")
            #expect(lacquer.counters[.gzipCorrupt] == 1)  // the flow tried to gunzip the fixture's "gzip"
            let stale = "/s?cc=max-age%3D1,stale-while-revalidate%3D60"
            _ = try httpGet(port: port, stale)
            try await Task.sleep(for: .milliseconds(2_100))
            #expect(try httpGet(port: port, stale).header("X-Cache-Status") == "UPDATING")
            #expect(lacquer.counters[.cacheHitFast] == 0)
        }
    }

    @Test("Vary: Accept-Encoding selects the variant as the flow does; gzip goes as it is to a client that takes it")
    func acceptEncodingVariants() async throws {
        try await withLacquer { lacquer, port, origin async throws in
            let target = "/ae?cc=max-age%3D60&vary=Accept-Encoding"
            let gzip = [("Accept-Encoding", "gzip, deflate, br")]
            #expect(try httpGet(port: port, target, headers: gzip).header("X-Cache-Status") == "MISS")
            #expect(try httpGet(port: port, target, headers: [("Accept-Encoding", "br;q=1, GZIP;q=0.5")]).header("X-Cache-Status") == "HIT")
            #expect(lacquer.counters[.cacheHitFast] == 1)
            // No Accept-Encoding, or gzip refused: the identity variant, not stored yet.
            #expect(try httpGet(port: port, target).header("X-Cache-Status") == "MISS")
            #expect(lacquer.counters[.cacheHitFast] == 1)
            #expect(try httpGet(port: port, target).header("X-Cache-Status") == "HIT")
            let refused = try httpGet(port: port, target, headers: [("Accept-Encoding", "gzip;q=0, br")])
            #expect(refused.header("X-Cache-Status") == "HIT")
            #expect(refused.header("Vary") == "Accept-Encoding")
            #expect(lacquer.counters[.cacheHitFast] == 3)
            #expect(origin.requestCount(path: "/ae") == 2)

            // A gzip-coded object without Vary goes as it is to a client that takes gzip.
            let coded = "/gz?cc=max-age%3D60&h=Content-Encoding:gzip"
            _ = try httpGet(port: port, coded, headers: gzip)
            let hit = try httpGet(port: port, coded, headers: gzip)
            #expect(hit.header("X-Cache-Status") == "HIT")
            #expect(hit.header("Content-Encoding") == "gzip")
            #expect(lacquer.counters[.cacheHitFast] == 4)
            // Two Accept-Encoding lines: the flow combines them.
            let twoLines = try httpGet(port: port, coded, headers: [("Accept-Encoding", "br"), ("Accept-Encoding", "gzip")])
            #expect(twoLines.header("X-Cache-Status") == "HIT")
            #expect(lacquer.counters[.cacheHitFast] == 4)
        }
    }

    @Test("a ban and a configuration with vcl_deliver (also by reload) turn the lane off for the hits they concern")
    func bansAndConfiguration() async throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/site.vcl"
        try "vcl 4.1;\n".write(toFile: path, atomically: true, encoding: .utf8)
        try await withLacquer(configure: { configuration in
            configuration.vclPath = path
            configuration.vcl = try? VCLLoader.load(path: path, purgeACL: configuration.purgeACL)
        }) { lacquer, port, origin async throws in
            let admin = try #require(lacquer.adminAddress?.port)
            let target = "/b/1?cc=max-age%3D600"
            _ = try httpGet(port: port, target)
            #expect(try httpGet(port: port, target).header("X-Cache-Status") == "HIT")
            #expect(lacquer.counters[.cacheHitFast] == 1)
            #expect(try httpGet(port: admin, "/ban", method: "POST", body: "req.url ~ ^/b/").status == 200)
            #expect(try httpGet(port: port, target).header("X-Cache-Status") == "MISS")
            #expect(origin.requestCount(path: "/b/1") == 2)
            #expect(lacquer.counters[.cacheHitFast] == 1)

            try "vcl 4.1;\nsub vcl_deliver { set resp.http.X-Config = \"two\"; }\n".write(toFile: path, atomically: true, encoding: .utf8)
            #expect(try httpGet(port: admin, "/reload", method: "POST").status == 200)
            let hit = try httpGet(port: port, target)
            #expect(hit.header("X-Cache-Status") == "HIT")
            #expect(hit.header("X-Config") == "two")
        }
    }
}
