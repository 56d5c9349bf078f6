#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSQLiteNoWait
import NIOCore
import Synchronization

/// Storing, finding and reading objects.
extension DiskTier {
    /// Most variants kept under one key (HARDENING §7); storing one more evicts the least recently used.
    static let maxVariantsPerKey = 32

    /// Stores `object`, replacing the stored copy of the same key and variant.
    ///
    /// Order: body → temp file → (fsync) → rename → commit the row (which replaces the old one)
    /// → unlink the old body → evict if over capacity. A body up to `inlineBodyLimit` is kept in
    /// the index instead (its `bodies` table), written with the row in the same commit.
    ///
    /// - Parameters:
    ///   - object: the complete object.
    ///   - now: the time recorded as its last access.
    /// - Returns: false if the object was refused: its body is over `maxObjectBytes`, it alone would
    ///   exceed the capacity, or its headers exceed the limits a later load enforces.
    /// - Throws: `.diskFull` (below the free-space floor, or ENOSPC; nothing is left behind),
    ///   `.ioFailed`, `.sqlite`, `.closed`.
    @discardableResult
    public func store(_ object: StoredObject, now: Double = DiskTier.wallClock()) throws -> Bool {
        try self.store([object], now: now)[0].get()
    }

    /// Stores `objects` as `store` stores each, with one commit for all of them (a group
    /// commit: the pages every insert touches, the totals row and the upper levels of the
    /// indexes, go to the write-ahead log once per batch, not once per object). Later objects
    /// in the list replace earlier ones of the same key and variant, as separate stores would.
    /// Returns, in order, what `store` would have returned or thrown for each. If the shared
    /// commit fails, each object is committed alone, so one that cannot be stored costs only
    /// itself.
    public func store(_ objects: [StoredObject], now: Double = DiskTier.wallClock()) -> [Result<Bool, any Error>] {
        var results = [Result<Bool, any Error>](repeating: .success(false), count: objects.count)
        var accepted: [(index: Int, item: PendingStore)] = []
        for (index, object) in objects.enumerated() {
            switch Result(catching: { try self.pendingStore(object) }) {
            case .success(let pending?): accepted.append((index, pending))
            case .success(nil): results[index] = .success(false)
            case .failure(let error): results[index] = .failure(error)
            }
        }
        guard !accepted.isEmpty else { return results }
        // Ids for the batch, taken at once.
        let firstID: Int64
        do {
            firstID = try self.withWriter { [count = Int64(accepted.count)] state, _ in
                let first = state.nextFileID
                state.nextFileID += count
                for id in first..<(first + count) { state.inFlight.insert(id) }
                return first
            }
        } catch {
            for (index, _) in accepted { results[index] = .failure(error) }
            return results
        }
        var ready: [(index: Int, item: PendingStore)] = []
        for (offset, entry) in accepted.enumerated() {
            var item = entry.item
            item.id = firstID + Int64(offset)
            do {
                try self.writeBody(&item)
                ready.append((entry.index, item))
            } catch {
                try? self.withWriter { [id = item.id] state, _ in
                    state.inFlight.remove(id)
                    state.counters.writeErrors += 1
                    if case .diskFull = error as? CacheStoreError { state.diskFull = true }
                }
                results[entry.index] = .failure(error)
            }
        }
        guard !ready.isEmpty else { return results }
        var overCapacity = false
        /// Commits `entries` together and settles each on success; the error otherwise.
        func commitTogether(_ entries: [(index: Int, item: PendingStore)], retrying: Bool) -> (any Error)? {
            switch self.commit(entries.map(\.item), now: now, retrying: retrying) {
            case .success(let outcome):
                for (entry, replaced) in zip(entries, outcome.replaced) {
                    self.committed(entry.item, replaced: replaced)
                    results[entry.index] = .success(true)
                }
                overCapacity = overCapacity || outcome.overCapacity
                return nil
            case .failure(let error):
                return error
            }
        }
        if let error = commitTogether(ready, retrying: ready.count > 1) {
            // One by one: the objects that can be stored are, and each failure is its own (a
            // lone object's is the one just met).
            for entry in ready {
                guard let failure = ready.count == 1 ? error : commitTogether([entry], retrying: false) else { continue }
                self.notCommitted(entry.item)
                results[entry.index] = .failure(self.flagIfCorrupt(failure))
            }
        }
        if overCapacity {
            do {
                _ = try self.evict()
            } catch {
                // Reported like a store's own failure: to the objects whose store ran it.
                for (index, _) in ready where (try? results[index].get()) == true { results[index] = .failure(error) }
            }
        }
        return results
    }

