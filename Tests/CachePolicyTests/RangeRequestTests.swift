import NIOHTTP1
import Testing

@testable import CachePolicy

@Suite("RangeRequest")
struct RangeRequestTests {
    /// Evaluates a `Range` value against a stored 200 of `length` bytes with no validators.
    private func decide(_ range: String?, length: Int = 10_000, method: String = "GET") -> RangeDecision {
        RangeRequest.evaluate(
            rangeHeader: range, ifRange: nil, method: method, storedStatus: 200, storedHeaders: HTTPHeaders(),
            length: length
        )
    }

    @Test(
        "The byte-range examples of RFC 9110 §14.1.2 on a 10000-byte body",
        arguments: [
            ("bytes=0-499", 0...499),  // the first 500 bytes
            ("bytes=500-999", 500...999),  // the second 500 bytes
            ("bytes=-500", 9500...9999),  // the final 500 bytes (suffix-range)
            ("bytes=9500-", 9500...9999),  // the final 500 bytes (int-range to the end)
            ("bytes=0-0", 0...0),  // the first byte
            ("bytes=-1", 9999...9999),  // the last byte
        ]
    )
    func rfcExamples(range: String, expected: ClosedRange<Int>) {
        #expect(decide(range) == .single(expected))
    }

    @Test("\"bytes=0-0,-1\" asks for the first and last bytes: two parts (RFC 9110 §14.1.2)")
    func firstAndLastByte() {
        #expect(decide("bytes=0-0,-1") == .multiple([0...0, 9999...9999]))
    }

    @Test(
        "A last-pos at or past the end is clamped to length - 1 (RFC 9110 §14.1.1)",
        arguments: [
            ("bytes=9000-20000", 9000...9999),
            ("bytes=0-9999", 0...9999),
            ("bytes=0-10000", 0...9999),
            ("bytes=-20000", 0...9999),  // a suffix longer than the body selects all of it (§14.1.2)
            ("bytes=0-9223372036854775807", 0...9999),  // Int.max as last-pos: still no overflow
        ]
    )
    func clamping(range: String, expected: ClosedRange<Int>) {
        #expect(decide(range) == .single(expected))
    }

    @Test(
        "Only GET has range handling; other methods get the full response (RFC 9110 §14.2)",
        arguments: ["HEAD", "POST", "PUT", "get", "OPTIONS"]
    )
    func onlyGet(method: String) {
        #expect(decide("bytes=0-1", method: method) == .full)
    }

    @Test(
        "Only a stored 200 is sliced; anything else is delivered as is (RFC 9110 §14.2, §15.3.7)",
        arguments: [203, 204, 206, 301, 404, 500]
    )
    func onlyStored200(status: Int) {
        let decision = RangeRequest.evaluate(
            rangeHeader: "bytes=0-1", ifRange: nil, method: "GET", storedStatus: status, storedHeaders: HTTPHeaders(),
            length: 100
        )
        #expect(decision == .full)
    }

    @Test("No Range field: the full response (RFC 9110 §14.2)")
    func noRange() {
        #expect(decide(nil) == .full)
    }

    @Test(
        "Syntax errors and invalid specs make the whole field ignored: 200 (RFC 9110 §14.1.1, HARDENING.md §11)",
        arguments: [
            "bytes", "bytes=", "bytes=,", "bytes= , ", "bytes=abc", "bytes=1", "bytes=1-2-3", "bytes=--1", "bytes=-",
            "bytes=5-4",  // last-pos < first-pos: invalid, not unsatisfiable (§14.1.1)
            "bytes=0-1,5-4", "bytes=0 -1", "bytes=0- 1", "bytes =0-1", "bytes= 0-1x", "bytes=+1-2", "bytes=-+1",
            "bytes=1-0x10", "bytes=0-1;q=1", "=0-1", "0-1", "bytes:0-1", "bytes=\u{663}-1",
        ]
    )
    func syntaxErrors(range: String) {
        #expect(decide(range) == .full)
    }

    @Test(
        "Numbers that do not fit in 64 bits are a syntax error, not a trap (HARDENING.md §11)",
        arguments: [
            "bytes=9223372036854775808-",  // Int.max + 1
            "bytes=0-9223372036854775808",
            "bytes=-9223372036854775808",
            "bytes=99999999999999999999999999999-",
            "bytes=0-1,18446744073709551616-18446744073709551617",
        ]
    )
    func overflow(range: String) {
        #expect(decide(range) == .full)
    }

    @Test("Int.max itself parses: a first-pos past the end is unsatisfiable (RFC 9110 §14.1.1)")
    func intMaxFirstPos() {
        #expect(decide("bytes=9223372036854775807-") == .unsatisfiable)
        #expect(decide("bytes=-9223372036854775807") == .single(0...9999))
    }

