import CacheStore
import FixtureOrigin
import Foundation
import LacquerServer
import LacquerTesting
import Testing

/// Large objects in slices (nginx's slice module): stored slice by slice as they stream by,
/// served from the slices present, missing slices fetched with Range, a seek into an object not
/// stored yet fetching only the slice it needs, validators checked across slices, purges covering
/// the slices — over real sockets against the fixture origin (`ranges=1`: it serves byte ranges).
@Suite("Slices", .serialized, .timeLimit(.minutes(3)))
struct SliceTests {
    static let sliceSize = 256 << 10
    static let size = 3_000_000  // 12 slices, the last one 116,416 bytes
    static let path = "/bytes/\(size)"
    static let target = "\(path)?ranges=1&etag=v1&cc=max-age%3D600"

    /// 1 MiB threshold, 256 KiB slices; memory only unless `disk`.
    static func configure(disk: Bool) -> (inout ServerConfiguration) -> Void {
        { configuration in
            configuration.sliceThreshold = 1 << 20
            configuration.sliceSize = Self.sliceSize
            if !disk { configuration.diskBytes = 0 }
        }
    }

    static func range(_ index: Int) -> String {
        let first = index * sliceSize
        return "bytes=\(first)-\(min(first + sliceSize, size) - 1)"
    }

    /// Downloads `target` whole once and waits until its 12 slices are stored.
    static func download(_ lacquer: LacquerServer, _ port: Int, _ target: String) async throws {
        _ = try httpGet(port: port, target, timeout: 30)
        #expect(try await LacquerTesting.eventually(within: 5) { lacquer.counters[.slicesStored] == 12 })
    }

    /// Removes slice `index` of the test object from the memory tier.
    static func evict(_ lacquer: LacquerServer, slices: some Sequence<Int>) {
        let suffixes = slices.map { "slice \(sliceSize) \($0)" }
        lacquer.memory.removeAll { object in suffixes.contains { object.key.description.hasSuffix($0) } }
    }

    @Test("the first download of a large object is stored in slices as it streams by; hits and ranges come from them")
    func firstDownloadStoresSlices() async throws {
        try await withLacquer(configure: Self.configure(disk: false)) { lacquer, port, origin async throws in
            let pattern = FixtureOrigin.pattern(Self.size)
            let first = try httpGet(port: port, Self.target, timeout: 30)
            #expect(first.status == 200 && first.header("X-Cache-Status") == "MISS")
            #expect(first.body == pattern)
            #expect(try await LacquerTesting.eventually(within: 5) { lacquer.counters[.slicesStored] == 12 })
            #expect(lacquer.counters[.objectsStored] == 1, "one marker")
            let whole = try httpGet(port: port, Self.target, timeout: 30)
            #expect(whole.status == 200 && whole.header("X-Cache-Status") == "HIT")
            #expect(whole.header("Content-Length") == String(Self.size))
            #expect(whole.header("Content-Range") == nil, "the marker's geometry never reaches a client")
            #expect(whole.header("ETag") == "\"v1\"")
            #expect(whole.body == pattern)
            let part = try httpGet(port: port, Self.target, headers: [("Range", "bytes=262100-262199")])
            #expect(part.status == 206 && part.header("Content-Range") == "bytes 262100-262199/\(Self.size)")
            #expect(part.body == Array(pattern[262_100..<262_200]))
            let tail = try httpGet(port: port, Self.target, headers: [("Range", "bytes=-10")])
            #expect(tail.status == 206 && tail.body == Array(pattern[(Self.size - 10)...]))
            let multi = try httpGet(port: port, Self.target, headers: [("Range", "bytes=0-9,2999990-2999999")])
            #expect(multi.status == 206 && multi.header("Content-Type")?.hasPrefix("multipart/byteranges") == true)
            #expect(multi.bodyString.contains("Content-Range: bytes 2999990-2999999/\(Self.size)"))
            let head = try httpGet(port: port, Self.target, method: "HEAD")
            #expect(head.status == 200 && head.header("Content-Length") == String(Self.size) && head.body.isEmpty)
            let conditional = try httpGet(port: port, Self.target, headers: [("If-None-Match", "\"v1\"")])
            #expect(conditional.status == 304)
            let unsatisfiable = try httpGet(port: port, Self.target, headers: [("Range", "bytes=3000000-")])
            #expect(unsatisfiable.status == 416)
            #expect(origin.requestCount(path: Self.path) == 1)
        }
    }

