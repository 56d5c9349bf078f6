import Synchronization
import VCL

/// Bans (Varnish's ban list): conditions on objects stored before a given time. They are tested
/// when a lookup finds an object, against that object and the request looking it up, so adding a
/// ban is O(1) however many objects it covers; a banned object is removed and the lookup misses.
/// Bans older than the oldest object that could still be served are dropped by `expire`.
final class BanList: Sendable {
    struct Entry: Sendable {
        var time: Double
        var ban: VCLBan
    }

    private let entries = Mutex<[Entry]>([])
    /// Lets the hit path skip the lock when there is no ban (the common case).
    private let count = Atomic<Int>(0)
    /// More bans than this are refused (each lookup may test every one).
    let limit: Int

    init(limit: Int = 10_000) {
        self.limit = limit
    }

    /// Adds a ban effective for objects stored before `now`. Returns false when the list is full.
    func add(_ ban: VCLBan, now: Double) -> Bool {
        self.entries.withLock { entries in
            guard entries.count < self.limit else { return false }
            entries.append(Entry(time: now, ban: ban))
            self.count.store(entries.count, ordering: .releasing)
            return true
        }
    }

    var isEmpty: Bool { self.count.load(ordering: .acquiring) == 0 }
    var total: Int { self.count.load(ordering: .relaxed) }

    /// Whether an object stored at `storedAt` is covered by a ban added after it.
    func covers(storedAt: Double, subject: @autoclosure () -> VCLBan.Subject) -> Bool {
        if self.isEmpty { return false }
        let relevant = self.entries.withLock { entries in entries.filter { $0.time >= storedAt } }
        if relevant.isEmpty { return false }
        let subject = subject()
        return relevant.contains { $0.ban.matches(subject) }
    }

    /// Drops bans that no stored object can predate any more (everything stored before `before`
    /// has expired past any stale window).
    func expire(before: Double) {
        self.entries.withLock { entries in
            entries.removeAll { $0.time < before }
            self.count.store(entries.count, ordering: .releasing)
        }
    }

    func snapshot() -> [Entry] {
        self.entries.withLock { $0 }
    }
}
