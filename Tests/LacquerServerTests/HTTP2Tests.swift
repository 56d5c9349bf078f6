import CacheStore
import FixtureOrigin
import Foundation
import LacquerTesting
import NIOCore
import NIOHPACK
import NIOHTTP2
import Testing

@testable import LacquerServer

/// HTTP/2 to clients (RFC 9113): over TLS by ALPN and with prior knowledge on an `,h2c`
/// listener, every stream through the same request flow as HTTP/1.1; and the defences NIO's
/// HTTP/2 handler is configured with, tried with raw frames.
@Suite("HTTP/2", .serialized, .timeLimit(.minutes(3)))
struct HTTP2Tests {
    typealias Curl = TLSTests

    @Test("over TLS by ALPN: a miss then a hit, sharing the object with HTTP/1.1; HEAD has no body; PURGE works")
    func overTLS() async throws {
        try await TLSTests.withTLSLacquer { lacquer, tlsPort, _, origin, _ in
            let url = "https://localhost:\(tlsPort)/h?cc=max-age%3D60"
            let first = try #require(try Curl.curl(["-k", "--http2", url]).first)
            #expect(first.version == "HTTP/2" && first.status == 200)
            #expect(first.header("x-cache-status") == "MISS")
            #expect(first.header("cache-status")?.contains("fwd=uri-miss") == true)
            let second = try #require(try Curl.curl(["-k", "--http2", url]).first)
            #expect(second.header("x-cache-status") == "HIT" && second.body == "ok /h\n")
            #expect(second.header("connection") == nil && second.header("keep-alive") == nil)
            let overHTTP1 = try #require(try Curl.curl(["-k", "--http1.1", url]).first)
            #expect(overHTTP1.header("x-cache-status") == "HIT")
            #expect(origin.requestCount(path: "/h") == 1)
            let head = try ExternalTool.run("curl", ["-s", "-k", "--http2", "-I", url, "--max-time", "10"])
            #expect(head.output.hasPrefix("HTTP/2 200"), "\(head.output)")
            #expect(head.output.lowercased().contains("content-length: 6"))
            let purge = try #require(try Curl.curl(["-k", "--http2", "-X", "PURGE", url]).first)
            #expect(purge.status == 200, "\(purge.body)")
            let after = try #require(try Curl.curl(["-k", "--http2", url]).first)
            #expect(after.header("x-cache-status") == "MISS")
            #expect(origin.requestCount(path: "/h") == 2)
            #expect(lacquer.counters[.http2Connections] >= 5)
        }
    }

    @Test("over TLS, hits answered in one read come back whole in a few full TLS records, not a record per frame")
    func hitsShareTLSRecords() async throws {
        try await TLSTests.withTLSLacquer { lacquer, tlsPort, _, origin, _ in
            let authority = "localhost:\(tlsPort)"
            let path = "/bytes/1024?cc=max-age%3D60"
            let warm = try #require(try Curl.curl(["-k", "--http2", "https://\(authority)\(path)"]).first)
            #expect(warm.status == 200 && warm.body.count == 1024)
            // A client that reads the raw records (Python's ssl over memory BIOs): 10 GET streams
            // for the stored object in one write; it counts the records that come back after it
            // and checks every stream's DATA.
            let script = """
                import socket, ssl, sys
                ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
                ctx.set_alpn_protocols(["h2"])
                incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
                tls = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
                sock = socket.create_connection(("127.0.0.1", \(tlsPort))); sock.settimeout(5)
                raw = bytearray(); records = 0
                def receive():
                    global records
                    data = sock.recv(65536)
                    if not data: sys.exit("closed")
                    raw.extend(data)
                    while len(raw) >= 5 and len(raw) >= 5 + int.from_bytes(raw[3:5], "big"):
                        records += 1
                        del raw[:5 + int.from_bytes(raw[3:5], "big")]
                    incoming.write(data)
                while True:
                    try:
                        tls.do_handshake(); break
                    except ssl.SSLWantReadError:
                        sock.sendall(outgoing.read()); receive()
                sock.sendall(outgoing.read())
                assert tls.selected_alpn_protocol() == "h2"
                def frame(kind, flags, stream, payload=b""):
                    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload
                def literal(index, value):
                    return bytes([index, len(value)]) + value.encode()
                block = b"\\x82\\x87" + literal(4, "\(path)") + literal(1, "\(authority)")
                streams = list(range(1, 21, 2))
                out = b"PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n" + frame(4, 0, 0)
                out += b"".join(frame(1, 5, s, block) for s in streams)
                tls.write(out); sock.sendall(outgoing.read())
                before = records
                plain = bytearray(); bodies = {}; ended = set()
                while len(ended) < len(streams):
                    receive()
                    try:
                        while True: plain.extend(tls.read(65536))
                    except ssl.SSLWantReadError:
                        pass
                    while len(plain) >= 9 and len(plain) >= 9 + int.from_bytes(plain[0:3], "big"):
                        length = int.from_bytes(plain[0:3], "big"); kind, flags = plain[3], plain[4]
                        stream = int.from_bytes(plain[5:9], "big") & 0x7FFFFFFF
                        if kind == 0:
                            bodies[stream] = bodies.get(stream, b"") + bytes(plain[9:9 + length])
                            if flags & 1: ended.add(stream)
                        del plain[:9 + length]
                expected = bytes(97 + i % 26 for i in range(1024))
                print("records", records - before, "whole", sum(1 for s in streams if bodies.get(s) == expected))
                """
            let python = try ExternalTool.run("python3", ["-c", script], timeout: 20)
            let words = python.output.split(separator: " ").map { String($0).trimmingCharacters(in: .whitespacesAndNewlines) }
            #expect(words.count == 4 && words[0] == "records", "\(python.output) \(python.errors)")
            let records = words.count == 4 ? Int(words[1]) ?? -1 : -1
            let whole = words.count == 4 ? Int(words[3]) ?? -1 : -1
            #expect(whole == 10, "every stream's 1,024 bytes: \(python.output) \(python.errors)")
            // One record per frame piece would be 30 for the answers alone; the server's SETTINGS
            // and TLS 1.3 session tickets may come in a few more.
            #expect(records >= 1 && records <= 8, "\(records) records")
            #expect(origin.requestCount(path: "/bytes/1024") == 1)
            #expect(lacquer.counters[.cacheHit] >= 10)
        }
    }

