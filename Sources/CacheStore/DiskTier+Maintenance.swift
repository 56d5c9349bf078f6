#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Synchronization

/// Purge, expiry, LRU bookkeeping, eviction and the orphan sweep.
extension DiskTier {
    /// Rows deleted per transaction by `evict` and `removeExpired`, so the writer lock is never
    /// held for long and lookups and stores interleave with a big sweep.
    public static let maintenanceBatch = 256
    /// A touch within this many seconds of the last recorded one is skipped.
    public static let touchInterval: Double = 60
    /// Pending touches are written in one transaction once this many have accumulated.
    static let touchBatch = 128

    /// Purges every variant of `key`. The commit runs with `synchronous=FULL`, so a purged object
    /// never comes back after a crash or power loss. Returns the number of objects removed.
    @discardableResult
    public func remove(key: CacheKey) throws -> Int {
        try self.remove(keys: [key])
    }

    /// Purges every variant of each of `keys` (a sliced object's slices) in one transaction,
    /// synced like `remove(key:)`. Returns the number of objects removed.
    @discardableResult
    public func remove(keys: [CacheKey]) throws -> Int {
        try self.purge(
            keys.map { key in
                ("SELECT id FROM objects WHERE digest = ? AND key = ?", [.integer(Int64(bitPattern: key.digest)), .blob(Array(key.canonical.utf8))])
            })
    }

    /// Purges one stored object (one variant), `synchronous=FULL` like `remove(key:)`.
    /// Returns true if it was still there.
    @discardableResult
    public func remove(_ head: DiskObjectHead) throws -> Bool {
        try self.purge([("SELECT id FROM objects WHERE id = ?", [.integer(head.fileID)])]) > 0
    }

    private func purge(_ selects: [(String, [SQLiteValue])]) throws -> Int {
        let removed = try self.withWriter { state, db in
            try db.execute("PRAGMA synchronous = FULL", operation: "purge: synchronous=FULL")
            defer { try? db.execute("PRAGMA synchronous = NORMAL", operation: "purge: synchronous=NORMAL") }
            var ids: [Int64] = []
            try db.transaction("purge") {
                for (select, values) in selects {
                    try db.query(select, values) { ids.append($0.int64(0)) }
                }
                ids = try self.deleteRows(ids, &state, db)
            }
            state.counters.purged += ids.count
            try self.refreshTotals(&state, db)
            return ids
        }
        self.unlinkBodies(removed)
        return removed.count
    }

    /// Deletes these rows, in the caller's transaction, and forgets their pending LRU touches.
    /// Returns the ids that were still there. Their body files are the caller's to unlink
    /// (`unlinkBodies`) once the writer is released.
    func deleteRows(_ ids: [Int64], _ state: inout WriterState, _ db: SQLiteConnection) throws -> [Int64] {
        var deleted: [Int64] = []
        deleted.reserveCapacity(ids.count)
        for id in ids where try db.run("DELETE FROM objects WHERE id = ?", [.integer(id)]) > 0 {
            deleted.append(id)
        }
        self.touches.withLock { pending in
            for id in deleted { pending[id] = nil }
        }
        return deleted
    }

    /// Removes objects of no further use (`origin + ttl + grace + keep < now`), `maintenanceBatch`
    /// rows per transaction, releasing the writer between batches. Returns the number removed.
    @discardableResult
    public func removeExpired(now: Double = DiskTier.wallClock()) throws -> Int {
        var total = 0
        while true {
            let removed = try self.withWriter { state, db in
                var ids: [Int64] = []
                try db.transaction("remove expired") {
                    try db.query(
                        "SELECT id FROM objects WHERE expires < ? ORDER BY expires LIMIT ?",
                        [.real(now), .integer(Int64(Self.maintenanceBatch))]
                    ) { ids.append($0.int64(0)) }
                    ids = try self.deleteRows(ids, &state, db)
                }
                state.counters.expired += ids.count
                try self.refreshTotals(&state, db)
                return ids
            }
            self.unlinkBodies(removed)
            total += removed.count
            if removed.count < Self.maintenanceBatch { return total }
        }
    }

    /// Whether a use at `now` of an object last used at `lastAccess` is worth recording.
    public static func touchDue(lastAccess: Double, now: Double) -> Bool {
        now - lastAccess >= Self.touchInterval
    }

