import CacheStore
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// Runs the disk tier off the event loops and keeps its answers consistent with PURGE.
///
/// `DiskTier` is a synchronous, thread-safe store; this driver decides *where* its work runs
/// (async-http-client's split of deciding from doing I/O):
/// - mutations (store, remove, maintenance) run on ONE writer thread, in submission order, so a
///   purge submitted after a store always lands after it;
/// - lookups and body reads run on a small reader pool;
/// - a purge or invalidation first records a tombstone (key → time), so until its disk commit is
///   done, lookups ignore disk copies stored before it: the purge wins even mid-flight.
/// Stores are write-behind (a response never waits for the disk) with a bound on the bytes
/// queued; beyond it a write is dropped and counted, never buffered without limit. While the
/// queue is over half its bound (or `fillGateObjects` objects: `fillMarks`), new fills wait before they ask
/// the origin until the writer has caught up (`FillGate`, `waitForRoom`), so a miss storm is
/// written, not dropped.
final class DiskStorage: Sendable {
    let tier: DiskTier
    private let writer: NIOThreadPool
    private let readers: NIOThreadPool
    private let counters: Counters
    private let logger: Logger
    private let maxQueuedBytes: Int
    private let queuedBytes = Atomic<Int>(0)
    private let pendingWrites = Atomic<Int>(0)
    /// Fills waiting for the write queue to come under its high mark.
    private let fillGate: Mutex<FillGate<EventLoopPromise<Void>>>
    /// The gate's marks, read without its lock: a fill below them goes at once.
    private let fillMarks: FillGate<EventLoopPromise<Void>>.Marks
    private let tombstones = Mutex<[CacheKey: Double]>([:])
    /// Purges by surrogate key still being carried out on disk. Lookups hide (soft: see as
    /// stale), and the writer does not write, the objects they cover.
    private let tagPurges = Mutex(PendingTagPurges())

    struct PendingTagPurges: Sendable {
        /// Key → the latest purge's time.
        var hard: [String: Double] = [:]
        /// Key → the latest soft purge's time and grace.
        var soft: [String: (time: Double, grace: Double)] = [:]
        var isEmpty: Bool { self.hard.isEmpty && self.soft.isEmpty }

        mutating func add(_ purge: DiskTier.TagPurge) {
            if purge.soft {
                if (self.soft[purge.tag]?.time ?? -.infinity) < purge.time { self.soft[purge.tag] = (purge.time, purge.grace) }
            } else {
                self.hard[purge.tag] = max(self.hard[purge.tag] ?? -.infinity, purge.time)
            }
        }

        mutating func finished(_ purge: DiskTier.TagPurge) {
            if purge.soft {
                if self.soft[purge.tag]?.time == purge.time { self.soft[purge.tag] = nil }
            } else if self.hard[purge.tag] == purge.time {
                self.hard[purge.tag] = nil
            }
        }

        /// Whether a purge (hard or soft) of any of `keys` came at or after `time`.
        func covers(_ keys: [String], receivedAt time: Double) -> Bool {
            keys.contains { (self.hard[$0] ?? -.infinity) >= time || (self.soft[$0]?.time ?? -.infinity) >= time }
        }

        /// What lookups see of `head`: nil when a purge removed it, a stale copy when a soft one covers it.
        func apply(to head: DiskObjectHead, fields: SurrogateKeyFields) -> DiskObjectHead? {
            var keys: [String] = []
            let headers = head.headers  // decoded from the stored encoding on each access: once
            for name in fields.names {
                for value in headers[name] { SurrogateKeyFields.split(value, into: &keys) }
            }
            guard !keys.isEmpty else { return head }
            if keys.contains(where: { (self.hard[$0] ?? -.infinity) >= head.responseTime }) { return nil }
            var seen = head
            for key in keys {
                if let soft = self.soft[key], soft.time >= head.responseTime {
                    seen = seen.softPurged(at: soft.time, minimumGrace: soft.grace) ?? seen
                }
            }
            return seen
        }
    }
    /// Objects a purge by surrogate key removes per transaction, and the pause between two
    /// (stores and lookups run in between; the pause keeps a huge purge from taking a core).
    static let tagPurgeBatch = 200
    static let tagPurgePause: useconds_t = 5_000
    /// Carries out purges by surrogate key, a batch at a time (the writer's lock orders its
    /// transactions with the stores).
    private let purger: NIOThreadPool
    private let writeQueue = Mutex(WriteQueue())
    /// Decides, just before a queued object is written, whether it may still be (a ban added
    /// while it waited); set once by the server.
    /// The admission test, boxed: a closure held directly as a Mutex's value is reabstracted on
    /// every `withLock` and written back wrapped in another thunk, so each call got slower than
    /// the last (the disk writer spent a quarter of its time walking the chain in a miss storm).
    private let admission = Mutex<Admission?>(nil)
    private final class Admission: Sendable {
        let admits: @Sendable (StoredObject) -> Bool
        init(_ admits: @escaping @Sendable (StoredObject) -> Bool) { self.admits = admits }
    }

