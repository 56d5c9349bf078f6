import Dispatch
import Foundation
import NIOCore
import NIOHTTP1
import Synchronization
import Testing

@testable import CacheStore

@Suite("DiskTier start-up, schema and concurrency")
struct DiskTierStartupTests {
    func configuration(_ dir: borrowing DiskTestDirectory) -> DiskTier.Configuration {
        DiskTier.Configuration(directory: dir.path, freeSpaceFloor: 0)
    }

    func quarantined(_ dir: borrowing DiskTestDirectory) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasPrefix("index.sqlite.corrupt-") }
    }

    @Test("a garbage index is moved aside, with the reason in startupWarnings, and the tier starts empty")
    func corruptIndexIsQuarantined() throws {
        let dir = try DiskTestDirectory()
        do {
            let tier = try DiskTier(configuration: self.configuration(dir))
            try tier.store(diskTestObject())
            tier.close()
        }
        let index = dir.path + "/index.sqlite"
        try Data(diskTestBytes(8192, seed: 99)).write(to: URL(fileURLWithPath: index))
        try? FileManager.default.removeItem(atPath: index + "-wal")
        try? FileManager.default.removeItem(atPath: index + "-shm")

        let tier = try DiskTier(configuration: self.configuration(dir))
        defer { tier.close() }
        try #require(tier.startupWarnings.count == 1)
        #expect(tier.startupWarnings[0].contains("not a database"))
        #expect(tier.startupWarnings[0].contains("moved"))
        #expect(try self.quarantined(dir).count == 1)
        #expect(tier.stats.objects == 0)
        #expect(try tier.lookup(diskTestObject().key).isEmpty)
        #expect(try tier.store(diskTestObject()))
        #expect(try tier.lookup(diskTestObject().key).count == 1)
    }

    @Test("another application's SQLite database is quarantined, not used or destroyed")
    func foreignDatabaseIsQuarantined() throws {
        let dir = try DiskTestDirectory()
        try FileManager.default.createDirectory(atPath: dir.path, withIntermediateDirectories: true)
        do {
            let db = try SQLiteConnection(path: dir.path + "/index.sqlite")
            try db.execute("CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT); INSERT INTO users VALUES (1, 'x');")
            db.close()
        }
        let tier = try DiskTier(configuration: self.configuration(dir))
        defer { tier.close() }
        #expect(tier.startupWarnings.count == 1)
        #expect(tier.startupWarnings.first?.contains("not a Lacquer index") == true)
        let moved = try #require(try self.quarantined(dir).first)
        let db = try SQLiteConnection(path: dir.path + "/" + moved, create: false)
        #expect(try db.scalar("SELECT COUNT(*) FROM users") == 1)
        db.close()
    }

    @Test("an index from a newer Lacquer is quarantined")
    func newerSchemaIsQuarantined() throws {
        let dir = try DiskTestDirectory()
        do {
            let tier = try DiskTier(configuration: self.configuration(dir))
            tier.close()
        }
        let db = try SQLiteConnection(path: dir.path + "/index.sqlite")
        try db.execute("PRAGMA user_version = 99")
        db.close()
        let tier = try DiskTier(configuration: self.configuration(dir))
        defer { tier.close() }
        #expect(tier.startupWarnings.first?.contains("newer Lacquer") == true)
        #expect(try self.quarantined(dir).count == 1)
    }

    @Test("the old schema version 0 is rebuilt as the current version")
    func oldSchemaIsRebuilt() throws {
        let dir = try DiskTestDirectory()
        try FileManager.default.createDirectory(atPath: dir.path, withIntermediateDirectories: true)
        do {
            // The pre-release layout: no application_id, user_version 0, no checksums, no totals.
            let db = try SQLiteConnection(path: dir.path + "/index.sqlite")
            try db.execute("""
                CREATE TABLE objects(id INTEGER PRIMARY KEY, key TEXT NOT NULL, variant TEXT NOT NULL,
                    status INTEGER, headers BLOB, body_length INTEGER, ttl REAL, last_access REAL);
                CREATE INDEX objects_key ON objects(key);
                INSERT INTO objects VALUES (1, '/a example.com', '', 200, x'', 11, 300, 0);
                """)
            #expect(try db.scalar("PRAGMA user_version") == 0)
            db.close()
        }
        let tier = try DiskTier(configuration: self.configuration(dir))
        #expect(tier.startupWarnings.count == 1)
        #expect(tier.startupWarnings.first?.contains("old schema version 0") == true)
        #expect(try self.quarantined(dir).isEmpty)
        #expect(tier.stats.objects == 0)
        #expect(try tier.store(diskTestObject()))
        tier.close()

        let db = try SQLiteConnection(path: dir.path + "/index.sqlite", create: false)
        #expect(try db.scalar("PRAGMA user_version") == DiskIndexSchema.version)
        #expect(try db.scalar("PRAGMA application_id") == DiskIndexSchema.applicationID)
        #expect(try db.scalar("SELECT objects FROM totals") == 1)
        db.close()
        let reopened = try DiskTier(configuration: self.configuration(dir))
        defer { reopened.close() }
        #expect(reopened.startupWarnings.isEmpty)
        #expect(try reopened.lookup(diskTestObject().key).count == 1)
    }

    @Test("stores and lookups from two threads at once", .timeLimit(.minutes(1)))
    func concurrentStoreAndLookup() throws {
        let dir = try DiskTestDirectory()
        let tier = try DiskTier(configuration: self.configuration(dir))
        defer { tier.close() }
        let perThread = 150
        let failures = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: 2) { thread in
            do {
                for index in 0..<perThread {
                    let body = diskTestBytes(1000 + index, seed: UInt64(thread * 10_000 + index))
                    try tier.store(diskTestObject(target: "/t\(thread)/\(index)", body: body))
                    let own = try tier.lookup(diskTestObject(target: "/t\(thread)/\(index)").key)
                    guard let head = own.first, Array(try tier.load(head).body.readableBytesView) == body else {
                        failures.withLock { $0.append("thread \(thread) object \(index) not read back") }
                        continue
                    }
                    // The other thread's objects, which it may be writing right now.
                    for head in try tier.lookup(diskTestObject(target: "/t\(1 - thread)/\(index)").key) {
                        _ = try tier.load(head)
                    }
                    try tier.touch(head, now: DiskTier.wallClock() + 120)
                }
            } catch {
                failures.withLock { $0.append("thread \(thread): \(error)") }
            }
        }
        #expect(failures.withLock { $0 } == [])
        #expect(tier.stats.objects == Int64(2 * perThread))
        #expect(tier.stats.checksumFailures == 0)
    }

    /// Opt-in (LACQUER_BENCH=1): 1,000,000 index rows, then time a reopen.
    @Test(
        "reopening an index of 1,000,000 rows takes well under a second",
        .enabled(if: ProcessInfo.processInfo.environment["LACQUER_BENCH"] == "1")
    )
    func reopenMillionRows() throws {
        let dir = try DiskTestDirectory()
        let rows = 1_000_000
        do {
            let tier = try DiskTier(configuration: self.configuration(dir))
            tier.close()
            let db = try SQLiteConnection(path: dir.path + "/index.sqlite", create: false)
            try db.execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
            let start = DiskTier.wallClock()
            try db.transaction("bulk insert") {
                for id in 1...rows {
                    let key = CacheKey(host: "example.com", target: "/object/\(id)")
                    try db.run(DiskIndexSchema.insertObject, [
                        .integer(Int64(id)), .blob(Array(key.canonical.utf8)), .integer(Int64(bitPattern: key.digest)),
                        .text(""), .text(""), .integer(200), .text("OK"), .blob(HeaderCodec.encode(HTTPHeaders([("Content-Type", "text/plain")]))),
                        .integer(1000), .blob([0, 0, 0, 0]), .real(1), .real(1), .real(1), .real(60), .real(10), .real(0),
                        .integer(0), .real(71), .real(Double(id)), .integer(4096 + 300),
                    ])
                }
            }
            try db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            db.close()
            print("inserted \(rows) rows in \(DiskTier.wallClock() - start) s")
        }
        var timings: [Double] = []
        for _ in 0..<3 {
            let start = DiskTier.wallClock()
            let tier = try DiskTier(configuration: self.configuration(dir))
            let elapsed = DiskTier.wallClock() - start
            timings.append(elapsed)
            #expect(tier.stats.objects == Int64(rows))
            let head = try #require(try tier.lookup(CacheKey(host: "example.com", target: "/object/123456")).first)
            #expect(head.fileID == 123_456)
            tier.close()
        }
        print("reopen with \(rows) rows: \(timings.map { String(format: "%.4f s", $0) }.joined(separator: ", "))")
        #expect(timings.min()! < 1.0)

        // Lookup latency on the read connection, alone and while a second thread runs
        // FULL-synced purges on the writer (the case a separate read connection is for).
        let tier = try DiskTier(configuration: self.configuration(dir))
        defer { tier.close() }
        @Sendable func timeLookups(_ count: Int) throws -> Double {
            let start = DiskTier.wallClock()
            for index in 0..<count {
                _ = try tier.lookup(CacheKey(host: "example.com", target: "/object/\((index * 7_919) % rows + 1)"))
            }
            return (DiskTier.wallClock() - start) / Double(count) * 1e6
        }
        let alone = try timeLookups(20_000)
        let purging = Atomic<Bool>(true)
        let purges = Atomic<Int>(0)
        let during = Mutex<Double>(0)
        DispatchQueue.concurrentPerform(iterations: 2) { thread in
            if thread == 0 {
                during.withLock { $0 = (try? timeLookups(20_000)) ?? -1 }
                purging.store(false, ordering: .relaxed)
            } else {
                var id = 0
                while purging.load(ordering: .relaxed) {
                    id += 1
                    _ = try? tier.remove(key: CacheKey(host: "example.com", target: "/object/\(rows - id)"))
                    purges.add(1, ordering: .relaxed)
                }
            }
        }
        print(String(format: "lookup: %.1f µs alone, %.1f µs during %d FULL-synced purges", alone, during.withLock { $0 }, purges.load(ordering: .relaxed)))
    }
}

