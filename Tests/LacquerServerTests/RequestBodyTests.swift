import FixtureOrigin
import Foundation
import LacquerTesting
import NIOCore
import Testing

@testable import LacquerServer

/// Request bodies stream to the origin as they arrive (issue #5 item 6), over real sockets.
@Suite("Request bodies", .serialized, .timeLimit(.minutes(3)))
struct RequestBodyTests {
    /// `count` bytes that differ from chunk to chunk (so a reordered or dropped chunk changes the checksum).
    static func chunk(_ index: Int, count: Int) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        let stamp = Array("chunk-\(index)-".utf8)
        var offset = 0
        while offset < count {
            let take = min(stamp.count, count - offset)
            bytes.replaceSubrange(offset..<(offset + take), with: stamp[..<take])
            offset += take
        }
        return bytes
    }

    static func fnv(_ bytes: [UInt8], seed: UInt64 = FixtureOrigin.fnvOffsetBasis) -> UInt64 {
        bytes.withUnsafeBytes { FixtureOrigin.fnv1a($0, seed: seed) }
    }

    static func expectedAnswer(bytes: Int, checksum: UInt64) -> String {
        "bytes=\(bytes) fnv=\(String(checksum, radix: 16))\n"
    }

    /// Polls `condition` every 20 ms, at most `attempts` times; true once it holds.
    static func eventually(attempts: Int = 250, _ condition: () -> Bool) -> Bool {
        for _ in 0..<attempts {
            if condition() { return true }
            usleep(20_000)
        }
        return condition()
    }

    @Test("a 50 MiB POST (limit raised from the 10 MiB default) reaches the origin whole: byte count and checksum match")
    func largeUpload() async throws {
        try await withLacquer(configure: { $0.limits.requestBodyBytes = 64 << 20 }) { lacquer, port, origin in
            let chunkSize = 1024 * 1024
            let chunks = 50
            let result = try await runBlocking { () throws -> (RawHTTPResponse, UInt64) in
                let client = try RawHTTPClient(port: port, timeout: 30)
                defer { client.close() }
                try client.send("POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: \(chunkSize * chunks)\r\n\r\n")
                var checksum = FixtureOrigin.fnvOffsetBasis
                for index in 0..<chunks {
                    let bytes = Self.chunk(index, count: chunkSize)
                    checksum = Self.fnv(bytes, seed: checksum)
                    try client.send(bytes: bytes)
                }
                return (try client.readResponse(), checksum)
            }
            #expect(result.0.status == 200)
            #expect(result.0.bodyString == Self.expectedAnswer(bytes: chunkSize * chunks, checksum: result.1))
            let recorded = origin.requests(path: "/upload")
            #expect(recorded.count == 1)
            #expect(recorded.first?.header("Content-Length") == String(chunkSize * chunks))
            #expect(recorded.first?.header("Transfer-Encoding") == nil)
            #expect(lacquer.counters[.clientReq413] == 0)
        }
    }

    @Test("the origin gets the first body bytes before the client has sent the rest")
    func streamsBeforeTheEnd() async throws {
        try await withLacquer { _, port, origin in
            let half = 512 * 1024
            let first = Self.chunk(1, count: half)
            let second = Self.chunk(2, count: half)
            let client = try RawHTTPClient(port: port, timeout: 10)
            defer { client.close() }
            try await runBlocking {
                try client.send("PUT /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: \(2 * half)\r\n\r\n")
                try client.send(bytes: first)
            }
            // Bounded wait: the origin must see bytes while half the body is still unsent.
            let seen = try await runBlocking { Self.eventually { origin.bodyBytesReceived(path: "/upload") > 0 } }
            #expect(seen)
            #expect(origin.requestCount(path: "/upload") == 0)
            let response = try await runBlocking { () throws -> RawHTTPResponse in
                try client.send(bytes: second)
                return try client.readResponse()
            }
            #expect(response.status == 200)
            #expect(response.bodyString == Self.expectedAnswer(bytes: 2 * half, checksum: Self.fnv(first + second)))
        }
    }

    @Test("a chunked request body is forwarded chunked, large or small")
    func chunkedUpload() async throws {
        try await withLacquer { _, port, origin in
            let client = try RawHTTPClient(port: port, timeout: 10)
            defer { client.close() }
            for (index, sizes) in [[100_000, 300_000, 7, 250_000], [10, 20]].enumerated() {
                let path = "/upload?n=\(index)"
                let response = try await runBlocking { () throws -> (RawHTTPResponse, [UInt8]) in
                    try client.send("POST \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n")
                    var all: [UInt8] = []
                    for (n, size) in sizes.enumerated() {
                        let bytes = Self.chunk(n, count: size)
                        all += bytes
                        try client.send(String(size, radix: 16) + "\r\n")
                        try client.send(bytes: bytes)
                        try client.send("\r\n")
                    }
                    try client.send("0\r\n\r\n")
                    return (try client.readResponse(), all)
                }
                #expect(response.0.status == 200)
                #expect(response.0.bodyString == Self.expectedAnswer(bytes: response.1.count, checksum: Self.fnv(response.1)))
                let recorded = origin.requests(path: "/upload").last
                #expect(recorded?.header("Transfer-Encoding") == "chunked")
                #expect(recorded?.header("Content-Length") == nil)
            }
            // The connection stays in step after both.
            #expect(try await runBlocking { try client.request("GET", "/after").bodyString } == "ok /after\n")
        }
    }

    @Test("a chunked body that grows over the limit gets 413 and a close; so does a Content-Length over it")
    func overTheLimit() async throws {
        try await withLacquer(configure: { $0.limits.requestBodyBytes = 100_000 }) { lacquer, port, origin in
            let chunked = try await runBlocking { () throws -> (RawHTTPResponse, Bool) in
                let client = try RawHTTPClient(port: port, timeout: 10)
                defer { client.close() }
                try client.send("POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n")
                for n in 0..<2 {
                    try client.send(String(60_000, radix: 16) + "\r\n")
                    try client.send(bytes: Self.chunk(n, count: 60_000))
                    try client.send("\r\n")
                }
                let response = try client.readResponse()
                _ = try client.readToEOF()
                return (response, client.isClosedByPeer)
            }
            #expect(chunked.0.status == 413)
            #expect(chunked.0.header("Connection")?.lowercased() == "close")
            #expect(chunked.0.bodyString.contains("larger than 100000 bytes"))
            #expect(chunked.1)
            let declared = try await runBlocking {
                try httpGet(port: port, "/upload", method: "POST", headers: [("Content-Length", "100001")])
            }
            #expect(declared.status == 413)
            #expect(lacquer.counters[.clientReq413] == 2)
            #expect(origin.requestCount(path: "/upload") == 0)
            // Within the limit passes.
            let fits = try await runBlocking {
                try httpGet(port: port, "/upload", method: "POST", body: String(repeating: "x", count: 100_000))
            }
            #expect(fits.status == 200)
            #expect(fits.bodyString.hasPrefix("bytes=100000 "))
        }
    }

    /// Sends a byte every `interval` seconds until a send fails (the server closed its side
    /// fully) or `limit` seconds passed; the seconds it took, or nil if it never failed.
    static func secondsUntilSendFails(_ client: RawHTTPClient, interval: Double, limit: Double) -> Double? {
        let start = Date()
        while Date().timeIntervalSince(start) < limit {
            if (try? client.send("x")) == nil { return Date().timeIntervalSince(start) }
            usleep(UInt32(interval * 1_000_000))
        }
        return nil
    }

    @Test("a 413 while the body is still coming is a lingering close (RFC 9112 §9.6): the upload goes on and is dropped, the client reads the 413 and a FIN; then idle and total limits close it")
    func lingeringClose() async throws {
        try await withLacquer(configure: {
            $0.limits.requestBodyBytes = 64 * 1024
            $0.clientTimeouts.lingerIdle = .seconds(1)
            $0.clientTimeouts.lingerTotal = .seconds(3)
        }) { lacquer, port, origin in
            // A 16 MB upload refused by its Content-Length: every byte is taken, then the 413.
            let whole = try await runBlocking { () throws -> (RawHTTPResponse, [UInt8]) in
                let client = try RawHTTPClient(port: port, timeout: 10)
                defer { client.close() }
                let size = 16 << 20
                try client.send("POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: \(size)\r\n\r\n")
                for n in 0..<(size / (1 << 20)) { try client.send(bytes: Self.chunk(n, count: 1 << 20)) }
                let response = try client.readResponse()
                return (response, try client.readToEOF())
            }
            #expect(whole.0.status == 413 && whole.0.header("Connection")?.lowercased() == "close")
            #expect(whole.1.isEmpty, "bytes after the 413")
            // A client that stops sending: closed once nothing came for lingerIdle.
            let idle = try await runBlocking { () throws -> Double? in
                let client = try RawHTTPClient(port: port, timeout: 10)
                defer { client.close() }
                try client.send("POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000\r\n\r\n")
                try client.send(bytes: Self.chunk(0, count: 1000))
                #expect(try client.readResponse().status == 413)
                usleep(1_600_000)
                return Self.secondsUntilSendFails(client, interval: 0.05, limit: 2)
            }
            #expect(idle.map { $0 < 0.5 } ?? false, "still open 1.6 s after the last byte: \(String(describing: idle))")
            // A client that trickles: kept while bytes come, closed at lingerTotal.
            let trickle = try await runBlocking { () throws -> Double? in
                let client = try RawHTTPClient(port: port, timeout: 10)
                defer { client.close() }
                try client.send("POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000\r\n\r\n")
                #expect(try client.readResponse().status == 413)
                return Self.secondsUntilSendFails(client, interval: 0.2, limit: 8)
            }
            #expect(trickle.map { $0 > 2 && $0 < 5 } ?? false, "a trickling client closed after \(String(describing: trickle)) s, not at about 3")
            #expect(lacquer.counters[.clientReq413] == 3)
            #expect(origin.requestCount(path: "/upload") == 0)
        }
    }

    @Test("a client leaving mid-upload aborts the backend exchange; the next upload works")
    func clientGoneMidUpload() async throws {
        try await withLacquer { lacquer, port, origin in
            let client = try RawHTTPClient(port: port, timeout: 10)
            try await runBlocking {
                try client.send("POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10000000\r\n\r\n")
                try client.send(bytes: Self.chunk(0, count: 256 * 1024))
            }
            let seen = try await runBlocking { Self.eventually { origin.bodyBytesReceived(path: "/upload") > 0 } }
            #expect(seen)
            client.close()
            let counted = try await runBlocking {
                Self.eventually { lacquer.counters[.clientGoneMidUpload] == 1 && origin.openConnections == 0 }
            }
            #expect(counted)
            #expect(lacquer.counters[.clientGoneMidUpload] == 1)
            #expect(origin.openConnections == 0)  // the backend connection was closed, not pooled
            #expect(origin.requestCount(path: "/upload") == 0)
            let body = Self.chunk(9, count: 200_000)
            let next = try await runBlocking {
                try RawHTTPClient(port: port).request("POST", "/upload", body: body)
            }
            #expect(next.status == 200)
            #expect(next.bodyString == Self.expectedAnswer(bytes: body.count, checksum: Self.fnv(body)))
        }
    }

    @Test("a backend failing mid-upload gives 502 and a close, and a streamed PUT is not retried")
    func backendFailsMidUpload() async throws {
        try await withLacquer { lacquer, port, origin in
            let client = try RawHTTPClient(port: port, timeout: 10)
            defer { client.close() }
            // Warm a keep-alive backend connection: a failure on a reused one is what a retry is for.
            #expect(try await runBlocking { try client.request("GET", "/warm").status } == 200)
            let response = try await runBlocking { () throws -> RawHTTPResponse in
                try client.send(
                    "PUT /upload?dropafter=100000 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000\r\n\r\n")
                try client.send(bytes: Self.chunk(0, count: 200_000))
                return try client.readResponse()
            }
            #expect(response.status == 502)
            #expect(response.header("Connection")?.lowercased() == "close")
            #expect(lacquer.counters[.backendRetry] == 0)
            #expect(lacquer.counters[.fetchFailed] == 1)
            #expect(origin.requestCount(path: "/upload") == 0)
        }
    }

    @Test("a client that stops sending mid-body hits the body timeout; the backend connection is closed")
    func stalledUpload() async throws {
        try await withLacquer(configure: { $0.clientTimeouts.bodyIdle = .milliseconds(300) }) { lacquer, port, origin in
            let client = try RawHTTPClient(port: port, timeout: 10)
            defer { client.close() }
            let closed = try await runBlocking { () throws -> Bool in
                try client.send("POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n")
                try client.send(bytes: Self.chunk(0, count: 1000))
                _ = try client.readToEOF()
                return client.isClosedByPeer
            }
            #expect(closed)
            #expect(lacquer.counters[.sessClosedTimeout] == 1)
            let backendClosed = try await runBlocking { Self.eventually { origin.openConnections == 0 } }
            #expect(backendClosed)
            #expect(origin.requestCount(path: "/upload") == 0)
        }
    }

    @Test("a body that keeps trickling in still has to be complete within the total body timeout")
    func tricklingUpload() async throws {
        try await withLacquer(configure: {
            $0.clientTimeouts.bodyIdle = .seconds(5)
            $0.clientTimeouts.bodyTotal = .milliseconds(600)
        }) { lacquer, port, _ in
            let client = try RawHTTPClient(port: port, timeout: 10)
            defer { client.close() }
            let sent = try await runBlocking { () throws -> Int in
                try client.send("POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n")
                var sent = 0
                // One byte every 50 ms: never idle for long, but never done; at most 100 sends.
                for index in 0..<100 {
                    do {
                        try client.send(bytes: [UInt8(index & 0x7F)])
                    } catch {
                        break
                    }
                    sent += 1
                    Thread.sleep(forTimeInterval: 0.05)
                    if client.isClosedByPeer { break }
                }
                _ = try? client.readToEOF()
                return sent
            }
            #expect(client.isClosedByPeer)
            #expect(sent > 0)
            // The idle timeout (5 s) never ran out between bytes: only the total one can have fired.
            #expect(lacquer.counters[.sessClosedTimeout] == 1)
        }
    }

    @Test("Expect: 100-continue with a streamed body: 100 first, then the body goes through")
    func expectContinueStreamed() async throws {
        try await withLacquer { _, port, _ in
            let body = Self.chunk(3, count: 300_000)
            let response = try await runBlocking { () throws -> (RawHTTPResponse, RawHTTPResponse) in
                let client = try RawHTTPClient(port: port)
                defer { client.close() }
                try client.send(
                    "POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\nContent-Length: \(body.count)\r\n\r\n")
                let interim = try client.readResponse(returnInterim: true)
                try client.send(bytes: body)
                return (interim, try client.readResponse())
            }
            #expect(response.0.status == 100)
            #expect(response.1.status == 200)
            #expect(response.1.bodyString == Self.expectedAnswer(bytes: body.count, checksum: Self.fnv(body)))
        }
    }
}

