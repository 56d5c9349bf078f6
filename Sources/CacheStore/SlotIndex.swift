/// A memory-tier shard's index from a key's 64-bit digest to the LRU slots stored under it: a
/// hash table chained through the slots themselves.
///
/// `buckets[b]` holds the first slot of bucket `b` (the digest's high bits pick it) and
/// `chains[slot]` the next slot in the same bucket, so an indexed object costs 4 bytes of chain
/// and 4 to 8 bytes of bucket, against a `Dictionary` bucket's 24 (digest and slot list) at a
/// lower load. The table doubles when it holds more slots than buckets, so a chain averages at
/// most one slot; it never shrinks (as a `Dictionary` does not).
///
/// A chain keeps its slots most recently used first (`insert` and `moveToFront` put a slot at
/// its head), so a key's variants are met in that order; slots of other digests that share the
/// bucket are interleaved, and callers skip them by comparing keys.
///
/// The slot array (`chains`) grows by a quarter at a time, as `LRUList` does, so it stays close
/// to the number of slots in use.
///
/// A plain value guarded by the owning shard's lock, like the `LRUList` whose slots it indexes.
package struct SlotIndex: Sendable {
    private static var none: Int32 { -1 }

    private var buckets: [Int32]
    /// The next slot in the same bucket, per slot; `none` at a chain's end and for slots not indexed.
    private var chains: [Int32] = []
    /// log2 of `buckets.count`.
    private var shift: Int
    /// The number of slots indexed.
    package private(set) var count = 0

    package init() {
        self.shift = 4
        self.buckets = [Int32](repeating: SlotIndex.none, count: 1 << 4)
    }

    /// The bucket of `digest`. FNV-1a's low bits depend only on the input's low bits, so the
    /// digest is multiplied (Fibonacci hashing) and the high bits pick the bucket. (The shard was
    /// chosen from bits 32 and up of the same product modulo the shard count; the top bits used
    /// here vary within a shard.)
    private func bucket(of digest: UInt64) -> Int {
        Int(truncatingIfNeeded: (digest &* 0x9E37_79B9_7F4A_7C15) >> UInt64(64 - self.shift))
    }

    /// Calls `body` with each slot in `digest`'s bucket, most recently used first (slots of other
    /// digests in the same bucket included: compare keys). `body` must not change the index.
    package func forEach(digest: UInt64, _ body: (Int) throws -> Void) rethrows {
        var slot = self.buckets[self.bucket(of: digest)]
        while slot != SlotIndex.none {
            try body(Int(slot))
            slot = self.chains[Int(slot)]
        }
    }

    /// The first slot in `digest`'s bucket, most recently used first, for which `predicate` holds.
    package func first(digest: UInt64, where predicate: (Int) throws -> Bool) rethrows -> Int? {
        var slot = self.buckets[self.bucket(of: digest)]
        while slot != SlotIndex.none {
            if try predicate(Int(slot)) { return Int(slot) }
            slot = self.chains[Int(slot)]
        }
        return nil
    }

    /// Indexes `slot` (not indexed yet) under `digest`, as the most recently used of its bucket.
    /// `digestOf` gives the digest of any indexed slot, for when the table grows.
    package mutating func insert(_ slot: Int, digest: UInt64, digestOf: (Int) -> UInt64) {
        precondition(slot >= 0 && slot < Int(Int32.max), "SlotIndex: slot \(slot) out of range")
        if slot >= self.chains.count {
            if self.chains.count == self.chains.capacity {
                self.chains.reserveCapacity(Swift.max(16, slot + 1 + (slot + 1) / 4))
            }
            while self.chains.count <= slot { self.chains.append(SlotIndex.none) }
        }
        if self.count >= self.buckets.count {
            self.grow(digestOf: digestOf)
        }
        let bucket = self.bucket(of: digest)
        self.chains[slot] = self.buckets[bucket]
        self.buckets[bucket] = Int32(slot)
        self.count += 1
    }

    /// Unindexes `slot` from `digest`'s bucket; returns whether it was there.
    @discardableResult
    package mutating func remove(_ slot: Int, digest: UInt64) -> Bool {
        guard self.unlink(slot, digest: digest) != nil else { return false }
        self.chains[slot] = SlotIndex.none
        self.count -= 1
        return true
    }

    /// Makes `slot` the most recently used of its bucket; a no-op if it is not indexed there.
    package mutating func moveToFront(_ slot: Int, digest: UInt64) {
        let bucket = self.bucket(of: digest)
        guard self.buckets[bucket] != Int32(slot), self.unlink(slot, digest: digest) != nil else { return }
        self.chains[slot] = self.buckets[bucket]
        self.buckets[bucket] = Int32(slot)
    }

    /// Takes `slot` out of its bucket's chain (its own link is left for the caller to set).
    /// Returns the slot before it (`none` when it was first), or nil when it is not there.
    private mutating func unlink(_ slot: Int, digest: UInt64) -> Int32? {
        let bucket = self.bucket(of: digest)
        var previous = SlotIndex.none
        var current = self.buckets[bucket]
        var steps = 0
        while current != SlotIndex.none, steps <= self.count {
            if current == Int32(slot) {
                if previous == SlotIndex.none {
                    self.buckets[bucket] = self.chains[slot]
                } else {
                    self.chains[Int(previous)] = self.chains[slot]
                }
                return previous
            }
            previous = current
            current = self.chains[Int(current)]
            steps += 1
        }
        return nil
    }

    /// Doubles the buckets and re-links every indexed slot, keeping each chain's order.
    private mutating func grow(digestOf: (Int) -> UInt64) {
        let old = self.buckets
        self.shift += 1
        self.buckets = [Int32](repeating: SlotIndex.none, count: 1 << self.shift)
        // New chains are built tail first so that each keeps its recency order: a slot's new
        // bucket only ever receives slots from one old bucket, so appending in old chain order
        // preserves it.
        var tails = [Int32](repeating: SlotIndex.none, count: 1 << self.shift)
        for head in old {
            var slot = head
            while slot != SlotIndex.none {
                let next = self.chains[Int(slot)]
                let bucket = self.bucket(of: digestOf(Int(slot)))
                self.chains[Int(slot)] = SlotIndex.none
                if tails[bucket] == SlotIndex.none {
                    self.buckets[bucket] = slot
                } else {
                    self.chains[Int(tails[bucket])] = slot
                }
                tails[bucket] = slot
                slot = next
            }
        }
    }

    /// Checks that the chains hold exactly `count` slots, each once, each in the bucket of
    /// `digestOf(slot)` and `isIndexed(slot)`; returns the first problem found, or nil. For tests.
    package func consistencyProblem(isIndexed: (Int) -> Bool, digestOf: (Int) -> UInt64) -> String? {
        var seen = Set<Int32>()
        for (bucket, head) in self.buckets.enumerated() {
            var slot = head
            while slot != SlotIndex.none {
                guard slot >= 0, Int(slot) < self.chains.count else { return "bucket \(bucket) reaches slot \(slot), out of range" }
                guard seen.insert(slot).inserted else { return "slot \(slot) is chained twice" }
                guard isIndexed(Int(slot)) else { return "bucket \(bucket) lists slot \(slot), which is not indexed" }
                guard self.bucket(of: digestOf(Int(slot))) == bucket else { return "slot \(slot) is in bucket \(bucket), not its digest's" }
                slot = self.chains[Int(slot)]
            }
        }
        guard seen.count == self.count else { return "chains hold \(seen.count) slots, count says \(self.count)" }
        return nil
    }
}
