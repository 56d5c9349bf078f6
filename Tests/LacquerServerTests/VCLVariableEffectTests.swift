import FixtureOrigin
import Foundation
import LacquerServer
import LacquerTesting
import NIOCore
import Testing
import VCL

/// VCL variables that change what Lacquer does, each as Varnish documents it: req.ttl,
/// req.hash_ignore_busy, bereq.connect_timeout, beresp.do_gzip, beresp.do_gunzip. Those Lacquer
/// cannot honour (beresp.do_stream, beresp.do_esi) are refused when the configuration loads.
@Suite("VCL variables with effects", .serialized, .timeLimit(.minutes(3)))
struct VCLVariableEffectTests {
    func withVCL(
        _ subs: String, backendExtra: String = "",
        _ body: (_ lacquer: LacquerServer, _ port: Int, _ origin: FixtureOrigin) async throws -> Void
    ) async throws {
        try await withLacquer(configure: { configuration in
            let port = configuration.backends[0].port
            let source = """
                vcl 4.1;
                import std;
                backend origin { .host = "127.0.0.1"; .port = "\(port)"; \(backendExtra) }
                \(subs)
                """
            do {
                configuration.vcl = try VCLCompiler.compile(
                    [VCLSource(name: "test.vcl", text: source)], predefinedACLs: [VCLLoader.purgeACL(.loopback)])
            } catch {
                Issue.record("does not compile: \(error)")
            }
        }, body)
    }

    @Test("req.ttl caps the stored TTL for a lookup: an object older than it is fetched again")
    func reqTTL() async throws {
        try await self.withVCL(
            """
            sub vcl_recv { if (req.http.Max-Age) { set req.ttl = std.duration(req.http.Max-Age, 0s); } }
            """
        ) { lacquer, port, origin in
            let target = "/t?cc=max-age%3D60"
            #expect(try httpGet(port: port, target).header("X-Cache-Status") == "MISS")
            #expect(try httpGet(port: port, target, headers: [("Max-Age", "30s")]).header("X-Cache-Status") == "HIT")
            try await Task.sleep(for: .milliseconds(1100))
            // Older than 0 s: stale for this request although fresh for another minute, so it is
            // refreshed (served stale within builtin.vcl's 10 s grace meanwhile, as Varnish does).
            let capped = try httpGet(port: port, target, headers: [("Max-Age", "0s")])
            #expect(["UPDATING", "EXPIRED"].contains(capped.header("X-Cache-Status")))
            for _ in 0..<200 where origin.requestCount(path: "/t") < 2 {
                try await Task.sleep(for: .milliseconds(10))
            }
            #expect(origin.requestCount(path: "/t") == 2)
            #expect(try httpGet(port: port, target).header("X-Cache-Status") == "HIT")
        }
    }

    @Test("req.hash_ignore_busy: a request does not wait on a fetch already running for its key")
    func hashIgnoreBusy() async throws {
        try await self.withVCL(
            """
            sub vcl_recv { if (req.http.Ignore-Busy) { set req.hash_ignore_busy = true; } }
            """
        ) { lacquer, port, origin in
            // The origin takes 2 s, so the second request lands while the fetch runs even on a
            // loaded machine.
            let target = "/delay/2000/busy?cc=max-age%3D60"
            async let first = runBlocking { try httpGet(port: port, target) }
            try await Task.sleep(for: .milliseconds(100))
            let second = try await runBlocking { try httpGet(port: port, target, headers: [("Ignore-Busy", "1")]) }
            #expect(second.header("X-Cache-Status") == "MISS")
            #expect(second.header("Cache-Status")?.contains("collapsed") == false)
            _ = try await first
            #expect(origin.requestCount(path: "/delay/2000/busy") == 2)
            #expect(lacquer.counters[.coalescedWaiters] == 0)
        }
    }

