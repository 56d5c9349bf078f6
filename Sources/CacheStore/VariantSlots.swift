/// The LRU slots of the variants stored under one cache key, most recently used first.
///
/// Almost every key has exactly one variant (responses without `Vary`), so one slot is kept
/// inline and costs no allocation; only a key with two or more variants (at most
/// `MemoryTier.maxVariantsPerKey`) has an array. Searches are linear: the list is short.
///
/// A plain value guarded by the owning shard's lock, like the `LRUList` it indexes into.
package struct VariantSlots: Sendable, Equatable {
    private enum Storage: Sendable, Equatable {
        case one(Int)
        /// Two or more slots, most recently used first.
        case many([Int])
    }

    private var storage: Storage

    /// A list holding just `slot`.
    package init(_ slot: Int) {
        self.storage = .one(slot)
    }

    package var count: Int {
        switch self.storage {
        case .one:
            return 1
        case .many(let slots):
            return slots.count
        }
    }

    /// The most recently used slot.
    package var first: Int {
        switch self.storage {
        case .one(let slot):
            return slot
        case .many(let slots):
            return slots[0]
        }
    }

    /// The least recently used slot.
    package var last: Int {
        switch self.storage {
        case .one(let slot):
            return slot
        case .many(let slots):
            return slots[slots.count - 1]
        }
    }

    /// The slots, most recently used first (allocates for one slot too; prefer `forEach`).
    package var slots: [Int] {
        switch self.storage {
        case .one(let slot):
            return [slot]
        case .many(let slots):
            return slots
        }
    }

    /// Calls `body` with each slot, most recently used first.
    package func forEach(_ body: (Int) throws -> Void) rethrows {
        switch self.storage {
        case .one(let slot):
            try body(slot)
        case .many(let slots):
            for slot in slots {
                try body(slot)
            }
        }
    }

    /// The first slot, most recently used first, for which `predicate` holds.
    package func first(where predicate: (Int) throws -> Bool) rethrows -> Int? {
        switch self.storage {
        case .one(let slot):
            return try predicate(slot) ? slot : nil
        case .many(let slots):
            return try slots.first(where: predicate)
        }
    }

    package func contains(_ slot: Int) -> Bool {
        self.first(where: { $0 == slot }) != nil
    }

    /// Adds `slot` as the most recently used.
    package mutating func prepend(_ slot: Int) {
        switch self.storage {
        case .one(let existing):
            self.storage = .many([slot, existing])
        case .many(var slots):
            // Drop our reference first so `slots` is uniquely referenced and not copied.
            self.storage = .one(-1)
            slots.insert(slot, at: 0)
            self.storage = .many(slots)
        }
    }

    /// Makes `slot` the most recently used; a no-op if it is not in the list.
    package mutating func moveToFront(_ slot: Int) {
        guard case .many(var slots) = self.storage, slots[0] != slot,
            let index = slots.firstIndex(of: slot)
        else {
            return
        }
        self.storage = .one(-1)
        slots.remove(at: index)
        slots.insert(slot, at: 0)
        self.storage = .many(slots)
    }

    /// Removes `slot`. Returns `false` when the list is now empty (the caller drops it); a
    /// slot that is not in the list leaves it unchanged.
    package mutating func remove(_ slot: Int) -> Bool {
        switch self.storage {
        case .one(let existing):
            return existing != slot
        case .many(var slots):
            guard let index = slots.firstIndex(of: slot) else {
                return true
            }
            self.storage = .one(-1)
            slots.remove(at: index)
            // Back to the inline form when one slot is left: frees the array.
            self.storage = slots.count == 1 ? .one(slots[0]) : .many(slots)
            return true
        }
    }
}