    @Test("a range on a miss over HTTP/2: the stream gets its 206 as the fill streams by, the next stream a HIT")
    func rangeOnMiss() async throws {
        try await TLSTests.withTLSLacquer { _, _, plainPort, origin, _ in
            let url = "http://127.0.0.1:\(plainPort)/bytes/3000000?cc=max-age%3D60"
            let part = try #require(try Curl.curl(["--http2-prior-knowledge", "-r", "100-199", url]).first)
            #expect(part.version == "HTTP/2" && part.status == 206)
            #expect(part.header("content-range") == "bytes 100-199/3000000")
            #expect(part.body == String(decoding: FixtureOrigin.pattern(3_000_000)[100..<200], as: UTF8.self))
            let suffix = try #require(try Curl.curl(["--http2-prior-knowledge", "-r", "-10", url]).first)
            #expect(suffix.status == 206 && suffix.body == String(decoding: FixtureOrigin.pattern(3_000_000)[2_999_990...], as: UTF8.self))
            #expect(origin.requestCount(path: "/bytes/3000000") == 1)
        }
    }

    @Test("a disk hit over HTTP/2 is answered by the stream lane, as over HTTP/1.1: detail=disk, promoted, counted")
    func diskHitInTheLane() async throws {
        try await TLSTests.withTLSLacquer { lacquer, _, plainPort, origin, _ in
            let url = "http://127.0.0.1:\(plainPort)/bytes/5000?cc=max-age%3D60"
            let miss = try #require(try Curl.curl(["--http2-prior-knowledge", url]).first)
            #expect(miss.status == 200 && miss.header("x-cache-status") == "MISS")
            #expect(try await waitForDiskWrites(lacquer, count: 1), "disk writes did not complete")
            lacquer.memory.removeAll { _ in true }
            let fast = lacquer.counters[.cacheHitFast]
            let hit = try #require(try Curl.curl(["--http2-prior-knowledge", url]).first)
            #expect(hit.version == "HTTP/2" && hit.status == 200 && hit.header("x-cache-status") == "HIT")
            #expect(hit.header("cache-status")?.contains("detail=disk") == true)
            #expect(hit.body == String(decoding: FixtureOrigin.pattern(5000), as: UTF8.self))
            #expect(lacquer.counters[.cacheHitFast] == fast + 1)
            #expect(lacquer.counters[.diskHit] == 1 && lacquer.counters[.diskPromotions] == 1)
            #expect(origin.requestCount(path: "/bytes/5000") == 1)
        }
    }

