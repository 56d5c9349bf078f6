#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSQLite
import CSQLiteNoWait
import NIOCore
import Synchronization

/// The disk tier: objects that outlive the memory tier and a restart (Varnish's file stevedore,
/// with a persistent index).
///
/// Bodies are files under `<directory>/bodies/`, metadata rows in a SQLite index
/// (`<directory>/index.sqlite`, WAL). The API is synchronous and thread safe; the server calls
/// it from an `NIOThreadPool`, never from an event loop.
///
/// Guarantees:
/// - **Crash consistency.** `store` writes the body to a temp file, fsyncs it if the policy says so,
///   renames it into place and only then commits the index row. A crash leaves the old state or the
///   new, never a row pointing at a partial body; leftovers are files without rows, which
///   `sweepOrphans()` removes in the background.
/// - **Verified reads.** Every body carries a CRC32C per 64 KiB block; readers check the length and
///   each block before returning its bytes, and drop the object on a mismatch.
/// - **Purges stick.** `remove(key:)` / `remove(_:)` commit with `synchronous=FULL`.
/// - **Fast start-up.** Opening reads the schema, one totals row and `MAX(id)`, whatever the
///   number of objects; it never lists the body directories.
/// - **One owner.** `flock(LOCK_EX|LOCK_NB)` on `lacquer.lock` keeps a second tier, in this
///   process or another, off the directory until `close()`.
///
/// Concurrency: one writer connection behind `writer` (one writer at a time, as SQLite allows
/// anyway) and a separate read connection behind `reader`. In WAL mode a reader sees the last
/// commit without waiting for the writer, so a lookup on the request path is never queued behind an
/// eviction batch, an expiry sweep or a FULL-synced purge commit. Body I/O (writing temp files,
/// reading blocks, unlinking) happens outside both locks except where ordering needs it.
///
/// Lookups that never wait: `lookupWithoutWaiting` runs the lookup on the caller's thread (an
/// event loop) through read connections whose reads fail instead of waiting for the disk (the
/// `lacquer-nowait` VFS, preadv2 with RWF_NOWAIT). When the index pages it needs are in the
/// kernel's page cache, which they are for a tier in use, a disk hit costs no thread hop; when
/// one is not, the caller repeats the lookup with `lookup` on a thread that may block.
///
/// Lifecycle of an object: `store` (tmp → rename → row) → `lookup` (row → `DiskObjectHead`) →
/// `openBody`/`load` (verified bytes) and `touch` (LRU) → gone by `remove`, `removeExpired`,
/// `evict`, replacement by a newer copy of the same variant, or an integrity failure on read.
public final class DiskTier: Sendable {
    /// When body files are fsynced before their row is committed.
    public enum FsyncPolicy: Sendable, Equatable {
        /// Never: a process crash loses nothing (the page cache survives), a power loss may leave
        /// a row whose body is incomplete, which the checksum catches on read (the object is then
        /// dropped and fetched again). The default: a cache can refetch, and fsync per object is costly.
        case none
        /// fsync the body and its directory before the row is committed: rows survive a power
        /// loss with their bodies intact, at the cost of one or two fsyncs per stored object.
        case always
    }

    public struct Configuration: Sendable {
        /// The cache directory; created (with parents) if missing.
        public var directory: String
        /// The most bytes (bodies rounded up to 4 KiB, plus metadata) the tier keeps before evicting LRU objects.
        public var capacityBytes: Int64
        /// Objects with larger bodies are refused (`store` returns false).
        public var maxObjectBytes: Int64
        /// Body fsync policy; index commits are `synchronous=NORMAL`, purges always `FULL`.
        public var fsync: FsyncPolicy
        /// Stop writing when less than this fraction of the filesystem would stay free (0 turns it off).
        public var freeSpaceFloor: Double
        /// The response fields whose surrogate keys are indexed beside each object.
        public var surrogateKeyFields: SurrogateKeyFields = .none
        /// Bodies up to this size are kept in the index row instead of a file of their own
        /// (SQLite reads and writes small blobs faster than a file system opens files, and a
        /// small file costs a whole block and an inode). 0 keeps every body in a file.
        public var inlineBodyLimit: Int64 = 16 * 1024
        /// Read connections for `lookupWithoutWaiting` (one per event loop is plenty); 0 sends
        /// every lookup to `lookup`.
        public var nowaitReaders = 2