    /// An object on its way into the index: what `store` computes before its commit.
    struct PendingStore {
        let object: StoredObject
        let body: ByteBuffer
        let bodyLength: Int64
        let keyBytes: [UInt8]
        let headerBytes: [UInt8]
        let tags: [String]
        let inline: Bool
        let size: Int64
        var id: Int64 = 0
        var checksums: [UInt32] = []
    }

    /// `object` checked against the limits (nil, counted as refused, if it is over one) and the
    /// free-space floor (throws `.diskFull`).
    private func pendingStore(_ object: StoredObject) throws -> PendingStore? {
        // Both are computed from the object's stored bytes on each access: take them once.
        let headers = object.headers
        let body = object.body
        let bodyLength = Int64(body.readableBytes)
        let keyBytes = Array(object.keyBytes)
        let headerBytes = HeaderCodec.encode(headers)
        let inline = bodyLength <= self.configuration.inlineBodyLimit
        let size = Self.chargedSize(
            bodyLength: bodyLength, metadataBytes: keyBytes.count + headerBytes.count + object.variant.utf8.count + object.reason.utf8.count,
            inline: inline)
        guard bodyLength <= self.configuration.maxObjectBytes, size <= self.configuration.capacityBytes,
            HeaderCodec.withinLimits(headers)
        else {
            try self.withWriter { state, _ in state.counters.refused += 1 }
            return nil
        }

        if self.configuration.freeSpaceFloor > 0,
            let free = BodyFile.freeFraction(self.directory, reserving: bodyLength),
            free < self.configuration.freeSpaceFloor
        {
            try self.withWriter { state, _ in
                state.diskFull = true
                state.counters.writeErrors += 1
            }
            throw CacheStoreError.diskFull(path: self.directory)
        }
        return PendingStore(
            object: object, body: body, bodyLength: bodyLength, keyBytes: keyBytes, headerBytes: headerBytes,
            tags: object.surrogateKeys(self.configuration.surrogateKeyFields), inline: inline, size: size)
    }

    /// The body's checksums, and for a body not kept in the index its file: temp file →
    /// (fsync) → rename, before the row that names it commits.
    private func writeBody(_ item: inout PendingStore) throws {
        item.checksums =
            item.inline
            ? BodyFile.checksums(item.body)
            : try BodyFile.write(
                item.body,
                tempPath: self.directory + "/" + BodyFile.tempRelativePath(item.id),
                finalPath: self.bodyPath(item.id),
                directory: self.directory,
                sync: self.configuration.fsync == .always
            )
    }