    @Test("missing slices are fetched from the origin with Range, each once, and the rest come from the cache")
    func missingSlicesFetchedWithRange() async throws {
        try await withLacquer(configure: Self.configure(disk: false)) { lacquer, port, origin async throws in
            try await Self.download(lacquer, port, Self.target)
            Self.evict(lacquer, slices: [3, 4, 11])
            let whole = try httpGet(port: port, Self.target, timeout: 30)
            #expect(whole.status == 200 && whole.header("X-Cache-Status") == "HIT")
            #expect(whole.body == FixtureOrigin.pattern(Self.size))
            let ranges = origin.requests(path: Self.path).dropFirst().map { $0.header("Range") ?? "none" }
            #expect(ranges == [Self.range(3), Self.range(4), Self.range(11)])
            _ = try httpGet(port: port, Self.target, timeout: 30)
            #expect(origin.requestCount(path: Self.path) == 4, "the fetched slices were stored")
        }
    }

    @Test("a range past the first slice of an object not stored yet fetches only the slice it starts in")
    func seekIntoUncachedObject() async throws {
        try await withLacquer(configure: Self.configure(disk: false)) { lacquer, port, origin async throws in
            let pattern = FixtureOrigin.pattern(Self.size)
            let seek = try httpGet(port: port, Self.target, headers: [("Range", "bytes=2500000-2500099")])
            #expect(seek.status == 206 && seek.header("X-Cache-Status") == "MISS")
            #expect(seek.header("Content-Range") == "bytes 2500000-2500099/\(Self.size)")
            #expect(seek.body == Array(pattern[2_500_000..<2_500_100]))
            #expect(origin.requests(path: Self.path).map { $0.header("Range") } == [Self.range(9)])
            let start = try httpGet(port: port, Self.target, headers: [("Range", "bytes=0-99")])
            #expect(start.status == 206 && start.header("X-Cache-Status") == "HIT" && start.body == Array(pattern[0..<100]))
            #expect(origin.requests(path: Self.path).map { $0.header("Range") } == [Self.range(9), Self.range(0)])
            let whole = try httpGet(port: port, Self.target, timeout: 30)
            #expect(whole.status == 200 && whole.body == pattern)
            #expect(origin.requestCount(path: Self.path) == 12, "each slice was fetched once")
            #expect(lacquer.counters[.slicesStored] == 12)
        }
    }

    @Test("a seek into an object below the threshold fetches it whole after the first slice says its size")
    func seekIntoSmallObject() async throws {
        try await withLacquer(configure: Self.configure(disk: false)) { lacquer, port, origin async throws in
            let target = "/bytes/600000?ranges=1&etag=s&cc=max-age%3D600"
            let seek = try httpGet(port: port, target, headers: [("Range", "bytes=300000-300009")])
            #expect(seek.status == 206 && seek.body == Array(FixtureOrigin.pattern(600_000)[300_000..<300_010]))
            #expect(origin.requests(path: "/bytes/600000").map { $0.header("Range") } == ["bytes=262144-524287", nil])
            let again = try httpGet(port: port, target, headers: [("Range", "bytes=500000-500009")])
            #expect(again.status == 206 && again.header("X-Cache-Status") == "HIT")
            #expect(origin.requestCount(path: "/bytes/600000") == 2)
            #expect(lacquer.counters[.slicesStored] == 0)
        }
    }

    @Test("objects are not sliced without a strong validator or without Accept-Ranges")
    func notSlicedWithoutValidatorOrRanges() async throws {
        try await withLacquer(configure: Self.configure(disk: false)) { lacquer, port, _ async throws in
            for target in ["\(Self.path)?ranges=1&etag=W/%22w%22&cc=max-age%3D600", "\(Self.path)?etag=x&cc=max-age%3D600"] {
                let response = try httpGet(port: port, target, timeout: 30)
                #expect(response.status == 200 && response.body.count == Self.size)
            }
            #expect(lacquer.counters[.slicesStored] == 0)
        }
    }

