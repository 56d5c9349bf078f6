/// How an access log line is written: varnishncsa's `-F` format language (NCSA `%` codes), or
/// JSON lines.
///
/// Codes (as varnishncsa documents them): `%b` body bytes (`-` for none), `%D` microseconds
/// taken, `%H` protocol, `%h` client address, `%{X}i` request field X (Host, Referer,
/// User-Agent), `%{X}o` response field X (X-Cache-Status), `%l` `-`, `%m` method, `%q` query
/// string, `%r` request line, `%s` status, `%t` request time (NCSA), `%T` seconds taken, `%U`
/// path, `%u` `-`, `%%`; and `%{Varnish:time_firstbyte}x`, `%{Varnish:vxid}x`,
/// `%{Varnish:hitmiss}x`, `%{Varnish:handling}x`, with Lacquer's own `%{Lacquer:cache}x`
/// (X-Cache-Status), `%{Lacquer:backend}x`, `%{Lacquer:ttfb}x` and `%{Lacquer:time}x`
/// (seconds, 6 decimals). `\t`, `\n` and `\\` are escapes. Unknown codes are an error.
public enum AccessLogFormat: Sendable, Equatable {
    case pattern([Piece])
    case json

    /// NCSA combined followed by Lacquer's fields.
    public static let defaultPattern =
        #"%h %l %u %t "%r" %s %b "%{Referer}i" "%{User-agent}i" cache=%{Lacquer:cache}x ttfb=%{Lacquer:ttfb}x time=%{Lacquer:time}x backend=%{Lacquer:backend}x xid=%{Varnish:vxid}x"#

    // The default parses by construction (the tests parse it).
    public static let combined: AccessLogFormat = (try? AccessLogFormat.parse(defaultPattern)) ?? .json

    public enum Field: Sendable, Equatable {
        case client, dash, time, requestLine, status, bytes, micros, seconds, proto, method, path, query
        case host, referer, userAgent, cache, backend, xid, ttfb, total, hitmiss, handling
    }

    public enum Piece: Sendable, Equatable {
        case literal(String)
        case field(Field)
    }

    /// Why a format string was refused, with the 1-based column of the code.
    public struct ParseError: Error, CustomStringConvertible, Equatable {
        public var column: Int
        public var message: String
        public var description: String { "column \(self.column): \(self.message)" }
    }

    /// `json`, or a format string.
    public static func parse(_ text: String) throws(ParseError) -> AccessLogFormat {
        if text == "json" { return .json }
        var pieces: [Piece] = []
        var literal = ""
        let chars = Array(text)
        var index = 0
        func flush() {
            if !literal.isEmpty { pieces.append(.literal(literal)) }
            literal = ""
        }
        while index < chars.count {
            let char = chars[index]
            if char == "\\", index + 1 < chars.count {
                switch chars[index + 1] {
                case "t": literal += "\t"
                case "n": literal += "\n"
                case "\\": literal += "\\"
                default: literal += "\\" + String(chars[index + 1])
                }
                index += 2
                continue
            }
            guard char == "%" else {
                literal.append(char)
                index += 1
                continue
            }
            let column = index + 1
            guard index + 1 < chars.count else { throw ParseError(column: column, message: "'%' at the end of the format") }
            var argument: String?
            var codeIndex = index + 1
            if chars[codeIndex] == "{" {
                guard let close = chars[codeIndex...].firstIndex(of: "}") else {
                    throw ParseError(column: column, message: "'%{' without a closing '}'")
                }
                argument = String(chars[(codeIndex + 1)..<close])
                codeIndex = close + 1
                guard codeIndex < chars.count else { throw ParseError(column: column, message: "'%{…}' without a code letter after it") }
            }
            let code = chars[codeIndex]
            index = codeIndex + 1
            if code == "%" && argument == nil {
                literal += "%"
                continue
            }
            flush()
            pieces.append(.field(try Self.field(code: code, argument: argument, column: column)))
        }
        flush()
        return .pattern(pieces)
    }

