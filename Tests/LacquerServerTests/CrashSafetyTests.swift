import FixtureOrigin
import Foundation
import LacquerTesting
import Synchronization
import Testing

/// `kill -9` in the middle of heavy write load, then a restart on the same directory: every
/// object served afterwards is byte-identical to what the origin sent (the real binary, a real SIGKILL).
@Suite("Crash safety", .serialized, .timeLimit(.minutes(3)))
struct CrashSafetyTests {
    func size(of i: Int) -> Int { 500 + (i * 7919) % 200_000 }

    func target(_ i: Int) -> String { "/bytes/\(size(of: i))?cc=max-age%3D3600&k=\(i)" }

    /// Starts the binary; returns the process and its client and admin ports.
    func startLacquer(storage: String, originURL: String, extra: [String] = []) throws -> (Process, Int, Int) {
        let process = Process()
        process.executableURL = CommandLineTests.binary
        process.arguments = [
            "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--backend", originURL, "--threads", "2",
            "--storage-dir", storage,
        ] + extra
        let err = Pipe()
        process.standardError = err
        process.standardOutput = Pipe()
        try process.run()
        let (port, admin) = try Self.waitForPorts(err.fileHandleForReading, timeout: 20)
        return (process, port, admin)
    }

    @Test("after kill -9 under write load, a restart serves only byte-identical objects")
    func killNineUnderLoad() async throws {
        let storage = try makeTemporaryDirectory("lacquer-crash")
        defer { try? FileManager.default.removeItem(atPath: storage) }
        let origin = try await FixtureOrigin.start()
        defer { Task { try? await origin.shutdown() } }

        let (first, port, admin) = try startLacquer(storage: storage, originURL: origin.baseURL)
        defer { if first.isRunning { first.terminate() } }
        let state = LoadState()
        // Four clients fetch distinct objects as fast as they can (bounded: 400 each).
        let load = Task {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for worker in 0..<4 {
                    group.addTask {
                        try await runBlocking {
                            for n in 0..<400 where !state.stop.load(ordering: .relaxed) {
                                let i = worker * 1000 + n
                                state.requested.withLock { _ = $0.insert(i) }
                                _ = try? httpGet(port: port, self.target(i), timeout: 5)
                            }
                        }
                    }
                }
                try await group.waitForAll()
            }
        }
        // Kill once the disk tier has committed a fair number of objects, mid-load.
        let stored = try await waitForDiskStored(admin: admin, count: 40, within: 20)
        #expect(stored >= 40, "the disk tier never stored enough objects to make the test meaningful")
        kill(first.processIdentifier, SIGKILL)
        first.waitUntilExit()
        state.stop.store(true, ordering: .relaxed)
        _ = try? await load.value
        #expect(first.terminationReason == .uncaughtSignal)

