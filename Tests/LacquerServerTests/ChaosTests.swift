import FixtureOrigin
import Foundation
import LacquerServer
import LacquerTesting
import NIOCore
import Testing

/// Seeded random mixes of requests and client fates against an origin that delays, aborts
/// mid-body and answers 5xx or 304. Afterwards the server is alive and right, its connections
/// and open files are back where they were, its memory is bounded, and every body a client read completely
/// was byte-exact.
///
/// A few fixed seeds run here (bounded, a few seconds each). `Tests/chaos.sh` runs long ones:
/// `LACQUER_SEED` picks the seed, `LACQUER_CHAOS_OPERATIONS` the operations per worker.
@Suite("Chaos: random requests, clients that leave, failing origins", .serialized, .timeLimit(.minutes(5)))
struct ChaosTests {
    enum Kind: CaseIterable {
        case get, slowGet, truncated, serverError, conditional, noCache, head, range, post, purge, ban, dropped, keyPurge, softPurge
        /// A whole object or a range of one stored in slices (over the 200,000-byte threshold),
        /// whose origin sometimes cuts its answers to slice requests.
        case slicedGet, slicedRange
    }

    enum Fate: CaseIterable {
        case readAll, closeAfterSending, closeAfterDelay, closeAfterHead, closeMidBody, halfClose, reset,
            pipelinedThenClose, slowReader
    }

    /// One request: its bytes, and what a complete response must look like.
    struct Plan {
        var bytes: [UInt8]
        var isHead = false
        /// The body a complete 200 must have (nil: not checked).
        var expected200: [UInt8]?
        /// The range a 206 must carry, as a slice of `expected200`.
        var range: ClosedRange<Int>?
        var expectedUpload: Int?
    }

    static func plan(_ kind: Kind, random: inout SeededRandom) -> Plan {
        let id = Int.random(in: 0..<4, using: &random)
        let size = [100, 5000, 70_000, 300_000].randomElement(using: &random)!
        let delay = [0, 0, 20, 150].randomElement(using: &random)!
        let ttl = [1, 60].randomElement(using: &random)!
        let query = "cc=max-age%3D\(ttl)&delay=\(delay)&id=\(id)&h=xkey:k\(id)%20all"
        func get(_ target: String, _ headers: [(String, String)] = []) -> [UInt8] {
            RawHTTPClient.serialize("GET", target, headers: headers)
        }
        switch kind {
        case .get:
            return Plan(bytes: get("/bytes/\(size)?\(query)"), expected200: FixtureOrigin.pattern(size))
        case .slowGet:
            return Plan(bytes: get("/slowbody/\(size)/10?\(query)"), expected200: FixtureOrigin.pattern(size))
        case .truncated:
            // The origin announces `size` bytes and closes after half: never a complete 200.
            return Plan(bytes: get("/truncate/\(size)?\(query)"), expected200: FixtureOrigin.pattern(size))
        case .serverError:
            return Plan(bytes: get("/status/503?\(query)"))
        case .conditional:
            let target = "/bytes/\(size)?\(query)&etag=e\(id)"
            return Plan(bytes: get(target, [("If-None-Match", "\"e\(id)\"")]), expected200: FixtureOrigin.pattern(size))
        case .noCache:
            let directives = ["no-cache", "no-cache, no-store", "max-age=0"].randomElement(using: &random)!
            return Plan(bytes: get("/bytes/\(size)?\(query)", [("Cache-Control", directives)]), expected200: FixtureOrigin.pattern(size))
        case .head:
            return Plan(
                bytes: RawHTTPClient.serialize("HEAD", "/bytes/\(size)?\(query)"), isHead: true)
        case .range:
            let first = Int.random(in: 0..<size, using: &random)
            let last = min(size - 1, first + Int.random(in: 0..<5000, using: &random))
            return Plan(
                bytes: get("/bytes/\(size)?\(query)", [("Range", "bytes=\(first)-\(last)")]), expected200: FixtureOrigin.pattern(size),
                range: first...last)
        case .post:
            let length = [0, 10, 70_000].randomElement(using: &random)!
            return Plan(
                bytes: RawHTTPClient.serialize("POST", "/upload?delay=\(delay)", body: FixtureOrigin.pattern(length)),
                expectedUpload: length)
        case .purge:
            return Plan(bytes: RawHTTPClient.serialize("PURGE", "/bytes/\(size)?\(query)"))
        case .ban:
            return Plan(bytes: [])  // carried out through the server's ban API
        case .keyPurge:
            return Plan(bytes: RawHTTPClient.serialize("PURGE", "/", headers: [("xkey-purge", "k\(id)")]))
        case .softPurge:
            let header = [("xkey-softpurge", "k\(id)"), ("Fastly-Soft-Purge", "1")].randomElement(using: &random)!
            let target = header.0 == "Fastly-Soft-Purge" ? "/bytes/\(size)?\(query)" : "/"
            return Plan(bytes: RawHTTPClient.serialize("PURGE", target, headers: [header]))
        case .dropped:
            return Plan(bytes: get("/drop?\(query)"))
        case .slicedGet, .slicedRange:
            let large = [300_000, 700_000].randomElement(using: &random)!
            let fails = Int.random(in: 0..<4, using: &random) == 0 ? "&rangefail=1" : ""
            let target = "/bytes/\(large)?\(query)&ranges=1&etag=s\(id)\(fails)"
            guard kind == .slicedRange else { return Plan(bytes: get(target), expected200: FixtureOrigin.pattern(large)) }
            let first = Int.random(in: 0..<large, using: &random)
            let last = min(large - 1, first + Int.random(in: 0..<200_000, using: &random))
            return Plan(
                bytes: get(target, [("Range", "bytes=\(first)-\(last)")]), expected200: FixtureOrigin.pattern(large), range: first...last)
        }
    }