    @Test("stored slices of an older version are fetched again; the response is whole and right")
    func olderSlicesFetchedAgain() async throws {
        try await withLacquer(configure: Self.configure(disk: false)) { lacquer, port, origin async throws in
            let target = "\(Self.path)?ranges=1&etag=v1&newetag=v2&cc=max-age%3D600"
            try await Self.download(lacquer, port, target)
            // A new version's first slice and marker replace the old ones (the client wanted
            // only its first bytes); slices 1 to 11 stay from version 1.
            lacquer.memory.removeAll { !$0.key.description.contains("slice") }
            let start = try httpGet(port: port, target, headers: [("Range", "bytes=0-99")])
            #expect(start.status == 206 && start.header("ETag") == "\"v2\"")
            #expect(try await LacquerTesting.eventually(within: 5) { lacquer.counters[.objectsStored] == 2 })
            let whole = try httpGet(port: port, target, timeout: 30)
            #expect(whole.status == 200 && whole.header("ETag") == "\"v2\"")
            #expect(whole.body == FixtureOrigin.pattern(Self.size))
            #expect(origin.requests(path: Self.path).dropFirst(2).map { $0.header("Range") } == (1..<12).map(Self.range))
            #expect(lacquer.counters[.slicesChanged] == 0)
            let again = try httpGet(port: port, target, timeout: 30)
            #expect(again.body == FixtureOrigin.pattern(Self.size))
            #expect(origin.requestCount(path: Self.path) == 13)
        }
    }

    @Test("concurrent readers of a sliced object with its slices missing: each slice is fetched once, every body is right")
    func concurrentReadersShareSliceFetches() async throws {
        try await withLacquer(configure: Self.configure(disk: false)) { lacquer, port, origin async throws in
            let target = "\(Self.path)?ranges=1&etag=v1&cc=max-age%3D600&delay=50"
            try await Self.download(lacquer, port, target)
            Self.evict(lacquer, slices: 0..<12)
            let bodies = try await withThrowingTaskGroup(of: [UInt8].self) { group in
                for _ in 0..<4 {
                    group.addTask { try await runBlocking { try httpGet(port: port, target, timeout: 30).body } }
                }
                var all: [[UInt8]] = []
                for try await body in group { all.append(body) }
                return all
            }
            #expect(bodies.count == 4 && bodies.allSatisfy { $0 == FixtureOrigin.pattern(Self.size) })
            #expect(origin.requestCount(path: Self.path) == 13, "each of the 12 slices fetched once")
            #expect(lacquer.counters[.coalescedWaiters] >= 1)
        }
    }

    @Test("a download larger than the memory tier keeps the hot small objects in memory: slices go in at the cold end")
    func largeDownloadKeepsHotObjects() async throws {
        try await withLacquer(configure: {
            Self.configure(disk: true)(&$0)
            $0.memoryBytes = 16 << 20
        }) { lacquer, port, origin async throws in
            let hot = (0..<20).map { "/hot/\($0)?cc=max-age%3D600" }
            for target in hot { _ = try httpGet(port: port, target) }
            let size = 40_000_000
            let large = try httpGet(port: port, "/bytes/\(size)?ranges=1&etag=big&cc=max-age%3D600", timeout: 60)
            #expect(large.status == 200 && large.body.count == size)
            #expect(lacquer.memory.stats.evictions > 0, "the download did not fill the memory tier")
            for target in hot {
                let again = try httpGet(port: port, target)
                #expect(again.header("X-Cache-Status") == "HIT" && again.header("Cache-Status")?.contains("disk") == false, "\(target)")
            }
            #expect(origin.requestCount(path: "/hot/0") == 1)
        }
    }