    private static func field(code: Character, argument: String?, column: Int) throws(ParseError) -> Field {
        if let argument {
            switch (code, argument.lowercased()) {
            case ("i", "host"): return .host
            case ("i", "referer"), ("i", "referrer"): return .referer
            case ("i", "user-agent"): return .userAgent
            case ("i", _):
                throw ParseError(column: column, message: "request field '\(argument)' is not logged (Host, Referer and User-Agent are)")
            case ("o", "x-cache-status"): return .cache
            case ("o", _):
                throw ParseError(column: column, message: "response field '\(argument)' is not logged (X-Cache-Status is)")
            case ("x", "varnish:time_firstbyte"), ("x", "lacquer:ttfb"): return .ttfb
            case ("x", "varnish:vxid"), ("x", "lacquer:xid"): return .xid
            case ("x", "varnish:hitmiss"): return .hitmiss
            case ("x", "varnish:handling"): return .handling
            case ("x", "lacquer:cache"): return .cache
            case ("x", "lacquer:backend"): return .backend
            case ("x", "lacquer:time"): return .total
            case ("x", _):
                throw ParseError(column: column, message: "unknown extended variable '\(argument)'")
            default:
                throw ParseError(column: column, message: "'%{\(argument)}\(code)' is not a known code")
            }
        }
        switch code {
        case "b": return .bytes
        case "D": return .micros
        case "H": return .proto
        case "h": return .client
        case "l", "u": return .dash
        case "m": return .method
        case "q": return .query
        case "r": return .requestLine
        case "s": return .status
        case "t": return .time
        case "T": return .seconds
        case "U": return .path
        default: throw ParseError(column: column, message: "'%\(code)' is not a known code")
        }
    }

    /// Appends one line (with its newline) for `record` to `out`, as bytes: the writer
    /// thread's path, which formats every request, so it builds no intermediate strings (the
    /// NCSA time is formatted once a second, `clock` keeps it).
    func append(_ record: AccessRecord, to out: inout [UInt8], clock: inout LogClock) {
        guard case .pattern(let pieces) = self else {
            out.append(contentsOf: Self.jsonLine(record).utf8)
            return
        }
        for piece in pieces {
            switch piece {
            case .literal(let text): out.append(contentsOf: text.utf8)
            case .field(let field): Self.append(field, of: record, to: &out, clock: &clock)
            }
        }
        out.append(0x0A)
    }

    private static func append(_ field: Field, of record: AccessRecord, to out: inout [UInt8], clock: inout LogClock) {
        switch field {
        case .client: out.append(contentsOf: record.client.utf8)
        case .dash: out.append(UInt8(ascii: "-"))
        case .time: out.append(contentsOf: clock.clf(record.time))
        case .requestLine:
            if record.method == "-" {
                out.append(UInt8(ascii: "-"))
            } else {
                LogBytes.escaped(record.method, to: &out)
                out.append(0x20)
                LogBytes.escaped(record.target, to: &out)
                out.append(0x20)
                out.append(contentsOf: record.proto.utf8)
            }
        case .status: LogBytes.integer(record.status, to: &out)
        case .bytes:
            if record.bytes == 0 { out.append(UInt8(ascii: "-")) } else { LogBytes.integer(record.bytes, to: &out) }
        case .micros: LogBytes.integer(Int((record.duration * 1_000_000).rounded()), to: &out)
        case .seconds: LogBytes.integer(Int(record.duration), to: &out)
        case .proto: out.append(contentsOf: record.proto.utf8)
        case .host: LogBytes.escapedOrDash(record.host, to: &out)
        case .referer: LogBytes.escapedOrDash(record.referer, to: &out)
        case .userAgent: LogBytes.escapedOrDash(record.userAgent, to: &out)
        case .cache: out.append(contentsOf: record.cache.utf8)
        case .backend:
            if let backend = record.backend { out.append(contentsOf: backend.utf8) } else { out.append(UInt8(ascii: "-")) }
        case .xid:
            if let xid = record.xid { LogBytes.integer(Int(truncatingIfNeeded: xid), to: &out) } else { out.append(UInt8(ascii: "-")) }
        case .ttfb:
            if record.timeToFirstByte < 0 { out.append(UInt8(ascii: "-")) } else { LogBytes.micros(record.timeToFirstByte, to: &out) }
        case .total: LogBytes.micros(record.duration, to: &out)
        case .method: LogBytes.escaped(record.method, to: &out)
        case .path: LogBytes.escaped(record.path, to: &out)
        case .query: LogBytes.escaped(record.query, to: &out)
        case .hitmiss: out.append(contentsOf: Self.hitOrMiss(record).utf8)
        case .handling: out.append(contentsOf: Self.handling(record).utf8)
        }
    }

    /// One line (with its newline) for `record`, as text (for live tails and tests): the
    /// writer's bytes, decoded.
    public func line(_ record: AccessRecord) -> String {
        var clock = LogClock()
        var out: [UInt8] = []
        out.reserveCapacity(256)
        self.append(record, to: &out, clock: &clock)
        return String(decoding: out, as: UTF8.self)
    }

    /// varnishncsa's `%{Varnish:hitmiss}x`.
    private static func hitOrMiss(_ record: AccessRecord) -> String {
        ["HIT", "STALE", "UPDATING", "REVALIDATED"].contains(record.cache) ? "hit" : "miss"
    }

