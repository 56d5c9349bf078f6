import CacheStore
import FixtureOrigin
import Foundation
import LacquerServer
import LacquerTesting
import Logging
import NIOCore
import Testing

/// The disk tier behind the server: write-behind, disk hits, promotion, restart, purge durability,
/// corruption, and the directory lock — over real sockets against the fixture origin.
@Suite("Disk tier integration", .serialized, .timeLimit(.minutes(3)))
struct DiskTierIntegrationTests {
    /// Waits (bounded) until the disk writer has stored `count` objects.
    func server(storage: String, originPort: Int, configure: (inout ServerConfiguration) -> Void = { _ in }) -> LacquerServer {
        var configuration = ServerConfiguration()
        configuration.listen = [HostAndPort(host: "127.0.0.1", port: 0)]
        configuration.admin = nil
        configuration.threads = 1
        configuration.backends = [BackendConfiguration(name: "o", host: "127.0.0.1", port: originPort)]
        configuration.storageDirectory = storage
        configure(&configuration)
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        return LacquerServer(configuration: configuration, logger: logger)
    }

    @Test("an object evicted from memory is a HIT from disk, then promoted back into memory")
    func diskHitAndPromotion() async throws {
        try await withLacquer { lacquer, port, origin in
            let target = "/bytes/2000?cc=max-age%3D60"
            #expect(try httpGet(port: port, target).header("X-Cache-Status") == "MISS")
            #expect(try await waitForDiskWrites(lacquer, count: 1), "disk writes did not complete")
            lacquer.memory.removeAll { _ in true }
            let fromDisk = try httpGet(port: port, target)
            #expect(fromDisk.header("X-Cache-Status") == "HIT")
            #expect(fromDisk.header("Cache-Status")?.contains("detail=disk") == true)
            #expect(fromDisk.body == FixtureOrigin.pattern(2000))
            #expect(lacquer.counters[.diskPromotions] == 1)
            let fromMemory = try httpGet(port: port, target)
            #expect(fromMemory.header("X-Cache-Status") == "HIT")
            #expect(fromMemory.header("Cache-Status")?.contains("detail=disk") == false)
            #expect(origin.requestCount(path: "/bytes/2000") == 1)
        }
    }

