import CacheStore
import NIOCore
import NIOHTTP1
import Synchronization

/// One in-flight cache fill that other requests for the same key wait on: Varnish's busy object
/// and its waiting list, condensed.
///
/// The leader (the flow that fetches) publishes the response head as soon as it knows the answer
/// is storable, then every body chunk; waiters stream those chunks to their own clients at their
/// own pace, so nobody waits for the whole body. Outcomes release the waiters:
///
/// | outcome       | waiters …                                                             |
/// |---------------|-----------------------------------------------------------------------|
/// | `complete`    | finish streaming                                                      |
/// | `uncacheable` | fetch on their own at once (hit-for-miss: no queueing behind others)  |
/// | `retryLookup` | look up again (a revalidated object is now stored)                    |
/// | `failed`      | serve a stale copy if they may, else answer the error                 |
///
/// Thread-safe: the leader and the waiters run on different event loops. Notifications are
/// collected under the lock and delivered after it, each on the waiter's own loop.
final class BusyFetch: Sendable {
    /// What waiters need to write the response head.
    struct Head: Sendable {
        var status: Int
        var reason: String
        var headers: HTTPHeaders
        var varyNames: [String]
        var variant: String
        var origin: Double
        var ttl: Double
        var expectedLength: Int?
    }

    enum Outcome: Sendable, Equatable {
        case complete
        case uncacheable
        case retryLookup
        case failed(BackendError)
    }

    enum Event: Sendable {
        case head
        case data
        case finished(Outcome)
    }

    private struct Subscriber {
        var id: Int
        var eventLoop: any EventLoop
        var notify: @Sendable (Event) -> Void
    }

    private struct State {
        var head: Head?
        var body = BusyBody()
        var outcome: Outcome?
        var subscribers: [Subscriber] = []
        var nextID = 0
    }

    let key: CacheKey
    /// Body bytes kept for waiters at most; beyond it, the waiters fail (the leader goes on).
    let maxBytes: Int
    private let state = Mutex<State>(State())

    /// When the fill began (its request cannot have been sent earlier).
    let started: Double

    init(key: CacheKey, maxBytes: Int, started: Double = 0) {
        self.key = key
        self.maxBytes = maxBytes
        self.started = started
    }

    // MARK: Waiters

    /// Registers a waiter; returns its id and whether a head or outcome is already there.
    func subscribe(on eventLoop: any EventLoop, notify: @escaping @Sendable (Event) -> Void) -> (id: Int, hasHead: Bool, outcome: Outcome?) {
        self.state.withLock { state in
            let id = state.nextID
            state.nextID += 1
            if state.outcome == nil {
                state.subscribers.append(Subscriber(id: id, eventLoop: eventLoop, notify: notify))
            }
            return (id, state.head != nil, state.outcome)
        }
    }

    func unsubscribe(_ id: Int) {
        self.state.withLock { state in
            state.subscribers.removeAll { $0.id == id }
        }
    }

    var head: Head? { self.state.withLock { $0.head } }
    var waiterCount: Int { self.state.withLock { $0.subscribers.count } }

    /// The body bytes from byte `offset` to what has arrived so far (slices, no copy), and the
    /// outcome if the fetch is over. A waiter that reads everything it is given, advancing its
    /// offset by the bytes it took, reads the body exactly once whatever the chunking.
    func body(from offset: Int) -> (parts: [ByteBuffer], outcome: Outcome?) {
        self.state.withLock { state in
            (state.body.slices(from: offset), state.outcome)
        }
    }

    // MARK: Leader

    func publishHead(_ head: Head) {
        let subscribers = self.state.withLock { state -> [Subscriber] in
            guard state.outcome == nil, state.head == nil else { return [] }
            state.head = head
            return state.subscribers
        }
        Self.notify(subscribers, .head)
    }

    func publishChunk(_ buffer: ByteBuffer) {
        var failed = false
        let subscribers = self.state.withLock { state -> [Subscriber] in
            guard state.outcome == nil, state.head != nil else { return [] }
            if state.body.count + buffer.readableBytes > self.maxBytes {
                failed = true
                return []
            }
            state.body.append(buffer)
            return state.subscribers
        }
        if failed {
            self.finish(.failed(.framing("response too large to share with waiting requests")))
        } else {
            Self.notify(subscribers, .data)
        }
    }

    /// Ends the busy state (once); every waiter hears the outcome.
    func finish(_ outcome: Outcome) {
        let subscribers = self.state.withLock { state -> [Subscriber] in
            guard state.outcome == nil else { return [] }
            state.outcome = outcome
            let subscribers = state.subscribers
            state.subscribers = []
            if outcome != .complete {
                state.body.removeAll()
            }
            return subscribers
        }
        Self.notify(subscribers, .finished(outcome))
    }

    private static func notify(_ subscribers: [Subscriber], _ event: Event) {
        for subscriber in subscribers {
            let notify = subscriber.notify
            subscriber.eventLoop.execute { notify(event) }
        }
    }
}

/// The busy-object table: at most one fill per key at a time, plus the hit-for-miss marks that
/// let requests for an uncacheable URL go to the origin in parallel instead of queueing.
final class FetchCoalescer: Sendable {
    enum Join {
        /// Nobody fetches this key: the caller does, and must `release` the busy fetch on every exit path.
        case leader(BusyFetch)
        /// Someone already fetches it: wait on that fetch.
        case waiter(BusyFetch)
        /// Recently uncacheable (hit-for-miss): fetch without coalescing.
        case hitForMiss
    }

