import CachePolicy
import CacheStore
import NIOCore
import NIOHTTP1
import Testing

@testable import LacquerServer

/// builtin.vcl's decisions in native code, and the stale-copy windows, without sockets.
@Suite("Built-in policy and stale copies")
struct BuiltinPolicyTests {
    static let now = 1_000_000.0

    static func object(
        variant: String = "", varyNames: [String] = [], origin: Double = now - 10, ttl: Double = 60,
        grace: Double = 0, keep: Double = 0, mustRevalidate: Bool = false, responseTime: Double? = nil,
        headers: HTTPHeaders = [:]
    ) -> StoredObject {
        StoredObject(
            key: CacheKey(host: "h", target: "/"), variant: variant, varyNames: varyNames, status: 200, reason: "OK",
            headers: headers, body: ByteBuffer(string: "x"), requestTime: origin, responseTime: responseTime ?? origin,
            origin: origin, ttl: ttl, grace: grace, keep: keep, mustRevalidate: mustRevalidate)
    }

    func lookup(_ variants: [StoredObject], _ request: HTTPHeaders = [:], ttlCap: Double? = nil) -> String {
        switch BuiltinPolicy.lookup(
            variants: variants, requestHeaders: request, requestCacheControl: BuiltinPolicy.requestCacheControl(request, ignored: false),
            now: Self.now, ttlCap: ttlCap)
        {
        case .hit: "hit"
        case .staleHit: "stale-hit"
        case .refresh(_, let fwd): "refresh:\(fwd)"
        case .miss(let fwd): "miss:\(fwd)"
        }
    }

    @Test("lookup: fresh hit, request directives, max-stale, req.ttl, vary and uri misses (RFC 9111 §4, §5.2.1)")
    func lookupOutcomes() {
        let fresh = Self.object()
        let stale = Self.object(origin: Self.now - 100, ttl: 60)
        #expect(self.lookup([]) == "miss:uriMiss")
        #expect(self.lookup([fresh]) == "hit")
        #expect(self.lookup([fresh], ["Cache-Control": "no-cache"]) == "refresh:request")
        #expect(self.lookup([fresh], ["Pragma": "no-cache"]) == "refresh:request")  // no Cache-Control: Pragma counts
        #expect(self.lookup([fresh], ["Cache-Control": "max-age=5"]) == "refresh:request")
        #expect(self.lookup([fresh], ["Cache-Control": "min-fresh=55"]) == "refresh:request")
        #expect(self.lookup([stale]) == "refresh:stale")
        #expect(self.lookup([stale], ["Cache-Control": "max-stale"]) == "stale-hit")
        #expect(self.lookup([stale], ["Cache-Control": "max-stale=50"]) == "stale-hit")  // 40 s stale
        #expect(self.lookup([stale], ["Cache-Control": "max-stale=30"]) == "refresh:stale")
        #expect(self.lookup([Self.object(origin: Self.now - 100, ttl: 60, mustRevalidate: true)], ["Cache-Control": "max-stale"]) == "refresh:stale")
        #expect(self.lookup([fresh], ttlCap: 5) == "refresh:stale")  // ten seconds old, req.ttl 5 s
        #expect(self.lookup([fresh], ttlCap: 30) == "hit")
        let gzip = Self.object(variant: "accept-encoding=gzip\n", varyNames: ["accept-encoding"])
        #expect(self.lookup([gzip]) == "miss:varyMiss")
        #expect(self.lookup([gzip], ["Accept-Encoding": "gzip"]) == "hit")
    }

    @Test("lookup picks the most recent matching variant")
    func newestVariant() {
        let older = Self.object(responseTime: Self.now - 20)
        let newer = Self.object(responseTime: Self.now - 5)
        guard case .hit(let chosen) = BuiltinPolicy.lookup(
            variants: [older, newer], requestHeaders: [:], requestCacheControl: CacheControl(headers: [:]), now: Self.now)
        else { Issue.record("no hit"); return }
        #expect(chosen === newer)
    }

    func decide(_ status: Int = 200, _ response: [(String, String)], request: [(String, String)] = [], grace: Double = 0)
        -> BackendResponseDecision
    {
        var configuration = ServerConfiguration()
        configuration.defaultGrace = grace
        var headers = HTTPHeaders(response)
        headers.add(name: "Date", value: HTTPDate.format(Int64(Self.now)))
        let requestHeaders = HTTPHeaders(request)
        return BuiltinPolicy.backendResponse(
            method: "GET", requestHeaders: requestHeaders,
            requestCacheControl: BuiltinPolicy.requestCacheControl(requestHeaders, ignored: false), status: status,
            responseHeaders: headers, requestTime: Self.now, responseTime: Self.now, configuration: configuration)
    }