    private struct WriteQueue: ~Copyable {
        var objects: [StoredObject] = []
        var drainScheduled = false
    }

    /// Seconds since the epoch: the LRU touch and insert times (injectable, as the server's clock).
    private let clock: @Sendable () -> Double

    init(
        tier: DiskTier, counters: Counters, logger: Logger, maxQueuedBytes: Int = 64 << 20,
        fillGateObjects: Int = 16_384, clock: @escaping @Sendable () -> Double = DiskTier.wallClock
    ) {
        self.clock = clock
        let gate = FillGate<EventLoopPromise<Void>>(
            highObjects: fillGateObjects, highBytes: maxQueuedBytes / 2, stallAfter: Self.fillStallAfter,
            maxWait: Self.fillMaxWait, now: clock())
        self.fillMarks = gate.marks
        self.fillGate = Mutex(gate)
        self.tier = tier
        self.counters = counters
        self.logger = logger
        self.maxQueuedBytes = maxQueuedBytes
        self.writer = NIOThreadPool(numberOfThreads: 1)
        self.purger = NIOThreadPool(numberOfThreads: 1)
        self.purger.start()
        self.readers = NIOThreadPool(numberOfThreads: 2)
        self.writer.start()
        self.readers.start()
    }

    func setAdmission(_ admits: @escaping @Sendable (StoredObject) -> Bool) {
        let box = Admission(admits)
        self.admission.withLock { $0 = box }
    }

    // MARK: Reads

    /// Every variant stored on disk under `key`, minus those a pending purge removed.
    ///
    /// Answered on the calling event loop when the index pages are cached (no thread hop), else
    /// on the reader threads (see `DiskTier.lookupWithoutWaiting`).
    func lookup(_ key: CacheKey, on eventLoop: any EventLoop) -> EventLoopFuture<[DiskObjectHead]> {
        let pending = self.pendingPurges(key)
        if let found = self.tier.lookupWithoutWaiting(key) {
            return eventLoop.makeSucceededFuture(pending(found))
        }
        return self.readers.runIfActive(eventLoop: eventLoop) { [tier] in
            pending(try tier.lookup(key))
        }
    }

    /// `lookup` on the caller's thread, or nil when that would wait for the disk.
    func lookupWithoutWaiting(_ key: CacheKey) -> [DiskObjectHead]? {
        // The pending purges first, as `lookup` does: read after the rows, a removal that
        // committed in between (and dropped its tombstone) would let the removed rows through.
        let pending = self.pendingPurges(key)
        return self.tier.lookupWithoutWaiting(key).map(pending)
    }

    /// What purges queued but not yet committed do to the heads of `key`: a purge hides them, a
    /// soft purge makes them stale. Read before the lookup: a purge that commits while the
    /// lookup runs drops its note, and the lookup may have read the rows before that commit.
    private func pendingPurges(_ key: CacheKey) -> @Sendable ([DiskObjectHead]) -> [DiskObjectHead] {
        let cutoff = self.tombstones.withLock { $0[key] }
        let purges = self.tagPurges.withLock { $0 }
        let fields = self.tier.configuration.surrogateKeyFields
        return { found in
            var heads = found
            if let cutoff {
                heads.removeAll { $0.responseTime <= cutoff }
            }
            if !purges.isEmpty {
                heads = heads.compactMap { purges.apply(to: $0, fields: fields) }
            }
            return heads
        }
    }

