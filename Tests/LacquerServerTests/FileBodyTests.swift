import CacheStore
import FixtureOrigin
import Foundation
import LacquerServer
import LacquerTesting
import NIOCore
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Large bodies sent from the disk tier's file (sendfile) instead of copied from memory
/// (`FileBody`): only the noted version of a file whose pages are all cached, only on plain
/// HTTP/1.1, and always the origin's bytes.
@Suite("Large bodies sent from their disk file", .serialized, .timeLimit(.minutes(3)))
struct FileBodyTests {
    static let length = 300_000
    static let target = "/bytes/\(length)?cc=max-age%3D600"

    /// The body files under the storage folder (paths).
    static func bodyFiles(_ storage: String) -> [String] {
        let enumerator = FileManager.default.enumerator(atPath: storage + "/bodies")
        var files: [String] = []
        while let relative = enumerator?.nextObject() as? String {
            let path = storage + "/bodies/" + relative
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue {
                files.append(path)
            }
        }
        return files
    }

    /// Lacquer (sendfile on or off, configured further by `configure`) with an 8 MB object stored,
    /// in memory and on disk: `body` gets the server, its port, the object's target and length.
    static func withLargeHit(
        sendfile: Bool = true, _ configure: (inout ServerConfiguration) -> Void,
        _ body: (LacquerServer, Int, String, Int) async throws -> Void
    ) async throws {
        let length = 8_000_000
        let target = "/bytes/\(length)?cc=max-age%3D600"
        try await withLacquer(configure: {
            $0.memoryMaxObjectBytes = 16 << 20
            $0.sendfile = sendfile
            configure(&$0)
        }) { lacquer, port, _ in
            try await Self.stored(lacquer, port: port, target)
            try await body(lacquer, port, target, length)
        }
    }

    /// Clients that ask for `target` and leave (a reset) after 0, 1 and 100,000 bytes of the body.
    static func clientsLeave(port: Int, _ target: String) async throws {
        for leaveAfter in [0, 1, 100_000] {
            try await runBlocking {
                let client = try RawHTTPClient(port: port, timeout: 10)
                try client.send(bytes: RawHTTPClient.serialize("GET", target))
                if leaveAfter > 0 {
                    _ = try client.readResponseHead()
                    _ = try client.readToEOF(max: leaveAfter)
                }
                client.reset()
            }
        }
    }

    /// A download of `target` that has read only its head when a drain starts: it still gets
    /// every byte, then the connection closes, and the drain ends when the client closes its end.
    /// Returns the response head.
    static func downloadThroughDrain(_ lacquer: LacquerServer, port: Int, _ target: String, length: Int) async throws -> RawHTTPResponse {
        let download = try RawHTTPClient(port: port, timeout: 10)
        try download.send(bytes: RawHTTPClient.serialize("GET", target))
        let head = try download.readResponseHead()
        // The client has read only the head: most of the body waits in the server's socket.
        try await Task.sleep(for: .milliseconds(200))
        let drained = Task { await lacquer.drain() }
        try await Task.sleep(for: .milliseconds(300))
        let body = try await runBlocking { try download.readToEOF(max: length + 1) }
        #expect(ClientLeavesTests.difference(body, FixtureOrigin.pattern(length)) == nil)
        #expect(download.isClosedByPeer)
        // The client closes its end on EOF, as clients do: the drain ends then, not at its timeout.
        let closed = Date()
        download.close()
        await drained.value
        #expect(Date().timeIntervalSince(closed) < 10)
        return head
    }

    /// Stores `target` (a MISS) and waits for its disk write.
    static func stored(_ lacquer: LacquerServer, port: Int, _ target: String = Self.target) async throws {
        let miss = try await runBlocking { try httpGet(port: port, target, timeout: 20) }
        #expect(miss.header("X-Cache-Status") == "MISS")
        #expect(try await waitForDiskWrites(lacquer, count: 1), "disk write did not complete")
    }

