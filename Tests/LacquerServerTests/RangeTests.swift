import FixtureOrigin
import LacquerServer
import LacquerTesting
import Testing

/// Range requests (RFC 9110 §14) served from a stored complete 200, from memory and from disk.
@Suite("Ranges", .serialized, .timeLimit(.minutes(2)))
struct RangeTests {
    @Test("a single range of a stored object is a 206 with Content-Range")
    func singleRange() async throws {
        try await withLacquer { _, port, origin async throws in
            let target = "/bytes/1000?cc=max-age%3D600&etag=r"
            _ = try httpGet(port: port, target)
            let part = try httpGet(port: port, target, headers: [("Range", "bytes=100-199")])
            #expect(part.status == 206)
            #expect(part.header("X-Cache-Status") == "HIT")
            #expect(part.header("Content-Range") == "bytes 100-199/1000")
            #expect(part.header("Content-Length") == "100")
            #expect(part.body == Array(FixtureOrigin.pattern(1000)[100..<200]))
            let suffix = try httpGet(port: port, target, headers: [("Range", "bytes=-10")])
            #expect(suffix.status == 206)
            #expect(suffix.body == Array(FixtureOrigin.pattern(1000)[990..<1000]))
            let open = try httpGet(port: port, target, headers: [("Range", "bytes=995-")])
            #expect(open.header("Content-Range") == "bytes 995-999/1000")
            #expect(origin.requestCount(path: "/bytes/1000") == 1)
        }
    }

    @Test("several ascending ranges are a multipart/byteranges 206")
    func multipleRanges() async throws {
        try await withLacquer { _, port, _ async throws in
            let target = "/bytes/500?cc=max-age%3D600&h=Content-Type%3Atext%2Fplain"
            _ = try httpGet(port: port, target)
            let parts = try httpGet(port: port, target, headers: [("Range", "bytes=0-9,20-29")])
            #expect(parts.status == 206)
            let contentType = try #require(parts.header("Content-Type"))
            #expect(contentType.hasPrefix("multipart/byteranges; boundary="))
            let text = parts.bodyString
            #expect(text.contains("Content-Range: bytes 0-9/500"))
            #expect(text.contains("Content-Range: bytes 20-29/500"))
            #expect(text.contains("Content-Type: text/plain"))
            #expect(text.contains("abcdefghij"))
            #expect(text.contains("uvwxyzabcd"))
            #expect(Int(parts.header("Content-Length") ?? "") == parts.body.count)
            let overlapping = try httpGet(port: port, target, headers: [("Range", "bytes=0-99,50-149")])
            #expect(overlapping.status == 200)
            #expect(overlapping.body.count == 500)
        }
    }

    @Test("an unsatisfiable range is a 416 with bytes */length; a syntax error is ignored")
    func unsatisfiableAndInvalid() async throws {
        try await withLacquer { _, port, _ async throws in
            let target = "/bytes/100?cc=max-age%3D600"
            _ = try httpGet(port: port, target)
            let beyond = try httpGet(port: port, target, headers: [("Range", "bytes=5000-")])
            #expect(beyond.status == 416)
            #expect(beyond.header("Content-Range") == "bytes */100")
            let junk = try httpGet(port: port, target, headers: [("Range", "bytes=zz")])
            #expect(junk.status == 200)
            #expect(junk.body.count == 100)
        }
    }

    @Test("If-Range: a matching validator gets the range, another gets the whole object")
    func ifRange() async throws {
        try await withLacquer { _, port, _ async throws in
            let target = "/bytes/300?cc=max-age%3D600&etag=v7"
            _ = try httpGet(port: port, target)
            let match = try httpGet(port: port, target, headers: [("Range", "bytes=0-9"), ("If-Range", "\"v7\"")])
            #expect(match.status == 206)
            let stale = try httpGet(port: port, target, headers: [("Range", "bytes=0-9"), ("If-Range", "\"v6\"")])
            #expect(stale.status == 200)
            #expect(stale.body.count == 300)
        }
    }

