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
    @Test(
        "Accept-Language values that select the same representation share a variant (case, spaces, order among equal weights, q spelling, repeats)",
        arguments: [
            ("en-US,en;q=0.9", "EN-us , en;Q=0.90"),
            ("en-US,en;q=0.9", "en;q=0.900,en-US"),
            ("da, en-gb;q=0.8, en;q=0.7", "en-GB;q=0.8,da;q=1,en;q=0.7,da;q=0.1"),
            ("fr;q=1.000, de", "de,fr"),
            ("*;q=0", "* ; q=0.0"),
        ] as [(String, String)])
    func acceptLanguageShares(a: String, b: String) {
        let first = VaryKey.variant(names: ["accept-language"], requestHeaders: headers(("Accept-Language", a)))
        let second = VaryKey.variant(names: ["accept-language"], requestHeaders: headers(("Accept-Language", b)))
        #expect(first == second, "\(first) \(second)")
    }

    @Test("Accept-Language values that select differently stay apart; the list rule applies only to the fields asked for")
    func acceptLanguageDiffers() {
        let en = headers(("Accept-Language", "en-US,en;q=0.9"))
        for other in ["en;q=0.9,en-US;q=0.8", "en-US", "fr", "en-US,en;q=0.8", "en-US;q=0"] {
            #expect(
                VaryKey.variant(names: ["accept-language"], requestHeaders: en)
                    != VaryKey.variant(names: ["accept-language"], requestHeaders: headers(("Accept-Language", other))), "\(other)")
        }
        #expect(VaryKey.normaliseList("en-US, EN;q=0.90, fr;q=0.5;x=1, de;q=abc") == "de;q=abc,en-us,en;q=0.9,fr;x=1;q=0.5")
        // Exact values when the field is not read as a list.
        let upper = VaryKey.variant(names: ["accept-language"], requestHeaders: headers(("Accept-Language", "EN")), listFields: [])
        let lower = VaryKey.variant(names: ["accept-language"], requestHeaders: headers(("Accept-Language", "en")), listFields: [])
        #expect(upper != lower)
        // Any field can be read as a list.
        let accept = VaryKey.variant(names: ["accept"], requestHeaders: headers(("Accept", "text/html, application/json")), listFields: ["accept"])
        #expect(accept == VaryKey.variant(names: ["accept"], requestHeaders: headers(("Accept", "application/json,text/html")), listFields: ["accept"]))
    }
}