    /// Commits the rows of `items` in one transaction; per item the rows it replaced (the same
    /// key and variant, and variants beyond `maxVariantsPerKey`), and whether the tier is now
    /// over capacity. Nothing is committed if it fails. The items' ids stop being in flight
    /// (their files may then be swept if no row names them), unless the commit failed and
    /// `retrying` says they will be committed again.
    private func commit(_ items: [PendingStore], now: Double, retrying: Bool = false)
        -> Result<(replaced: [[Int64]], overCapacity: Bool), any Error>
    {
        self.writer.withLock { state in
            var committed = false
            defer {
                if committed || !retrying {
                    for item in items { state.inFlight.remove(item.id) }
                }
                self.publish(state)
                self.countWrite()
            }
            guard let db = state.db else { return .failure(CacheStoreError.closed(path: self.directory)) }
            return Result {
                var replacedByItem: [[Int64]] = []
                var evicted = 0
                try db.transaction("store objects") {
                    replacedByItem = []
                    evicted = 0
                    for item in items {
                        let (replaced, surplus) = try Self.insertRows(item, now: now, db)
                        replacedByItem.append(replaced + surplus)
                        evicted += surplus.count
                    }
                }
                committed = true
                state.counters.evictions += evicted
                state.counters.inserts += items.count
                state.diskFull = false
                try self.refreshTotals(&state, db)
                return (replacedByItem, state.bytes > self.configuration.capacityBytes)
            }
        }
    }

    /// One object's rows, inside the caller's transaction: the stored copy of the same key and
    /// variant goes, the new row (and its body, if kept in the index) and tags go in, and the
    /// least recently used variants beyond `maxVariantsPerKey` go. Returns the ids replaced and
    /// the ids evicted as surplus.
    private static func insertRows(_ item: PendingStore, now: Double, _ db: SQLiteConnection) throws -> (replaced: [Int64], surplus: [Int64]) {
        let object = item.object
        var checksumBytes: [UInt8] = []
        checksumBytes.reserveCapacity(item.checksums.count * 4)
        for checksum in item.checksums {
            withUnsafeBytes(of: checksum.littleEndian) { checksumBytes.append(contentsOf: $0) }
        }
        let digest = Int64(bitPattern: object.keyDigest)
        var replaced: [Int64] = []
        try db.query(
            "SELECT id FROM objects WHERE digest = ? AND key = ? AND variant = ?",
            [.integer(digest), .blob(item.keyBytes), .text(object.variant)]
        ) { replaced.append($0.int64(0)) }
        for old in replaced {
            try db.run("DELETE FROM objects WHERE id = ?", [.integer(old)])
        }
        try db.run(
            DiskIndexSchema.insertObject,
            [
                .integer(item.id), .blob(item.keyBytes), .integer(digest), .text(object.variant),
                .text(object.varyNames.joined(separator: ",")), .integer(Int64(object.status)), .text(object.reason),
                .blob(item.headerBytes), .integer(item.bodyLength), .blob(checksumBytes), .real(object.requestTime),
                .real(object.responseTime), .real(object.origin), .real(object.ttl), .real(object.grace),
                .real(object.keep), .integer(object.mustRevalidate ? 1 : 0), .real(object.expiresEntirely),
                .real(now), .integer(item.size), .integer(item.inline ? 1 : 0),
            ])
        if item.inline {
            try db.run("INSERT INTO bodies(id, body) VALUES (?, ?)", [.integer(item.id), .blob(Array(item.body.readableBytesView))])
        }
        for tag in item.tags {
            try db.run("INSERT INTO tags(tag, id) VALUES (?, ?)", [.text(tag), .integer(item.id)])
        }
        // Keep at most `maxVariantsPerKey` variants: drop the least recently used beyond that.
        var surplus: [Int64] = []
        try db.query(
            "SELECT id FROM objects WHERE digest = ? AND key = ? ORDER BY last_access DESC, id DESC LIMIT -1 OFFSET ?",
            [.integer(digest), .blob(item.keyBytes), .integer(Int64(Self.maxVariantsPerKey))]
        ) { surplus.append($0.int64(0)) }
        for old in surplus {
            try db.run("DELETE FROM objects WHERE id = ?", [.integer(old)])
        }
        return (replaced, surplus)
    }

    /// After `item`'s row committed: the object notes its body file (complete, renamed before
    /// the commit, holding the object's bytes), and the bodies it replaced go.
    private func committed(_ item: PendingStore, replaced: [Int64]) {
        if !item.inline, let note = BodyFileNote(id: item.id, path: self.bodyPath(item.id)), note.length == item.bodyLength {
            item.object.noteBodyFile(note)
        }
        self.unlinkBodies(replaced)
    }

