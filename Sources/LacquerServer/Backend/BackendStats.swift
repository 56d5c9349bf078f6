import Synchronization

/// One backend's health and figures, shared by its pools on every event loop, its health probe
/// and `/stats`.
///
/// The hot path only touches relaxed atomics (a request, a failure, a connection opened); the
/// probe window sits behind a mutex that only the probe (every interval) and `/stats` take.
/// The director reads `isHealthy`, a single atomic load.
final class BackendStats: Sendable {
    /// Seconds each fetch took, sent to its end (`lacquer_backend_fetch_duration_seconds`).
    let fetchDurations = LatencyHistogram()
    /// Failure kinds counted per backend (the `failures` object of `/stats`).
    enum Failure: Int, CaseIterable, Sendable {
        case connectFailed, connectTimeout, queueTimeout, firstByteTimeout, betweenBytesTimeout, closed, framing

        var name: String {
            switch self {
            case .connectFailed: "connect_failed"
            case .connectTimeout: "connect_timeout"
            case .queueTimeout: "queue_timeout"
            case .firstByteTimeout: "first_byte_timeout"
            case .betweenBytesTimeout: "between_bytes_timeout"
            case .closed: "closed"
            case .framing: "framing"
            }
        }

        /// The kind an exchange error counts as; nil for errors that are not the backend's doing.
        init?(_ error: BackendError) {
            switch error {
            case .connectFailed: self = .connectFailed
            case .connectTimeout: self = .connectTimeout
            case .queueTimeout: self = .queueTimeout
            case .firstByteTimeout: self = .firstByteTimeout
            case .betweenBytesTimeout: self = .betweenBytesTimeout
            case .closedBeforeHead, .closedMidBody: self = .closed
            case .framing, .headersTooLarge: self = .framing
            case .noBackend, .allBackendsSick: return nil
            }
        }
    }

    let name: String
    /// `HOST:PORT` (IPv6 in brackets).
    let address: String
    private let healthy: Atomic<Bool>
    private let window: Mutex<ProbeWindow?>
    private let requestCount = Atomic<Int>(0)
    private let failureCounts: InlineArray<8, Atomic<Int>> = InlineArray { _ in Atomic<Int>(0) }
    /// Connections open (connecting, in use or idle) over all event loops.
    let openConnections = Atomic<Int>(0)
    let idleConnections = Atomic<Int>(0)
    /// Requests waiting for a free connection.
    let queued = Atomic<Int>(0)

    /// Passive health (nil when off); `circuitClosed` mirrors its closed state for the fast path.
    private let breaker: Mutex<CircuitBreaker?>
    private let circuitClosed = Atomic<Bool>(true)
    /// Closed with no failure counted: a successful fetch has nothing to record (no lock taken).
    private let circuitClean = Atomic<Bool>(true)
    let passiveHealth: PassiveHealthConfiguration?

    init(backend: BackendConfiguration) {
        self.name = backend.name
        self.address = HostAndPort(host: backend.host, port: backend.port).description
        let window = backend.probe.map(ProbeWindow.init)
        self.window = Mutex(window)
        self.healthy = Atomic(window?.isHealthy ?? true)
        self.passiveHealth = backend.passiveHealth
        self.breaker = Mutex(
            backend.passiveHealth.map { CircuitBreaker(failureThreshold: $0.failureThreshold, cooldown: $0.cooldown) })
    }

    /// Whether the director may pick this backend at `now`: its probe (if any) says healthy and
    /// its passive health does not hold it back.
    func isHealthy(clock: () -> Double) -> Bool {
        guard self.healthy.load(ordering: .relaxed) else { return false }
        if self.circuitClosed.load(ordering: .relaxed) { return true }
        let now = clock()
        return self.breaker.withLock { $0?.isHealthy(now: now) ?? true }
    }

