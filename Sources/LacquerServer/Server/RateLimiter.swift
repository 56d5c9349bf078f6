import Synchronization

/// One client's allowance (nginx's `limit_req`, Varnish's vsthrottle): `rate` requests a second
/// on average, bursts of up to `burst`. Pure: the time comes in as an argument.
struct TokenBucket: Equatable, Sendable {
    private(set) var tokens: Double
    private(set) var updated: Double

    init(burst: Double, now: Double) {
        self.tokens = burst
        self.updated = now
    }

    /// Takes one token at `now`; nil when allowed, else the whole seconds until one is there
    /// (for `Retry-After`).
    mutating func take(now: Double, rate: Double, burst: Double) -> Int? {
        if now > self.updated {
            self.tokens = min(burst, self.tokens + (now - self.updated) * rate)
            self.updated = now
        }
        if self.tokens >= 1 {
            self.tokens -= 1
            return nil
        }
        let wait = (1 - self.tokens) / max(rate, 1e-9)
        return max(1, Int(wait.rounded(.up)))
    }

    /// Whether the bucket is full again at `now` (it can be forgotten).
    func isFull(now: Double, rate: Double, burst: Double) -> Bool {
        self.tokens + (now - self.updated) * rate >= burst
    }
}

/// How requests are limited per client address.
public struct RateLimitConfiguration: Sendable, Hashable {
    /// Requests a second, on average.
    public var rate: Double
    /// Requests allowed at once above the average.
    public var burst: Double
    /// Clients remembered at most; beyond it, full buckets are forgotten first, then any.
    public var maxClients = 100_000

    public init(rate: Double, burst: Double) {
        self.rate = rate
        self.burst = burst
    }
}

/// Open connections per client address, for `Limits.connectionsPerClient`: counted when a
/// connection is accepted, released when it closes.
final class ClientConnectionCounts: Sendable {
    private let counts = Mutex<[String: Int]>([:])

    /// Counts a new connection from `client`; false (and not counted) when it would be one
    /// more than `limit`.
    func open(_ client: String, limit: Int) -> Bool {
        self.counts.withLock { counts in
            let current = counts[client, default: 0]
            guard current < limit else { return false }
            counts[client] = current + 1
            return true
        }
    }

    func close(_ client: String) {
        self.counts.withLock { counts in
            let left = counts[client, default: 1] - 1
            counts[client] = left > 0 ? left : nil
        }
    }

    func count(_ client: String) -> Int {
        self.counts.withLock { $0[client, default: 0] }
    }
}

/// The buckets of every client, keyed by address, in 16 shards (each behind its own lock) so
/// event loops rarely wait on each other.
final class RateLimiter: Sendable {
    private final class Shard: Sendable {
        let buckets = Mutex<[String: TokenBucket]>([:])
    }

    let configuration: RateLimitConfiguration
    private let shards: [Shard]

    init(_ configuration: RateLimitConfiguration) {
        self.configuration = configuration
        self.shards = (0..<16).map { _ in Shard() }
    }

    /// Takes a token for `client` at `now`; nil when allowed, else the `Retry-After` seconds.
    func take(client: String, now: Double) -> Int? {
        self.take(client: client, now: now, rate: self.configuration.rate, burst: self.configuration.burst)
    }

    /// `take` with a rate and burst of the caller's (vsthrottle keys carry their own).
    func take(client: String, now: Double, rate: Double, burst: Double) -> Int? {
        let perShard = max(1, self.configuration.maxClients / self.shards.count)
        let shard = self.shards[Int(UInt(bitPattern: client.hashValue) % UInt(self.shards.count))]
        return shard.buckets.withLock { buckets in
            if buckets[client] == nil, buckets.count >= perShard {
                // Forget the clients whose allowance is whole again; if none is, any one.
                let before = buckets.count
                buckets = buckets.filter { !$0.value.isFull(now: now, rate: rate, burst: burst) }
                if buckets.count == before, let any = buckets.first?.key {
                    buckets[any] = nil
                }
            }
            return buckets[client, default: TokenBucket(burst: burst, now: now)].take(now: now, rate: rate, burst: burst)
        }
    }
}
