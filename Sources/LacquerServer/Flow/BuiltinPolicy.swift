import CachePolicy
import CacheStore
import NIOCore
import NIOHTTP1

/// What the lookup found (Varnish's `HSH_Lookup` result, RFC 9111 §4 applied), for a memory
/// object or a disk head alike.
enum LookupOutcome<Candidate: CacheCandidate> {
    /// A fresh object the request accepts.
    case hit(Candidate)
    /// A stale object the request accepts stale (request `max-stale`).
    case staleHit(Candidate)
    /// An object exists but must be refetched or revalidated; `fwd` says why.
    case refresh(Candidate, fwd: CacheStatusValue.Forward)
    /// Nothing usable is stored.
    case miss(fwd: CacheStatusValue.Forward)
}

/// What the lookup needs to know of a stored response, wherever it is stored.
protocol CacheCandidate {
    var variant: String { get }
    var varyNames: [String] { get }
    var responseTime: Double { get }
    var origin: Double { get }
    var ttl: Double { get }
    var mustRevalidate: Bool { get }
    var status: Int { get }
    var reason: String { get }
    var headers: HTTPHeaders { get }
    var grace: Double { get }
    var keep: Double { get }
    /// The stored body's length in bytes.
    var storedBodyLength: Int { get }
}

extension StoredObject: CacheCandidate {
    var storedBodyLength: Int { self.bodyLength }
}
extension DiskObjectHead: CacheCandidate {
    var storedBodyLength: Int { Int(self.bodyLength) }
}

/// What `vcl_backend_response` decided about a fetched response.
struct BackendResponseDecision: Equatable {
    var storable: Bool
    var reason: NotStorableReason?
    var ttl: Double
    var grace: Double
    var keep: Double
    var mustRevalidate: Bool
    var origin: Double
    /// Fields a shared cache must not store (`private="…"`, `no-cache="…"`; RFC 9111 §5.2.2.4, §5.2.2.7).
    var omittedFields: [String] = []
}

/// The built-in behaviour at each step of the request flow: RFC 9111's rules plus Varnish's
/// `builtin.vcl` defaults. A loaded VCL-like configuration overrides single decisions; these
/// are the answers when it says nothing.
enum BuiltinPolicy {
    /// `vcl_hash`: the raw target and the normalised host.
    static func hash(target: String, host: String) -> CacheKey {
        CacheKey(host: host, target: target)
    }

    /// The request's own cache directives; `Pragma: no-cache` counts only when Cache-Control is
    /// absent. None when the operator told Lacquer to ignore them (`--ignore-request-cache-control`,
    /// Varnish's and nginx's default): then a client's reload (`no-cache`, `max-age=0`) is
    /// answered from the cache like any other request.
    static func requestCacheControl(_ headers: HTTPHeaders, ignored: Bool) -> CacheControl {
        if ignored { return CacheControl() }
        var cc = CacheControl(headers: headers)
        if !headers.contains(name: "cache-control") {
            for value in headers["pragma"] where value.lowercased().contains("no-cache") {
                cc.noCache = true
            }
        }
        return cc
    }

    /// Picks the stored variant that matches the request and decides whether it may be used
    /// (RFC 9111 §3.5, §4, §4.1, §5.2.1).
    static func lookup<Candidate: CacheCandidate>(
        variants: [Candidate],
        requestHeaders: HTTPHeaders,
        requestCacheControl cc: CacheControl,
        varyListFields: Set<String> = VaryKey.standardListFields,
        now: Double,
        ttlCap: Double? = nil,
        requestArrived: Double? = nil
    ) -> LookupOutcome<Candidate> {
        if variants.isEmpty {
            return .miss(fwd: .uriMiss)
        }
        let selected = HitRules.selectVariant(variants) {
            VaryKey.variant(names: $0.varyNames, requestHeaders: requestHeaders, listFields: varyListFields) == $0.variant
        }
        guard let object = selected else {
            return .miss(fwd: .varyMiss)
        }
        if requestHeaders.contains(name: "authorization"),
            !Storability.sharesWithAuthorization(CacheControl(headers: object.headers))
        {
            // A logged-in user's request never gets a response its origin did not let a shared
            // cache give to such requests, whoever's request stored it: it goes to the origin,
            // leaving the stored object to the others.
            return .miss(fwd: .request)
        }
        let remaining = HitRules.remainingFreshness(object, now: now, ttlCap: ttlCap)
        let age = max(0, now - object.origin)
        // A response fetched or validated at the origin after this request arrived is what the
        // request's no-cache, max-age and min-fresh ask for: requests that waited behind that
        // one validation (a reload storm) take its result instead of validating again each.
        let validatedSinceArrival = requestArrived.map { object.responseTime >= $0 } ?? false
        if !validatedSinceArrival {
            if cc.noCache {
                return .refresh(object, fwd: .request)
            }
            if let maxAge = cc.maxAge, age > Double(maxAge) {
                return .refresh(object, fwd: .request)
            }
        }
        if remaining > 0 {
            if !validatedSinceArrival, let minFresh = cc.minFresh, remaining < Double(minFresh) {
                return .refresh(object, fwd: .request)
            }
            return .hit(object)
        }
        // Stale: the request may accept it (max-stale) unless the response forbids it.
        if let maxStale = cc.maxStale, !object.mustRevalidate {
            switch maxStale {
            case .any:
                return .staleHit(object)
            case .seconds(let limit) where -remaining <= Double(limit):
                return .staleHit(object)
            default:
                break
            }
        }
        return .refresh(object, fwd: .stale)
    }