        public init(
            directory: String,
            capacityBytes: Int64 = 1 << 30,
            maxObjectBytes: Int64 = 1 << 30,
            fsync: FsyncPolicy = .none,
            freeSpaceFloor: Double = 0.10
        ) {
            self.directory = directory
            self.capacityBytes = capacityBytes
            self.maxObjectBytes = maxObjectBytes
            self.fsync = fsync
            self.freeSpaceFloor = freeSpaceFloor
        }
    }

    /// Bookkeeping bytes charged per object on top of its body and metadata.
    public static let rowOverhead: Int64 = 256

    public let configuration: Configuration
    /// What start-up had to do about the index (quarantine, rebuild), one message each; empty normally.
    public let startupWarnings: [String]
    /// The cache directory, without a trailing slash.
    public let directory: String
    /// `directory` and a slash, as bytes, to build body file paths without a String.
    private let directoryPrefix: [UInt8]

    struct Counters {
        var inserts = 0
        var evictions = 0
        var expired = 0
        var purged = 0
        var checksumFailures = 0
        var missingBodies = 0
        var writeErrors = 0
        var refused = 0
    }

    struct WriterState {
        var db: SQLiteConnection?
        var lockFD: Int32
        /// Ids only grow while the tier is open, so a `DiskObjectHead` can never reach another body.
        var nextFileID: Int64
        /// Ids whose temp or body file is being written and has no row yet (the sweep must spare them).
        var inFlight: Set<Int64> = []
        var objects: Int64 = 0
        var bytes: Int64 = 0
        var counters = Counters()
        var diskFull = false
        /// Whether the writer's page cache is the backlog size (`useBacklogCache`), and when a
        /// backlog last asked for it.
        var backlogCache = false
        var lastBacklog = -Double.infinity
    }

    let writer: Mutex<WriterState>
    /// The writer's figures as of its last operation, for `stats`: reading them never waits
    /// for a commit (the writer lock is held across transactions and fsyncs).
    struct Figures {
        var objects: Int64 = 0
        var bytes: Int64 = 0
        var counters = Counters()
        var diskFull = false
    }
    let published = Mutex(Figures())
    let reader: Mutex<SQLiteConnection?>
    /// LRU touches not yet written: id → last access (`noteUse`; written by `flushTouches`).
    let touches = Mutex<[Int64: Double]>([:])
    /// Read connections through the `lacquer-nowait` VFS, each taken only if free (empty when
    /// that VFS cannot be registered).
    let nowaitReaders: [NowaitReader]
    /// Writes made through the writer connection (each counted once its transaction has ended):
    /// a nowait reader's kept read transaction is current while this has not moved.
    let writes = Atomic<Int>(0)
    /// One nowait read connection, used by one thread at a time: taken with a compare-and-swap
    /// or not at all (a `Mutex`'s try-lock can enter the kernel when it fails).
    ///
    /// Its read transaction is kept open from one lookup to the next while nothing has been
    /// written since it began: beginning and ending one takes the WAL's read lock (an `fcntl`
    /// and a mutex shared with the other connections), and SQLite keeps its page cache only
    /// while the database is unchanged. It ends as soon as a write is counted: at the next
    /// lookup, or at once if no lookup holds the connection (`release`, which the writer calls
    /// after each write so that an idle reader never holds a checkpoint back). A snapshot that
    /// began after the count was read sees every write counted before it: a lookup never
    /// misses a purge or a store that was counted when it started.
    final class NowaitReader: @unchecked Sendable {
        private let busy = Atomic<Bool>(false)
        /// Guarded by `busy`.
        private var connection: SQLiteConnection?
        /// The write count read before the open read transaction began; nil when none is open.
        /// Guarded by `busy`.
        private var snapshot: Int?
        /// Rows read in the open read transaction (`SnapshotRows`); emptied when it ends.
        /// Guarded by `busy`.
        private var rows = SnapshotRows()

