import CachePolicy
import CacheStore
import Logging
import NIOCore
import Synchronization
import VCL

/// The state every connection shares: configuration, stores, counters, and each event loop's
/// backend pools. Immutable after start-up except through thread-safe members.
final class ServerContext: Sendable {
    let configuration: ServerConfiguration
    /// The client limits and timeouts, one copy every connection refers to.
    let connectionSettings: ConnectionSettings
    let memory: MemoryTier
    /// The disk tier, when enabled and opened.
    let disk: DiskStorage?
    let counters: Counters
    /// At most one fill per key; waiters share it (and hit-for-miss marks).
    let coalescer: FetchCoalescer
    let logger: Logger
    /// Seconds since the epoch; injectable so tests can move time.
    let clock: @Sendable () -> Double
    private let loops: [ObjectIdentifier: LoopState]
    /// The backends in use: their configurations, health and figures (shared by their pools on
    /// every loop) and probes. A reload that changes the backends replaces it.
    private let backendSet: Mutex<BackendSet>
    /// The event loops, in order (probes are spread over them).
    private let eventLoops: [any EventLoop]

    struct BackendSet: Sendable {
        var configurations: [BackendConfiguration]
        var stats: [BackendStats]
        var probes: [HealthProbe]
    }

    /// Each backend's health and figures, in configuration order.
    var backendStats: [BackendStats] { self.backendSet.withLock { $0.stats } }
    /// One health probe per backend that has one.
    var probes: [HealthProbe] { self.backendSet.withLock { $0.probes } }
    private let xid = Atomic<UInt64>(1000)
    let openConnections = Atomic<Int>(0)
    /// The configuration requests start with; a reload swaps it, requests in flight keep theirs.
    private let currentVCL: Mutex<CompiledVCL>
    /// When the configuration was (re)loaded, and from which file.
    let vclLoads = Atomic<Int>(1)
    let bans = BanList()
    /// Tests stored objects against the bans in the background and drops spent bans.
    let lurker: BanLurker
    /// Whether the current configuration leaves vcl_recv, vcl_hash, vcl_hit and vcl_deliver to
    /// builtin.vcl, so `HitFastLane` may answer plain hits without running a flow.
    private let builtinHitPath: Atomic<Bool>
    /// Per-client request limits, when configured.
    let rateLimiter: RateLimiter?
    /// The buckets of VCL's `vsthrottle.is_denied` (each key with its own limit and period).
    let vclThrottle = RateLimiter(RateLimitConfiguration(rate: 1, burst: 1))
    /// Open connections per client address (used when `Limits.connectionsPerClient` is set).
    let clientConnections = ClientConnectionCounts()
    /// This cache's name as a Cache-Status list member starts (an sf-token or sf-string).
    let cacheStatusName: String
    /// `Via: 1.1 <via name>\r\n`, as a plain hit writes it.
    let viaLine: String
    /// Where finished requests go (a file, stdout, live tails).
    let accessLog: AccessLog
    /// Request durations by cache status (`lacquer_request_duration_seconds`).
    let requestDurations = RequestDurations()
    /// Set once SIGTERM started a drain: connections close after their current response.
    let draining = Atomic<Bool>(false)

