/// A strict reading of one HTTP/1.1 request head straight from the bytes read, for
/// `HitFastLane`. It decides three things: where the head ends, whether the request certainly
/// has no body (so the decoder may be handed exactly these bytes and stays at a message
/// boundary), and whether it is the plain GET or HEAD that a stored object may answer without a
/// flow. Anything it does not fully understand is `unsure`: the decoder then takes the
/// connection's bytes from there on, and answers as it always did.
///
/// What makes a request plain: method GET or HEAD, `HTTP/1.1`, an origin-form target of
/// visible ASCII without `#`, exactly one Host already in normal form, at most one
/// Accept-Encoding (the lane evaluates `Vary: Accept-Encoding` and gzip itself), `Connection`
/// absent or `keep-alive`, the limits of `RequestValidation` respected, and every other field one
/// whose presence does not change what a stored response looks like (an allow-list: no Range,
/// validators, Cache-Control, Pragma, Cookie or Authorization; the lane leaves any Vary on the
/// allowed fields to the flow).
package struct FastRequestHead {
    /// The head's length in bytes, up to and including the blank line.
    package var length: Int
    package var isHead: Bool
    package var target: Range<Int>
    package var host: Range<Int>
    /// The value of the request's one Accept-Encoding field, if it has one.
    package var acceptEncoding: Range<Int>?
    /// User-Agent and Referer, for the access log.
    package var userAgent: Range<Int>?
    package var referer: Range<Int>?

    package enum Outcome {
        /// No blank line yet, and nothing so far that the strict reading refuses.
        case needMore
        /// Not understood: the decoder takes over the connection's bytes.
        case unsure
        /// A complete request without a body that is not plain: the decoder takes these bytes.
        case other(length: Int)
        case plain(FastRequestHead)
    }

    private static let cr: UInt8 = 0x0D
    private static let lf: UInt8 = 0x0A
    private static let sp: UInt8 = 0x20
    private static let htab: UInt8 = 0x09

    /// Fields a plain request may carry besides Host, Accept-Encoding and Connection (lowercase).
    /// None of them changes the stored response the lane writes (a Vary naming one sends the
    /// request to the flow).
    private static let harmlessFields: [StaticString] = [
        "user-agent", "accept", "accept-language", "referer", "dnt",
        "upgrade-insecure-requests", "sec-fetch-site", "sec-fetch-mode", "sec-fetch-dest", "sec-fetch-user",
        "sec-ch-ua", "sec-ch-ua-mobile", "sec-ch-ua-platform", "priority",
    ]

    /// Whether a field named `name` (lowercase, as HTTP/2 carries it) may be on a plain request
    /// besides Host, Accept-Encoding and Connection: the same allow-list the HTTP/1.1 reading uses.
    package static func isHarmlessField(_ name: String) -> Bool {
        var name = name
        return name.withUTF8 { bytes in
            Self.harmlessFields.contains { field in
                UnsafeRawBufferPointer(start: field.utf8Start, count: field.utf8CodeUnitCount).elementsEqual(bytes)
            }
        }
    }

    /// Reads the head at the start of `bytes`.
    package static func classify(_ bytes: UnsafeRawBufferPointer, limits: Limits) -> Outcome {
        let count = bytes.count
        // Past this without a blank line, the decoder gets the bytes (and answers 414 or 431).
        let maxHeadBytes = limits.requestLineBytes + limits.headerTotalBytes + 4 * limits.headerFieldCount + 64
        var incomplete: Outcome { count > maxHeadBytes ? .unsure : .needMore }

        // request-line = method SP request-target SP HTTP-version CRLF (RFC 9112 §3)
        var index = 0
        while index < count, Self.isTokenByte(bytes[index]) { index += 1 }
        if index == count { return incomplete }
        guard index > 0, bytes[index] == Self.sp else { return .unsure }
        let methodEnd = index
        if Self.equals(bytes, 0..<methodEnd, "CONNECT") { return .unsure }  // the decoder tunnels it
        let isGet = Self.equals(bytes, 0..<methodEnd, "GET")
        let isHead = !isGet && Self.equals(bytes, 0..<methodEnd, "HEAD")
        index += 1
        let targetStart = index
        var targetHasFragment = false
        while index < count, bytes[index] > Self.sp, bytes[index] < 0x7F {
            if bytes[index] == UInt8(ascii: "#") { targetHasFragment = true }
            index += 1
        }
        if index == count { return incomplete }
        guard index > targetStart, bytes[index] == Self.sp else { return .unsure }
        let targetEnd = index
        index += 1
        let version: StaticString = "HTTP/1."
        for (offset, expected) in UnsafeRawBufferPointer(start: version.utf8Start, count: version.utf8CodeUnitCount).enumerated() {
            if index + offset == count { return incomplete }
            guard bytes[index + offset] == expected else { return .unsure }
        }
        index += version.utf8CodeUnitCount
        if index + 2 >= count { return Self.plausibleTail(bytes, from: index) ? incomplete : .unsure }
        let minor = bytes[index]
        guard minor == UInt8(ascii: "0") || minor == UInt8(ascii: "1"), bytes[index + 1] == Self.cr,
            bytes[index + 2] == Self.lf
        else { return .unsure }
        index += 3

        var plain = (isGet || isHead) && minor == UInt8(ascii: "1")
        plain = plain && bytes[targetStart] == UInt8(ascii: "/") && !targetHasFragment
            && targetEnd - targetStart <= limits.requestLineBytes && methodEnd <= limits.methodBytes
        var host = 0..<0
        var hostCount = 0
        var acceptEncoding: Range<Int>?
        var acceptEncodingCount = 0
        var userAgent: Range<Int>?
        var referer: Range<Int>?
        var fieldCount = 0
        var totalBytes = 0
        // field-line = field-name ":" OWS field-value OWS CRLF (RFC 9112 §5)
        while true {
            if index == count { return incomplete }
            if bytes[index] == Self.cr {
                if index + 1 == count { return incomplete }
                guard bytes[index + 1] == Self.lf else { return .unsure }
                index += 2
                break
            }
            let nameStart = index
            while index < count, Self.isTokenByte(bytes[index]) { index += 1 }
            if index == count { return incomplete }
            // An empty name, whitespace before the colon, or obs-fold: the decoder decides.
            guard index > nameStart, bytes[index] == UInt8(ascii: ":") else { return .unsure }
            let name = nameStart..<index
            index += 1
            while index < count, bytes[index] == Self.sp || bytes[index] == Self.htab { index += 1 }
            let valueStart = index
            var valueEnd = index
            while index < count, bytes[index] != Self.cr {
                let byte = bytes[index]
                guard byte == Self.htab || (byte >= Self.sp && byte != 0x7F) else { return .unsure }
                if byte != Self.sp && byte != Self.htab { valueEnd = index + 1 }
                index += 1
            }
            if index + 1 >= count { return incomplete }
            guard bytes[index + 1] == Self.lf else { return .unsure }
            index += 2
            let value = valueStart..<valueEnd

            if Self.equalsLowercase(bytes, name, "content-length") || Self.equalsLowercase(bytes, name, "transfer-encoding")
                || Self.equalsLowercase(bytes, name, "upgrade")
            {
                return .unsure  // a body or a protocol switch: framing stays the decoder's
            }
            fieldCount += 1
            let fieldBytes = name.count + value.count + 2
            totalBytes += fieldBytes
            guard plain else { continue }
            if fieldBytes > limits.headerFieldBytes {
                plain = false
            } else if Self.equalsLowercase(bytes, name, "host") {
                hostCount += 1
                host = value
                // The decoder keeps trailing whitespace in the value, and the flow then refuses
                // the Host: such a request is the flow's.
                if valueEnd != index - 2 { plain = false }
            } else if Self.equalsLowercase(bytes, name, "accept-encoding") {
                acceptEncodingCount += 1
                acceptEncoding = value
            } else if Self.equalsLowercase(bytes, name, "user-agent") {
                userAgent = value
            } else if Self.equalsLowercase(bytes, name, "referer") {
                referer = value
            } else if Self.equalsLowercase(bytes, name, "connection") {
                plain = Self.equalsLowercase(bytes, value, "keep-alive")
            } else if !Self.harmlessFields.contains(where: { Self.equalsLowercase(bytes, name, $0) }) {
                plain = false
            }
        }
        plain = plain && hostCount == 1 && acceptEncodingCount <= 1 && fieldCount <= limits.headerFieldCount && totalBytes <= limits.headerTotalBytes
            && RequestValidation.isNormalHost(UnsafeRawBufferPointer(rebasing: bytes[host]))
        guard plain else { return .other(length: index) }
        return .plain(
            FastRequestHead(
                length: index, isHead: isHead, target: targetStart..<targetEnd, host: host, acceptEncoding: acceptEncoding,
                userAgent: userAgent, referer: referer))
    }

    /// Whether the bytes after `HTTP/1.` so far can still become `0` or `1` and CRLF.
    private static func plausibleTail(_ bytes: UnsafeRawBufferPointer, from start: Int) -> Bool {
        for index in start..<bytes.count {
            let byte = bytes[index]
            switch index - start {
            case 0: if byte != UInt8(ascii: "0") && byte != UInt8(ascii: "1") { return false }
            case 1: if byte != Self.cr { return false }
            default: if byte != Self.lf { return false }
            }
        }
        return true
    }

    /// tchar (RFC 9110 §5.6.2).
    static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"), UInt8(ascii: "'"),
            UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "^"), UInt8(ascii: "_"),
            UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
            return true
        default:
            return false
        }
    }

    private static func equals(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>, _ text: StaticString) -> Bool {
        guard range.count == text.utf8CodeUnitCount else { return false }
        let expected = text.utf8Start
        for offset in 0..<range.count where bytes[range.lowerBound + offset] != expected[offset] {
            return false
        }
        return true
    }

    /// ASCII case-insensitive comparison with `lowercase` (letters, digits and `-` only).
    private static func equalsLowercase(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>, _ lowercase: StaticString) -> Bool {
        guard range.count == lowercase.utf8CodeUnitCount else { return false }
        let expected = lowercase.utf8Start
        for offset in 0..<range.count {
            let byte = bytes[range.lowerBound + offset]
            let want = expected[offset]
            if byte == want { continue }
            guard want >= UInt8(ascii: "a"), want <= UInt8(ascii: "z"), byte == want - 0x20 else { return false }
        }
        return true
    }
}