    @Test("a disk hit on a small object is answered by the hit lane on the loop, as the flow answers it; purges and bans still win")
    func diskHitInTheLane() async throws {
        try await withLacquer { lacquer, port, origin in
            let targets = (0..<4).map { "/bytes/3000?cc=max-age%3D60&n=\($0)" }
            for target in targets { #expect(try httpGet(port: port, target).header("X-Cache-Status") == "MISS") }
            #expect(try await waitForDiskWrites(lacquer, count: targets.count), "disk writes did not complete")

            // The flow's answer from disk (a request the lane leaves to the flow), then the lane's.
            lacquer.memory.removeAll { _ in true }
            let fast0 = lacquer.counters[.cacheHitFast]
            let viaFlow = try httpGet(port: port, targets[0], headers: [("Cache-Control", "max-stale=0")])
            #expect(lacquer.counters[.cacheHitFast] == fast0)
            lacquer.memory.removeAll { _ in true }
            let viaLane = try httpGet(port: port, targets[0])
            #expect(lacquer.counters[.cacheHitFast] == fast0 + 1)
            #expect(lacquer.counters[.diskHit] == 2)
            for response in [viaFlow, viaLane] {
                #expect(response.header("X-Cache-Status") == "HIT")
                #expect(response.header("Cache-Status")?.contains("detail=disk") == true)
                #expect(response.body == FixtureOrigin.pattern(3000))
            }
            for name in ["Content-Length", "Content-Type", "ETag", "Cache-Control", "Via", "Accept-Ranges"] {
                #expect(viaFlow.header(name) == viaLane.header(name), "\(name) differs")
            }
            // Promoted: the next hit is from memory.
            #expect(lacquer.counters[.diskPromotions] == 2)
            #expect(try httpGet(port: port, targets[0]).header("Cache-Status")?.contains("detail=disk") == false)

            // A purge is not undone by the lane: the object is fetched again.
            lacquer.memory.removeAll { _ in true }
            #expect(try httpGet(port: port, targets[1], method: "PURGE").status == 200)
            #expect(try httpGet(port: port, targets[1]).header("X-Cache-Status") == "MISS")
            #expect(origin.requestCount(path: "/bytes/3000") == targets.count + 1)

            // With a ban in force the lane leaves disk objects to the flow, which applies it.
            #expect(lacquer.ban("req.url ~ n=2") == nil)
            let fast1 = lacquer.counters[.cacheHitFast]
            #expect(try httpGet(port: port, targets[2]).header("X-Cache-Status") == "MISS")
            #expect(try httpGet(port: port, targets[3]).header("X-Cache-Status") == "HIT")
            #expect(lacquer.counters[.cacheHitFast] == fast1)
            #expect(origin.requestCount(path: "/bytes/3000") == targets.count + 2)
        }
    }

    @Test("a disk hit the memory tier will not keep is answered whole from the bytes read, by the lane and the flow, and stays on disk")
    func diskHitNotKeptInMemory() async throws {
        // 64 KiB of memory over 16 shards admits bodies of at most 2 KiB: a 3,000-byte object
        // lives on disk only, and every hit builds an object that is delivered once.
        try await withLacquer(configure: { $0.memoryBytes = 64 << 10 }) { lacquer, port, origin in
            #expect(!lacquer.memory.admits(bodyLength: 3000))
            let target = "/bytes/3000?cc=max-age%3D60&k=1"
            let miss = try httpGet(port: port, target)
            #expect(miss.header("X-Cache-Status") == "MISS")
            #expect(try await waitForDiskWrites(lacquer, count: 1), "disk writes did not complete")
            let fast0 = lacquer.counters[.cacheHitFast]
            let viaLane = try httpGet(port: port, target)
            #expect(lacquer.counters[.cacheHitFast] == fast0 + 1)
            let viaFlow = try httpGet(port: port, target, headers: [("Cache-Control", "max-stale=0")])
            #expect(lacquer.counters[.cacheHitFast] == fast0 + 1)
            for response in [viaLane, viaFlow] {
                #expect(response.status == 200 && response.header("X-Cache-Status") == "HIT")
                #expect(response.header("Cache-Status")?.contains("detail=disk") == true)
                #expect(response.header("Content-Length") == "3000")
                #expect(response.body == FixtureOrigin.pattern(3000))
                for name in ["Content-Type", "ETag", "Cache-Control"] {
                    #expect(response.header(name) == miss.header(name), "\(name) differs")
                }
            }
            let head = try httpGet(port: port, target, method: "HEAD")
            #expect(head.header("X-Cache-Status") == "HIT" && head.header("Content-Length") == "3000" && head.body.isEmpty)
            let part = try httpGet(port: port, target, headers: [("Range", "bytes=100-199")])
            #expect(part.status == 206 && part.header("Content-Range") == "bytes 100-199/3000")
            #expect(part.body == Array(FixtureOrigin.pattern(3000)[100..<200]))
            #expect(lacquer.counters[.diskPromotions] == 0)
            #expect(lacquer.memory.stats.objects == 0)
            #expect(origin.requestCount(path: "/bytes/3000") == 1)
        }
    }

    @Test("a miss asks the disk once: the flow takes the lane's word that nothing is stored, for that request only")
    func missAsksTheDiskOnce() async throws {
        try await withLacquer { lacquer, port, origin in
            let misses0 = try #require(lacquer.diskStats).misses
            #expect(try httpGet(port: port, "/bytes/700?cc=max-age%3D60&m=1").header("X-Cache-Status") == "MISS")
            #expect(try #require(lacquer.diskStats).misses == misses0 + 1)
            // A request the lane leaves to the flow: the flow asks the disk itself.
            #expect(
                try httpGet(port: port, "/bytes/700?cc=max-age%3D60&m=2", headers: [("Cache-Control", "max-stale=0")])
                    .header("X-Cache-Status") == "MISS")
            #expect(try #require(lacquer.diskStats).misses == misses0 + 2)
            // Stored on disk and dropped from memory: the lane finds it there, no origin request.
            #expect(try await waitForDiskWrites(lacquer, count: 2), "disk writes did not complete")
            lacquer.memory.removeAll { _ in true }
            for m in 1...2 {
                let again = try httpGet(port: port, "/bytes/700?cc=max-age%3D60&m=\(m)")
                #expect(again.header("X-Cache-Status") == "HIT" && again.body == FixtureOrigin.pattern(700))
            }
            #expect(origin.requestCount(path: "/bytes/700") == 2)
        }
    }

