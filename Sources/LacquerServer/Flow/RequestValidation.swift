import NIOHTTP1

/// A request rejected before it reaches the flow: the status to answer and why.
struct RequestRejection: Error, Equatable {
    var status: Int
    var reason: String
    var counter: Counter
}

/// Strict request checks (HARDENING.md §1, §2, §7), run on every request head before `vcl_recv`.
///
/// The HTTP/1 parser has already rejected malformed syntax, conflicting Content-Length /
/// Transfer-Encoding and bad chunking (400 + close); these checks add the limits that sit
/// below common origin limits (so a request we accept is one the origin accepts: the HHO
/// defence), a single valid Host, and origin-form targets only (we are not an open proxy).
enum RequestValidation {
    /// Validates `head` and returns the normalised host (lowercased, default port stripped).
    /// `http2`: the head came from an HTTP/2 stream (NIO's codec made it from the pseudo-header
    /// fields; `:authority` became Host).
    static func validate(_ head: HTTPRequestHead, limits: Limits, http2: Bool = false) throws(RequestRejection) -> String {
        let methodName = head.method.rawValue
        if methodName.utf8.count > limits.methodBytes {
            throw RequestRejection(status: 501, reason: "Method too long", counter: .clientReq501)
        }
        if http2 ? head.version != HTTPVersion(major: 2, minor: 0) : head.version.major != 1 {
            throw RequestRejection(status: 505, reason: "HTTP version not supported", counter: .clientReq400)
        }
        let uri = head.uri
        if uri.utf8.count > limits.requestLineBytes {
            throw RequestRejection(status: 414, reason: "Request-target too long", counter: .clientReq414)
        }
        if head.headers.count > limits.headerFieldCount {
            throw RequestRejection(status: 431, reason: "Too many header fields", counter: .clientReq431)
        }
        var total = 0
        for (name, value) in head.headers {
            let size = name.utf8.count + value.utf8.count + 2
            if size > limits.headerFieldBytes {
                throw RequestRejection(status: 431, reason: "Header field \(name) too large", counter: .clientReq431)
            }
            total += size
        }
        if total > limits.headerTotalBytes {
            throw RequestRejection(status: 431, reason: "Request header section too large", counter: .clientReq431)
        }
        guard uri.utf8.first == UInt8(ascii: "/") else {
            if uri.lowercased().hasPrefix("http://") || uri.lowercased().hasPrefix("https://") {
                throw RequestRejection(
                    status: 400, reason: "Absolute-form request-target not accepted (not a forward proxy)",
                    counter: .clientReqAbsoluteForm)
            }
            throw RequestRejection(status: 400, reason: "Request-target must be origin-form", counter: .clientReq400)
        }
        for byte in uri.utf8 where byte <= 0x20 || byte >= 0x7F || byte == UInt8(ascii: "#") {
            throw RequestRejection(status: 400, reason: "Invalid character in request-target", counter: .clientReq400)
        }
        try Self.checkFraming(head)
        let hosts = head.headers["host"]
        if hosts.count > 1 {
            throw RequestRejection(status: 400, reason: "Multiple Host header fields", counter: .clientReq400)
        }
        guard let host = hosts.first else {
            if head.version.minor >= 1 {
                throw RequestRejection(status: 400, reason: "Missing Host header field", counter: .clientReq400)
            }
            return ""
        }
        guard let normalised = normaliseHost(host) else {
            throw RequestRejection(status: 400, reason: "Invalid Host header field", counter: .clientReq400)
        }
        return normalised
    }

    /// The framing rules the HTTP/1 parser leaves to us (RFC 9112 §6, RFC 9110 §7.6.1), each a 400
    /// (411 for a length HTTP/1.0 cannot do without), as Varnish answers them. One pass over the
    /// fields, no copies.
    private static func checkFraming(_ head: HTTPRequestHead) throws(RequestRejection) {
        var hasTransferEncoding = false
        var hasLength = false
        var hasNonZeroLength = false
        for (name, value) in head.headers {
            if Self.equalsIgnoringCase(name, "content-length") {
                hasLength = true
                if value != "0" { hasNonZeroLength = true }
            } else if Self.equalsIgnoringCase(name, "transfer-encoding") {
                hasTransferEncoding = true
            } else if Self.equalsIgnoringCase(name, "connection") {
                for token in value.utf8.split(separator: UInt8(ascii: ",")) {
                    let trimmed = Self.trimmed(token)
                    if Self.isFramingField(trimmed, underscore: false) {
                        // VSV00010: `Connection: Host` would strip Host on the way to the origin.
                        throw RequestRejection(
                            status: 400, reason: "Connection header field names \(String(decoding: trimmed, as: UTF8.self))",
                            counter: .clientReqBadFraming)
                    }
                }
            } else if name.utf8.contains(UInt8(ascii: "_")), Self.isFramingField(name.utf8[...], underscore: true) {
                // An origin that maps `_` to `-` (CGI does) would see a second length or host.
                throw RequestRejection(
                    status: 400, reason: "Header field name \(name) is not accepted", counter: .clientReqBadFraming)
            }
        }
        if head.version.minor == 0, hasTransferEncoding {
            // RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 message means faulty framing.
            throw RequestRejection(
                status: 400, reason: "Transfer-Encoding in an HTTP/1.0 request", counter: .clientReqBadFraming)
        }
        if head.method == .HEAD, hasTransferEncoding || hasNonZeroLength {
            throw RequestRejection(status: 400, reason: "HEAD request with a body", counter: .clientReqBadFraming)
        }
        if head.version.minor == 0, !hasLength, head.method == .POST || head.method == .PUT {
            // HTTP/1.0 has no chunked coding: without a length, the body's end cannot be known.
            throw RequestRejection(status: 411, reason: "Length Required", counter: .clientReq411)
        }
    }

