extension MemoryTier {
    /// What a shard's LRU slot holds: the object and what it was charged, fixed at insert so
    /// that the byte count stays exact whatever `cost` would compute later. 16 bytes, so an LRU
    /// node is 24: every cached object pays for one.
    struct Entry: Sendable {
        let object: StoredObject
        private let charged: UInt32
        /// `object.expiresEntirely` rounded up to a whole second, kept inline so the expiry walk
        /// does not chase pointers for the objects that are clearly not due.
        private let expiresBy: UInt32

        /// `cost`: the object's, at most `UInt32.max` (the tier admits nothing larger).
        init(_ object: StoredObject, cost: Int) {
            self.object = object
            self.charged = UInt32(clamping: cost)
            let expires = object.expiresEntirely
            self.expiresBy = expires.isNaN ? .max : expires >= Double(UInt32.max) ? .max : UInt32(clamping: Int(expires.rounded(.up)))
        }

        var cost: Int { Int(self.charged) }

        /// Whether the object's drop time is before `now`: decided by the rounded time when it
        /// can be, else by the object's own.
        func expired(now: Double) -> Bool {
            let bound = Double(self.expiresBy)
            // `.max` stands for any time from 2106 on (or none): only the object can tell.
            if bound < now, self.expiresBy != .max { return true }
            if bound - 1 >= now { return false }
            return self.object.expiresEntirely < now
        }
    }

    /// One shard's state: an LRU list of entries, a map from key to that key's slots, the byte
    /// count and the counters. A plain value that decides everything and does nothing else;
    /// `MemoryTier` holds it in a `Mutex` and calls exactly one method per lock hold.
    ///
    /// Invariants (checked by `consistencyProblem()`): every slot in `map` is occupied and its
    /// object has that key; every occupied slot is in `map` exactly once; a key's variants are
    /// distinct and at most `maxVariantsPerKey`; `counters.bytes` is the sum of the entries'
    /// costs and never above `budget`.
    struct Shard: Sendable {
        let budget: Int
        private var lru = LRUList<Entry>()
        /// Each key's slots, its most recently used variant first, by the key's 64-bit digest
        /// (no string kept or retained). Slots of keys whose digests share a bucket, or collide,
        /// are met in the same chain: every use compares the stored object's key, so no key
        /// ever sees another's objects.
        private var map = SlotIndex()
        /// The slots of the objects tagged with each surrogate key.
        private var tagIndex: [String: Set<Int>] = [:]
        /// The surrogate keys each tagged slot is indexed under (most objects have none, and
        /// pay nothing for them).
        private var tagsOfSlot: [Int: [String]] = [:]
        /// `objects` and `bytes` are kept current; `capacityBytes` is this shard's budget.
        private(set) var counters: MemoryTierStats

        init(budget: Int) {
            self.budget = budget
            self.counters = MemoryTierStats(capacityBytes: budget)
        }

        mutating func variants(for key: CacheKey) -> [StoredObject] {
            var objects: [StoredObject] = []
            self.forEachVariant(of: key) { objects.append($0) }
            return objects
        }

        /// Whether `key` has no variant, counted as `variants(for:)` counts, without building the list.
        mutating func holdsNothing(for key: CacheKey) -> Bool {
            var found = false
            self.forEachVariant(of: key) { _ in found = true }
            return !found
        }

        /// Calls `body` with each variant stored under `key`; counts a hit if there was one, else a miss.
        private mutating func forEachVariant(of key: CacheKey, _ body: (StoredObject) -> Void) {
            var found = false
            self.map.forEach(digest: key.digest) { slot in
                let object = self.lru[slot].object
                guard object.hasKey(key) else { return }
                found = true
                body(object)
            }
            if found {
                self.counters.hits += 1
            } else {
                self.counters.misses += 1
            }
        }

        mutating func selectVariant(
            for key: CacheKey, matching: (StoredObject) -> MemoryTier.VariantMatch, servable: (StoredObject) -> Bool
        ) -> StoredObject? {
            var choice = MemoryTier.VariantChoice<Int>()
            self.map.forEach(digest: key.digest) { slot in
                let object = self.lru[slot].object
                guard object.hasKey(key) else { return }
                choice.consider(slot, object, matching: matching)
            }
            guard let best = choice.chosen(servable: servable) else { return nil }
            self.counters.hits += 1
            self.lru.moveToFront(best.candidate)
            self.map.moveToFront(best.candidate, digest: key.digest)
            return best.object
        }

