import CacheStore
import Foundation
import LacquerTesting
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization
import Testing

@testable import LacquerServer

@Suite("Disk write-behind queue")
struct DiskStorageTests {
    private static func object(_ target: String, bytes: Int = 1024, responseTime: Double) -> StoredObject {
        StoredObject(
            key: CacheKey(host: "example.com", target: target),
            variant: "", varyNames: [], status: 200, reason: "OK",
            headers: HTTPHeaders([("Content-Type", "application/octet-stream")]),
            body: ByteBuffer(repeating: 0x61, count: bytes),
            requestTime: responseTime, responseTime: responseTime, origin: responseTime,
            ttl: 3600, grace: 0, keep: 0, mustRevalidate: false)
    }

    private static func open(_ directory: String, counters: Counters, maxQueuedBytes: Int = 64 << 20) throws -> DiskStorage {
        let tier = try DiskTier(configuration: DiskTier.Configuration(directory: directory, capacityBytes: 64 << 20))
        return DiskStorage(tier: tier, counters: counters, logger: Logger(label: "test"), maxQueuedBytes: maxQueuedBytes)
    }

    @Test("a burst of stores all reach the disk, and a purge queued after them wins")
    func burstThenPurge() async throws {
        let directory = try makeTemporaryDirectory("lacquer-diskq")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let counters = Counters()
        let storage = try Self.open(directory, counters: counters)
        let now = Date().timeIntervalSince1970
        for index in 0..<500 {
            #expect(storage.store(Self.object("/o\(index)", responseTime: now - 10)))
        }
        // An older copy queued before a purge is skipped (the purge's tombstone covers it) ...
        #expect(storage.store(Self.object("/purged", responseTime: now - 10)))
        // ... and one the tombstone does not cover is written before the purge runs, then removed.
        #expect(storage.store(Self.object("/purged", responseTime: now + 10)))
        let removed = try await storage.remove(CacheKey(host: "example.com", target: "/purged"), now: now, on: loop).get()
        #expect(removed == 1)
        #expect(storage.pendingWriteCount == 0)
        #expect(counters[.diskStored] == 501)
        #expect(try await storage.lookup(CacheKey(host: "example.com", target: "/o499"), on: loop).get().count == 1)
        #expect(try await storage.lookup(CacheKey(host: "example.com", target: "/purged"), on: loop).get().isEmpty)
        await storage.shutdown()

        // They survive a reopen.
        let reopened = try Self.open(directory, counters: Counters())
        #expect(reopened.tier.stats.objects == 500)
        await reopened.shutdown()
    }

    @Test("a store beyond the queue bound is dropped and counted, never buffered")
    func queueBound() async throws {
        let directory = try makeTemporaryDirectory("lacquer-diskq")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let counters = Counters()
        let storage = try Self.open(directory, counters: counters, maxQueuedBytes: 4096)
        #expect(!storage.store(Self.object("/big", bytes: 8192, responseTime: 1_000)))
        #expect(counters[.diskWriteDropped] == 1)
        #expect(storage.pendingWriteCount == 0)
        #expect(storage.store(Self.object("/small", bytes: 100, responseTime: 1_000)))
        await storage.shutdown()
        let reopened = try Self.open(directory, counters: Counters())
        #expect(reopened.tier.stats.objects == 1)
        await reopened.shutdown()
    }
    @Test("a lookup without waiting that starts once a removal was asked for never finds the removed object, while the removal commits")
    func removalRacesLookups() async throws {
        let directory = try makeTemporaryDirectory("lacquer-diskq")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let storage = try Self.open(directory, counters: Counters())
        let now = Date().timeIntervalSince1970
        var stale = 0
        var found = 0
        for round in 0..<150 {
            let key = CacheKey(host: "example.com", target: "/r\(round)")
            #expect(storage.store(Self.object("/r\(round)", responseTime: now - 10)))
            try await storage.onWriter(on: loop) { _ in }.get()  // stored
            if storage.lookupWithoutWaiting(key)?.count == 1 { found += 1 }
            let done = RemovalDone()
            let removal = storage.remove(key, now: now, on: loop)
            removal.whenComplete { _ in done.flag.store(true, ordering: .releasing) }
            // Lookups all through the commit (bounded): the tombstone must hide the row until
            // the commit does.
            var lookups = 0
            while !done.flag.load(ordering: .acquiring), lookups < 200_000 {
                if let heads = storage.lookupWithoutWaiting(key), !heads.isEmpty { stale += 1 }
                lookups += 1
            }
            #expect(try await removal.get() == 1)
            #expect(storage.lookupWithoutWaiting(key)?.isEmpty != false)
        }
        #expect(stale == 0)
        #expect(found > 100)  // the lookups ran on the loop's path, not handed off
        await storage.shutdown()
    }
}

private final class RemovalDone: Sendable {
    let flag = Atomic<Bool>(false)
}

@Suite("Promotion from disk")
struct DiskPromotionTests {
    private static func object(_ target: String, xkey: String) -> StoredObject {
        StoredObject(
            key: CacheKey(host: "example.com", target: target), variant: "", varyNames: [], status: 200, reason: "OK",
            headers: HTTPHeaders([("Content-Type", "text/plain"), ("xkey", xkey)]), body: ByteBuffer(string: "disk copy"),
            requestTime: 10, responseTime: 10, origin: 10, ttl: 3600, grace: 0, keep: 0, mustRevalidate: false)
    }

    @Test("an object read from disk before a purge of its key or surrogate key is not put into memory after it; one read after is")
    func noPromotionAcrossAPurge() {
        let counters = Counters()
        let context = ServerContext(
            configuration: ServerConfiguration(), memory: MemoryTier(capacityBytes: 1 << 20, surrogateKeyFields: .standard), disk: nil,
            counters: counters,
            logger: Logger(label: "test"), clock: { 1_000 }, eventLoops: [])
        let byKey = Self.object("/by-key", xkey: "k1")
        context.coalescer.markPurged(byKey.key, at: 100)
        context.promoteFromDisk(byKey, lookedUpAt: 99)  // looked up before the purge
        #expect(context.memory.holdsNothing(for: byKey.key))
        context.promoteFromDisk(byKey, lookedUpAt: 101)  // after it
        #expect(context.memory.variants(for: byKey.key).count == 1)

        let byTag = Self.object("/by-tag", xkey: "news sports")
        context.coalescer.markPurged(tags: ["sports"], at: 200)
        context.promoteFromDisk(byTag, lookedUpAt: 150)
        #expect(context.memory.holdsNothing(for: byTag.key))
        context.promoteFromDisk(byTag, lookedUpAt: 250)
        #expect(context.memory.variants(for: byTag.key).count == 1)
        #expect(counters[.diskPromotions] == 2)
    }
}
