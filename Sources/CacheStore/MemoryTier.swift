import Synchronization

/// The hot tier: stored objects kept in memory, bounded in bytes, evicted least recently used
/// first (Varnish's malloc stevedore with its LRU, `storage_malloc.c` + `storage_lru.c`).
///
/// Objects are spread over shards by their key's digest (16 by default), each shard behind its
/// own `Mutex`, so event loops serving different keys rarely contend. Each shard has an equal
/// share of the byte budget and its own LRU list; eviction is per shard, so the tier as a whole
/// never holds more than `capacityBytes` (the sum of `StoredObject.cost`, charged at insert).
/// Every variant of one key lives in the same shard, at most `maxVariantsPerKey` of them.
///
/// Lifecycle of an object in this tier:
///
///     insert ──▶ stored (front of its shard's LRU) ──▶ touch: back to the front
///        │             │
///        │             ├─▶ replaced   a newer object with the same key and variant is inserted
///        │             ├─▶ evicted    it is its shard's least recently used and room is needed,
///        │             │              or it is its key's least recently used of 33 variants
///        │             ├─▶ expired    `removeExpired(now:)` passes `expiresEntirely`
///        │             └─▶ removed    `remove(key:)` (purge), `remove(_:)`, `removeAll(where:)` (ban)
///        └─▶ rejected: cost above `admissionLimit`; nothing is stored and nothing is evicted
///
/// Lookups (`variants(for:)`) never move an object: the caller picks the variant that matches
/// its request and then `touch`es that one, so only a delivered object counts as used.
///
/// Locking rule: lock, decide, unlock. A method holds at most one shard's lock at a time, does
/// only bookkeeping under it (no I/O, no logging, no caller-supplied closure) and never calls
/// out while holding it. Removed objects are handed back out of the lock so that the last
/// release of a large body (its deallocation) happens after unlocking. `removeAll(where:)` runs
/// its predicate on snapshots taken under the lock, outside it. Whole-tier walks
/// (`removeExpired`, `removeAll(where:)`, `stats`) take each shard in turn, in bounded batches,
/// so they never stall a shard for long and are not atomic across the tier.
public final class MemoryTier: Sendable {
    /// The most variants kept under one key (HARDENING §7); inserting one more evicts the key's
    /// least recently used variant.
    public static let maxVariantsPerKey = 32

    /// Slots examined per lock hold by the whole-tier walks.
    static let walkBatchSize = 256

    /// The byte budget of the whole tier (the sum of the shards' budgets).
    public let capacityBytes: Int
    /// The configured cap on one object's cost, before the per-shard share is applied.
    public let maxObjectBytes: Int
    /// Largest body admitted: `min(maxObjectBytes, per-shard budget / 2)`, so that an object
    /// bigger than a set share of the budget is not kept (it would flush half a shard). It is
    /// the body's length, as a user counts an object's size (and as the flow decides what to
    /// keep or promote); the object must also cost at most its shard's whole budget.
    public let admissionLimit: Int
    /// The smallest shard budget.
    private let shardBudget: Int
    /// The number of shards.
    public var shardCount: Int { self.shards.count }

    private let shards: [ShardLock]
    /// Which response fields list surrogate keys: they are indexed per shard.
    public let surrogateKeyFields: SurrogateKeyFields
    /// Rejections happen before any shard is chosen, so they are counted here, not per shard.
    private let rejectedTooLarge = Atomic<Int>(0)

    /// One shard's state behind its lock (a class because `Mutex` cannot live in an array).
    private final class ShardLock: Sendable {
        let state: Mutex<Shard>

        init(budget: Int) {
            self.state = Mutex(Shard(budget: budget))
        }
    }

    /// - Parameters:
    ///   - capacityBytes: the byte budget of the whole tier (HARDENING §10: 256 MiB by default).
    ///   - maxObjectBytes: the largest object kept (1 MiB by default); see `admissionLimit`.
    ///   - shardCount: the number of independently locked shards; each gets an equal budget.
    ///   - surrogateKeyFields: the response fields whose keys (cache tags) are indexed.
    public init(
        capacityBytes: Int, maxObjectBytes: Int = 1 << 20, shardCount: Int = 16,
        surrogateKeyFields: SurrogateKeyFields = .none
    ) {
        precondition(capacityBytes >= 0, "MemoryTier: capacityBytes must not be negative")
        precondition(maxObjectBytes >= 0, "MemoryTier: maxObjectBytes must not be negative")
        precondition(shardCount > 0, "MemoryTier: shardCount must be positive")
        self.capacityBytes = capacityBytes
        self.maxObjectBytes = maxObjectBytes
        self.surrogateKeyFields = surrogateKeyFields
        let share = capacityBytes / shardCount
        let remainder = capacityBytes % shardCount
        // The first `remainder` shards take one byte more, so the budgets add up exactly.
        self.shards = (0..<shardCount).map { index in
            ShardLock(budget: share + (index < remainder ? 1 : 0))
        }
        self.admissionLimit = min(maxObjectBytes, share / 2)
        self.shardBudget = share
    }