    @Test("a Range request that misses gets a 206 of its range while the whole object is fetched (the origin never sees Range) and stored")
    func rangeOnMiss() async throws {
        try await withLacquer { lacquer, port, origin async throws in
            let size = 5 * 1024 * 1024
            let target = "/bytes/\(size)?cc=max-age%3D600"
            let first = try httpGet(port: port, target, headers: [("Range", "bytes=100-199")], timeout: 30)
            #expect(first.status == 206)
            #expect(first.header("X-Cache-Status") == "MISS")
            #expect(first.header("Content-Range") == "bytes 100-199/\(size)")
            #expect(first.header("Content-Length") == "100")
            #expect(first.body == Array(FixtureOrigin.pattern(size)[100..<200]))
            #expect(origin.requests(path: "/bytes/\(size)").first?.header("Range") == nil)
            #expect(try await eventually(within: 20) { lacquer.counters[.diskStored] >= 1 })
            let second = try httpGet(port: port, target, headers: [("Range", "bytes=5000000-5000009")], timeout: 30)
            #expect(second.status == 206 && second.header("X-Cache-Status") == "HIT")
            #expect(second.body == Array(FixtureOrigin.pattern(size)[5_000_000..<5_000_010]))
            #expect(origin.requestCount(path: "/bytes/\(size)") == 1)
        }
    }

    @Test("on a miss: a suffix range, several ranges as multipart, an unsatisfiable range (416), an If-Range that does not match (200), unknown length (200)")
    func rangeKindsOnMiss() async throws {
        try await withLacquer { lacquer, port, origin async throws in
            let body = FixtureOrigin.pattern(1000)
            let suffix = try httpGet(port: port, "/m1/bytes?size=1000&cc=max-age%3D600", headers: [("Range", "bytes=-10")])
            #expect(suffix.status == 206 && suffix.body == Array(body[990..<1000]))
            #expect(suffix.header("Content-Range") == "bytes 990-999/1000")

            let multi = try httpGet(port: port, "/m2?size=1000&cc=max-age%3D600", headers: [("Range", "bytes=0-4,500-509")])
            #expect(multi.status == 206)
            let contentType = try #require(multi.header("Content-Type"))
            #expect(contentType.hasPrefix("multipart/byteranges; boundary="))
            let text = String(decoding: multi.body, as: UTF8.self)
            #expect(text.contains("Content-Range: bytes 0-4/1000\r\n\r\nabcde"))
            #expect(text.contains("Content-Range: bytes 500-509/1000\r\n\r\n" + String(decoding: body[500..<510], as: UTF8.self)))
            #expect(multi.header("Content-Length") == String(multi.body.count))
            // The stored copy answers the same ranges the same way.
            let again = try httpGet(port: port, "/m2?size=1000&cc=max-age%3D600", headers: [("Range", "bytes=0-4,500-509")])
            #expect(again.header("X-Cache-Status") == "HIT" && again.body.count == multi.body.count)

            let beyond = try httpGet(port: port, "/m3?size=1000&cc=max-age%3D600", headers: [("Range", "bytes=5000-")])
            #expect(beyond.status == 416 && beyond.header("Content-Range") == "bytes */1000" && beyond.body.isEmpty)
            let stored = try httpGet(port: port, "/m3?size=1000&cc=max-age%3D600")
            #expect(stored.header("X-Cache-Status") == "HIT" && stored.body.count == 1000, "the 416 still stored the object")

            let ifRange = try httpGet(
                port: port, "/m4?size=1000&cc=max-age%3D600&etag=v2", headers: [("Range", "bytes=0-9"), ("If-Range", "\"v1\"")])
            #expect(ifRange.status == 200 && ifRange.body.count == 1000)

            let chunked = try httpGet(port: port, "/m5?size=1000&cc=max-age%3D600&chunked=1", headers: [("Range", "bytes=0-9")])
            #expect(chunked.status == 200 && chunked.body == body, "without a length the whole 200 (RFC 9110 §14.2)")
            #expect(origin.requestCount(path: "/m2") == 1 && origin.requestCount(path: "/m3") == 1)
        }
    }

