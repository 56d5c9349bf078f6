@testable import CacheStore
import NIOCore
import NIOHTTP1
import Testing

/// The memory tier's surrogate key index: what a purge by key finds, kept exact through
/// eviction, replacement, removal and soft-purge copies; and where the key fields are stored.
@Suite("Surrogate key index")
struct SurrogateKeyIndexTests {
    private func object(_ target: String, keys: String?, field: String = "xkey", ttl: Double = 600, hidden: SurrogateKeyFields = .standard) -> StoredObject {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "text/plain")
        if let keys { headers.add(name: field, value: keys) }
        return StoredObject(
            key: CacheKey(host: "example.test", target: target), variant: "", varyNames: [], status: 200, reason: "OK",
            headers: headers, body: ByteBuffer(string: "body of \(target)"), requestTime: 100, responseTime: 100,
            origin: 100, ttl: ttl, grace: 0, keep: 0, mustRevalidate: false, hiddenFields: hidden)
    }

    @Test("keys are read from every configured field, space- or comma-separated, repeats once")
    func parsing() {
        let object = self.object("/a", keys: "a b,c  a")
        #expect(object.surrogateKeys(.standard) == ["a", "b", "c"])
        #expect(self.object("/b", keys: "x, y", field: "Cache-Tag").surrogateKeys(.standard) == ["x", "y"])
        #expect(self.object("/c", keys: "x", field: "X-Tags").surrogateKeys(.standard) == [])
        #expect(self.object("/c", keys: "x", field: "X-Tags").surrogateKeys(SurrogateKeyFields(names: ["x-tags"], hidden: true)) == ["x"])
        #expect(SurrogateKeyFields.split(String(repeating: "k", count: 300) + " ok") == ["ok"])
    }

    @Test("hidden key fields stay in the stored headers but out of what a plain hit copies")
    func hiddenFromPlainDelivery() {
        let hidden = self.object("/h", keys: "k1")
        var plain = ByteBuffer()
        hidden.writePlainFields(into: &plain)
        #expect(!String(buffer: plain).lowercased().contains("xkey"))
        #expect(hidden.headers.first(name: "xkey") == "k1")
        #expect(hidden.plainDeliverable)
        let shown = self.object("/s", keys: "k1", hidden: SurrogateKeyFields(names: ["xkey"], hidden: false))
        var shownPlain = ByteBuffer()
        shown.writePlainFields(into: &shownPlain)
        #expect(String(buffer: shownPlain).contains("xkey: k1"))
    }

    @Test("the index finds exactly the tagged objects, through replacement, removal, soft copies and eviction")
    func indexStaysExact() throws {
        let tier = MemoryTier(capacityBytes: 64 * 1024, shardCount: 2, surrogateKeyFields: .standard)
        var tagged: [StoredObject] = []
        for index in 0..<20 {
            let object = self.object("/t/\(index)", keys: index % 2 == 0 ? "even all" : "odd all")
            tier.insert(object)
            tagged.append(object)
        }
        tier.insert(self.object("/untagged", keys: nil))
        #expect(tier.objects(withSurrogateKeys: ["even"]).count == 10)
        #expect(tier.objects(withSurrogateKeys: ["even", "odd"]).count == 20)
        #expect(tier.objects(withSurrogateKeys: ["all"]).count == 20)
        // A newer copy of /t/0 without keys replaces the tagged one.
        tier.insert(self.object("/t/0", keys: nil))
        #expect(tier.objects(withSurrogateKeys: ["even"]).count == 9)
        #expect(tier.remove(tagged[2]))
        #expect(tier.objects(withSurrogateKeys: ["even"]).count == 8)
        // A soft copy takes the original's place and keys.
        let original = tagged[4]
        let copy = try #require(original.softPurged(at: 200, minimumGrace: 10, hiddenFields: .standard))
        #expect(copy.remainingTTL(at: 200) <= 0 && copy.grace == 10)
        #expect(tier.replace(original, with: copy))
        #expect(tier.objects(withSurrogateKeys: ["even"]).contains { $0 === copy })
        #expect(!tier.objects(withSurrogateKeys: ["even"]).contains { $0 === original })
        #expect(tier.consistencyProblem() == nil)
        // Fill the tier: evictions unindex what they drop.
        for index in 0..<400 {
            tier.insert(self.object("/fill/\(index)", keys: "fill"))
        }
        #expect(tier.consistencyProblem() == nil)
        #expect(tier.objects(withSurrogateKeys: ["fill"]).count == tier.stats.objects - tier.objects(withSurrogateKeys: ["all"]).count - (tier.variants(for: CacheKey(host: "example.test", target: "/untagged")).count + tier.variants(for: CacheKey(host: "example.test", target: "/t/0")).count))
    }
}

@Suite("Disk tier surrogate keys and soft purge")
struct DiskTierSurrogateKeyTests {
    private func tagged(_ target: String, keys: String) -> StoredObject {
        StoredObject(
            key: CacheKey(host: "example.com", target: target), variant: "", varyNames: [], status: 200, reason: "OK",
            headers: HTTPHeaders([("Content-Type", "text/plain"), ("Surrogate-Key", keys)]), body: ByteBuffer(string: target),
            requestTime: 1_000, responseTime: 1_000, origin: 1_000, ttl: 300, grace: 0, keep: 20, mustRevalidate: false,
            hiddenFields: .standard)
    }