@Suite("DiskTier runtime index damage")
struct DiskTierRuntimeDamageTests {
    @Test("SQLITE_CORRUPT met while running → indexCorrupt now, quarantine at the next start")
    func runtimeCorruptionIsFlagged() throws {
        let dir = try DiskTestDirectory()
        let configuration = DiskTier.Configuration(directory: dir.path, freeSpaceFloor: 0)
        do {
            let tier = try DiskTier(configuration: configuration)
            try tier.store(diskTestObject())
            let mapped = tier.flagIfCorrupt(
                CacheStoreError.sqlite(code: 11, message: "database disk image is malformed", operation: "lookup")
            )
            guard case .indexCorrupt = mapped as? CacheStoreError else {
                Issue.record("expected indexCorrupt, got \(mapped)")
                return
            }
            // Other errors pass through unchanged.
            #expect(tier.flagIfCorrupt(CacheStoreError.diskFull(path: "x")) as? CacheStoreError == .diskFull(path: "x"))
            tier.close()
        }
        let tier = try DiskTier(configuration: configuration)
        defer { tier.close() }
        #expect(tier.startupWarnings.first?.contains("previous run found it damaged") == true)
        #expect(tier.stats.objects == 0)
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/" + DiskIndexSchema.corruptionFlagName))
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).contains { $0.hasPrefix("index.sqlite.corrupt-") })
    }
}
