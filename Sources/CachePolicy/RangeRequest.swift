import NIOHTTP1

/// What to send for a GET that may carry `Range` (RFC 9110 §14.2), decided from the stored response.
public enum RangeDecision: Equatable, Sendable {
    /// 200 with the whole representation: no usable `Range`, or one we choose to ignore.
    case full
    /// 206 with `Content-Range: bytes first-last/length` and that slice of the body.
    case single(ClosedRange<Int>)
    /// 206 `multipart/byteranges` with these slices, ascending and disjoint (RFC 9110 §14.6).
    case multiple([ClosedRange<Int>])
    /// 416 with `Content-Range: bytes */length` (RFC 9110 §15.5.17).
    case unsatisfiable
}

/// Answers byte-range requests from a stored, complete response (RFC 9110 §14).
///
/// The cache stores whole 200 responses only, and slices them on delivery. Every rule below errs
/// towards the full 200, which is always a correct answer to a range request (§14.2: a server
/// MAY ignore `Range`). HARDENING.md §11 adds the defence against range amplification: a request
/// for many, overlapping or out-of-order ranges costs the client a few bytes and us a large
/// multipart body, so such requests get the plain 200 instead.
///
/// Rules, in order:
/// 1. only GET (§14.2: "GET is the only method for which range handling is defined"), only a
///    stored 200, only with a `Range` field; otherwise ``RangeDecision/full``;
/// 2. `If-Range` that does not match the stored response (§13.1.5, strong comparison, see
///    ``ConditionalRequest/ifRangeMatches(_:storedHeaders:)``): the range is ignored, full;
/// 3. a unit other than `bytes` (compared case-insensitively, §14.1), any syntax error, an
///    `int-range` whose last-pos is below its first-pos (§14.1.1: invalid), a number that does
///    not fit in `Int`, or more than ``maximumRanges`` range-specs: the field is ignored, full;
/// 4. each range-spec is resolved against the length (§14.1.2): `first-last` with `last` clamped to
///    `length - 1`, `first-` to the end, `-N` the last N bytes (the whole body when N > length).
///    A spec is unsatisfiable when `first >= length` or it is `-0` (§14.1.1);
/// 5. no satisfiable spec: ``RangeDecision/unsatisfiable``. Unsatisfiable specs next to
///    satisfiable ones are dropped (§14.2);
/// 6. one satisfiable range: ``RangeDecision/single(_:)``; several that are ascending and do not
///    overlap: ``RangeDecision/multiple(_:)``; overlapping or descending: full (§14.2 allows
///    ignoring such requests, HARDENING.md §11 asks us to).
///
/// An empty representation (length 0) has no byte to point at: `-N` with N > 0 is satisfiable by
/// the RFC's wording (§14.1.1) but selects nothing, and `Content-Range` cannot express an empty
/// range, so such a request gets the (empty) full response; anything else is unsatisfiable.
public enum RangeRequest {
    /// The most range-specs a request may list before we ignore the field.
    public static let maximumRanges = 16

    /// Decides how to answer a request from a stored response.
    /// - Parameters:
    ///   - rangeHeader: the request's `Range` field value, `nil` when absent.
    ///   - ifRange: the request's `If-Range` field value, `nil` when absent.
    ///   - method: the request method (case-sensitive, RFC 9110 §9.1).
    ///   - storedStatus: the stored response's status code.
    ///   - storedHeaders: the stored response's header fields (`ETag`, `Last-Modified`, `Date`).
    ///   - length: the length of the stored body in bytes.
    public static func evaluate(
        rangeHeader: String?,
        ifRange: String?,
        method: String,
        storedStatus: Int,
        storedHeaders: HTTPHeaders,
        length: Int
    ) -> RangeDecision {
        guard method == "GET", storedStatus == 200, let rangeHeader, length >= 0 else { return .full }
        if let ifRange, !ConditionalRequest.ifRangeMatches(ifRange, storedHeaders: storedHeaders) {
            return .full
        }
        guard let specs = Self.parse(rangeHeader) else { return .full }

        if length == 0 {
            // Nothing to slice: see the type's documentation.
            let selectsNothing = specs.contains { if case .suffix(let count) = $0 { count > 0 } else { false } }
            return selectsNothing ? .full : .unsatisfiable
        }

        let ranges = specs.compactMap { $0.resolved(length: length) }
        guard let first = ranges.first else { return .unsatisfiable }
        if ranges.count == 1 { return .single(first) }
        for (previous, next) in zip(ranges, ranges.dropFirst()) where next.lowerBound <= previous.upperBound {
            // Overlapping or descending: the amplification HARDENING.md §11 defends against.
            return .full
        }
        return .multiple(ranges)
    }

