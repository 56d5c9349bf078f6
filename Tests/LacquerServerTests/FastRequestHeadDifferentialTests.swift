import NIOCore
import NIOEmbedded
import NIOHTTP1
import LacquerTesting
import Testing

@testable import LacquerServer

/// The strict head reader against NIO's HTTP/1 decoder (llhttp), on mutated requests: whatever
/// the reader calls a complete request without a body, the decoder must read as exactly those
/// bytes, a head and its end, or refuse; and a request the lane would answer, the decoder must
/// accept with the same method, target and Host, and `RequestValidation` (the flow's checks)
/// must let through with the same host. Otherwise the lane and the decoder could
/// disagree on where a request ends (a desync) or the lane could answer what the decoder refuses.
@Suite("Fast request head against the decoder")
struct FastRequestHeadDifferentialTests {
    private enum Decoded {
        case complete(HTTPRequestHead)
        case refused
        case incomplete
    }

    private static func decode(_ bytes: [UInt8]) -> Decoded {
        let channel = EmbeddedChannel()
        defer { _ = try? channel.finish() }
        do {
            try channel.pipeline.syncOperations.addHandler(
                ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes)))
            try channel.writeInbound(ByteBuffer(bytes: bytes))
        } catch {
            return .refused
        }
        var head: HTTPRequestHead?
        var ended = false
        while let part = try? channel.readInbound(as: HTTPServerRequestPart.self) {
            switch part {
            case .head(let h): head = h
            case .body: return .refused  // a body where the reader saw none
            case .end: ended = true
            }
        }
        guard let head else { return .incomplete }
        return ended ? .complete(head) : .incomplete
    }

    private static let seeds = [
        "GET /a?b=c HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\nAccept-Encoding: gzip\r\n\r\n",
        "HEAD / HTTP/1.1\r\nHost: a:8080\r\nConnection: keep-alive\r\n\r\n",
        "GET / HTTP/1.0\r\nHost: a\r\nCookie: x=1\r\n\r\n",
        "POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nab",
        "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "DELETE /x HTTP/1.1\r\nHost: a\r\nX-Y: z\r\n\r\n",
    ]

    private static let alphabet: [UInt8] = Array("\r\n \t:;,=#/?aAzZ09-_.\"".utf8) + [0x00, 0x01, 0x7F, 0x80, 0xFF]

    @Test("a few thousand mutated heads: no request the reader takes is read otherwise by the decoder")
    func mutatedHeads() {
        let seed = SeededRandom.seed(fallback: 0xD1FF)
        print("mutated heads: seed \(seed) (replay with LACQUER_SEED=\(seed))")
        var random = SeededRandom(seed: seed)
        var checked = 0
        for _ in 0..<FuzzBudget.iterations(default: 4_000) {
            var bytes = Array(Self.seeds.randomElement(using: &random)!.utf8)
            for _ in 0..<Int.random(in: 1...3, using: &random) {
                let at = Int.random(in: 0..<bytes.count, using: &random)
                let byte = Self.alphabet.randomElement(using: &random)!
                switch Int.random(in: 0..<3, using: &random) {
                case 0: bytes[at] = byte
                case 1: bytes.insert(byte, at: at)
                default: if bytes.count > 1 { bytes.remove(at: at) }
                }
            }
            let outcome = bytes.withUnsafeBytes { FastRequestHead.classify($0, limits: Limits()) }
            let length: Int
            var plain: FastRequestHead?
            switch outcome {
            case .needMore, .unsure:
                continue
            case .other(let l):
                length = l
            case .plain(let head):
                length = head.length
                plain = head
            }
            checked += 1
            let decoded = Self.decode(Array(bytes[..<length]))
            let text = String(decoding: bytes, as: UTF8.self).debugDescription
            switch decoded {
            case .incomplete:
                Issue.record("the decoder wants more than the \(length) bytes the reader took: \(text)")
            case .refused:
                #expect(plain == nil, "the lane would answer what the decoder refuses: \(text)")
            case .complete(let head):
                guard let plain else { continue }
                #expect(head.method == .GET || head.method == .HEAD)
                #expect(head.uri.utf8.elementsEqual(bytes[plain.target]), "\(text)")
                #expect(head.headers["host"].count == 1 && head.headers["host"][0].utf8.elementsEqual(bytes[plain.host]), "\(text)")
                #expect(head.version == .http1_1)
                // And the flow's own checks would have let it through, with the same host.
                let host = try? RequestValidation.validate(head, limits: Limits())
                #expect(host.map { $0.utf8.elementsEqual(bytes[plain.host]) } == true, "the flow refuses: \(text)")
            }
        }
        #expect(checked > 500)
    }
}
