import CacheStore
import FixtureOrigin
import LacquerServer
import LacquerTesting
import NIOCore
import Testing

/// End-to-end behaviour over real sockets on 127.0.0.1: a client, Lacquer, and the fixture origin.
@Suite("Proxy integration", .serialized, .timeLimit(.minutes(2)))
struct ProxyIntegrationTests {
    @Test("a storable GET is a MISS, then a HIT served without the origin")
    func missThenHit() async throws {
        try await withLacquer { lacquer, port, origin async throws in
            let target = "/bytes/300?cc=max-age%3D60"
            let first = try httpGet(port: port, target)
            #expect(first.status == 200)
            #expect(first.header("X-Cache-Status") == "MISS")
            #expect(first.header("Cache-Status")?.hasPrefix("Lacquer; fwd=uri-miss; fwd-status=200") == true)
            #expect(first.header("Cache-Status")?.contains("stored") == true)
            #expect(first.header("Via") == "1.1 lacquer")
            // Fresh from the origin: the only age is the part of a second the origin's Date field
            // (one-second resolution) hides, so 0 or 1 (RFC 9111 §4.2.3 apparent_age).
            let firstAge = try #require(first.header("Age").flatMap(Int.init))
            #expect(firstAge >= 0 && firstAge <= 1)
            let second = try httpGet(port: port, target)
            #expect(second.status == 200)
            #expect(second.header("X-Cache-Status") == "HIT")
            #expect(second.header("Cache-Status")?.hasPrefix("Lacquer; hit") == true)
            #expect(second.header("Age") != nil)
            #expect(second.header("Content-Length") == "300")
            #expect(second.body == first.body)
            #expect(second.body.count == 300)
            #expect(origin.requestCount(path: "/bytes/300") == 1)
            #expect(lacquer.counters[.cacheHit] == 1)
            #expect(lacquer.counters[.cacheMiss] == 1)
        }
    }

    @Test("HEAD is answered from the stored GET, with the GET's length and no body")
    func headFromStoredGet() async throws {
        try await withLacquer { _, port, origin async throws in
            _ = try httpGet(port: port, "/bytes/50?cc=max-age%3D60")
            let head = try httpGet(port: port, "/bytes/50?cc=max-age%3D60", method: "HEAD")
            #expect(head.header("X-Cache-Status") == "HIT")
            #expect(head.header("Content-Length") == "50")
            #expect(head.body.isEmpty)
            #expect(origin.requestCount(path: "/bytes/50") == 1)
        }
    }

    @Test("a HEAD miss fetches with GET and stores the object for later GETs")
    func headMissFillsCache() async throws {
        try await withLacquer { _, port, origin async throws in
            let head = try httpGet(port: port, "/bytes/70?cc=max-age%3D60", method: "HEAD")
            #expect(head.status == 200)
            #expect(head.header("X-Cache-Status") == "MISS")
            #expect(head.body.isEmpty)
            let get = try httpGet(port: port, "/bytes/70?cc=max-age%3D60")
            #expect(get.header("X-Cache-Status") == "HIT")
            #expect(get.body.count == 70)
            #expect(origin.requests(path: "/bytes/70").map(\.method) == ["GET"])
        }
    }

    @Test("an object expires after its max-age and is fetched again (EXPIRED)")
    func expiry() async throws {
        let clock = TestClock()
        try await withLacquer(clock: clock.now) { _, port, origin async throws in
            // No Date from the origin: its real clock would disagree with the moved test clock.
            let target = "/expiring?cc=max-age%3D30&nodate=1"
            #expect(try httpGet(port: port, target).header("X-Cache-Status") == "MISS")
            clock.advance(20)
            let hit = try httpGet(port: port, target)
            #expect(hit.header("X-Cache-Status") == "HIT")
            #expect(Int(hit.header("Age") ?? "") ?? -1 >= 20)
            clock.advance(15)
            let expired = try httpGet(port: port, target)
            #expect(expired.header("X-Cache-Status") == "EXPIRED")
            #expect(expired.header("Cache-Status")?.contains("fwd=stale") == true)
            #expect(origin.requestCount(path: "/expiring") == 2)
            #expect(try httpGet(port: port, target).header("X-Cache-Status") == "HIT")
        }
    }