    /// Every stored variant under `key`, most recently used first. Counts a hit if there is
    /// at least one, else a miss. Does not touch the LRU: `touch` the variant you deliver.
    public func variants(for key: CacheKey) -> [StoredObject] {
        self.shard(for: key).state.withLock { $0.variants(for: key) }
    }

    /// Whether nothing is stored under `key`, counted as a lookup like `variants(for:)`, without
    /// building the list of variants.
    public func holdsNothing(for key: CacheKey) -> Bool {
        self.shard(for: key).state.withLock { $0.holdsNothing(for: key) }
    }

    /// Whether a stored variant answers a request, as far as a caller can tell.
    public enum VariantMatch: Sendable {
        case matches, differs
        /// The caller cannot tell (a Vary it does not evaluate): no variant is selected.
        case unknown
    }

    /// The rule `selectVariant` applies, for any list of candidates (the shard's slots, or the
    /// variants a disk lookup found): the newest of those `matching` says match, none if it cannot
    /// tell for any of them.
    public struct VariantChoice<Candidate> {
        public private(set) var best: (candidate: Candidate, object: StoredObject)?
        private var unknown = false

        public init() {}

        public mutating func consider(_ candidate: Candidate, _ object: StoredObject, matching: (StoredObject) -> VariantMatch) {
            guard !self.unknown else { return }
            switch matching(object) {
            case .matches:
                if let best = self.best, best.object.responseTime >= object.responseTime { return }
                self.best = (candidate, object)
            case .differs:
                break
            case .unknown:
                self.unknown = true
            }
        }

        /// The chosen candidate, when there is one and `servable` takes its object.
        public func chosen(servable: (StoredObject) -> Bool) -> (candidate: Candidate, object: StoredObject)? {
            guard !self.unknown, let best = self.best, servable(best.object) else { return nil }
            return best
        }
    }

    /// The variant under `key` that a request selects (the newest of those `matching` says match,
    /// as `BuiltinPolicy.lookup` picks), when `servable` takes it: then it counts a hit and the
    /// object becomes the most recently used, all under one lock hold. Otherwise nil, counting
    /// and touching nothing (`variants(for:)` then decides).
    public func selectVariant(
        for key: CacheKey, matching: (StoredObject) -> VariantMatch, servable: (StoredObject) -> Bool
    ) -> StoredObject? {
        self.shard(for: key).state.withLock { $0.selectVariant(for: key, matching: matching, servable: servable) }
    }

    /// Marks `object` most recently used, in its shard and among its key's variants.
    /// A no-op if this very object (compared by identity) is no longer stored.
    public func touch(_ object: StoredObject) {
        self.shard(forDigest: object.keyDigest).state.withLock { $0.touch(object) }
    }

    /// Stores `object` as the most recently used, replacing any stored object with the same
    /// key and variant. Evicts the shard's least recently used objects until it fits, and the
    /// key's least recently used variant if the key already has `maxVariantsPerKey`.
    ///
    /// - Returns: `false`, storing and evicting nothing, when the body is longer than
    ///   `admissionLimit` or the object costs more than a shard's budget.
    /// - Parameter cold: store it as the least recently used object (the next to go), not the
    ///   most: for the slices of a large object, which must not push hot objects out.
    @discardableResult
    public func insert(_ object: StoredObject, cold: Bool = false) -> Bool {
        // `cost` walks the headers: compute it (and the expiry) before taking the lock, and the
        // surrogate keys only for an object that is let in.
        let cost = object.cost
        guard self.admits(bodyLength: object.bodyLength), cost <= self.shardBudget, cost <= Int(UInt32.max) else {
            self.rejectedTooLarge.wrappingAdd(1, ordering: .relaxed)
            return false
        }
        let entry = Entry(object, cost: cost)
        let tags = object.surrogateKeys(self.surrogateKeyFields)
        // The replaced and evicted objects come back out of the lock and are released here.
        _ = self.shard(forDigest: object.keyDigest).state.withLock { $0.insert(entry, tags: tags, cold: cold) }
        return true
    }

    /// Whether a body this long may be kept (`admissionLimit`): what `insert` checks first.
    public func admits(bodyLength: Int) -> Bool {
        bodyLength <= self.admissionLimit
    }

    /// Removes every variant stored under `key` (a purge).
    ///
    /// - Returns: the removed objects, most recently used first.
    @discardableResult
    public func remove(key: CacheKey) -> [StoredObject] {
        self.shard(for: key).state.withLock { $0.removeAll(key: key) }
    }

    /// Removes exactly this object (compared by identity), if it is still stored.
    ///
    /// - Returns: whether it was stored.
    @discardableResult
    public func remove(_ object: StoredObject) -> Bool {
        self.shard(forDigest: object.keyDigest).state.withLock { $0.remove(object) }
    }

