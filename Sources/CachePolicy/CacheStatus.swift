/// nginx-style `X-Cache-Status` values, for operators and dashboards used to that header.
public enum XCacheStatus: String, Sendable {
    case hit = "HIT"
    case miss = "MISS"
    case expired = "EXPIRED"
    case stale = "STALE"
    case updating = "UPDATING"
    case revalidated = "REVALIDATED"
    case bypass = "BYPASS"
}

/// One member of the `Cache-Status` field (RFC 9211), describing what this cache did.
///
/// Serialised by hand as a Structured Field list member (RFC 8941 §3.1): the cache name as an
/// sf-token (or sf-string when it is not a valid token) followed by parameters. Boolean `true`
/// parameters are written bare (`; hit`), `false` ones are omitted (RFC 8941 §4.1.1.2).
public struct CacheStatusValue: Sendable, Equatable {
    /// Why the request went forward (RFC 9211 §2.2).
    public enum Forward: String, Sendable {
        case bypass, method
        case uriMiss = "uri-miss"
        case varyMiss = "vary-miss"
        case miss, request, stale, partial
    }

    /// Served from cache without contacting the origin (§2.1).
    public var hit: Bool
    /// Why the origin was contacted (§2.2).
    public var fwd: Forward?
    /// The status the origin returned (§2.3).
    public var fwdStatus: Int?
    /// Remaining freshness in seconds; negative when stale (§2.4).
    public var ttl: Int?
    /// The response was stored (§2.5).
    public var stored: Bool
    /// The request was collapsed with another (§2.6).
    public var collapsed: Bool
    /// Free-form detail (§2.8), e.g. a storability reason.
    public var detail: String?

    public init(
        hit: Bool = false,
        fwd: Forward? = nil,
        fwdStatus: Int? = nil,
        ttl: Int? = nil,
        stored: Bool = false,
        collapsed: Bool = false,
        detail: String? = nil
    ) {
        self.hit = hit
        self.fwd = fwd
        self.fwdStatus = fwdStatus
        self.ttl = ttl
        self.stored = stored
        self.collapsed = collapsed
        self.detail = detail
    }

    /// The list member, e.g. `Lacquer; fwd=miss; fwd-status=200; stored; ttl=60` or
    /// `Lacquer; hit; ttl=42`. Parameter order: hit, fwd, fwd-status, stored, collapsed, ttl, detail.
    /// - Parameter cacheName: this cache's identifier (§2).
    public func serialized(cacheName: String = "Lacquer") -> String {
        self.serialized(member: Self.tokenOrString(cacheName))
    }

    /// The same, for a cache name already made a list member (`tokenOrString`), so a server can
    /// do that once instead of for every response.
    public func serialized(member: String) -> String {
        var result = member
        if self.hit { result += "; hit" }
        if let fwd = self.fwd { result += "; fwd=" + fwd.rawValue }
        if let fwdStatus = self.fwdStatus { result += "; fwd-status=" + String(fwdStatus) }
        if self.stored { result += "; stored" }
        if self.collapsed { result += "; collapsed" }
        if let ttl = self.ttl { result += "; ttl=" + String(ttl) }
        if let detail = self.detail { result += "; detail=" + Self.tokenOrString(detail) }
        return result
    }

    /// An sf-token when `text` is one (RFC 8941 §3.3.4: `( ALPHA / "*" ) *( tchar / ":" / "/" )`),
    /// otherwise an sf-string (§3.3.3) with `"` and `\` escaped and bytes outside printable ASCII
    /// replaced by `?`, since sf-strings cannot carry them.
    public static func tokenOrString(_ text: String) -> String {
        let bytes = Array(text.utf8)
        if let first = bytes.first, Self.isAlpha(first) || first == UInt8(ascii: "*"),
            bytes.dropFirst().allSatisfy({
                DirectiveScanner.isNameByte($0) || $0 == UInt8(ascii: ":") || $0 == UInt8(ascii: "/")
            })
        {
            return text
        }
        var output: [UInt8] = [UInt8(ascii: "\"")]
        for byte in bytes {
            switch byte {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"):
                output.append(UInt8(ascii: "\\"))
                output.append(byte)
            case 0x20...0x7E:
                output.append(byte)
            default:
                output.append(UInt8(ascii: "?"))
            }
        }
        output.append(UInt8(ascii: "\""))
        return String(decoding: output, as: UTF8.self)
    }

    private static func isAlpha(_ byte: UInt8) -> Bool {
        (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")) || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
    }
}
