extension MemoryTier {
    /// What a shard's LRU slot holds: the object and what it was charged, fixed at insert so
    /// that the byte count stays exact whatever `cost` would compute later.
    struct Entry: Sendable {
        let object: StoredObject
        let cost: Int
        /// `object.expiresEntirely`, kept inline so the expiry walk does not chase pointers.
        let expires: Double
        /// The object's surrogate keys, as indexed (empty for most objects: no allocation).
        let tags: [String]

        init(_ object: StoredObject, tags: [String] = []) {
            self.object = object
            self.cost = object.cost
            self.expires = object.expiresEntirely
            self.tags = tags
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
        /// Each key's slots, its most recently used variant first, under the key's 64-bit
        /// digest: 8 bytes a bucket instead of the key's 24 (and no string to retain). Should
        /// two keys ever share a digest, their slots share the list: every use compares the
        /// stored object's key, so neither ever sees the other's objects.
        private var map: [UInt64: VariantSlots] = [:]
        /// The slots of the objects tagged with each surrogate key.
        private var tagIndex: [String: Set<Int>] = [:]
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
            self.map[key.digest]?.forEach { slot in
                let object = self.lru[slot].object
                guard object.key == key else { return }
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
            guard let slots = self.map[key.digest] else { return nil }
            var choice = MemoryTier.VariantChoice<Int>()
            slots.forEach { slot in
                let object = self.lru[slot].object
                guard object.key == key else { return }
                choice.consider(slot, object, matching: matching)
            }
            guard let best = choice.chosen(servable: servable) else { return nil }
            self.counters.hits += 1
            self.lru.moveToFront(best.candidate)
            self.map[key.digest]?.moveToFront(best.candidate)
            return best.object
        }

        mutating func touch(_ object: StoredObject) {
            guard let slot = self.slot(of: object) else {
                return
            }
            self.lru.moveToFront(slot)
            self.map[object.key.digest]?.moveToFront(slot)
        }

        /// Stores `entry` at the front (its cost must be at most `budget`).
        ///
        /// - Returns: the replaced and evicted objects, for the caller to release after unlocking.
        mutating func insert(_ entry: Entry, cold: Bool) -> [StoredObject] {
            precondition(entry.cost <= self.budget, "MemoryTier: admitted an object larger than a shard")
            let key = entry.object.key
            var released: [StoredObject] = []
            // Decide first, in a scope of its own, so the copy of the key's slots is gone
            // before `removeSlot` changes them (no copy-on-write of the slot array).
            var displaced: (slot: Int, isEviction: Bool)?
            if let slots = self.map[key.digest] {
                let variant = entry.object.variant
                var same: Int?
                var leastRecent: Int?
                var variants = 0
                slots.forEach { slot in
                    let object = self.lru[slot].object
                    guard object.key == key else { return }
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
            self.index(entry.tags, slot: slot)
            // Optional chaining yields nil when the key has no slots yet: start its list.
            if self.map[key.digest]?.prepend(slot) == nil {
                self.map[key.digest] = VariantSlots(slot)
            }
            self.counters.bytes += entry.cost
            self.counters.objects += 1
            self.counters.inserts += 1
            return released
        }

        /// Removes every variant under `key`, most recently used first.
        mutating func removeAll(key: CacheKey) -> [StoredObject] {
            guard let slots = self.map[key.digest] else {
                return []
            }
            var matching: [Int] = []
            matching.reserveCapacity(slots.count)
            slots.forEach { slot in
                if self.lru[slot].object.key == key { matching.append(slot) }
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
        mutating func replace(_ object: StoredObject, with entry: Entry) -> Bool {
            guard let slot = self.slot(of: object) else { return false }
            let old = self.lru[slot]
            self.unindex(old.tags, slot: slot)
            self.lru.replace(slot, with: entry)
            self.index(entry.tags, slot: slot)
            self.counters.bytes += entry.cost - old.cost
            return true
        }

        private mutating func index(_ tags: [String], slot: Int) {
            for tag in tags {
                self.tagIndex[tag, default: []].insert(slot)
            }
        }

        private mutating func unindex(_ tags: [String], slot: Int) {
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
                if let entry = self.lru.element(at: slot), entry.expires < now {
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
            self.map[object.key.digest]?.first(where: { self.lru[$0].object === object })
        }

        /// Unlinks a slot from the LRU and from its key, and uncharges it.
        @discardableResult
        private mutating func removeSlot(_ slot: Int) -> StoredObject {
            let entry = self.lru.remove(slot)
            self.unindex(entry.tags, slot: slot)
            let digest = entry.object.key.digest
            switch self.map[digest]?.remove(slot) {
            case .some(true):
                break
            case .some(false):
                // That was the key's last variant.
                self.map[digest] = nil
            case .none:
                assertionFailure("MemoryTier: slot \(slot) missing from its key's list")
            }
            self.counters.bytes -= entry.cost
            self.counters.objects -= 1
            return entry.object
        }

        func consistencyProblem() -> String? {
            if let problem = self.lru.consistencyProblem() {
                return "LRU list: \(problem)"
            }
            var mapped = 0
            for (digest, slots) in self.map {
                var variants: [CacheKey: Set<String>] = [:]
                for slot in slots.slots {
                    guard let entry = self.lru.element(at: slot) else {
                        return "digest \(digest) lists free slot \(slot)"
                    }
                    let key = entry.object.key
                    guard key.digest == digest else {
                        return "digest \(digest) lists slot \(slot) of \(key)"
                    }
                    guard variants[key, default: []].insert(entry.object.variant).inserted else {
                        return "\(key) holds variant \"\(entry.object.variant)\" twice"
                    }
                    guard variants[key]!.count <= MemoryTier.maxVariantsPerKey else {
                        return "\(key) has more than \(MemoryTier.maxVariantsPerKey) variants"
                    }
                    mapped += 1
                }
            }
            guard mapped == self.lru.count, self.counters.objects == self.lru.count else {
                return "map lists \(mapped) slots, LRU holds \(self.lru.count), count says \(self.counters.objects)"
            }
            for (tag, slots) in self.tagIndex {
                for slot in slots {
                    guard let entry = self.lru.element(at: slot), entry.tags.contains(tag) else {
                        return "tag \(tag) lists slot \(slot), which does not carry it"
                    }
                }
            }
            var bytes = 0
            for slot in self.lru.slotsFromFront {
                for tag in self.lru[slot].tags where self.tagIndex[tag]?.contains(slot) != true {
                    return "slot \(slot) carries tag \(tag) but is not indexed under it"
                }
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
