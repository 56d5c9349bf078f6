import NIOHTTP1
import Testing

@testable import CachePolicy

@Suite("TargetedCacheControl")
struct TargetedCacheControlTests {
    private func effective(_ pairs: (String, String)...) -> (cacheControl: CacheControl, source: String) {
        TargetedCacheControl.effective(responseHeaders: HTTPHeaders(pairs))
    }

    @Test("CDN-Cache-Control overrides Cache-Control for a CDN (the example of RFC 9213 §3.1)")
    func rfcExample() {
        // "Cache-Control: max-age=60 / CDN-Cache-Control: max-age=600": browsers 60 s, the CDN 600 s.
        let result = effective(("Cache-Control", "max-age=60"), ("CDN-Cache-Control", "max-age=600"))
        #expect(result.source == "CDN-Cache-Control")
        #expect(result.cacheControl.maxAge == 600)
    }

    @Test(
        "Precedence: our own field, then CDN-Cache-Control, then Surrogate-Control, then Cache-Control (RFC 9213 §2.1)")
    func precedence() {
        let all: [(String, String)] = [
            ("Cache-Control", "max-age=1"), ("Surrogate-Control", "max-age=2"),
            ("CDN-Cache-Control", "max-age=3"), ("Lacquer-Cache-Control", "max-age=4"),
        ]
        let expected: [(String, Int64)] = [
            ("Lacquer-Cache-Control", 4), ("CDN-Cache-Control", 3), ("Surrogate-Control", 2), ("Cache-Control", 1),
        ]
        // Drop the winner each round: the next field in line takes over.
        for (index, (source, maxAge)) in expected.enumerated() {
            let headers = HTTPHeaders(Array(all.dropLast(index)))
            let result = TargetedCacheControl.effective(responseHeaders: headers)
            #expect(result.source == source)
            #expect(result.cacheControl.maxAge == maxAge)
        }
    }

    @Test("When a targeted field applies, Cache-Control is ignored entirely, restrictions included (RFC 9213 §2.1)")
    func cacheControlIgnored() {
        let result = effective(("Cache-Control", "private, no-store"), ("CDN-Cache-Control", "max-age=600"))
        #expect(result.cacheControl == CacheControl(parsing: "max-age=600"))
        #expect(!result.cacheControl.noStore)
        #expect(!result.cacheControl.isPrivate)
    }

    @Test("The targeted field restricts even when Cache-Control allows (RFC 9213 §2.1)")
    func targetedRestricts() {
        let result = effective(("Cache-Control", "public, max-age=3600"), ("CDN-Cache-Control", "no-store"))
        #expect(result.source == "CDN-Cache-Control")
        #expect(result.cacheControl.noStore)
        #expect(result.cacheControl.maxAge == nil)
        #expect(!result.cacheControl.isPublic)
    }

    @Test(
        "A targeted field that fails to parse as an sf-dictionary is ignored: fall back (RFC 9213 §2.1, RFC 8941 §4.2)",
        arguments: [
            "max-age=60,",  // trailing comma
            "Max-Age=60",  // keys are lowercase
            "max-age=60;",  // parameter without a key
            "max-age=\"60",  // unterminated string
            "max-age=1234567890123456",  // 16-digit Integer
            "max-age=60 no-store",  // missing comma
            "max-age=1.2345",  // four fraction digits
            "max-age=1.",  // a Decimal must have fraction digits
            "private=\"a\\b\"",  // only \" and \\ may be escaped
            "no-store, =5",  // empty key
            "max-age=?2",  // not a Boolean
            "max-age=(1 2",  // unterminated Inner List
            "max-age=:abc",  // unterminated Byte Sequence
            "max-age=60, no-cache=\u{e9}",  // non-ASCII
            "",  // empty: as if absent
            "   ",
        ]
    )
    func invalidTargetedFieldIgnored(value: String) {
        let result = effective(("Cache-Control", "max-age=5"), ("CDN-Cache-Control", value))
        #expect(result.source == "Cache-Control")
        #expect(result.cacheControl.maxAge == 5)
    }

    @Test("An invalid own field falls back to CDN-Cache-Control, not straight to Cache-Control (RFC 9213 §2.1)")
    func fallbackIsToTheNextTargetedField() {
        let result = effective(
            ("Cache-Control", "max-age=5"), ("CDN-Cache-Control", "max-age=50"), ("Lacquer-Cache-Control", "max-age=,")
        )
        #expect(result.source == "CDN-Cache-Control")
        #expect(result.cacheControl.maxAge == 50)
    }