        init(path: String) throws {
            let connection = try SQLiteConnection(path: path, create: false, vfs: LACQUER_NOWAIT_VFS_NAME)
            try connection.execute(DiskIndexSchema.nowaitReaderPragmas, operation: "configure reader")
            self.connection = connection
        }

        /// `body` with the connection inside a read transaction that saw every write counted in
        /// `writes` so far; nil if another thread has the connection. `body`'s nil (it failed)
        /// ends the transaction; so does a closed connection (`body` is then not called).
        func read<T>(writes: borrowing Atomic<Int>, _ body: (SQLiteConnection, inout SnapshotRows) -> T?) -> T?? {
            guard self.busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else { return nil }
            defer { self.busy.store(false, ordering: .releasing) }
            guard let connection = self.connection else { return .some(nil) }
            let count = writes.load(ordering: .sequentiallyConsistent)
            if let snapshot = self.snapshot, snapshot != count {
                self.end(connection)
            }
            if self.snapshot == nil {
                // Deferred: the snapshot is taken by the first read, after `count` was read.
                guard (try? connection.run("BEGIN")) != nil else { return .some(nil) }
                self.snapshot = count
            }
            let result = body(connection, &self.rows)
            if result == nil {
                self.end(connection)
            }
            return .some(result)
        }

        /// Ends the kept read transaction, unless a lookup holds the connection (that lookup
        /// ends it itself when it next finds the write count moved).
        func release() {
            _ = self.ifFree { connection in
                if let connection { self.end(connection) }
            }
        }

        /// Ends the read transaction if one is open (after a failed statement SQLite may have
        /// ended it already; the error is then expected and ignored).
        private func end(_ connection: SQLiteConnection) {
            guard self.snapshot != nil else { return }
            self.snapshot = nil
            self.rows = SnapshotRows()
            _ = try? connection.run("ROLLBACK")
        }

        /// `body` with the connection (nil once closed), or nil if another thread has it.
        private func ifFree<T>(_ body: (SQLiteConnection?) -> T) -> T? {
            guard self.busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else { return nil }
            defer { self.busy.store(false, ordering: .releasing) }
            return body(self.connection)
        }

        /// Closes the connection, waiting for a lookup using it to finish (one query).
        func close() {
            while self.ifFree({ (connection: SQLiteConnection?) -> Void in
                if let connection { self.end(connection) }
                connection?.close()
                self.connection = nil
            }) == nil {
                sched_yield()
            }
        }
    }

    /// The rows a nowait reader's open read transaction has answered for, by key: heads, and
    /// the small bodies kept in the index as they were read and verified. Within one
    /// transaction the index cannot change (SQLite's snapshot isolation), so the rows of a key
    /// are what its query would return again: a later lookup of the same key in the same
    /// transaction takes them from here instead of searching the index, decoding the row,
    /// assembling the body from its pages, copying it and checking its checksums again. A key
    /// with no rows is kept too. Everything goes when the transaction ends (the first write
    /// counted after it began), as SQLite's own page cache does.
    ///
    /// What it keeps is bounded by `budget` bytes (heads and bodies, estimated), taken from the
    /// reader's SQLite page cache (`DiskIndexSchema.nowaitReaderPragmas`), which would
    /// otherwise hold the same bytes as pages for as long. Once the budget is spent, the keys
    /// already kept stay and new ones are read from the index every time.
    struct SnapshotRows {
        static let budget = 4 << 20
        /// What a dictionary entry and a head cost beyond the bytes they refer to (estimated).
        static let entryOverhead = 64
        static let headOverhead = 256
        private var byKey: [CacheKey: [DiskObjectHead]] = [:]
        private(set) var bytes = 0

        func rows(of key: CacheKey) -> [DiskObjectHead]? {
            self.byKey[key]
        }