    init(
        configuration: ServerConfiguration,
        memory: MemoryTier,
        disk: DiskStorage?,
        counters: Counters,
        logger: Logger,
        clock: @escaping @Sendable () -> Double,
        eventLoops: [any EventLoop],
        accessLog: AccessLog? = nil
    ) {
        self.configuration = configuration
        self.connectionSettings = ConnectionSettings(limits: configuration.limits, timeouts: configuration.clientTimeouts)
        self.accessLog = accessLog ?? AccessLog(counters: counters, logger: logger)
        self.cacheStatusName = CacheStatusValue.tokenOrString(configuration.cacheName)
        self.rateLimiter = configuration.rateLimit.map(RateLimiter.init)
        self.viaLine = "Via: 1.1 \(configuration.viaName)\r\n"
        self.memory = memory
        self.disk = disk
        self.counters = counters
        self.coalescer = FetchCoalescer(maxBytesPerFetch: configuration.diskMaxQueuedBytes)
        let vcl = configuration.vcl ?? VCLLoader.builtin(purgeACL: configuration.purgeACL)
        self.currentVCL = Mutex(vcl)
        self.builtinHitPath = Atomic(Self.leavesHitPathToBuiltin(vcl))
        self.lurker = BanLurker(
            bans: self.bans, memory: memory, disk: disk, coalescer: self.coalescer, counters: counters, logger: logger,
            clock: clock, batchSize: configuration.banLurkerBatch, pause: configuration.banLurkerSleep)
        self.lurker.setKeyIsDefault(!vcl.userDefined.contains(.hash))
        let coalescer = self.coalescer
        let keyFields = memory.surrogateKeyFields
        disk?.setAdmission { [lurker] object in
            if coalescer.purgedSince(surrogateKeysOf: object, fields: keyFields, object.requestTime) {
                return false  // its surrogate key was purged while it waited
            }
            return lurker.admits(object)
        }
        self.logger = logger
        self.clock = clock
        self.eventLoops = eventLoops
        let backendStats = configuration.backends.map(BackendStats.init(backend:))
        var probes: [HealthProbe] = []
        for (index, backend) in configuration.backends.enumerated() {
            guard let probe = backend.probe, !eventLoops.isEmpty else { continue }
            probes.append(
                HealthProbe(
                    backend: backend, probe: probe, stats: backendStats[index],
                    eventLoop: eventLoops[index % eventLoops.count], logger: logger))
        }
        self.backendSet = Mutex(BackendSet(configurations: configuration.backends, stats: backendStats, probes: probes))
        var loops: [ObjectIdentifier: LoopState] = [:]
        for loop in eventLoops {
            let pools = configuration.backends.indices.map { index in
                Self.makePool(
                    configuration.backends[index], loop: loop, loopCount: eventLoops.count, stats: backendStats[index],
                    counters: counters, limits: configuration.limits)
            }
            loops[ObjectIdentifier(loop)] = LoopState(pools: pools, eventLoop: loop, index: loops.count)
        }
        self.loops = loops
    }

    private static func makePool(
        _ backend: BackendConfiguration, loop: any EventLoop, loopCount: Int, stats: BackendStats, counters: Counters,
        limits: Limits
    ) -> BackendPool {
        BackendPool(
            backend: backend, eventLoop: loop, maxConnections: max(1, backend.maxConnections / max(1, loopCount)),
            stats: stats, counters: counters, limits: limits)
    }

    /// What a backend reload did.
    struct BackendChange: Sendable, Equatable {
        var added: [String]
        var removed: [String]
        var changed: [String]
        var isEmpty: Bool { self.added.isEmpty && self.removed.isEmpty && self.changed.isEmpty }
    }

