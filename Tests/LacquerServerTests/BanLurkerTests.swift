import CachePolicy
import CacheStore
import FixtureOrigin
import Foundation
import LacquerTesting
import Logging
import NIOCore
import NIOHTTP1
import Testing
import VCL

@testable import LacquerServer

/// Bans at scale: each object is tested once per ban (its mark moves forward), the lurker
/// removes what bans cover in the background and drops the bans nothing can meet any more,
/// and the hit fast lane keeps answering objects already tested.
@Suite("Bans and the ban lurker", .serialized, .timeLimit(.minutes(2)))
struct BanLurkerTests {
    private func object(_ path: String, received: Double, contentType: String = "text/html") -> StoredObject {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: contentType)
        return StoredObject(
            key: CacheKey(host: "example.com", target: path), variant: "", varyNames: [], status: 200, reason: "OK",
            headers: headers, body: ByteBuffer(string: path), requestTime: received, responseTime: received,
            origin: received, ttl: 600, grace: 0, keep: 0, mustRevalidate: false)
    }

    private func subject(_ object: StoredObject, url: String) -> VCLBan.Subject {
        let headers = object.headers
        return VCLBan.Subject(url: url, requestHeader: { _ in nil }, status: 200, objectHeader: { headers.first(name: $0) })
    }

    @Test("a ban applies only to objects received before it, and a mark skips the bans already tested")
    func checkUsesTimesAndMarks() throws {
        let bans = BanList()
        let old = self.object("/a", received: 100)
        let fresh = self.object("/a", received: 300)
        let first = try #require(bans.add(try VCLBan.parse("obj.http.content-type ~ html"), now: 200))
        #expect(bans.check(storedAt: old.responseTime, checkedThrough: 0) { self.subject(old, url: "/a") } == .banned(first))
        #expect(bans.check(storedAt: fresh.responseTime, checkedThrough: 0) { self.subject(fresh, url: "/a") } == .clear(through: first))
        // Marked as checked through the ban: not tested again (the subject is never built).
        #expect(bans.check(storedAt: old.responseTime, checkedThrough: first) { Issue.record("tested again"); return self.subject(old, url: "/a") } == .clear(through: first))
        let second = try #require(bans.add(try VCLBan.parse("req.url ~ ^/b"), now: 400))
        #expect(bans.check(storedAt: fresh.responseTime, checkedThrough: first) { self.subject(fresh, url: "/a") } == .clear(through: second))
        #expect(bans.check(storedAt: fresh.responseTime, checkedThrough: first) { self.subject(fresh, url: "/b") } == .banned(second))
        #expect(bans.newestSequence == second)
        #expect(bans.remove([first, second]).count == 2)
        #expect(bans.isEmpty && bans.newestSequence == 0)
    }

    @Test("a lurker pass removes covered objects from memory, marks the rest, counts, and drops the bans it could test")
    func lurkerPassOverMemory() throws {
        let memory = MemoryTier(capacityBytes: 16 << 20)
        let bans = BanList()
        let counters = Counters()
        let coalescer = FetchCoalescer(maxBytesPerFetch: 1 << 20)
        let lurker = BanLurker(
            bans: bans, memory: memory, disk: nil, coalescer: coalescer, counters: counters,
            logger: Logger(label: "test"), clock: { 1_000 }, batchSize: 3, pause: 0, idleCheckInterval: 0)
        for index in 0..<10 {
            memory.insert(self.object("/js/\(index)", received: 100, contentType: "application/javascript"))
            memory.insert(self.object("/html/\(index)", received: 100))
        }
        memory.insert(self.object("/js/late", received: 600, contentType: "application/javascript"))
        let objectBan = try #require(bans.add(try VCLBan.parse("obj.http.content-type ~ javascript"), now: 500))
        let urlBan = try #require(bans.add(try VCLBan.parse("req.url ~ ^/html/[0-4]$"), now: 500))
        let headerBan = try #require(bans.add(try VCLBan.parse("req.http.cookie ~ admin"), now: 500))

        let result = lurker.pass()
        #expect(result.tested == 21)
        #expect(result.removed == 15)
        #expect(memory.stats.objects == 6)
        #expect(counters[.bannedObjects] == 15)
        // The lurker tested the first two everywhere: dropped. The request-header ban stays while
        // objects older than it remain.
        #expect(result.dropped == 2)
        #expect(bans.snapshot().map(\.sequence) == [headerBan])
        #expect(counters[.bansExpired] == 2)
        _ = objectBan
        _ = urlBan
        // The survivors are marked through the first two bans, not past the one only a lookup can test.
        let survivor = try #require(memory.variants(for: CacheKey(host: "example.com", target: "/html/7")).first)
        #expect(survivor.bansCheckedThrough == urlBan)

        // Once nothing older than the header ban is left, it goes too.
        memory.removeAll { $0.responseTime < 500 }
        #expect(lurker.pass().dropped == 1)
        #expect(bans.isEmpty)
    }

    @Test("an idle lurker does not walk the tiers again: only a new ban it can test starts a walk")
    func idleLurkerDoesNotRewalk() throws {
        let memory = MemoryTier(capacityBytes: 1 << 20)
        let bans = BanList()
        let clock = TestClock()
        let lurker = BanLurker(
            bans: bans, memory: memory, disk: nil, coalescer: FetchCoalescer(maxBytesPerFetch: 1 << 20), counters: Counters(),
            logger: Logger(label: "test"), clock: clock.now, pause: 0, idleCheckInterval: 60)
        for index in 0..<5 {
            memory.insert(self.object("/i/\(index)", received: clock.now() - 10))
        }
        bans.add(try VCLBan.parse("req.http.cookie ~ x"), now: clock.now())
        // Only a lookup can test it: no walk, one check for old objects, then nothing for a minute.
        #expect(lurker.pass() == BanLurker.PassResult())
        #expect(lurker.pass() == BanLurker.PassResult())
        bans.add(try VCLBan.parse("obj.http.content-type ~ nothing"), now: clock.now())
        let walk = lurker.pass()
        #expect(walk.walked && walk.tested == 5 && walk.dropped == 1)  // the ban it could test is applied
        clock.advance(1)
        #expect(lurker.pass() == BanLurker.PassResult())
        clock.advance(60)
        // The minute is up: a check, no walk; objects older than the header ban remain, so it stays.
        #expect(lurker.pass() == BanLurker.PassResult())
        #expect(bans.total == 1)
        memory.removeAll { _ in true }
        clock.advance(60)
        #expect(lurker.pass().dropped == 1)
        #expect(bans.isEmpty)
    }

    @Test("a ban stays while a fill that began before it is still running")
    func fillInFlightKeepsBan() throws {
        let memory = MemoryTier(capacityBytes: 1 << 20)
        let bans = BanList()
        let coalescer = FetchCoalescer(maxBytesPerFetch: 1 << 20)
        let lurker = BanLurker(
            bans: bans, memory: memory, disk: nil, coalescer: coalescer, counters: Counters(),
            logger: Logger(label: "test"), clock: { 1_000 }, pause: 0, idleCheckInterval: 0)
        guard case .leader(let busy) = coalescer.join(CacheKey(host: "h", target: "/slow"), now: 400) else {
            Issue.record("expected to lead the fill")
            return
        }
        bans.add(try VCLBan.parse("obj.status == 200"), now: 500)
        #expect(lurker.pass().dropped == 0)
        coalescer.release(busy, outcome: .uncacheable)
        #expect(lurker.pass().dropped == 1)
    }

    @Test("over sockets: the lurker empties both tiers of what a ban covers, GET /bans counts, and the ban is dropped from the index")
    func lurkerOverSockets() async throws {
        try await withLacquer(configure: { $0.banLurkerInterval = 0.05 }) { lacquer, port, origin async throws in
            let admin = try #require(lacquer.adminAddress?.port)
            for index in 0..<5 {
                _ = try httpGet(port: port, "/old/\(index)?cc=max-age%3D600")
                _ = try httpGet(port: port, "/keep/\(index)?cc=max-age%3D600")
            }
            #expect(try await waitForDiskWrites(lacquer, count: 10))
            // A ban only a lookup can test, so it stays, and lists what lookups removed.
            #expect(try httpGet(port: admin, "/ban", method: "POST", body: "req.http.x-user == alice && req.url ~ ^/keep/0").status == 200)
            let banned = try httpGet(port: port, "/keep/0?cc=max-age%3D600", headers: [("X-User", "alice")])
            #expect(banned.header("X-Cache-Status") == "MISS")
            let listing = try httpGet(port: admin, "/bans").bodyString
            // Stored copies: the one in memory and the one on disk.
            #expect(listing.contains("removed=2  req.http.x-user == alice"), "\(listing)")

            #expect(try httpGet(port: admin, "/ban", method: "POST", body: "req.url ~ ^/old/").status == 200)
            let emptied = try await eventually {
                let listing = try httpGet(port: admin, "/bans").bodyString
                return lacquer.memory.stats.objects == 5 && (lacquer.diskStats?.objects ?? 0) == 5 && !listing.contains("^/old/")
            }
            #expect(emptied, "the lurker did not remove the banned objects and drop the ban")
            #expect(lacquer.counters[.bansExpired] >= 1)
            #expect(origin.requestCount(path: "/old/1") == 1)
            #expect(try httpGet(port: port, "/old/1?cc=max-age%3D600").header("X-Cache-Status") == "MISS")
            #expect(try httpGet(port: port, "/keep/1?cc=max-age%3D600").header("X-Cache-Status") == "HIT")
        }
    }

    @Test("with a ban active, objects already tested against it are still answered by the hit fast lane")
    func fastLaneStaysOnWithBans() async throws {
        try await withLacquer(configure: { $0.banLurkerInterval = 3600 }) { lacquer, port, _ async throws in
            let admin = try #require(lacquer.adminAddress?.port)
            let target = "/lane?cc=max-age%3D600"
            _ = try httpGet(port: port, target)
            #expect(try httpGet(port: admin, "/ban", method: "POST", body: "req.http.x-never == 1").status == 200)
            let before = lacquer.counters[.cacheHitFast]
            #expect(try httpGet(port: port, target).header("X-Cache-Status") == "HIT")  // the flow tests it once
            #expect(lacquer.counters[.cacheHitFast] == before)
            #expect(try httpGet(port: port, target).header("X-Cache-Status") == "HIT")
            #expect(lacquer.counters[.cacheHitFast] == before + 1)
            // A new ban: the lane leaves the object to the flow until it has been tested again.
            #expect(try httpGet(port: admin, "/ban", method: "POST", body: "req.url ~ ^/lane").status == 200)
            #expect(try httpGet(port: port, target).header("X-Cache-Status") == "MISS")
        }
    }
}
