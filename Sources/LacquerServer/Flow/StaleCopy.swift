import CachePolicy
import CacheStore
import NIOHTTP1

/// A stored copy from either tier: what a lookup found, or what a fetch replaces (and
/// revalidates), and the windows in which it may stand in for a fresh answer.
enum StaleCopy {
    case memory(StoredObject)
    /// Boxed: a disk head is large, and the copy travels in the request machine's events and
    /// actions.
    indirect case disk(DiskObjectHead)

    var headers: HTTPHeaders {
        switch self {
        case .memory(let object): object.headers
        case .disk(let head): head.headers
        }
    }

    /// Whether a soft purge made it stale.
    var softPurged: Bool {
        switch self {
        case .memory(let object): object.softPurged
        case .disk(let head): head.softPurged
        }
    }

    private var timing: (origin: Double, ttl: Double, grace: Double, mustRevalidate: Bool) {
        switch self {
        case .memory(let o): (o.origin, o.ttl, o.grace, o.mustRevalidate)
        case .disk(let h): (h.origin, h.ttl, h.grace, h.mustRevalidate)
        }
    }

    /// Inside its grace / stale-while-revalidate window: may be served while one refresh runs.
    func usableWhileRevalidating(at now: Double) -> Bool {
        let t = self.timing
        return !t.mustRevalidate && now <= t.origin + t.ttl + t.grace
    }

    /// Inside its stale-if-error window (RFC 5861 §4), or the configured default: may be served
    /// when the origin fails.
    func usableOnError(at now: Double, defaultWindow: Double) -> Bool {
        let t = self.timing
        guard !t.mustRevalidate else { return false }
        let sie = Double(CacheControl(headers: self.headers).staleIfError ?? 0)
        return now <= t.origin + t.ttl + max(t.grace, sie, defaultWindow)
    }
}
