#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSQLiteNoWait
import Synchronization

/// Body files of objects served from the disk tier alone (too large for the memory tier) that a
/// disk hit has read whole with every block's checksum matching, held open so that the next hits
/// may send them with sendfile(2) from an event loop: no thread hop, no read into memory, no
/// checksum per hit (the check is made when a file is first read, nginx's `open_file_cache` with
/// Lacquer's verification in front of it).
///
/// An entry is a file's version as it was verified (device, inode, change time, size) and the
/// descriptor it was read through. It serves a head only when the head names the same file, with
/// the same length and block checksums, and while the file is still that version, still linked,
/// with every page in the page cache (`lacquer_check_if_cached`): a file written to, replaced or
/// removed since is never sent again, and the entry goes.
///
/// Removing a body file (`DiskTier.unlinkBodies`, the one place the tier removes indexed bodies)
/// drops its entry, so a purged, banned, evicted or replaced object's descriptor does not hold its
/// disk blocks. An entry is added under the table's lock after checking the file is still linked,
/// and removals take the same lock after unlinking, so a file removed while it was being verified
/// is either seen unlinked or dropped right after.
///
/// Bounded by `capacity` entries (the oldest goes first) and by `OpenBodyFile.limit`, the share of
/// the process's descriptors kept files may use.
final class VerifiedBodyFiles: Sendable {
    struct Entry: Sendable {
        let note: BodyFileNote
        let blockChecksums: [UInt32]
        let open: OpenBodyFile
    }

    private struct State {
        var entries: [Int64: Entry] = [:]
        /// Ids in the order they were added (some may have gone since): the oldest is dropped first.
        var order: [Int64] = []
        var orderStart = 0
    }

    let capacity: Int
    private let state = Mutex(State())
    /// Whether any entry may exist: removals skip the lock while the table has never been used.
    private let used = Atomic<Bool>(false)

    init(capacity: Int = 4096) {
        self.capacity = capacity
    }

    /// The number of entries.
    var count: Int { self.state.withLock { $0.entries.count } }

    /// Keeps a descriptor on `fd`'s file, which was just read whole through `fd` with every
    /// block's checksum matching `blockChecksums`, unless the file is no longer linked or that
    /// version, or no descriptor may be kept.
    func add(_ note: BodyFileNote, blockChecksums: [UInt32], readThrough fd: CInt) {
        let copy = dup(fd)
        guard copy >= 0 else { return }
        let open = OpenBodyFile(descriptor: copy, keep: true)
        guard open.counted else { return }  // at the limit: released (closed) here
        var dropped: [Entry] = []
        self.used.store(true, ordering: .relaxed)
        self.state.withLock { state in
            // Checked under the lock: a removal unlinks first and then takes the lock. Pages not
            // in the page cache do not matter here (each send checks them).
            let checked = withUnsafePointer(to: note.identity) { lacquer_check_if_cached(copy, $0) }
            guard checked == 0 || checked == -EAGAIN else { return }
            if let old = state.entries.updateValue(Entry(note: note, blockChecksums: blockChecksums, open: open), forKey: note.id) {
                dropped.append(old)
            } else {
                state.order.append(note.id)
            }
            while state.entries.count > self.capacity, state.orderStart < state.order.count {
                let oldest = state.order[state.orderStart]
                state.orderStart += 1
                if let gone = state.entries.removeValue(forKey: oldest) { dropped.append(gone) }
            }
            Self.compact(&state)
        }
        _ = dropped  // closed outside the lock
    }

    /// The file for `head`'s body when it may be sent now (see the type's rules); `.gone` drops
    /// the entry.
    func open(fileID: Int64, bodyLength: Int64, blockChecksums: [UInt32]) -> DiskTier.CachedBodyFile {
        guard self.used.load(ordering: .relaxed) else { return .gone }
        guard let entry = self.state.withLock({ $0.entries[fileID] }) else { return .gone }
        guard entry.note.length == bodyLength, entry.blockChecksums == blockChecksums else {
            self.remove([fileID])
            return .gone
        }
        let result = withUnsafePointer(to: entry.note.identity) { lacquer_check_if_cached(entry.open.descriptor, $0) }
        if result == 0 { return .open(entry.open) }
        let failure = DiskTier.cachedFileFailure(result)
        if case .gone = failure { self.remove([fileID]) }
        return failure
    }

    /// Drops the entries of `ids` (their files were removed).
    func remove(_ ids: [Int64]) {
        guard self.used.load(ordering: .relaxed), !ids.isEmpty else { return }
        var dropped: [Entry] = []
        self.state.withLock { state in
            for id in ids {
                if let gone = state.entries.removeValue(forKey: id) { dropped.append(gone) }
            }
            Self.compact(&state)
        }
        _ = dropped  // closed outside the lock
    }

    /// Drops every entry (the tier is closing).
    func removeAll() {
        let dropped = self.state.withLock { state -> [Int64: Entry] in
            defer { state = State() }
            return state.entries
        }
        _ = dropped
    }

    /// Trims the order list of ids already gone from its front, and rebuilds it when most of it
    /// names removed entries.
    private static func compact(_ state: inout State) {
        while state.orderStart < state.order.count, state.entries[state.order[state.orderStart]] == nil {
            state.orderStart += 1
        }
        let live = state.order.count - state.orderStart
        if state.orderStart > 1024 || live > 2 * state.entries.count + 1024 {
            state.order = state.order[state.orderStart...].filter { state.entries[$0] != nil }
            state.orderStart = 0
        }
    }
}
