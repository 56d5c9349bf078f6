@testable import CacheStore
import NIOCore
import NIOHTTP1
import Testing

/// A stored object under `key` that costs exactly `cost` bytes and may be dropped after `expires`.
private func makeObject(
    _ key: CacheKey,
    variant: String = "",
    cost: Int = 1024,
    expires: Double = 1_000_000
) -> StoredObject {
    // No fields: one byte for their size as lines (`StoredObject.wire`), then the body.
    let bodyBytes = cost - StoredObject.overhead - variant.utf8.count - 1
    precondition(bodyBytes >= 0, "cost \(cost) too small for a test object")
    let object = StoredObject(
        key: key,
        variant: variant,
        varyNames: variant.isEmpty ? [] : ["accept-encoding"],
        status: 200,
        reason: "OK",
        headers: HTTPHeaders(),
        body: ByteBuffer(repeating: UInt8(ascii: "x"), count: bodyBytes),
        requestTime: 0,
        responseTime: 0,
        origin: 0,
        ttl: expires,
        grace: 0,
        keep: 0,
        mustRevalidate: false
    )
    precondition(object.cost == cost)
    return object
}

private func key(_ target: String, host: String = "example.test") -> CacheKey {
    CacheKey(host: host, target: target)
}

/// Identity comparison of two object lists, in order.
private func same(_ lhs: [StoredObject], _ rhs: [StoredObject]) -> Bool {
    lhs.count == rhs.count && zip(lhs, rhs).allSatisfy { $0 === $1 }
}

@Suite("MemoryTier")
struct MemoryTierTests {
    @Test("an inserted object is found under its key; another key misses")
    func insertThenVariants() {
        let tier = MemoryTier(capacityBytes: 1 << 20)
        let object = makeObject(key("/a"), cost: 2000)
        #expect(tier.insert(object))
        #expect(same(tier.variants(for: key("/a")), [object]))
        #expect(tier.variants(for: key("/a", host: "other.test")).isEmpty)
        #expect(tier.variants(for: key("/b")).isEmpty)
        let stats = tier.stats
        #expect(stats.objects == 1)
        #expect(stats.bytes == 2000)
        #expect(stats.capacityBytes == 1 << 20)
        #expect(stats.inserts == 1)
        #expect(stats.hits == 1)
        #expect(stats.misses == 2)
        #expect(stats.evictions == 0)
        #expect(tier.consistencyProblem() == nil)
    }

    @Test("selectVariant picks the newest matching variant, stops at an unknown one, and counts only a served hit")
    func selectVariant() {
        let tier = MemoryTier(capacityBytes: 1 << 20)
        let k = key("/sel")
        func object(_ variant: String, responseTime: Double) -> StoredObject {
            StoredObject(
                key: k, variant: variant, varyNames: variant.isEmpty ? [] : ["accept-encoding"], status: 200, reason: "OK",
                headers: HTTPHeaders(), body: ByteBuffer(string: variant), requestTime: 0, responseTime: responseTime,
                origin: 0, ttl: 60, grace: 0, keep: 0, mustRevalidate: false)
        }
        let plain = object("", responseTime: 10)
        let gzip = object("gzip", responseTime: 20)
        let identity = object("identity", responseTime: 30)
        tier.insert(plain)
        tier.insert(gzip)
        tier.insert(identity)
        let hitsBefore = tier.stats.hits
        // Both the unvaried copy and the gzip variant match: the newer one wins.
        #expect(tier.selectVariant(for: k, matching: { $0.variant == "identity" ? .differs : .matches }, servable: { _ in true }) === gzip)
        #expect(same(tier.variants(for: k), [gzip, identity, plain]))  // and it became the most recently used
        #expect(tier.selectVariant(for: k, matching: { _ in .matches }, servable: { _ in false }) == nil)
        #expect(tier.selectVariant(for: k, matching: { $0 === plain ? .unknown : .matches }, servable: { _ in true }) == nil)
        #expect(tier.selectVariant(for: k, matching: { _ in .differs }, servable: { _ in true }) == nil)
        #expect(tier.selectVariant(for: key("/none"), matching: { _ in .matches }, servable: { _ in true }) == nil)
        #expect(tier.stats.hits == hitsBefore + 2)  // the selection and the variants(for:) above
        #expect(tier.consistencyProblem() == nil)
    }

