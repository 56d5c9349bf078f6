import Synchronization
import VCL

/// Bans (Varnish's ban list): conditions on objects stored before a given time.
///
/// Adding a ban is O(1) however many objects it covers. Each ban gets a sequence number, and
/// every memory object remembers the newest ban it has been tested against
/// (`StoredObject.bansCheckedThrough`, Varnish's `oc->ban` pointer): a lookup tests an object
/// only against bans added since, then moves its mark forward, so a thousand bans cost a
/// thousand tests once per object, not on every hit. The ban lurker (`BanLurker`) tests stored
/// objects in the background, removes what matches and drops the bans no object can meet any
/// more, so the list does not grow without bound.
final class BanList: Sendable {
    struct Entry: Sendable {
        /// Increases with every ban added in this process (restored bans get new numbers).
        var sequence: UInt32
        /// When it was added: it covers objects received before.
        var time: Double
        var ban: VCLBan
        /// Objects removed because of it so far (at lookup or by the lurker).
        var removed: Int
    }

    private struct State {
        var entries: [Entry] = []
        var nextSequence: UInt32 = 1
    }

    private let state = Mutex(State())
    /// The newest active ban's sequence number, 0 when none is active: an object marked as
    /// checked through it needs no test (lets the hit paths skip the lock).
    private let newest = Atomic<UInt32>(0)
    private let count = Atomic<Int>(0)
    /// More bans than this are refused (each may have to be tested once per object).
    let limit: Int

    init(limit: Int = 10_000) {
        self.limit = limit
    }

    /// Adds a ban effective for objects received before `now`. Returns its sequence number, or
    /// nil when the list is full.
    @discardableResult
    func add(_ ban: VCLBan, now: Double) -> UInt32? {
        self.state.withLock { state in
            guard state.entries.count < self.limit else { return nil }
            let sequence = state.nextSequence
            state.nextSequence &+= 1
            state.entries.append(Entry(sequence: sequence, time: now, ban: ban, removed: 0))
            self.publish(state)
            return sequence
        }
    }

    private func publish(_ state: State) {
        self.count.store(state.entries.count, ordering: .releasing)
        self.newest.store(state.entries.last?.sequence ?? 0, ordering: .releasing)
    }

    var isEmpty: Bool { self.count.load(ordering: .acquiring) == 0 }
    var total: Int { self.count.load(ordering: .relaxed) }
    /// The newest active ban (0: none). An object checked through it meets no ban.
    var newestSequence: UInt32 { self.newest.load(ordering: .acquiring) }

    /// What testing an object found.
    enum Verdict: Equatable {
        /// Covered by the ban with this sequence number.
        case banned(UInt32)
        /// Meets none of the active bans up to this sequence number (mark the object so).
        case clear(through: UInt32)
    }

    /// Tests an object received at `storedAt`, already checked through `checkedThrough`, against
    /// every newer active ban added after it was received. `subject` is built only when a ban
    /// needs testing.
    func check(storedAt: Double, checkedThrough: UInt32, subject: () -> VCLBan.Subject) -> Verdict {
        let newest = self.newestSequence
        if newest == 0 || checkedThrough >= newest { return .clear(through: max(newest, checkedThrough)) }
        let entries = self.state.withLock { $0.entries }  // one retain: the array is copy-on-write
        var built: VCLBan.Subject?
        for entry in entries where entry.sequence > checkedThrough && entry.time >= storedAt {
            if built == nil { built = subject() }
            if entry.ban.matches(built!) { return .banned(entry.sequence) }
        }
        return .clear(through: entries.last?.sequence ?? newest)
    }

    /// Counts objects removed because of the ban `sequence`.
    func noteRemoved(_ sequence: UInt32, count: Int = 1) {
        guard count > 0 else { return }
        self.state.withLock { state in
            if let index = state.entries.firstIndex(where: { $0.sequence == sequence }) {
                state.entries[index].removed += count
            }
        }
    }

    /// Drops the bans whose sequence numbers are listed; returns the dropped entries.
    func remove(_ sequences: Set<UInt32>) -> [Entry] {
        guard !sequences.isEmpty else { return [] }
        return self.state.withLock { state in
            let dropped = state.entries.filter { sequences.contains($0.sequence) }
            state.entries.removeAll { sequences.contains($0.sequence) }
            self.publish(state)
            return dropped
        }
    }

    func snapshot() -> [Entry] {
        self.state.withLock { $0.entries }
    }
}
