import NIOHTTP1
import Testing

@testable import CachePolicy

@Suite("VaryKey")
struct VaryKeyTests {
    @Test("Vary names are lowercased, de-duplicated and sorted across lines (RFC 9111 §4.1)")
    func fieldNames() {
        let fields = headers(("Vary", "Accept-Encoding, User-Agent"), ("vary", " accept ,ACCEPT-ENCODING,,"))
        #expect(VaryKey.fieldNames(fields) == ["accept", "accept-encoding", "user-agent"])
    }

    @Test("No Vary means no secondary key; Vary: * can never match (RFC 9111 §4.1)")
    func noVaryAndStar() {
        #expect(VaryKey.fieldNames(headers()) == [])
        #expect(VaryKey.fieldNames(headers(("Vary", ""))) == [])
        #expect(VaryKey.fieldNames(headers(("Vary", "*"))) == nil)
        #expect(VaryKey.fieldNames(headers(("Vary", "Accept"), ("Vary", " * "))) == nil)
    }

    @Test("Whitespace differences do not create new variants (RFC 9111 §4.1 normalisation)")
    func whitespaceNormalised() {
        let a = VaryKey.variant(names: ["accept"], requestHeaders: headers(("Accept", "  text/html ,  application/json  ")))
        let b = VaryKey.variant(names: ["accept"], requestHeaders: headers(("Accept", "text/html,application/json")))
        let c = VaryKey.variant(names: ["accept"], requestHeaders: headers(("Accept", "text/html"), ("Accept", "application/json")))
        #expect(a == b)
        #expect(b == c)
        #expect(a == "accept=text/html,application/json\n")
    }

    @Test("Inner runs of whitespace collapse to one space; other differences remain (RFC 9111 §4.1)")
    func innerWhitespace() {
        #expect(VaryKey.normalise("a  \t b ,  c") == "a b,c")
        #expect(VaryKey.normalise("  ") == "")
        let upper = VaryKey.variant(names: ["x-a"], requestHeaders: headers(("X-A", "Value")))
        let lower = VaryKey.variant(names: ["x-a"], requestHeaders: headers(("X-A", "value")))
        #expect(upper != lower)
    }

    @Test("An absent header differs from an empty one (RFC 9111 §4.1)")
    func absentVersusEmpty() {
        let absent = VaryKey.variant(names: ["x-a"], requestHeaders: headers())
        let empty = VaryKey.variant(names: ["x-a"], requestHeaders: headers(("X-A", "")))
        #expect(absent != empty)
        #expect(absent == "x-a!\n")
        #expect(empty == "x-a=\n")
    }

    @Test("Values cannot forge another entry (unambiguous encoding)")
    func unambiguous() {
        // Two fields, one value each, versus one value that looks like two entries.
        let honest = VaryKey.variant(names: ["a", "b"], requestHeaders: headers(("A", "1"), ("B", "2")))
        let forged = VaryKey.variant(names: ["a", "b"], requestHeaders: headers(("A", "1\nb=2")))
        #expect(honest != forged)
        let escaped = VaryKey.variant(names: ["a"], requestHeaders: headers(("A", #"x\y"#)))
        #expect(escaped == "a=x\\\\y\n")
        // A name containing "=" must not collide with a name and value.
        let oddName = VaryKey.variant(names: ["a=b"], requestHeaders: headers())
        let plain = VaryKey.variant(names: ["a"], requestHeaders: headers(("A", "b!")))
        #expect(oddName != plain)
    }

    @Test("Field names are matched case-insensitively (RFC 9110 §5.1)")
    func nameCase() {
        let fields = headers(("USER-AGENT", "x"))
        #expect(VaryKey.variant(names: ["User-Agent"], requestHeaders: fields) == "user-agent=x\n")
    }

    @Test(
        "Accept-Encoding normalises to gzip or identity (RFC 9110 §12.5.3, HARDENING.md §7)",
        arguments: [
            (nil, "identity"),
            ("", "identity"),
            ("gzip", "gzip"),
            ("GZIP", "gzip"),
            ("x-gzip", "gzip"),
            ("gzip, deflate, br", "gzip"),
            ("br;q=1.0, gzip;q=0.8, *;q=0.1", "gzip"),
            ("gzip;q=0", "identity"),
            ("gzip; q=0.000", "identity"),
            ("gzip;Q=0.001", "gzip"),
            ("gzip;q=abc", "identity"),
            ("gzip;q=1.5", "identity"),
            ("br", "identity"),
            ("identity", "identity"),
            ("*", "gzip"),
            ("*;q=0", "identity"),
            ("*, gzip;q=0", "identity"),
            ("deflate, gzip ; q=0.5", "gzip"),
        ] as [(String?, String)]
    )
    func acceptEncoding(value: String?, expected: String) {
        let fields = value.map { headers(("Accept-Encoding", $0)) } ?? headers()
        #expect(VaryKey.variant(names: ["accept-encoding"], requestHeaders: fields) == "accept-encoding=\(expected)\n")
    }

    @Test("Several names produce one entry each, in the given order (RFC 9111 §4.1)")
    func severalNames() {
        let fields = headers(("Accept-Encoding", "gzip"), ("Accept-Language", "en"))
        let names = VaryKey.fieldNames(headers(("Vary", "Accept-Language, Accept-Encoding, Origin"))) ?? []
        #expect(VaryKey.variant(names: names, requestHeaders: fields) == "accept-encoding=gzip\naccept-language=en\norigin!\n")
    }

    @Test("No names give an empty variant (RFC 9111 §4.1)")
    func noNames() {
        #expect(VaryKey.variant(names: [], requestHeaders: headers(("Accept", "x"))) == "")
    }

    @Test("qvalue grammar (RFC 9110 §12.4.2), in thousandths", arguments: [("1", 1000), ("1.000", 1000), ("0.5", 500), ("0", 0), ("0.", 0), ("0.001", 1)] as [(String, Int)])
    func qvalues(text: String, expected: Int) {
        #expect(QValue.parse(text) == expected)
    }

    @Test("Invalid qvalues are rejected (RFC 9110 §12.4.2)", arguments: ["1.001", "2", "0.1234", ".5", "", "0,5", "-0"])
    func invalidQvalues(text: String) {
        #expect(QValue.parse(text) == nil)
    }

    @Test("The Vary key's Accept-Encoding reading is delivery's: gzip exactly when the client takes gzip", arguments: [
        "gzip;q=abc, *", "*;q=abc", "gzip;q=0, *", "*, gzip;q=0.001", "x-gzip", "br", "", "gzip;q=1.0000", "GZIP ; Q=0.5",
    ])
    func varyAgreesWithDelivery(value: String) {
        let fields = headers(("Accept-Encoding", value))
        let variant = VaryKey.variant(names: ["accept-encoding"], requestHeaders: fields)
        #expect(variant == (AcceptEncoding.acceptsGzip(fields) ? "accept-encoding=gzip\n" : "accept-encoding=identity\n"))
    }
}