    @Test("a memory hit of a large body on plain HTTP/1.1 is sent from its disk file, lane and flow alike; HEAD and small bodies are not")
    func sentFromFile() async throws {
        try await withLacquer { lacquer, port, origin in
            try await Self.stored(lacquer, port: port)
            let expected = FixtureOrigin.pattern(Self.length)

            let viaLane = try await runBlocking { try httpGet(port: port, Self.target, timeout: 20) }
            #expect(viaLane.header("X-Cache-Status") == "HIT")
            #expect(viaLane.header("Content-Length") == String(Self.length))
            #expect(ClientLeavesTests.difference(viaLane.body, expected) == nil)
            #expect(lacquer.counters[.bodySentFromFile] == 1)
            #expect(lacquer.counters[.cacheHitFast] == 1)

            // A request the lane leaves to the flow (a request directive) takes the same path.
            let viaFlow = try await runBlocking {
                try httpGet(port: port, Self.target, headers: [("Cache-Control", "max-stale=0")], timeout: 20)
            }
            #expect(viaFlow.header("X-Cache-Status") == "HIT")
            #expect(ClientLeavesTests.difference(viaFlow.body, expected) == nil)
            #expect(lacquer.counters[.cacheHitFast] == 1)
            #expect(lacquer.counters[.bodySentFromFile] == 2)

            // Several on one keep-alive connection, the file sent between pre-encoded heads.
            try await runBlocking {
                let client = try RawHTTPClient(port: port, timeout: 20)
                defer { client.close() }
                for _ in 0..<3 {
                    try client.send(bytes: RawHTTPClient.serialize("GET", Self.target))
                    let response = try client.readResponse()
                    #expect(ClientLeavesTests.difference(response.body, expected) == nil)
                }
                try client.send(bytes: RawHTTPClient.serialize("HEAD", Self.target))
                let head = try client.readResponse(isHead: true)
                #expect(head.header("Content-Length") == String(Self.length) && head.body.isEmpty)
            }
            #expect(lacquer.counters[.bodySentFromFile] == 5)
            // One descriptor, kept with the object (not one per send); released with the object.
            let bodies = lacquer.configuration.storageDirectory + "/bodies"
            #expect(OpenSockets.files(under: bodies) == 1)

            // Below FileBody.minimumBytes a body is copied.
            let small = "/bytes/40000?cc=max-age%3D600"
            _ = try await runBlocking { try httpGet(port: port, small) }
            #expect(try await waitForDiskWrites(lacquer, count: 2))
            let smallHit = try await runBlocking { try httpGet(port: port, small) }
            #expect(smallHit.header("X-Cache-Status") == "HIT" && smallHit.body == FixtureOrigin.pattern(40000))
            #expect(lacquer.counters[.bodySentFromFile] == 5)
            #expect(lacquer.counters[.bodyFileNotCached] == 0)
            #expect(origin.requestCount(path: "/bytes/\(Self.length)") == 1)
            lacquer.memory.removeAll { _ in true }
            #expect(try await eventually { OpenSockets.files(under: bodies) == 0 }, "the kept descriptor outlived its object")
        }
    }