    /// Replaces the backends (a reload whose configuration declares other backends or probes),
    /// as Varnish does: a backend whose declaration is unchanged keeps its pools, connections,
    /// health and probe; a new or changed one gets fresh pools (and probe); a removed or changed
    /// one is retired: its idle connections close, connections in use close when their exchange
    /// ends, its probe stops. Called off the event loops (it waits for each loop to switch).
    func replaceBackends(_ configurations: [BackendConfiguration]) -> BackendChange {
        let old = self.backendSet.withLock { $0 }
        var stats: [BackendStats] = []
        var probes: [HealthProbe] = []
        var change = BackendChange(added: [], removed: [], changed: [])
        for (index, backend) in configurations.enumerated() {
            if let oldIndex = old.configurations.firstIndex(of: backend) {
                stats.append(old.stats[oldIndex])
                if let probe = old.probes.first(where: { $0.stats === old.stats[oldIndex] }) { probes.append(probe) }
                continue
            }
            let fresh = BackendStats(backend: backend)
            stats.append(fresh)
            if old.configurations.contains(where: { $0.name == backend.name }) {
                change.changed.append(backend.name)
            } else {
                change.added.append(backend.name)
            }
            if let probe = backend.probe, !self.eventLoops.isEmpty {
                probes.append(
                    HealthProbe(
                        backend: backend, probe: probe, stats: fresh, eventLoop: self.eventLoops[index % self.eventLoops.count],
                        logger: self.logger))
            }
        }
        change.removed = old.configurations.map(\.name).filter { name in !configurations.contains { $0.name == name } }
        let kept = Set(stats.map(ObjectIdentifier.init))
        let counters = self.counters
        let limits = self.configuration.limits
        let loopCount = self.eventLoops.count
        for state in self.loops.values {
            let newStats = stats
            let switched = state.eventLoop.submit {
                let pools = zip(configurations, newStats).map { backend, stats in
                    state.pools.first { $0.stats === stats }
                        ?? Self.makePool(backend, loop: state.eventLoop, loopCount: loopCount, stats: stats, counters: counters, limits: limits)
                }
                for pool in state.pools where !kept.contains(ObjectIdentifier(pool.stats)) {
                    pool.shutdown()
                }
                state.pools = pools
                state.next = 0
            }
            try? switched.wait()
        }
        let keptProbes = Set(probes.map(ObjectIdentifier.init))
        for probe in old.probes where !keptProbes.contains(ObjectIdentifier(probe)) {
            try? probe.stop().wait()
        }
        let oldProbes = Set(old.probes.map(ObjectIdentifier.init))
        for probe in probes where !oldProbes.contains(ObjectIdentifier(probe)) {
            probe.start()
        }
        self.backendSet.withLock { $0 = BackendSet(configurations: configurations, stats: stats, probes: probes) }
        return change
    }

    /// A fresh transaction id (Varnish's vxid), sent to the origin as `X-Lacquer-Xid`.
    func nextXID() -> UInt64 {
        self.xid.wrappingAdd(1, ordering: .relaxed).newValue
    }

    /// The next backend pool for a request on `eventLoop`: round-robin over the backends,
    /// skipping those whose probe says they are sick (Varnish's round_robin director).
    /// Fails with `.allBackendsSick` when none is healthy.
    func nextPool(on eventLoop: any EventLoop, admitted: BackendStats? = nil) -> Result<BackendPool, BackendError> {
        guard let state = self.loops[ObjectIdentifier(eventLoop)], !state.pools.isEmpty else {
            return .failure(.noBackend)
        }
        state.eventLoop.assertInEventLoop()
        let count = state.pools.count
        for step in 0..<count {
            let index = (state.next + step) % count
            let pool = state.pools[index]
            if self.isHealthy(pool, admitted: admitted) {
                state.next = (index + 1) % count
                return .success(pool)
            }
        }
        state.next = (state.next + 1) % count
        self.counters.increment(.backendUnhealthy)
        return .failure(.allBackendsSick)
    }

    /// Starts every health probe (the first round of each runs at once).
    func startProbes() {
        for probe in self.probes { probe.start() }
    }

    /// Stops every health probe; completes when their connections are closed.
    func stopProbes() async {
        for probe in self.probes {
            try? await probe.stop().get()
        }
    }

    /// The configuration a new request runs with.
    var vcl: CompiledVCL {
        self.currentVCL.withLock { $0 }
    }

    /// Whether plain hits may skip the flow (see `builtinHitPath`).
    var hitPathIsBuiltin: Bool {
        self.builtinHitPath.load(ordering: .relaxed)
    }

    private static func leavesHitPathToBuiltin(_ vcl: CompiledVCL) -> Bool {
        vcl.userDefined.isDisjoint(with: [.recv, .hash, .hit, .deliver])
    }

    /// Swaps the configuration for new requests (a reload).
    func replaceVCL(_ vcl: CompiledVCL) {
        self.currentVCL.withLock {
            $0 = vcl
            self.builtinHitPath.store(Self.leavesHitPathToBuiltin(vcl), ordering: .relaxed)
            self.lurker.setKeyIsDefault(!vcl.userDefined.contains(.hash))
        }
        self.vclLoads.wrappingAdd(1, ordering: .relaxed)
    }