    /// A listener on 127.0.0.1 whose accept queue is full (backlog 0, never accepting, one
    /// connection already queued): a further connect gets no answer to its SYN and hangs.
    static func saturatedListener() throws -> (port: Int, descriptors: [Int32]) {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, length) } }
        _ = listen(listener, 0)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) }
        }
        let port = Int(UInt16(bigEndian: address.sin_port))
        var descriptors = [listener]
        for _ in 0..<2 {
            let filler = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
            _ = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(filler, $0, length) }
            }
            descriptors.append(filler)
        }
        return (port, descriptors)
    }

    @Test("bereq.connect_timeout set in vcl_backend_fetch bounds the connect to a backend that does not answer")
    func connectTimeout() async throws {
        let (silentPort, descriptors) = try Self.saturatedListener()
        defer { for descriptor in descriptors { close(descriptor) } }
        try await withLacquer(configure: { configuration in
            let source = """
                vcl 4.1;
                backend silent { .host = "127.0.0.1"; .port = "\(silentPort)"; .connect_timeout = 30s; }
                sub vcl_backend_fetch { set bereq.connect_timeout = 0.3s; }
                """
            do {
                let vcl = try VCLCompiler.compile(
                    [VCLSource(name: "test.vcl", text: source)], predefinedACLs: [VCLLoader.purgeACL(.loopback)])
                configuration.vcl = vcl
                configuration.backends = VCLLoader.backendConfigurations(vcl)
            } catch {
                Issue.record("does not compile: \(error)")
            }
        }) { lacquer, port, _ in
            let started = ContinuousClock.now
            let response = try await runBlocking { try httpGet(port: port, "/c", timeout: 20) }
            let elapsed = ContinuousClock.now - started
            // The backend's own 30 s would hold the request far longer than this.
            #expect(response.status == 504)
            #expect(elapsed < .seconds(5), "took \(elapsed)")
            #expect(lacquer.counters[.fetchConnectFailed] == 1)
        }
    }

    @Test("beresp.do_gzip stores a compressible body gzipped; every client still gets the right bytes")
    func doGzip() async throws {
        try await self.withVCL(
            """
            sub vcl_backend_response { set beresp.do_gzip = true; }
            """
        ) { lacquer, port, origin in
            let text = String(repeating: "lacquer gzip test ", count: 100)
            let target = "/g?cc=max-age%3D60&h=Content-Type:text/plain&body=\(text.replacingOccurrences(of: " ", with: "+"))"
            #expect(try httpGet(port: port, target).bodyString == text)
            #expect(lacquer.counters[.gzippedOnStore] == 1)
            let gzip = try httpGet(port: port, target, headers: [("Accept-Encoding", "gzip")])
            #expect(gzip.header("Content-Encoding") == "gzip")
            #expect(gzip.body.count < text.utf8.count)
            let plain = try httpGet(port: port, target)
            #expect(plain.header("Content-Encoding") == nil)
            #expect(plain.bodyString == text)
        }
    }

    @Test("beresp.do_gunzip stores a gzip body decoded; hits are identity-coded")
    func doGunzip() async throws {
        try await self.withVCL(
            """
            sub vcl_backend_response { set beresp.do_gunzip = true; }
            """
        ) { lacquer, port, origin in
            let target = "/gz?cc=max-age%3D60&gzbody=hello+gunzip"
            _ = try httpGet(port: port, target, headers: [("Accept-Encoding", "gzip")])
            let hit = try httpGet(port: port, target, headers: [("Accept-Encoding", "gzip")])
            #expect(hit.header("X-Cache-Status") == "HIT")
            #expect(hit.header("Content-Encoding") == nil)
            #expect(hit.bodyString == "hello gunzip")
            #expect(origin.requestCount(path: "/gz") == 1)
        }
    }

    @Test("setting beresp.do_stream or beresp.do_esi is refused when the configuration loads", arguments: ["do_stream", "do_esi"])
    func refusedWrites(name: String) throws {
        let source = "vcl 4.1;\nbackend b { .host = \"127.0.0.1\"; }\nsub vcl_backend_response {\n    set beresp.\(name) = false;\n}\n"
        do {
            _ = try VCLCompiler.compile(source, name: "site.vcl")
            Issue.record("set beresp.\(name) compiled")
        } catch {
            let diagnostic = try #require(error.diagnostics.first)
            #expect(diagnostic.message == "'beresp.\(name)' cannot be set in Lacquer")
            #expect(diagnostic.description.hasPrefix("site.vcl:4:9: error:"))
        }
        // Reading them is fine.
        _ = try VCLCompiler.compile(
            "vcl 4.1;\nbackend b { .host = \"127.0.0.1\"; }\nsub vcl_backend_response {\n    if (beresp.\(name)) { set beresp.http.X = \"1\"; }\n}\n",
            name: "site.vcl")
    }
}