    /// After `item`'s row failed to commit: its new body is an orphan, removed now.
    private func notCommitted(_ item: PendingStore) {
        self.unlinkBodies([item.id])
        try? self.withWriter { state, _ in state.counters.writeErrors += 1 }
    }

    /// Every stored variant of `key`: metadata, and the bodies kept in the index (checked as they
    /// are read); no body file is touched.
    ///
    /// Counts a hit when at least one variant is found, a miss otherwise. Rows that cannot be
    /// decoded are dropped (and counted in `checksumFailures`).
    public func lookup(_ key: CacheKey) throws -> [DiskObjectHead] {
        var malformed: [Int64] = []
        let result: Result<[DiskObjectHead], any Error> = self.reader.withLock { connection in
            guard let connection else { return .failure(CacheStoreError.closed(path: self.directory)) }
            return Result { try Self.readHeads(key, connection, malformed: &malformed) }
        }
        if !malformed.isEmpty {
            try self.drop(malformed, missing: false)
        }
        let heads = try result.mapError(self.flagIfCorrupt).get()
        self.countLookup(found: !heads.isEmpty)
        return heads
    }

    /// `lookup` on the caller's thread, without ever waiting: nil when that cannot be done (an
    /// index page or WAL frame it needs is not in the page cache, every nowait connection is
    /// busy, the tier is closed, a row is malformed, or any other error). The caller then runs
    /// `lookup` where blocking is allowed, which also reports and repairs what went wrong.
    public func lookupWithoutWaiting(_ key: CacheKey) -> [DiskObjectHead]? {
        let count = self.nowaitReaders.count
        let first = count > 0 ? Int(lacquer_thread_slot()) % count : 0
        for index in 0..<count {
            let reader = self.nowaitReaders[(first + index) % count]
            var fromKeptRows = false
            let attempt: [DiskObjectHead]?? = reader.read(writes: self.writes) { connection, snapshot -> [DiskObjectHead]? in
                if let kept = snapshot.rows(of: key) {
                    fromKeptRows = true
                    return kept
                }
                var malformed: [Int64] = []
                guard let heads = try? Self.readHeads(key, connection, malformed: &malformed), malformed.isEmpty else {
                    return nil
                }
                snapshot.keep(heads, of: key)
                return heads
            }
            guard let attempt else { continue }  // busy: try the next connection
            guard let heads = attempt else { break }
            self.nowaitAnswered.add(1, ordering: .relaxed)
            if fromKeptRows { self.nowaitFromKeptRows.add(1, ordering: .relaxed) }
            self.countLookup(found: !heads.isEmpty)
            return heads
        }
        self.nowaitDeclined.add(1, ordering: .relaxed)
        return nil
    }

    /// `readHeads`'s statement, built once (the prepared statement is found by its text on every
    /// lookup). The body comes from a join rather than a scalar subquery, whose result SQLite
    /// copies once more.
    private static let headsQuery = """
        SELECT \(DiskObjectHead.columns), body \
        FROM objects LEFT JOIN bodies USING (id) WHERE digest = ? AND key = ? ORDER BY id
        """

    /// The rows of `key` as heads, with the bodies kept in the index verified; the ids of rows
    /// that cannot be decoded, or whose kept body does not match, go to `malformed`.
    private static func readHeads(_ key: CacheKey, _ connection: SQLiteConnection, malformed: inout [Int64]) throws
        -> [DiskObjectHead]
    {
        var heads: [DiskObjectHead] = []
        try connection.query(
            Self.headsQuery,
            [.integer(Int64(bitPattern: key.digest)), .blob(Array(key.canonical.utf8))]
        ) { row in
            guard var head = DiskObjectHead(row: row, key: key) else {
                malformed.append(row.int64(0))
                return
            }
            if head.inlineBody {
                // Read with the head, checked now: a body that does not match is dropped.
                let verified = row.withBlob(20) { Self.verifiedInlineBody($0, of: head, allocator: ByteBufferAllocator()) }
                guard let body = verified else {
                    malformed.append(head.fileID)
                    return
                }
                head.prefetchedBody = body
            }
            heads.append(head)
        }
        return heads
    }

