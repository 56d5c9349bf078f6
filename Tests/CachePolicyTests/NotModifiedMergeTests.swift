import NIOHTTP1
import Testing

@testable import CachePolicy

@Suite("NotModifiedMerge")
struct NotModifiedMergeTests {
    static let stored = headers(
        ("Content-Type", "text/html"), ("Content-Length", "1234"), ("Content-Encoding", "gzip"),
        ("Cache-Control", "max-age=60"), ("ETag", #""v1""#), ("Date", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ("X-Custom", "a"), ("X-Custom", "b")
    )

    @Test("304 fields replace the stored ones (RFC 9111 §3.2, §4.3.4)")
    func replaces() {
        let merged = NotModifiedMerge.merge(
            stored: Self.stored,
            notModified: headers(("cache-control", "max-age=600"), ("Date", "Sun, 06 Nov 1994 09:00:00 GMT"), ("ETag", #""v1""#))
        )
        #expect(merged["cache-control"] == ["max-age=600"])
        #expect(merged["date"] == ["Sun, 06 Nov 1994 09:00:00 GMT"])
        #expect(merged["etag"] == [#""v1""#])
        #expect(merged["content-type"] == ["text/html"])
    }

    @Test("Content-Length and the other framing fields keep their stored values (RFC 9111 §3.2, RFC 9110 §15.4.5)")
    func keepsContentLength() {
        let merged = NotModifiedMerge.merge(
            stored: Self.stored,
            notModified: headers(
                ("Content-Length", "0"), ("Content-Encoding", "br"), ("Transfer-Encoding", "chunked"), ("Content-Range", "bytes 0-1/2")
            )
        )
        #expect(merged["content-length"] == ["1234"])
        #expect(merged["content-encoding"] == ["gzip"])
        #expect(merged["transfer-encoding"] == [])
        #expect(merged["content-range"] == [])
    }

    @Test("Hop-by-hop fields of the 304, including those its Connection names, are not taken (RFC 9111 §3.1, RFC 9110 §7.6.1)")
    func skipsHopByHop() {
        let merged = NotModifiedMerge.merge(
            stored: Self.stored,
            notModified: headers(("Connection", "close, X-Hop"), ("Keep-Alive", "timeout=5"), ("X-Hop", "1"), ("X-New", "2"))
        )
        #expect(merged["connection"] == [])
        #expect(merged["keep-alive"] == [])
        #expect(merged["x-hop"] == [])
        #expect(merged["x-new"] == ["2"])
    }

    @Test("A repeated field in the 304 replaces all stored lines, keeping the 304's order (RFC 9111 §3.2)")
    func multiValue() {
        let merged = NotModifiedMerge.merge(stored: Self.stored, notModified: headers(("X-Custom", "c"), ("x-custom", "d")))
        #expect(merged["x-custom"] == ["c", "d"])
    }

    @Test("Fields absent from the 304 are kept; an empty 304 changes nothing (RFC 9111 §3.2)")
    func emptyNotModified() {
        let merged = NotModifiedMerge.merge(stored: Self.stored, notModified: headers())
        #expect(merged == Self.stored)
    }
}
