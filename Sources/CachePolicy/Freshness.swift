import NIOHTTP1

/// How long a response stays fresh in a shared cache, and where that number came from.
///
/// The source is kept so that logs, `Cache-Status` details and VCL can tell an origin's explicit
/// `max-age` from a guessed, heuristic lifetime (RFC 9111 §4.2.2).
public struct FreshnessLifetime: Sendable, Equatable {
    /// Which rule of RFC 9111 §4.2.1 / §4.2.2 produced the lifetime.
    public enum Source: String, Sendable {
        case sMaxAge = "s-maxage"
        case maxAge = "max-age"
        case expires
        case heuristic
        case none
    }

    /// The freshness lifetime in seconds, never negative.
    public var seconds: Double
    /// The rule it came from.
    public var source: Source

    public init(seconds: Double, source: Source) {
        self.seconds = seconds
        self.source = source
    }
}

/// Freshness lifetime (RFC 9111 §4.2.1) and heuristic freshness (§4.2.2) for a shared cache.
public enum Freshness {
    /// Status codes heuristically cacheable (RFC 9110 §15.1): 200, 203, 204, 206, 300, 301, 308,
    /// 404, 405, 410, 414, 501. No other status ever gets a guessed lifetime (HARDENING.md §8:
    /// a heuristic TTL on 400 or 503 is how CPDoS poisons a cache).
    public static let heuristicallyCacheable: Set<Int> = [200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501]

    /// The shared-cache freshness lifetime, by the first rule of RFC 9111 §4.2.1 that applies:
    ///
    /// 1. `s-maxage` (shared caches only, §5.2.2.10);
    /// 2. `max-age` (§5.2.2.1);
    /// 3. `Expires - Date` (§5.3); `Date` absent or invalid means `responseTime`; an invalid
    ///    `Expires` (including `0`), or several different `Expires` lines, mean already expired (0);
    /// 4. heuristic (§4.2.2): `heuristicFraction × (Date - Last-Modified)`, capped at
    ///    `heuristicCap`, only for ``heuristicallyCacheable`` statuses, and only without `no-cache`,
    ///    `no-store`, `must-revalidate` or `proxy-revalidate`: those say the origin wants to be
    ///    asked, so a guessed lifetime would go against its intent. `public` does not extend the
    ///    heuristic to other statuses (see ``heuristicallyCacheable``);
    /// 5. otherwise 0 with source `.none`. The caller (VCL's default TTL) may pick a value then;
    ///    this includes a heuristically cacheable response without `Last-Modified`.
    ///
    /// - Parameters:
    ///   - status: the response status code.
    ///   - headers: the response header fields (`Expires`, `Date`, `Last-Modified`).
    ///   - cacheControl: the response's parsed `Cache-Control`.
    ///   - responseTime: when the response was received, seconds since the epoch.
    ///   - heuristicFraction: the fraction of the time since last modification (10 % is the
    ///     RFC's example).
    ///   - heuristicCap: the longest heuristic lifetime, one day by default.
    public static func lifetime(
        status: Int,
        headers: HTTPHeaders,
        cacheControl: CacheControl,
        responseTime: Double,
        heuristicFraction: Double = 0.1,
        heuristicCap: Double = 86_400
    ) -> FreshnessLifetime {
        if let sMaxAge = cacheControl.sMaxAge {
            return FreshnessLifetime(seconds: Double(sMaxAge), source: .sMaxAge)
        }
        if let maxAge = cacheControl.maxAge {
            return FreshnessLifetime(seconds: Double(maxAge), source: .maxAge)
        }
        let expiresLines = headers["expires"]
        if let first = expiresLines.first {
            // §5.3: invalid dates, especially "0", are in the past. Differing duplicate lines are
            // an invalid singleton field, so they count as invalid too.
            guard expiresLines.allSatisfy({ $0 == first }), let expires = HTTPDate.parse(first) else {
                return FreshnessLifetime(seconds: 0, source: .expires)
            }
            let date = Self.dateValue(headers, responseTime: responseTime)
            return FreshnessLifetime(seconds: max(0, Double(expires) - date), source: .expires)
        }
        guard Self.heuristicallyCacheable.contains(status), !cacheControl.noCache, !cacheControl.noStore,
            !cacheControl.mustRevalidate, !cacheControl.proxyRevalidate,
            let lastModifiedText = headers.first(name: "last-modified"),
            let lastModified = HTTPDate.parse(lastModifiedText)
        else {
            return FreshnessLifetime(seconds: 0, source: .none)
        }
        let date = Self.dateValue(headers, responseTime: responseTime)
        let sinceModified = max(0, date - Double(lastModified))
        let seconds = min(sinceModified * heuristicFraction, heuristicCap)
        guard seconds.isFinite, seconds > 0 else {
            return FreshnessLifetime(seconds: 0, source: .none)
        }
        return FreshnessLifetime(seconds: seconds, source: .heuristic)
    }

    /// Whether a response is fresh (RFC 9111 §4.2): `lifetime > current_age`. An addition.
    public static func isFresh(lifetime: FreshnessLifetime, currentAge: Double) -> Bool {
        lifetime.seconds > currentAge
    }

    /// The origin's `Date`, or the receipt time when it is absent or invalid (RFC 9110 §6.6.1).
    static func dateValue(_ headers: HTTPHeaders, responseTime: Double) -> Double {
        if let text = headers.first(name: "date"), let date = HTTPDate.parse(text) {
            return Double(date)
        }
        return responseTime
    }
}
