import Synchronization

/// Purges by surrogate key and soft purges. Every one commits with `synchronous=FULL`, as a
/// purge by URL does: once it returns, a crash cannot bring back what it removed or made stale.
extension DiskTier {
    /// The surrogate key index: one row per key of each object, removed with the object.
    /// Created when missing (an index written before keys were indexed has none).
    static let tagsTable = """
        CREATE TABLE IF NOT EXISTS tags(
            tag TEXT NOT NULL,
            id INTEGER NOT NULL
        );
        CREATE INDEX IF NOT EXISTS tags_tag ON tags(tag);
        CREATE INDEX IF NOT EXISTS tags_id ON tags(id);
        CREATE TRIGGER IF NOT EXISTS objects_untag AFTER DELETE ON objects BEGIN
            DELETE FROM tags WHERE id = OLD.id;
        END;
        """

    /// Removes every object tagged with any of `keys`. Returns how many went.
    @discardableResult
    public func removeTagged(_ keys: [String]) throws -> Int {
        guard !keys.isEmpty else { return 0 }
        let removed = try self.withWriter { state, db in
            try db.execute("PRAGMA synchronous = FULL", operation: "key purge: synchronous=FULL")
            defer { try? db.execute("PRAGMA synchronous = NORMAL", operation: "key purge: synchronous=NORMAL") }
            var ids: [Int64] = []
            try db.transaction("purge by surrogate key") {
                try db.query(Self.taggedSelect(keys.count), keys.map { .text($0) }) { ids.append($0.int64(0)) }
                for id in ids {
                    try db.run("DELETE FROM objects WHERE id = ?", [.integer(id)])
                }
            }
            for id in ids { state.pendingTouches[id] = nil }
            state.counters.purged += ids.count
            try self.refreshTotals(&state, db)
            return ids
        }
        self.unlinkBodies(removed)
        return removed.count
    }

    /// Makes every object tagged with any of `keys` stale at `now` (kept for revalidation, and
    /// servable stale for at least `minimumGrace` seconds). Returns how many objects were fresh.
    @discardableResult
    public func softPurgeTagged(_ keys: [String], now: Double, minimumGrace: Double) throws -> Int {
        guard !keys.isEmpty else { return 0 }
        return try self.softPurge(
            where: "id IN (\(Self.taggedSelect(keys.count)))", keys.map { .text($0) }, now: now, minimumGrace: minimumGrace)
    }

    /// Makes every variant of `key` stale at `now`, as `softPurgeTagged`.
    @discardableResult
    public func softPurge(key: CacheKey, now: Double, minimumGrace: Double) throws -> Int {
        try self.softPurge(
            where: "digest = ? AND key = ?", [.integer(Int64(bitPattern: key.digest)), .blob(Array(key.canonical.utf8))],
            now: now, minimumGrace: minimumGrace)
    }

    private func softPurge(where condition: String, _ values: [SQLiteValue], now: Double, minimumGrace: Double) throws -> Int {
        try self.withWriter { _, db in
            try db.execute("PRAGMA synchronous = FULL", operation: "soft purge: synchronous=FULL")
            defer { try? db.execute("PRAGMA synchronous = NORMAL", operation: "soft purge: synchronous=NORMAL") }
            var changed = 0
            try db.transaction("soft purge") {
                // ttl ends now; grace is at least the minimum; `expires` follows.
                changed = try db.run(
                    """
                    UPDATE objects SET ttl = MAX(0, ? - origin), grace = MAX(grace, ?), \
                    expires = origin + MAX(0, ? - origin) + MAX(grace, ?) + keep \
                    WHERE \(condition) AND origin + ttl > ?
                    """,
                    [.real(now), .real(minimumGrace), .real(now), .real(minimumGrace)] + values + [.real(now)])
            }
            return changed
        }
    }

    /// The ids of the objects tagged with any of `count` keys (bound in order).
    static func taggedSelect(_ count: Int) -> String {
        "SELECT DISTINCT id FROM tags WHERE tag IN (" + Array(repeating: "?", count: count).joined(separator: ", ") + ")"
    }
}
