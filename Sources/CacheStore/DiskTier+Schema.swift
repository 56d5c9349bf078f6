#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The index schema, its version, and what start-up does with an index it cannot use.
///
/// Start-up reads the index only (schema, one totals row, `MAX(id)`): its cost does not grow with
/// the number of objects, and no body file is looked at. What it finds decides what happens:
///
/// | found                                                    | action                                   |
/// |----------------------------------------------------------|------------------------------------------|
/// | no file, or an empty database                            | create schema v1                          |
/// | `application_id` = LACQ and `user_version` = 1           | use it                                    |
/// | garbage, a damaged header (SQLITE_NOTADB/CORRUPT)        | quarantine, start empty                   |
/// | another application's database (foreign tables/app id)  | quarantine, start empty                   |
/// | ours but from a newer Lacquer (`user_version` > 1)       | quarantine, start empty                   |
/// | ours but older (`user_version` 0: the pre-release layout, |  rebuild in place: drop every table,    |
/// |   an `objects` table without checksums)                 |  create v1, start empty                   |
/// | `index.sqlite.damaged` flag (a running tier met SQLITE_CORRUPT) | quarantine, start empty            |
///
/// Quarantine renames `index.sqlite` (and its -wal/-shm) to `index.sqlite.corrupt-<UTC time>`, so
/// nothing is destroyed that someone might want to inspect. An older schema is rebuilt rather
/// than migrated: its rows lack per-block checksums, and computing them would mean reading every
/// body at start-up. Its body files become orphans that `sweepOrphans()` removes in the background.
/// Every such decision is recorded, with its reason, in `DiskTier.startupWarnings`.
enum DiskIndexSchema {
    /// The schema this code writes (`PRAGMA user_version`).
    static let version: Int64 = 1
    /// `PRAGMA application_id`: "LACQ", marks the file as a Lacquer disk-cache index.
    static let applicationID: Int64 = 0x4C41_4351
    static let fileName = "index.sqlite"
    /// Written when a running tier meets a damaged page; the next start quarantines the index.
    static let corruptionFlagName = "index.sqlite.damaged"

    static let createStatements = """
        CREATE TABLE objects(
            id INTEGER PRIMARY KEY,
            key BLOB NOT NULL,
            digest INTEGER NOT NULL,
            variant TEXT NOT NULL,
            vary_names TEXT NOT NULL,
            status INTEGER NOT NULL,
            reason TEXT NOT NULL,
            headers BLOB NOT NULL,
            body_length INTEGER NOT NULL,
            checksums BLOB NOT NULL,
            request_time REAL NOT NULL,
            response_time REAL NOT NULL,
            origin REAL NOT NULL,
            ttl REAL NOT NULL,
            grace REAL NOT NULL,
            keep REAL NOT NULL,
            must_revalidate INTEGER NOT NULL,
            expires REAL NOT NULL,
            last_access REAL NOT NULL,
            size INTEGER NOT NULL
        );
        CREATE INDEX objects_digest ON objects(digest);
        CREATE INDEX objects_last_access ON objects(last_access);
        CREATE INDEX objects_expires ON objects(expires);
        CREATE TABLE totals(
            id INTEGER PRIMARY KEY CHECK (id = 0),
            objects INTEGER NOT NULL,
            bytes INTEGER NOT NULL
        );
        INSERT INTO totals VALUES (0, 0, 0);
        CREATE TRIGGER objects_insert AFTER INSERT ON objects BEGIN
            UPDATE totals SET objects = objects + 1, bytes = bytes + NEW.size WHERE id = 0;
        END;
        CREATE TRIGGER objects_delete AFTER DELETE ON objects BEGIN
            UPDATE totals SET objects = objects - 1, bytes = bytes - OLD.size WHERE id = 0;
        END;
        CREATE TRIGGER objects_resize AFTER UPDATE OF size ON objects BEGIN
            UPDATE totals SET bytes = bytes - OLD.size + NEW.size WHERE id = 0;
        END;
        """

    static let insertObject = """
        INSERT INTO objects(id, key, digest, variant, vary_names, status, reason, headers, body_length, \
        checksums, request_time, response_time, origin, ttl, grace, keep, must_revalidate, expires, \
        last_access, size, inline_body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        """

