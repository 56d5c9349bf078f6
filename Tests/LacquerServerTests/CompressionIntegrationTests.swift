import FixtureOrigin
import Foundation
import LacquerServer
import LacquerTesting
import NIOCore
import Testing

@testable import LacquerServer

/// Content codings end to end: one stored copy serves gzip and identity clients alike.
@Suite("Compression integration", .serialized, .timeLimit(.minutes(2)))
struct CompressionIntegrationTests {
    let text = String(repeating: "Lacquer caches this text. ", count: 40)

    func gunzip(_ bytes: [UInt8]) throws -> String {
        let decoder = try GzipDecoder()
        var out = try decoder.decompress(ByteBuffer(bytes: bytes), allocator: ByteBufferAllocator())
        try decoder.finish()
        return out.readString(length: out.readableBytes) ?? ""
    }

    @Test("a gzip answer is stored once; gzip clients get it as is, others gunzipped, with a weak ETag")
    func gzipStoredOnce() async throws {
        try await withLacquer { lacquer, port, origin async throws in
            let target = "/gz?cc=max-age%3D600&etag=g1&vary=Accept-Encoding&gzbody=" + text.replacingOccurrences(of: " ", with: "+")
            let gz = try httpGet(port: port, target, headers: [("Accept-Encoding", "gzip, deflate")])
            #expect(gz.header("Content-Encoding") == "gzip")
            #expect(try gunzip(gz.body) == text)
            let plain = try httpGet(port: port, target, headers: [("Accept-Encoding", "identity")])
            #expect(plain.header("X-Cache-Status") == "HIT")
            #expect(plain.header("Content-Encoding") == nil)
            #expect(plain.bodyString == text)
            #expect(plain.header("Content-Length") == String(text.utf8.count))
            #expect(plain.header("ETag") == "W/\"g1\"")
            #expect(plain.header("Vary")?.lowercased().contains("accept-encoding") == true)
            let none = try httpGet(port: port, target)
            #expect(none.header("X-Cache-Status") == "HIT")
            #expect(none.bodyString == text)
            let again = try httpGet(port: port, target, headers: [("Accept-Encoding", "br, gzip;q=0.8")])
            #expect(again.header("X-Cache-Status") == "HIT")
            #expect(again.header("Content-Encoding") == "gzip")
            #expect(origin.requestCount(path: "/gz") == 1)
            #expect(lacquer.counters[.gunzipped] == 2)
        }
    }

    @Test("a range of a gunzipped answer counts bytes of the transformed body")
    func rangeOnTransformedBody() async throws {
        try await withLacquer { _, port, _ async throws in
            let target = "/gzr?cc=max-age%3D600&gzbody=" + text.replacingOccurrences(of: " ", with: "+")
            _ = try httpGet(port: port, target, headers: [("Accept-Encoding", "gzip")])
            let part = try httpGet(port: port, target, headers: [("Range", "bytes=0-6")])
            #expect(part.status == 206)
            #expect(part.bodyString == "Lacquer")
            #expect(part.header("Content-Range") == "bytes 0-6/\(text.utf8.count)")
        }
    }

    @Test("with --gzip-on-store a compressible answer is gzipped once and serves every client")
    func gzipOnStore() async throws {
        try await withLacquer(configure: { $0.gzipOnStore = true }) { lacquer, port, origin async throws in
            let target = "/gos?cc=max-age%3D600&etag=s1&h=Content-Type%3Atext%2Fplain&body=" + text.replacingOccurrences(of: " ", with: "+")
            let first = try httpGet(port: port, target)
            #expect(first.bodyString == text)
            // The store completes just after the last byte reaches the client.
            for _ in 0..<200 where lacquer.counters[.objectsStored] < 1 {
                try await Task.sleep(for: .milliseconds(5))
            }
            #expect(lacquer.counters[.gzippedOnStore] == 1)
            let gz = try httpGet(port: port, target, headers: [("Accept-Encoding", "gzip")])
            #expect(gz.header("X-Cache-Status") == "HIT")
            #expect(gz.header("Content-Encoding") == "gzip")
            #expect(gz.header("ETag") == "W/\"s1\"")
            #expect(try gunzip(gz.body) == text)
            #expect(gz.body.count < text.utf8.count)
            let plain = try httpGet(port: port, target)
            #expect(plain.header("X-Cache-Status") == "HIT")
            #expect(plain.bodyString == text)
            #expect(origin.requestCount(path: "/gos") == 1)
        }
    }

    @Test("no-transform is honoured: nothing is gzipped on store or gunzipped on delivery")
    func noTransform() async throws {
        try await withLacquer(configure: { $0.gzipOnStore = true }) { lacquer, port, _ async throws in
            let target = "/nt?cc=max-age%3D600%2C+no-transform&h=Content-Type%3Atext%2Fplain&body=" + text.replacingOccurrences(of: " ", with: "+")
            _ = try httpGet(port: port, target)
            let gz = try httpGet(port: port, target, headers: [("Accept-Encoding", "gzip")])
            #expect(gz.header("Content-Encoding") == nil)
            #expect(lacquer.counters[.gzippedOnStore] == 0)
            let zipped = "/ntz?cc=max-age%3D600%2C+no-transform&gzbody=abc"
            _ = try httpGet(port: port, zipped, headers: [("Accept-Encoding", "gzip")])
            let plain = try httpGet(port: port, zipped)
            #expect(plain.header("Content-Encoding") == "gzip")
        }
    }

    @Test("corrupt gzip from the origin is passed through unchanged and counted, never a crash")
    func corruptGzip() async throws {
        try await withLacquer { lacquer, port, _ async throws in
            let target = "/bad?cc=max-age%3D600&h=Content-Encoding%3Agzip&body=this+is+not+gzip"
            _ = try httpGet(port: port, target, headers: [("Accept-Encoding", "gzip")])
            let plain = try httpGet(port: port, target)
            #expect(plain.status == 200)
            #expect(plain.header("Content-Encoding") == "gzip")
            #expect(plain.bodyString == "this is not gzip")
            #expect(lacquer.counters[.gzipCorrupt] == 1)
        }
    }
}
