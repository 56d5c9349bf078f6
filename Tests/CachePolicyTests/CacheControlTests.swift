import NIOHTTP1
import Testing

@testable import CachePolicy

@Suite("CacheControl")
struct CacheControlTests {
    @Test("Every known directive is recognised (RFC 9111 §5.2.1, §5.2.2, RFC 5861, RFC 8246)")
    func allDirectives() {
        let cc = CacheControl(
            parsing: "max-age=60, s-maxage=30, no-store, no-cache, private, must-revalidate, proxy-revalidate, "
                + "public, immutable, no-transform, must-understand, stale-while-revalidate=10, "
                + "stale-if-error=20, max-stale=5, min-fresh=7, only-if-cached"
        )
        #expect(cc.maxAge == 60)
        #expect(cc.sMaxAge == 30)
        #expect(cc.noStore)
        #expect(cc.noCache)
        #expect(cc.noCacheFields.isEmpty)
        #expect(cc.isPrivate)
        #expect(cc.privateFields.isEmpty)
        #expect(cc.mustRevalidate)
        #expect(cc.proxyRevalidate)
        #expect(cc.isPublic)
        #expect(cc.immutable)
        #expect(cc.noTransform)
        #expect(cc.mustUnderstand)
        #expect(cc.staleWhileRevalidate == 10)
        #expect(cc.staleIfError == 20)
        #expect(cc.maxStale == .seconds(5))
        #expect(cc.minFresh == 7)
        #expect(cc.onlyIfCached)
        #expect(!cc.isEmpty)
    }

    @Test("An empty or unknown-only value has no directives (RFC 9111 §5.2.3)", arguments: ["", "  ", ",,", "foo, bar=1, baz=\"x\""])
    func emptyValues(value: String) {
        let cc = CacheControl(parsing: value)
        #expect(cc.isEmpty)
        #expect(cc == CacheControl())
    }

    @Test(
        "Directive names are case-insensitive and whitespace is tolerated (RFC 9111 §5.2)",
        arguments: ["MAX-AGE=60", "Max-Age=60", " max-age=60 ", "\tmax-age = 60\t", ",, max-age=60 ,,", "foo, max-age=60, bar"]
    )
    func caseAndWhitespace(value: String) {
        #expect(CacheControl(parsing: value).maxAge == 60)
    }

    @Test(
        "Invalid max-age / s-maxage values mean stale (0), never a free pass (RFC 9111 §4.2.1, §1.2.2)",
        arguments: ["abc", "-1", "1.5", "", "+5", "60s", "6 0", "0x10", "\"abc\"", "\"60\"junk"]
    )
    func invalidDeltaSeconds(value: String) {
        #expect(CacheControl(parsing: "max-age=\(value)").maxAge == 0)
        #expect(CacheControl(parsing: "s-maxage=\(value)").sMaxAge == 0)
    }

    @Test("A bare max-age without a value is invalid, so 0 (RFC 9111 §1.2.2)")
    func bareMaxAge() {
        #expect(CacheControl(parsing: "max-age").maxAge == 0)
        #expect(CacheControl(parsing: "max-age junk").maxAge == 0)
    }

    @Test("A quoted max-age is accepted (RFC 9111 §5.2: recipients ought to accept both forms)")
    func quotedMaxAge() {
        #expect(CacheControl(parsing: "max-age=\"60\"").maxAge == 60)
        #expect(CacheControl(parsing: "s-maxage=\"120\", public").sMaxAge == 120)
    }

    @Test(
        "Delta-seconds overflow is clamped to 2147483648 (RFC 9111 §1.2.2)",
        arguments: ["2147483648", "2147483649", "99999999999999999999999999999", "4294967296"]
    )
    func overflowClamps(value: String) {
        #expect(CacheControl(parsing: "max-age=\(value)").maxAge == 2_147_483_648)
        #expect(CacheControl(parsing: "stale-if-error=\(value)").staleIfError == 2_147_483_648)
    }

    @Test("Values below the clamp are kept exactly (RFC 9111 §1.2.2)")
    func largeButValid() {
        #expect(CacheControl(parsing: "max-age=2147483647").maxAge == 2_147_483_647)
        #expect(CacheControl(parsing: "max-age=0").maxAge == 0)
        #expect(CacheControl(parsing: "max-age=007").maxAge == 7)
    }

    @Test("Duplicate max-age / s-maxage keep the smallest value (RFC 9111 §4.2.1 conflicting directives)")
    func duplicatesKeepSmallest() {
        #expect(CacheControl(parsing: "max-age=600, max-age=60").maxAge == 60)
        #expect(CacheControl(parsing: "max-age=60, max-age=600").maxAge == 60)
        #expect(CacheControl(parsing: "s-maxage=10, s-maxage=abc").sMaxAge == 0)
        #expect(CacheControl(parsing: "stale-while-revalidate=30, stale-while-revalidate=5").staleWhileRevalidate == 5)
    }

    @Test("All field lines are combined into one list (RFC 9110 §5.3)")
    func multipleLines() {
        let fields = headers(("Cache-Control", "max-age=600"), ("Content-Type", "text/plain"), ("cache-control", "no-cache, max-age=60"))
        let cc = CacheControl(headers: fields)
        #expect(cc.maxAge == 60)
        #expect(cc.noCache)
    }