    /// varnishncsa's `%{Varnish:handling}x`.
    private static func handling(_ record: AccessRecord) -> String {
        switch record.cache {
        case "HIT", "STALE", "UPDATING": "hit"
        case "BYPASS": "pass"
        case "MISS", "EXPIRED", "REVALIDATED": "miss"
        default: record.xid == nil ? "synth" : "pass"
        }
    }

    private static func jsonLine(_ record: AccessRecord) -> String {
        func string(_ value: String?) -> String { value.map(StatsSnapshot.jsonString) ?? "null" }
        var out = "{\"time\":\"\(LogText.isoTime(record.time))\""
        out += ",\"client\":\(string(record.client)),\"method\":\(string(record.method)),\"target\":\(string(record.target))"
        out += ",\"protocol\":\(string(record.proto)),\"status\":\(record.status),\"bytes\":\(record.bytes)"
        out += ",\"cache\":\(string(record.cache))"
        out += ",\"ttfb\":\(record.timeToFirstByte < 0 ? "null" : LogText.fixed(record.timeToFirstByte, digits: 6))"
        out += ",\"duration\":\(LogText.fixed(record.duration, digits: 6))"
        out += ",\"backend\":\(string(record.backend)),\"xid\":\(record.xid.map { String($0) } ?? "null")"
        out += ",\"host\":\(string(record.host)),\"referer\":\(string(record.referer)),\"user_agent\":\(string(record.userAgent))"
        out += ",\"complete\":\(!record.incomplete)}\n"
        return out
    }
}

/// The NCSA time of the last second formatted (the writer thread's; one per writer).
struct LogClock {
    private var second = Int.min
    private var text: [UInt8] = []

    mutating func clf(_ time: Double) -> [UInt8] {
        let second = Int(time.rounded(.down))
        if second != self.second {
            self.second = second
            self.text = Array(LogText.clfTime(time).utf8)
        }
        return self.text
    }
}

/// Byte-level pieces of log lines.
enum LogBytes {
    static func integer(_ value: Int, to out: inout [UInt8]) {
        if value < 0 {
            out.append(UInt8(ascii: "-"))
            return integer(value == Int.min ? Int.max : -value, to: &out)
        }
        if value < 10 {
            out.append(UInt8(ascii: "0") + UInt8(value))
            return
        }
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                     UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var count = 0
        var rest = value
        withUnsafeMutableBytes(of: &digits) { buffer in
            while rest > 0 {
                buffer[count] = UInt8(ascii: "0") + UInt8(rest % 10)
                rest /= 10
                count += 1
            }
            for index in stride(from: count - 1, through: 0, by: -1) { out.append(buffer[index]) }
        }
    }

    /// Seconds with six decimals (`0.012345`), as `LogText.fixed(_, digits: 6)`.
    static func micros(_ seconds: Double, to out: inout [UInt8]) {
        guard seconds.isFinite else { return out.append(UInt8(ascii: "-")) }
        var total = Int((abs(seconds) * 1_000_000).rounded())
        if seconds < 0 && total > 0 { out.append(UInt8(ascii: "-")) }
        integer(total / 1_000_000, to: &out)
        out.append(UInt8(ascii: "."))
        total %= 1_000_000
        var divisor = 100_000
        while divisor > 0 {
            out.append(UInt8(ascii: "0") + UInt8(total / divisor))
            total %= divisor
            divisor /= 10
        }
    }

    /// `text` with quotes, backslashes and control bytes escaped (as nginx's `escape=default`),
    /// so a request cannot forge a log line.
    static func escaped(_ text: String, to out: inout [UInt8]) {
        let copied: Bool? = text.utf8.withContiguousStorageIfAvailable { bytes in
            // The common case: nothing to escape, one copy.
            guard !bytes.contains(where: { $0 < 0x20 || $0 == 0x22 || $0 == 0x5C || $0 >= 0x7F }) else { return false }
            out.append(contentsOf: bytes)
            return true
        }
        if copied == true { return }
        for byte in text.utf8 {
            switch byte {
            case 0x22: out.append(0x5C); out.append(0x22)
            case 0x5C: out.append(0x5C); out.append(0x5C)
            case 0x20..<0x7F: out.append(byte)
            default:
                let hex = Array("0123456789ABCDEF".utf8)
                out.append(0x5C); out.append(UInt8(ascii: "x"))
                out.append(hex[Int(byte >> 4)]); out.append(hex[Int(byte & 0x0F)])
            }
        }
    }

    static func escapedOrDash(_ text: String?, to out: inout [UInt8]) {
        if let text { escaped(text, to: &out) } else { out.append(UInt8(ascii: "-")) }
    }
}
