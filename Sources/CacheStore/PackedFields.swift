import CachePolicy
import Glibc

/// How a stored object keeps its header fields: packed, and written out as `name: value\r\n`
/// lines when delivered. An origin's fields repeat the same few names, and its dates are
/// 29 bytes of text for four bytes of information; a 1 KiB object's fields (nginx's six: 197
/// bytes as lines) pack into 81 bytes. The idea is HPACK's static table (RFC 7541 Appendix A),
/// without its state: each field stands alone.
///
/// A field is a tag byte, then what the tag says:
///
/// ```
/// tag bits 0-6: 0         the name follows: a length (LEB128) and its bytes
///               1...63    `names[code - 1]`, spelled as there
///               65...127  `names[code - 65]`, in lowercase
/// tag bit 7:    clear     the value follows: a length (LEB128) and its bytes
///               set       the value is an IMF-fixdate: four bytes, seconds since the epoch
///                         (little-endian), written out as `HTTPDate.writeFixdate` does
/// ```
///
/// A name is packed as a code only when its bytes are exactly the table's spelling or its
/// lowercase form, and a value as a date only when writing the date out again gives exactly its
/// bytes: what a delivery writes is always byte for byte what was stored. CR, LF and NUL
/// become SP when a field is packed (RFC 9110 §5.5), so a stored field can never split a
/// response.
enum PackedFields {
    /// Names common in responses (Date first). Codes are positions + 1; at most 63.
    static let names: [String] = [
        "Date", "Last-Modified", "Expires", "Content-Type", "Cache-Control", "ETag", "Server", "Vary",
        "Content-Encoding", "Content-Language", "Content-Disposition", "Content-Location", "Content-Range",
        "Location", "Link", "Set-Cookie", "Pragma", "Accept-Ranges", "Age", "Via", "X-Cache-Status", "Cache-Status",
        "Access-Control-Allow-Origin", "Access-Control-Allow-Credentials", "Access-Control-Allow-Methods",
        "Access-Control-Allow-Headers", "Access-Control-Expose-Headers", "Access-Control-Max-Age",
        "Strict-Transport-Security", "X-Content-Type-Options", "X-Frame-Options", "X-XSS-Protection",
        "Referrer-Policy", "Content-Security-Policy", "Permissions-Policy", "Cross-Origin-Resource-Policy",
        "Cross-Origin-Opener-Policy", "Cross-Origin-Embedder-Policy", "Timing-Allow-Origin", "Alt-Svc",
        "X-Powered-By", "Surrogate-Control", "Surrogate-Key", "Cache-Tag", "xkey", "X-Request-Id", "Retry-After",
        "WWW-Authenticate", "Allow", "Content-MD5", "X-Robots-Tag", "Server-Timing", "CDN-Cache-Control", "Trailer",
    ]

    private static let dateFlag: UInt8 = 0x80
    private static let lowercaseCodes: UInt8 = 64

    /// Every code's name bytes (canonical spellings, then their lowercase forms) end to end, and
    /// where each code's name starts and ends in them: `spans[code]` (code 0 and codes past the
    /// table are empty).
    private static let table: (bytes: [UInt8], spans: [Span]) = Self.buildTable()

    private struct Span {
        let start: Int32
        let end: Int32
    }

    private static func buildTable() -> (bytes: [UInt8], spans: [Span]) {
        precondition(Self.names.count < Int(Self.lowercaseCodes), "PackedFields: more names than codes")
        var bytes: [UInt8] = []
        var spans = Array(repeating: Span(start: 0, end: 0), count: 128)
        for (index, name) in Self.names.enumerated() {
            for (code, spelling) in [(index + 1, name), (index + 1 + Int(Self.lowercaseCodes), name.lowercased())] {
                let start = bytes.count
                bytes.append(contentsOf: spelling.utf8)
                spans[code] = Span(start: Int32(start), end: Int32(bytes.count))
            }
        }
        return (bytes, spans)
    }

    /// The table, read through pointers for the length of `body`.
    @inline(__always)
    private static func withTable<R>(_ body: (Table) -> R) -> R {
        let (bytes, spans) = Self.table
        return bytes.withUnsafeBufferPointer { bytes in
            spans.withUnsafeBufferPointer { spans in body(Table(bytes: bytes, spans: spans)) }
        }
    }

    private struct Table {
        let bytes: UnsafeBufferPointer<UInt8>
        let spans: UnsafeBufferPointer<Span>

        @inline(__always)
        func name(_ code: Int) -> UnsafeBufferPointer<UInt8> {
            let span = self.spans[code]
            return UnsafeBufferPointer(rebasing: self.bytes[Int(span.start)..<Int(span.end)])
        }
    }

    /// How one field is packed: the tag, and the date when the tag says the value is one.
    struct Plan {
        let tag: UInt8
        let date: UInt32
        /// The bytes `pack` writes.
        let packedSize: Int
        /// The bytes the field takes as a line (`name: value\r\n`).
        let lineSize: Int
    }