    @Test("a sliced object over HTTP/2: a seek fetches one slice, then the whole body streams from the slices")
    func slicedObject() async throws {
        try await TLSTests.withTLSLacquer(configure: {
            $0.sliceThreshold = 1 << 20
            $0.sliceSize = 256 << 10
        }) { lacquer, _, plainPort, origin, _ in
            let url = "http://127.0.0.1:\(plainPort)/bytes/3000000?cc=max-age%3D60&ranges=1&etag=h2"
            let pattern = FixtureOrigin.pattern(3_000_000)
            let seek = try #require(try Curl.curl(["--http2-prior-knowledge", "-r", "2000000-2000099", url]).first)
            #expect(seek.version == "HTTP/2" && seek.status == 206 && seek.header("content-range") == "bytes 2000000-2000099/3000000")
            #expect(seek.body == String(decoding: pattern[2_000_000..<2_000_100], as: UTF8.self))
            #expect(origin.requests(path: "/bytes/3000000").map { $0.header("Range") } == ["bytes=1835008-2097151"])
            let whole = try #require(try Curl.curl(["--http2-prior-knowledge", url]).first)
            #expect(whole.status == 200 && whole.header("x-cache-status") == "HIT")
            #expect(whole.body == String(decoding: pattern, as: UTF8.self))
            #expect(origin.requestCount(path: "/bytes/3000000") == 12)
            #expect(lacquer.counters[.slicesStored] == 12)
        }
    }