/// The body stream and the retry rule, without sockets.
@Suite("Request body stream")
struct RequestBodyStreamTests {
    final class Source: RequestBodySource {
        var paused = false
        func pauseReading() { self.paused = true }
        func resumeReading() { self.paused = false }
    }

    final class Sink: RequestBodySink {
        var canTakeBody = true
        var written = 0
        var ended = false
        var aborted = false
        func writeRequestBody(_ buffer: ByteBuffer) { self.written += buffer.readableBytes }
        func endRequestBody() { self.ended = true }
        func abortRequestBody() { self.aborted = true }
    }

    static func bytes(_ count: Int) -> ByteBuffer {
        ByteBuffer(repeating: 0x61, count: count)
    }

    @Test("a small body complete before the connection is kept whole for a retry")
    func smallCompleteBodyIsReplayable() {
        let source = Source()
        let stream = RequestBodyStream(framing: .length(1000), source: source)
        stream.append(Self.bytes(600))
        stream.append(Self.bytes(400))
        stream.end()
        #expect(stream.takeComplete()?.readableBytes == 1000)
        #expect(stream.isReplayable)
        #expect(!source.paused)
    }

    @Test("an unfinished or large body is streamed, not kept")
    func largeBodyIsStreamed() {
        let source = Source()
        let stream = RequestBodyStream(framing: .chunked, source: source)
        stream.append(Self.bytes(RequestBodyStream.highWater + 1))
        #expect(source.paused)  // nobody takes it yet: the client is held back
        #expect(stream.takeComplete() == nil)
        let sink = Sink()
        sink.canTakeBody = false
        stream.attach(sink)
        #expect(!stream.isReplayable)
        #expect(sink.written == 0)
        #expect(source.paused)
        sink.canTakeBody = true
        stream.sinkWritable()
        #expect(sink.written == RequestBodyStream.highWater + 1)
        #expect(!source.paused)
        stream.append(Self.bytes(10))
        #expect(sink.written == RequestBodyStream.highWater + 11)
        stream.end()
        #expect(sink.ended)
    }