    @Test("a body file that was removed, rewritten in place or dropped from the page cache is not sent: the bytes in memory are")
    func fileNotAsNoted() async throws {
        try await withLacquer { lacquer, port, origin in
            let expected = FixtureOrigin.pattern(Self.length)
            let storage = lacquer.configuration.storageDirectory

            // Dropped from the page cache (written back first, so the pages are clean and go).
            try await Self.stored(lacquer, port: port)
            let path = try #require(Self.bodyFiles(storage).first)
            var dropped = false
            for _ in 0..<5 where !dropped {
                let fd = open(path, O_RDONLY)
                #expect(fd >= 0)
                fsync(fd)
                posix_fadvise(fd, 0, 0, Int32(POSIX_FADV_DONTNEED))
                close(fd)
                let hit = try await runBlocking { try httpGet(port: port, Self.target, timeout: 20) }
                #expect(ClientLeavesTests.difference(hit.body, expected) == nil)
                dropped = lacquer.counters[.bodyFileNotCached] > 0
            }
            #expect(dropped, "the kernel kept the pages through five drops")
            let sentBefore = lacquer.counters[.bodySentFromFile]

            // Rewritten in place (one byte flipped, as a failing disk or a stray writer would):
            // another version, never sent; the memory copy is.
            var data = try Data(contentsOf: URL(fileURLWithPath: path))
            data[1000] ^= 0xFF
            try data.write(to: URL(fileURLWithPath: path))
            for _ in 0..<2 {
                let hit = try await runBlocking { try httpGet(port: port, Self.target, timeout: 20) }
                #expect(hit.header("X-Cache-Status") == "HIT")
                #expect(ClientLeavesTests.difference(hit.body, expected) == nil)
            }
            #expect(lacquer.counters[.bodySentFromFile] == sentBefore)

            // Removed: the memory copy is sent, and the file is not looked for again.
            let other = "/bytes/\(Self.length)?cc=max-age%3D600&n=2"
            _ = try await runBlocking { try httpGet(port: port, other, timeout: 20) }
            #expect(try await waitForDiskWrites(lacquer, count: 2))
            let sent = lacquer.counters[.bodySentFromFile]
            _ = try await runBlocking { try httpGet(port: port, other, timeout: 20) }
            #expect(lacquer.counters[.bodySentFromFile] == sent + 1)
            for file in Self.bodyFiles(storage) where file != path { try FileManager.default.removeItem(atPath: file) }
            for _ in 0..<2 {
                let hit = try await runBlocking { try httpGet(port: port, other, timeout: 20) }
                #expect(ClientLeavesTests.difference(hit.body, expected) == nil)
            }
            #expect(lacquer.counters[.bodySentFromFile] == sent + 1)
            #expect(origin.requestCount(path: "/bytes/\(Self.length)") == 2)
        }
    }

    @Test("an object read whole from disk (checksums matched) is sent from that file once it is back in memory")
    func promotedFromDisk() async throws {
        try await withLacquer { lacquer, port, origin in
            try await Self.stored(lacquer, port: port)
            lacquer.memory.removeAll { _ in true }
            let fromDisk = try await runBlocking { try httpGet(port: port, Self.target, timeout: 20) }
            #expect(fromDisk.header("Cache-Status")?.contains("detail=disk") == true)
            #expect(ClientLeavesTests.difference(fromDisk.body, FixtureOrigin.pattern(Self.length)) == nil)
            let sent = lacquer.counters[.bodySentFromFile]
            let fromMemory = try await runBlocking { try httpGet(port: port, Self.target, timeout: 20) }
            #expect(fromMemory.header("Cache-Status")?.contains("detail=disk") == false)
            #expect(ClientLeavesTests.difference(fromMemory.body, FixtureOrigin.pattern(Self.length)) == nil)
            #expect(lacquer.counters[.bodySentFromFile] == sent + 1)
            #expect(origin.requestCount(path: "/bytes/\(Self.length)") == 1)
        }
    }

    @Test("clients that leave while a body file is being sent: every file is closed, the object stays")
    func clientLeavesMidFile() async throws {
        let length = 4_000_000
        let target = "/bytes/\(length)?cc=max-age%3D600"
        try await withLacquer(configure: { $0.memoryMaxObjectBytes = 8 << 20 }) { lacquer, port, origin in
            try await Self.stored(lacquer, port: port, target)
            let bodies = lacquer.configuration.storageDirectory + "/bodies"
            try await Self.clientsLeave(port: port, target)
            // Only the descriptor the object keeps is open.
            #expect(try await eventually { OpenSockets.files(under: bodies) <= 1 }, "body files left open")
            #expect(lacquer.counters[.bodySentFromFile] >= 2)
            let whole = try await runBlocking { try httpGet(port: port, target, timeout: 20) }
            #expect(ClientLeavesTests.difference(whole.body, FixtureOrigin.pattern(length)) == nil)
            #expect(origin.requestCount(path: "/bytes/\(length)") == 1)
            lacquer.memory.removeAll { _ in true }
            #expect(try await eventually { OpenSockets.files(under: bodies) == 0 }, "body files left open")
        }
    }
}