    /// `vcl_backend_response`: storability and TTL, grace and keep of a fetched response.
    static func backendResponse(
        method: String,
        requestHeaders: HTTPHeaders,
        requestCacheControl: CacheControl,
        status: Int,
        responseHeaders: HTTPHeaders,
        requestTime: Double,
        responseTime: Double,
        configuration: ServerConfiguration
    ) -> BackendResponseDecision {
        // A field aimed at this cache (Lacquer-/CDN-Cache-Control, Surrogate-Control) overrides
        // Cache-Control and Expires for our decisions (RFC 9213 §2.1).
        let targeted = TargetedCacheControl.effective(responseHeaders: responseHeaders)
        let cc = targeted.cacheControl
        let freshnessHeaders = TargetedCacheControl.freshnessHeaders(responseHeaders, source: targeted.source)
        let cia = AgeCalculation.correctedInitialAge(
            ageHeader: AgeCalculation.ageHeader(responseHeaders),
            dateHeader: responseHeaders.first(name: "date").flatMap { HTTPDate.parse($0) },
            requestTime: requestTime,
            responseTime: responseTime
        )
        let origin = responseTime - cia
        var decision = BackendResponseDecision(
            storable: false, reason: nil, ttl: 0, grace: 0, keep: 0,
            mustRevalidate: false, origin: origin
        )
        switch Storability.evaluate(
            method: method,
            requestHeaders: requestHeaders,
            requestCacheControl: requestCacheControl,
            status: status,
            responseHeaders: freshnessHeaders,
            responseCacheControl: cc
        ) {
        case .storable:
            break
        case .notStorable(let reason):
            decision.reason = reason
            return decision
        }
        let lifetime = Freshness.lifetime(
            status: status, headers: freshnessHeaders, cacheControl: cc, responseTime: responseTime
        )
        var ttl = lifetime.seconds
        if cc.noCache && cc.noCacheFields.isEmpty {
            ttl = 0
        }
        if status >= 400 {
            ttl = min(ttl, configuration.errorStatusTTLCap)
        }
        let hasValidators = responseHeaders.contains(name: "etag") || responseHeaders.contains(name: "last-modified")
        if ttl <= 0 && !hasValidators {
            decision.reason = .noFreshness
            return decision
        }
        decision.storable = true
        decision.omittedFields = Storability.fieldsToOmit(cc)
        decision.ttl = max(0, ttl)
        decision.mustRevalidate =
            cc.mustRevalidate || cc.proxyRevalidate || cc.sMaxAge != nil || (cc.noCache && cc.noCacheFields.isEmpty)
        if decision.mustRevalidate {
            decision.grace = 0
        } else if let swr = cc.staleWhileRevalidate {
            decision.grace = Double(swr)
        } else {
            decision.grace = configuration.defaultGrace
        }
        var keep = configuration.defaultKeep
        if !decision.mustRevalidate {
            let sie = max(Double(cc.staleIfError ?? 0), configuration.defaultStaleIfError)
            keep = max(keep, sie - decision.grace)
        }
        if hasValidators {
            // Keep validatable objects a while longer so a stale copy can be revalidated with a 304.
            keep = max(keep, min(max(decision.ttl, 60), 3600))
        }
        decision.keep = keep
        return decision
    }

    /// Whether a method is "unsafe" (RFC 9110 §9.2.1) and a non-error answer invalidates stored responses.
    static func invalidates(method: HTTPMethod) -> Bool {
        switch method {
        case .GET, .HEAD, .OPTIONS, .TRACE, .PURGE:
            return false
        default:
            return true
        }
    }
}