    @Test("a range that ends before the fill does: the response ends, the connection serves the next request, the fill is stored")
    func rangeEndsBeforeFill() async throws {
        try await withLacquer { lacquer, port, origin async throws in
            // 100,000 bytes in 10 pieces 150 ms apart: the first 10 bytes are in the first piece.
            let target = "/slowbody/100000/150?cc=max-age%3D600"
            let client = try RawHTTPClient(port: port, timeout: 10)
            defer { client.close() }
            let started = ContinuousClock.now
            let part = try client.request("GET", target, headers: [("Range", "bytes=0-9")])
            #expect(part.status == 206 && part.body == Array(FixtureOrigin.pattern(100_000)[0..<10]))
            #expect(ContinuousClock.now - started < .milliseconds(1200), "the 206 did not wait for the whole fill")
            let next = try client.request("GET", "/other?cc=max-age%3D600")
            #expect(next.status == 200 && next.body == Array("ok /other\n".utf8))
            #expect(try await eventually(within: 10) { lacquer.counters[.objectsStored] >= 2 })
            let whole = try httpGet(port: port, target)
            #expect(whole.header("X-Cache-Status") == "HIT" && whole.body == FixtureOrigin.pattern(100_000))
            #expect(origin.requestCount(path: "/slowbody/100000/150") == 1)
        }
    }

    @Test("a request that waits on a fill gets its range of it")
    func rangeWhileWaiting() async throws {
        try await withLacquer { _, port, origin async throws in
            // 10 pieces 200 ms apart: the fill takes about 2 s. The range is asked for once the
            // fill has reached the origin (not after a fixed sleep, which a loaded machine overruns).
            let target = "/slowbody/20000/200?cc=max-age%3D600"
            async let whole = runBlocking { try httpGet(port: port, target) }
            #expect(try await eventually(within: 10) { origin.requestCount(path: "/slowbody/20000/200") == 1 })
            let part = try await runBlocking { try httpGet(port: port, target, headers: [("Range", "bytes=15000-15009")]) }
            #expect(part.status == 206 && part.header("Content-Range") == "bytes 15000-15009/20000")
            #expect(part.header("Cache-Status")?.contains("collapsed") == true, "\(part.header("Cache-Status") ?? "")")
            #expect(part.body == Array(FixtureOrigin.pattern(20000)[15000..<15010]))
            #expect(try await whole.body == FixtureOrigin.pattern(20000))
            #expect(origin.requestCount(path: "/slowbody/20000/200") == 1)
        }
    }

    @Test("a range of an answer nobody stores or waits for lets the origin go once the range is sent")
    func rangeOfUncacheable() async throws {
        try await withLacquer { _, port, origin async throws in
            // 3 s of body; the range is in its first piece.
            let uncacheable = try httpGet(port: port, "/slowbody/200000/300?cc=no-store", headers: [("Range", "bytes=0-9")])
            #expect(uncacheable.status == 206 && uncacheable.body == Array(FixtureOrigin.pattern(200000)[0..<10]))
            // A finished exchange would keep its connection in the pool; an abandoned one is closed.
            #expect(try await eventually(within: 2) { origin.openConnections == 0 })
        }
    }

    @Test("a range on a miss whose origin fails inside it is cut, never a clean 206, and nothing is stored")
    func rangeOnMissOriginFails() async throws {
        try await withLacquer { _, port, origin async throws in
            // The origin announces 200,000 bytes and closes after 100,000.
            let target = "/truncate/200000?cc=max-age%3D600"
            let client = try RawHTTPClient(port: port, timeout: 10)
            defer { client.close() }
            try client.send("GET \(target) HTTP/1.1\r\nHost: 127.0.0.1\r\nRange: bytes=1000-150000\r\n\r\n")
            do {
                let response = try client.readResponse()
                Issue.record("a complete \(response.status) with \(response.body.count) bytes")
            } catch RawHTTPError.incompleteBody(let partial, let expected) {
                #expect(partial.status == 206 && expected == 149_001)
                #expect(partial.body == Array(FixtureOrigin.pattern(200_000)[1000..<(1000 + partial.body.count)]))
                #expect(partial.body.count < 99_001)
            }
            // Not stored: the next request goes to the origin again (and is cut again).
            _ = try? httpGet(port: port, target)
            #expect(origin.requestCount(path: "/truncate/200000") == 2, "the cut fill was not stored")
        }
    }