    /// The pool for a request: the backend or director VCL named (`req.backend_hint`,
    /// `bereq.backend`), else the first declared backend when a configuration declares them
    /// (Varnish's default), else round-robin over the `--backend` list. Sick backends are
    /// never chosen: `.allBackendsSick` when nothing healthy is left, `.noBackend` when the
    /// name is unknown.
    func pool(
        for ref: VCLBackendRef?, vcl: CompiledVCL, key: String, on eventLoop: any EventLoop,
        alreadyAdmitted: BackendStats? = nil
    ) -> Result<BackendPool, BackendError> {
        let chosen = self.choosePool(for: ref, vcl: vcl, key: key, on: eventLoop, admitted: alreadyAdmitted)
        guard case .success(let pool) = chosen else { return chosen }
        // Passive health: a backend whose circuit is open takes no fetch; after its cooldown,
        // one trial fetch goes (half-open). A fetch sent again (a reused connection the origin
        // had closed) is the same trial.
        guard pool.stats === alreadyAdmitted || pool.stats.admitFetch(now: self.clock()) else {
            self.counters.increment(.backendUnhealthy)
            return .failure(.allBackendsSick)
        }
        return chosen
    }

    private func choosePool(
        for ref: VCLBackendRef?, vcl: CompiledVCL, key: String, on eventLoop: any EventLoop, admitted: BackendStats?
    ) -> Result<BackendPool, BackendError> {
        guard let state = self.loops[ObjectIdentifier(eventLoop)], !state.pools.isEmpty else { return .failure(.noBackend) }
        switch ref {
        case nil:
            if !vcl.backends.isEmpty, let first = vcl.backends.first {
                return self.ifHealthy(state.pools.first { $0.backend.name == first.name }, admitted: admitted)
            }
            return self.nextPool(on: eventLoop, admitted: admitted)
        case .backend(let name):
            return self.ifHealthy(state.pools.first { $0.backend.name == name }, admitted: admitted)
        case .director(let name, let hashKey):
            guard let director = vcl.director(named: name) else { return .failure(.noBackend) }
            guard let pool = self.pick(director, key: hashKey ?? key, state: state, vcl: vcl, depth: 0, admitted: admitted) else {
                self.counters.increment(.backendUnhealthy)
                return .failure(.allBackendsSick)
            }
            return .success(pool)
        }
    }

    /// A backend named directly: usable only while healthy.
    private func ifHealthy(_ pool: BackendPool?, admitted: BackendStats?) -> Result<BackendPool, BackendError> {
        guard let pool else { return .failure(.noBackend) }
        guard self.isHealthy(pool, admitted: admitted) else {
            self.counters.increment(.backendUnhealthy)
            return .failure(.allBackendsSick)
        }
        return .success(pool)
    }

    private func pick(
        _ director: VCLDirector, key: String, state: LoopState, vcl: CompiledVCL, depth: Int, admitted: BackendStats?
    ) -> BackendPool? {
        guard depth < 8 else { return nil }
        let members: [(pool: BackendPool, weight: Double)] = director.members.compactMap { member in
            if let pool = state.pools.first(where: { $0.backend.name == member.backend }) {
                return (pool, member.weight)
            }
            if let nested = vcl.director(named: member.backend),
                let pool = self.pick(nested, key: key, state: state, vcl: vcl, depth: depth + 1, admitted: admitted)
            {
                return (pool, member.weight)
            }
            return nil
        }
        let healthy = members.filter { self.isHealthy($0.pool, admitted: admitted) }
        guard !healthy.isEmpty else { return nil }
        switch director.kind {
        case .roundRobin:
            let index = state.directorNext[director.name, default: 0]
            state.directorNext[director.name] = index &+ 1
            return healthy[index % healthy.count].pool
        case .fallback:
            return healthy[0].pool
        case .random:
            return Self.weighted(healthy, draw: Double(state.nextRandom() % 1_000_000) / 1_000_000)
        case .hash:
            // The same key goes to the same healthy backend.
            let digest = CacheKey(parts: [key]).digest
            return Self.weighted(healthy, draw: Double(digest % 1_000_000) / 1_000_000)
        }
    }

