import NIOHTTP1

/// The directives of a `Cache-Control` field (RFC 9111 §5.2), request and response in one struct.
///
/// One struct serves both directions because the parsing rules are the same (§5.2: `#cache-directive`,
/// `token [ "=" ( token / quoted-string ) ]`) and `Surrogate-Control` reuses them; which fields matter
/// depends on where the value came from, and the deciding code (``Freshness``, ``Storability``)
/// reads only the ones that apply.
///
/// Parsing choices (each one is the conservative reading of the RFC for a shared cache):
/// - Directive names are case-insensitive (§5.2); odd whitespace and empty list elements (`,,`)
///   are tolerated (RFC 9110 §5.6.1 asks recipients to accept empty elements); unknown directives
///   are ignored (§5.2.3).
/// - `max-age` / `s-maxage` with an invalid value (`abc`, `-1`, `1.5`, missing) become `0`:
///   §4.2.1 asks caches to treat an invalid freshness lifetime as stale, so a malformed header is
///   never a free pass to cache.
/// - Delta-seconds above 2147483648 (2^31) are clamped to 2147483648 (§1.2.2).
/// - Duplicates of `max-age` / `s-maxage` conflict (§4.2.1 asks for the response to be treated
///   as stale when directives conflict); we keep the smallest value, which is just as safe without
///   discarding an explicit lifetime that also makes the response storable.
/// - `max-age="60"` is accepted: §5.2 says senders SHOULD NOT quote, and recipients "ought to
///   accept both forms".
/// - `stale-while-revalidate`, `stale-if-error`, `max-stale` and `min-fresh` with an invalid value
///   are ignored (`nil`): they only relax or tighten reuse of stale content, and ignoring a broken
///   relaxation is the safe side. Duplicates keep the smallest relaxation (largest `min-fresh`).
/// - `no-cache` and `private` with a field list (`no-cache="set-cookie, x-a"`) fill
///   ``noCacheFields`` / ``privateFields`` and leave ``noCache`` / ``isPrivate`` false: the
///   qualified forms restrict only the named fields (§5.2.2.4, §5.2.2.7). The token form
///   (`no-cache=foo`) names one field. An empty list (`no-cache=""`) is read as the bare form,
///   since an origin that wrote it plainly wanted *some* restriction.
public struct CacheControl: Sendable, Equatable {
    /// The request's `max-stale` (RFC 9111 §5.2.1.2): any staleness, or at most some seconds.
    public enum MaxStale: Sendable, Equatable {
        case any
        case seconds(Int64)
    }

    /// `max-age` (§5.2.1.1, §5.2.2.1). Invalid values are `0`; duplicates keep the smallest.
    public var maxAge: Int64?
    /// `s-maxage` (§5.2.2.10). Invalid values are `0`; duplicates keep the smallest.
    public var sMaxAge: Int64?
    /// `no-store` (§5.2.1.5, §5.2.2.5).
    public var noStore: Bool
    /// Bare `no-cache` (§5.2.1.4, §5.2.2.4): every reuse needs revalidation.
    public var noCache: Bool
    /// Lowercased field names from `no-cache="a, b"`; empty when bare. Those fields must not be
    /// sent from the cache without revalidation (§5.2.2.4).
    public var noCacheFields: [String]
    /// Bare `private` (§5.2.2.7): a shared cache must not store the response.
    public var isPrivate: Bool
    /// Lowercased field names from `private="a, b"`: a shared cache must not store those fields.
    public var privateFields: [String]
    /// `must-revalidate` (§5.2.2.2).
    public var mustRevalidate: Bool
    /// `proxy-revalidate` (§5.2.2.8): `must-revalidate` for shared caches.
    public var proxyRevalidate: Bool
    /// `public` (§5.2.2.9).
    public var isPublic: Bool
    /// `immutable` (RFC 8246).
    public var immutable: Bool
    /// `no-transform` (§5.2.1.6, §5.2.2.6).
    public var noTransform: Bool
    /// `must-understand` (§5.2.2.3). An addition to the original API.
    public var mustUnderstand: Bool
    /// `stale-while-revalidate` (RFC 5861 §3). Invalid values are ignored.
    public var staleWhileRevalidate: Int64?
    /// `stale-if-error` (RFC 5861 §4). Invalid values are ignored.
    public var staleIfError: Int64?
    /// Request `max-stale` (§5.2.1.2). Bare means any staleness; invalid values are ignored.
    public var maxStale: MaxStale?
    /// Request `min-fresh` (§5.2.1.3). Invalid values are ignored.
    public var minFresh: Int64?
    /// Request `only-if-cached` (§5.2.1.7).
    public var onlyIfCached: Bool

    /// Whether no directive this type knows was present (unknown extensions do not count).
    public var isEmpty: Bool { self == CacheControl() }