extension FileBodyTests {
    @Test("behind TLS (HTTP/1.1 and HTTP/2) and over h2c the body is copied from memory, never sent from the file")
    func notOverTLSOrHTTP2() async throws {
        try await TLSTests.withTLSLacquer { lacquer, tlsPort, plainPort, origin, _ in
            let host = "localhost:\(tlsPort)"
            let miss = try await runBlocking { try httpGet(port: plainPort, Self.target, headers: [("Host", host)], timeout: 20) }
            #expect(miss.header("X-Cache-Status") == "MISS")
            #expect(try await waitForDiskWrites(lacquer, count: 1))
            let output = try makeTemporaryDirectory("filebody") + "/body"
            defer { try? FileManager.default.removeItem(atPath: (output as NSString).deletingLastPathComponent) }
            let clients: [[String]] = [
                ["-k", "--http1.1", "https://\(host)\(Self.target)"],
                ["-k", "--http2", "https://\(host)\(Self.target)"],
                ["--http2-prior-knowledge", "-H", "Host: \(host)", "http://127.0.0.1:\(plainPort)\(Self.target)"],
            ]
            for arguments in clients {
                let outcome = try ExternalTool.run(
                    "curl", ["-s", "-S", "--max-time", "10", "--resolve", "localhost:\(tlsPort):127.0.0.1", "-o", output] + arguments)
                #expect(outcome.status == 0, "curl \(arguments): \(outcome.errors)")
                let body = [UInt8](try Data(contentsOf: URL(fileURLWithPath: output)))
                #expect(ClientLeavesTests.difference(body, FixtureOrigin.pattern(Self.length)) == nil, "\(arguments)")
            }
            #expect(lacquer.counters[.cacheHit] == 3)
            #expect(lacquer.counters[.bodySentFromFile] == 0)
            // The same object on plain HTTP/1.1 is sent from the file.
            let plain = try await runBlocking { try httpGet(port: plainPort, Self.target, headers: [("Host", host)], timeout: 20) }
            #expect(ClientLeavesTests.difference(plain.body, FixtureOrigin.pattern(Self.length)) == nil)
            #expect(lacquer.counters[.bodySentFromFile] == 1)
            #expect(origin.requestCount(path: "/bytes/\(Self.length)") == 1)
        }
    }
}

extension FileBodyTests {
    @Test("with sendfile off (--no-sendfile) a large body is always copied from memory")
    func sendfileOff() async throws {
        try await withLacquer(configure: { $0.sendfile = false }) { lacquer, port, _ in
            try await Self.stored(lacquer, port: port)
            for _ in 0..<2 {
                let hit = try await runBlocking { try httpGet(port: port, Self.target, timeout: 20) }
                #expect(hit.header("X-Cache-Status") == "HIT")
                #expect(ClientLeavesTests.difference(hit.body, FixtureOrigin.pattern(Self.length)) == nil)
            }
            #expect(lacquer.counters[.bodySentFromFile] == 0 && lacquer.counters[.bodyFileNotCached] == 0)
        }
    }
}

extension FileBodyTests {
    @Test("a drain lets a large hit being sent from its file finish, to the last byte, then closes", arguments: [true, false])
    func drainFinishesFileSend(sendfile: Bool) async throws {
        try await Self.withLargeHit(sendfile: sendfile, { $0.drainTimeout = 30 }) { lacquer, port, target, length in
            let head = try await Self.downloadThroughDrain(lacquer, port: port, target, length: length)
            #expect(head.header("X-Cache-Status") == "HIT")
            #expect(lacquer.counters[.bodySentFromFile] == (sendfile ? 1 : 0))
        }
    }

