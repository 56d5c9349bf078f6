import CacheStore
import FixtureOrigin
import Foundation
import LacquerServer
import LacquerTesting
import Testing

/// A client that leaves at the wrong moment must never take the process down, and a waiter on a
/// busy object must receive the body byte for byte. Each test is one route that used to crash
/// the process (a flow reaching for its gone connection's event loop) or corrupt a body.
@Suite("Clients that leave, and collapsed bodies", .serialized, .timeLimit(.minutes(3)))
struct ClientLeavesTests {
    /// Sends `request` on a new connection, waits `afterMilliseconds`, and closes without reading.
    func sendAndLeave(port: Int, _ request: String, afterMilliseconds: Int) async throws {
        try await runBlocking {
            let client = try RawHTTPClient(port: port, timeout: 5)
            try client.send(request)
            if afterMilliseconds > 0 {
                Thread.sleep(forTimeInterval: Double(afterMilliseconds) / 1000)
            }
            client.close()
        }
    }

    /// Waits (bounded) until `condition` holds.
    func eventually(_ what: String, _ condition: () -> Bool) async throws {
        for _ in 0..<300 where !condition() {
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(condition(), "\(what) did not happen within 3 s")
    }

    /// The server still answers a plain request correctly.
    func expectAlive(port: Int) async throws {
        let response = try await runBlocking { try httpGet(port: port, "/alive?body=yes") }
        #expect(response.status == 200)
        #expect(response.bodyString == "yes")
    }

    /// Nil when `body` is `expected`; else where they first differ (a short message, not the bytes).
    static func difference(_ body: [UInt8], _ expected: [UInt8]) -> String? {
        if body == expected { return nil }
        let common = min(body.count, expected.count)
        let first = (0..<common).first { body[$0] != expected[$0] } ?? common
        return "\(body.count) bytes (expected \(expected.count)), first difference at byte \(first)"
    }

    @Test(
        "a no-cache, no-store refetch of a cached object whose client leaves before the origin answers",
        arguments: [0, 50])
    func noStoreRefetchClientLeaves(leaveAfter: Int) async throws {
        try await withLacquer { lacquer, port, origin in
            let target = "/delay/300/x\(leaveAfter)?cc=max-age%3D60"
            let first = try await runBlocking { try httpGet(port: port, target) }
            #expect(first.header("X-Cache-Status") == "MISS")
            try await sendAndLeave(
                port: port,
                "GET \(target) HTTP/1.1\r\nHost: 127.0.0.1\r\nCache-Control: no-cache, no-store\r\n\r\n",
                afterMilliseconds: leaveAfter)
            // The refetch answers (300 ms) after the client left; its answer is not storable,
            // so the stored copy is invalidated.
            try await eventually("the refetch") { origin.requestCount(path: "/delay/300/x\(leaveAfter)") == 2 }
            try await Task.sleep(for: .milliseconds(400))
            try await expectAlive(port: port)
            #expect(lacquer.counters[.objectsNotStoredUncacheable] >= 1)
        }
    }

    @Test("a fast cached object refetched with no-store by a client that closes right after sending")
    func fastNoStoreRefetchClientLeaves() async throws {
        try await withLacquer { lacquer, port, origin in
            for round in 0..<20 {
                let target = "/fast\(round)?cc=max-age%3D60"
                _ = try await runBlocking { try httpGet(port: port, target) }
                try await sendAndLeave(
                    port: port,
                    "GET \(target) HTTP/1.1\r\nHost: 127.0.0.1\r\nCache-Control: no-cache, no-store\r\n\r\n",
                    afterMilliseconds: 0)
            }
            try await eventually("the refetches") { origin.requestCount() >= 40 }
            try await Task.sleep(for: .milliseconds(200))
            try await expectAlive(port: port)
        }
    }

    @Test("a revalidation (304) whose client left, answered for a no-store request")
    func revalidationClientLeaves() async throws {
        try await withLacquer { lacquer, port, origin in
            let target = "/delay/300/r?cc=max-age%3D60&etag=v1"
            _ = try await runBlocking { try httpGet(port: port, target) }
            try await sendAndLeave(
                port: port,
                "GET \(target) HTTP/1.1\r\nHost: 127.0.0.1\r\nCache-Control: no-cache, no-store\r\n\r\n",
                afterMilliseconds: 50)
            try await eventually("the revalidation") { origin.requestCount(path: "/delay/300/r") == 2 }
            try await eventually("the 304 handled") { lacquer.counters[.cacheRevalidated] == 1 }
            try await expectAlive(port: port)
        }
    }

    @Test("concurrent revalidations of an object held only on disk, every client leaving early")
    func diskRevalidationClientsLeave() async throws {
        try await withLacquer(configure: { $0.memoryMaxObjectBytes = 1024 }) { lacquer, port, origin in
            let target = "/delay/200/d?cc=max-age%3D60&etag=v2&size=10000"
            let first = try await runBlocking { try httpGet(port: port, target) }
            #expect(Self.difference(first.body, FixtureOrigin.pattern(10000)) == nil)
            try await eventually("the disk write") { lacquer.counters[.diskStored] >= 1 }
            // Each no-cache request revalidates the disk copy (304); every client is gone by then.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<4 {
                    group.addTask {
                        try await sendAndLeave(
                            port: port, "GET \(target) HTTP/1.1\r\nHost: 127.0.0.1\r\nCache-Control: no-cache\r\n\r\n",
                            afterMilliseconds: 30)
                    }
                }
                try await group.waitForAll()
            }
            try await eventually("the revalidations") { lacquer.counters[.cacheRevalidated] >= 1 }
            try await Task.sleep(for: .milliseconds(300))
            try await expectAlive(port: port)
            // The revalidated object is still served, complete.
            let again = try await runBlocking { try httpGet(port: port, target) }
            #expect(again.status == 200)
            #expect(Self.difference(again.body, FixtureOrigin.pattern(10000)) == nil)
        }
    }

    @Test("a fill retried after the origin closed without a head, its client gone meanwhile")
    func retryAfterClientLeft() async throws {
        try await withLacquer { lacquer, port, origin in
            try await sendAndLeave(
                port: port, "GET /drop?delay=200&cc=max-age%3D60 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                afterMilliseconds: 50)
            try await eventually("the retry") { lacquer.counters[.backendRetry] >= 1 }
            try await eventually("the second attempt") { origin.requestCount(path: "/drop") == 2 }
            try await Task.sleep(for: .milliseconds(300))
            try await expectAlive(port: port)
            #expect(lacquer.counters[.fetchFailed] >= 1)
        }
    }

    @Test("a collapsed waiter on a 2 MiB body arriving in 64 KiB pieces gets every byte once, in order")
    func collapsedWaiterGetsExactBytes() async throws {
        try await withLacquer { lacquer, port, origin in
            let length = 2 << 20
            let expected = FixtureOrigin.pattern(length)
            // 32 pieces 50 ms apart: the fill lasts 1.6 s, so a loaded machine still sends the
            // waiter's request while it runs.
            let target = "/slowbody/\(length)/50?piece=65536&cc=max-age%3D3600"
            for round in 0..<6 {
                let purge = try await runBlocking { try httpGet(port: port, target, method: "PURGE") }
                #expect(purge.status == 200 || purge.status == 404)
                // The leader's request is on the wire before the waiter's is sent.
                let leaderClient = try RawHTTPClient(port: port, timeout: 20)
                try leaderClient.send(bytes: RawHTTPClient.serialize("GET", target))
                async let leader = runBlocking { try leaderClient.readResponse() }
                // The waiter goes once the leader's fill has reached the origin.
                #expect(try await LacquerTesting.eventually(within: 10) { origin.requestCount(path: "/slowbody/\(length)/50") == round + 1 })
                let waiter = try await runBlocking { try httpGet(port: port, target, timeout: 20) }
                let first = try await leader
                leaderClient.close()
                #expect(first.status == 200)
                #expect(Self.difference(first.body, expected) == nil, "round \(round): the leader's body")
                #expect(waiter.status == 200)
                #expect(
                    waiter.header("Cache-Status")?.contains("collapsed") == true,
                    "round \(round): the second request was \(waiter.header("Cache-Status") ?? "-")")
                #expect(Self.difference(waiter.body, expected) == nil, "round \(round): the waiter's body")
            }
            #expect(lacquer.counters[.coalescedWaiters] >= 6)
        }
    }

    // MARK: The flow's steps, each with its client leaving

    @Test("a miss whose client leaves before the head: the fill still completes and is stored")
    func missLeaderLeavesBeforeHead() async throws {
        try await withLacquer { lacquer, port, origin in
            let target = "/delay/300/left-early?cc=max-age%3D60&size=5000"
            try await sendAndLeave(port: port, "GET \(target) HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", afterMilliseconds: 50)
            try await eventually("the fill stored") { lacquer.counters[.objectsStored] == 1 }
            let hit = try await runBlocking { try httpGet(port: port, target) }
            #expect(hit.header("X-Cache-Status") == "HIT")
            #expect(Self.difference(hit.body, FixtureOrigin.pattern(5000)) == nil)
            #expect(origin.requestCount(path: "/delay/300/left-early") == 1)
        }
    }

    @Test("a miss whose client leaves mid-body: the fill completes, is stored whole, and its waiter gets every byte")
    func missLeaderLeavesMidBody() async throws {
        try await withLacquer { lacquer, port, origin in
            let length = 300_000
            // 60 ms between chunks: the fill lasts about a second, so the waiter joins it even
            // when a loaded machine is slow to take its request.
            let target = "/slowbody/\(length)/60?cc=max-age%3D60"
            let leader = try RawHTTPClient(port: port, timeout: 10)
            try leader.send(bytes: RawHTTPClient.serialize("GET", target))
            _ = try await runBlocking { try leader.readResponseHead() }
            async let waiter = runBlocking { try httpGet(port: port, target, timeout: 10) }
            try await Task.sleep(for: .milliseconds(60))
            leader.reset()
            let waited = try await waiter
            #expect(waited.header("Cache-Status")?.contains("collapsed") == true)
            #expect(Self.difference(waited.body, FixtureOrigin.pattern(length)) == nil)
            try await eventually("the fill stored") { lacquer.counters[.objectsStored] == 1 }
            let hit = try await runBlocking { try httpGet(port: port, target) }
            #expect(hit.header("X-Cache-Status") == "HIT")
            #expect(Self.difference(hit.body, FixtureOrigin.pattern(length)) == nil)
            #expect(origin.requestCount(path: "/slowbody/\(length)/60") == 1)
        }
    }

    @Test("a waiter that leaves mid-stream does not disturb the fill or its leader")
    func waiterLeavesMidStream() async throws {
        try await withLacquer { lacquer, port, origin in
            let length = 300_000
            let target = "/slowbody/\(length)/30?cc=max-age%3D60&w=1"
            let leader = try RawHTTPClient(port: port, timeout: 10)
            try leader.send(bytes: RawHTTPClient.serialize("GET", target))
            async let first = runBlocking { try leader.readResponse() }
            try await Task.sleep(for: .milliseconds(60))
            try await runBlocking {
                let waiter = try RawHTTPClient(port: port, timeout: 10)
                try waiter.send(bytes: RawHTTPClient.serialize("GET", target))
                _ = try waiter.readResponseHead()
                _ = try waiter.readToEOF(max: 1000)
                waiter.reset()
            }
            let whole = try await first
            leader.close()
            #expect(Self.difference(whole.body, FixtureOrigin.pattern(length)) == nil)
            try await eventually("the fill stored") { lacquer.counters[.objectsStored] == 1 }
        }
    }

    @Test("a disk hit streamed to a client that leaves mid-body: the body file is closed, the object stays")
    func diskStreamClientLeaves() async throws {
        var storage = ""
        try await withLacquer(configure: {
            $0.memoryMaxObjectBytes = 1024
            storage = $0.storageDirectory
        }) { lacquer, port, origin in
            let length = 2_000_000
            let target = "/bytes/\(length)?cc=max-age%3D60"
            _ = try await runBlocking { try httpGet(port: port, target, timeout: 20) }
            try await eventually("the disk write") { lacquer.counters[.diskStored] >= 1 }
            let baseline = OpenSockets.files(under: storage)
            for _ in 0..<5 {
                try await runBlocking {
                    let client = try RawHTTPClient(port: port, timeout: 10)
                    try client.send(bytes: RawHTTPClient.serialize("GET", target))
                    _ = try client.readResponseHead()
                    _ = try client.readToEOF(max: 100_000)
                    client.reset()
                }
            }
            try await eventually("body files closed") { OpenSockets.files(under: storage) <= baseline }
            let whole = try await runBlocking { try httpGet(port: port, target, timeout: 20) }
            #expect(whole.header("Cache-Status")?.contains("detail=disk") == true)
            #expect(Self.difference(whole.body, FixtureOrigin.pattern(length)) == nil)
            #expect(origin.requestCount(path: "/bytes/\(length)") == 1)
        }
    }

    @Test("a PURGE whose client leaves at once still removes the object from both tiers")
    func purgeClientLeaves() async throws {
        try await withLacquer { lacquer, port, origin in
            let target = "/purged-anyway?cc=max-age%3D60"
            _ = try await runBlocking { try httpGet(port: port, target) }
            try await eventually("the disk write") { lacquer.counters[.diskStored] >= 1 }
            try await sendAndLeave(port: port, "PURGE \(target) HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", afterMilliseconds: 0)
            try await eventually("the purge") { lacquer.counters[.purgeOK] == 1 }
            lacquer.memory.removeAll { _ in true }
            let after = try await runBlocking { try httpGet(port: port, target) }
            #expect(after.header("X-Cache-Status") == "MISS")
            #expect(origin.requestCount(path: "/purged-anyway") == 2)
        }
    }
}