    /// Every stored object tagged with at least one of `keys` (a snapshot; each shard's index
    /// is read under its lock). Costs in proportion to the tagged objects, not the tier.
    public func objects(withSurrogateKeys keys: [String]) -> [StoredObject] {
        guard !keys.isEmpty else { return [] }
        var found: [StoredObject] = []
        for shard in self.shards {
            shard.state.withLock { $0.tagged(keys, into: &found) }
        }
        return found
    }

    /// Puts `new` in the place of `old` (compared by identity; same key and variant), keeping
    /// its place in the LRU order: a soft purge's stale copy. Returns false if `old` is gone.
    @discardableResult
    public func replace(_ old: StoredObject, with new: StoredObject) -> Bool {
        precondition(old.hasSameKey(as: new) && old.variant == new.variant, "MemoryTier: replace changes the key")
        let cost = new.cost
        guard cost <= Int(UInt32.max) else { return false }
        let entry = Entry(new, cost: cost)
        let tags = new.surrogateKeys(self.surrogateKeyFields)
        return self.shard(forDigest: old.keyDigest).state.withLock { $0.replace(old, with: entry, tags: tags) }
    }

    /// Drops every object whose `expiresEntirely` is before `now`.
    ///
    /// Walks each shard's slots in batches of `walkBatchSize`, releasing the lock between
    /// batches. An object inserted during the walk may or may not be examined.
    ///
    /// - Returns: how many objects were dropped.
    @discardableResult
    public func removeExpired(now: Double) -> Int {
        var removed = 0
        var released: [StoredObject] = []
        for shard in self.shards {
            var cursor = 0
            while let next = shard.state.withLock({ state in
                state.removeExpired(now: now, from: cursor, limit: MemoryTier.walkBatchSize, into: &released)
            }) {
                cursor = next
                removed += released.count
                // Release the dropped objects outside the lock; keep the buffer for the next batch.
                released.removeAll(keepingCapacity: true)
            }
        }
        return removed
    }

    /// Removes every stored object for which `predicate` is true (bans, surrogate keys).
    ///
    /// The predicate runs outside every lock, on snapshots of `walkBatchSize` slots; an object
    /// it selects is removed only if it is still stored (by identity). An object inserted
    /// during the walk may or may not be examined, so a ban must also be checked at lookup.
    ///
    /// - Returns: how many objects were removed.
    @discardableResult
    public func removeAll(where predicate: (StoredObject) -> Bool) -> Int {
        var removed = 0
        var candidates: [StoredObject] = []
        var doomed: [StoredObject] = []
        for shard in self.shards {
            var cursor = 0
            while let next = shard.state.withLock({ state in
                state.snapshot(from: cursor, limit: MemoryTier.walkBatchSize, into: &candidates)
            }) {
                cursor = next
                for object in candidates where predicate(object) {
                    doomed.append(object)
                }
                candidates.removeAll(keepingCapacity: true)
                if !doomed.isEmpty {
                    removed += shard.state.withLock { state in
                        var count = 0
                        for object in doomed where state.remove(object) {
                            count += 1
                        }
                        return count
                    }
                    doomed.removeAll(keepingCapacity: true)
                }
            }
        }
        return removed
    }

    /// Counters and occupancy, summed over the shards one at a time (not an atomic snapshot of
    /// the whole tier while others write, but each shard's part is consistent).
    public var stats: MemoryTierStats {
        var total = MemoryTierStats(capacityBytes: self.capacityBytes)
        for shard in self.shards {
            let part = shard.state.withLock { $0.counters }
            total.objects += part.objects
            total.bytes += part.bytes
            total.inserts += part.inserts
            total.evictions += part.evictions
            total.expired += part.expired
            total.hits += part.hits
            total.misses += part.misses
        }
        total.rejectedTooLarge = self.rejectedTooLarge.load(ordering: .relaxed)
        return total
    }

    /// Checks every shard's invariants (links, key map, byte sum, budget, variant limit) and
    /// returns the first problem found, or `nil`. For tests: O(objects) under each lock.
    package func consistencyProblem() -> String? {
        for (index, shard) in self.shards.enumerated() {
            if let problem = shard.state.withLock({ $0.consistencyProblem() }) {
                return "shard \(index): \(problem)"
            }
        }
        return nil
    }

    private func shard(for key: CacheKey) -> ShardLock {
        self.shard(forDigest: key.digest)
    }

    private func shard(forDigest digest: UInt64) -> ShardLock {
        // FNV-1a's low bits depend only on the input's low bits; multiply (Fibonacci hashing)
        // and take high bits so that every bit of the digest picks the shard.
        let mixed = (digest &* 0x9E37_79B9_7F4A_7C15) >> 32
        return self.shards[Int(mixed % UInt64(self.shards.count))]
    }
}
