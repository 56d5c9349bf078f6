import CacheStore
import Logging
import NIOCore
import Synchronization
import VCL

/// The state every connection shares: configuration, stores, counters, and each event loop's
/// backend pools. Immutable after start-up except through thread-safe members.
final class ServerContext: Sendable {
    let configuration: ServerConfiguration
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
    private let xid = Atomic<UInt64>(1000)
    let openConnections = Atomic<Int>(0)
    /// The configuration requests start with; a reload swaps it, requests in flight keep theirs.
    private let currentVCL: Mutex<CompiledVCL>
    /// When the configuration was (re)loaded, and from which file.
    let vclLoads = Atomic<Int>(1)
    let bans = BanList()

    init(
        configuration: ServerConfiguration,
        memory: MemoryTier,
        disk: DiskStorage?,
        counters: Counters,
        logger: Logger,
        clock: @escaping @Sendable () -> Double,
        eventLoops: [any EventLoop]
    ) {
        self.configuration = configuration
        self.memory = memory
        self.disk = disk
        self.counters = counters
        self.coalescer = FetchCoalescer(maxBytesPerFetch: configuration.diskMaxQueuedBytes)
        self.currentVCL = Mutex(configuration.vcl ?? VCLLoader.builtin(purgeACL: configuration.purgeACL))
        self.logger = logger
        self.clock = clock
        var loops: [ObjectIdentifier: LoopState] = [:]
        let perLoop = eventLoops.isEmpty ? 1 : eventLoops.count
        for loop in eventLoops {
            let pools = configuration.backends.map { backend in
                BackendPool(
                    backend: backend,
                    eventLoop: loop,
                    maxConnections: max(1, backend.maxConnections / perLoop),
                    counters: counters,
                    limits: configuration.limits
                )
            }
            loops[ObjectIdentifier(loop)] = LoopState(pools: pools, eventLoop: loop, seed: UInt64(loops.count + 1))
        }
        self.loops = loops
    }

    /// A fresh transaction id (Varnish's vxid), sent to the origin as `X-Lacquer-Xid`.
    func nextXID() -> UInt64 {
        self.xid.wrappingAdd(1, ordering: .relaxed).newValue
    }

    /// The next backend pool for a request on `eventLoop` (round-robin over the backends).
    func nextPool(on eventLoop: any EventLoop) -> BackendPool? {
        guard let state = self.loops[ObjectIdentifier(eventLoop)], !state.pools.isEmpty else { return nil }
        state.eventLoop.assertInEventLoop()
        let pool = state.pools[state.next % state.pools.count]
        state.next &+= 1
        return pool
    }

    /// The configuration a new request runs with.
    var vcl: CompiledVCL {
        self.currentVCL.withLock { $0 }
    }

    /// Swaps the configuration for new requests (a reload).
    func replaceVCL(_ vcl: CompiledVCL) {
        self.currentVCL.withLock { $0 = vcl }
        self.vclLoads.wrappingAdd(1, ordering: .relaxed)
    }

    /// The pool for a request: the backend or director VCL named (`req.backend_hint`,
    /// `bereq.backend`), else the first declared backend when a configuration declares them
    /// (Varnish's default), else round-robin over the `--backend` list.
    func pool(for ref: VCLBackendRef?, vcl: CompiledVCL, key: String, on eventLoop: any EventLoop) -> BackendPool? {
        guard let state = self.loops[ObjectIdentifier(eventLoop)], !state.pools.isEmpty else { return nil }
        switch ref {
        case nil:
            if !vcl.backends.isEmpty, let first = vcl.backends.first {
                return state.pools.first { $0.backend.name == first.name }
            }
            return self.nextPool(on: eventLoop)
        case .backend(let name):
            return state.pools.first { $0.backend.name == name }
        case .director(let name, let hashKey):
            guard let director = vcl.director(named: name) else { return nil }
            return self.pick(director, key: hashKey ?? key, state: state, vcl: vcl, depth: 0)
        }
    }

    private func pick(_ director: VCLDirector, key: String, state: LoopState, vcl: CompiledVCL, depth: Int) -> BackendPool? {
        guard depth < 8 else { return nil }
        let members: [(pool: BackendPool, weight: Double)] = director.members.compactMap { member in
            if let pool = state.pools.first(where: { $0.backend.name == member.backend }) {
                return (pool, member.weight)
            }
            if let nested = vcl.director(named: member.backend),
                let pool = self.pick(nested, key: key, state: state, vcl: vcl, depth: depth + 1)
            {
                return (pool, member.weight)
            }
            return nil
        }
        let healthy = members.filter { self.isHealthy($0.pool) }
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

    /// Whether the director may pick this backend (health probes decide; no probe, healthy).
    func isHealthy(_ pool: BackendPool) -> Bool {
        true
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
    let pools: [BackendPool]
    let eventLoop: any EventLoop
    var next = 0
    var directorNext: [String: Int] = [:]
    private var random: UInt64
    init(pools: [BackendPool], eventLoop: any EventLoop, seed: UInt64) {
        self.pools = pools
        self.eventLoop = eventLoop
        self.random = 0x9E37_79B9_7F4A_7C15 &* seed
    }

    /// xorshift64*: cheap, lock-free, good enough to spread requests over backends.
    func nextRandom() -> UInt64 {
        self.random ^= self.random >> 12
        self.random ^= self.random << 25
        self.random ^= self.random >> 27
        return self.random &* 0x2545_F491_4F6C_DD1D
    }
}
