import LacquerTesting
import NIOHTTP1
import Testing

@testable import CacheStore

/// The disk tier's record reader for stored header sections, fuzzed: whatever bytes a row holds
/// (a torn write, a tampered file), decoding never traps and never returns more than the limits;
/// what it encodes, it reads back.
@Suite("Header record fuzz")
struct HeaderCodecFuzzTests {
    @Test("random and mutated records decode to nil or to a section within the limits; valid ones round-trip")
    func records() {
        let seed = SeededRandom.seed(fallback: 0xD15C)
        var random = SeededRandom(seed: seed)
        let iterations = FuzzBudget.iterations(default: 3_000)
        print("header record fuzz seed \(seed), \(iterations) iterations")
        for _ in 0..<iterations {
            var headers = HTTPHeaders()
            for index in 0..<Int.random(in: 0...12, using: &random) {
                let value = String(repeating: "v", count: Int.random(in: 0...300, using: &random))
                headers.add(name: "X-Field-\(index)", value: value)
            }
            var bytes = HeaderCodec.encode(headers)
            #expect(HeaderCodec.decode(bytes) == headers, "seed \(seed)")
            // Mutate: flip bytes, cut, or append garbage.
            switch Int.random(in: 0..<3, using: &random) {
            case 0 where !bytes.isEmpty:
                for _ in 0..<Int.random(in: 1...4, using: &random) {
                    bytes[Int.random(in: 0..<bytes.count, using: &random)] = UInt8.random(in: 0...255, using: &random)
                }
            case 1 where !bytes.isEmpty:
                bytes.removeLast(Int.random(in: 1...bytes.count, using: &random))
            default:
                bytes += (0..<Int.random(in: 1...64, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
            }
            if let decoded = HeaderCodec.decode(bytes) {
                #expect(HeaderCodec.withinLimits(decoded), "seed \(seed): a decoded section over the limits")
            }
        }
    }
}
