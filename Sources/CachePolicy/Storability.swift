import NIOHTTP1

/// A shared cache's answer to "may this response be stored?" (RFC 9111 §3).
public enum StorabilityDecision: Sendable, Equatable {
    case storable
    case notStorable(reason: NotStorableReason)
}

/// Why a response is not stored: a closed set, each with the short token that `Cache-Status`
/// details and metric labels show (its raw value).
public enum NotStorableReason: String, Sendable, Equatable, CaseIterable {
    /// RFC 9111 §3: only GET responses are stored (a HEAD is answered from a stored GET).
    case method
    case noStore = "no-store"
    /// A status code the cache does not understand.
    case status
    /// 206 (ranges are not stored as such).
    case partial
    case varyStar = "vary-star"
    case setCookie = "set-cookie"
    case `private`
    /// A request with Authorization and a response that did not allow sharing (RFC 9111 §3.5).
    case authorization
    /// No explicit freshness and no heuristic allowed.
    case noFreshness = "no-freshness"
    /// Larger than the stores take.
    case tooLarge = "too-large"
    /// `beresp.uncacheable` set in VCL.
    case vcl
    /// VCL set a lifetime of zero.
    case vclTTL = "vcl-ttl"
    /// A pass: nothing is stored by design.
    case pass

    /// Reasons no VCL lifetime can override: storing cannot work at all.
    public var isHard: Bool {
        switch self {
        case .method, .partial, .status, .varyStar: true
        default: false
        }
    }
}

/// The storage rules of RFC 9111 §3 for a shared cache, plus Lacquer's own (HARDENING.md §8).
///
/// The rules are checked in a fixed order so that the reason reported is stable and the cheapest,
/// most fundamental one wins (a POST is reported as `method`, not as `no-freshness`).
/// `Cookie` in the request is deliberately not a rule here: Varnish's builtin passes such
/// requests at `vcl_recv`, before any response exists, and VCL may remove the cookie.
public enum Storability {
    /// Final status codes this cache understands (RFC 9111 §3: "the cache understands the response
    /// status code"): those RFC 9110 §15 and RFC 6585 define, minus 206 (ranges are not stored
    /// yet), 304 (only meaningful for revalidation) and 305/306 (deprecated / unused).
    public static let understoodStatuses: Set<Int> = [
        200, 201, 202, 203, 204, 205,
        300, 301, 302, 303, 307, 308,
        400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417,
        421, 422, 426, 428, 429, 431, 451,
        500, 501, 502, 503, 504, 505, 511,
    ]

    /// A shared cache's decision.
    ///
    /// Rules, in order:
    /// 1. only GET is stored (`method`); a HEAD-triggered fetch is done as GET by the caller, and
    ///    methods are case-sensitive (RFC 9110 §9.1);
    /// 2. `no-store` in the request (§5.2.1.5) or the response (§5.2.2.5) (`no-store`), unless the
    ///    response also has `must-understand` and a status we understand (§5.2.2.3);
    /// 3. (targeted fields: pass `TargetedCacheControl.effective(...)` as `responseCacheControl`, so
    ///    a `CDN-Cache-Control` or `Surrogate-Control: no-store` aimed at this cache decides; RFC 9213)
    /// 4. status: 1xx and 304 (`status`), 206 (`partial`), a final code this cache does not
    ///    understand with `must-understand` (`status`); other unknown final codes go on and need
    ///    explicit freshness or `public` (rule 9);
    /// 5. `Vary: *` (`vary-star`): no later request can ever match it (§4.1);
    /// 6. `Set-Cookie` in the response (`set-cookie`): one user's session must not reach another;
    /// 7. bare `private` (`private`, §5.2.2.7);
    /// 8. `Authorization` in the request, unless the response has `public`, `s-maxage` or
    ///    `must-revalidate` (`authorization`, §3.5);
    /// 9. needs explicit freshness (`Expires`, `max-age`, `s-maxage`), `public`, `no-cache` (stored
    ///    to revalidate every time) or a heuristically cacheable status (`no-freshness`, §3).
    ///
    /// - Parameters:
    ///   - method: the request method.
    ///   - requestHeaders: the request's header fields.
    ///   - requestCacheControl: the request's parsed `Cache-Control`.
    ///   - status: the response status code.
    ///   - responseHeaders: the response's header fields.
    ///   - responseCacheControl: the response's parsed `Cache-Control`.
    public static func evaluate(
        method: String,
        requestHeaders: HTTPHeaders,
        requestCacheControl: CacheControl,
        status: Int,
        responseHeaders: HTTPHeaders,
        responseCacheControl: CacheControl
    ) -> StorabilityDecision {
        guard method == "GET" else { return .notStorable(reason: .method) }

        let understood = Self.understoodStatuses.contains(status)
        if requestCacheControl.noStore {
            return .notStorable(reason: .noStore)
        }
        if responseCacheControl.noStore, !(responseCacheControl.mustUnderstand && understood) {
            return .notStorable(reason: .noStore)
        }
        if status == 206 { return .notStorable(reason: .partial) }
        // A final status this cache has no meaning for may still be stored when the response
        // says how long it is fresh (explicit freshness or `public`, checked below; none is
        // heuristically cacheable), unless it demands `must-understand` (RFC 9111 §3, §5.2.2.3).
        let unknownFinal = !understood && (200...599).contains(status) && status != 304
        guard understood || (unknownFinal && !responseCacheControl.mustUnderstand) else { return .notStorable(reason: .status) }

        if VaryKey.fieldNames(responseHeaders) == nil { return .notStorable(reason: .varyStar) }
        if responseHeaders.contains(name: "set-cookie") { return .notStorable(reason: .setCookie) }
        if responseCacheControl.isPrivate { return .notStorable(reason: .private) }

        if requestHeaders.contains(name: "authorization"), !Self.sharesWithAuthorization(responseCacheControl) {
            return .notStorable(reason: .authorization)
        }

        let hasExplicitFreshness =
            responseHeaders.contains(name: "expires") || responseCacheControl.maxAge != nil
            || responseCacheControl.sMaxAge != nil
        guard
            hasExplicitFreshness || responseCacheControl.isPublic || responseCacheControl.noCache
                || Freshness.heuristicallyCacheable.contains(status)
        else {
            return .notStorable(reason: .noFreshness)
        }
        return .storable
    }

    /// Whether a response's directives let a shared cache reuse it for requests with
    /// `Authorization` (RFC 9111 §3.5): `public`, `s-maxage` or `must-revalidate`. It decides both
    /// whether a response to such a request is stored and whether a stored response, whatever
    /// request stored it, may answer one.
    public static func sharesWithAuthorization(_ responseCacheControl: CacheControl) -> Bool {
        responseCacheControl.isPublic || responseCacheControl.sMaxAge != nil || responseCacheControl.mustRevalidate
    }

    /// Lowercased names of response fields a shared cache must not store: those of a qualified
    /// `private` (§5.2.2.7), plus those of a qualified `no-cache` (§5.2.2.4), which may not be
    /// sent without revalidation; dropping them at store time is the simple way to never send
    /// them from cache (a 304 merge brings them back after revalidation). An addition.
    public static func fieldsToOmit(_ responseCacheControl: CacheControl) -> [String] {
        var names: [String] = []
        for name in responseCacheControl.privateFields + responseCacheControl.noCacheFields
        where !names.contains(name) {
            names.append(name)
        }
        return names
    }
}