    @Test(
        "Valid sf-dictionaries map to cache directives (RFC 9213 §2.2)",
        arguments: [
            ("max-age=60", CacheControl(parsing: "max-age=60")),
            ("max-age=60, s-maxage=120", CacheControl(parsing: "max-age=60, s-maxage=120")),
            ("no-store", CacheControl(parsing: "no-store")),
            ("no-cache, must-revalidate", CacheControl(parsing: "no-cache, must-revalidate")),
            ("private", CacheControl(parsing: "private")),
            ("no-cache=\"set-cookie, X-A\"", CacheControl(parsing: "no-cache=\"set-cookie, x-a\"")),
            ("private=\"authorization\"", CacheControl(parsing: "private=\"authorization\"")),
            (
                "max-age=60, stale-while-revalidate=30, stale-if-error=300",
                CacheControl(parsing: "max-age=60, stale-while-revalidate=30, stale-if-error=300")
            ),
            ("public, immutable, max-age=31536000", CacheControl(parsing: "public, immutable, max-age=31536000")),
            ("  max-age=60 ,\tproxy-revalidate  ", CacheControl(parsing: "max-age=60, proxy-revalidate")),
            ("max-age=60;foo=bar, no-transform", CacheControl(parsing: "max-age=60, no-transform")),  // parameters ignored
            ("max-age=60, extension=(a b);p=1, x=:AQID:", CacheControl(parsing: "max-age=60")),  // unknown ignored
            ("max-age=10, max-age=20", CacheControl(parsing: "max-age=20")),  // the last duplicate wins (RFC 8941 §4.2.2)
            ("max-age=99999999999", CacheControl(parsing: "max-age=2147483648")),  // clamped (RFC 9111 §1.2.2)
            ("no-store=?0, max-age=5", CacheControl(parsing: "max-age=5")),  // explicit false: absent
        ]
    )
    func mapping(value: String, expected: CacheControl) {
        let result = effective(("CDN-Cache-Control", value))
        #expect(result.source == "CDN-Cache-Control")
        #expect(result.cacheControl == expected)
    }

    @Test(
        "Values of the wrong type err towards the safe side (RFC 9213 §2.2, RFC 9111 §4.2.1)",
        arguments: [
            ("max-age=\"60\"", CacheControl(parsing: "max-age=0")),  // a String is not delta-seconds: stale
            ("max-age=-1", CacheControl(parsing: "max-age=0")),
            ("max-age=1.5", CacheControl(parsing: "max-age=0")),
            ("s-maxage=abc", CacheControl(parsing: "s-maxage=0")),
            ("no-store=1", CacheControl(parsing: "no-store")),  // a restriction stays a restriction
            ("private=?1", CacheControl(parsing: "private")),
            ("public=1, max-age=5", CacheControl(parsing: "max-age=5")),  // a relaxation is dropped
            ("stale-if-error=\"60\", max-age=5", CacheControl(parsing: "max-age=5")),
        ]
    )
    func wrongTypes(value: String, expected: CacheControl) {
        #expect(effective(("CDN-Cache-Control", value)).cacheControl == expected)
    }

    @Test("A valid field with only unknown directives still wins: the origin targeted us (RFC 9213 §2.1)")
    func unknownOnlyStillWins() {
        let result = effective(("Cache-Control", "no-store"), ("CDN-Cache-Control", "foo"))
        #expect(result.source == "CDN-Cache-Control")
        #expect(result.cacheControl == CacheControl())
    }

    @Test("Several field lines form one dictionary; one bad line spoils the field (RFC 8941 §4.2)")
    func multipleLines() {
        let joined = effective(("CDN-Cache-Control", "max-age=60"), ("CDN-Cache-Control", "stale-if-error=10"))
        #expect(joined.cacheControl == CacheControl(parsing: "max-age=60, stale-if-error=10"))
        let spoiled = effective(
            ("Cache-Control", "max-age=1"), ("CDN-Cache-Control", "max-age=60"), ("CDN-Cache-Control", "Bad")
        )
        #expect(spoiled.source == "Cache-Control")
    }