    /// The largest delta-seconds value kept; larger ones are clamped to it (RFC 9111 §1.2.2).
    public static let maxDeltaSeconds: Int64 = 2_147_483_648

    /// No directives.
    public init() {
        self.maxAge = nil
        self.sMaxAge = nil
        self.noStore = false
        self.noCache = false
        self.noCacheFields = []
        self.isPrivate = false
        self.privateFields = []
        self.mustRevalidate = false
        self.proxyRevalidate = false
        self.isPublic = false
        self.immutable = false
        self.noTransform = false
        self.mustUnderstand = false
        self.staleWhileRevalidate = nil
        self.staleIfError = nil
        self.maxStale = nil
        self.minFresh = nil
        self.onlyIfCached = false
    }

    /// Parses all field lines of `name` (case-insensitive) in `headers`, combined as one list
    /// (RFC 9110 §5.3: several lines of a list field are one comma-separated list).
    /// - Parameters:
    ///   - headers: request or response header fields.
    ///   - name: the field to read; `surrogate-control` uses the same syntax.
    public init(headers: HTTPHeaders, name: String = "cache-control") {
        self.init()
        // `headers[name]` keeps each line whole; `headers[canonicalForm:]` would split inside
        // quoted strings such as `no-cache="a, b"`.
        for line in headers[name] {
            self.merge(line)
        }
    }

    /// Parses one field value.
    public init(parsing value: String) {
        self.init()
        self.merge(value)
    }

    /// Adds the directives of one more field line to `self`, resolving duplicates as documented.
    mutating func merge(_ value: String) {
        var value = value
        value.withUTF8 { bytes in
            var scanner = DirectiveScanner(bytes: bytes)
            while let directive = scanner.next() {
                self.apply(directive)
            }
        }
    }

    private mutating func apply(_ directive: DirectiveScanner.Directive) {
        switch directive.name {
        case "max-age":
            self.maxAge = Self.smaller(self.maxAge, directive.deltaSeconds ?? 0)
        case "s-maxage":
            self.sMaxAge = Self.smaller(self.sMaxAge, directive.deltaSeconds ?? 0)
        case "no-store":
            self.noStore = true
        case "no-cache":
            let fields = directive.fieldNames
            if fields.isEmpty { self.noCache = true } else { self.noCacheFields.append(contentsOf: fields) }
        case "private":
            let fields = directive.fieldNames
            if fields.isEmpty { self.isPrivate = true } else { self.privateFields.append(contentsOf: fields) }
        case "must-revalidate":
            self.mustRevalidate = true
        case "proxy-revalidate":
            self.proxyRevalidate = true
        case "public":
            self.isPublic = true
        case "immutable":
            self.immutable = true
        case "no-transform":
            self.noTransform = true
        case "must-understand":
            self.mustUnderstand = true
        case "only-if-cached":
            self.onlyIfCached = true
        case "stale-while-revalidate":
            if let seconds = directive.deltaSeconds {
                self.staleWhileRevalidate = Self.smaller(self.staleWhileRevalidate, seconds)
            }
        case "stale-if-error":
            if let seconds = directive.deltaSeconds {
                self.staleIfError = Self.smaller(self.staleIfError, seconds)
            }
        case "min-fresh":
            if let seconds = directive.deltaSeconds {
                self.minFresh = max(self.minFresh ?? 0, seconds)
            }
        case "max-stale":
            // Bare `max-stale` accepts any staleness (§5.2.1.2); a duplicate with a limit wins.
            let new: MaxStale
            if directive.value == nil, !directive.malformed {
                new = .any
            } else if let seconds = directive.deltaSeconds {
                new = .seconds(seconds)
            } else {
                return
            }
            switch (self.maxStale, new) {
            case (nil, _), (.any?, _):
                self.maxStale = new
            case (.seconds(let old)?, .seconds(let seconds)):
                self.maxStale = .seconds(min(old, seconds))
            case (.seconds?, .any):
                break
            }
        default:
            // Unknown extension directives are ignored (§5.2.3).
            break
        }
    }

    private static func smaller(_ old: Int64?, _ new: Int64) -> Int64 {
        old.map { min($0, new) } ?? new
    }

    /// `delta-seconds = 1*DIGIT` (§1.2.2), clamped to 2^31; `nil` for anything else.
    static func deltaSeconds(_ text: String?) -> Int64? {
        guard let text, !text.isEmpty else { return nil }
        var value: Int64 = 0
        for byte in text.utf8 {
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
            value = min(value * 10 + Int64(byte - UInt8(ascii: "0")), Self.maxDeltaSeconds)
        }
        return value
    }

}

extension DirectiveScanner.Directive {
    /// The value as delta-seconds, `nil` if absent, malformed or not `1*DIGIT`.
    var deltaSeconds: Int64? {
        self.malformed ? nil : CacheControl.deltaSeconds(self.value)
    }

