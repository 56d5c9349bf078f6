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

    /// Marks rows a soft purge made stale (so a stale answer from one can say so). Added to an
    /// index that predates it; existing rows read 0.
    static func addSoftPurgedColumn(_ db: SQLiteConnection) throws {
        try self.addObjectsColumn("soft_purged", db)
    }

    /// Adds the 0/1 column `name` to `objects` when an index that predates it lacks it.
    private static func addObjectsColumn(_ name: String, _ db: SQLiteConnection) throws {
        var present = false
        try db.query("PRAGMA table_info(objects)") { row in
            if row.text(1) == name { present = true }
        }
        if !present {
            try db.execute("ALTER TABLE objects ADD COLUMN \(name) INTEGER NOT NULL DEFAULT 0", operation: "add \(name) column")
        }
    }

    /// Small objects' bodies (`DiskTier.Configuration.inlineBodyLimit`) live in the index, in a
    /// table of their own keyed by the object's id, so the objects table (what lookups, scans and
    /// the ban lurker read) stays metadata only: no file, no inode, one write per object instead
    /// of a file created, written and renamed. `inline_body` says which rows have one; a trigger
    /// removes the body with its row. Added to an index that predates it; its rows read 0.
    static func addInlineBodies(_ db: SQLiteConnection) throws {
        try self.addObjectsColumn("inline_body", db)
        try db.execute(
            """
            CREATE TABLE IF NOT EXISTS bodies(id INTEGER PRIMARY KEY, body BLOB NOT NULL);
            CREATE TRIGGER IF NOT EXISTS objects_unbody AFTER DELETE ON objects WHEN OLD.inline_body BEGIN
                DELETE FROM bodies WHERE id = OLD.id;
            END;
            """, operation: "create bodies table")
    }

    /// Purges by surrogate key still being carried out: each removes the objects tagged with its
    /// key that were received at or before its time. The row is committed before a purge is
    /// reported and dropped once every such object is gone, so a purge interrupted by a crash
    /// is resumed at the next start (and lookups hide what it covers until then).
    static let tagPurgesTable = """
        CREATE TABLE IF NOT EXISTS tag_purges(
            tag TEXT NOT NULL,
            time REAL NOT NULL,
            soft INTEGER NOT NULL DEFAULT 0,
            grace REAL NOT NULL DEFAULT 0
        );
        """

    /// One recorded purge by surrogate key.
    public struct TagPurge: Sendable, Equatable, Hashable {
        public var tag: String
        public var time: Double
        /// A soft purge makes the objects stale instead of removing them, with at least `grace`.
        public var soft: Bool
        public var grace: Double

        public init(tag: String, time: Double, soft: Bool = false, grace: Double = 0) {
            self.tag = tag
            self.time = time
            self.soft = soft
            self.grace = grace
        }
    }

    /// Records a purge of `keys` at `time`, committed with `synchronous=FULL`, and returns how
    /// many stored objects carry any of them. Its cost does not depend on how many objects it
    /// covers: `continueTagPurge` removes them afterwards, a batch at a time.
    public func recordTagPurge(_ keys: [String], time: Double, soft: Bool = false, minimumGrace: Double = 0) throws -> Int {
        guard !keys.isEmpty else { return 0 }
        return try self.withWriter { _, db in
            try db.execute("PRAGMA synchronous = FULL", operation: "key purge: synchronous=FULL")
            defer { try? db.execute("PRAGMA synchronous = NORMAL", operation: "key purge: synchronous=NORMAL") }
            var count = 0
            try db.transaction("record purge by surrogate key") {
                for key in keys {
                    try db.run(
                        "INSERT INTO tag_purges(tag, time, soft, grace) VALUES (?, ?, ?, ?)",
                        [.text(key), .real(time), .integer(soft ? 1 : 0), .real(minimumGrace)])
                }
                try db.query(
                    "SELECT COUNT(*) FROM (\(Self.taggedSelect(keys.count)))", keys.map { .text($0) }
                ) { count = Int($0.int64(0)) }
            }
            return count
        }
    }

    /// Every purge by surrogate key not yet carried out to the end.
    public func storedTagPurges() throws -> [TagPurge] {
        try self.withWriter { _, db in
            var purges: [TagPurge] = []
            try db.query("SELECT tag, time, soft, grace FROM tag_purges ORDER BY time") {
                purges.append(TagPurge(tag: $0.text(0), time: $0.double(1), soft: $0.int64(2) != 0, grace: $0.double(3)))
            }
            return purges
        }
    }

    /// Removes (soft: makes stale) at most `limit` of the objects `purge` covers, in one
    /// transaction; once none is left, drops its record. Returns how many objects it changed
    /// (fewer than `limit`: it is done).
    @discardableResult
    public func continueTagPurge(_ purge: TagPurge, limit: Int) throws -> Int {
        if purge.soft {
            return try self.withWriter { _, db in
                var changed = 0
                try db.transaction("carry out soft purge by surrogate key") {
                    changed = try db.run(
                        """
                        UPDATE objects SET ttl = MAX(0, ? - origin), grace = MAX(grace, ?), \
                        expires = origin + MAX(0, ? - origin) + MAX(grace, ?) + keep, soft_purged = 1 \
                        WHERE id IN (SELECT objects.id FROM tags JOIN objects ON objects.id = tags.id \
                        WHERE tags.tag = ? AND objects.response_time <= ? AND objects.origin + objects.ttl > ? LIMIT ?)
                        """,
                        [.real(purge.time), .real(purge.grace), .real(purge.time), .real(purge.grace), .text(purge.tag),
                         .real(purge.time), .real(purge.time), .integer(Int64(limit))])
                    if changed < limit {
                        try db.run(
                            "DELETE FROM tag_purges WHERE tag = ? AND time = ? AND soft = 1", [.text(purge.tag), .real(purge.time)])
                    }
                }
                return changed
            }
        }
        let removed = try self.withWriter { state, db in
            var ids: [Int64] = []
            try db.transaction("carry out purge by surrogate key") {
                try db.query(
                    """
                    SELECT objects.id FROM tags JOIN objects ON objects.id = tags.id \
                    WHERE tags.tag = ? AND objects.response_time <= ? LIMIT ?
                    """,
                    [.text(purge.tag), .real(purge.time), .integer(Int64(limit))]
                ) { ids.append($0.int64(0)) }
                ids = try self.deleteRows(ids, &state, db)
                if ids.count < limit {
                    try db.run("DELETE FROM tag_purges WHERE tag = ? AND time = ? AND soft = 0", [.text(purge.tag), .real(purge.time)])
                }
            }
            state.counters.purged += ids.count
            try self.refreshTotals(&state, db)
            return ids
        }
        self.unlinkBodies(removed)
        return removed.count
    }

    /// Makes every variant of `key` stale at `now` (kept for revalidation, and servable stale
    /// for at least `minimumGrace` seconds), committed with `synchronous=FULL`. Returns how many
    /// variants were fresh.
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
                    expires = origin + MAX(0, ? - origin) + MAX(grace, ?) + keep, soft_purged = 1 \
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