        /// Keeps `heads`, bodies included, as `key`'s rows in this transaction, if they fit.
        mutating func keep(_ heads: [DiskObjectHead], of key: CacheKey) {
            let bytes = heads.reduce(Self.entryOverhead + key.canonical.utf8.count) { $0 + Self.estimatedBytes(of: $1) }
            guard self.bytes + bytes <= Self.budget else { return }
            self.bytes += bytes
            self.byKey[key] = heads
        }

        static func estimatedBytes(of head: DiskObjectHead) -> Int {
            Self.headOverhead + head.encodedHeaders.count + head.blockChecksums.count * 4 + head.variant.utf8.count
                + head.reason.utf8.count + head.varyNames.reduce(0) { $0 + $1.utf8.count + 16 }
                + (head.prefetchedBody?.capacity ?? 0)  // what the buffer holds, not what it uses
        }
    }

    /// Lookups answered by `lookupWithoutWaiting`, and those it handed back (a page not cached,
    /// every connection busy, or anything else the blocking lookup then deals with).
    let nowaitAnswered = Atomic<Int>(0)
    let nowaitDeclined = Atomic<Int>(0)
    /// Of those answered, the ones a reader's kept rows answered (`SnapshotRows`).
    let nowaitFromKeptRows = Atomic<Int>(0)
    /// Body files of disk-only objects read whole and verified, held open for sendfile.
    let verifiedFiles = VerifiedBodyFiles()
    let hits = Atomic<Int>(0)
    let misses = Atomic<Int>(0)

    /// Opens (or creates) the disk tier in `configuration.directory`.
    ///
    /// - Throws: `.directoryNotWritable` if the directory cannot be created or written,
    ///   `.directoryLocked` if another tier holds it, `.sqlite` / `.indexCorrupt` if the index can
    ///   neither be opened nor moved aside.
    public init(configuration: Configuration) throws {
        var directory = configuration.directory
        while directory.count > 1 && directory.hasSuffix("/") { directory.removeLast() }
        self.configuration = configuration
        self.directory = directory
        self.directoryPrefix = Array((directory + "/").utf8)
        lacquer_sqlite_configure()

        try BodyFile.makeDirectories(directory)
        for sub in ["bodies", "tmp"] {
            try BodyFile.makeDirectories(directory + "/" + sub)
        }
        let lockPath = directory + "/lacquer.lock"
        let lockFD = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard lockFD >= 0 else {
            throw CacheStoreError.directoryNotWritable(path: directory, reason: "cannot create '\(lockPath)': \(BodyFile.describe(errno))")
        }
        guard flock(lockFD, LOCK_EX | LOCK_NB) == 0 else {
            let code = errno
            Glibc.close(lockFD)
            if code == EWOULDBLOCK { throw CacheStoreError.directoryLocked(path: directory) }
            throw CacheStoreError.directoryNotWritable(path: directory, reason: "cannot lock '\(lockPath)': \(BodyFile.describe(code))")
        }
        // The lock file names its holder, for an operator looking at the directory.
        let pid = Array("\(getpid())\n".utf8)
        _ = ftruncate(lockFD, 0)
        _ = pid.withUnsafeBytes { pwrite(lockFD, $0.baseAddress, $0.count, 0) }
        guard access(directory, W_OK) == 0 else {
            Glibc.close(lockFD)
            throw CacheStoreError.directoryNotWritable(path: directory, reason: BodyFile.describe(errno))
        }

        var warnings: [String] = []
        let db: SQLiteConnection
        let readDB: SQLiteConnection
        var nowaitReaders: [NowaitReader] = []
        var state = WriterState(db: nil, lockFD: lockFD, nextFileID: 1)
        do {
            db = try DiskIndexSchema.openWriter(directory: directory, warnings: &warnings)
            try db.execute(DiskTier.tagsTable, operation: "create surrogate key index")
            try db.execute(DiskTier.tagPurgesTable, operation: "create purges by surrogate key")
            try DiskTier.addSoftPurgedColumn(db)
            try DiskTier.addInlineBodies(db)
            try db.query("SELECT objects, bytes FROM totals WHERE id = 0") { row in
                state.objects = row.int64(0)
                state.bytes = row.int64(1)
            }
            state.nextFileID = (try db.scalar("SELECT MAX(id) FROM objects") ?? 0) + 1
            readDB = try SQLiteConnection(path: directory + "/" + DiskIndexSchema.fileName, create: false)
            try readDB.execute(DiskIndexSchema.readerPragmas, operation: "configure reader")
            if configuration.nowaitReaders > 0, lacquer_nowait_vfs_register() == SQLITE_OK {
                for _ in 0..<configuration.nowaitReaders {
                    nowaitReaders.append(try NowaitReader(path: directory + "/" + DiskIndexSchema.fileName))
                }
            }
        } catch {
            Glibc.close(lockFD)
            if let error = error as? CacheStoreError, error.isIndexCorruption {
                throw CacheStoreError.indexCorrupt(path: directory + "/" + DiskIndexSchema.fileName, reason: error.description)
            }
            throw error
        }
        state.db = db
        self.startupWarnings = warnings
        self.published.withLock { $0 = Figures(objects: state.objects, bytes: state.bytes, counters: state.counters, diskFull: state.diskFull) }
        self.writer = Mutex(state)
        self.reader = Mutex(readDB)
        self.nowaitReaders = nowaitReaders
    }

