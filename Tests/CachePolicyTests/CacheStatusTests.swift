import Testing

@testable import CachePolicy

@Suite("CacheStatus")
struct CacheStatusTests {
    @Test(
        "Cache-Status members serialise as structured fields (RFC 9211 §2, RFC 8941 §3.1)",
        arguments: [
            (CacheStatusValue(hit: true, ttl: 42), "Lacquer; hit; ttl=42"),
            (CacheStatusValue(fwd: .miss, fwdStatus: 200, ttl: 60, stored: true), "Lacquer; fwd=miss; fwd-status=200; stored; ttl=60"),
            (CacheStatusValue(), "Lacquer"),
            (CacheStatusValue(hit: true, ttl: -5), "Lacquer; hit; ttl=-5"),
            (CacheStatusValue(fwd: .uriMiss, collapsed: true), "Lacquer; fwd=uri-miss; collapsed"),
            (CacheStatusValue(fwd: .varyMiss, fwdStatus: 304), "Lacquer; fwd=vary-miss; fwd-status=304"),
            (CacheStatusValue(fwd: .stale, fwdStatus: 503, ttl: -10, detail: "stale-if-error"),
             "Lacquer; fwd=stale; fwd-status=503; ttl=-10; detail=stale-if-error"),
            (CacheStatusValue(fwd: .bypass, detail: "no store"), #"Lacquer; fwd=bypass; detail="no store""#),
            (CacheStatusValue(fwd: .method), "Lacquer; fwd=method"),
            (CacheStatusValue(fwd: .request), "Lacquer; fwd=request"),
            (CacheStatusValue(fwd: .partial), "Lacquer; fwd=partial"),
        ]
    )
    func serialise(value: CacheStatusValue, expected: String) {
        #expect(value.serialized() == expected)
    }

    @Test("The cache name is a token when possible, else an escaped string (RFC 8941 §3.3.3, §3.3.4)")
    func cacheName() {
        let value = CacheStatusValue(hit: true)
        #expect(value.serialized(cacheName: "edge-1.example:8080/a") == "edge-1.example:8080/a; hit")
        #expect(value.serialized(cacheName: "my cache") == #""my cache"; hit"#)
        #expect(value.serialized(cacheName: "1cache") == #""1cache"; hit"#)
        #expect(value.serialized(cacheName: "*star") == "*star; hit")
    }

    @Test("Detail strings escape quotes and backslashes and replace non-ASCII (RFC 8941 §3.3.3)")
    func detailEscaping() {
        let value = CacheStatusValue(detail: "a\"b\\c\u{7}é")
        #expect(value.serialized() == #"Lacquer; detail="a\"b\\c???""#)
    }

    @Test("X-Cache-Status values are nginx's words")
    func xCacheStatus() {
        #expect(XCacheStatus.hit.rawValue == "HIT")
        #expect(XCacheStatus.revalidated.rawValue == "REVALIDATED")
        #expect(XCacheStatus.updating.rawValue == "UPDATING")
    }
}