    /// The whole object (checksums verified), for promotion into memory.
    func load(_ head: DiskObjectHead, on eventLoop: any EventLoop) -> EventLoopFuture<StoredObject> {
        self.readers.runIfActive(eventLoop: eventLoop) { [tier] in
            try tier.load(head)
        }
    }

    /// A reader of `head`'s body; `keepVerifiedFile` keeps the file open once read whole and
    /// verified, for `DiskTier.openVerifiedIfCached`.
    func openBody(_ head: DiskObjectHead, keepVerifiedFile: Bool = false, on eventLoop: any EventLoop) -> EventLoopFuture<DiskBodyReader> {
        self.readers.runIfActive(eventLoop: eventLoop) { [tier] in
            try tier.openBody(head, keepVerifiedFile: keepVerifiedFile)
        }
    }

    /// The next verified chunk of a body, nil at the end.
    func read(_ reader: DiskBodyReader, on eventLoop: any EventLoop) -> EventLoopFuture<ByteBuffer?> {
        self.readers.runIfActive(eventLoop: eventLoop) {
            try reader.next(maxBytes: 256 * 1024)
        }
    }

    /// Marks a disk hit as used (LRU): noted in memory on the caller's loop; a full batch is
    /// written on the writer thread.
    func touch(_ head: DiskObjectHead) {
        guard self.tier.noteUse(head, now: self.clock()) else { return }
        self.writer.submit { [tier] state in
            guard case .active = state else { return }
            try? tier.flushTouches()
        }
    }

    // MARK: Writes

    /// Queues `object` for the disk (write-behind). Returns false if the queue was full.
    ///
    /// The queue is a plain array of object references drained by one task on the writer thread,
    /// scheduled when the queue turns non-empty: a burst of fills costs no allocation per object
    /// (a closure per store did, and its fragments stayed resident after the burst), and the
    /// drained array is released, not kept at its high-water capacity.
    @discardableResult
    func store(_ object: StoredObject) -> Bool {
        let size = object.bodyLength
        let queued = self.queuedBytes.wrappingAdd(size, ordering: .relaxed).newValue
        if queued > self.maxQueuedBytes {
            self.queuedBytes.wrappingSubtract(size, ordering: .relaxed)
            self.counters.increment(.diskWriteDropped)
            return false
        }
        self.pendingWrites.wrappingAdd(1, ordering: .relaxed)
        // The drain is submitted under the queue's lock, so a store queued before a later
        // `remove` is written before that remove runs (both go through the writer, in order).
        self.writeQueue.withLock { queue in
            queue.objects.append(object)
            guard !queue.drainScheduled else { return }
            queue.drainScheduled = true
            self.writer.submit { [self] state in self.drainWrites(active: state == .active) }
        }
        return true
    }

    /// Nil when a fill may ask the origin now; else a future that completes (on `eventLoop`)
    /// when it may: the write queue is over its high mark and the writer is making progress
    /// (`FillGate`). Counted in `fills_waited_for_disk`.
    func waitForRoom(on eventLoop: any EventLoop) -> EventLoopFuture<Void>? {
        let objects = self.pendingWrites.load(ordering: .relaxed)
        let bytes = self.queuedBytes.load(ordering: .relaxed)
        guard self.fillMarks.backlogged(queuedObjects: objects, queuedBytes: bytes) else { return nil }
        let promise = eventLoop.makePromise(of: Void.self)
        let admission = self.fillGate.withLock { $0.fillStarting(promise, queuedObjects: objects, queuedBytes: bytes, now: self.clock()) }
        guard admission == .wait else {
            promise.succeed(())
            return nil
        }
        self.counters.increment(.fillsWaitedForDisk)
        // Timers for the gate's own limits: a stalled writer, the longest wait.
        for delay in [Self.fillStallAfter, Self.fillMaxWait] {
            eventLoop.scheduleTask(in: .milliseconds(Int64(delay * 1000) + 10)) { [self] in
                for waiter in self.fillGate.withLock({ $0.tick(now: self.clock()) }) { waiter.succeed(()) }
            }
        }
        return promise.futureResult
    }

