import CacheStore
import LacquerTesting
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import LacquerServer

/// The busy object's body: append-only, read by byte offset, so every waiter reads 0…end exactly
/// once whatever the chunking and whenever it joins.
@Suite("Busy object body")
struct BusyFetchTests {
    static func bytes(_ buffers: [ByteBuffer]) -> [UInt8] {
        buffers.flatMap { Array($0.readableBytesView) }
    }

    @Test("slices from any offset are exactly the bytes from there, across part boundaries")
    func slicesFromEveryOffset() {
        var body = BusyBody()
        var all: [UInt8] = []
        for (index, size) in [1, 7, 0, 64, 3, 1000].enumerated() {
            let part = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ index) }
            all += part
            body.append(ByteBuffer(bytes: part))
        }
        #expect(body.count == all.count)
        for offset in 0...all.count {
            #expect(Self.bytes(body.slices(from: offset)) == Array(all[offset...]), "offset \(offset)")
        }
        #expect(body.slices(from: all.count + 5).isEmpty)
        #expect(body.slices(from: -1).isEmpty)
    }

    /// A simulated waiter: joins at some step, reads at its own pace (a random share of what is
    /// there on each turn), may leave.
    struct Waiter {
        var joinAt: Int
        var leaveAt: Int?
        var offset = 0
        var received: [UInt8] = []
        var joined = false
        var left = false
        var outcome: BusyFetch.Outcome?
    }

    @Test("random chunk sizes, join times, slow and leaving waiters, failing fills: every waiter's bytes are right")
    func waitersReadEveryByteOnce() {
        let seed = SeededRandom.seed(fallback: 0xB0D1)
        for round in 0..<150 {
            var random = SeededRandom(seed: seed &+ UInt64(round))
            let fails = random.next() % 4 == 0
            let steps = Int.random(in: 1...40, using: &random)
            let failAt = fails ? Int.random(in: 0..<steps, using: &random) : nil
            let busy = BusyFetch(key: CacheKey(host: "h", target: "/\(round)"), maxBytes: 1 << 30)
            busy.publishHead(
                BusyFetch.Head(
                    status: 200, reason: "OK", headers: [:], varyNames: [], variant: "", origin: 0, ttl: 60,
                    expectedLength: nil))
            var waiters = (0..<Int.random(in: 1...6, using: &random)).map { _ in
                Waiter(
                    joinAt: Int.random(in: 0...steps, using: &random),
                    leaveAt: random.next() % 5 == 0 ? Int.random(in: 0...steps, using: &random) : nil)
            }
            var sent: [UInt8] = []
            func turn(_ waiter: inout Waiter, step: Int, random: inout SeededRandom) {
                if !waiter.joined, step >= waiter.joinAt { waiter.joined = true }
                guard waiter.joined, !waiter.left, waiter.outcome == nil else { return }
                if let leaveAt = waiter.leaveAt, step >= leaveAt {
                    waiter.left = true
                    return
                }
                let (parts, outcome) = busy.body(from: waiter.offset)
                // A slow reader takes only some of the parts this turn.
                let take = parts.isEmpty ? 0 : Int.random(in: 0...parts.count, using: &random)
                for part in parts.prefix(take) {
                    waiter.offset += part.readableBytes
                    waiter.received += Array(part.readableBytesView)
                }
                if take == parts.count, let outcome { waiter.outcome = outcome }
            }
            for step in 0..<steps {
                if step == failAt {
                    busy.finish(.failed(.closedMidBody))
                    break
                }
                let size = [0, 1, 2, 100, 4096, 20000].randomElement(using: &random)! + Int.random(in: 0...3, using: &random)
                // Each byte tells its position, so a repeated, missing or shifted part shows.
                let part = (sent.count..<(sent.count + size)).map { UInt8(truncatingIfNeeded: $0 ^ ($0 >> 8) ^ ($0 >> 16)) }
                sent += part
                busy.publishChunk(ByteBuffer(bytes: part))
                for index in waiters.indices { turn(&waiters[index], step: step, random: &random) }
            }
            if failAt == nil { busy.finish(.complete) }
            // Everyone still there drains what is left.
            for _ in 0..<100 {
                for index in waiters.indices { turn(&waiters[index], step: steps, random: &random) }
            }
            for (index, waiter) in waiters.enumerated() where waiter.joined && !waiter.left {
                let context = "seed \(seed &+ UInt64(round)) waiter \(index)"
                if fails {
                    // A failed fill ends every waiter abruptly: what it got is a prefix, never more.
                    #expect(waiter.outcome == .failed(.closedMidBody), "\(context)")
                    #expect(sent.starts(with: waiter.received), "\(context): not a prefix of what was sent")
                } else {
                    #expect(waiter.outcome == .complete, "\(context)")
                    #expect(waiter.received.count == sent.count, "\(context): \(waiter.received.count) of \(sent.count) bytes")
                    #expect(waiter.received.elementsEqual(sent), "\(context): the bytes differ")
                }
            }
        }
    }

    @Test("a waiter that joins after the fill completed reads the whole body")
    func lateJoinerReadsAll() {
        let busy = BusyFetch(key: CacheKey(host: "h", target: "/late"), maxBytes: 1 << 20)
        busy.publishHead(
            BusyFetch.Head(
                status: 200, reason: "OK", headers: [:], varyNames: [], variant: "", origin: 0, ttl: 60, expectedLength: 6))
        busy.publishChunk(ByteBuffer(string: "abc"))
        busy.publishChunk(ByteBuffer(string: "def"))
        busy.finish(.complete)
        let loop = EmbeddedEventLoop()
        let subscription = busy.subscribe(on: loop) { _ in }
        #expect(subscription.outcome == .complete)
        let (parts, outcome) = busy.body(from: 0)
        #expect(String(decoding: Self.bytes(parts), as: UTF8.self) == "abcdef")
        #expect(outcome == .complete)
        #expect(String(decoding: Self.bytes(busy.body(from: 4).parts), as: UTF8.self) == "ef")
    }

    @Test("a body over the waiters' limit fails them, and nothing partial is kept")
    func overLimitFails() {
        let busy = BusyFetch(key: CacheKey(host: "h", target: "/big"), maxBytes: 10)
        busy.publishHead(
            BusyFetch.Head(
                status: 200, reason: "OK", headers: [:], varyNames: [], variant: "", origin: 0, ttl: 60,
                expectedLength: nil))
        busy.publishChunk(ByteBuffer(string: "0123456"))
        busy.publishChunk(ByteBuffer(string: "789ab"))
        let (parts, outcome) = busy.body(from: 0)
        #expect(parts.isEmpty)
        if case .failed = outcome {} else { Issue.record("expected a failed outcome, got \(String(describing: outcome))") }
    }
}