    @Test("h2c with prior knowledge and HTTP/1.1 on one ,h2c listener; a POST body goes through; split cookies are joined")
    func priorKnowledge() async throws {
        try await TLSTests.withTLSLacquer { lacquer, _, plainPort, origin, _ in
            let url = "http://127.0.0.1:\(plainPort)/p?cc=max-age%3D60"
            let first = try #require(try Curl.curl(["--http2-prior-knowledge", url]).first)
            #expect(first.version == "HTTP/2" && first.header("x-cache-status") == "MISS")
            let plain = try httpGet(port: plainPort, "/p?cc=max-age%3D60", headers: [("Host", "127.0.0.1:\(plainPort)")])
            #expect(plain.header("X-Cache-Status") == "HIT")
            let upload = try #require(
                try Curl.curl(["--http2-prior-knowledge", "--data-binary", String(repeating: "x", count: 100_000), "http://127.0.0.1:\(plainPort)/upload"])
                    .first)
            #expect(upload.status == 200 && upload.body.hasPrefix("bytes=100000 "), "\(upload.body)")
            let echo = try #require(
                try Curl.curl(["--http2-prior-knowledge", "-H", "Cookie: a=1", "-H", "Cookie: b=2", "http://127.0.0.1:\(plainPort)/echo"]).first)
            #expect(echo.body.lowercased().contains("cookie: a=1; b=2"), "\(echo.body)")
            #expect(origin.requestCount(path: "/p") == 1)
            #expect(lacquer.counters[.http2Connections] == 3)
        }
    }

    @Test("plain hits on HTTP/2 are answered by the hit lane with the fields HTTP/1.1's fast lane writes; anything else takes the flow")
    func hitLane() async throws {
        try await TLSTests.withTLSLacquer { lacquer, tlsPort, plainPort, _, _ in
            let url = "http://127.0.0.1:\(plainPort)/lane?cc=max-age%3D60"
            _ = try Curl.curl(["--http2-prior-knowledge", url])
            let fastBefore = lacquer.counters[.cacheHitFast]
            let viaLane = try #require(try Curl.curl(["--http2-prior-knowledge", url]).first)
            #expect(lacquer.counters[.cacheHitFast] == fastBefore + 1)
            #expect(viaLane.status == 200 && viaLane.body == "ok /lane\n")
            let overHTTP1 = try httpGet(port: plainPort, "/lane?cc=max-age%3D60", headers: [("Host", "127.0.0.1:\(plainPort)")])
            #expect(lacquer.counters[.cacheHitFast] == fastBefore + 2)
            // The same fields, names lowercased, Age and Date aside (either may tick between the two).
            let ticking: Set<String> = ["age", "date"]
            let http1Fields = overHTTP1.headers.filter { !ticking.contains($0.0.lowercased()) }.map { ($0.0.lowercased(), $0.1) }
            let http2Fields = viaLane.headers.filter { !ticking.contains($0.0) }
            #expect(http1Fields.map { "\($0.0): \($0.1)" } == http2Fields.map { "\($0.0): \($0.1)" })
            #expect(viaLane.header("age") != nil && viaLane.header("date") != nil)
            // HEAD: the head alone.
            let head = try ExternalTool.run("curl", ["-s", "-I", "--http2-prior-knowledge", url, "--max-time", "10"])
            #expect(head.output.hasPrefix("HTTP/2 200") && head.output.lowercased().contains("content-length: 9"), "\(head.output)")
            #expect(lacquer.counters[.cacheHitFast] == fastBefore + 3)
            // A field not on the allow-list makes the flow answer: still a HIT.
            let withField = try #require(try Curl.curl(["--http2-prior-knowledge", "-H", "X-Debug: 1", url]).first)
            #expect(withField.header("x-cache-status") == "HIT")
            // A Cookie too: builtin.vcl passes it, as Varnish's does.
            let withCookie = try #require(try Curl.curl(["--http2-prior-knowledge", "-H", "Cookie: a=1", url]).first)
            #expect(withCookie.header("x-cache-status") == "BYPASS")
            #expect(lacquer.counters[.cacheHitFast] == fastBefore + 3)
            // Over TLS too.
            _ = try Curl.curl(["-k", "--http2", "https://localhost:\(tlsPort)/lane2?cc=max-age%3D60"])
            let tlsHit = try #require(try Curl.curl(["-k", "--http2", "https://localhost:\(tlsPort)/lane2?cc=max-age%3D60"]).first)
            #expect(tlsHit.header("x-cache-status") == "HIT" && tlsHit.body == "ok /lane2\n")
            #expect(lacquer.counters[.cacheHitFast] == fastBefore + 4)
        }
    }

    @Test("the lane's reading of a header block: pseudo-fields, the allow-list, the limits")
    func plainRequestRules() {
        let limits = Limits()
        func plain(_ fields: [(String, String)]) -> Bool {
            HTTP2HitLane.plainRequest(HPACKHeaders(fields), limits: limits) != nil
        }
        let base = [(":method", "GET"), (":scheme", "https"), (":authority", "example.com"), (":path", "/a?b=1")]
        #expect(plain(base))
        #expect(plain(base + [("accept-encoding", "gzip, br"), ("user-agent", "curl"), ("accept", "*/*")]))
        #expect(!plain(base + [("cookie", "a=1")]))
        #expect(!plain(base + [("authorization", "Basic x")]))
        #expect(!plain(base + [("range", "bytes=0-1")]))
        #expect(!plain(base + [("if-none-match", "\"x\"")]))
        #expect(!plain(base + [("cache-control", "no-cache")]))
        #expect(!plain(base + [("accept-encoding", "gzip"), ("accept-encoding", "br")]))
        #expect(!plain([(":method", "POST"), (":scheme", "https"), (":authority", "example.com"), (":path", "/")]))
        #expect(!plain([(":method", "GET"), (":scheme", "https"), (":authority", "Example.COM"), (":path", "/")]))
        #expect(!plain([(":method", "GET"), (":scheme", "https"), (":authority", "example.com"), (":path", "*")]))
        #expect(!plain([(":method", "GET"), (":scheme", "https"), (":path", "/")]))
        #expect(!plain(base + [("x-long", String(repeating: "v", count: limits.headerFieldBytes))]))
    }

    @Test("streams of one connection coalesce: five concurrent requests for a slow object make one fetch")
    func coalescingAcrossStreams() async throws {
        try await TLSTests.withTLSLacquer { lacquer, tlsPort, _, origin, _ in
            let url = "https://localhost:\(tlsPort)/delay/600?cc=max-age%3D60"
            let responses = try Curl.curl(["-k", "--http2", "-Z", "--parallel-max", "5"] + Array(repeating: url, count: 5))
            #expect(responses.count == 5)
            #expect(responses.allSatisfy { $0.status == 200 && $0.body == "ok /delay/600\n" })
            #expect(origin.requestCount(path: "/delay/600") == 1)
            #expect(lacquer.counters[.http2Connections] == 1)
            #expect(lacquer.counters[.http2Streams] == 5)
        }
    }

    @Test("VCL sees req.proto HTTP/2.0 and the same caching decisions")
    func vclSeesProtocol() async throws {
        let folder = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let path = folder + "/site.vcl"
        try """
        vcl 4.1;
        sub vcl_deliver {
            set resp.http.X-Proto = req.proto;
        }
        """.write(toFile: path, atomically: true, encoding: .utf8)
        let compiled = try VCLLoader.load(path: path, purgeACL: .loopback)
        try await TLSTests.withTLSLacquer(configure: { $0.vcl = compiled }) { _, tlsPort, plainPort, _, _ in
            let overTLS = try #require(try Curl.curl(["-k", "--http2", "https://localhost:\(tlsPort)/v"]).first)
            #expect(overTLS.header("x-proto") == "HTTP/2.0")
            let overH2C = try #require(try Curl.curl(["--http2-prior-knowledge", "http://127.0.0.1:\(plainPort)/v"]).first)
            #expect(overH2C.header("x-proto") == "HTTP/2.0")
            #expect(try httpGet(port: plainPort, "/v").header("X-Proto") == "HTTP/1.1")
        }
    }

    @Test("a drain (SIGTERM) lets an HTTP/2 stream in flight finish, then the connection goes")
    func drainFinishesStreams() async throws {
        try await TLSTests.withTLSLacquer { lacquer, _, plainPort, _, _ in
            async let slow = runBlocking {
                try Curl.curl(["--http2-prior-knowledge", "http://127.0.0.1:\(plainPort)/delay/1000"])
            }
            try await Task.sleep(for: .milliseconds(300))
            await lacquer.drain()
            let responses = try await slow
            #expect(responses.first?.status == 200 && responses.first?.body == "ok /delay/1000\n")
        }
    }

    // MARK: Raw frames

    /// One HTTP/2 frame (RFC 9113 §4.1).
    static func frame(type: UInt8, flags: UInt8, stream: UInt32, payload: [UInt8] = []) -> [UInt8] {
        let length = payload.count
        return [UInt8(length >> 16 & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF), type, flags]
            + [UInt8(stream >> 24 & 0x7F), UInt8(stream >> 16 & 0xFF), UInt8(stream >> 8 & 0xFF), UInt8(stream & 0xFF)] + payload
    }

    /// A GET / header block in HPACK: indexed :method GET, :scheme http, :path /, and
    /// :authority "a" as a literal without indexing.
    static let getHeaderBlock: [UInt8] = [0x82, 0x86, 0x84, 0x01, 0x01, UInt8(ascii: "a")]

    /// Frames read from `client` until the peer closes or stays silent for the client's
    /// timeout: (type, flags, payload), and whether it closed.
    static func readFrames(_ client: RawHTTPClient) -> (frames: [(UInt8, UInt8, [UInt8])], closed: Bool) {
        let read = Self.streamFrames(client)
        return (read.frames.map { ($0.type, $0.flags, $0.payload) }, read.closed)
    }

    static func goAwayCode(_ frames: [(UInt8, UInt8, [UInt8])]) -> UInt32? {
        guard let goAway = frames.last(where: { $0.0 == 0x7 }), goAway.2.count >= 8 else { return nil }
        return goAway.2[4...7].reduce(0) { $0 << 8 | UInt32($1) }
    }

    /// Frames that arrive within the client's timeout (it stops at the first quiet spell).
    static func framesFor(_ client: RawHTTPClient) -> [(UInt8, UInt8, [UInt8])] {
        Self.readFrames(client).frames
    }

    @Test("flow control: a stream whose window is closed gets no DATA (its fill is paced by it, as on HTTP/1.1); opening the window delivers every byte")
    func flowControlBackpressure() async throws {
        try await TLSTests.withTLSLacquer { _, _, plainPort, origin, _ in
            let size = 300_000
            let path = "/bytes/\(size)?cc=max-age%3D60"
            let client = try RawHTTPClient(port: plainPort, timeout: 1)
            defer { client.close() }
            // SETTINGS_INITIAL_WINDOW_SIZE = 0: no stream may receive DATA until a WINDOW_UPDATE.
            var bytes = ClientPipeline.http2Preface + Self.frame(type: 0x4, flags: 0, stream: 0, payload: [0, 0x4, 0, 0, 0, 0])
            let block: [UInt8] = [0x82, 0x86, 0x04, UInt8(path.utf8.count)] + Array(path.utf8) + [0x01, 0x01, UInt8(ascii: "a")]
            bytes += Self.frame(type: 0x1, flags: 0x5, stream: 1, payload: block)
            try client.send(bytes: bytes)
            let first = Self.framesFor(client)
            #expect(first.contains { $0.0 == 0x1 }, "no HEADERS")
            #expect(!first.contains { $0.0 == 0x0 && !$0.2.isEmpty }, "DATA past a closed window")
            #expect(origin.requestCount(path: "/bytes/\(size)") == 1)
            // Opening the windows (stream and connection) delivers every byte, then END_STREAM.
            let grant: [UInt8] = [0, 0x10, 0, 0]  // 1 MiB
            try client.send(bytes: Self.frame(type: 0x8, flags: 0, stream: 1, payload: grant) + Self.frame(type: 0x8, flags: 0, stream: 0, payload: grant))
            var received = 0
            var ended = false
            for _ in 0..<20 where !ended {
                for frame in Self.framesFor(client) where frame.0 == 0x0 {
                    received += frame.2.count
                    if frame.1 & 0x1 != 0 { ended = true }
                }
            }
            #expect(received == size && ended, "received \(received) bytes, ended \(ended)")
        }
    }

    /// Frames read from `client` until the peer closes or stays silent for the client's timeout,
    /// with their streams: (type, flags, stream, payload), and whether it closed.
    static func streamFrames(_ client: RawHTTPClient) -> (frames: [(type: UInt8, flags: UInt8, stream: UInt32, payload: [UInt8])], closed: Bool) {
        var bytes: [UInt8] = []
        var closed = false
        for _ in 0..<10_000 {
            guard let some = try? client.readSome() else { break }
            if some.isEmpty {
                closed = true
                break
            }
            bytes += some
        }
        var frames: [(type: UInt8, flags: UInt8, stream: UInt32, payload: [UInt8])] = []
        var index = 0
        while index + 9 <= bytes.count {
            let length = Int(bytes[index]) << 16 | Int(bytes[index + 1]) << 8 | Int(bytes[index + 2])
            guard index + 9 + length <= bytes.count else { break }
            let stream = bytes[(index + 5)...(index + 8)].reduce(UInt32(0)) { $0 << 8 | UInt32($1) } & 0x7FFF_FFFF
            frames.append((bytes[index + 3], bytes[index + 4], stream, Array(bytes[(index + 9)..<(index + 9 + length)])))
            index += 9 + length
        }
        return (frames, closed)
    }

    @Test("a lane hit larger than the client's 64 KiB stream window: WINDOW_UPDATE delivers the rest, RST_STREAM ends that stream only, the connection stays")
    func laneHitUnderFlowControl() async throws {
        try await TLSTests.withTLSLacquer { lacquer, _, plainPort, origin, _ in
            let size = 300_000
            let path = "/bytes/\(size)?cc=max-age%3D60"
            #expect(try httpGet(port: plainPort, path, headers: [("Host", "a")]).body.count == size)  // stored, for the authority below
            let fastBefore = lacquer.counters[.cacheHitFast]
            let client = try RawHTTPClient(port: plainPort, timeout: 1)
            defer { client.close() }
            // Default settings: every stream, and the connection, may take 65,535 bytes.
            let block: [UInt8] = [0x82, 0x86, 0x04, UInt8(path.utf8.count)] + Array(path.utf8) + [0x01, 0x01, UInt8(ascii: "a")]
            try client.send(
                bytes: ClientPipeline.http2Preface + Self.frame(type: 0x4, flags: 0, stream: 0)
                    + Self.frame(type: 0x1, flags: 0x5, stream: 1, payload: block) + Self.frame(type: 0x1, flags: 0x5, stream: 3, payload: block))
            var received: [UInt32: Int] = [:]
            let first = Self.streamFrames(client)
            for frame in first.frames where frame.type == 0x0 { received[frame.stream, default: 0] += frame.payload.count }
            #expect(!first.closed && first.frames.filter { $0.type == 0x1 }.count == 2, "two HEADERS on an open connection")
            #expect(received.values.reduce(0, +) == 65_535, "the connection window: \(received)")
            #expect(lacquer.counters[.cacheHitFast] == fastBefore + 2, "both answered by the lane")
            // Stream 1 is cancelled; stream 3 and the connection get 1 MiB more window.
            let grant: [UInt8] = [0, 0x10, 0, 0]
            try client.send(
                bytes: Self.frame(type: 0x3, flags: 0, stream: 1, payload: [0, 0, 0, 0x8])
                    + Self.frame(type: 0x8, flags: 0, stream: 3, payload: grant) + Self.frame(type: 0x8, flags: 0, stream: 0, payload: grant))
            var ended = false
            var closed = false
            for _ in 0..<20 where !ended && !closed {
                let more = Self.streamFrames(client)
                closed = more.closed
                for frame in more.frames {
                    #expect(frame.type != 0x7, "GOAWAY")
                    if frame.type == 0x0 && frame.stream == 3 {
                        received[3, default: 0] += frame.payload.count
                        if frame.flags & 0x1 != 0 { ended = true }
                    }
                }
            }
            #expect(ended && received[3] == size, "stream 3: \(received[3] ?? 0) of \(size) bytes, ended \(ended), closed \(closed)")
            #expect((received[1] ?? 0) < size, "the cancelled stream went on")
            // The connection still takes requests.
            try client.send(bytes: Self.frame(type: 0x1, flags: 0x5, stream: 5, payload: Self.getHeaderBlock))
            let after = Self.streamFrames(client)
            #expect(!after.closed && after.frames.contains { $0.type == 0x1 && $0.stream == 5 }, "no answer on stream 5")
            #expect(lacquer.counters[.http2ConnectionErrors] == 0)
            #expect(origin.requestCount(path: "/bytes/\(size)") == 1)
        }
    }

    @Test("a lane stream whose client never opens its window is reset (CANCEL) after the send-idle timeout; the connection goes on")
    func stalledLaneStreamIsReset() async throws {
        try await TLSTests.withTLSLacquer(configure: { $0.clientTimeouts.sendIdle = .seconds(1) }) { lacquer, _, plainPort, _, _ in
            let path = "/bytes/300000?cc=max-age%3D60"
            #expect(try httpGet(port: plainPort, path, headers: [("Host", "a")]).body.count == 300_000)
            let timeoutsBefore = lacquer.counters[.sessClosedTimeout]
            let client = try RawHTTPClient(port: plainPort, timeout: 0.5)
            defer { client.close() }
            // SETTINGS_INITIAL_WINDOW_SIZE = 0: the stream may get no DATA until a WINDOW_UPDATE, which never comes.
            let block: [UInt8] = [0x82, 0x86, 0x04, UInt8(path.utf8.count)] + Array(path.utf8) + [0x01, 0x01, UInt8(ascii: "a")]
            try client.send(
                bytes: ClientPipeline.http2Preface + Self.frame(type: 0x4, flags: 0, stream: 0, payload: [0, 0x4, 0, 0, 0, 0])
                    + Self.frame(type: 0x1, flags: 0x5, stream: 1, payload: block))
            var frames: [(type: UInt8, flags: UInt8, stream: UInt32, payload: [UInt8])] = []
            let start = Date()
            while Date().timeIntervalSince(start) < 4, !frames.contains(where: { $0.type == 0x3 }) {
                let more = Self.streamFrames(client)
                frames += more.frames
                if more.closed { break }
            }
            let reset = frames.first { $0.type == 0x3 && $0.stream == 1 }
            #expect(reset?.payload == [0, 0, 0, 0x8], "no RST_STREAM CANCEL for the stalled stream: \(frames.map { ($0.type, $0.stream) })")
            #expect(Date().timeIntervalSince(start) > 0.9, "reset before the send-idle timeout")
            #expect(!frames.contains { $0.type == 0x0 && !$0.payload.isEmpty }, "DATA past a closed window")
            #expect(lacquer.counters[.sessClosedTimeout] == timeoutsBefore + 1)
            // The connection still answers.
            try client.send(bytes: Self.frame(type: 0x8, flags: 0, stream: 0, payload: [0, 0x10, 0, 0]) + Self.frame(type: 0x1, flags: 0x5, stream: 3, payload: Self.getHeaderBlock))
            let after = Self.streamFrames(client)
            #expect(!after.closed && after.frames.contains { $0.type == 0x1 && $0.stream == 3 }, "no answer on stream 3")
        }
    }

    @Test("the lane's send deadlines: idle from the last WINDOW_UPDATE (the stream's or the connection's), total from the answer")
    func laneStreamDeadlines() {
        let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000)
        var streams = LaneStreams()
        let one = HTTP2StreamID(1), three = HTTP2StreamID(3)
        streams.answered(one, now: t0)
        streams.answered(three, now: t0 + .seconds(1))
        #expect(streams.nextCheck(idle: .seconds(10), total: .seconds(100)) == t0 + .seconds(10))
        streams.progressed(one, now: t0 + .seconds(5))
        #expect(streams.expire(now: t0 + .seconds(11), idle: .seconds(10), total: .seconds(100)) == [three])
        streams.progressed(nil, now: t0 + .seconds(14))  // a connection-level WINDOW_UPDATE
        #expect(streams.expire(now: t0 + .seconds(20), idle: .seconds(10), total: .seconds(100)).isEmpty)
        #expect(streams.nextCheck(idle: .seconds(10), total: .seconds(100)) == t0 + .seconds(24))
        #expect(streams.nextCheck(idle: .seconds(10), total: .seconds(20)) == t0 + .seconds(20))
        #expect(streams.expire(now: t0 + .seconds(20), idle: .seconds(10), total: .seconds(20)) == [one])
        #expect(streams.isEmpty && streams.nextCheck(idle: .seconds(1), total: .seconds(1)) == nil)
        streams.answered(three, now: t0)
        streams.closed(three)
        #expect(!streams.contains(three))
    }

    @Test("a client that resets its socket in the middle of a body is not counted as a protocol error; Lacquer goes on")
    func clientLeavingIsNoProtocolError() async throws {
        try await TLSTests.withTLSLacquer { lacquer, _, plainPort, _, _ in
            let path = "/bytes/300000?cc=max-age%3D60"
            let block: [UInt8] = [0x82, 0x86, 0x04, UInt8(path.utf8.count)] + Array(path.utf8) + [0x01, 0x01, UInt8(ascii: "a")]
            for round in 0..<2 {  // a miss (the flow), then a hit (the lane)
                let client = try RawHTTPClient(port: plainPort, timeout: 1)
                try client.send(bytes: ClientPipeline.http2Preface + Self.frame(type: 0x4, flags: 0, stream: 0) + Self.frame(type: 0x1, flags: 0x5, stream: 1, payload: block))
                let first = Self.streamFrames(client)
                #expect(first.frames.contains { $0.type == 0x0 }, "round \(round): no DATA")
                client.reset()  // SO_LINGER 0: the kernel sends RST
            }
            try await Task.sleep(for: .milliseconds(300))
            #expect(lacquer.counters[.http2ConnectionErrors] == 0)
            #expect(try httpGet(port: plainPort, path, headers: [("Host", "a")]).body.count == 300_000)
        }
    }

    @Test("SETTINGS announce the stream and header list limits")
    func settingsAnnounceLimits() async throws {
        try await TLSTests.withTLSLacquer(configure: { $0.limits.http2MaxConcurrentStreams = 50 }) { _, _, plainPort, _, _ in
            let client = try RawHTTPClient(port: plainPort, timeout: 2)
            defer { client.close() }
            try client.send(bytes: ClientPipeline.http2Preface + Self.frame(type: 0x4, flags: 0, stream: 0))
            var bytes: [UInt8] = []
            for _ in 0..<20 {
                bytes += try client.readSome()
                if bytes.count >= 9, bytes.count >= 9 + (Int(bytes[0]) << 16 | Int(bytes[1]) << 8 | Int(bytes[2])) { break }
            }
            #expect(bytes.count >= 9 && bytes[3] == 0x4, "the first frame is not SETTINGS")
            let length = Int(bytes[0]) << 16 | Int(bytes[1]) << 8 | Int(bytes[2])
            var settings: [UInt16: UInt32] = [:]
            var index = 9
            while index + 6 <= 9 + length && index + 6 <= bytes.count {
                let id = UInt16(bytes[index]) << 8 | UInt16(bytes[index + 1])
                settings[id] = bytes[(index + 2)...(index + 5)].reduce(0) { $0 << 8 | UInt32($1) }
                index += 6
            }
            #expect(settings[0x3] == 50)  // SETTINGS_MAX_CONCURRENT_STREAMS
            #expect(settings[0x6].map { Int($0) } == 32 * 1024)  // SETTINGS_MAX_HEADER_LIST_SIZE
        }
    }

    @Test("rapid reset (CVE-2023-44487): a client that opens and cancels streams past the limit gets GOAWAY and is closed")
    func rapidReset() async throws {
        try await TLSTests.withTLSLacquer(configure: { $0.limits.http2MaxResetsPer30s = 50 }) { lacquer, _, plainPort, _, _ in
            let client = try RawHTTPClient(port: plainPort, timeout: 5)
            defer { client.close() }
            var bytes = ClientPipeline.http2Preface + Self.frame(type: 0x4, flags: 0, stream: 0)
            for index in 0..<200 {
                let stream = UInt32(2 * index + 1)
                bytes += Self.frame(type: 0x1, flags: 0x5, stream: stream, payload: Self.getHeaderBlock)
                bytes += Self.frame(type: 0x3, flags: 0, stream: stream, payload: [0, 0, 0, 0x8])  // RST_STREAM CANCEL
            }
            try? client.send(bytes: bytes)
            let (frames, closed) = Self.readFrames(client)
            #expect(closed, "the connection stayed open")
            #expect(Self.goAwayCode(frames) == 0xB, "GOAWAY ENHANCE_YOUR_CALM expected")
            #expect(lacquer.counters[.http2ConnectionErrors] == 1)
            // Lacquer goes on serving others.
            #expect(try httpGet(port: plainPort, "/after").status == 200)
        }
    }

    @Test("CONTINUATION flood (CVE-2024-27316): a header block that never ends is cut off, not buffered")
    func continuationFlood() async throws {
        try await TLSTests.withTLSLacquer { _, _, plainPort, _, _ in
            let client = try RawHTTPClient(port: plainPort, timeout: 5)
            defer { client.close() }
            var bytes = ClientPipeline.http2Preface + Self.frame(type: 0x4, flags: 0, stream: 0)
            // HEADERS without END_HEADERS, then CONTINUATION frames of a header that never ends.
            bytes += Self.frame(type: 0x1, flags: 0x1, stream: 1, payload: Self.getHeaderBlock)
            let filler = [UInt8](repeating: 0x42, count: 1000)
            for _ in 0..<1000 {
                bytes += Self.frame(type: 0x9, flags: 0, stream: 1, payload: filler)
            }
            try? client.send(bytes: bytes)
            let (frames, closed) = Self.readFrames(client)
            #expect(closed, "the connection stayed open")
            #expect(Self.goAwayCode(frames) != nil, "no GOAWAY")
            #expect(try httpGet(port: plainPort, "/after").status == 200)
        }
    }

    @Test("a stream that asks for more headers than allowed is refused, the connection lives on")
    func oversizedHeaders() async throws {
        try await TLSTests.withTLSLacquer { _, _, plainPort, _, _ in
            let big = String(repeating: "v", count: 40 * 1024)
            let outcome = try ExternalTool.run(
                "curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5", "--http2-prior-knowledge", "-H", "X-Big: \(big)", "http://127.0.0.1:\(plainPort)/big"])
            // Refused either by the HTTP/2 layer (stream reset: curl reports 000 / an error) or with a 431.
            #expect(outcome.output == "431" || outcome.output == "000" || outcome.status != 0, "\(outcome.output)")
            #expect(try httpGet(port: plainPort, "/after").status == 200)
        }
    }
}