    /// Pragmas every connection gets: WAL, NORMAL sync (a commit is durable at the next
    /// checkpoint; a crash loses at most the last commits, never consistency), a busy timeout
    /// so the read connection waits out a checkpoint, and a cap on the WAL left on disk.
    /// The writer's page cache is 256 KiB (SQLite's default is 2 MiB): an insert touches the
    /// right edge of the row B-tree and one path down each index, and pages it lacks come from
    /// the kernel's page cache. The reader keeps 512 KiB (`readerPragmas`): the upper levels of
    /// the indexes every lookup walks. What is saved is memory-tier room for more objects.
    static let connectionPragmas = """
        PRAGMA busy_timeout = 5000;
        PRAGMA cache_size = -\(writerCacheKiB);
        PRAGMA synchronous = NORMAL;
        PRAGMA journal_size_limit = 67108864;
        PRAGMA temp_store = MEMORY;
        """

    /// The writer's page cache while stores come one at a time, in KiB.
    static let writerCacheKiB = 256
    /// The writer's page cache while it works through a backlog of stores (`DiskTier.useBacklogCache`),
    /// in KiB: with a million rows, the inserts and evictions of one group commit touch pages of
    /// every index all over it, and with 256 KiB most were read again from the kernel each time.
    static let backlogCacheKiB = 4096

    /// The read connection's: the common pragmas, a 512 KiB page cache, and no writes.
    static let readerPragmas = connectionPragmas + """
        PRAGMA cache_size = -512;
        PRAGMA query_only = ON;
        """

    /// A reader that must never wait (it runs on an event loop): no busy wait and no memory map
    /// (a fault on a mapped page that is not cached would wait for the disk). Its page cache
    /// holds up to 4 MiB: these connections answer the disk hits, and a page they keep is read
    /// without a system call or a copy from the kernel. SQLite keeps the cache while the
    /// database is unchanged (`DiskTier.NowaitReader`); it is allocated as pages are read, so
    /// an index that is not read from costs nothing. Another 4 MiB (`DiskTier.SnapshotRows`)
    /// holds rows already decoded, their small bodies assembled from their pages and verified,
    /// for as long.
    static let nowaitReaderPragmas = readerPragmas + """
        PRAGMA busy_timeout = 0;
        PRAGMA mmap_size = 0;
        PRAGMA cache_size = -4096;
        """

    /// What start-up found in an existing index file.
    enum Verdict {
        case ready
        case empty
        case rebuild(reason: String)
        case quarantine(reason: String)
    }

    /// Opens the writer connection on `directory/index.sqlite`, quarantining or rebuilding an
    /// unusable index as the table above says; appends what it did to `warnings`.
    static func openWriter(directory: String, warnings: inout [String]) throws -> SQLiteConnection {
        let path = directory + "/" + self.fileName
        let flag = directory + "/" + self.corruptionFlagName
        if access(flag, F_OK) == 0 {
            defer { unlink(flag) }
            if access(path, F_OK) == 0 {
                let reason = "a previous run found it damaged: " + self.readSmallFile(flag)
                return try self.quarantineAndCreate(path: path, reason: reason, warnings: &warnings)
            }
        }
        switch try self.inspect(path: path) {
        case .success(let (connection, verdict)):
            switch verdict {
            case .ready:
                return connection
            case .empty:
                try self.create(connection)
                return connection
            case .rebuild(let reason):
                try self.dropEverything(connection)
                try self.create(connection)
                warnings.append("disk cache index '\(path)' \(reason); it was rebuilt empty (old body files are removed by the background orphan sweep)")
                return connection
            case .quarantine(let reason):
                connection.close()
                return try self.quarantineAndCreate(path: path, reason: reason, warnings: &warnings)
            }
        case .failure(let error):
            return try self.quarantineAndCreate(path: path, reason: error.description, warnings: &warnings)
        }
    }

    /// Opens a connection and classifies the file. Corruption is returned as a failure (the
    /// caller quarantines); any other error (permissions, I/O) is thrown.
    private static func inspect(path: String) throws -> Result<(SQLiteConnection, Verdict), CacheStoreError> {
        let connection = try SQLiteConnection(path: path)
        do {
            try connection.execute(self.connectionPragmas, operation: "configure index")
            // Fails with SQLITE_NOTADB on a file that is not a database.
            try connection.execute("PRAGMA journal_mode = WAL", operation: "enable WAL")
            let applicationID = try connection.scalar("PRAGMA application_id") ?? 0
            let userVersion = try connection.scalar("PRAGMA user_version") ?? 0
            var tables: Set<String> = []
            try connection.query("SELECT name FROM sqlite_master WHERE type = 'table'") { tables.insert($0.text(0)) }
            return .success((connection, try self.verdict(connection, applicationID, userVersion, tables)))
        } catch let error as CacheStoreError where error.isIndexCorruption {
            connection.close()
            return .failure(error)
        } catch {
            connection.close()
            throw error
        }
    }