    @Test("Expires minus Date gives the freshness lifetime")
    func expiresHeader() async throws {
        try await withLacquer { _, port, origin async throws in
            _ = try httpGet(port: port, "/exp?expires=120")
            let second = try httpGet(port: port, "/exp?expires=120")
            #expect(second.header("X-Cache-Status") == "HIT")
            #expect(origin.requestCount(path: "/exp") == 1)
        }
    }

    @Test(
        "responses a shared cache must not store are fetched every time",
        arguments: [
            "/ns?cc=no-store%2C+max-age%3D60",
            "/priv?cc=private%2C+max-age%3D60",
            "/cookie?cc=max-age%3D60&setcookie=session%3D1",
            "/varystar?cc=max-age%3D60&vary=*",
            "/nofresh",
        ])
    func notStored(target: String) async throws {
        try await withLacquer { _, port, origin async throws in
            let path = String(target.split(separator: "?")[0])
            let first = try httpGet(port: port, target)
            let second = try httpGet(port: port, target)
            #expect(first.status == 200)
            #expect(second.header("X-Cache-Status") == "MISS")
            #expect(second.header("Cache-Status")?.contains("stored") == false)
            #expect(origin.requestCount(path: path) == 2)
        }
    }

    @Test("a request with Authorization is not stored unless the response says public or s-maxage")
    func authorization() async throws {
        try await withLacquer { _, port, origin async throws in
            let auth = [("Authorization", "Basic dXNlcjpwYXNz")]
            _ = try httpGet(port: port, "/auth?cc=max-age%3D60", headers: auth)
            _ = try httpGet(port: port, "/auth?cc=max-age%3D60", headers: auth)
            #expect(origin.requestCount(path: "/auth") == 2)
            _ = try httpGet(port: port, "/authpub?cc=public%2C+max-age%3D60", headers: auth)
            let second = try httpGet(port: port, "/authpub?cc=public%2C+max-age%3D60", headers: auth)
            #expect(second.header("X-Cache-Status") == "HIT")
            #expect(origin.requestCount(path: "/authpub") == 1)
        }
    }

    @Test("Vary: Accept-Language: equivalent values share one stored variant; --vary-normalise none keys on exact values")
    func varyNormalisedLists() async throws {
        try await withLacquer { _, port, origin async throws in
            let url = "/lang?cc=max-age%3D600&vary=Accept-Language"
            let first = try httpGet(port: port, url, headers: [("Accept-Language", "en-US,en;q=0.9,fr;q=0.5")])
            #expect(first.header("X-Cache-Status") == "MISS")
            for same in ["EN-us, en;q=0.90, fr;q=0.500", "en;q=0.9,en-US,fr;q=0.5", "fr;q=0.5, en-US, en;q=0.9, en-US"] {
                let again = try httpGet(port: port, url, headers: [("Accept-Language", same)])
                #expect(again.header("X-Cache-Status") == "HIT", "\(same)")
            }
            #expect(try httpGet(port: port, url, headers: [("Accept-Language", "fr,en;q=0.5")]).header("X-Cache-Status") == "MISS")
            #expect(origin.requestCount(path: "/lang") == 2)
        }
        try await withLacquer(configure: { $0.varyListFields = [] }) { _, port, origin async throws in
            let url = "/lang?cc=max-age%3D600&vary=Accept-Language"
            _ = try httpGet(port: port, url, headers: [("Accept-Language", "en-US,en;q=0.9")])
            #expect(try httpGet(port: port, url, headers: [("Accept-Language", "en-us,en;q=0.9")]).header("X-Cache-Status") == "MISS")
            #expect(origin.requestCount(path: "/lang") == 2)
        }
    }

    @Test("a request with a Cookie is passed (BYPASS), as Varnish's built-in does")
    func cookiePass() async throws {
        try await withLacquer { _, port, origin async throws in
            let r1 = try httpGet(port: port, "/c?cc=max-age%3D60", headers: [("Cookie", "a=1")])
            #expect(r1.header("X-Cache-Status") == "BYPASS")
            #expect(r1.header("Cache-Status")?.contains("fwd=bypass") == true)
            _ = try httpGet(port: port, "/c?cc=max-age%3D60", headers: [("Cookie", "a=1")])
            #expect(origin.requestCount(path: "/c") == 2)
        }
    }