    /// Records a use of `head` for LRU eviction without touching the index: uses within
    /// `touchInterval` seconds of the last recorded one are skipped, the rest wait in memory and
    /// are written together. Cheap enough for an event loop (one uncontended lock).
    ///
    /// - Returns: true when this use filled a batch: the caller should run `flushTouches()`
    ///   where blocking is allowed (eviction and `close()` flush too).
    public func noteUse(_ head: DiskObjectHead, now: Double = DiskTier.wallClock()) -> Bool {
        self.touches.withLock { pending in
            guard Self.touchDue(lastAccess: pending[head.fileID] ?? head.lastAccess, now: now) else { return false }
            pending[head.fileID] = now
            return pending.count == Self.touchBatch
        }
    }

    /// `noteUse`, then the batch written at once if it is full.
    public func touch(_ head: DiskObjectHead, now: Double = DiskTier.wallClock()) throws {
        if self.noteUse(head, now: now) {
            try self.flushTouches()
        }
    }

    /// Writes pending LRU touches now (eviction and `close()` do this themselves).
    public func flushTouches() throws {
        try self.withWriter { state, db in try self.flushTouches(&state, db) }
    }

    func flushTouches(_ state: inout WriterState, _ db: SQLiteConnection) throws {
        let touches = self.touches.withLock { pending in
            defer { pending.removeAll(keepingCapacity: true) }
            return pending
        }
        guard !touches.isEmpty else { return }
        try db.transaction("touch") {
            for (id, time) in touches {
                try db.run(
                    "UPDATE objects SET last_access = ? WHERE id = ? AND last_access < ?",
                    [.real(time), .integer(id), .real(time)]
                )
            }
        }
    }

    /// Evicts least-recently-used objects until the total is within `capacityBytes`, in batches.
    /// `store` calls it when a store goes over capacity; the server may also call it in the
    /// background. Returns the number of objects evicted.
    @discardableResult
    public func evict() throws -> Int {
        var total = 0
        while true {
            let evicted = try self.withWriter { state, db -> [Int64] in
                try self.flushTouches(&state, db)
                var excess = state.bytes - self.configuration.capacityBytes
                guard excess > 0 else { return [] }
                var ids: [Int64] = []
                try db.transaction("evict") {
                    try db.query(
                        "SELECT id, size FROM objects ORDER BY last_access, id LIMIT ?",
                        [.integer(Int64(Self.maintenanceBatch))]
                    ) { row in
                        guard excess > 0 else { return }
                        ids.append(row.int64(0))
                        excess -= row.int64(1)
                    }
                    ids = try self.deleteRows(ids, &state, db)
                }
                state.counters.evictions += ids.count
                try self.refreshTotals(&state, db)
                return ids
            }
            self.unlinkBodies(evicted)
            total += evicted.count
            if evicted.isEmpty { return total }
        }
    }

    /// Removes files without an index row: temp files a crash left behind, and bodies whose row
    /// was never committed or whose unlink was lost. Walks the whole directory tree, so the server
    /// runs it in the background, never on the start-up path. Returns the number of files removed.
    @discardableResult
    public func sweepOrphans() throws -> Int {
        var removed = 0
        // Temp files: every one not being written right now is debris.
        let tmpDirectory = self.directory + "/tmp"
        removed += try self.removeOrphans(in: tmpDirectory, BodyFile.listDirectory(tmpDirectory))
        let bodies = self.directory + "/bodies"
        for first in BodyFile.listDirectory(bodies) {
            for second in BodyFile.listDirectory(bodies + "/" + first) {
                let shard = bodies + "/" + first + "/" + second
                removed += try self.removeOrphans(in: shard, BodyFile.listDirectory(shard))
            }
        }
        return removed
    }

    /// Checks `names` against the index and unlinks the orphans, a bounded batch per lock hold.
    /// The unlink happens under the writer lock: a store could otherwise reuse the id of an
    /// orphan left by a crash (ids restart after `MAX(id)`) between the check and the unlink.
    private func removeOrphans(in directory: String, _ names: [String]) throws -> Int {
        let candidates = names.compactMap { name in BodyFile.id(fromFileName: name).map { (name, $0) } }
        var removed = 0
        var start = 0
        while start < candidates.count {
            let batch = candidates[start..<min(start + Self.maintenanceBatch, candidates.count)]
            start += batch.count
            removed += try self.withWriter { state, db in
                var count = 0
                for (name, id) in batch where !state.inFlight.contains(id) {
                    let isTemp = name.hasSuffix(".tmp")
                    if !isTemp, try db.scalar("SELECT 1 FROM objects WHERE id = ?", [.integer(id)]) != nil {
                        continue
                    }
                    if unlink(directory + "/" + name) == 0 { count += 1 }
                }
                return count
            }
        }
        return removed
    }
}