    private static func verdict(
        _ connection: SQLiteConnection,
        _ applicationID: Int64,
        _ userVersion: Int64,
        _ tables: Set<String>
    ) throws -> Verdict {
        if applicationID == 0 && userVersion == 0 {
            if tables.isEmpty { return .empty }
            if tables == ["objects"] || tables == ["objects", "meta"] {
                return .rebuild(reason: "has the old schema version 0")
            }
            return .quarantine(reason: "is not a Lacquer index (it holds tables \(tables.sorted().joined(separator: ", ")))")
        }
        guard applicationID == self.applicationID else {
            return .quarantine(reason: "is not a Lacquer index (application_id \(applicationID))")
        }
        if userVersion > self.version {
            return .quarantine(reason: "was written by a newer Lacquer (schema version \(userVersion), this one reads \(self.version))")
        }
        if userVersion < self.version {
            return .rebuild(reason: "has the old schema version \(userVersion)")
        }
        guard tables.isSuperset(of: ["objects", "totals"]) else {
            return .quarantine(reason: "is missing tables (found \(tables.sorted().joined(separator: ", ")))")
        }
        guard try connection.scalar("SELECT COUNT(*) FROM totals WHERE id = 0") == 1 else {
            return .quarantine(reason: "has no totals row")
        }
        // What the tier reads next; a damaged page on these paths is found here, not in `init`.
        _ = try connection.scalar("SELECT MAX(id) FROM objects")
        return .ready
    }

    private static func create(_ connection: SQLiteConnection) throws {
        try connection.transaction("create index schema") {
            try connection.execute(self.createStatements, operation: "create index schema")
            try connection.execute("PRAGMA application_id = \(self.applicationID)", operation: "set application_id")
            try connection.execute("PRAGMA user_version = \(self.version)", operation: "set user_version")
        }
    }

    private static func dropEverything(_ connection: SQLiteConnection) throws {
        var drops: [String] = []
        try connection.query("SELECT type, name FROM sqlite_master WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%'") {
            drops.append("DROP \($0.text(0) == "view" ? "VIEW" : "TABLE") IF EXISTS \"\($0.text(1))\";")
        }
        try connection.transaction("drop old index schema") {
            try connection.execute(drops.joined(separator: "\n"), operation: "drop old index schema")
        }
    }

    private static func quarantineAndCreate(path: String, reason: String, warnings: inout [String]) throws
        -> SQLiteConnection
    {
        let target = self.quarantineName(for: path)
        if rename(path, target) != 0 {
            throw CacheStoreError.indexCorrupt(
                path: path,
                reason: "\(reason); moving it aside to '\(target)' failed: \(BodyFile.describe(errno))"
            )
        }
        for suffix in ["-wal", "-shm"] where access(path + suffix, F_OK) == 0 {
            if rename(path + suffix, target + suffix) != 0 { unlink(path + suffix) }
        }
        warnings.append(CacheStoreError.indexCorrupt(path: path, reason: reason).description + " (moved to '\(target)')")
        let connection = try SQLiteConnection(path: path)
        try connection.execute(self.connectionPragmas, operation: "configure index")
        try connection.execute("PRAGMA journal_mode = WAL", operation: "enable WAL")
        try self.create(connection)
        return connection
    }

    private static func readSmallFile(_ path: String) -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return "" }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: 4096)
        let count = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        return String(decoding: bytes.prefix(max(0, count)), as: UTF8.self)
    }

    /// `index.sqlite.corrupt-20250101T120000Z`, with `-2`, `-3`… if that name is taken.
    private static func quarantineName(for path: String) -> String {
        var seconds = time(nil)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        var buffer = [CChar](repeating: 0, count: 32)
        let count = strftime(&buffer, buffer.count, "%Y%m%dT%H%M%SZ", &parts)
        let stamp = String(decoding: buffer.prefix(count).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        var candidate = path + ".corrupt-" + stamp
        var attempt = 2
        while access(candidate, F_OK) == 0 {
            candidate = path + ".corrupt-" + stamp + "-\(attempt)"
            attempt += 1
        }
        return candidate
    }
}
