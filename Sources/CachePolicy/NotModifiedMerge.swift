import NIOHTTP1

/// Freshening a stored response with a 304 (RFC 9111 §3.2, §4.3.4).
///
/// A 304 carries the current metadata of the representation the cache already has; the cache
/// keeps its body and takes the new header fields, so `Cache-Control`, `Expires`, `Date`, `ETag`
/// and the rest follow the origin. Fields that describe the stored *bytes* are kept: a 304 has no
/// body, so its framing fields (or a mistaken `Content-Length: 0`) must never replace the stored
/// ones, or the stored body would be delivered with the wrong length (RFC 9110 §15.4.5,
/// RFC 9111 §3.2 excludes fields the cache does not store).
public enum NotModifiedMerge {
    /// Names (lowercased) whose stored values are kept whatever the 304 says.
    public static let preservedFields: Set<String> = [
        "content-length", "content-encoding", "transfer-encoding", "content-range",
    ]

    /// Whether a 304 may update the stored response (RFC 9111 §4.3.4): a strong ETag in the 304
    /// must equal the stored strong ETag; a weak one must match it weakly; with no ETag, a
    /// Last-Modified in both must be the same. A 304 that selects nothing updates nothing.
    public static func selects(stored: HTTPHeaders, notModified: HTTPHeaders) -> Bool {
        if let tagLine = notModified["etag"].first {
            let tag = Substring(tagLine).trimmingOWS()
            guard let storedLine = stored["etag"].first else { return false }
            let storedTag = Substring(storedLine).trimmingOWS()
            let isWeak = tag.hasPrefix("W/")
            if !isWeak {
                return !storedTag.hasPrefix("W/") && storedTag == tag
            }
            return Self.opaque(tag) == Self.opaque(storedTag)
        }
        if let modified = notModified["last-modified"].first,
            let storedModified = stored["last-modified"].first,
            let new = HTTPDate.parse(modified), let old = HTTPDate.parse(storedModified)
        {
            return new == old
        }
        return true
    }

    private static func opaque(_ tag: Substring) -> Substring {
        tag.hasPrefix("W/") ? tag.dropFirst(2) : tag
    }

    /// Stored headers updated with those of a 304: every field in the 304 replaces all stored
    /// lines of that name (keeping the 304's order when it has several), except
    /// ``preservedFields`` and hop-by-hop fields (``HopByHop``, including those the 304's
    /// `Connection` names), which keep their stored values.
    /// - Parameters:
    ///   - stored: the stored response's header fields.
    ///   - notModified: the 304's header fields.
    public static func merge(stored: HTTPHeaders, notModified: HTTPHeaders) -> HTTPHeaders {
        var skipped = Self.preservedFields.union(HopByHop.fieldNames)
        for line in notModified["connection"] {
            for token in line.split(separator: ",") {
                skipped.insert(token.trimmingOWS().lowercased())
            }
        }
        var result = stored
        var replaced: Set<String> = []
        for (name, value) in notModified {
            let lowered = name.lowercased()
            guard !skipped.contains(lowered) else { continue }
            if replaced.insert(lowered).inserted {
                result.remove(name: lowered)
            }
            result.add(name: name, value: value)
        }
        return result
    }
}
