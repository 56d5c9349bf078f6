import Synchronization

/// Bans kept beside the objects they apply to (Varnish persists its ban list with its
/// persistent storage for the same reason): a ban applies to every object stored before it,
/// so an object that outlives a restart must still meet the bans that outlived it.
extension DiskTier {
    /// One ban as the index keeps it.
    public struct StoredBan: Sendable, Equatable {
        public var id: Int64
        /// When it was added (seconds since the Unix epoch): it covers objects stored before.
        public var time: Double
        public var expression: String
    }

    /// The table, created when missing (an index written before bans were kept has none).
    static let bansTable = """
        CREATE TABLE IF NOT EXISTS bans(
            id INTEGER PRIMARY KEY,
            time REAL NOT NULL,
            expression TEXT NOT NULL
        );
        """

    /// Records a ban, committed with `synchronous=FULL` (as a purge): once this returns, a crash
    /// does not lose it. Returns its id.
    @discardableResult
    public func addBan(time: Double, expression: String) throws -> Int64 {
        try self.withWriter { _, db in
            try db.execute("PRAGMA synchronous = FULL", operation: "ban: synchronous=FULL")
            defer { try? db.execute("PRAGMA synchronous = NORMAL", operation: "ban: synchronous=NORMAL") }
            try db.execute(Self.bansTable, operation: "ban: create table")
            _ = try db.run("INSERT INTO bans(time, expression) VALUES (?, ?)", [.real(time), .text(expression)])
            return try db.scalar("SELECT last_insert_rowid()") ?? 0
        }
    }

    /// Every kept ban, oldest first.
    public func storedBans() throws -> [StoredBan] {
        try self.withWriter { _, db in
            try db.execute(Self.bansTable, operation: "bans: create table")
            var bans: [StoredBan] = []
            try db.query("SELECT id, time, expression FROM bans ORDER BY time, id") {
                bans.append(StoredBan(id: $0.int64(0), time: $0.double(1), expression: $0.text(2)))
            }
            return bans
        }
    }

    /// Drops the bans that cover no stored object: those older than the oldest object (all of
    /// them when nothing is stored). For start-up, when the disk tier is all there is. Returns
    /// how many were dropped. Finding the oldest object reads the whole `objects` table (no
    /// index on the time it was received: every insert would pay for one), so it is done only
    /// when a ban is kept: without one, start-up does not depend on how many objects there are.
    @discardableResult
    public func removeBansCoveringNothing() throws -> Int {
        try self.withWriter { _, db in
            try db.execute(Self.bansTable, operation: "bans: create table")
            guard try db.scalar("SELECT EXISTS (SELECT 1 FROM bans)") == 1 else { return 0 }
            var oldest: Double?
            try db.query("SELECT MIN(response_time) FROM objects") { row in
                if !row.isNull(0) { oldest = row.double(0) }
            }
            guard let oldest else { return try db.run("DELETE FROM bans") }
            return try db.run("DELETE FROM bans WHERE time < ?", [.real(oldest)])
        }
    }

    /// Drops bans older than `time` (no object they could cover is left). Returns how many.
    @discardableResult
    public func removeBans(before time: Double) throws -> Int {
        try self.withWriter { _, db in
            try db.execute(Self.bansTable, operation: "bans: create table")
            return try db.run("DELETE FROM bans WHERE time < ?", [.real(time)])
        }
    }
}

/// What the ban lurker needs: the rows in id order, a page at a time, and batch removal.
extension DiskTier {
    /// At most `limit` objects with ids above `id`, in id order, metadata only (the read
    /// connection: a scan never waits for the writer). Malformed rows are skipped.
    public func scan(after id: Int64, limit: Int) throws -> [DiskObjectHead] {
        let result: Result<[DiskObjectHead], any Error> = self.reader.withLock { connection in
            guard let connection else { return .failure(CacheStoreError.closed(path: self.directory)) }
            return Result {
                var heads: [DiskObjectHead] = []
                try connection.query(
                    "SELECT \(DiskObjectHead.columns) FROM objects WHERE id > ? ORDER BY id LIMIT ?",
                    [.integer(id), .integer(Int64(limit))]
                ) { row in
                    if let head = DiskObjectHead(row: row) { heads.append(head) }
                }
                return heads
            }
        }
        return try result.mapError(self.flagIfCorrupt).get()
    }

    /// When the oldest stored object was received, nil when none is stored (the read
    /// connection; a scan of the table, for the lurker's occasional check).
    public func oldestResponseTime() throws -> Double? {
        let result: Result<Double?, any Error> = self.reader.withLock { connection in
            guard let connection else { return .failure(CacheStoreError.closed(path: self.directory)) }
            return Result {
                var oldest: Double?
                try connection.query("SELECT MIN(response_time) FROM objects") { row in
                    if !row.isNull(0) { oldest = row.double(0) }
                }
                return oldest
            }
        }
        return try result.mapError(self.flagIfCorrupt).get()
    }

    /// Removes these objects (those a ban covers) in one transaction, with the index's normal
    /// sync: the ban that covers them is what makes their removal durable. Returns how many
    /// were still there.
    @discardableResult
    public func remove(_ heads: [DiskObjectHead]) throws -> Int {
        guard !heads.isEmpty else { return 0 }
        let removed = try self.withWriter { state, db in
            var removed: [Int64] = []
            try db.transaction("remove banned objects") {
                removed = try self.deleteRows(heads.map(\.fileID), &state, db)
            }
            state.counters.purged += removed.count
            try self.refreshTotals(&state, db)
            return removed
        }
        self.unlinkBodies(removed)
        return removed.count
    }

    /// Drops one kept ban (the lurker found that it covers nothing any more).
    public func removeBan(time: Double, expression: String) throws {
        try self.withWriter { _, db in
            try db.execute(Self.bansTable, operation: "bans: create table")
            _ = try db.run("DELETE FROM bans WHERE time = ? AND expression = ?", [.real(time), .text(expression)])
        }
    }
}