    deinit {
        self.close()
    }

    /// Flushes pending LRU touches, checkpoints the WAL, closes the index and releases the lock.
    /// Idempotent; every later call throws `.closed`.
    public func close() {
        self.reader.withLock { connection in
            connection?.close()
            connection = nil
        }
        for reader in self.nowaitReaders {
            reader.close()
        }
        self.verifiedFiles.removeAll()
        self.writer.withLock { state in
            guard let db = state.db else { return }
            try? self.flushTouches(&state, db)
            try? db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            db.close()
            state.db = nil
            Glibc.close(state.lockFD)
            state.lockFD = -1
        }
    }

    /// Counters and totals.
    public var stats: DiskTierStats {
        self.published.withLock { state in
            DiskTierStats(
                objects: state.objects,
                bytes: state.bytes,
                capacityBytes: self.configuration.capacityBytes,
                inserts: state.counters.inserts,
                hits: self.hits.load(ordering: .relaxed),
                misses: self.misses.load(ordering: .relaxed),
                evictions: state.counters.evictions,
                expired: state.counters.expired,
                purged: state.counters.purged,
                checksumFailures: state.counters.checksumFailures,
                missingBodies: state.counters.missingBodies,
                writeErrors: state.counters.writeErrors,
                refused: state.counters.refused,
                diskFull: state.diskFull,
                lookupsWithoutWait: self.nowaitAnswered.load(ordering: .relaxed),
                lookupsHandedOff: self.nowaitDeclined.load(ordering: .relaxed),
                lookupsFromKeptRows: self.nowaitFromKeptRows.load(ordering: .relaxed),
                verifiedFilesOpen: self.verifiedFiles.count
            )
        }
    }

    /// The current wall-clock time in seconds since the epoch.
    public static func wallClock() -> Double {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Double(spec.tv_sec) + Double(spec.tv_nsec) / 1e9
    }

    func bodyPath(_ id: Int64) -> String {
        self.directory + "/" + BodyFile.relativePath(id)
    }

    /// What `openIfCached` found.
    public enum CachedBodyFile: Sendable {
        /// The file, open for reading: the noted version, every page in the page cache.
        case open(OpenBodyFile)
        /// Some of it is not in the page cache (sending it could wait for the disk), or it cannot
        /// be opened at the moment (out of file descriptors).
        case notCached
        /// No file is noted, or it is gone (evicted, purged) or another version (written to,
        /// replaced): the note is forgotten.
        case gone
    }