    /// Checks a response read completely; returns what is wrong, or nil.
    static func check(_ response: RawHTTPResponse, _ plan: Plan) -> String? {
        if plan.isHead {
            return response.body.isEmpty ? nil : "HEAD response with a body"
        }
        switch response.status {
        case 200:
            if let upload = plan.expectedUpload {
                return response.bodyString.hasPrefix("bytes=\(upload) ") ? nil : "upload answered \(response.bodyString)"
            }
            if let expected = plan.expected200, plan.range == nil || response.header("Content-Range") == nil,
                response.body != expected
            {
                return "200 with \(response.body.count) bytes, expected \(expected.count) (\(response.header("Cache-Status") ?? "-"))"
            }
        case 206:
            guard let range = plan.range, let full = plan.expected200 else { return "unexpected 206" }
            if response.body != Array(full[range]) {
                return "206 with \(response.body.count) bytes, expected \(range.count)"
            }
        default:
            break
        }
        return nil
    }

    /// Runs one client's request with `fate`; returns a problem found in a complete response.
    static func run(_ plan: Plan, fate: Fate, port: Int, random: inout SeededRandom) -> String? {
        guard let client = try? RawHTTPClient(port: port, timeout: 15) else { return nil }
        defer { client.close() }
        do {
            switch fate {
            case .readAll:
                try client.send(bytes: plan.bytes)
                return check(try client.readResponse(isHead: plan.isHead), plan)
            case .closeAfterSending:
                try client.send(bytes: plan.bytes)
            case .closeAfterDelay:
                try client.send(bytes: plan.bytes)
                Thread.sleep(forTimeInterval: Double.random(in: 0.001...0.1, using: &random))
            case .closeAfterHead:
                try client.send(bytes: plan.bytes)
                _ = try client.readResponseHead()
            case .closeMidBody:
                try client.send(bytes: plan.bytes)
                _ = try client.readResponseHead()
                _ = try client.readToEOF(max: Int.random(in: 1...20_000, using: &random))
            case .halfClose:
                try client.send(bytes: plan.bytes)
                client.shutdownWrite()
                _ = try? client.readResponse(isHead: plan.isHead)
            case .reset:
                try client.send(bytes: plan.bytes)
                Thread.sleep(forTimeInterval: Double.random(in: 0...0.05, using: &random))
                client.reset()
            case .pipelinedThenClose:
                try client.send(bytes: plan.bytes + plan.bytes)
                Thread.sleep(forTimeInterval: Double.random(in: 0...0.03, using: &random))
            case .slowReader:
                // Reads nothing for a while (the server's writes back up), then everything.
                try client.send(bytes: plan.bytes)
                Thread.sleep(forTimeInterval: Double.random(in: 0.05...0.2, using: &random))
                return check(try client.readResponse(isHead: plan.isHead), plan)
            }
        } catch {
            // Errors are a client's view of a cut connection: fine for every fate.
        }
        return nil
    }

    static func residentBytes() -> Int {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") })
        else { return 0 }
        return (Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0) * 1024
    }