        let (second, port2, _) = try startLacquer(storage: storage, originURL: origin.baseURL)
        defer { if second.isRunning { second.terminate() } }
        let indices = state.requested.withLock { Array($0) }.sorted()
        let before = origin.requestCount()
        var hits = 0
        var corrupt = 0
        for i in indices {
            let response = try httpGet(port: port2, target(i), timeout: 10)
            #expect(response.status == 200)
            if response.body != FixtureOrigin.pattern(size(of: i)) {
                corrupt += 1
            }
            if response.header("X-Cache-Status") == "HIT" {
                hits += 1
            }
        }
        #expect(corrupt == 0, "\(corrupt) responses were not byte-identical to the origin's")
        #expect(hits >= 1, "no object survived the crash")
        #expect(origin.requestCount() - before == indices.count - hits)
        second.terminate()
        second.waitUntilExit()
    }

    @Test("a ban survives kill -9: banned objects on disk stay hidden after the restart, others are still hits")
    func banSurvivesKillNine() async throws {
        let storage = try makeTemporaryDirectory("lacquer-crash")
        defer { try? FileManager.default.removeItem(atPath: storage) }
        let origin = try await FixtureOrigin.start()
        defer { Task { try? await origin.shutdown() } }
        let (first, port, admin) = try startLacquer(storage: storage, originURL: origin.baseURL)
        defer { if first.isRunning { first.terminate() } }
        for path in ["/js/app.js", "/js/lib.js", "/css/site.css"] {
            _ = try httpGet(port: port, path + "?cc=max-age%3D3600")
        }
        #expect(try await waitForDiskStored(admin: admin, count: 3) == 3)
        let banned = try httpGet(port: admin, "/ban", method: "POST", body: "req.url ~ ^/js/")
        #expect(banned.status == 200)
        // The answer came after the commit: kill at once.
        kill(first.processIdentifier, SIGKILL)
        first.waitUntilExit()

        let (second, port2, admin2) = try startLacquer(storage: storage, originURL: origin.baseURL)
        defer { if second.isRunning { second.terminate() } }
        #expect(try httpGet(port: port2, "/js/app.js?cc=max-age%3D3600").header("X-Cache-Status") == "MISS")
        #expect(try httpGet(port: port2, "/js/lib.js?cc=max-age%3D3600").header("X-Cache-Status") == "MISS")
        #expect(try httpGet(port: port2, "/css/site.css?cc=max-age%3D3600").header("X-Cache-Status") == "HIT")
        // Stored again after the ban: not covered by it.
        #expect(try httpGet(port: port2, "/js/app.js?cc=max-age%3D3600").header("X-Cache-Status") == "HIT")
        // The lurker finds nothing older left that the ban covers, and drops it (also from the index).
        let dropped = try await eventually(within: 10) { try httpGet(port: admin2, "/bans").bodyString.hasPrefix("0 active ban(s)") }
        #expect(dropped)
        second.terminate()
        second.waitUntilExit()
    }

    @Test("purges by surrogate key and soft purges survive kill -9: nothing key-purged is served, nothing soft-purged is fresh")
    func keyPurgesSurviveKillNine() async throws {
        let storage = try makeTemporaryDirectory("lacquer-crash")
        defer { try? FileManager.default.removeItem(atPath: storage) }
        let origin = try await FixtureOrigin.start()
        defer { Task { try? await origin.shutdown() } }
        let (first, port, admin) = try startLacquer(storage: storage, originURL: origin.baseURL)
        defer { if first.isRunning { first.terminate() } }
        let gone = "/k/gone?cc=max-age%3D3600&h=xkey:gone-key"
        let soft = "/k/soft?cc=max-age%3D3600&h=Surrogate-Key:soft-key"
        let kept = "/k/kept?cc=max-age%3D3600&h=Cache-Tag:kept-key"
        let softURL = "/k/soft-url?cc=max-age%3D3600"
        for target in [gone, soft, kept, softURL] {
            _ = try httpGet(port: port, target)
        }
        #expect(try await waitForDiskStored(admin: admin, count: 4) == 4)
        let purge = try httpGet(port: admin, "/purge?key=gone-key", method: "POST")
        #expect(purge.status == 200 && purge.bodyString.contains("Purged 1 object"), "\(purge.bodyString)")
        #expect(try httpGet(port: port, "/", method: "PURGE", headers: [("xkey-softpurge", "soft-key")]).status == 200)
        #expect(try httpGet(port: port, softURL, method: "PURGE", headers: [("Fastly-Soft-Purge", "1")]).status == 200)
        // Each answer came after its commit: kill at once.
        kill(first.processIdentifier, SIGKILL)
        first.waitUntilExit()

        let (second, port2, admin2) = try startLacquer(storage: storage, originURL: origin.baseURL)
        defer { if second.isRunning { second.terminate() } }
        #expect(try httpGet(port: port2, gone).header("X-Cache-Status") == "MISS")
        let softAnswer = try httpGet(port: port2, soft)
        #expect(softAnswer.header("X-Cache-Status") == "UPDATING", "\(softAnswer.status) \(softAnswer.header("Cache-Status") ?? "-")")
        #expect(softAnswer.header("Cache-Status")?.contains("detail=soft-purged") == true)
        let softURLAnswer = try httpGet(port: port2, softURL)
        #expect(
            softURLAnswer.header("X-Cache-Status") == "UPDATING",
            "\(softURLAnswer.status) \(softURLAnswer.header("X-Cache-Status") ?? "-") \(softURLAnswer.header("Cache-Status") ?? "-")")
        #expect(try httpGet(port: port2, kept).header("X-Cache-Status") == "HIT")
        // Purge everything, kill -9 again: nothing stored before it is served after the restart.
        // The refetched /k/gone and the two refreshes.
        let restored = try await waitForDiskStored(admin: admin2, count: 3)
        #expect(restored >= 3, "\(restored)")
        #expect(try httpGet(port: admin2, "/purge?all=1", method: "POST").status == 200)
        kill(second.processIdentifier, SIGKILL)
        second.waitUntilExit()
        let (third, port3, _) = try startLacquer(storage: storage, originURL: origin.baseURL)
        defer { if third.isRunning { third.terminate() } }
        #expect(try httpGet(port: port3, kept).header("X-Cache-Status") == "MISS")
        #expect(try httpGet(port: port3, soft).header("X-Cache-Status") == "MISS")
        third.terminate()
        third.waitUntilExit()
    }

    @Test("a ban from a BAN method built in VCL is committed before its answer: it survives kill -9 right after")
    func vclBanSurvivesKillNine() async throws {
        let storage = try makeTemporaryDirectory("lacquer-crash")
        defer { try? FileManager.default.removeItem(atPath: storage) }
        let config = storage + "/ban.vcl"
        try """
            vcl 4.1;
            sub vcl_recv {
                if (req.method == "BAN") {
                    if (!client.ip ~ purge_acl) { return (synth(403)); }
                    ban("req.url ~ ^" + req.url);
                    return (synth(200, "Banned"));
                }
            }
            """.write(toFile: config, atomically: true, encoding: .utf8)
        let origin = try await FixtureOrigin.start()
        defer { Task { try? await origin.shutdown() } }
        let cache = storage + "/cache"
        let (first, port, admin) = try startLacquer(storage: cache, originURL: origin.baseURL, extra: ["--config", config])
        defer { if first.isRunning { first.terminate() } }
        for path in ["/news/1", "/sport/1"] {
            _ = try httpGet(port: port, path + "?cc=max-age%3D3600")
        }
        #expect(try await waitForDiskStored(admin: admin, count: 2) == 2)
        #expect(try httpGet(port: port, "/news/", method: "BAN").status == 200)
        kill(first.processIdentifier, SIGKILL)
        first.waitUntilExit()

        let (second, port2, _) = try startLacquer(storage: cache, originURL: origin.baseURL, extra: ["--config", config])
        defer { if second.isRunning { second.terminate() } }
        #expect(try httpGet(port: port2, "/news/1?cc=max-age%3D3600").header("X-Cache-Status") == "MISS")
        #expect(try httpGet(port: port2, "/sport/1?cc=max-age%3D3600").header("X-Cache-Status") == "HIT")
        second.terminate()
        second.waitUntilExit()
    }

    final class LoadState: Sendable {
        let requested = Mutex<Set<Int>>([])
        let stop = Atomic<Bool>(false)
    }

    /// Reads stderr until both "listening on" lines appear.
    static func waitForPorts(_ handle: FileHandle, timeout: Double) throws -> (Int, Int) {
        let deadline = Date().addingTimeInterval(timeout)
        var text = ""
        var client: Int?
        var admin: Int?
        while Date() < deadline && (client == nil || admin == nil) {
            let data = handle.availableData
            if data.isEmpty { break }
            text += String(decoding: data, as: UTF8.self)
            for line in text.split(separator: "\n") where line.contains("listening on") {
                let port = line.split(separator: ":").last.flatMap { Int($0.trimmingCharacters(in: .whitespaces)) }
                if line.contains("admin") { admin = port } else { client = port }
            }
        }
        guard let client, let admin else {
            throw CommandLineTests.CLIError(message: "lacquer never logged its addresses; stderr: \(text)")
        }
        return (client, admin)
    }
}