    @Test("two keys whose digests collide never see each other's objects")
    func digestCollision() {
        let tier = MemoryTier(capacityBytes: 1 << 20)
        let first = CacheKey(canonical: "/one\u{0}example.test", digest: 42)
        let second = CacheKey(canonical: "/two\u{0}example.test", digest: 42)
        let a = makeObject(first)
        let b = makeObject(second)
        let bGzip = makeObject(second, variant: "gzip")
        tier.insert(a)
        tier.insert(b)
        tier.insert(bGzip)
        #expect(same(tier.variants(for: first), [a]))
        #expect(same(tier.variants(for: second), [bGzip, b]))
        // `first`'s object is selected though its digest's list holds three.
        #expect(tier.selectVariant(for: first, matching: { _ in .matches }, servable: { _ in true }) === a)
        #expect(tier.variants(for: CacheKey(canonical: "/three\u{0}example.test", digest: 42)).isEmpty)
        // Replacing `first`'s object does not touch `second`'s of the same (empty) variant.
        let a2 = makeObject(first)
        tier.insert(a2)
        #expect(same(tier.variants(for: first), [a2]))
        #expect(same(tier.variants(for: second), [bGzip, b]))
        #expect(tier.consistencyProblem() == nil)
        #expect(same(tier.remove(key: second), [bGzip, b]))
        #expect(same(tier.variants(for: first), [a2]))
        #expect(tier.selectVariant(for: first, matching: { _ in .matches }, servable: { _ in true }) === a2)
        #expect(tier.stats.objects == 1)
        #expect(tier.consistencyProblem() == nil)
    }

    @Test("variants come most recently used first, and touch reorders them")
    func variantsInRecencyOrder() {
        let tier = MemoryTier(capacityBytes: 1 << 20)
        let gzip = makeObject(key("/a"), variant: "gzip")
        let identity = makeObject(key("/a"), variant: "identity")
        tier.insert(gzip)
        tier.insert(identity)
        #expect(same(tier.variants(for: key("/a")), [identity, gzip]))
        tier.touch(gzip)
        #expect(same(tier.variants(for: key("/a")), [gzip, identity]))
        #expect(tier.consistencyProblem() == nil)
    }

    @Test("inserting the same key and variant replaces the stored object")
    func replacesSameVariant() {
        let tier = MemoryTier(capacityBytes: 1 << 20)
        let old = makeObject(key("/a"), variant: "gzip", cost: 3000)
        let other = makeObject(key("/a"), variant: "identity", cost: 1000)
        let new = makeObject(key("/a"), variant: "gzip", cost: 2000)
        tier.insert(old)
        tier.insert(other)
        tier.insert(new)
        #expect(same(tier.variants(for: key("/a")), [new, other]))
        var stats = tier.stats
        #expect(stats.objects == 2)
        #expect(stats.bytes == 3000)
        #expect(stats.inserts == 3)
        #expect(stats.evictions == 0)
        #expect(!tier.remove(old))
        // The same instance again is a replacement too, not a duplicate.
        tier.insert(new)
        #expect(same(tier.variants(for: key("/a")), [new, other]))
        stats = tier.stats
        #expect(stats.objects == 2)
        #expect(stats.bytes == 3000)
        #expect(tier.consistencyProblem() == nil)
    }

    @Test("many inserts never exceed the byte budget")
    func byteBudgetRespected() {
        let capacity = 64 * 1024
        let tier = MemoryTier(capacityBytes: capacity)
        var random = SplitMix64(seed: 7)
        for index in 0..<3000 {
            let cost = 300 + random.next(below: tier.admissionLimit - 300)
            #expect(tier.insert(makeObject(key("/\(index)"), cost: cost)))
            let stats = tier.stats
            #expect(stats.bytes <= capacity)
            if stats.bytes > capacity {
                break
            }
        }
        let stats = tier.stats
        #expect(stats.evictions > 0)
        // Every key was new, so whatever is not stored was evicted.
        #expect(stats.objects + stats.evictions == stats.inserts)
        #expect(stats.bytes > capacity / 2)
        #expect(tier.consistencyProblem() == nil)
    }

