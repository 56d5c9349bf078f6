import NIOHTTP1

/// Which cache-control field governs this cache: targeted fields (RFC 9213), the Edge
/// Architecture's `Surrogate-Control` (W3C Note, 2001), or plain `Cache-Control` (RFC 9111 §5.2).
///
/// Origins use targeted fields to give a CDN or reverse proxy a different policy from browsers:
/// `Cache-Control: max-age=60` for clients, `CDN-Cache-Control: max-age=3600` for the edge.
/// The first field in this order with a usable value wins, and the others are ignored for this
/// cache's storability and freshness (RFC 9213 §2.1):
///
/// 1. `<Name>-Cache-Control` for our own `cacheName` (`Lacquer-Cache-Control` by default): the
///    field targeted at this cache alone (RFC 9213 §2 invites such names);
/// 2. `CDN-Cache-Control` (RFC 9213 §3), targeted at every CDN, which we are one of;
/// 3. `Surrogate-Control` (Edge Architecture §2.2), directives without a device token or with
///    `;<cacheName>`;
/// 4. `Cache-Control`.
///
/// A targeted field (1, 2) is a Structured Field Dictionary (RFC 8941). When parsing fails, or the
/// field is empty, it is ignored as if absent and the next one is tried (RFC 9213 §2.1: a cache
/// uses "the first field with a valid, non-empty value"). A valid field with only directives we
/// do not know still wins: the origin chose to target us. `Surrogate-Control` wins only when it
/// carries a `no-store` or `max-age` that applies to us; its `content="ESI/1.0"` alone does not
/// say anything about caching.
///
/// When the winner is not `Cache-Control`, RFC 9213 §2.1 also says to ignore `Expires`: pass the
/// response headers through ``freshnessHeaders(_:source:)`` before ``Freshness/lifetime``.
public enum TargetedCacheControl {
    /// The `source` reported for each winner; the field names in their usual spelling.
    public static let cdnCacheControl = "CDN-Cache-Control"
    public static let surrogateControl = "Surrogate-Control"
    public static let cacheControl = "Cache-Control"

    /// The directives that govern this cache, and the name of the field they came from.
    /// - Parameters:
    ///   - responseHeaders: the response's header fields.
    ///   - cacheName: this cache's name: the `<Name>` of its own targeted field and its
    ///     `Surrogate-Control` device token, compared case-insensitively.
    public static func effective(
        responseHeaders: HTTPHeaders,
        cacheName: String = "lacquer"
    ) -> (cacheControl: CacheControl, source: String) {
        let ownField = Self.targetedFieldName(cacheName: cacheName)
        for name in [ownField, Self.cdnCacheControl] {
            if let directives = Self.targeted(responseHeaders, name: name) {
                return (directives, name)
            }
        }
        if let directives = Self.surrogate(responseHeaders, cacheName: cacheName) {
            return (directives, Self.surrogateControl)
        }
        return (CacheControl(headers: responseHeaders), Self.cacheControl)
    }

    /// The header fields to compute freshness from when `source` won: without `Expires` when a
    /// targeted field or `Surrogate-Control` won (RFC 9213 §2.1: the cache "MUST ignore the
    /// Cache-Control and Expires header fields"), unchanged otherwise.
    public static func freshnessHeaders(_ responseHeaders: HTTPHeaders, source: String) -> HTTPHeaders {
        guard source != Self.cacheControl, responseHeaders.contains(name: "expires") else { return responseHeaders }
        var headers = responseHeaders
        headers.remove(name: "expires")
        return headers
    }

    /// Response fields this cache removes before sending a response on to the client.
    ///
    /// - `<Name>-Cache-Control` targets this cache alone: nobody downstream is meant to read it,
    ///   and it would disclose our policy.
    /// - `Surrogate-Control` is consumed by the surrogate that acts for the origin (Edge
    ///   Architecture §2.2: it is the origin's channel to its surrogates, not to clients); a
    ///   surrogate further downstream is addressed by its device token, not by us passing the
    ///   field on. Varnish, Squid and Fastly strip it the same way.
    /// - `CDN-Cache-Control` is kept: it targets every CDN (RFC 9213 §3), and a CDN in front of
    ///   Lacquer is one of them, so it must see the field the origin wrote for it. RFC 9213 §2.1
    ///   only requires a cache to obey the first targeted field on its own list; passing fields on
    ///   is what makes the convention work through a chain of caches.
    public static func fieldsToStripBeforeForwarding(cacheName: String = "lacquer") -> [String] {
        [Self.targetedFieldName(cacheName: cacheName), Self.surrogateControl]
    }