    /// How to pack a field. `packDates` false keeps every value as its bytes: for fields that
    /// are written out once and dropped (a disk hit the memory tier will not keep), where
    /// reading a date costs more than its bytes.
    static func plan(name: UnsafeBufferPointer<UInt8>, value: UnsafeBufferPointer<UInt8>, packDates: Bool = true) -> Plan {
        var tag = Self.code(of: name)
        var size = 1 + (tag == 0 ? Self.lengthSize(name.count) + name.count : 0)
        var date: UInt32 = 0
        if packDates, let seconds = Self.packableDate(value) {
            tag |= Self.dateFlag
            date = seconds
            size += 4
        } else {
            size += Self.lengthSize(value.count) + value.count
        }
        return Plan(tag: tag, date: date, packedSize: size, lineSize: name.count + value.count + 4)
    }

    /// Writes the field as `plan` says at `buffer[at...]`; advances `at`.
    static func pack(
        name: UnsafeBufferPointer<UInt8>, value: UnsafeBufferPointer<UInt8>, plan: Plan,
        into buffer: UnsafeMutableBufferPointer<UInt8>, at: inout Int
    ) {
        buffer[at] = plan.tag
        at += 1
        if plan.tag & ~Self.dateFlag == 0 {
            Self.writeLength(name.count, into: buffer, at: &at)
            Self.writeSanitised(name, into: buffer, at: &at)
        }
        if plan.tag & Self.dateFlag != 0 {
            for shift in stride(from: 0, to: 32, by: 8) {
                buffer[at] = UInt8(truncatingIfNeeded: plan.date >> UInt32(shift))
                at += 1
            }
        } else {
            Self.writeLength(value.count, into: buffer, at: &at)
            Self.writeSanitised(value, into: buffer, at: &at)
        }
    }

    /// Writes a length as LEB128 (seven bits a byte, low first).
    static func writeLength(_ length: Int, into buffer: UnsafeMutableBufferPointer<UInt8>, at: inout Int) {
        var rest = length
        while rest >= 0x80 {
            buffer[at] = UInt8(truncatingIfNeeded: rest) | 0x80
            rest >>= 7
            at += 1
        }
        buffer[at] = UInt8(rest)
        at += 1
    }

    /// The bytes `writeLength` takes for `length`.
    static func lengthSize(_ length: Int) -> Int {
        var size = 1
        var rest = length
        while rest >= 0x80 {
            rest >>= 7
            size += 1
        }
        return size
    }

    /// Reads a length written by `writeLength` at `bytes[at...]`; advances `at`.
    @inline(__always)
    static func readLength(_ bytes: UnsafeBufferPointer<UInt8>, at: inout Int) -> Int {
        var length = 0
        var shift = 0
        while true {
            let byte = bytes[at]
            at += 1
            length |= Int(byte & 0x7F) << shift
            if byte < 0x80 { return length }
            shift += 7
        }
    }

    private static func writeSanitised(_ bytes: UnsafeBufferPointer<UInt8>, into buffer: UnsafeMutableBufferPointer<UInt8>, at: inout Int) {
        for byte in bytes {
            buffer[at] = (byte == 0x0D || byte == 0x0A || byte == 0x00) ? 0x20 : byte
            at += 1
        }
    }

    /// The table code for `name` (0: not in the table, spelled otherwise): the candidates its
    /// bucket names, compared byte for byte.
    private static func code(of name: UnsafeBufferPointer<UInt8>) -> UInt8 {
        guard let base = name.baseAddress, name.count > 0 else { return 0 }
        let bucket = Self.bucket(name)
        return Self.withTable { table in
            for slot in 0..<Self.bucketSlots {
                let code = Int(Self.tableBuckets[bucket * Self.bucketSlots + slot])
                guard code != 0 else { return 0 }
                if table.name(code).count == name.count {
                    if memcmp(table.name(code).baseAddress!, base, name.count) == 0 { return UInt8(code) }
                    let lowercase = code + Int(Self.lowercaseCodes)
                    if memcmp(table.name(lowercase).baseAddress!, base, name.count) == 0 { return UInt8(lowercase) }
                }
            }
            return 0
        }
    }

    private static let bucketCount = 64
    private static let bucketSlots = 4

    /// A name's bucket: its length and its first and last letters, case folded, so a name and
    /// its lowercase form share one.
    @inline(__always)
    private static func bucket(_ name: UnsafeBufferPointer<UInt8>) -> Int {
        let first = Int(name[0] | 0x20)
        let last = Int(name[name.count - 1] | 0x20)
        return (name.count &* 7 &+ first &* 3 &+ last) & (Self.bucketCount - 1)
    }

