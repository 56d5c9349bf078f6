/// Passive health: what real fetches say about a backend, next to what its probe says. After
/// `failureThreshold` failed fetches in a row (connect errors, timeouts, malformed answers, and
/// 5xx when configured) the backend counts as sick for `cooldown` seconds, so requests are not
/// piled onto a dying origin (stale copies stand in); then one trial fetch is let through
/// (half-open): its success closes the circuit, its failure opens it again.
///
/// Pure: the fetch results and the time come in as arguments.
struct CircuitBreaker: Equatable, Sendable {
    enum State: Equatable, Sendable {
        case closed(failures: Int)
        case open(until: Double)
        /// One trial fetch is out since `since`; nothing else goes until it reports (or, if it
        /// never does, another cooldown has passed).
        case halfOpen(since: Double)
    }

    let failureThreshold: Int
    let cooldown: Double
    private(set) var state: State = .closed(failures: 0)
    /// How many times the circuit opened since start-up.
    private(set) var trips = 0

    init(failureThreshold: Int, cooldown: Double) {
        self.failureThreshold = max(1, failureThreshold)
        self.cooldown = cooldown
    }

    /// Whether a fetch may go to the backend at `now`; when the cooldown is over, the first
    /// caller gets the trial (the state becomes half-open) and the others keep waiting.
    mutating func allowsFetch(now: Double) -> Bool {
        switch self.state {
        case .closed:
            return true
        case .open(let until):
            guard now >= until else { return false }
            self.state = .halfOpen(since: now)
            return true
        case .halfOpen(let since):
            guard now >= since + self.cooldown else { return false }
            self.state = .halfOpen(since: now)
            return true
        }
    }

    /// Whether the backend counts as healthy at `now` (without taking the trial).
    func isHealthy(now: Double) -> Bool {
        switch self.state {
        case .closed: true
        case .open(let until): now >= until
        case .halfOpen(let since): now >= since + self.cooldown
        }
    }

    mutating func recordSuccess() {
        self.state = .closed(failures: 0)
    }

    /// Records a failed fetch; returns whether this opened the circuit.
    @discardableResult
    mutating func recordFailure(now: Double) -> Bool {
        switch self.state {
        case .closed(let failures):
            guard failures + 1 >= self.failureThreshold else {
                self.state = .closed(failures: failures + 1)
                return false
            }
        case .open:
            return false
        case .halfOpen:
            break
        }
        self.state = .open(until: now + self.cooldown)
        self.trips += 1
        return true
    }
}

/// How passive health is configured for a backend.
public struct PassiveHealthConfiguration: Sendable, Hashable {
    /// Failed fetches in a row that make the backend sick.
    public var failureThreshold = 5
    /// Seconds the backend stays sick before one trial fetch.
    public var cooldown = 10.0
    /// Whether a 5xx answer counts as a failure (it does not by default: an origin may answer
    /// 5xx on purpose, and the answer is passed on).
    public var serverErrorsCount = false

    public init() {}
}