    @Test("Field names match case-insensitively (RFC 9110 §5.1)")
    func caseInsensitiveNames() {
        #expect(effective(("cdn-cache-control", "max-age=7")).source == "CDN-Cache-Control")
        #expect(effective(("LACQUER-CACHE-CONTROL", "max-age=7")).source == "Lacquer-Cache-Control")
    }

    @Test("The own field follows cacheName (RFC 9213 §2)")
    func customCacheName() {
        let headers = HTTPHeaders([("Lacquer-Cache-Control", "max-age=1"), ("Edge-One-Cache-Control", "max-age=2")])
        let custom = TargetedCacheControl.effective(responseHeaders: headers, cacheName: "edge-one")
        #expect(custom.source == "Edge-One-Cache-Control")
        #expect(custom.cacheControl.maxAge == 2)
        // Another cache's own field does not target us: Lacquer-Cache-Control is passed over.
        let other = TargetedCacheControl.effective(
            responseHeaders: HTTPHeaders([("Lacquer-Cache-Control", "max-age=1"), ("Cache-Control", "max-age=3")]),
            cacheName: "edge-one"
        )
        #expect(other.source == "Cache-Control")
        #expect(TargetedCacheControl.targetedFieldName(cacheName: "lacquer") == "Lacquer-Cache-Control")
    }

    // MARK: Surrogate-Control

    @Test(
        "Surrogate-Control directives, device targeting and max-age grace (Edge Architecture §2.2, §2.3)",
        arguments: [
            ("max-age=60", CacheControl(parsing: "max-age=60")),
            ("no-store", CacheControl(parsing: "no-store")),
            (#"max-age=60, content="ESI/1.0""#, CacheControl(parsing: "max-age=60")),
            ("max-age=60+30", CacheControl(parsing: "max-age=60, stale-while-revalidate=30, stale-if-error=30")),
            ("max-age=60;lacquer", CacheControl(parsing: "max-age=60")),
            ("max-age=60;LACQUER", CacheControl(parsing: "max-age=60")),
            ("max-age=60 ; lacquer", CacheControl(parsing: "max-age=60")),
            // A directive naming us wins over untargeted ones; others' directives never apply.
            ("max-age=3600, max-age=60;lacquer", CacheControl(parsing: "max-age=60")),
            ("max-age=60, no-store;othercdn", CacheControl(parsing: "max-age=60")),
            (
                "max-age=60+30;lacquer, no-store;mycdn",
                CacheControl(parsing: "max-age=60, stale-while-revalidate=30, stale-if-error=30")
            ),
            ("no-store;lacquer, max-age=60", CacheControl(parsing: "no-store")),
            ("max-age=abc", CacheControl(parsing: "max-age=0")),  // invalid lifetime: stale
            ("max-age=10, max-age=20", CacheControl(parsing: "max-age=10")),  // conflicting: the smaller
            (#"content="ESI/1.0, x;y", max-age=5"#, CacheControl(parsing: "max-age=5")),  // quotes hide , and ;
        ]
    )
    func surrogateControl(value: String, expected: CacheControl) {
        let result = effective(("Cache-Control", "private"), ("Surrogate-Control", value))
        #expect(result.source == "Surrogate-Control")
        #expect(result.cacheControl == expected)
    }

    @Test(
        "Surrogate-Control without a caching directive for us leaves Cache-Control in charge (Edge Architecture §2.3)",
        arguments: [#"content="ESI/1.0""#, "no-store;othercdn", "max-age=60;othercdn", "no-store-remote", ""]
    )
    func surrogateNotApplicable(value: String) {
        let result = effective(("Cache-Control", "max-age=5"), ("Surrogate-Control", value))
        #expect(result.source == "Cache-Control")
        #expect(result.cacheControl.maxAge == 5)
    }

    @Test("No targeted field: plain Cache-Control (RFC 9111 §5.2)")
    func plainCacheControl() {
        let result = effective(("Cache-Control", "s-maxage=30, no-cache=\"set-cookie\""))
        #expect(result.source == "Cache-Control")
        #expect(result.cacheControl == CacheControl(parsing: "s-maxage=30, no-cache=\"set-cookie\""))
        #expect(effective().cacheControl == CacheControl())
    }

    // MARK: Expires and forwarding

    @Test("Expires is ignored when a targeted field applies (RFC 9213 §2.1)")
    func expiresIgnored() {
        let headers = HTTPHeaders([
            ("Date", "Sun, 06 Nov 1994 08:49:37 GMT"), ("Expires", "Sun, 06 Nov 1994 09:49:37 GMT"),
            ("CDN-Cache-Control", "must-revalidate"),
        ])
        let (directives, source) = TargetedCacheControl.effective(responseHeaders: headers)
        let withExpires = Freshness.lifetime(
            status: 200, headers: headers, cacheControl: directives, responseTime: Double(rfcExampleInstant)
        )
        #expect(withExpires.seconds == 3600)  // what Expires alone would give
        let lifetime = Freshness.lifetime(
            status: 200, headers: TargetedCacheControl.freshnessHeaders(headers, source: source),
            cacheControl: directives, responseTime: Double(rfcExampleInstant)
        )
        #expect(lifetime == FreshnessLifetime(seconds: 0, source: .none))
        // With Cache-Control in charge, Expires stays.
        let plain = HTTPHeaders([("Expires", "Sun, 06 Nov 1994 09:49:37 GMT")])
        #expect(TargetedCacheControl.freshnessHeaders(plain, source: "Cache-Control") == plain)
    }

    @Test("Our own field and Surrogate-Control are stripped; CDN-Cache-Control is passed on (RFC 9213 §3)")
    func stripList() {
        #expect(
            TargetedCacheControl.fieldsToStripBeforeForwarding(cacheName: "lacquer")
                == ["Lacquer-Cache-Control", "Surrogate-Control"]
        )
        #expect(!TargetedCacheControl.fieldsToStripBeforeForwarding(cacheName: "lacquer").contains("CDN-Cache-Control"))
        #expect(
            TargetedCacheControl.fieldsToStripBeforeForwarding(cacheName: "edge") == [
                "Edge-Cache-Control", "Surrogate-Control",
            ]
        )
    }
}

@Suite("StructuredFieldDictionary")
struct StructuredFieldDictionaryTests {
    @Test(
        "Valid dictionaries from RFC 8941 §3.2 and §4.2.2",
        arguments: [
            ("en=\"Applepie\", da=:w4ZibGV0w6ZydGUK:", 2),
            ("a=?0, b, c; foo=bar", 3),
            ("rating=1.5, feelings=(joy sadness)", 2),
            ("a=(1 2), b=3, c=4;aa=bb, d=(5 6);valid", 4),
            ("a=1, a=2", 1),
            ("*key=tok/en:x", 1),
            ("a=-15, b=-1.5", 2),
            ("a=()", 1),
        ]
    )
    func valid(value: String, count: Int) throws {
        let dictionary = try #require(StructuredFieldDictionary(parsing: value))
        #expect(dictionary.members.count == count)
    }