    @Test("a cold insert is the next to be evicted: a stream of them never pushes out the objects already stored")
    func coldInsertsGoFirst() {
        let tier = MemoryTier(capacityBytes: 10 * 1024, shardCount: 1)
        let hot = (0..<8).map { makeObject(key("/hot/\($0)"), cost: 1024) }
        for object in hot { #expect(tier.insert(object)) }
        for index in 0..<50 {
            #expect(tier.insert(makeObject(key("/slice/\(index)"), cost: 1024), cold: true))
            #expect(tier.variants(for: key("/slice/\(index)")).count == 1, "the newest cold object is kept")
        }
        #expect(hot.allSatisfy { tier.variants(for: $0.key).count == 1 }, "no hot object was evicted")
        #expect(tier.stats.objects == 10 && tier.stats.bytes == 10 * 1024)
        #expect(tier.consistencyProblem() == nil)
        // A normal insert still evicts the least recently used: the cold ones first.
        tier.insert(makeObject(key("/new"), cost: 1024))
        #expect(hot.allSatisfy { tier.variants(for: $0.key).count == 1 })
    }

    @Test("eviction takes the least recently used; a touched object survives, a looked-up one does not")
    func evictsLeastRecentlyUsed() {
        // One shard, so the whole tier is one LRU list: ten 1 KiB objects fit.
        let tier = MemoryTier(capacityBytes: 10 * 1024, shardCount: 1)
        let objects = (0..<12).map { makeObject(key("/\($0)"), cost: 1024) }
        for object in objects[0..<10] {
            #expect(tier.insert(object))
        }
        #expect(tier.stats.evictions == 0)
        tier.touch(objects[0])
        // A lookup alone is not a use.
        _ = tier.variants(for: objects[1].key)
        tier.insert(objects[10])
        #expect(tier.variants(for: objects[0].key).count == 1)
        #expect(tier.variants(for: objects[1].key).isEmpty)
        tier.insert(objects[11])
        #expect(tier.variants(for: objects[2].key).isEmpty)
        #expect(tier.variants(for: objects[3].key).count == 1)
        let stats = tier.stats
        #expect(stats.evictions == 2)
        #expect(stats.objects == 10)
        #expect(stats.bytes == 10 * 1024)
        #expect(tier.consistencyProblem() == nil)
    }

    @Test("an object whose body is longer than the admission limit is rejected and evicts nothing")
    func tooLargeRejected() {
        let overhead = StoredObject.overhead  // + 1 below: the body is the cost less the overhead and one byte
        // (`makeObject`)
        let capped = MemoryTier(capacityBytes: 1 << 20, maxObjectBytes: 4096, shardCount: 4)
        #expect(capped.admissionLimit == 4096)
        #expect(!capped.insert(makeObject(key("/big"), cost: 4097 + overhead + 1)))
        // A body of exactly the limit is kept, though the object costs more with its bookkeeping.
        #expect(capped.insert(makeObject(key("/fits"), cost: 4096 + overhead + 1)))

        // 16 shards of 1 KiB: no body above half a shard is kept.
        let small = MemoryTier(capacityBytes: 16 * 1024)
        #expect(small.admissionLimit == 512)
        let resident = makeObject(key("/resident"), cost: 400)
        #expect(small.insert(resident))
        #expect(!small.insert(makeObject(key("/resident"), cost: 513 + overhead + 1)))
        #expect(same(small.variants(for: key("/resident")), [resident]))
        let stats = small.stats
        #expect(stats.rejectedTooLarge == 1)
        #expect(stats.inserts == 1)
        #expect(stats.evictions == 0)
        #expect(stats.bytes == 400)
        #expect(capped.stats.rejectedTooLarge == 1)
    }

    @Test("a 33rd variant evicts that key's least recently used variant")
    func thirtyThirdVariantEvictsOldest() {
        let tier = MemoryTier(capacityBytes: 1 << 20, shardCount: 1)
        let bystander = makeObject(key("/other"))
        tier.insert(bystander)
        let variants = (0..<33).map { makeObject(key("/a"), variant: "v\($0)") }
        for variant in variants[0..<32] {
            tier.insert(variant)
        }
        #expect(tier.variants(for: key("/a")).count == 32)
        tier.touch(variants[0])
        tier.insert(variants[32])
        let stored = tier.variants(for: key("/a"))
        #expect(stored.count == 32)
        #expect(stored.first === variants[32])
        #expect(stored.contains { $0 === variants[0] })
        #expect(!stored.contains { $0 === variants[1] })
        #expect(same(tier.variants(for: key("/other")), [bystander]))
        #expect(tier.stats.evictions == 1)
        #expect(tier.consistencyProblem() == nil)
    }

    @Test("remove(key:) removes every variant of that key and nothing else")
    func removeKeyRemovesAllVariants() {
        let tier = MemoryTier(capacityBytes: 1 << 20)
        let variants = ["gzip", "identity", "br"].map { makeObject(key("/a"), variant: $0, cost: 1000) }
        for variant in variants {
            tier.insert(variant)
        }
        let other = makeObject(key("/b"), cost: 500)
        tier.insert(other)
        let removed = tier.remove(key: key("/a"))
        #expect(same(removed, variants.reversed()))
        #expect(tier.variants(for: key("/a")).isEmpty)
        #expect(same(tier.variants(for: key("/b")), [other]))
        #expect(tier.stats.objects == 1)
        #expect(tier.stats.bytes == 500)
        #expect(tier.remove(key: key("/a")).isEmpty)
        #expect(tier.consistencyProblem() == nil)
    }

    @Test("remove(_:) removes only that very instance, once")
    func removeObjectByIdentity() {
        let tier = MemoryTier(capacityBytes: 1 << 20)
        let stored = makeObject(key("/a"), variant: "gzip")
        let lookalike = makeObject(key("/a"), variant: "gzip")
        let sibling = makeObject(key("/a"), variant: "identity")
        tier.insert(stored)
        tier.insert(sibling)
        #expect(!tier.remove(lookalike))
        #expect(tier.variants(for: key("/a")).count == 2)
        #expect(tier.remove(stored))
        #expect(!tier.remove(stored))
        #expect(same(tier.variants(for: key("/a")), [sibling]))
        // Touching an object that is gone is a no-op.
        tier.touch(stored)
        #expect(tier.stats.objects == 1)
        #expect(tier.consistencyProblem() == nil)
    }

    @Test("removeExpired drops exactly the objects whose drop time has passed")
    func removeExpired() {
        // One shard and more objects than one walk batch, so the walk resumes across batches.
        let tier = MemoryTier(capacityBytes: 4 << 20, shardCount: 1)
        var kept: [StoredObject] = []
        for index in 0..<1200 {
            let expires = Double(index % 3) * 10 + 10  // 10, 20 or 30
            let object = makeObject(key("/\(index)"), cost: 300, expires: expires)
            tier.insert(object)
            if expires >= 20 {
                kept.append(object)
            }
        }
        #expect(tier.removeExpired(now: 5) == 0)
        // `expiresEntirely < now`: an object due at exactly 20 stays.
        #expect(tier.removeExpired(now: 20) == 400)
        #expect(tier.removeExpired(now: 20) == 0)
        let stats = tier.stats
        #expect(stats.objects == 800)
        #expect(stats.expired == 400)
        #expect(stats.evictions == 0)
        #expect(stats.bytes == 800 * 300)
        for object in kept {
            #expect(tier.variants(for: object.key).count == 1)
        }
        #expect(tier.removeExpired(now: 31) == 800)
        #expect(tier.stats.objects == 0 && tier.stats.bytes == 0)
        #expect(tier.consistencyProblem() == nil)
    }

    @Test("removeExpired is exact to the fraction of a second, far in the future, and for a drop time never reached")
    func removeExpiredFractions() {
        let tier = MemoryTier(capacityBytes: 4 << 20, shardCount: 1)
        let soon = makeObject(key("/soon"), cost: 300, expires: 10.25)
        let later = makeObject(key("/later"), cost: 300, expires: 10.75)
        let far = makeObject(key("/far"), cost: 300, expires: 9e12)  // past what 32 bits of seconds hold
        let never = makeObject(key("/never"), cost: 300, expires: .infinity)
        for object in [soon, later, far, never] { tier.insert(object) }
        #expect(tier.removeExpired(now: 10.2) == 0)
        #expect(tier.removeExpired(now: 10.25) == 0)
        #expect(tier.removeExpired(now: 10.3) == 1)
        #expect(tier.variants(for: soon.key).isEmpty && tier.variants(for: later.key).count == 1)
        #expect(tier.removeExpired(now: 10.76) == 1)
        #expect(tier.removeExpired(now: 5e9) == 0)
        #expect(tier.removeExpired(now: 9.1e12) == 1)
        #expect(tier.variants(for: never.key).count == 1)
        #expect(tier.consistencyProblem() == nil)
    }

    @Test("removeAll(where:) removes what the predicate selects, across shards and batches")
    func removeAllWhere() {
        let tier = MemoryTier(capacityBytes: 8 << 20)
        for index in 0..<2000 {
            let host = index % 4 == 0 ? "banned.test" : "kept.test"
            tier.insert(makeObject(key("/\(index)", host: host), cost: 300))
        }
        #expect(tier.removeAll(where: { $0.key.parts[1] == "banned.test" }) == 500)
        #expect(tier.variants(for: key("/0", host: "banned.test")).isEmpty)
        #expect(tier.variants(for: key("/1", host: "kept.test")).count == 1)
        #expect(tier.stats.objects == 1500)
        #expect(tier.removeAll(where: { _ in false }) == 0)
        #expect(tier.removeAll(where: { _ in true }) == 1500)
        #expect(tier.stats.bytes == 0)
        #expect(tier.consistencyProblem() == nil)
    }

    @Test("concurrent inserts, lookups, touches and removals leave the tier consistent")
    func concurrentUse() async {
        let capacity = 96 * 1024
        let tier = MemoryTier(capacityBytes: capacity, shardCount: 4)
        let keys = (0..<64).map { key("/\($0)", host: "busy.test") }
        await withTaskGroup(of: Void.self) { group in
            for worker in 0..<4 {
                group.addTask {
                    var random = SplitMix64(seed: UInt64(worker) + 1)
                    for step in 0..<20_000 {
                        let key = keys[random.next(below: keys.count)]
                        switch random.next(below: 10) {
                        case 0..<4:
                            let object = makeObject(
                                key,
                                variant: "v\(random.next(below: 4))",
                                cost: 300 + random.next(below: 2000),
                                expires: Double(random.next(below: 100))
                            )
                            tier.insert(object)
                        case 4..<7:
                            let found = tier.variants(for: key)
                            if !found.isEmpty {
                                tier.touch(found[random.next(below: found.count)])
                            }
                        case 7:
                            tier.remove(key: key)
                        case 8:
                            if let object = tier.variants(for: key).last {
                                tier.remove(object)
                            }
                        default:
                            if step % 500 == 0 {
                                tier.removeExpired(now: Double(random.next(below: 50)))
                            } else if step % 997 == 0 {
                                tier.removeAll(where: { $0.variant == "v3" })
                            } else {
                                _ = tier.stats
                            }
                        }
                    }
                }
            }
        }
        #expect(tier.consistencyProblem() == nil)
        let reachable = keys.flatMap { tier.variants(for: $0) }
        let stats = tier.stats
        #expect(reachable.reduce(0) { $0 + $1.cost } == stats.bytes)
        #expect(reachable.count == stats.objects)
        #expect(stats.bytes <= capacity)
        #expect(stats.inserts > 0 && stats.evictions > 0)
    }
}
