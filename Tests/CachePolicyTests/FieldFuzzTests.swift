import CachePolicy
import LacquerTesting
import NIOHTTP1
import Testing

/// Seeded fuzzing of the field parsers a client or origin controls: none traps, and each
/// answer stays inside what its RFC allows. `LACQUER_FUZZ_ITERATIONS` runs longer
/// (`Tests/fuzz.sh`); `LACQUER_SEED` replays a failure.
@Suite("Field parser fuzz")
struct FieldFuzzTests {
    static var iterations: Int { FuzzBudget.iterations(default: 5_000) }

    /// Pieces of real field syntax, glued at random with random bytes between.
    static let pieces = [
        "max-age", "s-maxage", "no-cache", "no-store", "private", "public", "must-revalidate", "stale-while-revalidate",
        "stale-if-error", "=", "\"", ",", ";", " ", "\t", "0", "1", "60", "-1", "99999999999999999999", "3.5", "q", "gzip",
        "identity", "*", "bytes", "-", "=0-", "=-5", "0-0", "W/", "\"etag\"", "Mon, 02 Dec 2026 10:00:00 GMT",
        "Monday, 02-Dec-26 10:00:00 GMT", "Mon Dec  2 10:00:00 2026", "GMT", "\u{0}", "\u{7F}", "é", "\r", "\n",
    ]

    static func randomValue(_ random: inout SeededRandom) -> String {
        var text = ""
        for _ in 0..<Int.random(in: 0...12, using: &random) {
            if Int.random(in: 0..<5, using: &random) == 0 {
                text.unicodeScalars.append(Unicode.Scalar(UInt8.random(in: 0...127, using: &random)))
            } else {
                text += Self.pieces[Int.random(in: 0..<Self.pieces.count, using: &random)]
            }
        }
        return text
    }

    @Test("Cache-Control, Accept-Encoding, qvalues, dates, entity tags, Vary: never a trap, never a negative lifetime")
    func fieldParsers() {
        let seed = SeededRandom.seed(fallback: 0xF1E1D)
        var random = SeededRandom(seed: seed)
        print("field parser fuzz seed \(seed), \(Self.iterations) iterations")
        for _ in 0..<Self.iterations {
            let value = Self.randomValue(&random)
            let cc = CacheControl(parsing: value)
            #expect((cc.maxAge ?? 0) >= 0, "seed \(seed): \(value.debugDescription)")
            #expect((cc.sMaxAge ?? 0) >= 0, "seed \(seed): \(value.debugDescription)")
            let headers = HTTPHeaders([("Cache-Control", value), ("Accept-Encoding", value), ("Vary", value), ("ETag", value)])
            _ = CacheControl(headers: headers)
            _ = AcceptEncoding.acceptsGzip(headers)
            if let q = QValue.parse(value) {
                #expect((0...1000).contains(q), "seed \(seed): \(value.debugDescription)")
            }
            _ = HTTPDate.parse(value)
            _ = EntityTag.parseList(value)
            if let names = VaryKey.fieldNames(headers) {
                #expect(names.allSatisfy { $0 == $0.lowercased() }, "seed \(seed): \(value.debugDescription)")
            }
            _ = ConditionalRequest.isNotModified(
                method: "GET", requestHeaders: HTTPHeaders([("If-None-Match", value), ("If-Modified-Since", value)]),
                storedHeaders: headers)
        }
    }

    @Test("Range: a decision is always inside the body, whatever the field says (RFC 9110 §14)")
    func ranges() {
        let seed = SeededRandom.seed(fallback: 0xA11CE)
        var random = SeededRandom(seed: seed)
        print("range fuzz seed \(seed), \(Self.iterations) iterations")
        for _ in 0..<Self.iterations {
            let value = "bytes=" + Self.randomValue(&random)
            let length = Int.random(in: 0...100_000, using: &random)
            let decision = RangeRequest.evaluate(
                rangeHeader: value, ifRange: nil, method: "GET", storedStatus: 200, storedHeaders: [:], length: length)
            switch decision {
            case .single(let range):
                #expect(range.lowerBound >= 0 && range.upperBound < length, "seed \(seed): \(value.debugDescription) of \(length)")
            case .multiple(let ranges):
                #expect(ranges.allSatisfy { $0.lowerBound >= 0 && $0.upperBound < length }, "seed \(seed): \(value.debugDescription)")
            case .full, .unsatisfiable:
                break
            }
        }
    }
}
