import FixtureOrigin
import Foundation
import LacquerServer
import LacquerTesting
import NIOCore
import Testing
import VCL

/// The VCL-like configuration running in a real Lacquer, over real sockets: the shipped examples,
/// each sub's effect, runtime failures, reload and bans.
@Suite("VCL in the server", .serialized, .timeLimit(.minutes(3)))
struct VCLIntegrationTests {
    /// The repository's `vcl-like/` folder.
    static let vclFolder: URL = {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("vcl-like")
    }()

    /// `text` with every backend pointed at 127.0.0.1:`port` (the fixture origin).
    static func pointBackends(_ text: String, to port: Int) -> String {
        var out = text.replacingOccurrences(
            of: #"\.host\s*=\s*"[^"]*""#, with: #".host = "127.0.0.1""#, options: .regularExpression)
        out = out.replacingOccurrences(of: #"\.port\s*=\s*"?[0-9]+"?"#, with: ".port = \"\(port)\"", options: .regularExpression)
        return out
    }

    /// Runs Lacquer with `text` (builtin.vcl appended) in front of the fixture origin.
    func withVCL(
        _ text: String, name: String = "test.vcl", purgeACL: ACL = .loopback,
        _ body: (_ lacquer: LacquerServer, _ port: Int, _ origin: FixtureOrigin) async throws -> Void
    ) async throws {
        try await withLacquer(configure: { configuration in
            let port = configuration.backends[0].port
            let source = Self.pointBackends(text, to: port)
            do {
                let vcl = try VCLCompiler.compile([VCLSource(name: name, text: source)], predefinedACLs: [VCLLoader.purgeACL(purgeACL)])
                configuration.vcl = vcl
                if !vcl.backends.isEmpty {
                    configuration.backends = VCLLoader.backendConfigurations(vcl)
                }
            } catch {
                Issue.record("\(name) does not compile: \(error)")
            }
        }, body)
    }

    func example(_ path: String) throws -> String {
        try String(contentsOf: Self.vclFolder.appendingPathComponent(path), encoding: .utf8)
    }

    // MARK: The shipped files

    @Test("default.vcl behaves as the built-in: MISS then HIT, a Cookie passes, PURGE from loopback")
    func defaultVCL() async throws {
        try await self.withVCL(try self.example("default.vcl"), name: "default.vcl") { _, port, origin async throws in
            let target = "/d?cc=max-age%3D60"
            #expect(try httpGet(port: port, target).header("X-Cache-Status") == "MISS")
            #expect(try httpGet(port: port, target).header("X-Cache-Status") == "HIT")
            #expect(try httpGet(port: port, target, headers: [("Cookie", "s=1")]).header("X-Cache-Status") == "BYPASS")
            #expect(try httpGet(port: port, target, method: "PURGE").status == 200)
            #expect(try httpGet(port: port, target).header("X-Cache-Status") == "MISS")
            #expect(origin.requestCount(path: "/d") == 3)
        }
    }

    @Test("cms.vcl: assets cached without cookies for a day, admin and logged-in users passed, analytics cookies stripped, X-Cache")
    func cmsExample() async throws {
        try await self.withVCL(try self.example("examples/cms.vcl"), name: "cms.vcl") { _, port, origin async throws in
            // No Cache-Control from the origin: vcl_backend_response gives assets a day.
            let first = try httpGet(port: port, "/style.css", headers: [("Cookie", "wordpress_logged_in_x=1")])
            let second = try httpGet(port: port, "/style.css", headers: [("Cookie", "other=2")])
            #expect(first.header("X-Cache") == "MISS")
            #expect(second.header("X-Cache-Status") == "HIT")
            #expect(second.header("X-Cache") == "HIT")
            #expect(origin.requestCount(path: "/style.css") == 1)
            #expect(origin.requests(path: "/style.css").first?.header("Cookie") == nil)
            // Logged-in users and the admin go to the origin every time.
            for _ in 0..<2 {
                #expect(try httpGet(port: port, "/page?cc=max-age%3D60", headers: [("Cookie", "wordpress_logged_in_abc=1")]).header("X-Cache-Status") == "BYPASS")
                #expect(try httpGet(port: port, "/wp-admin/x?cc=max-age%3D60").header("X-Cache-Status") == "BYPASS")
            }
            // Only analytics cookies: stripped, so the page is shared.
            _ = try httpGet(port: port, "/news?cc=max-age%3D60", headers: [("Cookie", "_ga=GA1.2; _gid=x")])
            #expect(try httpGet(port: port, "/news?cc=max-age%3D60", headers: [("Cookie", "_ga=other")]).header("X-Cache-Status") == "HIT")
            #expect(origin.requestCount(path: "/news") == 1)
            // PURGE from the purgers ACL (loopback is in it).
            #expect(try httpGet(port: port, "/style.css", method: "PURGE").status == 200)
        }
    }

    @Test("api.vcl: tracking parameters dropped and the query sorted into one key, token-free public key, retry once on 5xx")
    func apiExample() async throws {
        try await self.withVCL(try self.example("examples/api.vcl"), name: "api.vcl") { _, port, origin async throws in
            _ = try httpGet(port: port, "/v1/items?b=2&a=1&utm_source=x&cc=max-age%3D60")
            let again = try httpGet(port: port, "/v1/items?cc=max-age%3D60&a=1&b=2&fbclid=zz")
            #expect(again.header("X-Cache-Status") == "HIT")
            #expect(origin.requestCount(path: "/v1/items") == 1)
            let sent = try #require(origin.requests(path: "/v1/items").first)
            #expect(!sent.uri.contains("utm_source"))
            // Public data with a token: one cached copy for every token.
            _ = try httpGet(port: port, "/v1/public/list?cc=public%2C+max-age%3D60", headers: [("Authorization", "Bearer a")])
            #expect(try httpGet(port: port, "/v1/public/list?cc=public%2C+max-age%3D60", headers: [("Authorization", "Bearer b")]).header("X-Cache-Status") == "HIT")
            // A 5xx is retried once, then delivered uncached.
            let failed = try httpGet(port: port, "/status/503")
            #expect(failed.status == 503)
            #expect(origin.requestCount(path: "/status/503") == 2)
            #expect(failed.header("X-Hits") == "0")
        }
    }

    @Test("multi-backend.vcl: round-robin over the apps, a URL always to the same static server, 5xx retried through the fallback")
    func multiBackendExample() async throws {
        try await self.withVCL(try self.example("examples/multi-backend.vcl"), name: "multi-backend.vcl") { _, port, origin async throws in
            var apps: [String] = []
            for i in 0..<4 {
                apps.append(try httpGet(port: port, "/page\(i)").header("X-Backend") ?? "none")
            }
            #expect(Set(apps) == ["app1", "app2"])
            let statics = try (0..<3).map { _ in try httpGet(port: port, "/static/a.css?cc=no-store").header("X-Backend") ?? "none" }
            #expect(Set(statics).count == 1)
            #expect(statics[0].hasPrefix("static"))
            let failed = try httpGet(port: port, "/status/500")
            #expect(failed.status == 500)
            #expect(origin.requestCount(path: "/status/500") == 2)
        }
    }

    // MARK: Each sub

    @Test("vcl_recv can answer synth, rewrite the URL and headers the backend gets, and choose pass")
    func recvActions() async throws {
        let text = """
            vcl 4.1;
            sub vcl_recv {
                if (req.url ~ "^/blocked") { return (synth(403, "Blocked by policy")); }
                if (req.url ~ "^/old/") { set req.url = regsub(req.url, "^/old/", "/new/"); }
                set req.http.X-Seen = "yes";
                if (req.http.X-Nocache) { return (pass); }
            }
            """
        try await self.withVCL(text) { _, port, origin async throws in
            let blocked = try httpGet(port: port, "/blocked/x")
            #expect(blocked.status == 403)
            #expect(blocked.bodyString.contains("Blocked by policy"))
            _ = try httpGet(port: port, "/old/page?cc=max-age%3D60")
            #expect(origin.requestCount(path: "/new/page") == 1)
            #expect(origin.requests(path: "/new/page").first?.header("X-Seen") == "yes")
            #expect(try httpGet(port: port, "/old/page?cc=max-age%3D60").header("X-Cache-Status") == "HIT")
            #expect(try httpGet(port: port, "/old/page?cc=max-age%3D60", headers: [("X-Nocache", "1")]).header("X-Cache-Status") == "BYPASS")
            #expect(origin.requestCount(path: "/blocked/x") == 0)
        }
    }

    @Test("vcl_hash with hash_data makes separate objects per header value")
    func hashData() async throws {
        let text = """
            vcl 4.1;
            sub vcl_hash {
                hash_data(req.url);
                hash_data(req.http.X-Lang);
                return (lookup);
            }
            """
        try await self.withVCL(text) { _, port, origin async throws in
            let target = "/h?cc=max-age%3D60"
            let en = try httpGet(port: port, target, headers: [("X-Lang", "en")])
            let fr = try httpGet(port: port, target, headers: [("X-Lang", "fr")])
            #expect(en.header("X-Cache-Status") == "MISS")
            #expect(fr.header("X-Cache-Status") == "MISS")
            #expect(try httpGet(port: port, target, headers: [("X-Lang", "en")]).header("X-Cache-Status") == "HIT")
            #expect(origin.requestCount(path: "/h") == 2)
        }
    }

    @Test("vcl_backend_response: beresp.ttl stores what the origin did not mark, uncacheable keeps out what it did, headers change")
    func backendResponse() async throws {
        let text = """
            vcl 4.1;
            sub vcl_backend_response {
                if (bereq.url ~ "^/plain") { set beresp.ttl = 60s; }
                if (bereq.url ~ "^/never") { set beresp.uncacheable = true; }
                set beresp.http.X-Fetched = "1";
                unset beresp.http.X-Origin-Count;
            }
            """
        try await self.withVCL(text) { _, port, origin async throws in
            _ = try httpGet(port: port, "/plain")
            let hit = try httpGet(port: port, "/plain")
            #expect(hit.header("X-Cache-Status") == "HIT")
            #expect(hit.header("X-Fetched") == "1")
            #expect(hit.header("X-Origin-Count") == nil)
            _ = try httpGet(port: port, "/never?cc=max-age%3D60")
            #expect(try httpGet(port: port, "/never?cc=max-age%3D60").header("X-Cache-Status") == "MISS")
            #expect(origin.requestCount(path: "/plain") == 1)
            #expect(origin.requestCount(path: "/never") == 2)
            // Pass fetches go through vcl_backend_response too.
            let passed = try httpGet(port: port, "/passed", headers: [("Cookie", "session=1")])
            #expect(passed.header("X-Cache-Status") == "BYPASS")
            #expect(passed.header("X-Fetched") == "1")
        }
    }

    @Test("vcl_deliver and vcl_synth change what the client gets")
    func deliverAndSynth() async throws {
        let text = """
            vcl 4.1;
            sub vcl_recv {
                if (req.url == "/teapot") { return (synth(418, "Short and stout")); }
            }
            sub vcl_deliver {
                set resp.http.X-Served-By = "lacquer-test";
                unset resp.http.X-Origin-Count;
            }
            sub vcl_synth {
                set resp.http.Content-Type = "text/html";
                synthetic("<p>" + resp.status + " " + resp.reason + "</p>");
                return (deliver);
            }
            """
        try await self.withVCL(text) { _, port, _ async throws in
            let page = try httpGet(port: port, "/x?cc=max-age%3D60")
            #expect(page.header("X-Served-By") == "lacquer-test")
            #expect(page.header("X-Origin-Count") == nil)
            let hit = try httpGet(port: port, "/x?cc=max-age%3D60")
            #expect(hit.header("X-Cache-Status") == "HIT")
            #expect(hit.header("X-Served-By") == "lacquer-test")
            let teapot = try httpGet(port: port, "/teapot")
            #expect(teapot.status == 418)
            #expect(teapot.bodyString == "<p>418 Short and stout</p>")
            #expect(teapot.header("Content-Type") == "text/html")
            #expect(teapot.header("Content-Length") == "26")
        }
    }

    @Test("a runtime error ends that request in a 503 and the next one is served; restart loops end in a 503")
    func runtimeFailures() async throws {
        let text = """
            vcl 4.1;
            import std;
            sub vcl_recv {
                if (req.url ~ "^/bad") { set req.http.X-Bad = req.url + {"
            "}; }
                if (req.url ~ "^/loop") { return (restart); }
            }
            sub vcl_synth {
                set resp.http.X-Synth = "yes";
            }
            """
        try await self.withVCL(text) { lacquer, port, origin async throws in
            // A header value with a line break would split the request: refused at runtime,
            // and the request ends in vcl_synth with a 503.
            let bad = try httpGet(port: port, "/bad")
            #expect(bad.status == 503)
            #expect(bad.header("X-Synth") == "yes")
            #expect(lacquer.counters[.vclFailures] == 1)
            #expect(origin.requestCount(path: "/bad") == 0)
            let ok = try httpGet(port: port, "/fine?cc=max-age%3D60")
            #expect(ok.status == 200)
            let loop = try httpGet(port: port, "/loop")
            #expect(loop.status == 503)
            #expect(lacquer.counters[.restarts] == 4)
        }
    }

    @Test("vcl_purge: restart after a purge refetches the object at once (purge-and-warm)")
    func purgeAndRestart() async throws {
        let text = """
            vcl 4.1;
            sub vcl_purge {
                set req.method = "GET";
                return (restart);
            }
            """
        try await self.withVCL(text) { _, port, origin async throws in
            let target = "/warm?cc=max-age%3D600"
            _ = try httpGet(port: port, target)
            let purged = try httpGet(port: port, target, method: "PURGE")
            // The restarted request is a GET: a fresh copy comes back and is stored.
            #expect(purged.status == 200)
            #expect(purged.header("X-Cache-Status") == "MISS")
            #expect(origin.requestCount(path: "/warm") == 2)
            #expect(try httpGet(port: port, target).header("X-Cache-Status") == "HIT")
            #expect(origin.requestCount(path: "/warm") == 2)
        }
    }

    @Test("an extension method reaches VCL: a BAN method built with ban(); unknown ones stay 501; a real SOURCE request keeps its method")
    func extensionMethods() async throws {
        let text = """
            vcl 4.1;
            sub vcl_recv {
                if (req.method == "BAN") {
                    if (!client.ip ~ purge_acl) { return (synth(403, "Forbidden")); }
                    ban("req.url ~ ^" + req.url);
                    return (synth(200, "Ban added"));
                }
                if (req.method == "SOURCE") { return (synth(299, "Source seen")); }
            }
            """
        try await self.withVCL(text) { lacquer, port, origin async throws in
            for path in ["/news/1", "/sport/1"] {
                _ = try httpGet(port: port, path + "?cc=max-age%3D600")
            }
            let client = try RawHTTPClient(port: port)
            defer { client.close() }
            // Pipelined behind a hit and before a PURGE, SOURCE, an unknown method and a GET.
            try client.send(
                "GET /sport/1?cc=max-age%3D600 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                    + "BAN /news/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                    + "SOURCE /s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                    + "FROB /f HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                    + "GET /news/1?cc=max-age%3D600 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            #expect(try client.readResponse().header("X-Cache-Status") == "HIT")
            let ban = try client.readResponse()
            #expect(ban.status == 200)
            #expect(ban.bodyString.contains("Ban added"))
            #expect(try client.readResponse().status == 299)
            #expect(try client.readResponse().status == 501)
            #expect(try client.readResponse().header("X-Cache-Status") == "MISS")
            #expect(lacquer.counters[.bansAdded] == 1)
            #expect(origin.requestCount(path: "/f") == 0)
        }
    }

    @Test("bans from VCL and from POST /ban hide matching objects stored before them, and only those")
    func bans() async throws {
        let text = """
            vcl 4.1;
            sub vcl_recv {
                # Ban by header (a BAN method works too: see extensionMethods).
                if (req.http.X-Ban-Url) {
                    ban("req.url ~ " + req.http.X-Ban-Url);
                    return (synth(200, "Banned"));
                }
            }
            """
        try await self.withVCL(text) { lacquer, port, origin async throws in
            for path in ["/news/1", "/news/2", "/sport/1"] {
                _ = try httpGet(port: port, path + "?cc=max-age%3D600")
            }
            let banned = try httpGet(port: port, "/", headers: [("X-Ban-Url", "^/news/")])
            #expect(banned.status == 200)
            #expect(try httpGet(port: port, "/news/1?cc=max-age%3D600").header("X-Cache-Status") == "MISS")
            #expect(try httpGet(port: port, "/sport/1?cc=max-age%3D600").header("X-Cache-Status") == "HIT")
            // Stored after the ban: not affected.
            #expect(try httpGet(port: port, "/news/1?cc=max-age%3D600").header("X-Cache-Status") == "HIT")
            // The admin endpoint.
            let admin = try #require(lacquer.adminAddress?.port)
            let added = try httpGet(port: admin, "/ban", method: "POST", body: "obj.status == 200 && req.url ~ ^/sport")
            #expect(added.status == 200)
            #expect(try httpGet(port: port, "/sport/1?cc=max-age%3D600").header("X-Cache-Status") == "MISS")
            let refused = try httpGet(port: admin, "/ban", method: "POST", body: "obj.colour == red")
            #expect(refused.status == 400)
            #expect(refused.bodyString.contains("unknown field"))
            #expect(origin.requestCount(path: "/news/1") == 2)
            #expect(lacquer.counters[.bansAdded] == 2)
        }
    }

    @Test("POST /reload swaps the configuration for new requests; a broken file is refused and the old one stays")
    func reload() async throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/site.vcl"
        func write(_ version: String) throws {
            try """
                vcl 4.1;
                sub vcl_deliver { set resp.http.X-Config = "\(version)"; }
                """.write(toFile: path, atomically: true, encoding: .utf8)
        }
        try write("one")
        try await withLacquer(configure: { configuration in
            configuration.vclPath = path
            configuration.vcl = try? VCLLoader.load(path: path, purgeACL: configuration.purgeACL)
        }) { lacquer, port, _ async throws in
            let admin = try #require(lacquer.adminAddress?.port)
            #expect(try httpGet(port: port, "/r").header("X-Config") == "one")
            try write("two")
            let reloaded = try httpGet(port: admin, "/reload", method: "POST")
            #expect(reloaded.status == 200)
            #expect(try httpGet(port: port, "/r").header("X-Config") == "two")
            try "vcl 4.1;\nsub vcl_deliver { set resp.http.X-Config = nope; }\n".write(toFile: path, atomically: true, encoding: .utf8)
            let refused = try httpGet(port: admin, "/reload", method: "POST")
            #expect(refused.status == 422)
            #expect(refused.bodyString.contains("site.vcl:2:"))
            #expect(try httpGet(port: port, "/r").header("X-Config") == "two")
            #expect(lacquer.counters[.vclReloadFailures] == 1)
            #expect(try httpGet(port: admin, "/reload").status == 405)
        }
    }

    @Test("a reload can change backends and probes: new requests go to the new backend, a download from the old one finishes")
    func reloadBackends() async throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let second = try await FixtureOrigin.start()
        defer { Task { try? await second.shutdown() } }
        let path = directory + "/site.vcl"
        func write(name: String, port: Int, probe: Bool) throws {
            let probeLine = probe ? "    .probe = { .url = \"/health\"; .interval = 0.1s; .window = 2; .threshold = 1; .initial = 1; }\n" : ""
            try "vcl 4.1;\nbackend \(name) {\n    .host = \"127.0.0.1\";\n    .port = \"\(port)\";\n\(probeLine)}\n"
                .write(toFile: path, atomically: true, encoding: .utf8)
        }
        var firstPort = 0
        try await withLacquer(configure: { configuration in
            firstPort = configuration.backends[0].port
            try? write(name: "one", port: firstPort, probe: false)
            configuration.vclPath = path
            configuration.vcl = try? VCLLoader.load(path: path, purgeACL: configuration.purgeACL)
            configuration.backends = configuration.vcl.map(VCLLoader.backendConfigurations) ?? []
        }) { lacquer, port, origin async throws in
            #expect(try httpGet(port: port, "/before").status == 200)
            #expect(origin.requestCount(path: "/before") == 1)
            // A slow download from the first backend is under way during the reload.
            let download = try RawHTTPClient(port: port, timeout: 10)
            try download.send("GET /slowbody/200000/100 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            _ = try download.readResponseHead()
            try write(name: "two", port: second.port, probe: true)
            let result = lacquer.reload()
            #expect(result.ok, "\(result.message)")
            #expect(result.message.contains("backends added: two"))
            #expect(result.message.contains("backends removed: one"))
            #expect(try httpGet(port: port, "/after").status == 200)
            #expect(second.requestCount(path: "/after") == 1)
            #expect(origin.requestCount(path: "/after") == 0)
            let body = try await runBlocking { try download.readToEOF(max: 1 << 20) }
            #expect(body.count >= 200_000)
            // The new backend's probe runs; /stats lists only the new backend.
            var probed = 0
            for _ in 0..<100 where probed == 0 {
                try await Task.sleep(for: .milliseconds(50))
                probed = second.requestCount(path: "/health")
            }
            #expect(probed > 0)
            #expect(lacquer.backendSnapshots.map(\.name) == ["two"])
            #expect(lacquer.backendSnapshots.first?.probe != nil)
            // Back to the first backend without its probe: unchanged declarations keep their pools.
            try write(name: "one", port: firstPort, probe: false)
            #expect(lacquer.reload().ok)
            #expect(try httpGet(port: port, "/again").status == 200)
            #expect(origin.requestCount(path: "/again") == 1)
            // A file without backends is refused; the running ones stay.
            try "vcl 4.1;\nsub vcl_recv { }\n".write(toFile: path, atomically: true, encoding: .utf8)
            let refused = lacquer.reload()
            #expect(!refused.ok)
            #expect(refused.message.contains("declares no backend"))
            #expect(try httpGet(port: port, "/still").status == 200)
            #expect(origin.requestCount(path: "/still") == 1)
        }
    }

    @Test("vsthrottle.is_denied limits by any key VCL builds (here client.ip and the URL): 429 from vcl_recv")
    func vsthrottle() async throws {
        let source = """
            vcl 4.1;
            import vsthrottle;
            backend default { .host = "127.0.0.1"; .port = "1"; }
            sub vcl_recv {
                if (vsthrottle.is_denied(client.ip + req.url, 2, 60s)) {
                    return (synth(429, "Too Many Requests"));
                }
            }
            """
        try await self.withVCL(source) { _, port, _ async throws in
            #expect(try httpGet(port: port, "/t/a").status == 200)
            #expect(try httpGet(port: port, "/t/a").status == 200)
            #expect(try httpGet(port: port, "/t/a").status == 429, "the third call within 60 s")
            #expect(try httpGet(port: port, "/t/b").status == 200, "another key has its own allowance")
        }
    }

    @Test("vsthrottle needs its import, and checks its argument types (file:line:col)")
    func vsthrottleChecked() {
        #expect(throws: VCLCompileErrors.self) {
            try VCLCompiler.compile(
                "vcl 4.1;\nsub vcl_recv { if (vsthrottle.is_denied(req.url, 2, 60s)) { return (pass); } }",
                name: "t.vcl", appendBuiltin: false)
        }
        do {
            _ = try VCLCompiler.compile(
                "vcl 4.1;\nimport vsthrottle;\nsub vcl_recv { if (vsthrottle.is_denied(req.url, \"two\", 60s)) { return (pass); } }",
                name: "t.vcl", appendBuiltin: false)
            Issue.record("a STRING limit compiled")
        } catch {
            #expect(error.description.contains("t.vcl:3:"), "\(error.description)")
        }
    }
}
