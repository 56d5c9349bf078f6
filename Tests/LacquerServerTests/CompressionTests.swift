import Foundation
import NIOCore
import NIOHTTP1
import Testing

#if canImport(LacquerServer)
    @testable import LacquerServer
#else
    @testable import Compression
#endif

/// Test data: compressible text interleaved with pseudo-random bytes, deterministic per seed.
private func sampleBody(size: Int, seed: UInt64 = 1) -> [UInt8] {
    let text = Array("GET /index.html HTTP/1.1, Cache-Control: max-age=60; the quick brown fox. ".utf8)
    var state = seed
    var bytes: [UInt8] = []
    bytes.reserveCapacity(size)
    while bytes.count < size {
        bytes += text
        for _ in 0..<64 {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            bytes.append(UInt8(truncatingIfNeeded: state >> 56))
        }
    }
    return Array(bytes.prefix(size))
}

/// Feeds `input` to the decoder in `chunkSize` pieces, then finishes; returns everything decoded.
private func gunzip(_ input: [UInt8], chunkSize: Int, decoder: GzipDecoder? = nil) throws -> [UInt8] {
    let decoder = try decoder ?? GzipDecoder()
    let allocator = ByteBufferAllocator()
    var output: [UInt8] = []
    var offset = 0
    while offset < input.count {
        let end = min(offset + chunkSize, input.count)
        let chunk = try decoder.decompress(ByteBuffer(bytes: input[offset..<end]), allocator: allocator)
        output += chunk.readableBytesView
        offset = end
    }
    try decoder.finish()
    return output
}

/// Feeds `input` to a new encoder in `chunkSize` pieces, then finishes; returns the gzip stream.
private func gzip(_ input: [UInt8], chunkSize: Int, level: Int = 6) throws -> [UInt8] {
    let encoder = try GzipEncoder(level: level)
    let allocator = ByteBufferAllocator()
    var output: [UInt8] = []
    var offset = 0
    while offset < input.count {
        let end = min(offset + chunkSize, input.count)
        output += try encoder.compress(ByteBuffer(bytes: input[offset..<end]), allocator: allocator).readableBytesView
        offset = end
    }
    output += try encoder.finish(allocator: allocator).readableBytesView
    return output
}

