import CachePolicy
import LacquerTesting
import NIOCore
import NIOHTTP1
import Testing

@testable import CacheStore

private func stored(_ headers: HTTPHeaders, status: Int = 200) -> StoredObject {
    StoredObject(
        key: CacheKey(host: "example.test", target: "/p"), variant: "", varyNames: [], status: status, reason: "OK",
        headers: headers, body: ByteBuffer(string: "body"), requestTime: 0, responseTime: 0, origin: 0, ttl: 60,
        grace: 0, keep: 0, mustRevalidate: false)
}

/// What a plain delivery writes for `object`'s plain fields.
private func plainLines(_ object: StoredObject) -> String {
    var buffer = ByteBuffer()
    object.writePlainFields(into: &buffer)
    #expect(buffer.readableBytes == object.plainFieldsLength)
    return String(buffer: buffer)
}

@Suite("PackedFields")
struct PackedFieldsTests {
    /// nginx 1.22's fields for a static file, less the hop-by-hop Connection the fetch drops
    /// (Content-Length and Accept-Ranges are not stored).
    static let nginx = HTTPHeaders([
        ("Server", "nginx/1.22.1"), ("Date", "Fri, 04 Dec 2026 00:19:21 GMT"), ("Content-Type", "application/octet-stream"),
        ("Content-Length", "1024"), ("Last-Modified", "Fri, 04 Dec 2026 00:19:20 GMT"),
        ("ETag", "\"6a1b2c3d-400\""), ("Cache-Control", "max-age=86400"), ("Accept-Ranges", "bytes"),
    ])

    @Test("an origin's usual fields take under half their size as lines, and are written back byte for byte")
    func nginxFields() {
        let object = stored(Self.nginx)
        let lines =
            "Server: nginx/1.22.1\r\nDate: Fri, 04 Dec 2026 00:19:21 GMT\r\nContent-Type: application/octet-stream\r\n"
            + "Last-Modified: Fri, 04 Dec 2026 00:19:20 GMT\r\nETag: \"6a1b2c3d-400\"\r\n"
            + "Cache-Control: max-age=86400\r\n"
        #expect(plainLines(object) == lines)
        // Lines' size (2 bytes), Server 14, Date 5, Content-Type 26, Last-Modified 5, ETag 16,
        // Cache-Control 15: 83 bytes for 197.
        #expect(lines.utf8.count == 197)
        #expect(Int(object.plainEnd) == 83, "packed: \(object.plainEnd) bytes for \(lines.utf8.count) of lines")
        #expect(object.headers == HTTPHeaders(Self.nginx.filter { $0.name != "Content-Length" && $0.name != "Accept-Ranges" }))
    }

    @Test("a date is packed only when it is written back exactly; any other stays as it came")
    func datesExactOrKept() {
        let kept = [
            "sun, 06 Nov 1994 08:49:37 GMT",  // day name in lowercase
            "Mon, 06 Nov 1994 08:49:37 GMT",  // the wrong day name
            "Sun, 06 Nov 1994 08:49:60 GMT",  // a leap second
            "Sun, 06 Nov 1994 08:49:37 gmt",
            " Sun, 06 Nov 1994 08:49:37 GMT",
            "Wed, 31 Dec 1969 23:59:59 GMT",  // before the epoch
            "Sun, 07 Feb 2106 06:28:16 GMT",  // past four bytes of seconds
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "0",
        ]
        let packed = ["Sun, 06 Nov 1994 08:49:37 GMT", "Thu, 01 Jan 1970 00:00:00 GMT", "Sun, 07 Feb 2106 06:28:15 GMT"]
        for value in kept + packed {
            let object = stored(HTTPHeaders([("Expires", value)]))
            #expect(plainLines(object) == "Expires: \(value)\r\n")
            #expect(object.headers["Expires"] == [value])
            let size = Int(object.plainEnd) - 1  // less the lines' size
            if packed.contains(value) {
                #expect(size == 5, "\(value): \(size) bytes")
            } else {
                #expect(size == 2 + value.utf8.count, "\(value): \(size) bytes")
            }
        }
    }