    @Test("a client that leaves in the middle of its range on a miss: the fill goes on and is stored")
    func rangeOnMissClientLeaves() async throws {
        try await withLacquer { lacquer, port, origin async throws in
            let target = "/slowbody/300000/100?cc=max-age%3D600"
            let client = try RawHTTPClient(port: port, timeout: 10)
            try client.send("GET \(target) HTTP/1.1\r\nHost: 127.0.0.1\r\nRange: bytes=0-250000\r\n\r\n")
            let head = try client.readResponseHead()
            #expect(head.status == 206)
            client.reset()
            #expect(try await eventually(within: 10) { lacquer.counters[.objectsStored] >= 1 })
            let whole = try httpGet(port: port, target)
            #expect(whole.header("X-Cache-Status") == "HIT" && whole.body == FixtureOrigin.pattern(300_000))
            #expect(origin.requestCount(path: "/slowbody/300000/100") == 1)
        }
    }


    @Test("a 206 from the origin is stored as the part it is (RFC 9111 §3.3): Range requests inside it are HITs, others go to the origin")
    func partialFromOriginStoredAsPart() async throws {
        try await withLacquer { lacquer, port, origin async throws in
            // The cache-tests "partial" cases: the origin answers 206 bytes 4-9/10 whatever it is asked.
            let target = "/p206?status=206&cc=max-age%3D600&h=Content-Range%3Abytes+4-9%2F10&body=012345"
            let first = try httpGet(port: port, target, headers: [("Range", "bytes=-6")])
            #expect(first.status == 206 && first.bodyString == "012345")
            for (range, body, contentRange) in [
                ("bytes=-5", "12345", "bytes 5-9/10"), ("bytes=6-8", "234", "bytes 6-8/10"), ("bytes=6-", "2345", "bytes 6-9/10"),
                ("bytes=-1", "5", "bytes 9-9/10"), ("bytes=4-9", "012345", "bytes 4-9/10"),
            ] {
                let part = try httpGet(port: port, target, headers: [("Range", range)])
                #expect(part.status == 206 && part.header("X-Cache-Status") == "HIT", "\(range)")
                #expect(part.bodyString == body && part.header("Content-Range") == contentRange, "\(range)")
            }
            let multi = try httpGet(port: port, target, headers: [("Range", "bytes=4-5,8-9")])
            #expect(multi.status == 206 && multi.header("X-Cache-Status") == "HIT" && multi.bodyString.contains("Content-Range: bytes 8-9/10"))
            #expect(origin.requestCount(path: "/p206") == 1)
            // Outside the part, or no Range at all: the origin is asked.
            let outside = try httpGet(port: port, target, headers: [("Range", "bytes=0-5")])
            #expect(outside.header("X-Cache-Status") == "MISS")
            // Its fill may still be storing after the answer went out: a request now would join it.
            #expect(try await LacquerTesting.eventually { lacquer.stats.fetches.first { $0.name == "in_flight" }?.value == 0 })
            let whole = try httpGet(port: port, target)
            #expect(whole.header("X-Cache-Status") == "MISS")
            #expect(origin.requestCount(path: "/p206") == 3)
            // A 206 whose body does not match its Content-Range is not stored.
            let wrong = "/p206bad?status=206&cc=max-age%3D600&h=Content-Range%3Abytes+0-3%2F10&body=hello"
            _ = try httpGet(port: port, wrong, headers: [("Range", "bytes=0-3")])
            _ = try httpGet(port: port, wrong, headers: [("Range", "bytes=0-3")])
            #expect(origin.requestCount(path: "/p206bad") == 2)
        }
    }

    @Test("a single range of a large object streams from disk")
    func rangeFromDisk() async throws {
        try await withLacquer { lacquer, port, _ async throws in
            let size = 2 << 20
            let target = "/bytes/\(size)?cc=max-age%3D600"
            _ = try httpGet(port: port, target, timeout: 30)
            for _ in 0..<500 where lacquer.counters[.diskStored] < 1 {
                try await Task.sleep(for: .milliseconds(10))
            }
            let part = try httpGet(port: port, target, headers: [("Range", "bytes=1500000-1500099")])
            #expect(part.status == 206)
            #expect(part.header("Cache-Status")?.contains("detail=disk") == true)
            #expect(part.body == Array(FixtureOrigin.pattern(size)[1_500_000..<1_500_100]))
        }
    }
}