        mutating func touch(_ object: StoredObject) {
            guard let slot = self.slot(of: object) else {
                return
            }
            self.lru.moveToFront(slot)
            self.map.moveToFront(slot, digest: object.keyDigest)
        }

        /// Stores `entry` at the front (its cost must be at most `budget`).
        ///
        /// - Returns: the replaced and evicted objects, for the caller to release after unlocking.
        mutating func insert(_ entry: Entry, tags: [String], cold: Bool) -> [StoredObject] {
            precondition(entry.cost <= self.budget, "MemoryTier: admitted an object larger than a shard")
            let new = entry.object
            var released: [StoredObject] = []
            // Decide first, walking the key's chain, then change it (`removeSlot` unlinks).
            var displaced: (slot: Int, isEviction: Bool)?
            do {
                let variant = new.variant
                var same: Int?
                var leastRecent: Int?
                var variants = 0
                self.map.forEach(digest: new.keyDigest) { slot in
                    let object = self.lru[slot].object
                    guard object.hasSameKey(as: new) else { return }
                    variants += 1
                    leastRecent = slot
                    if same == nil, object.variant == variant { same = slot }
                }
                if let same {
                    // A newer copy of the same variant: a replacement, not an eviction.
                    displaced = (same, false)
                } else if variants >= MemoryTier.maxVariantsPerKey, let leastRecent {
                    displaced = (leastRecent, true)
                }
            }
            if let displaced {
                released.append(self.removeSlot(displaced.slot))
                if displaced.isEviction {
                    self.counters.evictions += 1
                }
            }
            // `cost <= budget`, so this stops at the latest when the shard is empty.
            while self.counters.bytes + entry.cost > self.budget, let victim = self.lru.last {
                released.append(self.removeSlot(victim))
                self.counters.evictions += 1
            }
            let slot = cold ? self.lru.pushBack(entry) : self.lru.pushFront(entry)
            self.index(tags, slot: slot)
            self.map.insert(slot, digest: new.keyDigest) { self.lru[$0].object.keyDigest }
            self.counters.bytes += entry.cost
            self.counters.objects += 1
            self.counters.inserts += 1
            return released
        }

        /// Removes every variant under `key`, most recently used first.
        mutating func removeAll(key: CacheKey) -> [StoredObject] {
            var matching: [Int] = []
            self.map.forEach(digest: key.digest) { slot in
                if self.lru[slot].object.hasKey(key) { matching.append(slot) }
            }
            return matching.map { self.removeSlot($0) }
        }

        /// Appends the objects tagged with any of `keys` (each once).
        func tagged(_ keys: [String], into objects: inout [StoredObject]) {
            guard !self.tagIndex.isEmpty else { return }
            var slots = Set<Int>()
            for key in keys {
                if let tagged = self.tagIndex[key] { slots.formUnion(tagged) }
            }
            for slot in slots {
                objects.append(self.lru[slot].object)
            }
        }

        /// Replaces this very object with `entry` in its slot; returns whether it was stored.
        mutating func replace(_ object: StoredObject, with entry: Entry, tags: [String]) -> Bool {
            guard let slot = self.slot(of: object) else { return false }
            let old = self.lru[slot]
            self.unindex(slot: slot)
            self.lru.replace(slot, with: entry)
            self.index(tags, slot: slot)
            self.counters.bytes += entry.cost - old.cost
            return true
        }

        private mutating func index(_ tags: [String], slot: Int) {
            guard !tags.isEmpty else { return }
            self.tagsOfSlot[slot] = tags
            for tag in tags {
                self.tagIndex[tag, default: []].insert(slot)
            }
        }

        private mutating func unindex(slot: Int) {
            guard !self.tagsOfSlot.isEmpty, let tags = self.tagsOfSlot.removeValue(forKey: slot) else { return }
            for tag in tags {
                if self.tagIndex[tag]?.remove(slot) != nil, self.tagIndex[tag]?.isEmpty == true {
                    self.tagIndex[tag] = nil
                }
            }
        }