    @Test("a slow reader of a large hit gets every byte past the keep-alive time, then the connection serves its next request", arguments: [true, false])
    func slowReaderOutlastsKeepAlive(sendfile: Bool) async throws {
        try await Self.withLargeHit(sendfile: sendfile, { $0.clientTimeouts.idle = .seconds(1) }) { lacquer, port, target, length in
            // A small receive buffer, so that most of the body waits on the server's side while it
            // is read, as over a slow link.
            let download = try RawHTTPClient(port: port, timeout: 10, receiveBuffer: 64 * 1024)
            try download.send(bytes: RawHTTPClient.serialize("GET", target))
            let head = try download.readResponseHead()
            #expect(head.header("X-Cache-Status") == "HIT")
            // About 3 s of reading: three times the keep-alive time, with the response handed over at once.
            let started = Date()
            let (received, checksum, next) = try await runBlocking {
                var received = 0
                var checksum = RawHTTPClient.fnvOffsetBasis
                for _ in 0..<2_000 where received < length && Date().timeIntervalSince(started) < 30 {
                    let bytes = try download.readSome()
                    if bytes.isEmpty { break }
                    received += bytes.count
                    checksum = RawHTTPClient.fnv1a(bytes, seed: checksum)
                    usleep(45_000)
                }
                // The next request at once, within the keep-alive time that follows the last byte.
                let next = try download.request("GET", Self.target)
                return (received, checksum, next)
            }
            // The same connection answered the next request: it was not closed under the reader.
            #expect(next.status == 200 && next.body.count == Self.length)
            #expect(lacquer.counters[.sessClosedTimeout] == 0, "a reader making progress was cut as stalled")
            #expect(Date().timeIntervalSince(started) > 2, "the read was not slow enough to outlast the keep-alive time")
            #expect(received == length)
            #expect(checksum == RawHTTPClient.fnv1a(FixtureOrigin.pattern(length)))

        }
    }

    @Test("a reader that stops taking a large hit's bytes is cut at the send-idle timeout, not held forever")
    func stalledReaderIsCut() async throws {
        try await Self.withLargeHit({
            $0.clientTimeouts.idle = .milliseconds(300)
            $0.clientTimeouts.sendIdle = .seconds(1)
        }) { lacquer, port, target, length in
            let download = try RawHTTPClient(port: port, timeout: 10, receiveBuffer: 64 * 1024)
            try download.send(bytes: RawHTTPClient.serialize("GET", target))
            #expect(try download.readResponseHead().header("X-Cache-Status") == "HIT")
            var cut = false
            for _ in 0..<100 where !cut {
                try await Task.sleep(for: .milliseconds(100))
                cut = lacquer.counters[.sessClosedTimeout] == 1
            }
            #expect(cut, "a reader that took nothing for 10 s was not cut")
            #expect(lacquer.counters[.sessClosedIdle] == 0)
            let rest = (try? await runBlocking { try download.readToEOF(max: length + 1) }) ?? []
            #expect(rest.count < length, "the whole body arrived although the reader was cut")
        }
    }
}

extension FileBodyTests {
    @Test(
        "curl reading a large hit at 1 MB/s (over 4 keep-alive times) gets all of it on plain HTTP/1.1, TLS HTTP/1.1, TLS HTTP/2 and h2c, then its next request"
    )
    func rateLimitedClients() async throws {
        let length = 2_000_000
        let target = "/bytes/\(length)?cc=max-age%3D600"
        try await TLSTests.withTLSLacquer(configure: {
            $0.memoryMaxObjectBytes = 16 << 20
            $0.clientTimeouts.idle = .milliseconds(500)
        }) { lacquer, tlsPort, plainPort, _, _ in
            let host = "localhost:\(tlsPort)"
            let miss = try await runBlocking { try httpGet(port: plainPort, target, headers: [("Host", host)], timeout: 20) }
            #expect(miss.header("X-Cache-Status") == "MISS")
            // The plain listener speaks HTTP/1.1 too (h2c is chosen by the preface). The same URL
            // twice, the second request after the slow download; once for h2c, since curl 7.88
            // cannot reuse a prior-knowledge connection (it fails against nginx the same way).
            let clients: [(name: String, arguments: [String], twice: Bool)] = [
                ("plain HTTP/1.1", ["--http1.1", "-H", "Host: \(host)", "http://127.0.0.1:\(plainPort)\(target)"], true),
                ("TLS HTTP/1.1", ["-k", "--http1.1", "https://\(host)\(target)"], true),
                ("TLS HTTP/2", ["-k", "--http2", "https://\(host)\(target)"], true),
                ("h2c", ["--http2-prior-knowledge", "-H", "Host: \(host)", "http://127.0.0.1:\(plainPort)\(target)"], false),
            ]
            for (name, arguments, twice) in clients {
                let outcome = try await runBlocking {
                    try ExternalTool.run(
                        "curl",
                        [
                            "-s", "-S", "--max-time", "20", "--limit-rate", "1M", "--resolve", "localhost:\(tlsPort):127.0.0.1",
                            "-w", "%{http_code} %{size_download}\\n",
                        ] + (twice ? ["-o", "/dev/null", "-o", "/dev/null"] + arguments + [arguments.last ?? ""] : ["-o", "/dev/null"] + arguments))
                }
                #expect(outcome.status == 0, "\(name): curl \(outcome.status): \(outcome.errors)")
                let expected = String(repeating: "200 \(length)\n", count: twice ? 2 : 1)
                #expect(outcome.output == expected, "\(name): \(outcome.output)")
            }
            #expect(lacquer.counters[.sessClosedTimeout] == 0)
        }
    }
}