    @Test("backend response: storability with its reason, TTL, the error-status cap, grace and keep")
    func backendResponses() {
        let plain = self.decide(200, [("Cache-Control", "max-age=60")])
        #expect(plain.storable && plain.ttl == 60 && plain.reason == nil)
        #expect(self.decide(200, [("Cache-Control", "private, max-age=60")]).reason == .private)
        #expect(self.decide(200, [("Cache-Control", "max-age=60"), ("Set-Cookie", "a=b")]).reason == .setCookie)
        #expect(self.decide(200, [("Cache-Control", "max-age=60"), ("Vary", "*")]).reason == .varyStar)
        #expect(self.decide(200, []).reason == .noFreshness)
        #expect(self.decide(200, [("Cache-Control", "max-age=60")], request: [("Authorization", "x")]).reason == .authorization)
        #expect(self.decide(200, [("Cache-Control", "public, max-age=60")], request: [("Authorization", "x")]).storable)
        // Every status ≥ 400 is capped at 10 s (HARDENING.md §8, CPDoS).
        let error = self.decide(404, [("Cache-Control", "max-age=600")])
        #expect(error.storable && error.ttl == 10)
        // stale-while-revalidate becomes grace; must-revalidate forbids it.
        #expect(self.decide(200, [("Cache-Control", "max-age=60, stale-while-revalidate=30")]).grace == 30)
        #expect(self.decide(200, [("Cache-Control", "max-age=60")], grace: 5).grace == 5)
        let strict = self.decide(200, [("Cache-Control", "max-age=60, must-revalidate, stale-while-revalidate=30")])
        #expect(strict.mustRevalidate && strict.grace == 0)
        // A validator keeps the object a while after expiry, so it can be revalidated with a 304.
        #expect(self.decide(200, [("Cache-Control", "max-age=60"), ("ETag", "\"v\"")]).keep >= 60)
        // no-cache: stored, but revalidated every time.
        let noCache = self.decide(200, [("Cache-Control", "no-cache"), ("ETag", "\"v\"")])
        #expect(noCache.storable && noCache.ttl == 0 && noCache.mustRevalidate)
    }

    @Test("stale copies: usable while revalidating inside grace, on error inside stale-if-error, never with must-revalidate")
    func staleWindows() {
        let graced = StaleCopy.memory(Self.object(origin: Self.now - 70, ttl: 60, grace: 20))
        #expect(graced.usableWhileRevalidating(at: Self.now))
        #expect(!graced.usableWhileRevalidating(at: Self.now + 15))
        let sie = StaleCopy.memory(
            Self.object(origin: Self.now - 70, ttl: 60, headers: ["Cache-Control": "max-age=60, stale-if-error=100"]))
        #expect(!sie.usableWhileRevalidating(at: Self.now))
        #expect(sie.usableOnError(at: Self.now + 50, defaultWindow: 0))
        #expect(!sie.usableOnError(at: Self.now + 200, defaultWindow: 0))
        let plain = StaleCopy.memory(Self.object(origin: Self.now - 70, ttl: 60))
        #expect(!plain.usableOnError(at: Self.now, defaultWindow: 0))
        #expect(plain.usableOnError(at: Self.now, defaultWindow: 30))  // --stale-if-error
        let strict = StaleCopy.memory(Self.object(origin: Self.now - 70, ttl: 60, grace: 20, mustRevalidate: true))
        #expect(!strict.usableWhileRevalidating(at: Self.now))
        #expect(!strict.usableOnError(at: Self.now, defaultWindow: 3600))
    }

    @Test("unsafe methods invalidate; safe ones and PURGE do not (RFC 9111 §4.4)")
    func unsafeMethods() {
        for method in [HTTPMethod.POST, .PUT, .DELETE, .PATCH] { #expect(BuiltinPolicy.invalidates(method: method)) }
        for method in [HTTPMethod.GET, .HEAD, .OPTIONS, .TRACE, .PURGE] { #expect(!BuiltinPolicy.invalidates(method: method)) }
    }
}