    /// `object`'s body file, open, when sending it cannot wait for the disk (see
    /// `lacquer_check_if_cached`): the descriptor the object keeps, checked again, or a new one
    /// (then kept, within `OpenBodyFile.limit`). Callable from an event loop: it takes no lock
    /// held across I/O and reads no page.
    public func openIfCached(bodyOf object: StoredObject) -> CachedBodyFile {
        guard let (note, kept) = object.bodyFileState else { return .gone }
        let result: CInt
        if let kept {
            result = withUnsafePointer(to: note.identity) { lacquer_check_if_cached(kept.descriptor, $0) }
            if result == 0 { return .open(kept) }
        } else {
            result = self.openNoted(note)
            if result >= 0 {
                return .open(object.keepOpen(OpenBodyFile(descriptor: result, keep: true), for: note))
            }
        }
        let failure = Self.cachedFileFailure(result)
        if case .gone = failure { object.forgetBodyFile(note) }
        return failure
    }

    /// What a failed `lacquer_check_if_cached` / `lacquer_open_if_cached` (a negative errno)
    /// means: pages not cached, or out of descriptors or memory, is a moment's trouble
    /// (`.notCached`); anything else says the file is gone or another version (`.gone`).
    static func cachedFileFailure(_ result: CInt) -> CachedBodyFile {
        [EAGAIN, EMFILE, ENFILE, ENOMEM, EINTR].contains(-result) ? .notCached : .gone
    }

    /// The body file of `head`, a disk-only object, open for sending when a disk hit has read it
    /// whole with every checksum matching (`openBody(_:keepVerifiedFile:)`) and it is still that
    /// version, linked, with every page in the page cache; see `VerifiedBodyFiles`. Callable from
    /// an event loop: it takes no lock held across I/O and reads no page.
    public func openVerifiedIfCached(_ head: DiskObjectHead) -> CachedBodyFile {
        guard !head.inlineBody else { return .gone }
        return self.verifiedFiles.open(fileID: head.fileID, bodyLength: head.bodyLength, blockChecksums: head.blockChecksums)
    }

    /// `lacquer_open_if_cached` on the file `note` names.
    private func openNoted(_ note: BodyFileNote) -> CInt {
        let prefix = self.directoryPrefix
        let count = prefix.count + BodyFile.relativePathLength
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: count + 1) { path -> CInt in
            _ = path.initialize(from: prefix)
            BodyFile.writeRelativePath(note.id, into: UnsafeMutableBufferPointer(rebasing: path[prefix.count..<count]))
            path[count] = 0
            return withUnsafePointer(to: note.identity) { identity in
                path.withMemoryRebound(to: CChar.self) { lacquer_open_if_cached($0.baseAddress!, identity) }
            }
        }
    }

    /// Runs `body` with the writer connection; throws `.closed` after `close()`.
    func withWriter<T: Sendable>(_ body: @Sendable (inout WriterState, SQLiteConnection) throws -> T) throws -> T {
        let result: Result<T, any Error> = self.writer.withLock { state in
            guard let db = state.db else { return .failure(CacheStoreError.closed(path: self.directory)) }
            defer {
                self.publish(state)
                self.countWrite()
            }
            return Result { try body(&state, db) }
        }
        return try result.mapError(self.flagIfCorrupt).get()
    }

    /// Sizes the writer's page cache: `DiskIndexSchema.connectionPragmas`' small one while
    /// stores come one at a time (the memory goes to objects), `DiskIndexSchema.backlogCacheKiB`
    /// while a backlog of stores is written (a miss storm): each group commit then finds the
    /// index pages its inserts and evictions touch in the cache instead of reading them from
    /// the kernel again. The small size comes back once no backlog has asked for
    /// `backlogCacheLinger` seconds (a storm's writer catches up now and then; dropping the
    /// pages each time would read them all again); lowering the size frees the pages.
    public func useBacklogCache(_ backlog: Bool, now: Double) {
        self.writer.withLock { state in
            if backlog { state.lastBacklog = now }
            let wanted = backlog || now - state.lastBacklog < Self.backlogCacheLinger
            guard state.backlogCache != wanted, let db = state.db else { return }
            let kib = wanted ? DiskIndexSchema.backlogCacheKiB : DiskIndexSchema.writerCacheKiB
            if (try? db.execute("PRAGMA cache_size = -\(kib)", operation: "writer cache size")) != nil {
                state.backlogCache = wanted
            }
        }
    }

    /// How long the writer keeps its backlog cache after the last backlog, in seconds.
    static let backlogCacheLinger = 10.0

    /// Counts a write that has ended (committed or not) and ends the kept read transactions of
    /// the nowait readers no lookup holds (called with the writer lock held).
    func countWrite() {
        self.writes.add(1, ordering: .sequentiallyConsistent)
        for reader in self.nowaitReaders {
            reader.release()
        }
    }

    /// Copies the writer's figures for `stats` (called with the writer lock held).
    func publish(_ state: WriterState) {
        self.published.withLock {
            $0 = Figures(objects: state.objects, bytes: state.bytes, counters: state.counters, diskFull: state.diskFull)
        }
    }

    /// Turns an SQLite corruption error found while running into `.indexCorrupt`, and leaves a
    /// flag file so that the next start quarantines the index (start-up alone only notices a
    /// damaged header, not a damaged page deep in the file).
    @Sendable
    func flagIfCorrupt(_ error: any Error) -> any Error {
        guard let error = error as? CacheStoreError, error.isIndexCorruption else { return error }
        let reason = error.description
        let flag = self.directory + "/" + DiskIndexSchema.corruptionFlagName
        let fd = open(flag, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        if fd >= 0 {
            let bytes = Array(reason.utf8)
            _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            Glibc.close(fd)
        }
        return CacheStoreError.indexCorrupt(
            path: self.directory + "/" + DiskIndexSchema.fileName,
            reason: reason + "; found while running, the index is quarantined at the next start"
        )
    }

    /// Deletes the files of removed rows (after their commit).
    func unlinkBodies(_ ids: [Int64]) {
        for id in ids {
            unlink(self.bodyPath(id))
        }
        // After the unlinks: see `VerifiedBodyFiles` on why this order.
        self.verifiedFiles.remove(ids)
    }
}

