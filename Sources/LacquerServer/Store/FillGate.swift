/// Backpressure of the disk tier's write queue on fills.
///
/// Lacquer writes objects to disk behind the response (`DiskStorage.store` queues them for one
/// writer thread). When misses come faster than the writer commits, the queue would grow to its
/// bound and the stores beyond it would be dropped: objects that then live only as long as the
/// memory tier keeps them. nginx writes each cache file in the worker that fetched it, so its
/// fills wait for its disk; Varnish allocates storage before its fetch. The gate does the same
/// for Lacquer's fills, at the queue's level: while the queue is over its high mark, a fill waits
/// before it asks the origin, and the fills waiting go when the writer has brought the queue back
/// under the mark. Hits, passes and fetches already started never wait.
///
/// A disk that makes no progress must not stall every miss: when the writer has not finished a
/// write for `stallAfter` seconds while fills wait, the gate opens (fills go at once and the
/// queue's bound drops what it cannot hold, as before), and no fill waits longer than `maxWait`.
///
/// A state machine: events in, what to do out; `DiskStorage` keeps it under a lock and carries
/// the actions out (it completes the waiters' promises).
struct FillGate<Waiter> {
    /// The queue's high mark: fills wait once it holds `objects` objects or `bytes` bytes.
    struct Marks: Sendable {
        let objects: Int
        let bytes: Int

        /// Whether the queue is over its high mark.
        func backlogged(queuedObjects: Int, queuedBytes: Int) -> Bool {
            queuedObjects >= self.objects || queuedBytes >= self.bytes
        }
    }

    let marks: Marks
    /// Seconds without a finished write after which a backlog no longer holds fills.
    let stallAfter: Double
    /// The longest a fill waits.
    let maxWait: Double

    private(set) var waiters: [(waiter: Waiter, since: Double)] = []
    /// When the writer last finished a write (or the gate was made).
    private(set) var lastProgress: Double

    init(highObjects: Int, highBytes: Int, stallAfter: Double = 1, maxWait: Double = 2, now: Double) {
        self.marks = Marks(objects: highObjects, bytes: highBytes)
        self.stallAfter = stallAfter
        self.maxWait = maxWait
        self.lastProgress = now
    }

    enum Admission: Equatable {
        /// Fetch now.
        case go
        /// The waiter was queued: fetch when it is released (`progressed`, `expired`).
        case wait
    }

    /// A fill is about to ask the origin.
    mutating func fillStarting(_ waiter: Waiter, queuedObjects: Int, queuedBytes: Int, now: Double) -> Admission {
        guard self.marks.backlogged(queuedObjects: queuedObjects, queuedBytes: queuedBytes),
            now - self.lastProgress < self.stallAfter
        else { return .go }
        self.waiters.append((waiter, now))
        return .wait
    }

    /// The writer finished a write and the queue holds this much: every waiter goes once the
    /// queue is under its mark (each is one request in progress, so they are few).
    mutating func progressed(queuedObjects: Int, queuedBytes: Int, now: Double) -> [Waiter] {
        self.lastProgress = now
        guard !self.waiters.isEmpty, !self.marks.backlogged(queuedObjects: queuedObjects, queuedBytes: queuedBytes) else { return [] }
        return self.releaseAll()
    }

    /// Time passed (a timer while fills wait): waiters past `maxWait` go, and all of them when the
    /// writer has stalled.
    mutating func tick(now: Double) -> [Waiter] {
        if now - self.lastProgress >= self.stallAfter { return self.releaseAll() }
        var released: [Waiter] = []
        self.waiters.removeAll { entry in
            guard now - entry.since >= self.maxWait else { return false }
            released.append(entry.waiter)
            return true
        }
        return released
    }

    /// Every waiter goes (the writer caught up, stalled, or the server is stopping).
    mutating func releaseAll() -> [Waiter] {
        defer { self.waiters.removeAll() }
        return self.waiters.map(\.waiter)
    }
}