    func chaos(seed: UInt64, operationsPerWorker: Int, workers: Int) async throws {
        print("chaos seed \(seed): \(workers) workers × \(operationsPerWorker) operations (replay: LACQUER_SEED=\(seed) swift test --filter ChaosTests)")
        var storage = ""
        try await withLacquer(configure: { configuration in
            configuration.memoryMaxObjectBytes = 64 * 1024  // larger bodies are served from the disk tier
            configuration.sliceThreshold = 200_000
            configuration.sliceSize = 64 * 1024
            configuration.clientTimeouts.idle = .seconds(2)
            storage = configuration.storageDirectory
        }) { lacquer, port, origin in
            // A first request so lazily opened files and pools are part of the baseline.
            _ = try await runBlocking { try httpGet(port: port, "/warmup?cc=max-age%3D60") }
            let baselineFiles = OpenSockets.files(under: storage)
            let baselineResident = Self.residentBytes()
            let started = ContinuousClock.now
            let problems = try await withThrowingTaskGroup(of: [String].self) { group in
                for worker in 0..<workers {
                    group.addTask {
                        try await runBlocking {
                            var random = SeededRandom(seed: seed &* 1_000_003 &+ UInt64(worker))
                            var problems: [String] = []
                            for operation in 0..<operationsPerWorker {
                                let kind = Kind.allCases.randomElement(using: &random)!
                                if kind == .ban {
                                    switch Int.random(in: 0..<10, using: &random) {
                                    case 0: _ = lacquer.purgeAll()
                                    case 1: _ = lacquer.ban("obj.http.content-length ~ ^\(Int.random(in: 1..<9, using: &random))")
                                    case 2: _ = lacquer.purge(surrogateKeys: ["k\(Int.random(in: 0..<4, using: &random))"], soft: Bool.random(using: &random))
                                    default: _ = lacquer.ban("req.url ~ ^/bytes/\(Int.random(in: 0..<10, using: &random))")
                                    }
                                    continue
                                }
                                let plan = Self.plan(kind, random: &random)
                                let fate = Fate.allCases.randomElement(using: &random)!
                                if let problem = Self.run(plan, fate: fate, port: port, random: &random) {
                                    problems.append("worker \(worker) op \(operation) \(kind)/\(fate): \(problem)")
                                }
                            }
                            return problems
                        }
                    }
                }
                var all: [String] = []
                for try await found in group { all += found }
                return all
            }
            #expect(problems.isEmpty, "seed \(seed): \(problems.prefix(5).joined(separator: "; "))")

            // Alive and right afterwards.
            let miss = try await runBlocking { try httpGet(port: port, "/bytes/3000?cc=max-age%3D60&after=\(seed)") }
            #expect(miss.status == 200 && miss.body == FixtureOrigin.pattern(3000), "seed \(seed): a normal miss")
            let hit = try await runBlocking { try httpGet(port: port, "/bytes/3000?cc=max-age%3D60&after=\(seed)") }
            #expect(hit.header("X-Cache-Status") == "HIT" && hit.body == FixtureOrigin.pattern(3000), "seed \(seed): a normal hit")

            // What the server holds comes back: client connections close (idle timeout 2 s),
            // fills end, disk body files close; what stays open is the backend pools' idle
            // connections. Counted by port and folder, so other tests running meanwhile do not count.
            var clients = 0
            var backend = 0
            var files = 0
            var pooled = 0
            for _ in 0..<100 {
                clients = OpenSockets.connections(localPort: port)
                backend = OpenSockets.connections(remotePort: origin.port)
                files = OpenSockets.files(under: storage)
                pooled = lacquer.backendSnapshots.reduce(0) { $0 + $1.openConnections }
                if clients == 0, backend <= pooled, files <= baselineFiles, lacquer.stats.connections == 0 { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(clients == 0, "seed \(seed): \(clients) client connections still open")
            #expect(backend <= pooled, "seed \(seed): \(backend) origin connections open, \(pooled) in the pools")
            #expect(files <= baselineFiles, "seed \(seed): \(files) files open in the cache folder, \(baselineFiles) before")
            #expect(lacquer.stats.connections == 0, "seed \(seed): client connections left open")
            print("chaos seed \(seed): done in \(ContinuousClock.now - started), \(lacquer.counters[.clientReq]) requests")
            let grown = Self.residentBytes() - baselineResident
            #expect(grown < 512 << 20, "seed \(seed): resident memory grew by \(grown >> 20) MiB")
            _ = origin
        }
    }

    @Test("fixed seeds", arguments: [UInt64(1), 2, 3])
    func fixedSeeds(seed: UInt64) async throws {
        let environment = ProcessInfo.processInfo.environment
        let operations = environment["LACQUER_CHAOS_OPERATIONS"].flatMap(Int.init) ?? 30
        if environment["LACQUER_SEED"] != nil {
            // A replay or a long run: the given seed, once.
            guard seed == 1 else { return }
        }
        try await chaos(seed: SeededRandom.seed(fallback: seed), operationsPerWorker: operations, workers: 6)
    }
}
