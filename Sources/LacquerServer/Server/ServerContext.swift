import CacheStore
import Logging
import NIOCore
import Synchronization

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
            loops[ObjectIdentifier(loop)] = LoopState(pools: pools, eventLoop: loop)
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
    init(pools: [BackendPool], eventLoop: any EventLoop) {
        self.pools = pools
        self.eventLoop = eventLoop
    }
}
