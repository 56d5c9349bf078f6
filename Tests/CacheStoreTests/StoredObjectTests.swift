import CacheStore
import NIOCore
import NIOHTTP1
import Testing

/// glibc's `malloc_usable_size(3)` (not in the Glibc module's headers): the bytes a chunk holds.
@_silgen_name("malloc_usable_size")
private func mallocUsableSize(_ pointer: UnsafeMutableRawPointer) -> Int

private func object(
    status: Int = 200,
    headers: [(String, String)],
    body: ByteBuffer = ByteBuffer(string: "hello")
) -> StoredObject {
    StoredObject(
        key: CacheKey(host: "example.test", target: "/o"), variant: "", varyNames: [], status: status,
        reason: "OK", headers: HTTPHeaders(headers), body: body, requestTime: 0, responseTime: 0, origin: 0,
        ttl: 60, grace: 0, keep: 0, mustRevalidate: false)
}

private func fields(_ headers: HTTPHeaders) -> [String] {
    headers.map { "\($0.name): \($0.value)" }
}

@Suite("StoredObject")
struct StoredObjectTests {
    @Test("header fields come back as stored: duplicates in order, Content-Length and a 200's Accept-Ranges not kept")
    func headersRoundTrip() {
        let stored = object(headers: [
            ("Content-Length", "5"), ("Date", "Tue, 24 Nov 2026 20:00:00 GMT"), ("Set-Cookie", "a=1"),
            ("Accept-Ranges", "bytes"), ("Set-Cookie", "b=2"), ("ETag", "\"x\""), ("X-Empty", ""),
        ])
        #expect(
            fields(stored.headers) == [
                "Date: Tue, 24 Nov 2026 20:00:00 GMT", "Set-Cookie: a=1", "Set-Cookie: b=2", "ETag: \"x\"", "X-Empty: ",
            ])
        #expect(stored.headers["set-cookie"] == ["a=1", "b=2"])
        #expect(String(buffer: stored.body) == "hello")
        #expect(stored.bodyLength == 5)
    }

    @Test("the reason phrase is kept with the fields, after the rewritten ones, whatever its length")
    func reasonPhrase() {
        let headers = HTTPHeaders([("Via", "1.1 up"), ("X-A", "1")])
        for reason in ["OK", "", "Not Found", "A Reason Phrase Longer Than Fifteen Bytes", "K"] {
            let stored = StoredObject(
                key: CacheKey(host: "example.test", target: "/r"), variant: "", varyNames: [], status: 404,
                reason: reason, headers: headers, body: ByteBuffer(string: "body"), requestTime: 0, responseTime: 0,
                origin: 0, ttl: 60, grace: 0, keep: 0, mustRevalidate: false)
            #expect(stored.reason == reason)
            #expect(stored.reasonIsOK == (reason == "OK"))
            #expect(fields(stored.headers) == ["X-A: 1", "Via: 1.1 up"])
            #expect(String(buffer: stored.body) == "body")
            #expect(stored.replacing(headers: headers, body: ByteBuffer(string: "x")).reason == reason)
        }
    }

    @Test("the key is kept in the object's own bytes: it comes back whole, and compares by digest and bytes")
    func keyKeptWithTheFields() {
        let keys = [
            CacheKey(host: "example.test", target: "/k"),
            CacheKey(host: "a", target: ""),
            CacheKey(parts: []),
            CacheKey(parts: ["/caf\u{E9}?q=\u{2603}", "h\u{F6}st.test", "extra part from hash_data"]),
            CacheKey(host: "example.test", target: "/" + String(repeating: "long/", count: 2_000)),
        ]
        for (index, key) in keys.enumerated() {
            for body in [ByteBuffer(string: "small"), ByteBuffer(repeating: 7, count: StoredObject.inlineBodyLimit + 1)] {
                let stored = StoredObject(
                    key: key, variant: "", varyNames: [], status: 404, reason: "Not Found",
                    headers: HTTPHeaders([("Via", "1.1 up"), ("X-A", "1")]), body: body, requestTime: 0, responseTime: 0,
                    origin: 0, ttl: 60, grace: 0, keep: 0, mustRevalidate: false)
                #expect(stored.key == key)
                #expect(stored.key.canonical == key.canonical && stored.keyDigest == key.digest)
                #expect(stored.hasKey(key))
                #expect(stored.reason == "Not Found" && fields(stored.headers) == ["X-A: 1", "Via: 1.1 up"])
                #expect(stored.body == body)
                for (otherIndex, other) in keys.enumerated() where otherIndex != index {
                    #expect(!stored.hasKey(other))
                }
                let twin = stored.replacing(headers: HTTPHeaders(), body: ByteBuffer(string: "x"))
                #expect(twin.hasSameKey(as: stored) && stored.hasSameKey(as: twin) && twin.key == key)
                let stranger = object(headers: [])
                #expect(!stranger.hasSameKey(as: stored) && !stored.hasSameKey(as: stranger))
            }
        }
    }

    @Test("Vary and a large body are kept alone and together; the object itself takes a 128-byte malloc chunk")
    func varyAndLargeBody() {
        let small = ByteBuffer(string: "small")
        let large = ByteBuffer(repeating: 9, count: StoredObject.inlineBodyLimit + 1)
        for (variant, names) in [("", [String]()), ("gzip", ["accept-encoding"]), ("", ["cookie"])] {
            for body in [small, large] {
                let stored = StoredObject(
                    key: CacheKey(host: "example.test", target: "/v"), variant: variant, varyNames: names, status: 200,
                    reason: "OK", headers: HTTPHeaders([("X-A", "1")]), body: body, requestTime: 0, responseTime: 0,
                    origin: 0, ttl: 60, grace: 0, keep: 0, mustRevalidate: false)
                #expect(stored.variant == variant && stored.varyNames == names)
                #expect(stored.body == body && stored.bodyLength == body.readableBytes)
                #expect(stored.plainBytes == (body == large ? stored.plainFieldsLength : stored.plainFieldsLength + body.readableBytes))
                // 120 bytes of instance: with malloc's 8-byte header, a 128-byte chunk (136 would take 144).
                let instance = Unmanaged.passUnretained(stored).toOpaque()
                #expect(mallocUsableSize(instance) <= 120, "the object's instance grew: \(mallocUsableSize(instance)) bytes")
            }
        }
    }

    @Test("fields a delivery rewrites or merges are kept after the others, in their order")
    func rewrittenFieldsKept() {
        let stored = object(
            status: 404, headers: [("Accept-Ranges", "none"), ("Via", "1.1 a"), ("Server", "origin"), ("Via", "1.1 b")])
        #expect(fields(stored.headers) == ["Server: origin", "Accept-Ranges: none", "Via: 1.1 a", "Via: 1.1 b"])
        var buffer = ByteBuffer()
        stored.writePlainFields(into: &buffer)
        #expect(String(buffer: buffer) == "Server: origin\r\n")
    }

    @Test("a plain delivery copies exactly the fields it does not rewrite, then the inline body")
    func plainFieldsAndInlineBody() {
        let stored = object(headers: [("Content-Length", "5"), ("Server", "origin"), ("Cache-Control", "max-age=60")])
        var buffer = ByteBuffer()
        stored.writePlainFields(into: &buffer)
        #expect(String(buffer: buffer) == "Server: origin\r\nCache-Control: max-age=60\r\n")
        #expect(stored.writeInlineBody(into: &buffer) == nil)
        #expect(String(buffer: buffer) == "Server: origin\r\nCache-Control: max-age=60\r\nhello")
        #expect(stored.plainFieldsLength == "Server: origin\r\nCache-Control: max-age=60\r\n".utf8.count)
        #expect(stored.plainBytes == stored.plainFieldsLength + 5)
        #expect(stored.plainDeliverable)
    }

    @Test("a body over the inline limit stays one shared buffer and is not copied into responses")
    func largeBody() {
        let large = ByteBuffer(repeating: UInt8(ascii: "z"), count: StoredObject.inlineBodyLimit + 1)
        let stored = object(headers: [("Server", "origin")], body: large)
        var buffer = ByteBuffer()
        #expect(stored.writeInlineBody(into: &buffer) == large)
        #expect(buffer.readableBytes == 0)
        #expect(stored.body == large)
        #expect(stored.bodyLength == large.readableBytes)
        #expect(stored.plainBytes == stored.plainFieldsLength)
        // Packed: the lines' size (1 byte), Server's code (1), the value's length (1) and bytes (6).
        #expect(stored.cost == 9 + large.readableBytes + StoredObject.overhead)
    }

    @Test("Via, Cache-Status or X-Cache-Status from upstream, or a status other than 200, need the full delivery")
    func plainDeliverable() {
        #expect(!object(headers: [("Via", "1.1 upstream")]).plainDeliverable)
        #expect(!object(headers: [("cache-status", "upstream; hit")]).plainDeliverable)
        #expect(!object(headers: [("X-Cache-Status", "HIT")]).plainDeliverable)
        #expect(!object(status: 404, headers: []).plainDeliverable)
        #expect(object(headers: [("Vary", "Accept-Encoding")]).plainDeliverable)
    }

    @Test("gzip in Content-Encoding is noted for the delivery's transform check")
    func mentionsGzip() {
        #expect(object(headers: [("Content-Encoding", "GZIP")]).mentionsGzip)
        #expect(object(headers: [("content-encoding", "br, x-gzip")]).mentionsGzip)
        #expect(!object(headers: [("Content-Encoding", "br")]).mentionsGzip)
        #expect(!object(headers: []).mentionsGzip)
    }

    @Test("CR, LF and NUL in a stored field become spaces: a field can never split a response")
    func controlBytesNeutralised() {
        let stored = object(headers: [("X-Bad", "a\r\nInjected: 1\u{0}b"), ("Server", "origin")])
        #expect(fields(stored.headers) == ["X-Bad: a  Injected: 1 b", "Server: origin"])
        var buffer = ByteBuffer()
        stored.writePlainFields(into: &buffer)
        #expect(String(buffer: buffer) == "X-Bad: a  Injected: 1 b\r\nServer: origin\r\n")
    }

    @Test("a copy with new fields and body keeps everything else")
    func replacing() {
        let stored = object(headers: [("Content-Encoding", "gzip")])
        let copy = stored.replacing(headers: HTTPHeaders([("Content-Type", "text/plain")]), body: ByteBuffer(string: "xy"))
        #expect(fields(copy.headers) == ["Content-Type: text/plain"])
        #expect(String(buffer: copy.body) == "xy")
        #expect(!copy.mentionsGzip)
        #expect(copy.key == stored.key && copy.ttl == stored.ttl && copy.status == stored.status)
    }
}