    /// `<Name>-Cache-Control`, with each hyphen-separated part of the name capitalised
    /// (`lacquer` → `Lacquer-Cache-Control`). Field names are case-insensitive (RFC 9110 §5.1).
    public static func targetedFieldName(cacheName: String) -> String {
        let name = cacheName.split(separator: "-", omittingEmptySubsequences: false).map { part in
            part.prefix(1).uppercased() + part.dropFirst().lowercased()
        }
        return name.joined(separator: "-") + "-Cache-Control"
    }

    // MARK: RFC 9213 targeted fields

    /// The directives of a targeted field, `nil` when it is absent, empty or fails to parse.
    static func targeted(_ headers: HTTPHeaders, name: String) -> CacheControl? {
        // Field lines combine with commas (RFC 8941 §4.2); empty lines add nothing.
        let lines = headers[name].filter { !$0.utf8.allSatisfy { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") } }
        guard !lines.isEmpty, let dictionary = StructuredFieldDictionary(parsing: lines.joined(separator: ", ")),
            !dictionary.members.isEmpty
        else { return nil }
        return Self.cacheControl(dictionary)
    }

    /// Maps Dictionary members to directives (RFC 9213 §2.2): directives without a value are
    /// Boolean true, `max-age` and friends Integers, qualified `no-cache` / `private` Strings.
    ///
    /// Values of the wrong type are read the way ``CacheControl`` reads invalid values, towards
    /// the safe side: an invalid `max-age` / `s-maxage` is 0 (stale, RFC 9111 §4.2.1); a
    /// restrictive directive (`no-store`, `no-cache`, `private`, `must-revalidate`,
    /// `proxy-revalidate`, `no-transform`, `must-understand`) with an unexpected value still
    /// restricts; a relaxing one (`public`, `immutable`, `stale-*`) is ignored. An explicit
    /// Boolean false (`no-store=?0`) means the directive is absent.
    static func cacheControl(_ dictionary: StructuredFieldDictionary) -> CacheControl {
        var result = CacheControl()
        for (key, value) in dictionary.members {
            switch key {
            case "max-age":
                result.maxAge = Self.seconds(value) ?? 0
            case "s-maxage":
                result.sMaxAge = Self.seconds(value) ?? 0
            case "stale-while-revalidate":
                result.staleWhileRevalidate = Self.seconds(value)
            case "stale-if-error":
                result.staleIfError = Self.seconds(value)
            case "no-cache":
                if case .string(let list) = value, !Self.fieldList(list).isEmpty {
                    result.noCacheFields = Self.fieldList(list)
                } else {
                    result.noCache = Self.restricts(value)
                }
            case "private":
                if case .string(let list) = value, !Self.fieldList(list).isEmpty {
                    result.privateFields = Self.fieldList(list)
                } else {
                    result.isPrivate = Self.restricts(value)
                }
            case "no-store": result.noStore = Self.restricts(value)
            case "must-revalidate": result.mustRevalidate = Self.restricts(value)
            case "proxy-revalidate": result.proxyRevalidate = Self.restricts(value)
            case "no-transform": result.noTransform = Self.restricts(value)
            case "must-understand": result.mustUnderstand = Self.restricts(value)
            case "public": result.isPublic = value == .boolean(true)
            case "immutable": result.immutable = value == .boolean(true)
            default:
                // Unknown and request-only directives are ignored (RFC 9111 §5.2.3).
                break
            }
        }
        return result
    }

    /// A non-negative Integer as delta-seconds, clamped to 2^31 (RFC 9111 §1.2.2).
    private static func seconds(_ value: StructuredFieldDictionary.Item) -> Int64? {
        guard case .integer(let seconds) = value, seconds >= 0 else { return nil }
        return min(seconds, CacheControl.maxDeltaSeconds)
    }

    /// A restrictive directive is present unless explicitly `?0`.
    private static func restricts(_ value: StructuredFieldDictionary.Item) -> Bool {
        value != .boolean(false)
    }

    /// Lowercased, trimmed, non-empty names from a `no-cache` / `private` String.
    private static func fieldList(_ list: String) -> [String] {
        list.split(separator: ",").compactMap { part in
            let name = part.trimmingOWS()
            return name.isEmpty ? nil : name.lowercased()
        }
    }

    // MARK: Edge Architecture Surrogate-Control

    /// The `Surrogate-Control` directives for this cache, `nil` when none of `no-store` or
    /// `max-age` applies to it.
    ///
    /// Grammar (Edge Architecture §2.2): `1#( control-directive [ ";" device-token ] )` with
    /// `control-directive = "no-store" | "no-store-remote" | "max-age" "=" delta-seconds
    /// [ "+" delta-seconds ] | "content" "=" quoted-string | extension`.
    /// Targeting (§2.3): when some directive names our device token, only the directives that
    /// name it apply; otherwise the ones without a token apply. Directives for other devices
    /// never apply. `max-age=N+M` gives N seconds of freshness and M seconds of grace, which we
    /// map to both `stale-while-revalidate` and `stale-if-error` (Varnish's grace covers both).
    /// `no-store-remote` is ignored: it addresses surrogates far from the origin, and Lacquer is
    /// deployed next to it. An invalid `max-age` value counts as 0, as in ``CacheControl``.
    static func surrogate(_ headers: HTTPHeaders, cacheName: String) -> CacheControl? {
        let lines = headers[Self.surrogateControl]
        guard !lines.isEmpty else { return nil }
        let directives = lines.flatMap { Self.surrogateDirectives($0) }
        let token = cacheName.lowercased()
        let targeted = directives.filter { $0.token == token }
        let applicable = targeted.isEmpty ? directives.filter { $0.token == nil } : targeted

        var result = CacheControl()
        var applies = false
        for directive in applicable {
            switch directive.name {
            case "no-store":
                result.noStore = true
                applies = true
            case "max-age":
                applies = true
                let parts = (directive.value ?? "").split(
                    separator: "+", maxSplits: 1, omittingEmptySubsequences: false)
                let maxAge = CacheControl.deltaSeconds(parts.first.map(String.init)) ?? 0
                result.maxAge = result.maxAge.map { min($0, maxAge) } ?? maxAge
                if parts.count == 2, let grace = CacheControl.deltaSeconds(String(parts[1])) {
                    let smaller = result.staleWhileRevalidate.map { min($0, grace) } ?? grace
                    result.staleWhileRevalidate = smaller
                    result.staleIfError = smaller
                }
            default:
                break
            }
        }
        return applies ? result : nil
    }

    struct SurrogateDirective: Equatable {
        var name: String
        var value: String?
        /// The lowercased device token after `;`, `nil` when untargeted.
        var token: String?
    }

    /// Splits one field line into directives: commas and semicolons inside quoted strings do not
    /// count; names and tokens are lowercased and trimmed; elements without a name are dropped.
    static func surrogateDirectives(_ line: String) -> [SurrogateDirective] {
        var elements: [[UInt8]] = [[]]
        var inQuotes = false
        var escaped = false
        for byte in line.utf8 {
            if inQuotes {
                if escaped {
                    escaped = false
                } else if byte == UInt8(ascii: "\\") {
                    escaped = true
                } else if byte == UInt8(ascii: "\"") {
                    inQuotes = false
                }
            } else if byte == UInt8(ascii: "\"") {
                inQuotes = true
            } else if byte == UInt8(ascii: ",") {
                elements.append([])
                continue
            }
            elements[elements.count - 1].append(byte)
        }

        return elements.compactMap { bytes in
            // The device token follows the last `;` outside quotes.
            var quoted = false
            var semicolon: Int?
            for (offset, byte) in bytes.enumerated() {
                if byte == UInt8(ascii: "\"") { quoted.toggle() }
                if byte == UInt8(ascii: ";"), !quoted { semicolon = offset }
            }
            let directivePart = String(decoding: bytes[..<(semicolon ?? bytes.count)], as: UTF8.self)
            let token = semicolon.map {
                String(decoding: bytes[($0 + 1)...], as: UTF8.self)[...].trimmingOWS().lowercased()
            }
            let nameAndValue = directivePart.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = nameAndValue[0].trimmingOWS().lowercased()
            guard !name.isEmpty else { return nil }
            var value = nameAndValue.count == 2 ? String(nameAndValue[1].trimmingOWS()) : nil
            if let quotedValue = value, quotedValue.count >= 2, quotedValue.hasPrefix("\""), quotedValue.hasSuffix("\"")
            {
                value = String(quotedValue.dropFirst().dropLast())
            }
            return SurrogateDirective(name: name, value: value, token: token.flatMap { $0.isEmpty ? nil : $0 })
        }
    }
}
