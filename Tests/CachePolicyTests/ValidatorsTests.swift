import NIOHTTP1
import Testing

@testable import CachePolicy

@Suite("Validators")
struct ValidatorsTests {
    @Test(
        "The comparison table of RFC 9110 §8.8.3.2",
        arguments: [
            (#"W/"1""#, #"W/"1""#, false, true),
            (#"W/"1""#, #"W/"2""#, false, false),
            (#"W/"1""#, #""1""#, false, true),
            (#""1""#, #""1""#, true, true),
        ]
    )
    func comparisonTable(first: String, second: String, strong: Bool, weak: Bool) throws {
        let a = try #require(EntityTag.parse(first[...]))
        let b = try #require(EntityTag.parse(second[...]))
        #expect(a.strongMatch(b) == strong)
        #expect(b.strongMatch(a) == strong)
        #expect(a.weakMatch(b) == weak)
        #expect(b.weakMatch(a) == weak)
    }

    @Test(
        "Entity tags keep their quotes and weakness (RFC 9110 §8.8.3)",
        arguments: [
            (#""xyzzy""#, false, #""xyzzy""#),
            (#"W/"xyzzy""#, true, #""xyzzy""#),
            (#""""#, false, #""""#),
            (#"  "a,b"  "#, false, #""a,b""#),
            (#"W/"""#, true, #""""#),
        ]
    )
    func parse(text: String, weak: Bool, opaque: String) {
        #expect(EntityTag.parse(text[...]) == EntityTag(isWeak: weak, opaque: opaque))
    }

    @Test(
        "Malformed entity tags are rejected (RFC 9110 §8.8.3)",
        arguments: [#"xyzzy"#, #""xyzzy"#, #"xyzzy""#, #"w/"x""#, #"W/x"#, #""a"b""#, #""a b""#, "", "\"", #"W/ "x""#, "*"]
    )
    func parseInvalid(text: String) {
        #expect(EntityTag.parse(text[...]) == nil)
    }

    @Test("Lists parse each member, commas inside tags included; * is nil (RFC 9110 §13.1.2)")
    func parseList() {
        #expect(EntityTag.parseList("*") == nil)
        #expect(EntityTag.parseList("  * ") == nil)
        #expect(
            EntityTag.parseList(#""a", W/"b,c" ,, "d""#)
                == [
                    EntityTag(isWeak: false, opaque: #""a""#), EntityTag(isWeak: true, opaque: #""b,c""#),
                    EntityTag(isWeak: false, opaque: #""d""#),
                ]
        )
        #expect(EntityTag.parseList(#"junk, "ok""#) == [EntityTag(isWeak: false, opaque: #""ok""#)])
        #expect(EntityTag.parseList("") == [])
        #expect(EntityTag.parseList(#""x,*,y""#) == [EntityTag(isWeak: false, opaque: #""x,*,y""#)])
    }

    static let stored = headers(
        ("ETag", #""v1""#), ("Last-Modified", "Sun, 06 Nov 1994 08:49:37 GMT"), ("Date", "Sun, 06 Nov 1994 09:00:00 GMT")
    )

    @Test(
        "If-None-Match uses weak comparison; * matches any (RFC 9110 §13.1.2, §13.2.2)",
        arguments: [
            (#""v1""#, true),
            (#"W/"v1""#, true),
            (#""v0", "v1""#, true),
            (#""v2""#, false),
            ("*", true),
            ("garbage", false),
        ]
    )
    func ifNoneMatch(value: String, expected: Bool) {
        let request = headers(("If-None-Match", value))
        #expect(ConditionalRequest.isNotModified(method: "GET", requestHeaders: request, storedHeaders: Self.stored) == expected)
    }

    @Test("If-None-Match over several lines is one list (RFC 9110 §5.3)")
    func ifNoneMatchLines() {
        let request = headers(("If-None-Match", #""v0""#), ("If-None-Match", #""v1""#))
        #expect(ConditionalRequest.isNotModified(method: "GET", requestHeaders: request, storedHeaders: Self.stored))
    }

    @Test("A stored weak ETag matches If-None-Match weakly (RFC 9110 §13.1.2)")
    func storedWeakTag() {
        let stored = headers(("ETag", #"W/"v1""#))
        let request = headers(("If-None-Match", #""v1""#))
        #expect(ConditionalRequest.isNotModified(method: "GET", requestHeaders: request, storedHeaders: stored))
    }

    @Test("Without a stored ETag only * matches (RFC 9110 §13.1.2)")
    func noStoredTag() {
        let stored = headers(("Last-Modified", "Sun, 06 Nov 1994 08:49:37 GMT"))
        #expect(!ConditionalRequest.isNotModified(method: "GET", requestHeaders: headers(("If-None-Match", #""v1""#)), storedHeaders: stored))
        #expect(ConditionalRequest.isNotModified(method: "GET", requestHeaders: headers(("If-None-Match", "*")), storedHeaders: stored))
    }

    @Test("If-None-Match takes precedence over If-Modified-Since (RFC 9110 §13.1.3, §13.2.2)")
    func precedence() {
        let request = headers(("If-None-Match", #""v2""#), ("If-Modified-Since", "Mon, 07 Nov 1994 00:00:00 GMT"))
        #expect(!ConditionalRequest.isNotModified(method: "GET", requestHeaders: request, storedHeaders: Self.stored))
    }

    @Test(
        "If-Modified-Since against Last-Modified (RFC 9110 §13.1.3)",
        arguments: [
            ("Sun, 06 Nov 1994 08:49:37 GMT", true),  // equal: not modified since
            ("Mon, 07 Nov 1994 00:00:00 GMT", true),
            ("Sun, 06 Nov 1994 08:49:36 GMT", false),
            ("Sunday, 06-Nov-94 08:49:37 GMT", true),  // any HTTP-date format
            ("not a date", false),  // invalid: ignored
            ("", false),
        ]
    )
    func ifModifiedSince(value: String, expected: Bool) {
        let request = headers(("If-Modified-Since", value))
        #expect(ConditionalRequest.isNotModified(method: "GET", requestHeaders: request, storedHeaders: Self.stored) == expected)
        #expect(ConditionalRequest.isNotModified(method: "HEAD", requestHeaders: request, storedHeaders: Self.stored) == expected)
    }

    @Test("Without Last-Modified, If-Modified-Since is compared with Date (RFC 9111 §4.3.2)")
    func ifModifiedSinceDate() {
        let stored = headers(("Date", "Sun, 06 Nov 1994 09:00:00 GMT"))
        let after = headers(("If-Modified-Since", "Sun, 06 Nov 1994 09:00:00 GMT"))
        let before = headers(("If-Modified-Since", "Sun, 06 Nov 1994 08:59:59 GMT"))
        #expect(ConditionalRequest.isNotModified(method: "GET", requestHeaders: after, storedHeaders: stored))
        #expect(!ConditionalRequest.isNotModified(method: "GET", requestHeaders: before, storedHeaders: stored))
        #expect(!ConditionalRequest.isNotModified(method: "GET", requestHeaders: after, storedHeaders: headers()))
    }

    @Test("Two If-Modified-Since lines are ignored (RFC 9110 §13.1.3)")
    func duplicateIfModifiedSince() {
        let request = headers(("If-Modified-Since", "Mon, 07 Nov 1994 00:00:00 GMT"), ("If-Modified-Since", "Mon, 07 Nov 1994 00:00:00 GMT"))
        #expect(!ConditionalRequest.isNotModified(method: "GET", requestHeaders: request, storedHeaders: Self.stored))
    }

    @Test("Only GET and HEAD are answered with 304 (RFC 9110 §13.1.2, §13.1.3)", arguments: ["POST", "PUT", "DELETE", "get"])
    func otherMethods(method: String) {
        let request = headers(("If-None-Match", "*"), ("If-Modified-Since", "Mon, 07 Nov 1994 00:00:00 GMT"))
        #expect(!ConditionalRequest.isNotModified(method: method, requestHeaders: request, storedHeaders: Self.stored))
    }

    @Test("No conditional fields: never 304 (RFC 9110 §13.2.2)")
    func unconditional() {
        #expect(!ConditionalRequest.isNotModified(method: "GET", requestHeaders: headers(), storedHeaders: Self.stored))
    }

    @Test(
        "If-Range with an entity tag needs a strong match (RFC 9110 §13.1.5)",
        arguments: [(#""v1""#, true), (#" "v1" "#, true), (#"W/"v1""#, false), (#""v2""#, false), (#""v1"#, false)]
    )
    func ifRangeETag(value: String, expected: Bool) {
        #expect(ConditionalRequest.ifRangeMatches(value, storedHeaders: Self.stored) == expected)
    }

    @Test("If-Range never matches a stored weak ETag (RFC 9110 §13.1.5)")
    func ifRangeStoredWeak() {
        #expect(!ConditionalRequest.ifRangeMatches(#""v1""#, storedHeaders: headers(("ETag", #"W/"v1""#))))
    }

    @Test(
        "If-Range with a date needs an exact, strong Last-Modified (RFC 9110 §13.1.5, §8.8.2.2)",
        arguments: [
            ("Sun, 06 Nov 1994 08:49:37 GMT", true),
            ("Sun, 06 Nov 1994 08:49:38 GMT", false),  // later is not "exactly"
            ("Sun, 06 Nov 1994 08:49:36 GMT", false),
            ("garbage", false),
        ]
    )
    func ifRangeDate(value: String, expected: Bool) {
        #expect(ConditionalRequest.ifRangeMatches(value, storedHeaders: Self.stored) == expected)
    }

    @Test("A Last-Modified equal to Date is weak, so If-Range fails (RFC 9110 §8.8.2.2)")
    func ifRangeWeakDate() {
        let stored = headers(("Last-Modified", "Sun, 06 Nov 1994 08:49:37 GMT"), ("Date", "Sun, 06 Nov 1994 08:49:37 GMT"))
        #expect(!ConditionalRequest.ifRangeMatches("Sun, 06 Nov 1994 08:49:37 GMT", storedHeaders: stored))
        #expect(!ConditionalRequest.ifRangeMatches("Sun, 06 Nov 1994 08:49:37 GMT", storedHeaders: headers()))
    }
}
