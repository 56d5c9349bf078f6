import NIOHTTP1

/// An entity tag (RFC 9110 §8.8.3): `[ "W/" ] DQUOTE *etagc DQUOTE`.
///
/// Tags are compared, never interpreted, so the opaque part is kept with its quotes exactly as
/// received; that is also the form to send back in `ETag` or `If-None-Match`.
public struct EntityTag: Sendable, Equatable {
    /// `W/` was present: the tag only promises semantic equivalence (§8.8.1).
    public var isWeak: Bool
    /// The opaque-tag, including the quotes.
    public var opaque: String

    public init(isWeak: Bool, opaque: String) {
        self.isWeak = isWeak
        self.opaque = opaque
    }

    /// Parses one entity tag, surrounding whitespace allowed; `nil` if malformed. `W/` is
    /// case-sensitive (`%s"W/"`), and etagc excludes DQUOTE, controls and space (§8.8.3).
    public static func parse(_ text: Substring) -> EntityTag? {
        let trimmed = text.trimmingOWS()
        var bytes = trimmed.utf8[...]
        var isWeak = false
        if bytes.starts(with: "W/".utf8) {
            isWeak = true
            bytes = bytes.dropFirst(2)
        }
        guard bytes.count >= 2, bytes.first == UInt8(ascii: "\""), bytes.last == UInt8(ascii: "\"") else {
            return nil
        }
        guard bytes.dropFirst().dropLast().allSatisfy(Self.isETagCharacter) else { return nil }
        return EntityTag(isWeak: isWeak, opaque: String(decoding: bytes, as: UTF8.self))
    }

    /// Parses `If-Match` / `If-None-Match` style lists (§13.1.1, §13.1.2): `nil` for `*`,
    /// otherwise the valid tags in order. Malformed members are skipped, which can only make a
    /// condition match less often, i.e. the cache sends a full response instead of a 304.
    public static func parseList(_ fieldValue: String) -> [EntityTag]? {
        var tags: [EntityTag] = []
        let bytes = Array(fieldValue.utf8)
        var index = 0
        while index < bytes.count {
            while index < bytes.count, bytes[index] == UInt8(ascii: " ") || bytes[index] == UInt8(ascii: "\t")
                || bytes[index] == UInt8(ascii: ",")
            {
                index += 1
            }
            guard index < bytes.count else { break }
            let start = index
            // A quote may follow `W/`; inside quotes a comma is part of the tag (etagc allows it).
            if bytes[index] == UInt8(ascii: "W"), index + 1 < bytes.count, bytes[index + 1] == UInt8(ascii: "/") {
                index += 2
            }
            if index < bytes.count, bytes[index] == UInt8(ascii: "\"") {
                index += 1
                while index < bytes.count, bytes[index] != UInt8(ascii: "\"") { index += 1 }
                if index < bytes.count { index += 1 }
            }
            while index < bytes.count, bytes[index] != UInt8(ascii: ",") { index += 1 }
            let member = String(decoding: bytes[start..<index], as: UTF8.self)
            if member[...].trimmingOWS() == "*" { return nil }
            if let tag = EntityTag.parse(member[...]) { tags.append(tag) }
        }
        return tags
    }

    /// Strong comparison (§8.8.3.2): both strong and the opaque-tags identical.
    public func strongMatch(_ other: EntityTag) -> Bool {
        !self.isWeak && !other.isWeak && self.opaque == other.opaque
    }

    /// Weak comparison (§8.8.3.2): the opaque-tags identical, weakness ignored.
    public func weakMatch(_ other: EntityTag) -> Bool {
        self.opaque == other.opaque
    }

    /// `etagc = %x21 / %x23-7E / obs-text`.
    private static func isETagCharacter(_ byte: UInt8) -> Bool {
        byte == 0x21 || (byte >= 0x23 && byte <= 0x7E) || byte >= 0x80
    }
}

/// Conditional requests a cache answers itself (RFC 9110 §13, RFC 9111 §4.3.2).
public enum ConditionalRequest {
    /// Whether a cache should answer 304 instead of the stored 200 (RFC 9110 §13.2.2).
    ///
    /// Only GET and HEAD get a 304 (for other methods a failed `If-None-Match` is a 412, which is
    /// the origin's business). `If-None-Match` takes precedence: with it present,
    /// `If-Modified-Since` is ignored (§13.1.3). It matches by weak comparison (§13.1.2), `*`
    /// matches any stored representation. Otherwise `If-Modified-Since` is compared with the
    /// stored `Last-Modified`, or `Date` without one (RFC 9111 §4.3.2); an invalid date, or more
    /// than one `If-Modified-Since` line, is ignored (§13.1.3).
    /// - Parameters:
    ///   - method: the request method.
    ///   - requestHeaders: the request's header fields.
    ///   - storedHeaders: the stored response's header fields.
    public static func isNotModified(method: String, requestHeaders: HTTPHeaders, storedHeaders: HTTPHeaders) -> Bool {
        guard method == "GET" || method == "HEAD" else { return false }

        let ifNoneMatch = requestHeaders["if-none-match"]
        if !ifNoneMatch.isEmpty {
            guard let tags = EntityTag.parseList(ifNoneMatch.joined(separator: ",")) else { return true }
            guard let storedText = storedHeaders.first(name: "etag"),
                let stored = EntityTag.parse(storedText[...])
            else { return false }
            return tags.contains { $0.weakMatch(stored) }
        }

        let ifModifiedSince = requestHeaders["if-modified-since"]
        guard ifModifiedSince.count == 1, let since = HTTPDate.parse(ifModifiedSince[0]) else { return false }
        guard let validatorText = storedHeaders.first(name: "last-modified") ?? storedHeaders.first(name: "date"),
            let validator = HTTPDate.parse(validatorText)
        else { return false }
        return validator <= since
    }

    /// If-Range (RFC 9110 §13.1.5): whether the range may be served from the stored response.
    ///
    /// An entity tag must match the stored `ETag` by strong comparison (a weak tag never
    /// matches). A date must equal the stored `Last-Modified`, and that date must be a strong
    /// validator: at least one second before the stored `Date` (§8.8.2.2). Anything else is
    /// false, so the client gets the whole representation, which is always safe.
    /// - Parameters:
    ///   - value: the `If-Range` field value.
    ///   - storedHeaders: the stored response's header fields.
    public static func ifRangeMatches(_ value: String, storedHeaders: HTTPHeaders) -> Bool {
        let trimmed = value[...].trimmingOWS()
        if trimmed.hasPrefix("\"") || trimmed.hasPrefix("W/") {
            guard let tag = EntityTag.parse(trimmed), let storedText = storedHeaders.first(name: "etag"),
                let stored = EntityTag.parse(storedText[...])
            else { return false }
            return tag.strongMatch(stored)
        }
        guard let date = HTTPDate.parse(trimmed), let lastModifiedText = storedHeaders.first(name: "last-modified"),
            let lastModified = HTTPDate.parse(lastModifiedText), date == lastModified
        else { return false }
        if let dateText = storedHeaders.first(name: "date"), let responseDate = HTTPDate.parse(dateText) {
            return responseDate - lastModified >= 1
        }
        return true
    }
}
