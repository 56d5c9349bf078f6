import CachePolicy
import LacquerTesting
import NIOCore
import Testing

@testable import LacquerServer

/// The window a 206 takes of a streaming body: whatever the parts' sizes, it produces exactly
/// what the same ranges cut from the whole body give, and knows when it is done.
@Suite("Body window")
struct BodyWindowTests {
    /// The expected 206 body for `ranges` of `body`, built from the whole body at once.
    static func expected(_ body: [UInt8], ranges: [ClosedRange<Int>], multipart: (String, String?)?) -> [UInt8] {
        guard let (boundary, contentType) = multipart else { return Array(body[ranges[0]]) }
        var out: [UInt8] = []
        for range in ranges {
            out += Array(Multipart.partHeader(boundary: boundary, contentType: contentType, range: range, length: body.count).utf8)
            out += body[range]
        }
        return out + Array(Multipart.closing(boundary: boundary).utf8)
    }

    /// One to four ascending, non-overlapping ranges of at most 700 bytes in `start..<length`.
    static func randomRanges(from start: Int, length: Int, using random: inout SeededRandom) -> [ClosedRange<Int>] {
        var ranges: [ClosedRange<Int>] = []
        var next = start
        for _ in 0..<Int.random(in: 1...4, using: &random) where next < length {
            let low = Int.random(in: next..<length, using: &random)
            let high = Int.random(in: low..<min(length, low + 700), using: &random)
            ranges.append(low...high)
            next = high + 1
        }
        return ranges
    }

    @Test("random ranges of a body cut into random parts come out as from the whole body; skipping ahead changes nothing")
    func randomParts() {
        let seed = SeededRandom.seed(fallback: 0xB0D1)
        var random = SeededRandom(seed: seed)
        print("body window seed \(seed)")
        for round in 0..<FuzzBudget.iterations(default: 400) {
            let length = Int.random(in: 1...3000, using: &random)
            let body = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
            let ranges = Self.randomRanges(from: 0, length: length, using: &random)
            let multipart: (String, String?)? = ranges.count > 1 ? ("b\(round)", round % 2 == 0 ? "text/plain" : nil) : nil
            let want = Self.expected(body, ranges: ranges, multipart: multipart)
            for skip in [false, true] {
                var window = BodyWindow(ranges: ranges, multipart: multipart.map { (boundary: $0.0, contentType: $0.1) }, length: length)
                #expect(window.contentLength == want.count, "seed \(seed) round \(round)")
                var position = skip ? window.skipToFirstRange() : 0
                var got: [UInt8] = []
                var completedAt: Int?
                while position < length {
                    let size = Int.random(in: 1...400, using: &random)
                    let part = ByteBuffer(bytes: body[position..<min(length, position + size)])
                    position += part.readableBytes
                    if let out = window.take(part) { got += Array(out.readableBytesView) }
                    if window.isComplete, completedAt == nil { completedAt = position }
                }
                #expect(got == want, "seed \(seed) round \(round) ranges \(ranges) skip \(skip)")
                // Complete as soon as the last range's last byte has gone by.
                let last = ranges[ranges.count - 1].upperBound
                #expect(completedAt.map { $0 > last && $0 - 400 <= last } == true, "seed \(seed) round \(round)")
                #expect(window.take(ByteBuffer(bytes: [1, 2, 3])) == nil, "nothing after the end")
            }
        }
    }

    @Test("the segments of a window (a body sent from a file, a stored part starting inside it) give the bytes the window takes")
    func segmentsMatchTake() {
        let seed = SeededRandom.seed(fallback: 0x5E61)
        var random = SeededRandom(seed: seed)
        print("body window segments seed \(seed)")
        for round in 0..<FuzzBudget.iterations(default: 300) {
            let length = Int.random(in: 1...3000, using: &random)
            let body = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ 5) }
            // The stored bytes begin at `start` (a stored part), and the ranges lie inside them.
            let start = Int.random(in: 0..<length, using: &random)
            let ranges = Self.randomRanges(from: start, length: length, using: &random)
            let multipart: (boundary: String, contentType: String?)? = ranges.count > 1 ? ("s\(round)", round % 3 == 0 ? "video/mp4" : nil) : nil
            let want = Self.expected(body, ranges: ranges, multipart: multipart.map { ($0.boundary, $0.contentType) })
            let window = BodyWindow(ranges: ranges, multipart: multipart, length: length, startingAt: start)
            let stored = Array(body[start...])
            var got: [UInt8] = []
            for segment in window.segments() {
                switch segment {
                case .bytes(let text): got += Array(text.utf8)
                case .body(let range): got += stored[range]
                }
            }
            #expect(got == want, "seed \(seed) round \(round) start \(start) ranges \(ranges)")
            #expect(got.count == window.contentLength, "seed \(seed) round \(round)")
        }
    }
}