    /// `Content-Range` of a 206 part (RFC 9110 §14.4): `bytes first-last/length`.
    public static func contentRange(_ range: ClosedRange<Int>, length: Int) -> String {
        "bytes \(range.lowerBound)-\(range.upperBound)/\(length)"
    }

    /// The lowest first-byte position a `Range` value asks for, when every range names its first
    /// byte (no suffix range); nil otherwise or when the value is not a valid bytes range.
    public static func lowestFirstPosition(_ value: String) -> Int? {
        guard let specs = Self.parse(value) else { return nil }
        var lowest: Int?
        for spec in specs {
            guard case .from(let first, _) = spec else { return nil }
            lowest = min(lowest ?? first, first)
        }
        return lowest
    }

    /// A 206's `Content-Range: bytes first-last/length` (RFC 9110 §14.4), or nil when the value
    /// is anything else (another unit, `*` for the length, last before first or past the length).
    public static func parseContentRange(_ value: String?) -> (range: ClosedRange<Int>, length: Int)? {
        guard let value else { return nil }
        let bytes = Array(value.utf8)
        guard bytes.count > 6, bytes[0..<6].elementsEqual("bytes ".utf8) else { return nil }
        let spec = bytes[6...]
        guard let dash = spec.firstIndex(of: UInt8(ascii: "-")), let slash = spec.firstIndex(of: UInt8(ascii: "/")), dash < slash,
            let first = Self.number(spec[spec.startIndex..<dash]), let last = Self.number(spec[(dash + 1)..<slash]),
            let length = Self.number(spec[(slash + 1)...]), first <= last, last < length
        else { return nil }
        return (first...last, length)
    }

    /// `Content-Range` of a 416 (RFC 9110 §14.4, §15.5.17): `bytes */length`.
    public static func unsatisfiedContentRange(length: Int) -> String {
        "bytes */\(length)"
    }

    /// One `range-spec` of a `bytes` ranges-specifier (RFC 9110 §14.1.1).
    enum Spec: Equatable {
        /// `first-pos "-" [ last-pos ]`; `last` is `nil` for "to the end".
        case from(first: Int, last: Int?)
        /// `"-" suffix-length`: the last `count` bytes.
        case suffix(count: Int)

        /// The byte positions selected from a body of `length > 0` bytes, `nil` when unsatisfiable.
        func resolved(length: Int) -> ClosedRange<Int>? {
            switch self {
            case .from(let first, let last):
                guard first < length else { return nil }
                return first...min(last ?? (length - 1), length - 1)
            case .suffix(let count):
                guard count > 0 else { return nil }
                // `count` may exceed `length`: then the whole body (§14.1.2), no subtraction overflow.
                return (count >= length ? 0 : length - count)...(length - 1)
            }
        }
    }

    /// Parses `ranges-specifier = range-unit "=" range-set` (RFC 9110 §14.1). `nil` means "ignore
    /// the field": another unit, a syntax error, an invalid spec, an overflowing number, no spec,
    /// or more than ``maximumRanges`` specs. Empty list elements and OWS around commas are
    /// accepted (§5.6.1); no whitespace is allowed anywhere else.
    static func parse(_ value: String) -> [Spec]? {
        let bytes = Array(value.utf8)
        guard let equals = bytes.firstIndex(of: UInt8(ascii: "=")) else { return nil }
        let unit = bytes[..<equals]
        guard unit.count == 5, String(decoding: unit, as: UTF8.self).lowercased() == "bytes" else { return nil }

        var specs: [Spec] = []
        for element in bytes[(equals + 1)...].split(separator: UInt8(ascii: ","), omittingEmptySubsequences: false) {
            var element = element[...]
            while let first = element.first, first == UInt8(ascii: " ") || first == UInt8(ascii: "\t") {
                element.removeFirst()
            }
            while let last = element.last, last == UInt8(ascii: " ") || last == UInt8(ascii: "\t") {
                element.removeLast()
            }
            if element.isEmpty { continue }
            guard specs.count < Self.maximumRanges, let spec = Self.parseSpec(element) else { return nil }
            specs.append(spec)
        }
        return specs.isEmpty ? nil : specs
    }

