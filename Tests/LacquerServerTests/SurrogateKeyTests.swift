import CacheStore
import FixtureOrigin
import Foundation
import LacquerServer
import LacquerTesting
import NIOCore
import Testing

/// Purge by surrogate key (xkey / Surrogate-Key / Cache-Tag), soft purges and purge-all, over
/// sockets, in both tiers.
@Suite("Surrogate keys, soft purge, purge all", .serialized, .timeLimit(.minutes(2)))
struct SurrogateKeyTests {
    /// A cacheable target whose response lists `keys` in `field`.
    private func tagged(_ path: String, _ field: String = "xkey", _ keys: String, maxAge: Int = 600, extra: String = "") -> String {
        let value = keys.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? keys
        return "\(path)?cc=max-age%3D\(maxAge)&h=\(field):\(value)\(extra)"
    }

    @Test("PURGE with xkey-purge removes every object tagged with a key, from both tiers; keys never reach clients")
    func purgeByKey() async throws {
        try await withLacquer { lacquer, port, origin async throws in
            let a = self.tagged("/p/a", "xkey", "product-1 category-9")
            let b = self.tagged("/p/b", "Surrogate-Key", "product-2 category-9")
            let c = self.tagged("/p/c", "Cache-Tag", "product-3,home")
            let plain = "/p/plain?cc=max-age%3D600"
            for target in [a, b, c, plain] {
                let miss = try httpGet(port: port, target)
                #expect(miss.status == 200)
                #expect(miss.header("xkey") == nil && miss.header("Surrogate-Key") == nil && miss.header("Cache-Tag") == nil)
            }
            let hit = try httpGet(port: port, a)
            #expect(hit.header("X-Cache-Status") == "HIT")
            #expect(hit.header("xkey") == nil, "a plain hit must not carry the keys either")
            #expect(try await waitForDiskWrites(lacquer, count: 4))

            let purge = try httpGet(port: port, "/anything", method: "PURGE", headers: [("xkey-purge", "category-9")])
            #expect(purge.status == 200)
            #expect(purge.bodyString.contains("Purged 2 objects"), "\(purge.bodyString)")
            #expect(try httpGet(port: port, a).header("X-Cache-Status") == "MISS")
            #expect(try httpGet(port: port, c).header("X-Cache-Status") == "HIT")
            // The disk tier lost them too: with memory emptied, b is a miss and c a disk hit.
            lacquer.memory.removeAll { _ in true }
            #expect(try httpGet(port: port, b).header("X-Cache-Status") == "MISS")
            #expect(try httpGet(port: port, c).header("X-Cache-Status") == "HIT")
            #expect(try httpGet(port: port, plain).header("X-Cache-Status") == "HIT")
            #expect(origin.requestCount(path: "/p/b") == 2)

            // Comma-separated keys, several keys in one purge; nothing matched is still a 200.
            let second = try httpGet(port: port, "/", method: "PURGE", headers: [("xkey-purge", "home, product-1")])
            #expect(second.status == 200)
            #expect(second.bodyString.contains("Purged 2 objects"), "\(second.bodyString)")
            let none = try httpGet(port: port, "/", method: "PURGE", headers: [("xkey-purge", "no-such-key")])
            #expect(none.status == 200)
            #expect(none.bodyString.contains("Purged 0 objects"))
        }
    }

    @Test("the admin purges by key (secret-protected when there is a secret) and purges everything at once")
    func adminPurge() async throws {
        try await withLacquer(configure: { $0.adminSecret = "tok-7" }) { lacquer, port, _ async throws in
            let admin = try #require(lacquer.adminAddress?.port)
            let auth = [("Authorization", "Bearer tok-7")]
            for index in 0..<3 {
                _ = try httpGet(port: port, self.tagged("/q/\(index)", "xkey", "group-\(index % 2)"))
            }
            #expect(try httpGet(port: admin, "/purge?key=group-0", method: "POST").status == 401)
            let purged = try httpGet(port: admin, "/purge?key=group-0", method: "POST", headers: auth)
            #expect(purged.status == 200)
            #expect(purged.bodyString.contains("Purged 2 objects"), "\(purged.bodyString)")
            #expect(try httpGet(port: port, self.tagged("/q/0", "xkey", "group-0")).header("X-Cache-Status") == "MISS")
            #expect(try httpGet(port: port, self.tagged("/q/1", "xkey", "group-1")).header("X-Cache-Status") == "HIT")
            #expect(try httpGet(port: admin, "/purge", method: "POST", headers: auth).status == 400)
            #expect(try httpGet(port: admin, "/purge?key=group-1", method: "GET", headers: auth).status == 405)

            let all = try httpGet(port: admin, "/purge?all=1", method: "POST", headers: auth)
            #expect(all.status == 200)
            #expect(try httpGet(port: port, self.tagged("/q/1", "xkey", "group-1")).header("X-Cache-Status") == "MISS")
            #expect(try httpGet(port: port, self.tagged("/q/0", "xkey", "group-0")).header("X-Cache-Status") == "MISS")
            // Stored after the purge: not covered.
            #expect(try httpGet(port: port, self.tagged("/q/0", "xkey", "group-0")).header("X-Cache-Status") == "HIT")
        }
    }

