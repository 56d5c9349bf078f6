import CachePolicy
import CacheStore
import NIOHTTP1

/// The rules a hit is judged by. The request flow (`BuiltinPolicy.lookup`, `deliverPlain`) and
/// the hit fast lane both ask these, so the fast path cannot decide otherwise than the slow one;
/// `HitDecisionDifferentialTests` feeds both random objects and requests to check it.
enum HitRules {
    /// Seconds of freshness `object` has left at `now` (RFC 9111 §4.2: the freshness lifetime
    /// less the current age, the age counted from the response's origin time); negative once
    /// stale. `ttlCap` is VCL's `req.ttl`, an upper limit on the stored TTL (Varnish's EXP_Ttl).
    static func remainingFreshness(_ object: some CacheCandidate, now: Double, ttlCap: Double? = nil) -> Double {
        let ttl = ttlCap.map { min(object.ttl, max(0, $0)) } ?? object.ttl
        return object.origin + ttl - now
    }

    /// The variant a request selects among a key's stored ones (RFC 9111 §4.1): the most
    /// recent response (by response time) among those `matches` says the request matches.
    static func selectVariant<Candidate: CacheCandidate>(_ variants: [Candidate], matches: (Candidate) -> Bool) -> Candidate? {
        var best: Candidate?
        for object in variants where matches(object) {
            if let current = best, current.responseTime >= object.responseTime { continue }
            best = object
        }
        return best
    }

    /// Whether a request takes a stored response exactly as stored: a GET or HEAD without Range
    /// and without validators (those may make it a 206, 304 or 416).
    static func wantsStoredAsIs(method: HTTPMethod, requestHeaders: HTTPHeaders) -> Bool {
        guard method == .GET || method == .HEAD else { return false }
        return !requestHeaders.contains(name: "range") && !requestHeaders.contains(name: "if-none-match")
            && !requestHeaders.contains(name: "if-modified-since")
    }

    /// Whether a stored object's bytes may be written as they are for a client: a plain 200
    /// (nothing upstream to merge), and not gzip-coded for a client that does not take gzip
    /// (that one is gunzipped on the slow path).
    static func deliverableAsStored(_ object: StoredObject, clientTakesGzip: Bool) -> Bool {
        object.plainDeliverable && (clientTakesGzip || !object.mentionsGzip)
    }
}
