import FixtureOrigin
import Foundation
import LacquerServer
import LacquerTesting
import NIOCore
import Testing

/// Floods from 127.0.0.1, bounded in count and time: slowloris heads, slow request bodies, idle
/// connections beyond the limit. During each a normal client is answered, and afterwards every
/// flood connection is gone (timeouts enforced, accept-and-close when full).
@Suite("Floods", .serialized, .timeLimit(.minutes(2)))
struct FloodTests {
    /// Short timeouts so the test sees them fire; the defaults are HARDENING.md's.
    static func configure(_ configuration: inout ServerConfiguration) {
        configuration.clientTimeouts.header = .milliseconds(800)
        configuration.clientTimeouts.idle = .milliseconds(800)
        configuration.clientTimeouts.bodyIdle = .milliseconds(800)
    }

    /// A normal request on a new connection, answered.
    func normalRequestAnswered(port: Int, sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            let response = try httpGet(port: port, "/bytes/100")
            #expect(response.status == 200, sourceLocation: sourceLocation)
            #expect(response.body.count == 100, sourceLocation: sourceLocation)
        } catch {
            Issue.record("a normal request failed during the flood: \(error)", sourceLocation: sourceLocation)
        }
    }

    /// Waits (bounded) until the server holds at most `count` client connections open.
    func waitForConnections(_ lacquer: LacquerServer, atMost count: Int) async throws -> Int {
        var open = lacquer.stats.connections
        // Up to 20 s: a slow reader counts as stalled only once the buffers between us are full.
        for _ in 0..<1_000 where open > count {
            try await Task.sleep(for: .milliseconds(20))
            open = lacquer.stats.connections
        }
        return open
    }

    @Test("slowloris: 100 heads trickled a byte at a time are cut at the header timeout; normal clients are answered meanwhile")
    func slowloris() async throws {
        try await withLacquer(configure: Self.configure) { lacquer, port, _ async throws in
            var slow: [RawHTTPClient] = []
            defer { slow.forEach { $0.close() } }
            for _ in 0..<100 {
                let client = try RawHTTPClient(port: port, timeout: 5)
                try client.send("GET /")
                slow.append(client)
            }
            for round in 0..<6 {
                for client in slow { try? client.send("a") }
                if round % 2 == 0 { self.normalRequestAnswered(port: port) }
                try await Task.sleep(for: .milliseconds(250))
            }
            let open = try await self.waitForConnections(lacquer, atMost: 0)
            #expect(open == 0, "every trickling connection was closed")
            #expect(lacquer.counters[.sessClosedTimeout] >= 100)
            self.normalRequestAnswered(port: port)
        }
    }

    @Test("slow POST: 50 bodies trickled slower than the body timeout are cut; normal clients are answered meanwhile")
    func slowPost() async throws {
        try await withLacquer(configure: Self.configure) { lacquer, port, origin async throws in
            var slow: [RawHTTPClient] = []
            defer { slow.forEach { $0.close() } }
            for _ in 0..<50 {
                let client = try RawHTTPClient(port: port, timeout: 5)
                try client.send("POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\nxx")
                slow.append(client)
            }
            self.normalRequestAnswered(port: port)
            try await Task.sleep(for: .milliseconds(1_200))
            self.normalRequestAnswered(port: port)
            let open = try await self.waitForConnections(lacquer, atMost: 0)
            #expect(open == 0, "every stalled upload was cut")
            #expect(lacquer.counters[.clientGoneMidUpload] + lacquer.counters[.sessClosedTimeout] >= 50)
            #expect(origin.bodyBytesReceived(path: "/upload") < 100_000 * 50)
        }
    }

    @Test("idle connections beyond the limit are accepted and closed; when the idle ones time out, normal clients are answered")
    func idleFlood() async throws {
        try await withLacquer(configure: {
            Self.configure(&$0)
            $0.limits.maxConnections = 200
        }) { lacquer, port, _ async throws in
            var idle: [RawHTTPClient] = []
            defer { idle.forEach { $0.close() } }
            for _ in 0..<300 {
                idle.append(try RawHTTPClient(port: port, timeout: 5))
            }
            for _ in 0..<100 where lacquer.counters[.sessDropped] < 100 {
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(lacquer.counters[.sessDropped] >= 100, "the connections over the limit were closed at once")
            let open = try await self.waitForConnections(lacquer, atMost: 0)
            #expect(open == 0, "the idle ones timed out")
            self.normalRequestAnswered(port: port)
        }
    }

    @Test("slow readers: 10 clients that never read a large pass answer are cut at the send timeout, without holding the body")
    func slowReaders() async throws {
        try await withLacquer(configure: {
            Self.configure(&$0)
            $0.clientTimeouts.sendIdle = .milliseconds(800)
        }) { lacquer, port, _ async throws in
            var readers: [RawHTTPClient] = []
            defer { readers.forEach { $0.close() } }
            for _ in 0..<10 {
                let client = try RawHTTPClient(port: port, timeout: 5)
                try client.send("GET /bytes/50000000?cc=no-store HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                readers.append(client)
            }
            try await Task.sleep(for: .milliseconds(300))
            self.normalRequestAnswered(port: port)
            let open = try await self.waitForConnections(lacquer, atMost: 0)
            #expect(open == 0, "every stalled reader was cut")
            self.normalRequestAnswered(port: port)
        }
    }

    @Test("churn: 600 connections opened and dropped at every stage leave nothing open, and clients are answered after")
    func churn() async throws {
        let seed = SeededRandom.seed(fallback: 0xC4)
        var random = SeededRandom(seed: seed)
        print("churn seed \(seed)")
        try await withLacquer(configure: Self.configure) { lacquer, port, _ async throws in
            for index in 0..<600 {
                let client = try RawHTTPClient(port: port, timeout: 5)
                switch Int.random(in: 0..<4, using: &random) {
                case 0: break  // connect, then close
                case 1: try? client.send("GET /bytes/10 HTT")
                case 2: try? client.send("GET /bytes/100000 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                default: client.reset()
                }
                client.close()
                if index % 100 == 0 { self.normalRequestAnswered(port: port) }
            }
            let open = try await self.waitForConnections(lacquer, atMost: 0)
            #expect(open == 0, "seed \(seed): connections left open after the churn")
            self.normalRequestAnswered(port: port)
        }
    }
}