/// Counters and totals of a disk tier (`DiskTier.stats`).
public struct DiskTierStats: Sendable, Equatable {
    /// Objects in the index.
    public var objects: Int64
    /// Bytes charged against capacity (bodies rounded up to 4 KiB, plus metadata and a fixed overhead).
    public var bytes: Int64
    public var capacityBytes: Int64
    /// Objects stored (including replacements).
    public var inserts: Int
    /// Lookups that found at least one variant.
    public var hits: Int
    /// Lookups that found nothing.
    public var misses: Int
    /// Objects evicted to stay within capacity (LRU, or beyond 32 variants of one key).
    public var evictions: Int
    /// Objects removed by `removeExpired`.
    public var expired: Int
    /// Objects removed by `remove(key:)` / `remove(_:)`.
    public var purged: Int
    /// Objects dropped because their body failed verification (checksum, length, missing file) or
    /// their row could not be decoded.
    public var checksumFailures: Int
    /// Of `checksumFailures`, those whose body file was missing or short.
    public var missingBodies: Int
    /// `store` calls that failed on I/O (including a full disk).
    public var writeErrors: Int
    /// `store` calls refused for size (over `maxObjectBytes`, capacity or header limits).
    public var refused: Int
    /// True while the filesystem is below the free-space floor (or the last write hit ENOSPC).
    public var diskFull: Bool
    /// Lookups `lookupWithoutWaiting` answered on the caller's thread.
    public var lookupsWithoutWait: Int = 0
    /// Lookups it handed back to a blocking `lookup` (an index page not cached, a busy connection).
    public var lookupsHandedOff: Int = 0
    /// Of the lookups answered without waiting, those answered by rows the same read
    /// transaction had already read (`DiskTier.SnapshotRows`): no index search, no body copy.
    public var lookupsFromKeptRows: Int = 0
    /// Body files of disk-only objects held open, verified, for sending (`openVerifiedIfCached`).
    public var verifiedFilesOpen: Int = 0
}
