import CacheStore
import Testing

@Suite("CacheKey")
struct CacheKeyTests {
    // Digests are persisted in the disk index: these values were computed by the original
    // per-part FNV-1a (each part's bytes, then a NUL) and must never change.
    @Test("digests are stable across releases")
    func stableDigests() {
        #expect(CacheKey(host: "example.com", target: "/index.html?a=1").digest == 0x74bf_24de_9f81_b24a)
        #expect(CacheKey(parts: ["/index.html?a=1", "example.com"]).digest == 0x74bf_24de_9f81_b24a)
        #expect(CacheKey(parts: ["/x", "h", "extra"]).digest == 0xd650_441b_1bd4_afec)
        let fromBytes = Array("example.com".utf8).withUnsafeBytes { host in
            Array("/index.html?a=1".utf8).withUnsafeBytes { CacheKey(host: host, target: $0) }
        }
        #expect(fromBytes == CacheKey(host: "example.com", target: "/index.html?a=1"))
        #expect(fromBytes.digest == 0x74bf_24de_9f81_b24a)
        #expect(CacheKey(parts: []).digest == 0xcbf2_9ce4_8422_2325)
        #expect(CacheKey(parts: [""]).digest == 0xaf63_bd4c_8601_b7df)
    }

    @Test("the default key equals the same parts given as a list, and keeps them apart")
    func partsRoundTrip() {
        let key = CacheKey(host: "example.com", target: "/a")
        #expect(key == CacheKey(parts: ["/a", "example.com"]))
        #expect(key.parts == ["/a", "example.com"])
        #expect(key.canonical == "/a\u{0}example.com")
        #expect(key.description == "/a example.com")
        // Moving bytes between parts makes another key.
        #expect(key != CacheKey(parts: ["/ae", "xample.com"]))
        #expect(CacheKey(parts: ["/a", "b", ""]).parts == ["/a", "b", ""])
        #expect(CacheKey(parts: []) != CacheKey(parts: [""]))
    }
}