    @Test("Another field with the same syntax can be read by name (Surrogate-Control)")
    func otherFieldName() {
        let fields = headers(("Cache-Control", "max-age=5"), ("Surrogate-Control", "no-store"))
        #expect(CacheControl(headers: fields, name: "surrogate-control").noStore)
        #expect(CacheControl(headers: fields, name: "Surrogate-Control").maxAge == nil)
        #expect(!CacheControl(headers: fields).noStore)
    }

    @Test("Bare no-cache and private have no field list (RFC 9111 §5.2.2.4, §5.2.2.7)")
    func bareNoCacheAndPrivate() {
        let cc = CacheControl(parsing: "no-cache, private")
        #expect(cc.noCache && cc.noCacheFields.isEmpty)
        #expect(cc.isPrivate && cc.privateFields.isEmpty)
    }

    @Test("Qualified no-cache / private list lowercased field names, not the bare flag (RFC 9111 §5.2.2.4, §5.2.2.7)")
    func qualifiedNoCacheAndPrivate() {
        let cc = CacheControl(parsing: "no-cache=\"Set-Cookie, X-Foo\", private=\" Authorization ,X-Bar,\"")
        #expect(!cc.noCache)
        #expect(cc.noCacheFields == ["set-cookie", "x-foo"])
        #expect(!cc.isPrivate)
        #expect(cc.privateFields == ["authorization", "x-bar"])
    }

    @Test("The token form names one field (RFC 9111 §5.2.2.4)")
    func tokenFormFieldName() {
        let cc = CacheControl(parsing: "no-cache=Set-Cookie")
        #expect(!cc.noCache)
        #expect(cc.noCacheFields == ["set-cookie"])
    }

    @Test("An empty or malformed field list is read as the bare, stricter form (RFC 9111 §5.2.2.4)")
    func emptyFieldListIsBare() {
        #expect(CacheControl(parsing: "no-cache=\"\"").noCache)
        #expect(CacheControl(parsing: "private=\"\"").isPrivate)
        #expect(CacheControl(parsing: "private=\"a\"junk").isPrivate)
    }

    @Test("A comma inside a quoted string does not split the list (RFC 9110 §5.6.4)")
    func commaInsideQuotes() {
        let cc = CacheControl(parsing: "foo=\"a, no-store, b\", max-age=5")
        #expect(!cc.noStore)
        #expect(cc.maxAge == 5)
    }

    @Test("Backslash escapes in quoted strings are honoured (RFC 9110 §5.6.4)")
    func quotedPairs() {
        let cc = CacheControl(parsing: #"foo="a\", no-store", private="x\-y""#)
        #expect(!cc.noStore)
        #expect(cc.privateFields == ["x-y"])
    }

    @Test("An unterminated quoted string runs to the end and keeps earlier directives (RFC 9110 §5.6.4)")
    func unterminatedQuote() {
        let cc = CacheControl(parsing: "max-age=5, foo=\"abc, no-store")
        #expect(cc.maxAge == 5)
        #expect(!cc.noStore)
    }

    @Test("Junk after a flag directive keeps the flag (the restrictive reading)")
    func junkAfterFlag() {
        #expect(CacheControl(parsing: "no-store junk").noStore)
        #expect(CacheControl(parsing: "=5, no-store").noStore)
        #expect(CacheControl(parsing: "\"quoted\", private").isPrivate)
    }

    @Test("max-stale: bare means any, a value limits, invalid is ignored (RFC 9111 §5.2.1.2)")
    func maxStale() {
        #expect(CacheControl(parsing: "max-stale").maxStale == .any)
        #expect(CacheControl(parsing: "max-stale=30").maxStale == .seconds(30))
        #expect(CacheControl(parsing: "max-stale=abc").maxStale == nil)
        #expect(CacheControl(parsing: "max-stale, max-stale=30").maxStale == .seconds(30))
        #expect(CacheControl(parsing: "max-stale=30, max-stale").maxStale == .seconds(30))
        #expect(CacheControl(parsing: "max-stale=30, max-stale=10").maxStale == .seconds(10))
    }

    @Test("min-fresh: invalid is ignored, duplicates keep the largest (RFC 9111 §5.2.1.3)")
    func minFresh() {
        #expect(CacheControl(parsing: "min-fresh=abc").minFresh == nil)
        #expect(CacheControl(parsing: "min-fresh=5, min-fresh=20").minFresh == 20)
    }

    @Test("Invalid stale-while-revalidate / stale-if-error are ignored (RFC 5861 §3, §4)")
    func invalidStaleExtensions() {
        let cc = CacheControl(parsing: "stale-while-revalidate=abc, stale-if-error=-1")
        #expect(cc.staleWhileRevalidate == nil)
        #expect(cc.staleIfError == nil)
    }

    @Test("Extension directives with values do not affect known ones (RFC 9111 §5.2.3)")
    func extensionsIgnored() {
        let cc = CacheControl(parsing: "community=\"UCI\", max-age=10, x-foo=bar")
        var expected = CacheControl()
        expected.maxAge = 10
        #expect(cc == expected)
    }
}
