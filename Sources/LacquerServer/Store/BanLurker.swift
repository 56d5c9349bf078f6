#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CacheStore
import Logging
import NIOHTTP1
import NIOPosix
import Synchronization
import VCL

/// The ban lurker (Varnish's `ban_lurker`): tests stored objects against the active bans in
/// the background, removes those a ban covers, and drops bans no stored object can meet any
/// more, so the ban list stays short and lookups stay cheap.
///
/// A pass walks the memory tier and then the disk tier in batches, pausing between batches
/// (`batchSize`, `pause`: Varnish's `ban_lurker_batch` and `ban_lurker_sleep`), on a thread of
/// its own, never on an event loop. It can test the bans that read only `obj.*`, and `req.url`
/// when the cache key is the default one (URL and host, so the URL is known from the key);
/// bans on request headers are left to lookups.
///
/// When a pass ends, a ban added before the pass began is dropped (from the list and from the
/// disk tier's index) if no fill that began before the ban is still running (its object is
/// tested when stored, `RequestFlow.mayStore`, and by the disk writer) and either the lurker
/// can test it (so every object it covers is gone) or no object older than the ban was left
/// in either tier.
final class BanLurker: Sendable {
    private let bans: BanList
    private let memory: MemoryTier
    private let disk: DiskStorage?
    private let coalescer: FetchCoalescer
    /// Whether cache keys are the default ones (no vcl_hash of the user's): set on each VCL load.
    private let defaultKey = Atomic<Bool>(true)
    private let counters: Counters
    private let logger: Logger
    private let clock: @Sendable () -> Double
    let batchSize: Int
    let pause: Double
    /// Seconds between checks, while no ban the lurker can test is new, for bans that no stored
    /// object is old enough to meet any more (a bound on the CPU an idle lurker spends).
    let idleCheckInterval: Double
    private let thread = NIOThreadPool(numberOfThreads: 1)
    private let running = Atomic<Bool>(false)
    /// Progress kept between passes (the lurker's thread and tests only).
    private let progress = Mutex(Progress())

    private struct Progress {
        /// Every ban up to this one that the lurker can test has been applied to every stored object.
        var walkedThrough: UInt32 = 0
        /// When the ban list was last checked for bans to drop.
        var lastCheck = -Double.infinity
    }

    init(
        bans: BanList, memory: MemoryTier, disk: DiskStorage?, coalescer: FetchCoalescer,
        counters: Counters, logger: Logger,
        clock: @escaping @Sendable () -> Double, batchSize: Int = 1000, pause: Double = 0.01,
        idleCheckInterval: Double = 60
    ) {
        self.bans = bans
        self.memory = memory
        self.disk = disk
        self.coalescer = coalescer
        self.counters = counters
        self.logger = logger
        self.clock = clock
        self.batchSize = max(1, batchSize)
        self.pause = pause
        self.idleCheckInterval = idleCheckInterval
        self.thread.start()
    }

    func setKeyIsDefault(_ value: Bool) {
        if self.defaultKey.exchange(value, ordering: .relaxed) != value {
            // Which bans the lurker can test changed: none counts as applied until walked again.
            self.progress.withLock { $0.walkedThrough = 0 }
        }
    }

    /// Starts a pass in the background unless one runs or no ban is active.
    func kick() {
        guard !self.bans.isEmpty else { return }
        guard self.running.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged else { return }
        self.thread.submit { [self] state in
            defer { self.running.store(false, ordering: .releasing) }
            guard case .active = state else { return }
            self.pass()
        }
    }

    func shutdown() async {
        try? await self.thread.shutdownGracefully()
    }

    /// What one pass did.
    struct PassResult: Sendable, Equatable {
        /// Whether both tiers were walked and tested (else at most the oldest object was looked for).
        var walked = false
        var tested = 0
        var removed = 0
        var dropped = 0
    }