    @Test("a body that ends after the connection was attached, however small, is not replayable")
    func attachedBeforeTheEnd() {
        let stream = RequestBodyStream(framing: .length(10), source: nil)
        stream.append(Self.bytes(5))
        let sink = Sink()
        stream.attach(sink)
        stream.append(Self.bytes(5))
        stream.end()
        #expect(sink.written == 10 && sink.ended)
        #expect(!stream.isReplayable)
        #expect(stream.takeComplete() == nil)
    }

    @Test("an aborted body aborts its exchange")
    func abortReachesTheSink() {
        let stream = RequestBodyStream(framing: .length(100), source: nil)
        let sink = Sink()
        stream.attach(sink)
        stream.append(Self.bytes(5))
        stream.abort()
        #expect(sink.aborted)
        #expect(!sink.ended)
    }

    @Test(
        "retry after a reset reused connection: once, idempotent methods, never a streamed body",
        arguments: [
            (BackendError.closedBeforeHead, false, true, false, true),
            (.closedBeforeHead, true, true, false, false),
            (.closedBeforeHead, false, false, false, false),
            (.closedBeforeHead, false, true, true, false),
            (.firstByteTimeout, false, true, false, false),
        ])
    func retryRule(error: BackendError, retried: Bool, idempotent: Bool, streamed: Bool, expected: Bool) {
        #expect(
            RequestFlow.mayRetry(error: error, alreadyRetried: retried, idempotent: idempotent, bodyStreamed: streamed)
                == expected)
    }
}
