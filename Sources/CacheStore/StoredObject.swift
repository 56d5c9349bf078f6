import NIOCore
import NIOHTTP1

/// One cached response: an immutable value shared by reference between the tiers and every
/// delivery that reads it (Varnish's `struct objcore` + `struct object`, condensed).
///
/// Times are seconds since the Unix epoch as `Double` (Varnish's `vtim_real`). The object's
/// age at any instant is `now - origin`, where `origin = responseTime - correctedInitialAge`
/// (RFC 9111 §4.2.3), so the Age header stays right wherever the object is served from,
/// including after a restart. Freshness ends at `origin + ttl`; after that the object may be
/// served stale for `grace` seconds and kept for revalidation for `keep` seconds more.
///
/// Lifecycle: created by the fetch once the response is complete and storable → inserted
/// into the memory tier (and later the disk tier) → served by reference → dropped on purge,
/// eviction, replacement by a newer variant, or when `origin + ttl + grace + keep` passes.
public final class StoredObject: Sendable {
    public let key: CacheKey
    /// The normalised values of the request headers named by the response's `Vary`
    /// (empty when the response has no Vary). See `CachePolicy.VaryKey`.
    public let variant: String
    /// The lowercased field names the stored response's `Vary` lists (empty when none).
    public let varyNames: [String]
    public let status: Int
    public let reason: String
    /// The response header fields as stored: hop-by-hop fields removed, no `Age`, `Date` present.
    public let headers: HTTPHeaders
    /// The complete response body.
    public let body: ByteBuffer
    /// When the request that produced this response was sent (RFC 9111 `request_time`).
    public let requestTime: Double
    /// When the response was received (RFC 9111 `response_time`).
    public let responseTime: Double
    /// `responseTime - corrected_initial_age`: the instant at which the object's age was 0.
    public let origin: Double
    /// Freshness lifetime in seconds (may be 0: store for revalidation only).
    public let ttl: Double
    /// Seconds after expiry during which a stale copy may be served while refreshing.
    public let grace: Double
    /// Seconds after grace during which the object is kept only to revalidate it.
    public let keep: Double
    /// Stale copies must never be served without successful validation
    /// (`must-revalidate`, `proxy-revalidate`, `s-maxage`, or `no-cache`).
    public let mustRevalidate: Bool

    public init(
        key: CacheKey,
        variant: String,
        varyNames: [String],
        status: Int,
        reason: String,
        headers: HTTPHeaders,
        body: ByteBuffer,
        requestTime: Double,
        responseTime: Double,
        origin: Double,
        ttl: Double,
        grace: Double,
        keep: Double,
        mustRevalidate: Bool
    ) {
        self.key = key
        self.variant = variant
        self.varyNames = varyNames
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.requestTime = requestTime
        self.responseTime = responseTime
        self.origin = origin
        self.ttl = ttl
        self.grace = grace
        self.keep = keep
        self.mustRevalidate = mustRevalidate
    }

    /// A copy with other header fields and body (e.g. a transformed coding); everything else kept.
    public func replacing(headers: HTTPHeaders, body: ByteBuffer) -> StoredObject {
        StoredObject(
            key: self.key, variant: self.variant, varyNames: self.varyNames, status: self.status, reason: self.reason,
            headers: headers, body: body, requestTime: self.requestTime, responseTime: self.responseTime,
            origin: self.origin, ttl: self.ttl, grace: self.grace, keep: self.keep, mustRevalidate: self.mustRevalidate)
    }

    /// The age in seconds at `now` (never negative).
    @inlinable
    public func age(at now: Double) -> Double {
        max(0, now - self.origin)
    }

    /// Seconds of freshness left at `now`; negative once stale.
    @inlinable
    public func remainingTTL(at now: Double) -> Double {
        self.origin + self.ttl - now
    }

    /// The instant after which the object is of no use at all and may be dropped.
    public var expiresEntirely: Double {
        self.origin + self.ttl + self.grace + self.keep
    }

    /// The bytes this object costs in memory: body, header text and a fixed bookkeeping share.
    public var cost: Int {
        var headerBytes = 0
        for (name, value) in self.headers {
            headerBytes += name.utf8.count + value.utf8.count + 4
        }
        return self.body.readableBytes + headerBytes + self.variant.utf8.count + StoredObject.overhead
    }

    /// Fixed per-object bookkeeping charged against the memory budget (object, LRU node, map slot).
    public static let overhead = 256
}