    @Test("PURGE from the ACL removes every variant; an absent object answers 404")
    func purge() async throws {
        try await withLacquer { lacquer, port, origin async throws in
            let target = "/p?cc=max-age%3D60&vary=Accept-Language"
            _ = try httpGet(port: port, target, headers: [("Accept-Language", "en")])
            _ = try httpGet(port: port, target, headers: [("Accept-Language", "fr")])
            #expect(try httpGet(port: port, target, headers: [("Accept-Language", "fr")]).header("X-Cache-Status") == "HIT")
            let purged = try httpGet(port: port, target, method: "PURGE")
            #expect(purged.status == 200)
            #expect(purged.bodyString.contains("2"))
            #expect(try httpGet(port: port, target, headers: [("Accept-Language", "en")]).header("X-Cache-Status") == "MISS")
            #expect(try httpGet(port: port, target, headers: [("Accept-Language", "fr")]).header("X-Cache-Status") == "MISS")
            #expect(try httpGet(port: port, "/never-stored", method: "PURGE").status == 404)
            #expect(origin.requestCount(path: "/p") == 4)
            #expect(lacquer.counters[.purgeOK] == 1)
        }
    }

    @Test("PURGE from outside the ACL is refused with 403 and removes nothing")
    func purgeDenied() async throws {
        try await withLacquer(configure: { $0.purgeACL = ACL(entries: [try! ACL.parseEntry("10.0.0.0/8")]) }) {
            lacquer, port, _ async throws in
            let target = "/pd?cc=max-age%3D60"
            _ = try httpGet(port: port, target)
            let denied = try httpGet(port: port, target, method: "PURGE")
            #expect(denied.status == 403)
            #expect(try httpGet(port: port, target).header("X-Cache-Status") == "HIT")
            #expect(lacquer.counters[.purgeDenied] == 1)
        }
    }

    @Test("a refused backend connection answers 502 with a short reason, not a hang")
    func backendDown() async throws {
        try await withLacquer(configure: { $0.backends = [BackendConfiguration(name: "down", host: "127.0.0.1", port: 1)] }) {
            lacquer, port, _ async throws in
            let response = try httpGet(port: port, "/anything")
            #expect(response.status == 502)
            #expect(response.bodyString.contains("backend"))
            #expect(response.header("Content-Type")?.hasPrefix("text/plain") == true)
            #expect(lacquer.counters[.fetchConnectFailed] == 1)
        }
    }

    @Test("a backend that does not answer within the first-byte timeout gives 504")
    func backendTimeout() async throws {
        try await withLacquer(configure: { $0.backends[0].firstByteTimeout = .milliseconds(300) }) { lacquer, port, _ in
            let response = try httpGet(port: port, "/hang")
            #expect(response.status == 504)
            #expect(lacquer.counters[.fetchTimeout] == 1)
        }
    }

    @Test("a backend that closes without answering gives 502")
    func backendDrops() async throws {
        try await withLacquer { _, port, _ async throws in
            #expect(try httpGet(port: port, "/drop").status == 502)
        }
    }

    @Test("hop-by-hop and spoofable fields are dropped towards the origin; XFF, XFP and Via are set")
    func requestHeaderForwarding() async throws {
        try await withLacquer { _, port, origin async throws in
            let response = try httpGet(
                port: port, "/echo",
                headers: [
                    ("Connection", "keep-alive, X-Secret"), ("X-Secret", "1"), ("Keep-Alive", "timeout=5"),
                    ("TE", "trailers"), ("Proxy-Connection", "keep-alive"), ("Upgrade", "websocket"),
                    ("X-Forwarded-Host", "evil.example"), ("X-Forwarded-Proto", "https"), ("Forwarded", "for=1.2.3.4"),
                    ("X-Original-URL", "/admin"), ("X-HTTP-Method-Override", "DELETE"), ("X-Cache-Status", "HIT"),
                    ("X-Forwarded-For", "203.0.113.9"), ("X-Custom", "kept"),
                ])
            #expect(response.status == 200)
            let received = origin.requests(path: "/echo").first
            let names = Set((received?.headers ?? []).map { $0.name.lowercased() })
            for dropped in [
                "x-secret", "keep-alive", "te", "proxy-connection", "upgrade", "x-forwarded-host", "forwarded",
                "x-original-url", "x-http-method-override", "x-cache-status",
            ] {
                #expect(!names.contains(dropped), "\(dropped) reached the origin")
            }
            func value(_ name: String) -> String? {
                received?.headers.first(where: { $0.name.lowercased() == name })?.value
            }
            #expect(value("x-custom") == "kept")
            #expect(value("x-forwarded-for") == "203.0.113.9, 127.0.0.1")
            #expect(value("x-forwarded-proto") == "http")
            #expect(value("via") == "1.1 lacquer")
            #expect(value("host") == "127.0.0.1")
            #expect(value("x-lacquer-xid") != nil)
        }
    }