    private static func weighted(_ members: [(pool: BackendPool, weight: Double)], draw: Double) -> BackendPool? {
        let total = members.reduce(0) { $0 + max(0, $1.weight) }
        guard total > 0 else { return members.first?.pool }
        var point = draw * total
        for member in members {
            point -= max(0, member.weight)
            if point < 0 { return member.pool }
        }
        return members.last?.pool
    }

    /// `vsthrottle.is_denied(key, limit, period)`: one call for `key`; true once it is over
    /// `limit` calls within `period` (a token bucket holding `limit`, refilled over `period`).
    func isThrottled(key: String, limit: Int, period: Double) -> Bool {
        guard limit > 0 else { return true }
        guard period > 0, period.isFinite else { return false }
        let bucket = "\(limit)/\(period)/\(key)"
        return self.vclThrottle.take(
            client: bucket, now: self.clock(), rate: Double(limit) / period, burst: Double(limit)) != nil
    }

    /// Whether the director may pick this backend: its probe (no probe: healthy) and its passive
    /// health decide; the backend a fetch being sent again was admitted to stays eligible.
    func isHealthy(_ pool: BackendPool, admitted: BackendStats? = nil) -> Bool {
        pool.stats === admitted || pool.stats.isHealthy(clock: self.clock)
    }

    /// The client byte counts of `loop`'s connections.
    func traffic(on loop: any EventLoop) -> LoopTraffic? {
        self.loops[ObjectIdentifier(loop)]?.traffic
    }

    /// Client bytes received and sent, over every loop.
    var trafficTotals: (received: Int, sent: Int) {
        self.loops.values.reduce((0, 0)) {
            ($0.0 + $1.traffic.received.load(ordering: .relaxed), $0.1 + $1.traffic.sent.load(ordering: .relaxed))
        }
    }

    /// The index of `loop` among the server's loops (0 for a loop it does not know).
    func loopIndex(_ loop: any EventLoop) -> Int {
        self.loops[ObjectIdentifier(loop)]?.index ?? 0
    }

    /// The HTTP/2 field lists of stored objects, for the hit lane on `loop` (see `PlainHit`).
    func http2FieldCache(on loop: any EventLoop) -> PlainHit.HTTP2FieldCache? {
        self.loops[ObjectIdentifier(loop)]?.http2Fields
    }

    /// Tracks an open client connection (on its own loop), so a drain can reach it.
    func register(_ connection: any DrainableConnection) {
        self.loops[ObjectIdentifier(connection.eventLoop)]?.clients[ObjectIdentifier(connection)] = connection
    }

    func unregister(_ connection: any DrainableConnection) {
        self.loops[ObjectIdentifier(connection.eventLoop)]?.clients.removeValue(forKey: ObjectIdentifier(connection))
    }

    /// Starts a drain: every client connection closes when idle, or after its current response.
    func drainConnections() {
        self.draining.store(true, ordering: .relaxed)
        for (_, state) in self.loops {
            state.eventLoop.execute {
                for connection in state.clients.values { connection.drain() }
            }
        }
    }

    /// Closes every idle backend connection (on each pool's own loop).
    func shutdownPools() {
        for (_, state) in self.loops {
            state.eventLoop.execute {
                for pool in state.pools { pool.shutdown() }
            }
        }
    }
}

/// Per-event-loop state. Created before the loops run, then only touched on its own loop
/// (checked in debug builds), which is what makes the unchecked Sendable sound.
final class LoopState: @unchecked Sendable {
    /// The backend pools of this loop, in configuration order (replaced by a backend reload).
    var pools: [BackendPool]
    let eventLoop: any EventLoop
    var next = 0
    var directorNext: [String: Int] = [:]
    /// The client connections open on this loop.
    var clients: [ObjectIdentifier: any DrainableConnection] = [:]
    private var random: UInt64
    /// The loop's position among the server's loops.
    let index: Int
    /// Client bytes in and out on this loop.
    let traffic = LoopTraffic()
    /// Stored objects' fields as HTTP/2 fields, read once per object (the hit lane's).
    let http2Fields = PlainHit.HTTP2FieldCache()