    @Test(
        "Range units other than bytes are ignored; the unit is case-insensitive (RFC 9110 §14.1)",
        arguments: [
            ("items=0-1", RangeDecision.full),
            ("none=0-1", .full),
            ("bytesx=0-1", .full),
            ("BYTES=0-1", .single(0...1)),
            ("Bytes=0-1", .single(0...1)),
        ]
    )
    func units(range: String, expected: RangeDecision) {
        #expect(decide(range) == expected)
    }

    @Test(
        "Empty list elements and OWS around commas are accepted (RFC 9110 §5.6.1)",
        arguments: [
            ("bytes=0-1,", RangeDecision.single(0...1)),
            ("bytes=,0-1", .single(0...1)),
            ("bytes= 0-1 ", .single(0...1)),
            ("bytes=0-1 ,\t5-6", .multiple([0...1, 5...6])),
            ("bytes=0-1,,,5-6", .multiple([0...1, 5...6])),
        ]
    )
    func listSyntax(range: String, expected: RangeDecision) {
        #expect(decide(range) == expected)
    }

    @Test(
        "Unsatisfiable: first-pos at or past the length, or a zero suffix (RFC 9110 §14.1.1, §15.5.17)",
        arguments: [
            "bytes=10000-", "bytes=10000-10001", "bytes=20000-30000", "bytes=-0", "bytes=-0,10000-", "bytes=-000",
        ]
    )
    func unsatisfiable(range: String) {
        #expect(decide(range) == .unsatisfiable)
    }

    @Test("Unsatisfiable specs next to satisfiable ones are dropped (RFC 9110 §14.2)")
    func satisfiableSubset() {
        #expect(decide("bytes=20000-,0-9") == .single(0...9))
        #expect(decide("bytes=-0,9990-") == .single(9990...9999))
        #expect(decide("bytes=0-9,20000-,100-109") == .multiple([0...9, 100...109]))
    }

    @Test(
        "Several ranges: ascending and disjoint is multipart, anything else the full body (HARDENING.md §11)",
        arguments: [
            ("bytes=0-9,20-29", RangeDecision.multiple([0...9, 20...29])),
            ("bytes=0-9,10-19", .multiple([0...9, 10...19])),  // adjacent, not overlapping
            ("bytes=0-9,9-19", .full),  // overlap by one byte
            ("bytes=0-99,10-19", .full),  // contained
            ("bytes=20-29,0-9", .full),  // descending
            ("bytes=0-0,0-0", .full),  // the same byte twice
            ("bytes=9990-,-5", .full),  // the suffix overlaps the open range after clamping
            ("bytes=0-5,-9994", .multiple([0...5, 6...9999])),  // the suffix starts right after 5
            ("bytes=0-6,-9994", .full),  // ...and here it overlaps byte 6
        ]
    )
    func multipleRanges(range: String, expected: RangeDecision) {
        #expect(decide(range) == expected)
    }

    @Test("At most 16 range-specs; a 17th makes the field ignored (HARDENING.md §11)")
    func rangeCountLimit() {
        let sixteen = (0..<16).map { "\($0 * 10)-\($0 * 10 + 1)" }.joined(separator: ",")
        #expect(decide("bytes=" + sixteen) == .multiple((0..<16).map { ($0 * 10)...($0 * 10 + 1) }))
        let seventeen = (0..<17).map { "\($0 * 10)-\($0 * 10 + 1)" }.joined(separator: ",")
        #expect(decide("bytes=" + seventeen) == .full)
        // A long list of tiny ranges is the classic amplification (CVE-2011-3192).
        let many = Array(repeating: "0-", count: 1000).joined(separator: ",")
        #expect(decide("bytes=" + many) == .full)
    }

    @Test("An empty body: int-ranges are unsatisfiable, a non-zero suffix gets the empty 200 (RFC 9110 §14.1.1)")
    func emptyRepresentation() {
        #expect(decide("bytes=0-", length: 0) == .unsatisfiable)
        #expect(decide("bytes=0-0", length: 0) == .unsatisfiable)
        #expect(decide("bytes=-0", length: 0) == .unsatisfiable)
        #expect(decide("bytes=-5", length: 0) == .full)
        #expect(decide("bytes=0-1,-5", length: 0) == .full)
    }

    @Test("A one-byte body (RFC 9110 §14.1.2)")
    func oneByte() {
        #expect(decide("bytes=0-", length: 1) == .single(0...0))
        #expect(decide("bytes=-1", length: 1) == .single(0...0))
        #expect(decide("bytes=-100", length: 1) == .single(0...0))
        #expect(decide("bytes=1-", length: 1) == .unsatisfiable)
    }

    // MARK: If-Range