    /// Seconds without a finished write after which waiting fills go (a stalled disk drops
    /// writes rather than stall misses), and the longest a fill waits.
    static let fillStallAfter = 1.0
    static let fillMaxWait = 2.0

    /// Runs `body` on the writer thread after what is queued there (tests: a busy writer).
    func onWriter(_ body: @escaping @Sendable () -> Void) {
        self.writer.submit { _ in body() }
    }

    /// Fills waiting (tests).
    var fillsWaiting: Int { self.fillGate.withLock { $0.waiters.count } }

    /// Most objects written in one commit (`DiskTier.store(_:now:)` with a list).
    static let writeBatch = 256

    /// A drain that finds this many objects queued has a backlog: the tier writes it with its
    /// larger page cache (`DiskTier.useBacklogCache`), kept a while after the queue empties.
    /// Four commits' worth: a storm, not a burst of fills the writer clears in a few commits
    /// (whose 4 MiB of pages would be most of the memory those objects cost).
    static let backlogObjects = 1024

    /// Writes queued objects until the queue is empty (on the writer thread), up to
    /// `writeBatch` in each commit: a miss storm's stores share their commits.
    private func drainWrites(active: Bool) {
        while true {
            let batch: [StoredObject] = self.writeQueue.withLock { queue in
                if queue.objects.isEmpty {
                    queue.drainScheduled = false
                    return []
                }
                defer { queue.objects = [] }
                return queue.objects
            }
            if batch.isEmpty {
                self.tier.useBacklogCache(false, now: self.clock())
                return
            }
            if active, batch.count >= Self.backlogObjects { self.tier.useBacklogCache(true, now: self.clock()) }
            for start in stride(from: 0, to: batch.count, by: Self.writeBatch) {
                self.write(batch[start..<min(start + Self.writeBatch, batch.count)], active: active)
            }
        }
    }

    private func write(_ objects: ArraySlice<StoredObject>, active: Bool) {
        defer {
            for object in objects {
                self.queuedBytes.wrappingSubtract(object.bodyLength, ordering: .relaxed)
                self.pendingWrites.wrappingSubtract(1, ordering: .relaxed)
            }
            let released = self.fillGate.withLock {
                $0.progressed(
                    queuedObjects: self.pendingWrites.load(ordering: .relaxed), queuedBytes: self.queuedBytes.load(ordering: .relaxed),
                    now: self.clock())
            }
            for waiter in released { waiter.succeed(()) }
        }
        guard active else { return }
        // Checked for every object just before the commit, which runs on this thread: a purge
        // or ban that comes later runs after it (on the writer too) and removes what it wrote.
        let writing = objects.filter { self.stillWanted($0) }
        guard !writing.isEmpty else { return }
        for (object, result) in zip(writing, self.tier.store(writing, now: self.clock())) {
            switch result {
            case .success(true):
                self.counters.increment(.diskStored)
            case .success(false):
                break  // refused by the tier's limits (counted there)
            case .failure(let error):
                self.counters.increment(.diskWriteErrors)
                self.logger.warning("disk tier write failed", metadata: ["key": "\(object.key)", "error": "\(error)"])
            }
        }
    }

    /// Whether a queued object may still be written: not purged, by key or surrogate key, and
    /// not banned while it waited.
    private func stillWanted(_ object: StoredObject) -> Bool {
        // The key is built (a String) only while some tombstone is kept.
        if !self.tombstones.withLock({ $0.isEmpty }), case let key = object.key,
            let cutoff = self.tombstones.withLock({ $0[key] }), object.responseTime <= cutoff
        {
            return false  // purged while it waited
        }
        let purges = self.tagPurges.withLock { $0 }
        if !purges.isEmpty,
            purges.covers(object.surrogateKeys(self.tier.configuration.surrogateKeyFields), receivedAt: object.responseTime)
        {
            return false  // its surrogate key was purged while it waited
        }
        if let admission = self.admission.withLock({ $0 }), !admission.admits(object) {
            return false  // banned while it waited
        }
        return true
    }