    init(pools: [BackendPool], eventLoop: any EventLoop, index: Int) {
        self.pools = pools
        self.eventLoop = eventLoop
        self.index = index
        self.random = 0x9E37_79B9_7F4A_7C15 &* UInt64(index + 1)
    }

    /// xorshift64*: cheap, lock-free, good enough to spread requests over backends.
    func nextRandom() -> UInt64 {
        self.random ^= self.random >> 12
        self.random ^= self.random << 25
        self.random ^= self.random >> 27
        return self.random &* 0x2545_F491_4F6C_DD1D
    }
}

/// Client bytes in and out on one event loop: counted by the loop's own connections only, so
/// the counting never moves a cache line between cores; `/stats` adds the loops up.
final class LoopTraffic: Sendable {
    let received = Atomic<Int>(0)
    let sent = Atomic<Int>(0)
    /// Keeps another loop's figures off these figures' cache line.
    private let padding: InlineArray<8, Int> = InlineArray(repeating: 0)
}

/// A client connection a drain (SIGTERM) reaches: an HTTP/1.1 connection, or an HTTP/2 one.
protocol DrainableConnection: AnyObject {
    var eventLoop: any EventLoop { get }
    /// Close when idle, or after the response (the streams) in flight.
    func drain()
}

extension ClientChannelHandler: DrainableConnection {}

// What every disk hit does, wherever it is answered (`RequestFlow.deliverFromDisk`, the hit lanes).
extension ServerContext {
    /// Counts a disk hit and notes the object's use for the disk tier's LRU.
    func servedFromDisk(_ head: DiskObjectHead, disk: DiskStorage) {
        self.counters.increment(.diskHit)
        disk.touch(head)
    }

    /// The object a disk hit delivers, from its head and the body read with it. One the memory
    /// tier will not keep (`MemoryTier.admits`) keeps its body as read (it is delivered once).
    func objectFromDisk(_ head: DiskObjectHead, body: ByteBuffer) -> StoredObject {
        head.storedObject(
            body: body, hiddenFields: self.memory.surrogateKeyFields,
            kept: self.memory.admits(bodyLength: body.readableBytes))
    }

    /// Puts an object read whole from disk into memory (a slice at the cold end: see
    /// `SliceGeometry`), counted when the memory tier takes it; unless its key or one of its
    /// surrogate keys was purged at or after `lookedUpAt`, a time taken before its disk lookup
    /// began. That lookup may have read the row just before the purge's tombstone, and putting
    /// the object into memory would bring back what the purge removed after it had answered.
    func promoteFromDisk(_ object: StoredObject, lookedUpAt: Double, cold: Bool = false) {
        if self.insertIntoMemory(object, unlessPurgedSince: lookedUpAt, cold: cold) {
            self.counters.increment(.diskPromotions)
        }
    }

    /// Puts `object` into memory unless a purge of its key or a surrogate key came at or after
    /// `time` (`purgedSince`); whether the memory tier took it and keeps it. Checked before the
    /// insertion and again after it: a purge records itself before it removes from memory, so a
    /// purge that lands between the check and the insertion is seen by the second check (else
    /// the object would stay in memory after the purge had answered).
    func insertIntoMemory(_ object: StoredObject, unlessPurgedSince time: Double, cold: Bool = false) -> Bool {
        guard !self.purgedSince(object, time), self.memory.insert(object, cold: cold) else { return false }
        if self.purgedSince(object, time) {
            _ = self.memory.remove(object)
            return false
        }
        return true
    }

    /// Whether a purge of `object`'s key, or of one of its surrogate keys, came at or after
    /// `time`: what may not go into memory (a fill sent before it, a disk copy read before it).
    func purgedSince(_ object: StoredObject, _ time: Double) -> Bool {
        self.coalescer.purgedSince(keyOf: object, time)
            || self.coalescer.purgedSince(surrogateKeysOf: object, fields: self.memory.surrogateKeyFields, time)
    }
}