    /// One pass (synchronous; tests call it). When a ban the lurker can test was added since the
    /// last walk, both tiers are walked and tested; otherwise, at most every
    /// `idleCheckInterval`, only the oldest stored object is looked for, which is all that the
    /// remaining bans (on request headers) need to be dropped. Then the ban list is pruned.
    @discardableResult
    func pass() -> PassResult {
        let started = self.clock()
        let entries = self.bans.snapshot()
        guard let newest = entries.last?.sequence else { return PassResult() }
        let keyIsDefault = self.defaultKey.load(ordering: .relaxed)
        let testable = Set(entries.filter { Self.canTest($0.ban, keyIsDefault: keyIsDefault) }.map(\.sequence))
        let progress = self.progress.withLock { $0 }
        if testable.contains(where: { $0 > progress.walkedThrough }) {
            return self.walk(entries, testable: testable, keyIsDefault: keyIsDefault, started: started, newest: newest)
        }
        guard started - progress.lastCheck >= self.idleCheckInterval else { return PassResult() }
        self.progress.withLock { $0.lastCheck = started }
        var oldest = Double.infinity
        self.memory.removeAll { object in
            oldest = min(oldest, object.responseTime)
            return false
        }
        if let disk = self.disk {
            do {
                if let onDisk = try disk.tier.oldestResponseTime() { oldest = min(oldest, onDisk) }
            } catch {
                self.counters.increment(.diskReadErrors)
                return PassResult()
            }
        }
        var result = PassResult()
        result.dropped = self.prune(entries, testable: testable, walkedThrough: progress.walkedThrough, oldest: oldest, started: started)
        return result
    }

    /// Walks both tiers, testing every object against the bans it can test.
    private func walk(
        _ entries: [BanList.Entry], testable: Set<UInt32>, keyIsDefault: Bool, started: Double, newest: UInt32
    ) -> PassResult {
        var result = PassResult(walked: true)
        var oldest = Double.infinity
        var sincePause = 0

        self.memory.removeAll { object in
            sincePause += 1
            if sincePause >= self.batchSize {
                sincePause = 0
                self.sleep()
            }
            result.tested += 1
            switch Self.test(
                object, checkedThrough: object.bansCheckedThrough, entries: entries, testable: testable,
                keyIsDefault: keyIsDefault)
            {
            case .banned(let sequence):
                self.bans.noteRemoved(sequence)
                result.removed += 1
                return true
            case .clear(let through):
                object.markBansChecked(through: through)
                oldest = min(oldest, object.responseTime)
                return false
            }
        }

        if let disk = self.disk {
            var after: Int64 = 0
            do {
                while true {
                    let heads = try disk.tier.scan(after: after, limit: self.batchSize)
                    guard let last = heads.last else { break }
                    after = last.fileID
                    var doomed: [DiskObjectHead] = []
                    for head in heads {
                        result.tested += 1
                        switch Self.test(head, checkedThrough: 0, entries: entries, testable: testable, keyIsDefault: keyIsDefault) {
                        case .banned(let sequence):
                            self.bans.noteRemoved(sequence)
                            doomed.append(head)
                        case .clear:
                            oldest = min(oldest, head.responseTime)
                        }
                    }
                    result.removed += try disk.tier.remove(doomed)
                    if heads.count < self.batchSize { break }
                    self.sleep()
                }
            } catch {
                // The pass is incomplete: test what was found, drop nothing.
                self.counters.increment(.diskReadErrors)
                self.logger.warning("ban lurker could not read the disk tier", metadata: ["error": "\(error)"])
                self.counters.increment(.bannedObjects, by: result.removed)
                return result
            }
        }
        self.counters.increment(.bannedObjects, by: result.removed)
        self.progress.withLock {
            $0.walkedThrough = max($0.walkedThrough, newest)
            $0.lastCheck = started
        }
        result.dropped = self.prune(entries, testable: testable, walkedThrough: newest, oldest: oldest, started: started)
        return result
    }