    /// Lowercased, trimmed, non-empty field names of a `no-cache` / `private` argument; empty
    /// (the bare, stricter form) when the argument is absent, empty or malformed.
    var fieldNames: [String] {
        guard let value = self.value, !self.malformed else { return [] }
        return value.split(separator: ",").compactMap { part in
            let name = part.trimmingOWS()
            return name.isEmpty ? nil : name.lowercased()
        }
    }
}

/// Splits a `#cache-directive` list into lowercased names and unquoted values, honouring
/// quoted strings (a comma inside quotes does not end a directive) and backslash escapes.
struct DirectiveScanner {
    struct Directive {
        var name: String
        /// `nil` when there was no `=`; the unescaped contents when quoted.
        var value: String?
        /// Junk followed the name or the quoted value (`max-age="5"x`, `no-cache junk`): the
        /// value must not be trusted, but the directive itself still counts.
        var malformed: Bool
    }

    let bytes: UnsafeBufferPointer<UInt8>
    var index = 0

    init(bytes: UnsafeBufferPointer<UInt8>) {
        self.bytes = bytes
    }

    mutating func next() -> Directive? {
        while self.index < self.bytes.count {
            // Skip whitespace and empty list elements.
            while self.index < self.bytes.count, Self.isSeparator(self.bytes[self.index]) { self.index += 1 }
            guard self.index < self.bytes.count else { return nil }

            let nameStart = self.index
            while self.index < self.bytes.count, Self.isNameByte(self.bytes[self.index]) { self.index += 1 }
            let name = String(decoding: self.bytes[nameStart..<self.index], as: UTF8.self).lowercased()
            self.skipWhitespace()

            guard !name.isEmpty else {
                // Not a token (e.g. a stray `=` or quote): drop this element entirely.
                self.skipElement()
                continue
            }
            guard self.index < self.bytes.count, self.bytes[self.index] == UInt8(ascii: "=") else {
                // `no-store junk`: the name is clear, so keep the directive (dropping a
                // restriction because of trailing junk would be the unsafe reading).
                let clean = self.index >= self.bytes.count || self.bytes[self.index] == UInt8(ascii: ",")
                self.skipElement()
                return Directive(name: name, value: nil, malformed: !clean)
            }
            self.index += 1
            self.skipWhitespace()
            let value: String
            var wellFormed = true
            if self.index < self.bytes.count, self.bytes[self.index] == UInt8(ascii: "\"") {
                value = self.quotedString()
                self.skipWhitespace()
                wellFormed = self.index >= self.bytes.count || self.bytes[self.index] == UInt8(ascii: ",")
            } else {
                let valueStart = self.index
                while self.index < self.bytes.count, self.bytes[self.index] != UInt8(ascii: ",") { self.index += 1 }
                value = String(String(decoding: self.bytes[valueStart..<self.index], as: UTF8.self)[...].trimmingOWS())
            }
            self.skipElement()
            return Directive(name: name, value: value, malformed: !wellFormed)
        }
        return nil
    }

    /// Reads a quoted-string starting at the opening quote; an unterminated one runs to the end.
    private mutating func quotedString() -> String {
        var result: [UInt8] = []
        self.index += 1
        while self.index < self.bytes.count {
            let byte = self.bytes[self.index]
            self.index += 1
            if byte == UInt8(ascii: "\"") { return String(decoding: result, as: UTF8.self) }
            if byte == UInt8(ascii: "\\"), self.index < self.bytes.count {
                result.append(self.bytes[self.index])
                self.index += 1
            } else {
                result.append(byte)
            }
        }
        return String(decoding: result, as: UTF8.self)
    }

    /// Moves past the rest of the current element and its comma, respecting quotes.
    private mutating func skipElement() {
        var inQuotes = false
        while self.index < self.bytes.count {
            let byte = self.bytes[self.index]
            self.index += 1
            if inQuotes {
                if byte == UInt8(ascii: "\\") {
                    self.index += 1
                } else if byte == UInt8(ascii: "\"") {
                    inQuotes = false
                }
            } else if byte == UInt8(ascii: "\"") {
                inQuotes = true
            } else if byte == UInt8(ascii: ",") {
                return
            }
        }
    }

    private mutating func skipWhitespace() {
        while self.index < self.bytes.count, self.bytes[self.index] == UInt8(ascii: " ")
            || self.bytes[self.index] == UInt8(ascii: "\t")
        {
            self.index += 1
        }
    }

    private static func isSeparator(_ byte: UInt8) -> Bool {
        byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") || byte == UInt8(ascii: ",")
    }

    /// `tchar` (RFC 9110 §5.6.2).
    static func isNameByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        default:
            return "!#$%&'*+-.^_`|~".utf8.contains(byte)
        }
    }
}