    /// For each bucket, the canonical codes of the names in it (0 ends the list).
    private static let tableBuckets: [UInt8] = {
        var buckets = Array(repeating: UInt8(0), count: Self.bucketCount * Self.bucketSlots)
        for (index, name) in Self.names.enumerated() {
            let bucket = Array(name.utf8).withUnsafeBufferPointer { Self.bucket($0) }
            guard let slot = (0..<Self.bucketSlots).first(where: { buckets[bucket * Self.bucketSlots + $0] == 0 }) else {
                preconditionFailure("PackedFields: bucket \(bucket) is full at \(name)")
            }
            buckets[bucket * Self.bucketSlots + slot] = UInt8(index + 1)
        }
        return buckets
    }()

    /// The seconds of `value` when it is an IMF-fixdate that `HTTPDate.writeFixdate` writes
    /// back byte for byte, between 1970 and 2106 (four bytes).
    private static func packableDate(_ value: UnsafeBufferPointer<UInt8>) -> UInt32? {
        guard value.count == HTTPDate.fixdateLength, let seconds = HTTPDate.parse(bytes: value),
            let packed = UInt32(exactly: seconds)
        else { return nil }
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: HTTPDate.fixdateLength) { written in
            HTTPDate.writeFixdate(Int64(packed), to: UnsafeMutableRawPointer(written.baseAddress!))
            return memcmp(written.baseAddress!, value.baseAddress!, HTTPDate.fixdateLength) == 0 ? packed : nil
        }
    }

    // MARK: - Reading

    /// Writes the fields packed in `bytes[start..<end]` as lines into `target`, which has room
    /// for them (their line sizes summed); returns the bytes written.
    static func writeLines(
        _ bytes: UnsafeBufferPointer<UInt8>, from start: Int, to end: Int, into target: UnsafeMutableRawBufferPointer
    ) -> Int {
        guard let out = target.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return 0 }
        var written = 0
        Self.withTable { table in
            var at = start
            while at < end {
                written += Self.withField(bytes, at: &at, table: table) { name, value in
                    var line = 0
                    if let base = name.baseAddress { (out + written).update(from: base, count: name.count) }
                    line += name.count
                    out[written + line] = UInt8(ascii: ":")
                    out[written + line + 1] = UInt8(ascii: " ")
                    line += 2
                    switch value {
                    case .bytes(let value):
                        if let base = value.baseAddress { (out + written + line).update(from: base, count: value.count) }
                        line += value.count
                    case .date(let seconds):
                        HTTPDate.writeFixdate(Int64(seconds), to: UnsafeMutableRawPointer(out + written + line))
                        line += HTTPDate.fixdateLength
                    }
                    out[written + line] = 0x0D
                    out[written + line + 1] = 0x0A
                    return line + 2
                }
            }
        }
        return written
    }

    /// Calls `body` with each field packed in `bytes[start..<end]`: its name and its value's bytes.
    static func forEachField(
        _ bytes: UnsafeBufferPointer<UInt8>, from start: Int, to end: Int,
        _ body: (UnsafeBufferPointer<UInt8>, UnsafeBufferPointer<UInt8>) -> Void
    ) {
        Self.withTable { table in
            var at = start
            while at < end {
                _ = Self.withField(bytes, at: &at, table: table) { name, value in
                    switch value {
                    case .bytes(let value):
                        body(name, value)
                    case .date(let seconds):
                        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: HTTPDate.fixdateLength) { written in
                            HTTPDate.writeFixdate(Int64(seconds), to: UnsafeMutableRawPointer(written.baseAddress!))
                            body(name, UnsafeBufferPointer(written))
                        }
                    }
                    return 0
                }
            }
        }
    }

    private enum Value {
        case bytes(UnsafeBufferPointer<UInt8>)
        case date(UInt32)
    }

    /// Reads the field at `bytes[at...]`, calls `body` with it, advances `at` past it.
    @inline(__always)
    private static func withField(
        _ bytes: UnsafeBufferPointer<UInt8>, at: inout Int, table: Table,
        _ body: (UnsafeBufferPointer<UInt8>, Value) -> Int
    ) -> Int {
        let tag = bytes[at]
        at += 1
        let code = Int(tag & ~Self.dateFlag)
        let name: UnsafeBufferPointer<UInt8>
        if code == 0 {
            let length = Self.readLength(bytes, at: &at)
            name = UnsafeBufferPointer(rebasing: bytes[at..<(at + length)])
            at += length
        } else {
            name = table.name(code)
        }
        if tag & Self.dateFlag != 0 {
            var seconds: UInt32 = 0
            for index in 0..<4 { seconds |= UInt32(bytes[at + index]) << UInt32(index * 8) }
            at += 4
            return body(name, .date(seconds))
        }
        let length = Self.readLength(bytes, at: &at)
        defer { at += length }
        return body(name, .bytes(UnsafeBufferPointer(rebasing: bytes[at..<(at + length)])))
    }
}