    @Test("hop-by-hop fields from the origin do not reach the client")
    func responseHeaderStripping() async throws {
        try await withLacquer { _, port, _ async throws in
            let response = try httpGet(
                port: port, "/rh?h=Connection%3AX-Internal&h=X-Internal%3Asecret&h=Keep-Alive%3Atimeout%3D9&h=X-Public%3Ayes")
            #expect(response.header("X-Internal") == nil)
            #expect(response.header("Keep-Alive") == nil)
            #expect(response.header("X-Public") == "yes")
        }
    }

    @Test("pipelined requests on one connection are answered in order")
    func pipelining() async throws {
        try await withLacquer { _, port, _ async throws in
            let client = try RawHTTPClient(port: port)
            defer { client.close() }
            try client.send(
                "GET /one?cc=max-age%3D60 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                    + "GET /two HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                    + "GET /one?cc=max-age%3D60 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            let a = try client.readResponse()
            let b = try client.readResponse()
            let c = try client.readResponse()
            #expect(a.bodyString == "ok /one\n")
            #expect(b.bodyString == "ok /two\n")
            #expect(c.bodyString == "ok /one\n")
            #expect(c.header("X-Cache-Status") == "HIT")
        }
    }

    @Test("client keep-alive and backend connection reuse")
    func keepAlive() async throws {
        try await withLacquer(configure: { $0.threads = 1 }) { lacquer, port, origin in
            let client = try RawHTTPClient(port: port)
            defer { client.close() }
            for i in 0..<5 {
                let r = try client.request("GET", "/k\(i)")
                #expect(r.status == 200)
            }
            #expect(origin.connectionsAccepted == 1)
            #expect(lacquer.counters[.backendReuse] >= 4)
        }
    }

    @Test("a large body streams through without being stored or held whole")
    func largeStreamedBody() async throws {
        try await withLacquer { lacquer, port, _ async throws in
            let size = 64 << 20
            let client = try RawHTTPClient(port: port, timeout: 60)
            defer { client.close() }
            try client.send("GET /bytes/\(size)?cc=max-age%3D60 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            let result = try client.readResponseDiscardingBody()
            #expect(result.response.status == 200)
            #expect(result.bodyLength == size)
            #expect(result.response.header("Cache-Status")?.contains("stored") == false)
            #expect(lacquer.memory.stats.objects == 0)
        }
    }

    @Test("a successful POST invalidates the stored GET of its URI")
    func unsafeMethodInvalidates() async throws {
        try await withLacquer { lacquer, port, origin async throws in
            let target = "/inv?cc=max-age%3D60"
            _ = try httpGet(port: port, target)
            #expect(try httpGet(port: port, target).header("X-Cache-Status") == "HIT")
            let post = try RawHTTPClient(port: port)
            defer { post.close() }
            let posted = try post.request("POST", target, body: Array("x=1".utf8))
            #expect(posted.status == 200)
            #expect(posted.header("X-Cache-Status") == "BYPASS")
            let after = try httpGet(port: port, target)
            #expect(after.header("X-Cache-Status") == "MISS", "\(after.status) \(after.header("Cache-Status") ?? "-")")
            #expect(origin.requests(path: "/inv").first(where: { $0.method == "POST" })?.bodyLength == 3)
            #expect(lacquer.counters[.invalidations] == 1)
        }
    }

    @Test("Vary'd responses are stored side by side and matched per request")
    func varyVariants() async throws {
        try await withLacquer { _, port, origin async throws in
            let target = "/v?cc=max-age%3D60&vary=Accept-Language"
            _ = try httpGet(port: port, target, headers: [("Accept-Language", "en")])
            let fr = try httpGet(port: port, target, headers: [("Accept-Language", "fr")])
            #expect(fr.header("X-Cache-Status") == "MISS")
            #expect(fr.header("Cache-Status")?.contains("fwd=vary-miss") == true)
            #expect(try httpGet(port: port, target, headers: [("Accept-Language", "en")]).header("X-Cache-Status") == "HIT")
            #expect(try httpGet(port: port, target, headers: [("Accept-Language", "fr")]).header("X-Cache-Status") == "HIT")
            #expect(origin.requestCount(path: "/v") == 2)
        }
    }

    @Test("a second server on a port in use fails with a message naming the address")
    func portInUse() async throws {
        try await withLacquer { _, port, origin async throws in
            var configuration = ServerConfiguration()
            configuration.listen = [HostAndPort(host: "127.0.0.1", port: port)]
            configuration.admin = nil
            configuration.threads = 1
            configuration.backends = [BackendConfiguration(name: "o", host: "127.0.0.1", port: origin.port)]
            let second = LacquerServer(configuration: configuration)
            do {
                try await second.start()
                try await second.shutdown()
                Issue.record("second bind succeeded")
            } catch let error as LacquerServerError {
                #expect(error.description.contains("127.0.0.1:\(port)"))
                #expect(error.description.lowercased().contains("in use"))
            }
        }
    }

    @Test("the admin listener serves /health and /stats")
    func admin() async throws {
        try await withLacquer { lacquer, port, _ async throws in
            _ = try httpGet(port: port, "/s?cc=max-age%3D60")
            let adminPort = try #require(lacquer.adminAddress?.port)
            #expect(try httpGet(port: adminPort, "/health").bodyString == "ok\n")
            let stats = try httpGet(port: adminPort, "/stats")
            #expect(stats.header("Content-Type") == "application/json")
            #expect(stats.bodyString.contains("\"cache_miss\":1"))
            #expect(stats.bodyString.contains("\"objects\":1"))
            #expect(try httpGet(port: adminPort, "/metrics").bodyString.contains("lacquer_cache_miss_total 1"))
            #expect(try httpGet(port: adminPort, "/nope").status == 404)
        }
    }
}

/// Targeted cache-control fields (RFC 9213) and field-qualified directives over real sockets.
@Suite("Targeted cache control", .serialized, .timeLimit(.minutes(2)))
struct TargetedCacheControlIntegrationTests {
    @Test("CDN-Cache-Control overrides Cache-Control for Lacquer and is passed on")
    func cdnCacheControl() async throws {
        try await withLacquer { _, port, origin async throws in
            let target = "/cdn?cc=no-store&h=CDN-Cache-Control%3Amax-age%3D60"
            let first = try httpGet(port: port, target)
            #expect(first.header("CDN-Cache-Control") == "max-age=60")
            #expect(first.header("Cache-Control") == "no-store")
            #expect(try httpGet(port: port, target).header("X-Cache-Status") == "HIT")
            #expect(origin.requestCount(path: "/cdn") == 1)
        }
    }

    @Test("Lacquer-Cache-Control is aimed only at Lacquer: it decides, and clients never see it")
    func ownTargetedField() async throws {
        try await withLacquer { _, port, _ async throws in
            let target = "/own?cc=max-age%3D0&h=Lacquer-Cache-Control%3Amax-age%3D60"
            let first = try httpGet(port: port, target)
            #expect(first.header("Lacquer-Cache-Control") == nil)
            let second = try httpGet(port: port, target)
            #expect(second.header("X-Cache-Status") == "HIT")
            #expect(second.header("Lacquer-Cache-Control") == nil)
        }
    }

    @Test("Surrogate-Control no-store keeps the response out of the cache and is not forwarded")
    func surrogateNoStore() async throws {
        try await withLacquer { _, port, origin async throws in
            let target = "/sur?cc=max-age%3D60&h=Surrogate-Control%3Ano-store"
            let first = try httpGet(port: port, target)
            #expect(first.header("Surrogate-Control") == nil)
            _ = try httpGet(port: port, target)
            #expect(origin.requestCount(path: "/sur") == 2)
        }
    }

    @Test("private=\"field\" stores the response without that field (RFC 9111 §5.2.2.7)")
    func qualifiedPrivate() async throws {
        try await withLacquer { _, port, _ async throws in
            let target = "/qp?cc=max-age%3D60%2C+private%3D%22X-User%22&h=X-User%3Aalice"
            let first = try httpGet(port: port, target)
            #expect(first.header("X-User") == "alice")
            let second = try httpGet(port: port, target)
            #expect(second.header("X-Cache-Status") == "HIT")
            #expect(second.header("X-User") == nil)
        }
    }
}
