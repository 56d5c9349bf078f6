import LacquerTesting
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import LacquerServer

/// The chunk-size reader in front of NIO's decoder, without sockets: valid streams pass in any
/// split, a size no signed 64-bit integer holds and an over-long extension are caught.
@Suite("Chunked framing scanner")
struct ChunkedFramingScannerTests {
    /// Scans `text` cut into pieces at seeded random places; the problem, if any.
    func scan(_ text: String, side: ChunkedFramingScanner.Side, head: Bool = false, random: inout SeededRandom) -> (ChunkedFramingScanner.Problem?, following: Bool) {
        var scanner = ChunkedFramingScanner(side: side)
        scanner.respondingToHead = head
        let bytes = Array(text.utf8)
        var start = 0
        while start < bytes.count {
            let end = min(bytes.count, start + Int.random(in: 1...40, using: &random))
            do {
                try bytes[start..<end].withUnsafeBytes { try scanner.scan($0) }
            } catch {
                return (error as? ChunkedFramingScanner.Problem, scanner.isFollowing)
            }
            start = end
        }
        return (nil, scanner.isFollowing)
    }

    static let validRequests = [
        "POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "POST /a HTTP/1.1\r\nHost: h\r\ntransfer-encoding: gzip, chunked\r\n\r\n5;name=value\r\nhello\r\n00\r\nTrailer: x\r\n\r\n",
        "PUT /b HTTP/1.1\r\nHost: h\r\nContent-Length: 12\r\n\r\n0\r\nFFFFFFFFFF",
        "GET /c HTTP/1.1\r\nHost: h\r\n\r\nGET /d HTTP/1.1\r\nHost: h\r\n\r\n",
        "POST /e HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0007FFFFFFFFFFFFFFF\r\n",
        "POST /f HTTP/1.1\r\nHost: h\r\nX-Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nFFF",
    ]

    static let validResponses: [(String, Bool)] = [
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n", false),
        ("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", false),
        ("HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", false),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", true),
    ]

    @Test("valid streams pass whatever their split, and the scanner keeps following them")
    func validStreams() {
        let seed = SeededRandom.seed(fallback: 0xC4A1)
        var random = SeededRandom(seed: seed)
        print("chunked framing scanner seed \(seed)")
        for _ in 0..<50 {
            for text in Self.validRequests {
                let (problem, following) = self.scan(text, side: .request, random: &random)
                #expect(problem == nil, "seed \(seed): \(text)")
                #expect(following, "seed \(seed): \(text)")
            }
            for (text, head) in Self.validResponses {
                let (problem, following) = self.scan(text, side: .response, head: head, random: &random)
                #expect(problem == nil, "seed \(seed): \(text)")
                #expect(following, "seed \(seed): \(text)")
            }
        }
        // A response delimited by its close: nothing more to follow.
        var random2 = SeededRandom(seed: seed)
        let closeDelimited = self.scan("HTTP/1.1 200 OK\r\n\r\nFFFFFFFFFFFFFFFFFFFF\r\n", side: .response, random: &random2)
        #expect(closeDelimited.0 == nil)
        #expect(!closeDelimited.following)
    }

    @Test("a chunk size of 2^63 or more is caught at its last digit, on both sides")
    func chunkSizeOverflow() {
        var random = SeededRandom(seed: 7)
        for size in ["FFFFFFFFFFFFFFED", "8000000000000000", "10000000000000000", "00000FFFFFFFFFFFFFFFF"] {
            let request = "POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n\(size)\r\nabcdefghijkl"
            #expect(self.scan(request, side: .request, random: &random).0 == .chunkSizeTooLarge, "\(size)")
            let response = "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n\(size)\r\nab"
            #expect(self.scan(response, side: .response, random: &random).0 == .chunkSizeTooLarge, "\(size)")
        }
        // The same bytes in a Content-Length body, or in a HEAD response's nothing, are data.
        let inBody = "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 18\r\n\r\nFFFFFFFFFFFFFFED\r\n"
        #expect(self.scan(inBody, side: .request, random: &random).0 == nil)
    }

