import CachePolicy
import Foundation
import LacquerServer
import LacquerTesting
import Testing

/// A cached response's header fields go out as the origin sent them (spelling, order, every
/// byte of every value), whichever way they are stored: packed in memory (`PackedFields`), or
/// read from the disk tier for one delivery. Real sockets, a scripted origin.
@Suite("Stored fields end to end", .serialized, .timeLimit(.minutes(2)))
struct StoredFieldsIntegrationTests {
    /// The origin's fields: table names in their spelling, in lowercase and in neither; dates
    /// that pack and dates that must stay text.
    static func originFields(date: String) -> [(String, String)] {
        [
            ("date", date),
            ("Last-Modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
            ("Expires", "Mon, 06 Nov 1994 08:49:37 GMT"),  // the wrong day name: stays text
            ("X-Stamp", "Thu, 01 Jan 1970 00:00:00 GMT"),
            ("X-Leap", "Sat, 31 Dec 2016 23:59:60 GMT"),
            ("CONTENT-TYPE", "text/plain; charset=utf-8"),
            ("Cache-Control", "max-age=600"),
            ("ETag", "\"v1\""),
            ("x-long", String(repeating: "x", count: 300)),
            ("Server", "raw"),
        ]
    }

    /// Lacquer's own fields on a delivery, and the framing it states itself.
    static let added: Set<String> = ["age", "via", "x-cache-status", "cache-status", "content-length", "accept-ranges", "connection"]

    static func sent(_ response: RawHTTPResponse) -> [String] {
        response.headers.filter { !Self.added.contains($0.name.lowercased()) }.map { "\($0.name): \($0.value)" }
    }

    @Test("a hit from memory and a hit from disk carry the origin's fields byte for byte, in its order")
    func fieldsAsSent() async throws {
        let date = HTTPDate.format(Int64(Date().timeIntervalSince1970))
        let fields = Self.originFields(date: date)
        let raw = try await RawOrigin.start { head in
            // /small is kept in memory; /large (3,000 bytes) only on disk (64 KiB of memory
            // admits bodies of at most 2 KiB).
            let body = String(repeating: "b", count: head.hasPrefix("GET /large") ? 3000 : 5)
            let lines = fields.map { "\($0.0): \($0.1)\r\n" }.joined()
            return RawOrigin.Reply("HTTP/1.1 200 OK\r\n\(lines)Content-Length: \(body.utf8.count)\r\n\r\n\(body)")
        }
        let expected = fields.map { "\($0.0): \($0.1)" }
        do {
            try await withLacquer(configure: {
                $0.backends = [BackendConfiguration(name: "raw", host: "127.0.0.1", port: raw.port)]
                $0.memoryBytes = 64 << 10
            }) { lacquer, port, _ async throws in
                for target in ["/small", "/large"] {
                    let miss = try httpGet(port: port, target)
                    #expect(miss.header("X-Cache-Status") == "MISS")
                    #expect(Self.sent(miss) == expected, "\(target) miss")
                    #expect(try await waitForDiskWrites(lacquer, count: target == "/small" ? 1 : 2), "\(target): not stored on disk")
                    let lane = try httpGet(port: port, target)
                    let flow = try httpGet(port: port, target, headers: [("Cache-Control", "max-stale=0")])
                    let head = try httpGet(port: port, target, method: "HEAD")
                    for (name, response) in [("lane", lane), ("flow", flow), ("HEAD", head)] {
                        #expect(response.header("X-Cache-Status") == "HIT", "\(target) \(name)")
                        #expect(Self.sent(response) == expected, "\(target) \(name)")
                    }
                    let detail = lane.header("Cache-Status") ?? ""
                    #expect(detail.contains("detail=disk") == (target == "/large"), "\(target): \(detail)")
                }
            }
        } catch {
            await raw.shutdown()
            throw error
        }
        await raw.shutdown()
    }
}