    /// Removes every variant of `key` from disk (a durable purge: the commit is fully synced).
    /// Lookups ignore older disk copies from now on, even before the commit.
    func remove(_ key: CacheKey, now: Double, on eventLoop: any EventLoop) -> EventLoopFuture<Int> {
        self.remove(keys: [key], now: now, on: eventLoop).map(\.count)
    }

    /// Removes every variant of each of `keys` in one durable commit; lookups ignore older disk
    /// copies of them from now on. `related` names further keys to remove with them, from the
    /// stored heads of the first key (a sliced object's slices); the answer is then the number
    /// of objects that were under the first key (else of all removed) and the related keys.
    func remove(
        keys: [CacheKey], now: Double, on eventLoop: any EventLoop,
        related: (@Sendable ([DiskObjectHead]) -> [CacheKey])? = nil
    ) -> EventLoopFuture<(count: Int, related: [CacheKey])> {
        self.tombstones.withLock { tombstones in
            for key in keys { tombstones[key] = max(tombstones[key] ?? 0, now) }
        }
        let promise = eventLoop.makePromise(of: (count: Int, related: [CacheKey]).self)
        self.writer.submit { [self] state in
            guard case .active = state else {
                return promise.fail(CacheStoreError.closed(path: self.tier.directory))
            }
            var keys = keys
            do {
                var extra: [CacheKey] = []
                var underFirst: Int?
                if let related, let first = keys.first {
                    let heads = try self.tier.lookup(first)
                    underFirst = heads.count
                    extra = related(heads)
                    self.tombstones.withLock { tombstones in
                        for key in extra { tombstones[key] = max(tombstones[key] ?? 0, now) }
                    }
                    keys += extra
                }
                let removed = try self.tier.remove(keys: keys)
                promise.succeed((underFirst ?? removed, extra))
            } catch {
                self.counters.increment(.diskWriteErrors)
                promise.fail(error)
            }
            self.tombstones.withLock { tombstones in
                for key in keys {
                    if let t = tombstones[key], t <= now { tombstones[key] = nil }
                }
            }
        }
        return promise.futureResult
    }

    /// Runs `work` on the writer thread, after every store queued before it; a failure is
    /// counted as a write error.
    func onWriter<T: Sendable>(on eventLoop: any EventLoop, _ work: @escaping @Sendable (DiskTier) throws -> T) -> EventLoopFuture<T> {
        let promise = eventLoop.makePromise(of: T.self)
        self.writer.submit { [self] state in
            guard case .active = state else {
                return promise.fail(CacheStoreError.closed(path: self.tier.directory))
            }
            do {
                promise.succeed(try work(self.tier))
            } catch {
                self.counters.increment(.diskWriteErrors)
                promise.fail(error)
            }
        }
        return promise.futureResult
    }

    /// Purges (soft: makes stale, with at least `minimumGrace`) every object tagged with any
    /// of `keys` received until `time`: lookups hide them (see them stale) at once; the purge is recorded (committed, `synchronous=FULL`) before the future gives
    /// the number of objects tagged; the objects are then removed in paced batches (`carryOut`), a
    /// purge interrupted by a crash being resumed at start-up (`resumeTagPurges`).
    func purgeTagged(
        _ keys: [String], time: Double, soft: Bool = false, minimumGrace: Double = 0, on eventLoop: any EventLoop
    ) -> EventLoopFuture<Int> {
        let purges = keys.map { DiskTier.TagPurge(tag: $0, time: time, soft: soft, grace: minimumGrace) }
        self.tagPurges.withLock { pending in
            for purge in purges { pending.add(purge) }
        }
        return self.onWriter(on: eventLoop) { [self] tier in
            let count = try tier.recordTagPurge(keys, time: time, soft: soft, minimumGrace: minimumGrace)
            for purge in purges {
                self.carryOut(purge)
            }
            return count
        }
    }

    /// Puts the purges by surrogate key a previous run did not finish back in force and
    /// carries them out. Returns how many there were.
    @discardableResult
    func resumeTagPurges() throws -> Int {
        let pending = try self.tier.storedTagPurges()
        self.tagPurges.withLock { purges in
            for purge in pending { purges.add(purge) }
        }
        for purge in pending { self.carryOut(purge) }
        return pending.count
    }