/// Runs the system `gzip` with `arguments`, feeding `input` on stdin; `nil` if it is not installed.
private func systemGzip(_ arguments: [String], input: [UInt8]) throws -> [UInt8]? {
    guard let path = ["/usr/bin/gzip", "/bin/gzip"].first(where: { FileManager.default.isExecutableFile(atPath: $0) })
    else { return nil }
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("lacquer-gzip-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    let inputFile = directory.appendingPathComponent("in")
    let outputFile = directory.appendingPathComponent("out")
    try Data(input).write(to: inputFile)
    _ = FileManager.default.createFile(atPath: outputFile.path, contents: nil)
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    process.standardInput = try FileHandle(forReadingFrom: inputFile)
    process.standardOutput = try FileHandle(forWritingTo: outputFile)
    try process.run()
    process.waitUntilExit()
    #expect(process.terminationStatus == 0)
    return Array(try Data(contentsOf: outputFile))
}

/// `fixtures/responses/<name>` of the repository this test file lives in.
private func fixture(_ name: String) throws -> [UInt8] {
    // The dev package links this file from the repository; resolve the link to find fixtures/.
    var directory = URL(fileURLWithPath: #filePath).resolvingSymlinksInPath().deletingLastPathComponent()
    while directory.path != "/" {
        let candidate = directory.appendingPathComponent("fixtures/responses/\(name)")
        if FileManager.default.fileExists(atPath: candidate.path) {
            return Array(try Data(contentsOf: candidate))
        }
        directory = directory.deletingLastPathComponent()
    }
    Issue.record("fixture \(name) not found above \(#filePath)")
    return []
}

@Suite("Compression")
struct CompressionTests {
    // MARK: Round trips

    @Test(
        "gzip then gunzip returns the input, whatever the chunking (RFC 1952)",
        arguments: [1, 7, 4096, 65_536], [1, 7, 65_536]
    )
    func roundTrip(encodeChunk: Int, decodeChunk: Int) throws {
        let body = sampleBody(size: encodeChunk == 1 || decodeChunk == 1 ? 40_000 : 300_000)
        let compressed = try gzip(body, chunkSize: encodeChunk)
        #expect(compressed.count < body.count)
        #expect(compressed.starts(with: [0x1F, 0x8B, 0x08]))  // ID1 ID2 CM=deflate (RFC 1952 §2.3.1)
        #expect(try gunzip(compressed, chunkSize: decodeChunk) == body)
    }

    @Test("An empty body round-trips to an empty body, and a one-chunk body in one call (RFC 1952 §2.2)")
    func edgeSizes() throws {
        #expect(try gunzip(gzip([], chunkSize: 1), chunkSize: 1) == [])
        let body = sampleBody(size: 1_000_000)
        #expect(try gunzip(gzip(body, chunkSize: body.count), chunkSize: 1 << 30) == body)
        // Highly compressible: a 1000× expansion in one call.
        let zeros = [UInt8](repeating: 0, count: 4_000_000)
        let compressed = try gzip(zeros, chunkSize: zeros.count)
        #expect(compressed.count < 10_000)
        #expect(try gunzip(compressed, chunkSize: compressed.count) == zeros)
    }

    @Test("Every level produces a valid stream; out-of-range levels are clamped", arguments: [-5, 0, 1, 6, 9, 42])
    func levels(level: Int) throws {
        let body = sampleBody(size: 50_000)
        #expect(try gunzip(gzip(body, chunkSize: 1000, level: level), chunkSize: 333) == body)
    }

    @Test("The encoder's output is deterministic: a fixed header, no timestamp (RFC 1952 §2.3.1 MTIME = 0)")
    func deterministic() throws {
        let body = sampleBody(size: 10_000)
        let first = try gzip(body, chunkSize: 100)
        #expect(first == (try gzip(body, chunkSize: 100)))
        #expect(first[4..<8] == [0, 0, 0, 0])
    }

    @Test("A sync flush releases everything so far, decodable before the stream ends")
    func flush() throws {
        let encoder = try GzipEncoder()
        let decoder = try GzipDecoder()
        let allocator = ByteBufferAllocator()
        var decoded: [UInt8] = []
        let parts = [Array("first event\n".utf8), Array("second event\n".utf8)]
        var sent: [UInt8] = []
        for part in parts {
            sent += part
            var out = try encoder.compress(ByteBuffer(bytes: part), allocator: allocator)
            var flushed = try encoder.flush(allocator: allocator)
            out.writeBuffer(&flushed)
            decoded += try decoder.decompress(out, allocator: allocator).readableBytesView
            #expect(decoded == sent)
        }
        // A second flush with nothing new is harmless.
        let again = try encoder.flush(allocator: allocator)
        decoded += try decoder.decompress(again, allocator: allocator).readableBytesView
        decoded += try decoder.decompress(try encoder.finish(allocator: allocator), allocator: allocator)
            .readableBytesView
        try decoder.finish()
        #expect(decoded == sent)
    }

    // MARK: Interoperability with the gzip command line

    @Test("A body gzipped by the system gzip decompresses, in any chunking", arguments: [1, 7, 65_536])
    func systemGzipDecompresses(chunkSize: Int) throws {
        let body = sampleBody(size: 100_000, seed: 7)
        guard let compressed = try systemGzip(["-c", "-9"], input: body) else {
            Issue.record("no gzip command line found")
            return
        }
        #expect(try gunzip(compressed, chunkSize: chunkSize) == body)
    }

    @Test("Our gzip output decompresses with the system gzip -d")
    func systemGunzipAcceptsOurs() throws {
        let body = sampleBody(size: 100_000, seed: 9)
        guard let plain = try systemGzip(["-d", "-c"], input: try gzip(body, chunkSize: 5000)) else {
            Issue.record("no gzip command line found")
            return
        }
        #expect(plain == body)
    }

    @Test("The committed fixture sample.txt.gz decompresses to sample.txt", arguments: [1, 7, 65_536])
    func fixtureDecompresses(chunkSize: Int) throws {
        let compressed = try fixture("sample.txt.gz")
        let plain = try fixture("sample.txt")
        #expect(!plain.isEmpty)
        #expect(try gunzip(compressed, chunkSize: chunkSize) == plain)
    }

    @Test(
        "Concatenated members are one stream and decode to the concatenation (RFC 1952 §2.2)",
        arguments: [1, 7, 65_536])
    func multipleMembers(chunkSize: Int) throws {
        let a = Array("member one\n".utf8)
        let b = sampleBody(size: 20_000, seed: 3)
        let stream = try gzip(a, chunkSize: 4) + (try gzip(b, chunkSize: 1000)) + (try gzip([], chunkSize: 1))
        #expect(try gunzip(stream, chunkSize: chunkSize) == a + b)
    }

    // MARK: Corrupt and truncated input

    @Test(
        "Input that is not gzip throws corrupt (RFC 1952 §2.3.1: ID1 = 31, ID2 = 139, CM = 8)",
        arguments: [
            Array("hello, world".utf8),
            [0x1F, 0x8C, 0x08, 0, 0, 0, 0, 0, 0, 3],  // bad ID2
            [0x1F, 0x8B, 0x07, 0, 0, 0, 0, 0, 0, 3],  // CM other than deflate
            [0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],  // a zlib stream, not gzip
            [UInt8](repeating: 0xFF, count: 100),
        ] as [[UInt8]]
    )
    func notGzip(input: [UInt8]) {
        #expect(throws: CompressionError.corrupt) { try gunzip(input, chunkSize: 7) }
    }

    @Test("A damaged CRC-32 or ISIZE trailer throws corrupt (RFC 1952 §2.3.1)", arguments: [1, 4, 5, 8])
    func damagedTrailer(fromEnd: Int) throws {
        var compressed = try gzip(sampleBody(size: 5000), chunkSize: 5000)
        compressed[compressed.count - fromEnd] ^= 0x01
        #expect(throws: CompressionError.corrupt) { try gunzip(compressed, chunkSize: 64) }
    }

    @Test(
        "Junk after the last member throws corrupt, as in Varnish",
        arguments: [[0x00], [0x00, 0x00, 0x00], Array("junk".utf8)] as [[UInt8]])
    func junkAfterEnd(junk: [UInt8]) throws {
        let compressed = try gzip(Array("body".utf8), chunkSize: 4)
        #expect(throws: CompressionError.corrupt) { try gunzip(compressed + junk, chunkSize: 1) }
        #expect(throws: CompressionError.corrupt) { try gunzip(compressed + junk, chunkSize: 1000) }
    }

    @Test("Every truncation is detected, at the latest by finish() (RFC 1952 §2.3.1 trailer)")
    func truncation() throws {
        let body = sampleBody(size: 3000)
        let compressed = try gzip(body, chunkSize: 3000)
        var undetected: [Int] = []
        for length in 0..<compressed.count {
            do {
                _ = try gunzip(Array(compressed.prefix(length)), chunkSize: 97)
                undetected.append(length)
            } catch let error as CompressionError {
                #expect(error == .corrupt)
            }
        }
        #expect(undetected == [], "truncations to these lengths went unnoticed")
        #expect(try gunzip(compressed, chunkSize: 97) == body)
    }

    @Test("Random damage never crashes: it throws, or (header-only damage) decodes to the original")
    func fuzzedDamage() throws {
        let body = sampleBody(size: 2000)
        let compressed = try gzip(body, chunkSize: 2000)
        var state: UInt64 = 12_345
        func next() -> Int {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int(truncatingIfNeeded: state >> 33)
        }
        for _ in 0..<500 {
            var damaged = compressed
            for _ in 0..<(1 + next() % 3) {
                damaged[next() % damaged.count] = UInt8(truncatingIfNeeded: next())
            }
            do {
                #expect(try gunzip(damaged, chunkSize: 1 + next() % 200) == body)
            } catch let error as CompressionError {
                #expect(error == .corrupt)
            }
        }
    }

    @Test("The output limit stops a decompression bomb; exactly the limit is fine")
    func outputLimit() throws {
        let zeros = [UInt8](repeating: 0, count: 1_000_000)
        let compressed = try gzip(zeros, chunkSize: zeros.count)
        #expect(throws: CompressionError.outputLimitExceeded(limit: 999_999)) {
            try gunzip(compressed, chunkSize: compressed.count, decoder: try GzipDecoder(maxOutputBytes: 999_999))
        }
        #expect(throws: CompressionError.outputLimitExceeded(limit: 10_000)) {
            try gunzip(compressed, chunkSize: 7, decoder: try GzipDecoder(maxOutputBytes: 10_000))
        }
        let exact = try gunzip(compressed, chunkSize: 100, decoder: try GzipDecoder(maxOutputBytes: 1_000_000))
        #expect(exact.count == 1_000_000)
    }

    @Test("A coder is closed after finish or after an error")
    func closedAfterUse() throws {
        let allocator = ByteBufferAllocator()
        let decoder = try GzipDecoder()
        #expect(throws: CompressionError.corrupt) {
            try decoder.decompress(ByteBuffer(string: "not gzip at all"), allocator: allocator)
        }
        #expect(throws: CompressionError.streamClosed) {
            try decoder.decompress(ByteBuffer(bytes: try gzip([1], chunkSize: 1)), allocator: allocator)
        }
        #expect(throws: CompressionError.streamClosed) { try decoder.finish() }

        let finished = try GzipDecoder()
        _ = try finished.decompress(ByteBuffer(bytes: try gzip([1, 2, 3], chunkSize: 3)), allocator: allocator)
        try finished.finish()
        #expect(throws: CompressionError.streamClosed) { try finished.finish() }

        let encoder = try GzipEncoder()
        _ = try encoder.finish(allocator: allocator)
        #expect(throws: CompressionError.streamClosed) {
            try encoder.compress(ByteBuffer(string: "x"), allocator: allocator)
        }
        #expect(throws: CompressionError.streamClosed) { try encoder.finish(allocator: allocator) }
    }

    @Test("An empty chunk decodes to nothing and changes nothing")
    func emptyChunks() throws {
        let allocator = ByteBufferAllocator()
        let decoder = try GzipDecoder()
        #expect(try decoder.decompress(ByteBuffer(), allocator: allocator).readableBytes == 0)
        let compressed = try gzip(Array("abc".utf8), chunkSize: 3)
        let out = try decoder.decompress(ByteBuffer(bytes: compressed), allocator: allocator)
        #expect(Array(out.readableBytesView) == Array("abc".utf8))
        #expect(try decoder.decompress(ByteBuffer(), allocator: allocator).readableBytes == 0)
        try decoder.finish()
        let encoder = try GzipEncoder()
        #expect(try encoder.compress(ByteBuffer(), allocator: allocator).readableBytes == 0)
    }

    // MARK: Content-coding negotiation

    @Test(
        "Accept-Encoding: gzip/x-gzip with q > 0, or * with q > 0 (RFC 9110 §12.5.3, §12.4.2)",
        arguments: [
            ("gzip", true),
            ("GZIP", true),
            ("x-gzip", true),  // equivalent to gzip (§8.4.1.3)
            ("gzip, deflate, br", true),
            ("br;q=1.0, gzip;q=0.8, *;q=0.1", true),  // the example of §12.5.3
            ("deflate, br", false),
            ("identity", false),
            ("identity;q=1, *;q=0", false),
            ("", false),  // an empty value: identity only (§12.5.3)
            ("gzip;q=0", false),
            ("gzip; q=0.000", false),
            ("gzip;Q=0", false),
            ("gzip;q=0.001", true),
            ("gzip ; q=0.5", true),
            ("gzip;q=1", true),
            ("gzip;q=1.000", true),
            ("*", true),
            ("*;q=0.5", true),
            ("*;q=0", false),
            ("br, *;q=0.1", true),
            ("*, gzip;q=0", false),  // the explicit refusal beats the wildcard
            ("gzip;q=0, *", false),
            ("gzip;q=0, *;q=0.5", false),
            ("gzip;q=0.5, *;q=0", true),
            ("x-gzip;q=0, gzip", true),  // the better of the two aliases
            ("gzip;q=1.001", false),  // an unreadable weight counts as 0
            ("gzip;q=2", false),
            ("gzip;q=", false),
            ("gzip;q=0.5000", false),
            ("gzip;q=abc, br", false),
            ("gzip;q=abc, *", false),  // …and, as an explicit gzip member, hides the wildcard
            ("*;q=abc", false),
            ("gzipx, xgzip", false),
            (",, gzip ,", true),
        ]
    )
    func acceptsGzip(value: String, expected: Bool) {
        #expect(ContentCoding.acceptsGzip(HTTPHeaders([("Accept-Encoding", value)])) == expected)
    }

    @Test("No Accept-Encoding field means no gzip; several lines form one list (RFC 9110 §5.3)")
    func acceptEncodingLines() {
        #expect(!ContentCoding.acceptsGzip(HTTPHeaders()))
        #expect(ContentCoding.acceptsGzip(HTTPHeaders([("Accept-Encoding", "br"), ("accept-encoding", "gzip")])))
        #expect(!ContentCoding.acceptsGzip(HTTPHeaders([("Accept-Encoding", "*"), ("Accept-Encoding", "gzip;q=0")])))
    }

    @Test(
        "Compressible media types (RFC 9110 §8.3.1: type/subtype, parameters, case-insensitive)",
        arguments: [
            ("text/html", true),
            ("text/html; charset=utf-8", true),
            ("Text/CSS", true),
            ("text/plain", true),
            ("text/javascript", true),
            ("text/event-stream", false),  // events must not sit in a compressor
            ("application/json", true),
            ("application/json;charset=UTF-8", true),
            ("application/problem+json", true),
            ("application/ld+json", true),
            ("application/javascript", true),
            ("application/xml", true),
            ("application/rss+xml", true),
            ("image/svg+xml", true),
            ("application/wasm", true),
            ("font/ttf", true),
            ("image/x-icon", true),
            ("image/png", false),
            ("image/jpeg", false),
            ("image/webp", false),
            ("video/mp4", false),
            ("audio/mpeg", false),
            ("application/zip", false),
            ("application/gzip", false),
            ("application/octet-stream", false),
            ("font/woff2", false),
            ("application/pdf", false),
            ("text", false),
            ("/json", false),
            ("", false),
        ]
    )
    func compressibleTypes(contentType: String, expected: Bool) {
        #expect(ContentCoding.isCompressibleType(contentType) == expected)
    }

    @Test("No Content-Type: not compressed")
    func noContentType() {
        #expect(!ContentCoding.isCompressibleType(nil))
    }

    @Test(
        "A transformed body gets a weak entity tag (RFC 9110 §8.8.1, §8.8.3)",
        arguments: [
            (#""xyzzy""#, #"W/"xyzzy""#),
            (#"W/"xyzzy""#, #"W/"xyzzy""#),
            (#"  "a-b"  "#, #"W/"a-b""#),
            (#""""#, #"W/"""#),
            ("xyzzy", #"W/"xyzzy""#),  // malformed: quoted first
        ]
    )
    func weakened(etag: String, expected: String) {
        #expect(ContentCoding.weakened(etag: etag) == expected)
    }
}