/// Objects too large for the memory tier, answered from the disk tier on every hit: the first
/// hit reads the body file through the checksums; once it has read it whole with every checksum
/// matching, later hits send that file with sendfile (`DiskTier.openVerifiedIfCached`).
extension FileBodyTests {
    /// Lacquer whose memory tier keeps nothing over 64 KiB, with a 300 KB object stored on disk.
    static func withDiskOnlyObject(
        length: Int = Self.length, _ body: (LacquerServer, Int, String, FixtureOrigin) async throws -> Void
    ) async throws {
        let target = "/bytes/\(length)?cc=max-age%3D600"
        try await withLacquer(configure: { $0.memoryMaxObjectBytes = 64 << 10 }) { lacquer, port, origin in
            try await Self.stored(lacquer, port: port, target)
            #expect(lacquer.memory.stats.objects == 0, "the object was kept in memory")
            try await body(lacquer, port, target, origin)
        }
    }

    /// The multipart/byteranges body `ranges` of `body` make with `response`'s boundary.
    static func multipartBody(_ response: RawHTTPResponse, of body: [UInt8], ranges: [ClosedRange<Int>], partType: String?) -> [UInt8]? {
        guard let type = response.header("Content-Type"), let at = type.range(of: "boundary=") else { return nil }
        return BodyWindowTests.expected(body, ranges: ranges, multipart: (String(type[at.upperBound...]), partType))
    }