    /// Removes what `purge` covers, `tagPurgeBatch` objects per transaction with a pause
    /// between, on the purger thread; then it no longer hides anything from lookups.
    private func carryOut(_ purge: DiskTier.TagPurge) {
        self.purger.submit { [self] state in
            guard case .active = state else { return }
            do {
                while try self.tier.continueTagPurge(purge, limit: Self.tagPurgeBatch) == Self.tagPurgeBatch {
                    usleep(Self.tagPurgePause)
                }
                self.tagPurges.withLock { $0.finished(purge) }
            } catch CacheStoreError.closed(_) {
                return  // shutting down: the record stays and the next start resumes it
            } catch {
                // The record stays: lookups keep hiding what it covers; the next start resumes it.
                self.counters.increment(.diskWriteErrors)
                self.logger.error(
                    "a purge by surrogate key could not be carried out in the disk tier",
                    metadata: ["key": "\(purge.tag)", "error": "\(error)"])
            }
        }
    }

    /// Removes one stored object (a banned one a lookup met), on the writer thread.
    func remove(_ head: DiskObjectHead) {
        self.writer.submit { [tier, counters] state in
            guard case .active = state else { return }
            do {
                try tier.remove(head)
            } catch {
                counters.increment(.diskWriteErrors)
            }
        }
    }

    /// Records a ban VCL added in the index, on the writer thread (the admin's are recorded
    /// before its answer, by `LacquerServer.ban`). The future completes once it is committed
    /// or has failed (logged and counted); the request that added it answers after that.
    func persistBan(time: Double, expression: String, on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        self.onWriter(on: eventLoop) { tier in
            _ = try tier.addBan(time: time, expression: expression)
        }.flatMapErrorThrowing { [logger] error in
            logger.error("ban could not be recorded in the disk tier", metadata: ["expression": "\(expression)", "error": "\(error)"])
        }
    }

    /// Drops a row whose body failed its checksum or went missing (the tier already did; count it).
    /// An object replaced or removed since its lookup (`bodyGone`) is no failure: the request
    /// fetches it, and nothing is counted or logged above debug.
    func noteReadFailure(_ error: any Error, key: CacheKey) {
        if case .bodyGone? = error as? CacheStoreError {
            self.logger.debug("disk tier object gone before its body was opened", metadata: ["key": "\(key)"])
            return
        }
        self.counters.increment(.diskReadErrors)
        self.logger.warning("disk tier object dropped", metadata: ["key": "\(key)", "error": "\(error)"])
    }

    // MARK: Maintenance and shutdown

    /// Expiry sweep and LRU eviction, on the writer thread.
    func maintain(now: Double) {
        self.writer.submit { [tier, logger] state in
            guard case .active = state else { return }
            do {
                try tier.removeExpired(now: now)
                try tier.evict()
            } catch {
                logger.warning("disk tier maintenance failed", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Deletes body files without a row (crash debris). Never on the start-up path.
    func sweepOrphans() {
        self.writer.submit { [tier, logger] state in
            guard case .active = state else { return }
            do {
                let swept = try tier.sweepOrphans()
                if swept > 0 { logger.info("swept \(swept) orphaned body file(s) from the disk tier") }
            } catch {
                logger.warning("disk tier orphan sweep failed", metadata: ["error": "\(error)"])
            }
        }
    }

    var pendingWriteCount: Int { self.pendingWrites.load(ordering: .relaxed) }

    /// Waits (bounded) for queued writes, then closes the tier and its threads.
    func shutdown(drainTimeout: Double = 10) async {
        for waiter in self.fillGate.withLock({ $0.releaseAll() }) { waiter.succeed(()) }
        let deadline = ContinuousClock.now.advanced(by: .milliseconds(Int(drainTimeout * 1000)))
        while self.pendingWriteCount > 0 && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
        try? await self.writer.runIfActive { [tier] in tier.close() }
        try? await self.purger.shutdownGracefully()
        try? await self.writer.shutdownGracefully()
        try? await self.readers.shutdownGracefully()
    }
}
