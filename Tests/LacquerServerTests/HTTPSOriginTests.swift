import FixtureOrigin
import Foundation
import LacquerTesting
import NIOCore
import Testing

@testable import LacquerServer

/// HTTPS origins: `--backend https://…` and VCL's `.ssl`, against the fixture origin speaking
/// TLS with certificates the test makes (a test CA, and a leaf for `localhost`).
@Suite("HTTPS origins", .serialized, .timeLimit(.minutes(3)))
struct HTTPSOriginTests {
    /// A test CA (`ca.pem`) and an origin certificate it signed for `localhost`.
    static func certificates() throws -> String {
        let folder = try makeTemporaryDirectory("lacquer-origin-tls")
        let maker = TestCertificates(folder: folder)
        try maker.makeCA("ca")
        try maker.make("origin", dnsNames: ["localhost"], ca: "ca")
        return folder
    }

    /// Lacquer in front of an HTTPS fixture origin; `configure` gets the backend to adjust.
    static func withHTTPSOrigin<T>(
        configure: @escaping (inout BackendConfiguration, _ folder: String) -> Void = { _, _ in },
        moreConfiguration: (inout ServerConfiguration) -> Void = { _ in },
        _ body: (_ lacquer: LacquerServer, _ port: Int, _ origin: FixtureOrigin, _ folder: String) async throws -> T
    ) async throws -> T {
        let folder = try Self.certificates()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let origin = try await FixtureOrigin.start(tls: (folder + "/origin-chain.pem", folder + "/origin.key"))
        do {
            let result = try await withLacquer(configure: { configuration in
                var backend = BackendConfiguration(name: "secure", host: "localhost", port: origin.port)
                backend.tls = BackendTLS(caFile: folder + "/ca.pem")
                configure(&backend, folder)
                configuration.backends = [backend]
                moreConfiguration(&configuration)
            }) { lacquer, port, _ in
                try await body(lacquer, port, origin, folder)
            }
            try? await origin.shutdown()
            return result
        } catch {
            try? await origin.shutdown()
            throw error
        }
    }

    @Test("a miss and a hit through an HTTPS origin, verified against --backend-ca; TLS connections are pooled and reused")
    func verifiedAndPooled() async throws {
        try await Self.withHTTPSOrigin { lacquer, port, origin, _ async throws in
            let first = try httpGet(port: port, "/s?cc=max-age%3D60")
            #expect(first.status == 200 && first.header("X-Cache-Status") == "MISS", "\(first.bodyString)")
            #expect(try httpGet(port: port, "/s?cc=max-age%3D60").header("X-Cache-Status") == "HIT")
            for index in 0..<5 {
                #expect(try httpGet(port: port, "/other/\(index)").status == 200)
            }
            #expect(origin.requestCount() == 6)
            // A connection goes back to the pool just after its response is delivered, so a request
            // sent at once may open a second one; most fetches reuse a connection.
            #expect(origin.connectionsAccepted <= 2, "each fetch opened its own TLS connection")
            #expect(lacquer.counters[.backendConn] <= 2)
            #expect(lacquer.counters[.backendReuse] >= 4)
        }
    }

    @Test("an untrusted certificate, a wrong name, a plain-HTTP origin: 502 in plain words, nothing from the TLS library")
    func failuresInPlainWords() async throws {
        // Not trusted: the system trust store does not know the test CA.
        try await Self.withHTTPSOrigin(configure: { backend, _ in backend.tls = BackendTLS() }) { _, port, origin, _ async throws in
            let response = try httpGet(port: port, "/u")
            #expect(response.status == 502)
            #expect(response.bodyString == "502 Bad Gateway: connection to backend failed: TLS handshake failed: the certificate is not trusted\n")
            #expect(response.header("Cache-Status")?.contains("detail=tls-handshake-failed") == true)
            #expect(origin.requestCount() == 0)
        }
        // The certificate names localhost, not 127.0.0.1; without the name check it is accepted.
        try await Self.withHTTPSOrigin(configure: { backend, _ in backend.host = "127.0.0.1" }) { _, port, _, _ async throws in
            let response = try httpGet(port: port, "/n")
            #expect(response.status == 502)
            #expect(response.bodyString.contains("TLS handshake failed: the certificate does not name the server"))
            #expect(!response.bodyString.contains("SSL") && !response.bodyString.contains("error:"))
        }
        try await Self.withHTTPSOrigin(configure: { backend, _ in
            backend.host = "127.0.0.1"
            backend.tls?.serverName = "localhost"
        }) { _, port, _, _ async throws in
            #expect(try httpGet(port: port, "/sni").status == 200)
        }
        // Verification off by name.
        try await Self.withHTTPSOrigin(configure: { backend, _ in backend.tls = BackendTLS(verifyPeer: false) }) { _, port, _, _ async throws in
            #expect(try httpGet(port: port, "/insecure").status == 200)
        }
        // TLS to an origin that speaks plain HTTP.
        try await withLacquer(configure: { $0.backends[0].tls = BackendTLS(verifyPeer: false) }) { _, port, _ async throws in
            let response = try httpGet(port: port, "/plain")
            #expect(response.status == 502)
            #expect(response.bodyString.contains("TLS handshake failed: the backend does not speak TLS"), "\(response.bodyString)")
        }
    }