    private struct State {
        var busy: [CacheKey: BusyFetch] = [:]
        var hitForMiss: [CacheKey: Double] = [:]
        /// When each key was last purged or invalidated; a fetch that started before must not store.
        var purged: [CacheKey: Double] = [:]
        /// When each surrogate key was last purged: a fetch sent before must not store an
        /// object tagged with it.
        var purgedTags: [String: Double] = [:]
    }

    private let state = Mutex<State>(State())
    let maxBytesPerFetch: Int

    init(maxBytesPerFetch: Int) {
        self.maxBytesPerFetch = maxBytesPerFetch
    }

    /// Fetches in flight and keys currently marked hit-for-miss (for `/stats`).
    func figures(now: Double) -> (busy: Int, hitForMiss: Int) {
        self.state.withLock { state in
            (state.busy.count, state.hitForMiss.values.reduce(0) { $0 + ($1 > now ? 1 : 0) })
        }
    }

    func join(_ key: CacheKey, now: Double) -> Join {
        self.state.withLock { state in
            if let until = state.hitForMiss[key] {
                if until > now { return .hitForMiss }
                state.hitForMiss[key] = nil
            }
            if let busy = state.busy[key] {
                return .waiter(busy)
            }
            let busy = BusyFetch(key: key, maxBytes: self.maxBytesPerFetch, started: now)
            state.busy[key] = busy
            return .leader(busy)
        }
    }

    /// Ends `busy` with `outcome` and frees its key for the next fetch.
    func release(_ busy: BusyFetch, outcome: BusyFetch.Outcome) {
        self.state.withLock { state in
            if state.busy[busy.key] === busy {
                state.busy[busy.key] = nil
            }
        }
        busy.finish(outcome)
    }

    func markHitForMiss(_ key: CacheKey, until: Double, now: Double) {
        self.state.withLock { state in
            state.hitForMiss[key] = until
            // Keep the table bounded: drop expired marks when it grows.
            if state.hitForMiss.count > 100_000 {
                state.hitForMiss = state.hitForMiss.filter { $0.value > now }
            }
        }
    }

    /// Records a purge of `key` at `time`, so fetches already in flight do not store their answer.
    func markPurged(_ key: CacheKey, at time: Double) {
        self.state.withLock { state in
            state.purged[key] = time
            state.hitForMiss[key] = nil
            if state.purged.count > 100_000 {
                // Fetches older than 10 minutes have timed out long ago.
                state.purged = state.purged.filter { $0.value > time - 600 }
            }
        }
    }

    /// `purgedSince(_:_:)` for the object's key; builds the key only while some purge is remembered.
    func purgedSince(keyOf object: StoredObject, _ time: Double) -> Bool {
        guard self.state.withLock({ !$0.purged.isEmpty }) else { return false }
        return self.purgedSince(object.key, time)
    }

    /// Whether `key` was purged at or after `time` (a fetch started at `time` lost the race).
    func purgedSince(_ key: CacheKey, _ time: Double) -> Bool {
        self.state.withLock { state in
            guard let purged = state.purged[key] else { return false }
            return purged >= time
        }
    }

    /// Records a purge of these surrogate keys at `time` (see `markPurged`).
    func markPurged(tags: [String], at time: Double) {
        self.state.withLock { state in
            for tag in tags { state.purgedTags[tag] = time }
            if state.purgedTags.count > 100_000 {
                state.purgedTags = state.purgedTags.filter { $0.value > time - 600 }
            }
        }
    }

    /// Whether any of `tags` was purged at or after `time`.
    func purgedSince(tags: [String], _ time: Double) -> Bool {
        guard !tags.isEmpty else { return false }
        return self.state.withLock { state in
            guard !state.purgedTags.isEmpty else { return false }
            return tags.contains { (state.purgedTags[$0] ?? -.infinity) >= time }
        }
    }

    /// Whether a surrogate key purge is remembered (so stored objects' keys are worth reading).
    var remembersTagPurges: Bool { self.state.withLock { !$0.purgedTags.isEmpty } }

    /// Whether one of `object`'s surrogate keys (listed in `fields`) was purged at or after
    /// `time`; its keys are read only while some purge by key is remembered.
    func purgedSince(surrogateKeysOf object: StoredObject, fields: SurrogateKeyFields, _ time: Double) -> Bool {
        self.remembersTagPurges && self.purgedSince(tags: object.surrogateKeys(fields), time)
    }

    func clearHitForMiss(_ key: CacheKey) {
        _ = self.state.withLock { $0.hitForMiss.removeValue(forKey: key) }
    }

    var busyCount: Int { self.state.withLock { $0.busy.count } }

    /// When the oldest fill in flight began, nil when none runs: an object it stores may
    /// predate a ban, so the ban must stay until it is stored and tested.
    var oldestFillStart: Double? {
        self.state.withLock { $0.busy.values.lazy.map(\.started).min() }
    }
    var hitForMissCount: Int { self.state.withLock { $0.hitForMiss.count } }
}