    private func countLookup(found: Bool) {
        if found {
            self.hits.add(1, ordering: .relaxed)
        } else {
            self.misses.add(1, ordering: .relaxed)
        }
    }

    /// Opens `head`'s body for streaming. The file's length is checked here; each block's
    /// checksum as it is read.
    ///
    /// - Parameter keepVerifiedFile: once the reader has read the file whole with every checksum
    ///   matching, keep it open for `openVerifiedIfCached` (later hits sent with sendfile).
    /// - Throws: `.bodyMissing` (no file or a short one) / `.bodyChecksumMismatch` (a long one):
    ///   the row and file are then dropped and counted. `.ioFailed` on other open errors.
    public func openBody(
        _ head: DiskObjectHead, allocator: ByteBufferAllocator = ByteBufferAllocator(), keepVerifiedFile: Bool = false
    ) throws -> DiskBodyReader {
        if head.inlineBody {
            if let body = head.prefetchedBody {
                return DiskBodyReader(head: head, path: self.inlineBodyPath(head), verifiedBody: body, allocator: allocator)
            }
            return try self.openInlineBody(head, allocator: allocator)
        }
        let path = self.bodyPath(head.fileID)
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            let code = errno
            guard code == ENOENT else {
                throw CacheStoreError.ioFailed(operation: "open body", path: path, reason: BodyFile.describe(code))
            }
            try self.bodyFailed(head, .bodyMissing(key: head.key.description, path: path))
        }
        // The file's version as opened: what `load` notes once every block it reads matched.
        let note = BodyFileNote(id: head.fileID, fd: fd)
        let length = note?.length ?? 0
        if length != head.bodyLength {
            Glibc.close(fd)
            let short = length < head.bodyLength
            try self.bodyFailed(
                head,
                short ? .bodyMissing(key: head.key.description, path: path)
                    : .bodyChecksumMismatch(key: head.key.description, path: path)
            )
        }
        let verified: (@Sendable (CInt) -> Void)?
        if keepVerifiedFile, let note {
            verified = { [weak self] fd in self?.verifiedFiles.add(note, blockChecksums: head.blockChecksums, readThrough: fd) }
        } else {
            verified = nil
        }
        return DiskBodyReader(head: head, path: path, fd: fd, fileNote: note, allocator: allocator, onVerifiedWhole: verified) {
            [weak self] error in
            _ = try? self?.drop([head.fileID], missing: { if case .bodyMissing = error { true } else { false } }())
        }
    }

    /// Reads `head`'s whole body (verified) and returns the object, e.g. to promote it into memory.
    public func load(_ head: DiskObjectHead, allocator: ByteBufferAllocator = ByteBufferAllocator()) throws
        -> StoredObject
    {
        let reader = try self.openBody(head, allocator: allocator)
        let object = head.storedObject(body: try reader.readAll(), hiddenFields: self.configuration.surrogateKeyFields)
        // Read whole, every block's checksum matched: that version of the file may be sent as it is.
        if let note = reader.fileNote { object.noteBodyFile(note) }
        return object
    }

    /// A body kept in the index row: read whole (it is at most `inlineBodyLimit`), its length and
    /// every block's CRC32C checked before a reader hands out any of it.
    private func openInlineBody(_ head: DiskObjectHead, allocator: ByteBufferAllocator) throws -> DiskBodyReader {
        let path = self.inlineBodyPath(head)
        let found: Result<[UInt8]?, any Error> = self.reader.withLock { connection in
            guard let connection else { return .failure(CacheStoreError.closed(path: self.directory)) }
            return Result {
                var bytes: [UInt8]?
                try connection.query("SELECT body FROM bodies WHERE id = ?", [.integer(head.fileID)]) { bytes = $0.blob(0) }
                return bytes
            }
        }
        guard let bytes = try found.mapError(self.flagIfCorrupt).get() else {
            try self.bodyFailed(head, .bodyMissing(key: head.key.description, path: path))
        }
        guard let body = Self.verifiedInlineBody(bytes, of: head, allocator: allocator) else {
            try self.bodyFailed(
                head,
                Int64(bytes.count) < head.bodyLength
                    ? .bodyMissing(key: head.key.description, path: path) : .bodyChecksumMismatch(key: head.key.description, path: path))
        }
        return DiskBodyReader(head: head, path: path, verifiedBody: body, allocator: allocator)
    }

    /// A body kept in the index as a buffer, when its length and every block's CRC32C match `head`.
    static func verifiedInlineBody(_ bytes: [UInt8], of head: DiskObjectHead, allocator: ByteBufferAllocator) -> ByteBuffer? {
        bytes.withUnsafeBytes { self.verifiedInlineBody($0, of: head, allocator: allocator) }
    }

    /// The body checked where it lies (an index row's column), then copied out once.
    static func verifiedInlineBody(_ bytes: UnsafeRawBufferPointer, of head: DiskObjectHead, allocator: ByteBufferAllocator) -> ByteBuffer? {
        guard Int64(bytes.count) == head.bodyLength, BodyFile.checksums(bytes) == head.blockChecksums else { return nil }
        var body = allocator.buffer(capacity: bytes.count)
        body.writeBytes(bytes)
        return body
    }

    /// What errors name as the place of a body kept in the index.
    private func inlineBodyPath(_ head: DiskObjectHead) -> String {
        self.directory + "/" + DiskIndexSchema.fileName + "#" + String(head.fileID)
    }

    /// Drops the object and throws `error`; `.bodyGone` instead when its row was already gone
    /// (replaced, purged, banned, evicted or expired since the lookup, which unlinked the file):
    /// a race with the writer, not damage.
    private func bodyFailed(_ head: DiskObjectHead, _ error: CacheStoreError) throws -> Never {
        let missing: Bool
        if case .bodyMissing = error { missing = true } else { missing = false }
        guard try self.drop([head.fileID], missing: missing) > 0 else {
            throw CacheStoreError.bodyGone(key: head.key.description)
        }
        throw error
    }

    /// Deletes rows that failed verification and their files; counts those that were still there
    /// (a row already removed by a purge or eviction racing the read is not a failure) and
    /// returns how many there were.
    @discardableResult
    func drop(_ ids: [Int64], missing: Bool) throws -> Int {
        let dropped = try self.withWriter { state, db in
            var dropped: [Int64] = []
            try db.transaction("drop damaged objects") {
                dropped = try self.deleteRows(ids, &state, db)
            }
            state.counters.checksumFailures += dropped.count
            if missing { state.counters.missingBodies += dropped.count }
            try self.refreshTotals(&state, db)
            return dropped
        }
        self.unlinkBodies(dropped)
        return dropped.count
    }

    /// Re-reads the totals the triggers maintain (one row).
    func refreshTotals(_ state: inout WriterState, _ db: SQLiteConnection) throws {
        try db.query("SELECT objects, bytes FROM totals WHERE id = 0") { row in
            state.objects = row.int64(0)
            state.bytes = row.int64(1)
        }
    }

    /// What an object is charged against capacity: its body (rounded up to whole 4 KiB filesystem
    /// blocks when it is a file of its own), its metadata bytes and `rowOverhead`.
    static func chargedSize(bodyLength: Int64, metadataBytes: Int, inline: Bool = false) -> Int64 {
        (inline ? bodyLength : ((bodyLength + 4095) / 4096) * 4096) + Int64(metadataBytes) + self.rowOverhead
    }
}