    @Test("a soft purge (xkey-softpurge, Fastly-Soft-Purge) keeps the object stale: the next request gets it as UPDATING while one fetch refreshes it")
    func softPurge() async throws {
        try await withLacquer { lacquer, port, origin async throws in
            let target = self.tagged("/s/1", "xkey", "soft-key")
            _ = try httpGet(port: port, target)
            #expect(try httpGet(port: port, target).header("X-Cache-Status") == "HIT")
            let purge = try httpGet(port: port, "/", method: "PURGE", headers: [("xkey-softpurge", "soft-key")])
            #expect(purge.status == 200)
            #expect(purge.bodyString.contains("Purged 1 object (soft"), "\(purge.bodyString)")
            let stale = try httpGet(port: port, target)
            #expect(stale.status == 200)
            #expect(stale.header("X-Cache-Status") == "UPDATING")
            // RFC 9211: a hit with a negative ttl is a stale one.
            #expect(stale.header("Cache-Status")?.contains("hit; ttl=-") == true, "\(stale.header("Cache-Status") ?? "")")
            #expect(stale.header("Cache-Status")?.contains("detail=soft-purged") == true)
            let refreshed = try await eventually { origin.requestCount(path: "/s/1") == 2 }
            #expect(refreshed, "one background fetch refreshes the soft-purged object")
            let fresh = try await eventually { try httpGet(port: port, target).header("X-Cache-Status") == "HIT" }
            #expect(fresh)
            #expect(origin.requestCount(path: "/s/1") == 2)

            // A URL soft purge, with Fastly's header.
            let url = "/s/2?cc=max-age%3D600"
            _ = try httpGet(port: port, url)
            let soft = try httpGet(port: port, url, method: "PURGE", headers: [("Fastly-Soft-Purge", "1")])
            #expect(soft.status == 200)
            #expect(try httpGet(port: port, url).header("X-Cache-Status") == "UPDATING")
            #expect(lacquer.counters[.purgeOK] >= 2)
            // From the disk tier too: the copy there was made stale and says so.
            // Polled with only-if-cached, which never fetches: a second fill racing the first
            // disk write would replace the body file under a later read.
            let onDisk = "/s/3?cc=max-age%3D600&h=xkey:disk-soft"
            _ = try httpGet(port: port, onDisk)
            let stored = try await eventually {
                lacquer.memory.removeAll { _ in true }
                let answer = try httpGet(port: port, onDisk, headers: [("Cache-Control", "only-if-cached")])
                return answer.header("X-Cache-Status") == "HIT" && answer.header("Cache-Status")?.contains("detail=disk") == true
            }
            #expect(stored)
            #expect(try httpGet(port: port, "/", method: "PURGE", headers: [("xkey-softpurge", "disk-soft")]).status == 200)
            lacquer.memory.removeAll { _ in true }
            let fromDisk = try httpGet(port: port, onDisk)
            #expect(
                fromDisk.header("X-Cache-Status") == "UPDATING",
                "\(fromDisk.header("Cache-Status") ?? "-"); origin asked \(origin.requestCount(path: "/s/3")) times; disk read errors \(lacquer.counters[.diskReadErrors])")
            #expect(fromDisk.header("Cache-Status")?.contains("detail=soft-purged") == true, "\(fromDisk.header("Cache-Status") ?? "-")")
        }
    }

    @Test("a soft-purged object stands in when the origin fails")
    func softPurgedCoversOriginFailure() async throws {
        try await withLacquer(configure: { $0.softPurgeGrace = 0 }) { _, port, origin async throws in
            let target = "/s/fail?cc=max-age%3D600,stale-if-error%3D600&h=xkey:flaky"
            _ = try httpGet(port: port, target)
            #expect(try httpGet(port: port, "/", method: "PURGE", headers: [("xkey-softpurge", "flaky")]).status == 200)
            try await origin.shutdown()
            let answer = try httpGet(port: port, target)
            #expect(answer.status == 200)
            #expect(answer.header("X-Cache-Status") == "STALE")
        }
    }
}