    /// Whether a fetch chosen for this backend may go at `now` (takes the half-open trial).
    func admitFetch(now: Double) -> Bool {
        if self.circuitClosed.load(ordering: .relaxed) { return true }
        return self.breaker.withLock { breaker in
            guard breaker != nil else { return true }
            return breaker!.allowsFetch(now: now)
        }
    }

    /// What a fetch's outcome did to passive health.
    enum PassiveChange: Equatable {
        case none
        /// The failures in a row reached the threshold: the backend is out of rotation.
        case opened
        /// A trial fetch succeeded: the backend is back.
        case recovered
    }

    /// A fetch's outcome for passive health.
    @discardableResult
    func recordFetch(failed: Bool, now: Double) -> PassiveChange {
        guard self.passiveHealth != nil else { return .none }
        if !failed && self.circuitClean.load(ordering: .relaxed) { return .none }  // the common case
        return self.breaker.withLock { breaker in
            guard breaker != nil else { return .none }
            let wasClosed = self.circuitClosed.load(ordering: .relaxed)
            var opened = false
            if failed {
                opened = breaker!.recordFailure(now: now)
            } else {
                breaker!.recordSuccess()
            }
            let closed: Bool
            if case .closed = breaker!.state { closed = true } else { closed = false }
            self.circuitClosed.store(closed, ordering: .relaxed)
            self.circuitClean.store(breaker!.state == .closed(failures: 0), ordering: .relaxed)
            if opened { return .opened }
            return !wasClosed && closed ? .recovered : .none
        }
    }

    func countRequest() {
        self.requestCount.wrappingAdd(1, ordering: .relaxed)
    }

    func countFailure(_ error: BackendError) {
        guard let kind = Failure(error) else { return }
        self.failureCounts[kind.rawValue].wrappingAdd(1, ordering: .relaxed)
    }

    subscript(_ kind: Failure) -> Int {
        self.failureCounts[kind.rawValue].load(ordering: .relaxed)
    }

    /// Records a probe result; returns the window afterwards and whether the health changed.
    func recordProbe(_ result: ProbeResult) -> (window: ProbeWindow, changed: Bool)? {
        self.window.withLock { window -> (window: ProbeWindow, changed: Bool)? in
            guard window != nil else { return nil }
            let changed = window!.record(result)
            self.healthy.store(window!.isHealthy, ordering: .relaxed)
            return (window!, changed)
        }
    }

    /// The figures `/stats` shows, read at `now`.
    func snapshot(now: Double) -> BackendSnapshot {
        let window = self.window.withLock { $0 }
        return BackendSnapshot(
            name: self.name,
            address: self.address,
            healthy: self.isHealthy(clock: { now }),
            probe: window.map {
                BackendSnapshot.Probe(
                    good: $0.good, window: $0.window, threshold: $0.threshold,
                    last: $0.last?.description, changes: $0.changes)
            },
            openConnections: self.openConnections.load(ordering: .relaxed),
            idleConnections: self.idleConnections.load(ordering: .relaxed),
            queued: self.queued.load(ordering: .relaxed),
            requests: self.requestCount.load(ordering: .relaxed),
            failures: Failure.allCases.map { ($0.name, self[$0]) },
            fetchDurations: self.fetchDurations)
    }
}

/// One backend as `/stats` reports it.
public struct BackendSnapshot: Sendable {
    public struct Probe: Sendable {
        /// Good probes among the last `window`.
        public var good: Int
        public var window: Int
        public var threshold: Int
        /// `ok`, `failed: REASON`, or nil before the first probe finished.
        public var last: String?
        /// Healthy ↔ sick transitions since start-up.
        public var changes: Int
    }

    public var name: String
    public var address: String
    public var healthy: Bool
    /// nil when the backend has no probe.
    public var probe: Probe?
    public var openConnections: Int
    public var idleConnections: Int
    public var queued: Int
    public var requests: Int
    public var failures: [(name: String, value: Int)]
    /// Seconds from sending a fetch to the end of its body (or its failure).
    public var fetchDurations: LatencyHistogram? = nil
}