    @Test("Booleans, duplicates and parameters (RFC 8941 §3.2)")
    func values() throws {
        let dictionary = try #require(StructuredFieldDictionary(parsing: "a=?0, b, c; foo=bar, a=?1"))
        #expect(dictionary["a"] == .boolean(true))
        #expect(dictionary["b"] == .boolean(true))
        #expect(dictionary["c"] == .boolean(true))
        #expect(dictionary.members.map(\.key) == ["a", "b", "c"])
        let numbers = try #require(
            StructuredFieldDictionary(parsing: "i=-999999999999999, d=123456789012.123, s=\"\\\"q\\\\\""))
        #expect(numbers["i"] == .integer(-999_999_999_999_999))
        #expect(numbers["d"] == .decimal(123_456_789_012.123))
        #expect(numbers["s"] == .string("\"q\\"))
    }

    @Test(
        "Invalid dictionaries fail as a whole (RFC 8941 §4.2)",
        arguments: [
            "a=1,", ",a=1", "a=1,,b=2", "A=1", "1a=1", "a=1 b=2", "a=1;", "a=(1", "a=(1 2)x", "a=\"x", "a=\"\u{7f}\"",
            "a=1234567890123456", "a=1234567890123.1", "a=1.1234", "a=1.", "a=-", "a=?", "a=?x", "a=:#:", "a=:abc",
            "\ta=1", "a=@", "a=1.2.3",
        ]
    )
    func invalid(value: String) {
        #expect(StructuredFieldDictionary(parsing: value) == nil)
    }
}
