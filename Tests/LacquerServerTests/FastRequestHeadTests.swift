import Testing

@testable import LacquerServer

/// The strict head reader in front of the decoder: what it answers itself, what it hands over
/// as one complete bodiless request, and what it leaves to the decoder for good.
@Suite("Fast request head")
struct FastRequestHeadTests {
    private static func classify(_ text: String, limits: Limits = Limits()) -> FastRequestHead.Outcome {
        Array(text.utf8).withUnsafeBytes { FastRequestHead.classify($0, limits: limits) }
    }

    private static func isPlain(_ text: String) -> Bool {
        if case .plain = classify(text) { return true }
        return false
    }

    private static func otherLength(_ text: String) -> Int? {
        if case .other(let length) = classify(text) { return length }
        return nil
    }

    private static func isUnsure(_ text: String) -> Bool {
        if case .unsure = classify(text) { return true }
        return false
    }

    @Test("a plain GET: target, host and length located; HEAD is told apart")
    func plainGet() throws {
        let text = "GET /a/b?c=d HTTP/1.1\r\nHost: example.com:8080\r\nUser-Agent: wrk\r\nACCEPT:  */* \r\n\r\nGET /next"
        guard case .plain(let head) = Self.classify(text) else {
            Issue.record("not plain")
            return
        }
        let bytes = Array(text.utf8)
        #expect(String(decoding: bytes[head.target], as: UTF8.self) == "/a/b?c=d")
        #expect(String(decoding: bytes[head.host], as: UTF8.self) == "example.com:8080")
        #expect(head.length == text.utf8.count - "GET /next".utf8.count)
        #expect(!head.isHead)
        guard case .plain(let headHead) = Self.classify("HEAD / HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive\r\n\r\n") else {
            Issue.record("HEAD not plain")
            return
        }
        #expect(headHead.isHead)
    }

    @Test("every prefix of a valid head needs more bytes; none is misread")
    func prefixes() {
        let text = "GET /x HTTP/1.1\r\nHost: a.example\r\nAccept: */*\r\n\r\n"
        let bytes = Array(text.utf8)
        for end in 0..<bytes.count {
            let outcome = bytes[..<end].withUnsafeBytes { FastRequestHead.classify($0, limits: Limits()) }
            guard case .needMore = outcome else {
                Issue.record("prefix of \(end) bytes: \(outcome)")
                return
            }
        }
        #expect(Self.isPlain(text))
    }

    @Test("complete bodiless requests that are not plain go to the decoder whole")
    func handedOver() {
        let cases = [
            "GET / HTTP/1.0\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nCookie: x=1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nRange: bytes=0-1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nIf-None-Match: \"x\"\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nCache-Control: no-cache\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: A.example\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a:80\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a \r\n\r\n",  // the decoder keeps the space; the flow refuses it
            "GET / HTTP/1.1\r\nHost: a\t\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            "DELETE / HTTP/1.1\r\nHost: a\r\n\r\n",
            "PURGE / HTTP/1.1\r\nHost: a\r\n\r\n",
            "get / HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX-Anything: 1\r\n\r\n",
        ]
        for text in cases {
            #expect(Self.otherLength(text + "NEXT") == text.utf8.count, "\(text.debugDescription)")
        }
    }

    @Test("bodies, upgrades, tunnels and malformed syntax are left to the decoder for good")
    func unsure() {
        let cases = [
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
            "GET / HTTP/1.1\r\nHost: a\r\ncontent-length: 0\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET / HTTP/1.1\nHost: a\n\n",  // bare LF
            "GET / HTTP/1.1\r\nHost: a\r\n X-Folded: b\r\n\r\n",  // obs-fold
            "GET / HTTP/1.1\r\nHost : a\r\n\r\n",  // space before the colon
            "GET / HTTP/1.1\r\nHost: a\u{0}b\r\n\r\n",  // NUL in a value
            "GET / HTTP/1.1\r\nHost: a\rX\r\n\r\n",  // bare CR
            "GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.2\r\nHost: a\r\n\r\n",
            "\u{16}\u{3}\u{1}\u{0}",  // a TLS ClientHello on the plain port
            "\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        ]
        for text in cases {
            #expect(Self.isUnsure(text), "\(text.debugDescription)")
        }
    }

    @Test("a head past the limits is the decoder's to refuse; a field over the field limit is not plain")
    func limits() {
        var limits = Limits()
        limits.requestLineBytes = 64
        limits.headerTotalBytes = 128
        limits.headerFieldCount = 4
        limits.headerFieldBytes = 40
        let endless = "GET / HTTP/1.1\r\nHost: a\r\nX-Long: " + String(repeating: "x", count: 1_000)
        guard case .unsure = Self.classify(endless, limits: limits) else {
            Issue.record("an endless head is not handed over")
            return
        }
        let bigField = "GET / HTTP/1.1\r\nHost: a\r\nUser-Agent: " + String(repeating: "x", count: 60) + "\r\n\r\n"
        guard case .other = Self.classify(bigField, limits: limits) else {
            Issue.record("a field over the limit is answered by the lane")
            return
        }
        let many = "GET / HTTP/1.1\r\nHost: a\r\n" + String(repeating: "Accept: x\r\n", count: 4) + "\r\n"
        guard case .other = Self.classify(many, limits: limits) else {
            Issue.record("too many fields are answered by the lane")
            return
        }
        let longTarget = "GET /" + String(repeating: "t", count: 70) + " HTTP/1.1\r\nHost: a\r\n\r\n"
        guard case .other = Self.classify(longTarget, limits: limits) else {
            Issue.record("a target over the limit is answered by the lane")
            return
        }
    }
}