    @Test("a chunk extension over the limit is caught; one at the limit passes")
    func chunkExtensionLimit() {
        var random = SeededRandom(seed: 11)
        func request(extensionBytes: Int) -> String {
            "POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3;" + String(repeating: "x", count: extensionBytes - 1)
                + "\r\nabc\r\n0\r\n\r\n"
        }
        #expect(self.scan(request(extensionBytes: 4096), side: .request, random: &random).0 == nil)
        #expect(self.scan(request(extensionBytes: 4097), side: .request, random: &random).0 == .chunkExtensionTooLong)
        #expect(self.scan(request(extensionBytes: 64 * 1024), side: .request, random: &random).0 == .chunkExtensionTooLong)
    }
}

/// The scanner against NIO's decoder on the same bytes: it never rejects a stream the decoder
/// reads in full (it only ever adds the two refusals it exists for, which these streams avoid).
@Suite("Chunked framing scanner vs decoder fuzz")
struct ChunkedFramingDifferentialTests {
    static func stream(_ random: inout SeededRandom) -> [UInt8] {
        var text = "POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        for _ in 0..<Int.random(in: 0...4, using: &random) {
            let size = Int.random(in: 1...300, using: &random)
            var hex = String(size, radix: 16, uppercase: Bool.random(using: &random))
            if Bool.random(using: &random) { hex = "000" + hex }
            let ext = Bool.random(using: &random) ? ";n=" + String(repeating: "e", count: Int.random(in: 0...200, using: &random)) : ""
            text += hex + ext + "\r\n" + String(repeating: "d", count: size) + "\r\n"
        }
        text += "0\r\n"
        if Bool.random(using: &random) { text += "Trailer-Field: t\r\n" }
        text += "\r\n"
        if Bool.random(using: &random) { text += "GET /next HTTP/1.1\r\nHost: h\r\n\r\n" }
        var bytes = Array(text.utf8)
        if Int.random(in: 0..<3, using: &random) > 0 {
            for _ in 0..<Int.random(in: 1...3, using: &random) {
                let index = Int.random(in: 0..<bytes.count, using: &random)
                switch Int.random(in: 0..<3, using: &random) {
                case 0: bytes[index] = UInt8.random(in: 0...127, using: &random)
                case 1: bytes.remove(at: index)
                default: bytes.insert(UInt8.random(in: 0...127, using: &random), at: index)
                }
            }
        }
        return bytes
    }

    @Test("seeded streams, some mutated: whatever the decoder reads in full, the scanner lets through")
    func scannerNeverRejectsWhatTheDecoderTakes() throws {
        let seed = SeededRandom.seed(fallback: 0xDEC0DE)
        var random = SeededRandom(seed: seed)
        let iterations = FuzzBudget.iterations(default: 1_500)
        print("chunked framing differential seed \(seed), \(iterations) iterations")
        for _ in 0..<iterations {
            let bytes = Self.stream(&random)
            let channel = EmbeddedChannel(handler: ByteToMessageHandler(HTTPRequestDecoder()))
            var buffer = channel.allocator.buffer(capacity: bytes.count)
            buffer.writeBytes(bytes)
            let decoderAccepted = (try? channel.writeInbound(buffer)) != nil
            while (try? channel.readInbound(as: HTTPServerRequestPart.self)) != nil {}
            _ = try? channel.finish()
            var scanner = ChunkedFramingScanner(side: .request)
            var problem: ChunkedFramingScanner.Problem?
            do {
                try bytes.withUnsafeBytes { try scanner.scan($0) }
            } catch {
                problem = error as? ChunkedFramingScanner.Problem
            }
            if decoderAccepted {
                #expect(problem == nil, "seed \(seed): \(String(decoding: bytes, as: UTF8.self).debugDescription)")
            }
        }
    }
}
