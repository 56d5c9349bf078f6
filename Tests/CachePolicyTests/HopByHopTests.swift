import NIOHTTP1
import Testing

@testable import CachePolicy

@Suite("HopByHop")
struct HopByHopTests {
    @Test("The fixed hop-by-hop fields are removed (RFC 9110 §7.6.1, HARDENING.md §6)")
    func fixedFields() {
        var fields = headers(
            ("Connection", "keep-alive"), ("Keep-Alive", "timeout=5"), ("TE", "trailers"), ("Trailer", "X-Sum"),
            ("Transfer-Encoding", "chunked"), ("Upgrade", "websocket"), ("Proxy-Connection", "keep-alive"),
            ("Content-Type", "text/plain")
        )
        HopByHop.strip(&fields)
        #expect(fields == headers(("Content-Type", "text/plain")))
    }

    @Test("Fields named in Connection are removed, across lines and case (RFC 9110 §7.6.1)")
    func connectionNamed() {
        var fields = headers(
            ("Connection", "X-A, , x-b"), ("connection", " X-C "), ("x-a", "1"), ("X-B", "2"), ("X-C", "3"), ("X-D", "4")
        )
        HopByHop.strip(&fields)
        #expect(fields == headers(("X-D", "4")))
    }

    @Test("Proxy-Authenticate and Proxy-Authorization are end-to-end in RFC 9110 (§11.7)")
    func proxyAuthKept() {
        var fields = headers(("Proxy-Authorization", "Basic x"), ("Proxy-Authenticate", "Basic"))
        HopByHop.strip(&fields)
        #expect(fields.count == 2)
    }

    @Test("Stripping headers without hop-by-hop fields changes nothing (RFC 9110 §7.6.1)")
    func noop() {
        let original = headers(("Host", "example.com"), ("Accept", "*/*"))
        var fields = original
        HopByHop.strip(&fields)
        #expect(fields == original)
    }
}
