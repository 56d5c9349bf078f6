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

    @Test("a Range request that misses fetches the whole object (the origin never sees Range), then stores it")
    func rangeOnMiss() async throws {
        try await withLacquer { _, port, origin async throws in
            let target = "/bytes/200?cc=max-age%3D600"
            let first = try httpGet(port: port, target, headers: [("Range", "bytes=0-9")])
            #expect(first.status == 200)
            #expect(origin.requests(path: "/bytes/200").first?.header("Range") == nil)
            let second = try httpGet(port: port, target, headers: [("Range", "bytes=0-9")])
            #expect(second.status == 206)
            #expect(second.body == Array(FixtureOrigin.pattern(200)[0..<10]))
        }
    }

    @Test("a 206 from the origin is never stored as a whole")
    func partialFromOriginNotStored() async throws {
        try await withLacquer { _, port, origin async throws in
            let target = "/p206?status=206&cc=max-age%3D600&h=Content-Range%3Abytes+0-4%2F10&body=hello"
            _ = try httpGet(port: port, target)
            _ = try httpGet(port: port, target)
            #expect(origin.requestCount(path: "/p206") == 2)
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