    @Test("a slice of a new version from the origin drops the sliced copy and cuts the response")
    func changedObjectDiscardsSlices() async throws {
        try await withLacquer(configure: Self.configure(disk: false)) { lacquer, port, origin async throws in
            let target = "\(Self.path)?ranges=1&etag=v1&newetag=v2&cc=max-age%3D600"
            try await Self.download(lacquer, port, target)
            Self.evict(lacquer, slices: [5])
            let client = try RawHTTPClient(port: port, timeout: 10)
            defer { client.close() }
            try client.send("GET \(target) HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            do {
                let response = try client.readResponse()
                Issue.record("a complete \(response.status) with \(response.body.count) bytes")
            } catch RawHTTPError.incompleteBody(let partial, _) {
                #expect(partial.status == 200)
                #expect(partial.body.count <= 5 * Self.sliceSize, "nothing past the changed slice")
                #expect(partial.body == Array(FixtureOrigin.pattern(Self.size)[0..<partial.body.count]))
            }
            #expect(lacquer.counters[.slicesChanged] == 1)
            // Slice 5 came from the origin in its new version: everything went.
            #expect(origin.requests(path: Self.path).dropFirst().map { $0.header("Range") } == [Self.range(5)])
            let fresh = try httpGet(port: port, target, timeout: 30)
            #expect(fresh.status == 200 && fresh.header("X-Cache-Status") == "MISS" && fresh.header("ETag") == "\"v2\"")
            #expect(fresh.body == FixtureOrigin.pattern(Self.size))
        }
    }

    @Test("an origin that fails inside a slice cuts the response; the slice is not stored")
    func originFailsInsideSlice() async throws {
        try await withLacquer(configure: Self.configure(disk: false)) { lacquer, port, origin async throws in
            let target = "\(Self.path)?ranges=1&etag=v1&rangefail=1&cc=max-age%3D600"
            try await Self.download(lacquer, port, target)
            Self.evict(lacquer, slices: [2])
            for attempt in 1...2 {
                let client = try RawHTTPClient(port: port, timeout: 10)
                defer { client.close() }
                // Slice 2 (524288-786431) is cut by the origin after 131,072 bytes, inside the range.
                try client.send("GET \(target) HTTP/1.1\r\nHost: 127.0.0.1\r\nRange: bytes=500000-700000\r\n\r\n")
                do {
                    let response = try client.readResponse()
                    Issue.record("attempt \(attempt): a complete \(response.status) with \(response.body.count) bytes")
                } catch RawHTTPError.incompleteBody(let partial, let expected) {
                    #expect(partial.status == 206 && expected == 200_001)
                    #expect(partial.body.count < 200_001)
                    #expect(partial.body == Array(FixtureOrigin.pattern(Self.size)[500_000..<(500_000 + partial.body.count)]))
                }
            }
            #expect(origin.requestCount(path: Self.path) == 3, "the cut slice was not stored: asked for again")
            #expect(lacquer.counters[.slicesStored] == 12)
        }
    }