    @Test("health probes go over TLS: a trusted origin is healthy, an untrusted one sick")
    func probesOverTLS() async throws {
        var probe = ProbeConfiguration(url: "/health")
        probe.interval = .milliseconds(100)
        probe.timeout = .seconds(1)
        probe.window = 3
        probe.threshold = 2
        probe.initial = 0
        try await Self.withHTTPSOrigin(configure: { backend, _ in backend.probe = probe }) { lacquer, port, origin, _ async throws in
            #expect(try await eventually { lacquer.backendSnapshots.first?.healthy == true })
            #expect(origin.requestCount(path: "/health") >= 2)
            #expect(try httpGet(port: port, "/after-probe").status == 200)
        }
        try await Self.withHTTPSOrigin(configure: { backend, _ in
            backend.probe = probe
            backend.tls = BackendTLS()
        }) { lacquer, port, origin, _ async throws in
            try await Task.sleep(for: .milliseconds(600))
            #expect(lacquer.backendSnapshots.first?.healthy == false)
            #expect(origin.requestCount(path: "/health") == 0)
            #expect(try httpGet(port: port, "/sick").status == 503)
        }
    }

    @Test("VCL backends: .ssl, .ssl_sni, .ssl_ca_file, .ssl_verify_host; port 443 by default")
    func vclBackend() async throws {
        let folder = try Self.certificates()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let origin = try await FixtureOrigin.start(tls: (folder + "/origin-chain.pem", folder + "/origin.key"))
        defer { Task { try? await origin.shutdown() } }
        let path = folder + "/site.vcl"
        try """
        vcl 4.1;
        backend secure {
            .host = "127.0.0.1";
            .port = "\(origin.port)";
            .ssl = true;
            .ssl_sni = "localhost";
            .ssl_ca_file = "\(folder)/ca.pem";
        }
        """.write(toFile: path, atomically: true, encoding: .utf8)
        let compiled = try VCLLoader.load(path: path, purgeACL: .loopback)
        let backend = try #require(VCLLoader.backendConfigurations(compiled).first)
        #expect(backend.tls == BackendTLS(serverName: "localhost", caFile: folder + "/ca.pem"))
        try await withLacquer(configure: {
            $0.vcl = compiled
            $0.backends = VCLLoader.backendConfigurations(compiled)
        }) { _, port, _ async throws in
            let response = try httpGet(port: port, "/vcl")
            #expect(response.status == 200 && response.bodyString == "ok /vcl\n")
        }
        try "vcl 4.1;\nbackend b { .host = \"origin.test\"; .ssl = 1; .ssl_verify_host = false; }\n".write(
            toFile: path, atomically: true, encoding: .utf8)
        let defaults = try #require(VCLLoader.backendConfigurations(try VCLLoader.load(path: path, purgeACL: .loopback)).first)
        #expect(defaults.port == 443 && defaults.tls?.verifyHost == false && defaults.tls?.verifyPeer == true)
        #expect(defaults.authority == "origin.test")
        try "vcl 4.1;\nbackend b { .host = \"o\"; .ssl = \"yes\"; }\n".write(toFile: path, atomically: true, encoding: .utf8)
        #expect { _ = try VCLLoader.load(path: path, purgeACL: .loopback) } throws: { "\($0)".contains("expected true or false for .ssl") }
    }

    @Test("URLs: https:// defaults to port 443 and verification; a missing CA file stops start-up naming it")
    func urlsAndStartup() async throws {
        let https = try #require(BackendConfiguration.parse(url: "https://origin.example", name: "b"))
        #expect(https.port == 443 && https.tls == BackendTLS() && https.authority == "origin.example")
        let custom = try #require(BackendConfiguration.parse(url: "HTTPS://origin.example:8443/", name: "b"))
        #expect(custom.port == 8443 && custom.authority == "origin.example:8443")
        #expect(BackendConfiguration.parse(url: "http://origin.example", name: "b")?.tls == nil)
        #expect(BackendConfiguration.parse(url: "ftp://origin.example", name: "b") == nil)
        do {
            _ = try await withLacquer(configure: { $0.backends[0].tls = BackendTLS(caFile: "/nonexistent/ca.pem") }) { _, _, _ in
                Issue.record("started with a missing CA file")
            }
        } catch {
            #expect("\(error)" == "backend origin: backend CA file /nonexistent/ca.pem: no such file")
        }
    }
}
