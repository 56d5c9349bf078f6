import Dispatch
import FixtureOrigin
import Foundation
import LacquerTesting
import Synchronization
import Testing

@testable import LacquerServer

/// Backpressure of the disk write queue on fills: while the queue is over its high mark and the
/// writer makes progress, a fill waits before asking the origin; a stalled writer or a long wait
/// lets it go.
@Suite("Fill gate")
struct FillGateTests {
    @Test("the gate holds fills only over its mark and while the writer makes progress; they go when it catches up, stalls or they waited too long")
    func states() {
        var gate = FillGate<Int>(highObjects: 10, highBytes: 1000, stallAfter: 1, maxWait: 2, now: 100)
        #expect(gate.fillStarting(1, queuedObjects: 9, queuedBytes: 999, now: 100) == .go)
        #expect(gate.fillStarting(2, queuedObjects: 10, queuedBytes: 0, now: 100.5) == .wait)
        #expect(gate.fillStarting(3, queuedObjects: 0, queuedBytes: 1000, now: 100.6) == .wait)
        // Progress that leaves the queue over its mark releases nothing; under it, everyone.
        #expect(gate.progressed(queuedObjects: 12, queuedBytes: 0, now: 100.7).isEmpty)
        #expect(gate.progressed(queuedObjects: 9, queuedBytes: 10, now: 100.8) == [2, 3])
        #expect(gate.waiters.isEmpty)

        // Waits longer than maxWait end, the others stay.
        #expect(gate.fillStarting(4, queuedObjects: 20, queuedBytes: 0, now: 101) == .wait)
        _ = gate.progressed(queuedObjects: 20, queuedBytes: 0, now: 101.9)
        #expect(gate.fillStarting(5, queuedObjects: 20, queuedBytes: 0, now: 102.5) == .wait)
        _ = gate.progressed(queuedObjects: 20, queuedBytes: 0, now: 102.8)
        #expect(gate.tick(now: 103.1) == [4])
        #expect(gate.waiters.map(\.waiter) == [5])

        // A writer without progress for stallAfter: the waiters go, and new fills do not wait.
        #expect(gate.tick(now: 103.9) == [5])
        #expect(gate.fillStarting(6, queuedObjects: 20, queuedBytes: 0, now: 104) == .go)
        // Progress again: the gate holds again.
        _ = gate.progressed(queuedObjects: 20, queuedBytes: 0, now: 104.1)
        #expect(gate.fillStarting(7, queuedObjects: 20, queuedBytes: 0, now: 104.2) == .wait)
        #expect(gate.releaseAll() == [7])
    }

    static func target(_ n: Int) -> String { "/bytes/5000?cc=max-age%3D600&n=\(n)" }

    /// A clock the test moves.
    final class ManualClock: Sendable {
        let now = Mutex<Double>(1_800_000_000)
        func advance(_ seconds: Double) { self.now.withLock { $0 += seconds } }
        var read: @Sendable () -> Double { { [self] in self.now.withLock { $0 } } }
    }

    @Test("a miss while the disk write queue is over its mark waits for the writer, then is fetched and written; a client that leaves meanwhile changes nothing; a stalled writer holds no miss")
    func missesWaitForTheWriter() async throws {
        let clock = ManualClock()
        try await withLacquer(
            configure: { $0.diskMaxQueuedBytes = 16 * 1024 },  // high mark: 8 KiB queued
            clock: clock.read
        ) { lacquer, port, origin in
            let disk = try #require(lacquer.diskStorage)
            // One write done: the writer is known to make progress.
            _ = try await runBlocking { try httpGet(port: port, Self.target(0)) }
            #expect(try await waitForDiskWrites(lacquer, count: 1))

            // The writer is busy: two 5,000-byte objects queue up and pass the mark.
            let release = DispatchSemaphore(value: 0)
            disk.onWriter { _ = release.wait(timeout: .now() + 20) }
            for n in 1...2 {
                let miss = try await runBlocking { try httpGet(port: port, Self.target(n)) }
                #expect(miss.header("X-Cache-Status") == "MISS" && miss.body.count == 5000)
            }
            #expect(disk.pendingWriteCount == 2)

            // The next miss waits before asking the origin; one whose client leaves too.
            let waiting = Task { try await runBlocking { try httpGet(port: port, Self.target(3), timeout: 20) } }
            let leaver = try RawHTTPClient(port: port, timeout: 10)
            try leaver.send(bytes: RawHTTPClient.serialize("GET", Self.target(4)))
            #expect(try await eventually { disk.fillsWaiting == 2 })
            try await Task.sleep(for: .milliseconds(200))
            #expect(origin.requestCount(path: "/bytes/5000") == 3, "a fill asked the origin while the queue was over its mark")
            #expect(lacquer.counters[.fillsWaitedForDisk] == 2)
            leaver.reset()

            // The writer catches up: both fetch, both are written, nothing is dropped.
            release.signal()
            let answered = try await waiting.value
            #expect(answered.header("X-Cache-Status") == "MISS" && answered.body == FixtureOrigin.pattern(5000))
            #expect(try await waitForDiskWrites(lacquer, count: 5))
            #expect(origin.requestCount(path: "/bytes/5000") == 5)
            #expect(lacquer.counters[.diskWriteDropped] == 0)

            // A writer that has made no progress for a second holds nobody: the miss goes at once.
            let stalled = DispatchSemaphore(value: 0)
            disk.onWriter { _ = stalled.wait(timeout: .now() + 20) }
            for n in 5...6 { _ = try await runBlocking { try httpGet(port: port, Self.target(n)) } }
            clock.advance(DiskStorage.fillStallAfter + 0.5)
            let started = Date()
            let goes = try await runBlocking { try httpGet(port: port, Self.target(7)) }
            #expect(goes.header("X-Cache-Status") == "MISS")
            #expect(Date().timeIntervalSince(started) < DiskStorage.fillStallAfter)
            #expect(lacquer.counters[.fillsWaitedForDisk] == 2)
            stalled.signal()
            #expect(try await waitForDiskWrites(lacquer, count: 8))
        }
    }
}