    @Test("a disk-only large object is sent from its file once a hit has read it whole and verified it: whole, one range, several ranges")
    func diskOnlySentFromVerifiedFile() async throws {
        try await Self.withDiskOnlyObject { lacquer, port, target, origin in
            let expected = FixtureOrigin.pattern(Self.length)
            // Not the last block: a read that reaches it has read (and verified) every block.
            let ranges = [0...9, 100_000...100_009, 200_000...200_009]
            let rangeHeader = ("Range", "bytes=0-9,100000-100009,200000-200009")

            // Before any whole read: several ranges through the checksummed reader.
            let partsRead = try await runBlocking { try httpGet(port: port, target, headers: [rangeHeader], timeout: 20) }
            #expect(partsRead.status == 206)
            #expect(lacquer.diskStats?.verifiedFilesOpen == 0, "a partial read kept the file as verified")

            // The first whole hit reads and verifies; it keeps the file.
            let first = try await runBlocking { try httpGet(port: port, target, timeout: 20) }
            #expect(first.header("Cache-Status")?.contains("detail=disk") == true)
            #expect(ClientLeavesTests.difference(first.body, expected) == nil)
            #expect(lacquer.counters[.bodySentFromFile] == 0)
            #expect(try await eventually { lacquer.diskStats?.verifiedFilesOpen == 1 })
            let partType = first.header("Content-Type")
            #expect(Self.multipartBody(partsRead, of: expected, ranges: ranges, partType: partType) == partsRead.body)

            // Then the file: the same bytes, and the same framing for ranges. A plain GET is
            // answered by the hit lane, one the lane leaves to the flow (a request directive) by
            // the flow, with the same head.
            let lanesBefore = lacquer.counters[.cacheHitFast]
            let second = try await runBlocking { try httpGet(port: port, target, timeout: 20) }
            #expect(second.status == 200 && second.header("Cache-Status")?.contains("detail=disk") == true)
            #expect(second.header("Content-Length") == String(Self.length))
            #expect(ClientLeavesTests.difference(second.body, expected) == nil)
            #expect(lacquer.counters[.bodySentFromFile] == 1)
            #expect(lacquer.counters[.cacheHitFast] == lanesBefore + 1)
            let viaFlow = try await runBlocking {
                try httpGet(port: port, target, headers: [("Cache-Control", "max-stale=0")], timeout: 20)
            }
            #expect(ClientLeavesTests.difference(viaFlow.body, expected) == nil)
            #expect(lacquer.counters[.cacheHitFast] == lanesBefore + 1)
            #expect(lacquer.counters[.bodySentFromFile] == 2)
            for name in ["Content-Type", "Content-Length", "X-Cache-Status", "Accept-Ranges", "Via"] {
                #expect(second.header(name) == viaFlow.header(name), "\(name)")
            }
            #expect(viaFlow.header("Cache-Status")?.contains("detail=disk") == true)

            let one = try await runBlocking { try httpGet(port: port, target, headers: [("Range", "bytes=70000-70099")], timeout: 20) }
            #expect(one.status == 206 && one.header("Content-Range") == "bytes 70000-70099/\(Self.length)")
            #expect(one.body == Array(expected[70_000...70_099]))
            let parts = try await runBlocking { try httpGet(port: port, target, headers: [rangeHeader], timeout: 20) }
            #expect(parts.status == 206)
            #expect(Self.multipartBody(parts, of: expected, ranges: ranges, partType: partType) == parts.body)
            #expect(lacquer.counters[.bodySentFromFile] == 4)

            // Several on one keep-alive connection, and a HEAD between them.
            try await runBlocking {
                let client = try RawHTTPClient(port: port, timeout: 20)
                defer { client.close() }
                for method in ["GET", "HEAD", "GET"] {
                    try client.send(bytes: RawHTTPClient.serialize(method, target))
                    let response = try client.readResponse(isHead: method == "HEAD")
                    #expect(response.status == 200)
                    #expect(method == "HEAD" ? response.body.isEmpty : ClientLeavesTests.difference(response.body, expected) == nil)
                }
            }
            #expect(lacquer.counters[.bodySentFromFile] == 6)
            #expect(origin.requestCount(path: "/bytes/\(Self.length)") == 1)
            // One descriptor is kept, not one per send.
            #expect(OpenSockets.files(under: lacquer.configuration.storageDirectory + "/bodies") == 1)
        }
    }

    @Test("a verified disk-only file rewritten in place is never sent: the hit reads it through the checksums, is cut, and the object is fetched again")
    func diskOnlyFileRewritten() async throws {
        try await Self.withDiskOnlyObject { lacquer, port, target, origin in
            let expected = FixtureOrigin.pattern(Self.length)
            _ = try await runBlocking { try httpGet(port: port, target, timeout: 20) }
            #expect(try await eventually { lacquer.diskStats?.verifiedFilesOpen == 1 })
            let path = try #require(Self.bodyFiles(lacquer.configuration.storageDirectory).first)
            var data = try Data(contentsOf: URL(fileURLWithPath: path))
            data[1000] ^= 0xFF
            try data.write(to: URL(fileURLWithPath: path))

            // The head may be out before the first block fails its check: the client sees a cut
            // response, never the flipped byte in a complete one.
            let received: [UInt8] = try await runBlocking {
                let client = try RawHTTPClient(port: port, timeout: 10)
                defer { client.close() }
                try client.send(bytes: RawHTTPClient.serialize("GET", target))
                guard (try? client.readResponseHead()) != nil else { return [] }
                return (try? client.readToEOF(max: Self.length + 1)) ?? []
            }
            #expect(received.count < Self.length || received == expected)
            #expect(!received.contains(expected[1000] ^ 0xFF) || received.count < 1001 || received[1000] == expected[1000])
            #expect(lacquer.counters[.bodySentFromFile] == 0)
            #expect(lacquer.diskStats?.verifiedFilesOpen == 0)
            #expect(try await eventually { (lacquer.diskStats?.checksumFailures ?? 0) == 1 })

            let again = try await runBlocking { try httpGet(port: port, target, timeout: 20) }
            #expect(again.header("X-Cache-Status") == "MISS")
            #expect(ClientLeavesTests.difference(again.body, expected) == nil)
            #expect(origin.requestCount(path: "/bytes/\(Self.length)") == 2)
        }
    }