    @Test("a client that leaves while a slice is fetched: the slice is still stored, the connection to the origin ends")
    func clientLeavesDuringSliceFetch() async throws {
        try await withLacquer(configure: Self.configure(disk: false)) { lacquer, port, origin async throws in
            try await Self.download(lacquer, port, Self.target)
            Self.evict(lacquer, slices: 1..<12)
            let client = try RawHTTPClient(port: port, timeout: 10)
            try client.send("GET \(Self.target) HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            let head = try client.readResponseHead()
            #expect(head.status == 200)
            client.reset()
            #expect(try await LacquerTesting.eventually(within: 10) { lacquer.counters[.slicesStored] >= 13 })
            let whole = try httpGet(port: port, Self.target, timeout: 30)
            #expect(whole.body == FixtureOrigin.pattern(Self.size))
            #expect(try await LacquerTesting.eventually(within: 5) { lacquer.counters[.slicesStored] == 23 })
            #expect(origin.requestCount(path: Self.path) <= 13, "each missing slice fetched at most once")
        }
    }

    @Test("PURGE of a sliced object removes the marker and every slice from both tiers, durably")
    func purgeRemovesSlices() async throws {
        try await withLacquer(configure: Self.configure(disk: true)) { lacquer, port, origin async throws in
            _ = try httpGet(port: port, Self.target, timeout: 30)
            #expect(try await waitForDiskWrites(lacquer, count: 13))
            #expect(lacquer.memory.stats.objects == 13)
            // Only the disk copy of the marker is left: the purge still finds the slices.
            lacquer.memory.removeAll { !$0.key.description.contains("slice") }
            let purge = try httpGet(port: port, Self.target, method: "PURGE")
            #expect(purge.status == 200 && purge.bodyString.contains("Purged 1 object"))
            #expect(lacquer.memory.stats.objects == 0)
            #expect(try await LacquerTesting.eventually(within: 5) { lacquer.diskStats?.objects == 0 })
            let again = try httpGet(port: port, Self.target, headers: [("Range", "bytes=100-199")])
            #expect(again.header("X-Cache-Status") == "MISS")
            #expect(origin.requestCount(path: Self.path) == 2)
        }
    }

    @Test("a sliced object comes back from disk after a restart, slice by slice")
    func slicesSurviveRestart() async throws {
        let storage = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: storage) }
        let configure: (inout ServerConfiguration) -> Void = {
            Self.configure(disk: true)(&$0)
            $0.storageDirectory = storage
        }
        try await withLacquer(configure: configure) { lacquer, port, _ async throws in
            _ = try httpGet(port: port, Self.target, timeout: 30)
            #expect(try await waitForDiskWrites(lacquer, count: 13))
        }
        try await withLacquer(configure: configure) { lacquer, port, origin async throws in
            let whole = try httpGet(port: port, Self.target, timeout: 30)
            #expect(whole.status == 200 && whole.header("Cache-Status")?.contains("detail=disk") == true)
            #expect(whole.body == FixtureOrigin.pattern(Self.size))
            #expect(origin.requestCount(path: Self.path) == 0)
            // The marker and 12 slices, some read twice when the walk caught up with its read-ahead.
            #expect(lacquer.counters[.diskHit] >= 13)
        }
    }

    @Test("a stale sliced object is revalidated: the marker and each slice with a conditional request, none refetched")
    func staleSlicesRevalidate() async throws {
        let clock = TestClock()
        try await withLacquer(configure: Self.configure(disk: false), clock: clock.now) { lacquer, port, origin async throws in
            let target = "\(Self.path)?ranges=1&etag=v1&nodate=1&cc=max-age%3D60"
            try await Self.download(lacquer, port, target)
            clock.advance(120)
            let whole = try httpGet(port: port, target, timeout: 30)
            #expect(whole.status == 200 && whole.header("X-Cache-Status") == "REVALIDATED")
            #expect(whole.body == FixtureOrigin.pattern(Self.size))
            let later = origin.requests(path: Self.path).dropFirst()
            #expect(later.count == 13, "the marker and 12 slices")
            #expect(later.allSatisfy { $0.header("If-None-Match") == "\"v1\"" })
            #expect(later.dropFirst().map { $0.header("Range") } == (0..<12).map(Self.range))
            let hit = try httpGet(port: port, target, timeout: 30)
            #expect(hit.header("X-Cache-Status") == "HIT" && hit.body == FixtureOrigin.pattern(Self.size))
            #expect(origin.requestCount(path: Self.path) == 14)
        }
    }

    @Test("random ranges over a sliced object with random slices missing all get the right bytes")
    func randomRangesAndEvictions() async throws {
        var random = SeededRandom(seed: SeededRandom.seed(fallback: UInt64.random(in: 1...UInt64.max)))
        print("SliceTests.randomRangesAndEvictions seed: \(random.seed)")
        try await withLacquer(configure: Self.configure(disk: false)) { lacquer, port, origin async throws in
            let pattern = FixtureOrigin.pattern(Self.size)
            try await Self.download(lacquer, port, Self.target)
            for round in 0..<40 {
                Self.evict(lacquer, slices: (0..<12).filter { _ in Int(random.next(upperBound: UInt64(4))) == 0 })
                let first = Int(random.next(upperBound: UInt64(Self.size)))
                let last = min(Self.size - 1, first + Int(random.next(upperBound: UInt64(3 * Self.sliceSize))))
                let response = try httpGet(port: port, Self.target, headers: [("Range", "bytes=\(first)-\(last)")], timeout: 30)
                #expect(response.status == 206, "round \(round) seed \(random.seed)")
                #expect(response.body == Array(pattern[first...last]), "round \(round) bytes=\(first)-\(last) seed \(random.seed)")
            }
            #expect(origin.openConnections <= 4)
        }
    }
}