        /// Removes this very object if it is stored; returns whether it was.
        mutating func remove(_ object: StoredObject) -> Bool {
            guard let slot = self.slot(of: object) else {
                return false
            }
            self.removeSlot(slot)
            return true
        }

        /// Examines at most `limit` slots from `start` on, moving expired objects into `removed`.
        ///
        /// - Returns: the slot to continue from, or `nil` when the walk is past the last slot.
        mutating func removeExpired(
            now: Double,
            from start: Int,
            limit: Int,
            into removed: inout [StoredObject]
        ) -> Int? {
            guard start < self.lru.slotCount else {
                return nil
            }
            let end = min(start + limit, self.lru.slotCount)
            for slot in start..<end {
                if let entry = self.lru.element(at: slot), entry.expired(now: now) {
                    removed.append(self.removeSlot(slot))
                    self.counters.expired += 1
                }
            }
            return end
        }

        /// Copies the objects of at most `limit` slots from `start` on into `objects`.
        ///
        /// - Returns: the slot to continue from, or `nil` when the walk is past the last slot.
        func snapshot(from start: Int, limit: Int, into objects: inout [StoredObject]) -> Int? {
            guard start < self.lru.slotCount else {
                return nil
            }
            let end = min(start + limit, self.lru.slotCount)
            for slot in start..<end {
                if let entry = self.lru.element(at: slot) {
                    objects.append(entry.object)
                }
            }
            return end
        }

        /// The slot holding this very object, if any.
        private func slot(of object: StoredObject) -> Int? {
            self.map.first(digest: object.keyDigest, where: { self.lru[$0].object === object })
        }

        /// Unlinks a slot from the LRU and from its key, and uncharges it.
        @discardableResult
        private mutating func removeSlot(_ slot: Int) -> StoredObject {
            let entry = self.lru.remove(slot)
            self.unindex(slot: slot)
            let indexed = self.map.remove(slot, digest: entry.object.keyDigest)
            assert(indexed, "MemoryTier: slot \(slot) missing from its key's list")
            self.counters.bytes -= entry.cost
            self.counters.objects -= 1
            return entry.object
        }

        func consistencyProblem() -> String? {
            if let problem = self.lru.consistencyProblem() {
                return "LRU list: \(problem)"
            }
            if let problem = self.map.consistencyProblem(
                isIndexed: { self.lru.element(at: $0) != nil }, digestOf: { self.lru[$0].object.keyDigest })
            {
                return "key index: \(problem)"
            }
            guard self.map.count == self.lru.count, self.counters.objects == self.lru.count else {
                return "index holds \(self.map.count) slots, LRU holds \(self.lru.count), count says \(self.counters.objects)"
            }
            var variants: [CacheKey: Set<String>] = [:]
            for slot in self.lru.slotsFromFront {
                let object = self.lru[slot].object
                guard self.map.first(digest: object.keyDigest, where: { $0 == slot }) != nil else {
                    return "slot \(slot) is not indexed under its key"
                }
                guard variants[object.key, default: []].insert(object.variant).inserted else {
                    return "\(object.key) holds variant \"\(object.variant)\" twice"
                }
                guard variants[object.key, default: []].count <= MemoryTier.maxVariantsPerKey else {
                    return "\(object.key) has more than \(MemoryTier.maxVariantsPerKey) variants"
                }
            }
            for (tag, slots) in self.tagIndex {
                for slot in slots {
                    guard self.lru.element(at: slot) != nil, self.tagsOfSlot[slot]?.contains(tag) == true else {
                        return "tag \(tag) lists slot \(slot), which does not carry it"
                    }
                }
            }
            for (slot, tags) in self.tagsOfSlot {
                guard self.lru.element(at: slot) != nil else {
                    return "free slot \(slot) keeps surrogate keys"
                }
                for tag in tags where self.tagIndex[tag]?.contains(slot) != true {
                    return "slot \(slot) carries tag \(tag) but is not indexed under it"
                }
            }
            var bytes = 0
            for slot in self.lru.slotsFromFront {
                bytes += self.lru[slot].cost
            }
            guard bytes == self.counters.bytes else {
                return "bytes is \(self.counters.bytes), entries cost \(bytes)"
            }
            guard bytes <= self.budget else {
                return "\(bytes) bytes stored, budget \(self.budget)"
            }
            return nil
        }
    }
}