    @Test("a purged disk-only object's kept file is closed and not sent; the next request is a miss")
    func diskOnlyPurged() async throws {
        try await Self.withDiskOnlyObject { lacquer, port, target, origin in
            let bodies = lacquer.configuration.storageDirectory + "/bodies"
            _ = try await runBlocking { try httpGet(port: port, target, timeout: 20) }
            #expect(try await eventually { lacquer.diskStats?.verifiedFilesOpen == 1 })
            _ = try await runBlocking { try httpGet(port: port, target, timeout: 20) }
            #expect(lacquer.counters[.bodySentFromFile] == 1)

            let purge = try await runBlocking { try httpGet(port: port, target, method: "PURGE") }
            #expect(purge.status == 200)
            #expect(try await eventually { lacquer.diskStats?.verifiedFilesOpen == 0 }, "the purged file is still held")
            #expect(try await eventually { OpenSockets.files(under: bodies) == 0 }, "the purged file is still open")
            let after = try await runBlocking { try httpGet(port: port, target, timeout: 20) }
            #expect(after.header("X-Cache-Status") == "MISS")
            #expect(ClientLeavesTests.difference(after.body, FixtureOrigin.pattern(Self.length)) == nil)
            #expect(lacquer.counters[.bodySentFromFile] == 1)
            #expect(origin.requestCount(path: "/bytes/\(Self.length)") == 2)
        }
    }

    @Test("clients that leave while a disk-only file is being sent: only the kept descriptor stays open, the object stays")
    func diskOnlyClientLeaves() async throws {
        let length = 4_000_000
        try await Self.withDiskOnlyObject(length: length) { lacquer, port, target, origin in
            let bodies = lacquer.configuration.storageDirectory + "/bodies"
            _ = try await runBlocking { try httpGet(port: port, target, timeout: 20) }
            #expect(try await eventually { lacquer.diskStats?.verifiedFilesOpen == 1 })
            try await Self.clientsLeave(port: port, target)
            #expect(try await eventually { OpenSockets.files(under: bodies) == 1 }, "body files left open")
            #expect(lacquer.counters[.bodySentFromFile] >= 2)
            let whole = try await runBlocking { try httpGet(port: port, target, timeout: 20) }
            #expect(ClientLeavesTests.difference(whole.body, FixtureOrigin.pattern(length)) == nil)
            #expect(origin.requestCount(path: "/bytes/\(length)") == 1)
        }
    }
}

extension FileBodyTests {
    @Test("a drain lets a disk-only hit being sent from its verified file finish, to the last byte, then closes")
    func drainFinishesDiskOnlyFileSend() async throws {
        let length = 8_000_000
        let target = "/bytes/\(length)?cc=max-age%3D600"
        try await withLacquer(configure: {
            $0.memoryMaxObjectBytes = 64 << 10
            $0.drainTimeout = 30
        }) { lacquer, port, _ in
            try await Self.stored(lacquer, port: port, target)
            _ = try await runBlocking { try httpGet(port: port, target, timeout: 20) }
            #expect(try await eventually { lacquer.diskStats?.verifiedFilesOpen == 1 })
            let head = try await Self.downloadThroughDrain(lacquer, port: port, target, length: length)
            #expect(head.header("Cache-Status")?.contains("detail=disk") == true)
            #expect(lacquer.counters[.bodySentFromFile] == 1)
        }
    }
}