    private let stored = HTTPHeaders([
        ("ETag", #""v1""#),
        ("Last-Modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ("Date", "Sun, 06 Nov 1994 09:49:37 GMT"),
    ])

    @Test(
        "If-Range: a matching strong validator keeps the range, anything else gets the full body (RFC 9110 §13.1.5)",
        arguments: [
            (#""v1""#, RangeDecision.single(0...9)),
            (#""v2""#, .full),
            (#"W/"v1""#, .full),  // a weak tag never matches If-Range
            ("Sun, 06 Nov 1994 08:49:37 GMT", .single(0...9)),
            ("Sun, 06 Nov 1994 08:49:38 GMT", .full),  // not an exact match
            ("yesterday", .full),
        ]
    )
    func ifRange(ifRange: String, expected: RangeDecision) {
        let decision = RangeRequest.evaluate(
            rangeHeader: "bytes=0-9", ifRange: ifRange, method: "GET", storedStatus: 200, storedHeaders: self.stored,
            length: 100
        )
        #expect(decision == expected)
    }

    @Test("A failed If-Range wins over an unsatisfiable range: 200, not 416 (RFC 9110 §13.1.5, §13.2.2)")
    func ifRangeBeforeUnsatisfiable() {
        let failed = RangeRequest.evaluate(
            rangeHeader: "bytes=500-", ifRange: #""other""#, method: "GET", storedStatus: 200,
            storedHeaders: self.stored, length: 100
        )
        #expect(failed == .full)
        let matched = RangeRequest.evaluate(
            rangeHeader: "bytes=500-", ifRange: #""v1""#, method: "GET", storedStatus: 200,
            storedHeaders: self.stored, length: 100
        )
        #expect(matched == .unsatisfiable)
    }

    // MARK: Header values

    @Test("Content-Range values of a 206 and a 416 (RFC 9110 §14.4)")
    func contentRange() {
        #expect(RangeRequest.contentRange(0...499, length: 1234) == "bytes 0-499/1234")
        #expect(RangeRequest.contentRange(42...42, length: 43) == "bytes 42-42/43")
        #expect(RangeRequest.unsatisfiedContentRange(length: 1234) == "bytes */1234")
    }
}

@Suite("Multipart")
struct MultipartTests {
    @Test("The body framing matches the example of RFC 9110 §14.6, with CRLF line ends")
    func rfcExample() {
        let boundary = "THIS_STRING_SEPARATES"
        let first = Multipart.partHeader(
            boundary: boundary, contentType: "application/pdf", range: 500...999, length: 8000
        )
        #expect(
            first
                == "\r\n--THIS_STRING_SEPARATES\r\nContent-Type: application/pdf\r\nContent-Range: bytes 500-999/8000\r\n\r\n"
        )
        #expect(Multipart.closing(boundary: boundary) == "\r\n--THIS_STRING_SEPARATES--\r\n")
        #expect(
            Multipart.contentType(boundary: boundary) == "multipart/byteranges; boundary=THIS_STRING_SEPARATES"
        )
    }

    @Test("Without a stored Content-Type the part has only Content-Range (RFC 9110 §14.6)")
    func noContentType() {
        #expect(
            Multipart.partHeader(boundary: "b", contentType: nil, range: 0...0, length: 1)
                == "\r\n--b\r\nContent-Range: bytes 0-0/1\r\n\r\n"
        )
    }

    @Test(
        "totalLength is the exact size of the body the parts make up (Content-Length, RFC 9110 §8.6)",
        arguments: [
            [0...0],
            [0...499, 7000...7999],
            [0...0, 2...2, 4...4, 6...6],
            [0...99_999],
        ]
    )
    func totalLength(ranges: [ClosedRange<Int>]) {
        let length = 100_000
        let body = Array((0..<length).map { UInt8(truncatingIfNeeded: $0) })
        let boundary = Multipart.boundary(seed: 42)
        for contentType in ["text/plain; charset=utf-8", nil] {
            var assembled: [UInt8] = []
            for range in ranges {
                assembled +=
                    Multipart.partHeader(
                        boundary: boundary, contentType: contentType, range: range, length: length
                    ).utf8
                assembled += body[range]
            }
            assembled += Multipart.closing(boundary: boundary).utf8
            #expect(
                Multipart.totalLength(boundary: boundary, contentType: contentType, ranges: ranges, length: length)
                    == assembled.count
            )
        }
    }

    @Test("Boundaries are valid RFC 2046 bchars, at most 70 long, stable per seed and distinct across seeds")
    func boundaries() {
        let allowed = Set("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'()+_,-./:=?")
        var seen = Set<String>()
        for seed in [0, 1, 2, 42, UInt64.max] as [UInt64] {
            let boundary = Multipart.boundary(seed: seed)
            #expect(boundary.count <= 70)
            #expect(boundary.count == 40)
            #expect(boundary.allSatisfy { allowed.contains($0) })
            #expect(boundary == Multipart.boundary(seed: seed))
            seen.insert(boundary)
        }
        #expect(seen.count == 5)
    }
}