    /// `int-range / suffix-range`; `nil` on any error, including `last-pos < first-pos`.
    private static func parseSpec(_ element: ArraySlice<UInt8>) -> Spec? {
        guard let dash = element.firstIndex(of: UInt8(ascii: "-")) else { return nil }
        let firstDigits = element[..<dash]
        let lastDigits = element[(dash + 1)...]
        if firstDigits.isEmpty {
            guard let count = Self.number(lastDigits) else { return nil }
            return .suffix(count: count)
        }
        guard let first = Self.number(firstDigits) else { return nil }
        if lastDigits.isEmpty { return .from(first: first, last: nil) }
        guard let last = Self.number(lastDigits), last >= first else { return nil }
        return .from(first: first, last: last)
    }

    /// `1*DIGIT` as an `Int`, `nil` when empty, not all digits, or too large (checked arithmetic).
    static func number(_ digits: ArraySlice<UInt8>) -> Int? {
        guard !digits.isEmpty else { return nil }
        var value = 0
        for byte in digits {
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
            let (times10, overflow1) = value.multipliedReportingOverflow(by: 10)
            let (sum, overflow2) = times10.addingReportingOverflow(Int(byte - UInt8(ascii: "0")))
            guard !overflow1, !overflow2 else { return nil }
            value = sum
        }
        return value
    }
}

/// The framing of a `multipart/byteranges` body (RFC 9110 §14.6, RFC 2046 §5.1.1), as strings,
/// so the server can compute `Content-Length` before writing and then stream the parts.
///
/// The body is, for each range, ``partHeader(boundary:contentType:range:length:)`` followed by
/// the range's bytes, then ``closing(boundary:)``. Every delimiter starts with CRLF; for the first
/// part that CRLF ends an empty preamble (RFC 2046 §5.1.1), for the others it is the CRLF that
/// belongs to the delimiter, so no part needs to know whether it is the first.
public enum Multipart {
    /// A boundary that will not occur in a body by accident: `lacquer-` and 32 hex digits mixed
    /// from `seed` (SplitMix64). 40 characters, all `bchars` (RFC 2046: at most 70). Pass a
    /// random seed; the same seed gives the same boundary, which tests rely on.
    public static func boundary(seed: UInt64) -> String {
        var state = seed
        let high = Self.splitMix(&state)
        let low = Self.splitMix(&state)
        return "lacquer-" + Self.hex(high) + Self.hex(low)
    }

    /// The response's `Content-Type`: `multipart/byteranges; boundary=…` (RFC 9110 §14.6).
    public static func contentType(boundary: String) -> String {
        "multipart/byteranges; boundary=\(boundary)"
    }

    /// The delimiter and header section that precede one part's bytes: CRLF `--boundary` CRLF,
    /// `Content-Type` (when the representation has one), `Content-Range`, and an empty line.
    /// - Parameters:
    ///   - boundary: the boundary from ``boundary(seed:)``.
    ///   - contentType: the stored representation's `Content-Type`, `nil` when it has none.
    ///   - range: the bytes this part carries.
    ///   - length: the complete representation's length.
    public static func partHeader(boundary: String, contentType: String?, range: ClosedRange<Int>, length: Int)
        -> String
    {
        var header = "\r\n--\(boundary)\r\n"
        if let contentType { header += "Content-Type: \(contentType)\r\n" }
        header += "Content-Range: \(RangeRequest.contentRange(range, length: length))\r\n\r\n"
        return header
    }

    /// The close-delimiter that ends the body: CRLF `--boundary--` CRLF.
    public static func closing(boundary: String) -> String {
        "\r\n--\(boundary)--\r\n"
    }

    /// The exact byte count of the whole multipart body, for `Content-Length`. Saturates at
    /// `Int.max` instead of trapping (it cannot get near that for ranges of a real body).
    public static func totalLength(boundary: String, contentType: String?, ranges: [ClosedRange<Int>], length: Int)
        -> Int
    {
        var total = closing(boundary: boundary).utf8.count
        for range in ranges {
            let header = partHeader(boundary: boundary, contentType: contentType, range: range, length: length)
            total = Self.saturatingAdd(total, header.utf8.count)
            let (span, overflow) = range.upperBound.subtractingReportingOverflow(range.lowerBound)
            total = overflow ? Int.max : Self.saturatingAdd(total, Self.saturatingAdd(span, 1))
        }
        return total
    }

    private static func saturatingAdd(_ a: Int, _ b: Int) -> Int {
        let (sum, overflow) = a.addingReportingOverflow(b)
        return overflow ? Int.max : sum
    }

    private static func splitMix(_ state: inout UInt64) -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    private static func hex(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }
}