    @Test("keys are indexed with each row, survive a reopen, and go with the row; soft purge makes rows stale")
    func keysAndSoftPurge() throws {
        let dir = try DiskTestDirectory()
        var configuration = DiskTier.Configuration(directory: dir.path, freeSpaceFloor: 0)
        configuration.surrogateKeyFields = .standard
        do {
            let tier = try DiskTier(configuration: configuration)
            for index in 0..<6 {
                try tier.store(self.tagged("/d/\(index)", keys: index < 3 ? "low all" : "high all"))
            }
            tier.close()
        }
        let tier = try DiskTier(configuration: configuration)
        defer { tier.close() }
        #expect(try tier.recordTagPurge(["low"], time: 1_050) == 3)
        #expect(try tier.continueTagPurge(DiskTier.TagPurge(tag: "low", time: 1_050), limit: 10) == 3)
        #expect(try tier.recordTagPurge(["low"], time: 1_050) == 0)
        #expect(try tier.lookup(CacheKey(host: "example.com", target: "/d/0")).isEmpty)
        // Soft: the rows stay, stale from `now`, with the minimum grace.
        let soft = DiskTier.TagPurge(tag: "high", time: 1_100, soft: true, grace: 10)
        #expect(try tier.recordTagPurge(["high"], time: 1_100, soft: true, minimumGrace: 10) == 3)
        #expect(try tier.continueTagPurge(soft, limit: 2) == 2)
        #expect(try tier.storedTagPurges().contains(soft))
        #expect(try tier.continueTagPurge(soft, limit: 2) == 1)
        #expect(try !tier.storedTagPurges().contains(soft))
        let head = try #require(try tier.lookup(CacheKey(host: "example.com", target: "/d/4")).first)
        #expect(head.origin + head.ttl == 1_100)
        #expect(head.grace == 10)
        #expect(head.softPurged)
        #expect(try tier.load(head).softPurged, "a copy loaded for memory says so too")
        #expect(
            try tier.continueTagPurge(DiskTier.TagPurge(tag: "high", time: 1_200, soft: true, grace: 10), limit: 10) == 0,
            "already stale rows are left alone")
        #expect(try tier.softPurge(key: CacheKey(host: "example.com", target: "/d/5"), now: 1_300, minimumGrace: 0) == 0)
        #expect(try tier.lookup(CacheKey(host: "example.com", target: "/d/0")).allSatisfy { !$0.softPurged })
        // Replacing an object drops its old keys with its row.
        try tier.store(self.tagged("/d/4", keys: "other"))
        #expect(try tier.continueTagPurge(DiskTier.TagPurge(tag: "all", time: 2_000), limit: 10) == 2)  // /d/3, /d/5: /d/4 lost "all"
        #expect(try tier.continueTagPurge(DiskTier.TagPurge(tag: "other", time: 2_000), limit: 10) == 1)
    }

    @Test("a recorded purge by key counts the tagged objects, is kept until carried out in batches, and spares later objects")
    func recordedPurgeIsCarriedOut() throws {
        let dir = try DiskTestDirectory()
        var configuration = DiskTier.Configuration(directory: dir.path, freeSpaceFloor: 0)
        configuration.surrogateKeyFields = .standard
        do {
            let tier = try DiskTier(configuration: configuration)
            for index in 0..<7 {
                try tier.store(self.tagged("/r/\(index)", keys: "batch"))
            }
            #expect(try tier.recordTagPurge(["batch", "nothing"], time: 1_050) == 7)
            // A copy received after the purge is new content: it stays.
            let later = StoredObject(
                key: CacheKey(host: "example.com", target: "/r/later"), variant: "", varyNames: [], status: 200, reason: "OK",
                headers: HTTPHeaders([("xkey", "batch")]), body: ByteBuffer(string: "later"), requestTime: 1_100,
                responseTime: 1_100, origin: 1_100, ttl: 300, grace: 0, keep: 0, mustRevalidate: false)
            try tier.store(later)
            #expect(try tier.continueTagPurge(DiskTier.TagPurge(tag: "batch", time: 1_050), limit: 3) == 3)
            tier.close()  // "crash" between batches: the record is still there
        }
        let tier = try DiskTier(configuration: configuration)
        defer { tier.close() }
        let pending = try tier.storedTagPurges()
        #expect(Set(pending.map(\.tag)) == ["batch", "nothing"])
        let batch = DiskTier.TagPurge(tag: "batch", time: 1_050)
        #expect(try tier.continueTagPurge(batch, limit: 3) == 3)
        #expect(try tier.continueTagPurge(batch, limit: 3) == 1)
        #expect(try tier.continueTagPurge(DiskTier.TagPurge(tag: "nothing", time: 1_050), limit: 3) == 0)
        #expect(try tier.storedTagPurges().isEmpty)
        #expect(try tier.lookup(CacheKey(host: "example.com", target: "/r/later")).count == 1)
        #expect(try tier.lookup(CacheKey(host: "example.com", target: "/r/0")).isEmpty)
    }
}