    /// Fields that decide where a request goes and how its body is framed: a client may not make
    /// them hop-by-hop, nor smuggle them under a name an origin might read as theirs.
    private static let framingFields: [[UInt8]] = ["content-length", "transfer-encoding", "host"].map { Array($0.utf8) }

    /// Whether `bytes` name a framing field, ignoring case (and reading `_` as `-` when asked).
    private static func isFramingField(_ bytes: Substring.UTF8View, underscore: Bool) -> Bool {
        Self.framingFields.contains { field in
            field.count == bytes.count
                && zip(field, bytes).allSatisfy { expected, byte in
                    let lower = byte >= 0x41 && byte <= 0x5A ? byte | 0x20 : byte
                    return lower == expected || (underscore && byte == UInt8(ascii: "_") && expected == UInt8(ascii: "-"))
                }
        }
    }

    private static func trimmed(_ bytes: Substring.UTF8View) -> Substring.UTF8View {
        var result = bytes
        while let first = result.first, first == 0x20 || first == 0x09 { result = result.dropFirst() }
        while let last = result.last, last == 0x20 || last == 0x09 { result = result.dropLast() }
        return result
    }

    /// `name` equals the lowercase `lowercase`, ignoring ASCII case, without copying.
    private static func equalsIgnoringCase(_ name: String, _ lowercase: StaticString) -> Bool {
        let utf8 = name.utf8
        guard utf8.count == lowercase.utf8CodeUnitCount else { return false }
        return lowercase.withUTF8Buffer { expected in
            zip(utf8, expected).allSatisfy { byte, want in
                (byte >= 0x41 && byte <= 0x5A ? byte | 0x20 : byte) == want
            }
        }
    }

    /// Lowercases, strips `:80`, rejects anything that is not `reg-name / IPv4 / [IPv6]` + optional port.
    static func normaliseHost(_ value: String) -> String? {
        if Self.isNormalHost(value) { return value }
        let host = value.lowercased()
        if host.isEmpty { return nil }
        var name = Substring(host)
        var port: Substring?
        if host.hasPrefix("[") {
            guard let close = host.firstIndex(of: "]") else { return nil }
            name = host[...close]
            let rest = host[host.index(after: close)...]
            if !rest.isEmpty {
                guard rest.hasPrefix(":") else { return nil }
                port = rest.dropFirst()
            }
            for c in name.utf8.dropFirst().dropLast() {
                let ok = (c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66) || c == 0x3A || c == 0x2E
                if !ok { return nil }
            }
        } else {
            if let colon = host.firstIndex(of: ":") {
                name = host[..<colon]
                port = host[host.index(after: colon)...]
            }
            if name.isEmpty { return nil }
            for c in name.utf8 where !Self.isLowercaseHostByte(c) {
                return nil
            }
        }
        if let port {
            if port.isEmpty || port.count > 5 || !port.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) { return nil }
            if port == "80" { return String(name) }
            return String(name) + ":" + port
        }
        return String(name)
    }

    /// Whether `value` is already a normal reg-name host: lowercase name characters, then at
    /// most a port of 1 to 5 digits other than 80 (the common case, taken without copying).
    static func isNormalHost(_ value: String) -> Bool {
        Self.isNormalHost(value.utf8)
    }

    /// `isNormalHost` over the bytes of a field value.
    static func isNormalHost<Bytes: Sequence<UInt8>>(_ value: Bytes) -> Bool {
        var nameLength = 0
        var portLength = 0
        var inPort = false
        var port: UInt32 = 0
        for c in value {
            if inPort {
                guard c >= 0x30 && c <= 0x39 else { return false }
                portLength += 1
                port = port &* 10 &+ UInt32(c - 0x30)
            } else if c == 0x3A {
                inPort = true
            } else {
                guard Self.isLowercaseHostByte(c) else { return false }
                nameLength += 1
            }
        }
        guard nameLength > 0 else { return false }
        if inPort {
            return portLength >= 1 && portLength <= 5 && !(portLength == 2 && port == 80)
        }
        return true
    }

    /// A byte of a lowercased reg-name host: digit, lowercase letter, `-`, `.`, `_` or `~`.
    static func isLowercaseHostByte(_ c: UInt8) -> Bool {
        (c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x7A) || c == 0x2D || c == 0x2E || c == 0x5F || c == 0x7E
    }
}