    @Test("an object too large for memory streams from disk, byte-identical")
    func largeObjectFromDisk() async throws {
        try await withLacquer { lacquer, port, origin in
            let size = 3 << 20
            let target = "/bytes/\(size)?cc=max-age%3D60"
            let first = try httpGet(port: port, target, timeout: 30)
            #expect(first.body.count == size)
            #expect(try await waitForDiskWrites(lacquer, count: 1), "disk writes did not complete")
            #expect(lacquer.memory.stats.objects == 0)
            let second = try httpGet(port: port, target, timeout: 30)
            #expect(second.header("X-Cache-Status") == "HIT")
            #expect(second.header("Content-Length") == String(size))
            #expect(second.body == FixtureOrigin.pattern(size))
            let head = try httpGet(port: port, target, method: "HEAD")
            #expect(head.header("X-Cache-Status") == "HIT")
            #expect(head.body.isEmpty)
            #expect(origin.requestCount(path: "/bytes/\(size)") == 1)
        }
    }

    @Test("a restart on the same directory serves every stored fresh object as a HIT, with the right Age")
    func restartKeepsObjects() async throws {
        let storage = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: storage) }
        let origin = try await FixtureOrigin.start()
        let first = server(storage: storage, originPort: origin.port)
        try await first.start()
        let port1 = try #require(first.listeningAddresses.first?.port)
        for i in 0..<20 {
            #expect(try httpGet(port: port1, "/r\(i)?cc=max-age%3D600&size=\(100 + i)").header("X-Cache-Status") == "MISS")
        }
        try await first.shutdown()  // drains queued disk writes
        #expect(first.counters[.diskStored] == 20)
        try await Task.sleep(for: .milliseconds(1100))

        let second = server(storage: storage, originPort: origin.port)
        try await second.start()
        let port2 = try #require(second.listeningAddresses.first?.port)
        for i in 0..<20 {
            let response = try httpGet(port: port2, "/r\(i)?cc=max-age%3D600&size=\(100 + i)")
            #expect(response.header("X-Cache-Status") == "HIT")
            #expect(response.body == FixtureOrigin.pattern(100 + i))
            #expect((Int(response.header("Age") ?? "") ?? 0) >= 1)
        }
        #expect(origin.requestCount() == 20)
        try await second.shutdown()
        try await origin.shutdown()
    }

    @Test("a PURGE is durable: the object does not come back after a restart")
    func purgeIsDurable() async throws {
        let storage = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: storage) }
        let origin = try await FixtureOrigin.start()
        let first = server(storage: storage, originPort: origin.port)
        try await first.start()
        let port1 = try #require(first.listeningAddresses.first?.port)
        _ = try httpGet(port: port1, "/gone?cc=max-age%3D600")
        _ = try httpGet(port: port1, "/kept?cc=max-age%3D600")
        #expect(try await waitForDiskWrites(first, count: 2), "disk writes did not complete")
        #expect(try httpGet(port: port1, "/gone?cc=max-age%3D600", method: "PURGE").status == 200)
        try await first.shutdown()

        let second = server(storage: storage, originPort: origin.port)
        try await second.start()
        let port2 = try #require(second.listeningAddresses.first?.port)
        #expect(try httpGet(port: port2, "/gone?cc=max-age%3D600").header("X-Cache-Status") == "MISS")
        #expect(try httpGet(port: port2, "/kept?cc=max-age%3D600").header("X-Cache-Status") == "HIT")
        try await second.shutdown()
        try await origin.shutdown()
    }

    @Test("bans outlive a restart: the admin's and VCL's, with their times, so later objects are not covered")
    func bansAreDurable() async throws {
        let storage = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: storage) }
        let origin = try await FixtureOrigin.start()
        let first = server(storage: storage, originPort: origin.port) { $0.banLurkerInterval = 3600 }
        try await first.start()
        let port1 = try #require(first.listeningAddresses.first?.port)
        for path in ["/news/1", "/news/2", "/sport/1"] {
            _ = try httpGet(port: port1, path + "?cc=max-age%3D600")
        }
        #expect(try await waitForDiskWrites(first, count: 3), "disk writes did not complete")
        #expect(first.ban("req.url ~ ^/news/") == nil)
        try await first.shutdown()

        // No lurker pass in either run: one could carry the ban out and retire it (as Varnish's
        // lurker does) before the listing is read. What must hold is that the ban is restored.
        let second = server(storage: storage, originPort: origin.port) { $0.banLurkerInterval = 3600 }
        try await second.start()
        let port2 = try #require(second.listeningAddresses.first?.port)
        #expect(second.banListing().contains("req.url ~ ^/news/"))
        #expect(try httpGet(port: port2, "/news/1?cc=max-age%3D600").header("X-Cache-Status") == "MISS")
        #expect(try httpGet(port: port2, "/sport/1?cc=max-age%3D600").header("X-Cache-Status") == "HIT")
        #expect(try httpGet(port: port2, "/news/1?cc=max-age%3D600").header("X-Cache-Status") == "HIT")
        try await second.shutdown()
        try await origin.shutdown()
    }

    @Test("a purge by key left unfinished on disk is in force at the next start and carried out")
    func unfinishedKeyPurgeResumes() async throws {
        let storage = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: storage) }
        let origin = try await FixtureOrigin.start()
        let first = server(storage: storage, originPort: origin.port)
        try await first.start()
        let port1 = try #require(first.listeningAddresses.first?.port)
        _ = try httpGet(port: port1, "/r/1?cc=max-age%3D600&h=xkey:doomed")
        _ = try httpGet(port: port1, "/r/2?cc=max-age%3D600&h=xkey:kept")
        #expect(try await waitForDiskWrites(first, count: 2))
        try await first.shutdown()
        // What a crash right after the purge's answer leaves: the record, not yet carried out.
        do {
            var configuration = DiskTier.Configuration(directory: storage, freeSpaceFloor: 0)
            configuration.surrogateKeyFields = .standard
            let tier = try DiskTier(configuration: configuration)
            #expect(try tier.recordTagPurge(["doomed"], time: Date().timeIntervalSince1970) == 1)
            tier.close()
        }
        let second = server(storage: storage, originPort: origin.port)
        try await second.start()
        let port2 = try #require(second.listeningAddresses.first?.port)
        let doomed = try httpGet(port: port2, "/r/1?cc=max-age%3D600&h=xkey:doomed")
        #expect(doomed.header("X-Cache-Status") == "MISS", "\(doomed.status) \(doomed.header("Cache-Status") ?? "-")")
        let kept = try httpGet(port: port2, "/r/2?cc=max-age%3D600&h=xkey:kept")
        #expect(kept.header("X-Cache-Status") == "HIT", "\(kept.status) \(kept.header("Cache-Status") ?? "-")")
        // Carried out: the old /r/1 was removed from disk (the new copy, received after, stays).
        let finished = try await eventually { (second.diskStats?.purged ?? 0) == 1 }
        #expect(finished)
        try await second.shutdown()
        try await origin.shutdown()
    }

    @Test("a PURGE right after a store wins over the queued disk write")
    func purgeWinsOverQueuedWrite() async throws {
        try await withLacquer { lacquer, port, _ in
            let client = try RawHTTPClient(port: port)
            defer { client.close() }
            _ = try client.request("GET", "/race?cc=max-age%3D600")
            #expect(try client.request("PURGE", "/race?cc=max-age%3D600").status == 200)
            lacquer.memory.removeAll { _ in true }
            #expect(try httpGet(port: port, "/race?cc=max-age%3D600").header("X-Cache-Status") == "MISS")
        }
    }

    @Test("a corrupted body file is never served: it is a miss, refetched, dropped and counted")
    func corruptBodyIsAMiss() async throws {
        try await withLacquer { lacquer, port, origin in
            let target = "/bytes/50000?cc=max-age%3D600"
            _ = try httpGet(port: port, target)
            #expect(try await waitForDiskWrites(lacquer, count: 1), "disk writes did not complete")
            // Flip one byte in every body file.
            let storage = lacquer.configuration.storageDirectory
            let enumerator = FileManager.default.enumerator(atPath: storage + "/bodies")
            var corrupted = 0
            while let relative = enumerator?.nextObject() as? String {
                let path = storage + "/bodies/" + relative
                var isDirectory: ObjCBool = false
                guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue else { continue }
                var data = try Data(contentsOf: URL(fileURLWithPath: path))
                guard data.count > 100 else { continue }
                data[100] ^= 0xFF
                try data.write(to: URL(fileURLWithPath: path))
                corrupted += 1
            }
            #expect(corrupted == 1)
            lacquer.memory.removeAll { _ in true }
            let response = try httpGet(port: port, target)
            #expect(response.status == 200)
            #expect(response.header("X-Cache-Status") == "MISS")
            #expect(response.body == FixtureOrigin.pattern(50000))
            #expect(origin.requestCount(path: "/bytes/50000") == 2)
            #expect(lacquer.counters[.diskReadErrors] == 1)
            #expect((lacquer.diskStats?.checksumFailures ?? 0) == 1)
        }
    }

    @Test("a second Lacquer on the same directory refuses to start, naming the lock")
    func directoryLock() async throws {
        try await withLacquer { lacquer, _, origin in
            let second = server(storage: lacquer.configuration.storageDirectory, originPort: origin.port)
            do {
                try await second.start()
                try await second.shutdown()
                Issue.record("second server started on a locked directory")
            } catch let error as LacquerServerError {
                #expect(error.description.contains("in use by another Lacquer"))
            }
        }
    }

    @Test("a storage directory that cannot be created stops start-up with a reason naming --storage-dir")
    func unwritableDirectoryStopsStartup() async throws {
        let file = try makeTemporaryDirectory() + "/a-file"
        #expect(FileManager.default.createFile(atPath: file, contents: Data("x".utf8)))
        do {
            _ = try await withLacquer(configure: { $0.storageDirectory = file + "/cache" }) { _, _, _ in
                Issue.record("started on a storage directory inside a file")
            }
        } catch let error as LacquerServerError {
            #expect(error.description.contains("--storage-dir \(file)/cache"))
            #expect(error.description.contains("--disk-size 0"))
        }
    }

    @Test("memory-only (disk size 0) keeps objects up to the memory tier's object limit")
    func memoryOnlyKeepsLargeObjects() async throws {
        try await withLacquer(configure: {
            $0.diskBytes = 0
            $0.memoryBytes = 256 << 20
            $0.memoryMaxObjectBytes = 8 << 20
        }) { lacquer, port, _ in
            #expect(lacquer.diskStats == nil)
            let first = try httpGet(port: port, "/bytes/5242880?cc=max-age%3D60")
            #expect(first.body.count == 5_242_880)
            let second = try httpGet(port: port, "/bytes/5242880?cc=max-age%3D60")
            #expect(second.header("X-Cache-Status") == "HIT")
            #expect(second.body == first.body)
        }
    }

    @Test("/stats reports both tiers")
    func statsReportTiers() async throws {
        try await withLacquer { lacquer, port, _ in
            _ = try httpGet(port: port, "/st?cc=max-age%3D60")
            #expect(try await waitForDiskWrites(lacquer, count: 1), "disk writes did not complete")
            let adminPort = try #require(lacquer.adminAddress?.port)
            let stats = try httpGet(port: adminPort, "/stats").body
            let document = try #require(try JSONSerialization.jsonObject(with: Data(stats)) as? [String: Any])
            let disk = try #require(document["disk"] as? [String: Any])
            #expect(disk["objects"] as? Int == 1)
            #expect(disk["checksum_failures"] as? Int == 0)
            let counters = try #require(document["counters"] as? [String: Any])
            #expect(counters["disk_stored"] as? Int == 1)
            let memory = try #require(document["memory"] as? [String: Any])
            #expect(memory["objects"] as? Int == 1)
            // The object's bytes are in a run (process-wide figures: other tests' objects count too).
            let slotBytes = try #require(memory["slot_bytes"] as? Int)
            let runBytes = try #require(memory["run_bytes"] as? Int)
            #expect(slotBytes > 0 && runBytes >= 64 * 1024 && runBytes >= slotBytes)
        }
    }
}