    /// Drops the bans no object can meet any more: added before this pass began and before
    /// every fill still running, and either applied by a complete walk or older than every
    /// stored object. Returns how many.
    private func prune(
        _ entries: [BanList.Entry], testable: Set<UInt32>, walkedThrough: UInt32, oldest: Double, started: Double
    ) -> Int {
        let oldestFill = self.coalescer.oldestFillStart ?? .infinity
        let droppable = Set(
            entries.filter { entry in
                entry.time < started && entry.time < oldestFill
                    && ((testable.contains(entry.sequence) && entry.sequence <= walkedThrough) || entry.time < oldest)
            }.map(\.sequence))
        let dropped = self.bans.remove(droppable)
        guard !dropped.isEmpty else { return 0 }
        self.counters.increment(.bansExpired, by: dropped.count)
        if let disk = self.disk {
            for entry in dropped {
                do {
                    try disk.tier.removeBan(time: entry.time, expression: entry.ban.text)
                } catch {
                    self.counters.increment(.diskWriteErrors)
                }
            }
        }
        self.logger.info(
            "ban lurker dropped bans that cover nothing any more",
            metadata: ["bans": "\(dropped.count)", "active": "\(self.bans.total)"])
        return dropped.count
    }

    /// Whether an object the disk writer is about to store meets no ban the lurker can test
    /// (an object queued before a ban, written after the lurker's pass went by).
    func admits(_ object: StoredObject) -> Bool {
        guard !self.bans.isEmpty else { return true }
        let entries = self.bans.snapshot()
        let keyIsDefault = self.defaultKey.load(ordering: .relaxed)
        let testable = Set(entries.filter { Self.canTest($0.ban, keyIsDefault: keyIsDefault) }.map(\.sequence))
        if case .banned(let sequence) = Self.test(
            object, checkedThrough: object.bansCheckedThrough, entries: entries, testable: testable, keyIsDefault: keyIsDefault)
        {
            self.bans.noteRemoved(sequence)
            self.counters.increment(.bannedObjects)
            return false
        }
        return true
    }

    private func sleep() {
        guard self.pause > 0 else { return }
        usleep(useconds_t(self.pause * 1_000_000))
    }

    /// Whether the lurker can test `ban` without the request that looks an object up.
    static func canTest(_ ban: VCLBan, keyIsDefault: Bool) -> Bool {
        !ban.readsRequestHeaders && (keyIsDefault || !ban.readsURL)
    }

    /// Tests one object against the bans newer than its mark that apply to it. Returns the
    /// ban that covers it, or how far its mark may move: past every ban that was tested or
    /// does not apply, up to the first one only a lookup can test.
    static func test(
        _ object: some CacheCandidate & KeyedCandidate, checkedThrough: UInt32, entries: [BanList.Entry], testable: Set<UInt32>,
        keyIsDefault: Bool
    ) -> BanList.Verdict {
        var through = checkedThrough
        var blocked = false
        var subject: VCLBan.Subject?
        for entry in entries where entry.sequence > checkedThrough {
            guard entry.time >= object.responseTime else {
                if !blocked { through = entry.sequence }
                continue
            }
            guard testable.contains(entry.sequence) else {
                blocked = true
                continue
            }
            if subject == nil {
                let headers = object.headers
                let url = keyIsDefault ? (object.key.parts.first ?? "") : ""
                subject = VCLBan.Subject(
                    url: url, requestHeader: { _ in nil }, status: object.status, objectHeader: { headers.first(name: $0) })
            }
            if entry.ban.matches(subject!) { return .banned(entry.sequence) }
            if !blocked { through = entry.sequence }
        }
        return .clear(through: through)
    }
}

/// A stored object or disk row, as the lurker reads its key.
protocol KeyedCandidate {
    var key: CacheKey { get }
}

extension StoredObject: KeyedCandidate {}
extension DiskObjectHead: KeyedCandidate {}