    @Test("names are packed in the table's spelling or in lowercase; any other spelling is kept")
    func nameSpellings() {
        for (name, size) in [("Content-Type", 1), ("content-type", 1), ("CONTENT-TYPE", 14), ("Content-type", 14), ("X-Own", 7)] {
            let object = stored(HTTPHeaders([(name, "v")]))
            #expect(plainLines(object) == "\(name): v\r\n")
            #expect(object.headers.first?.name == name)
            #expect(Int(object.plainEnd) - 1 == size + 2, "\(name)")
        }
    }

    @Test("every code of the table names one field; a packed date that is not one of the table's names also packs")
    func tableAndLiteralDates() {
        #expect(PackedFields.names.count < 64)
        #expect(Set(PackedFields.names.map { $0.lowercased() }).count == PackedFields.names.count)
        var headers = HTTPHeaders()
        for name in PackedFields.names where !["Via", "Cache-Status", "X-Cache-Status", "Accept-Ranges"].contains(name) {
            headers.add(name: name, value: "v-\(name)")
            headers.add(name: name.lowercased(), value: "w")
        }
        headers.add(name: "X-Stamp", value: "Tue, 24 Nov 2026 20:00:00 GMT")
        let object = stored(headers)
        #expect(object.headers == headers)
        #expect(plainLines(object) == headers.map { "\($0.name): \($0.value)\r\n" }.joined())
    }

    @Test("seeded fields of every kind come back as they were stored, as lines and as a list")
    func seededRoundTrip() {
        var random = SeededRandom(seed: SeededRandom.seed(fallback: 0xFAC7_0A11))
        print("PackedFields.seededRoundTrip: seed \(random.seed)")
        let names = PackedFields.names + PackedFields.names.map { $0.uppercased() } + ["X-Own", "a", String(repeating: "N", count: 300)]
        for round in 0..<400 {
            var headers = HTTPHeaders()
            for _ in 0..<Int(random.next() % 12) {
                let name = names[Int(random.next() % UInt64(names.count))]
                let value: String
                switch random.next() % 4 {
                case 0:
                    value = HTTPDate.format(Int64(random.next() % 8_000_000_000) - 1_000_000_000)
                case 1:
                    value = String(repeating: "v", count: Int(random.next() % 400))
                case 2:
                    value = ["", "gzip", "\u{fc}", "Tue, 24 Nov 2026 20:00:00 GMT", "tue, 24 Nov 2026 20:00:00 GMT"][Int(random.next() % 5)]
                default:
                    value = String(decoding: (0..<Int(random.next() % 40)).map { _ in UInt8(0x20 + random.next() % 95) }, as: UTF8.self)
                }
                headers.add(name: name, value: value)
            }
            let object = stored(headers, status: 404)  // keeps Accept-Ranges among what it stores
            let expected = headers.filter { $0.name.lowercased() != "content-length" }
            // Rewritten fields (Via, the cache-status fields) follow the plain ones.
            let merged = Set(["via", "cache-status", "x-cache-status", "accept-ranges"])
            let ordered = expected.filter { !merged.contains($0.name.lowercased()) } + expected.filter { merged.contains($0.name.lowercased()) }
            #expect(object.headers == HTTPHeaders(ordered), "round \(round)")
            let plain = ordered.filter { !merged.contains($0.name.lowercased()) }
            #expect(plainLines(object) == plain.map { "\($0.name): \($0.value)\r\n" }.joined(), "round \(round)")
            #expect(String(buffer: object.body) == "body")
        }
    }

    @Test("IMF-fixdate is written without allocating, as format gives it, for every second kind of the calendar")
    func fixdateWriter() {
        var random = SeededRandom(seed: SeededRandom.seed(fallback: 0xDA7E))
        print("PackedFields.fixdateWriter: seed \(random.seed)")
        let samples: [Int64] = [0, 784_111_777, 951_782_400, 4_294_967_295, -1, 253_402_300_799]
        for seconds in samples + (0..<2_000).map({ _ in Int64(random.next() % 300_000_000_000) - 62_000_000_000 }) {
            let text = HTTPDate.format(seconds)
            #expect(text.utf8.count == HTTPDate.fixdateLength)
            #expect(HTTPDate.parse(text) == seconds, "\(seconds): \(text)")
        }
        #expect(HTTPDate.format(784_111_777) == "Sun, 06 Nov 1994 08:49:37 GMT")
        #expect(HTTPDate.format(951_782_400) == "Tue, 29 Feb 2000 00:00:00 GMT")
    }
}
