import FixtureOrigin
import Foundation
import LacquerTesting
import NIOCore
import Testing

@testable import LacquerServer

/// TLS termination (`--listen-tls`), tried with the clients users have: curl and openssl's
/// s_client, against certificates the test makes with the openssl command line.
@Suite("TLS termination", .serialized, .timeLimit(.minutes(3)))
struct TLSTests {
    /// A folder with an RSA certificate for a.test/localhost, an ECDSA one for b.test and
    /// *.wild.test, and one signed by a test CA (served with its chain) for c.test.
    static func certificates() throws -> (folder: String, settings: TLSSettings) {
        let folder = try makeTemporaryDirectory("lacquer-tls")
        let maker = TestCertificates(folder: folder)
        let rsa = try maker.make("rsa", dnsNames: ["a.test", "localhost"])
        let ec = try maker.make("ec", dnsNames: ["b.test", "*.wild.test"], key: .ecdsa)
        try maker.makeCA("ca")
        try maker.make("chained", dnsNames: ["c.test"], ca: "ca")
        let settings = TLSSettings(certificates: [
            TLSCertificatePair(certificatePath: rsa.certificate, keyPath: rsa.key),
            TLSCertificatePair(certificatePath: ec.certificate, keyPath: ec.key),
            TLSCertificatePair(certificatePath: folder + "/chained-chain.pem", keyPath: folder + "/chained.key"),
        ])
        return (folder, settings)
    }

    /// Lacquer with one TLS listener (first) and one plain listener with h2c (second).
    static func withTLSLacquer<T>(
        configure: (inout ServerConfiguration) -> Void = { _ in },
        _ body: (_ lacquer: LacquerServer, _ tlsPort: Int, _ plainPort: Int, _ origin: FixtureOrigin, _ folder: String) async throws -> T
    ) async throws -> T {
        let (folder, settings) = try Self.certificates()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        return try await withLacquer(configure: {
            $0.listen = [
                HostAndPort(host: "127.0.0.1", port: 0, tls: true), HostAndPort(host: "127.0.0.1", port: 0, http2PriorKnowledge: true),
            ]
            $0.tls = settings
            configure(&$0)
        }) { lacquer, tlsPort, origin in
            let plainPort = try #require(lacquer.listeningAddresses.last?.port)
            return try await body(lacquer, tlsPort, plainPort, origin, folder)
        }
    }

    /// `curl -D -` output: the status line's code, the header fields (names lowercased) and the body.
    struct CurlResponse {
        var version: String
        var status: Int
        var headers: [(String, String)]
        var body: String
        func header(_ name: String) -> String? { self.headers.last { $0.0 == name.lowercased() }?.1 }
    }

    static func curl(_ arguments: [String]) throws -> [CurlResponse] {
        let outcome = try ExternalTool.run("curl", ["-s", "-S", "-D", "-", "--max-time", "10"] + arguments)
        #expect(outcome.status == 0, "curl \(arguments): \(outcome.errors)")
        return Self.parseCurl(outcome.output)
    }

    /// Splits what `curl -D -` printed into responses (for several URLs, one after another).
    static func parseCurl(_ text: String) -> [CurlResponse] {
        var responses: [CurlResponse] = []
        var rest = Substring(text)
        while let start = rest.range(of: "HTTP/") {
            rest = rest[start.lowerBound...]
            guard let headEnd = rest.range(of: "\r\n\r\n") else { break }
            let lines = rest[..<headEnd.lowerBound].components(separatedBy: "\r\n")
            let statusParts = lines[0].split(separator: " ")
            var headers: [(String, String)] = []
            for line in lines.dropFirst() {
                guard let colon = line.firstIndex(of: ":") else { continue }
                headers.append((line[..<colon].lowercased(), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)))
            }
            rest = rest[headEnd.upperBound...]
            let length = headers.last { $0.0 == "content-length" }.flatMap { Int($0.1) } ?? 0
            let bodyEnd = rest.utf8.index(rest.startIndex, offsetBy: min(length, rest.utf8.count))
            let body = String(rest[..<bodyEnd])
            rest = rest[bodyEnd...]
            responses.append(
                CurlResponse(
                    version: String(statusParts.first ?? ""), status: statusParts.count > 1 ? Int(statusParts[1]) ?? 0 : 0,
                    headers: headers, body: body))
        }
        return responses
    }

    /// `openssl s_client` against the TLS port; returns what it printed.
    static func sClient(_ port: Int, _ arguments: [String]) throws -> String {
        let outcome = try ExternalTool.run(
            "openssl", ["s_client", "-connect", "127.0.0.1:\(port)"] + arguments, input: "", timeout: 10)
        return outcome.output + outcome.errors
    }

    static func subject(_ text: String) -> String? {
        text.split(separator: "\n").first { $0.hasPrefix("subject=") }.map { String($0.dropFirst("subject=".count)) }
    }

    @Test("HTTP/1.1 over TLS: a miss then a hit, X-Forwarded-Proto https to the origin, one cache key for TLS and plain")
    func http1OverTLS() async throws {
        try await Self.withTLSLacquer { lacquer, tlsPort, plainPort, origin, _ in
            let url = "https://localhost:\(tlsPort)/t?cc=max-age%3D60"
            let first = try #require(try Self.curl(["-k", "--http1.1", url]).first)
            #expect(first.version == "HTTP/1.1" && first.status == 200)
            #expect(first.header("x-cache-status") == "MISS")
            let second = try #require(try Self.curl(["-k", "--http1.1", url]).first)
            #expect(second.header("x-cache-status") == "HIT")
            #expect(second.body == "ok /t\n")
            let seen = try #require(origin.requests(path: "/t").first)
            #expect(seen.headers.first { $0.name.lowercased() == "x-forwarded-proto" }?.value == "https")
            // The cache key does not change with the protocol: the same Host over plain HTTP hits.
            let plain = try httpGet(port: plainPort, "/t?cc=max-age%3D60", headers: [("Host", "localhost:\(tlsPort)")])
            #expect(plain.header("X-Cache-Status") == "HIT")
            #expect(origin.requestCount(path: "/t") == 1)
            #expect(lacquer.counters[.tlsHandshakes] == 2)
            let echo = try #require(try Self.curl(["-k", "--http1.1", "https://localhost:\(tlsPort)/echo"]).first)
            #expect(echo.body.lowercased().contains("x-forwarded-proto: https"))
            let plainEcho = try httpGet(port: plainPort, "/echo")
            #expect(plainEcho.bodyString.lowercased().contains("x-forwarded-proto: http\n"))
        }
    }

    @Test("SNI picks the certificate: exact names, a wildcard one label deep, the chain of a CA-signed one; no SNI or an unknown name gets the first")
    func sniChoosesCertificate() async throws {
        try await Self.withTLSLacquer { _, tlsPort, _, _, folder in
            for (name, subject) in [
                ("a.test", "CN = a.test"), ("b.test", "CN = b.test"), ("x.wild.test", "CN = b.test"), ("c.test", "CN = c.test"),
                ("unknown.test", "CN = a.test"), ("deep.x.wild.test", "CN = a.test"),
            ] {
                let text = try Self.sClient(tlsPort, ["-servername", name])
                #expect(Self.subject(text) == subject, "\(name): \(text.prefix(400))")
            }
            #expect(Self.subject(try Self.sClient(tlsPort, ["-noservername"])) == "CN = a.test")
            // The CA-signed certificate verifies against the CA, so its chain was sent.
            let verified = try Self.sClient(tlsPort, ["-servername", "c.test", "-CAfile", folder + "/ca.pem", "-verify_return_error"])
            #expect(verified.contains("Verify return code: 0 (ok)"), "\(verified.prefix(600))")
            // curl checks the name and the chain the same way.
            let response = try #require(
                try Self.curl(["--cacert", folder + "/ca.pem", "--resolve", "c.test:\(tlsPort):127.0.0.1", "https://c.test:\(tlsPort)/v"]).first)
            #expect(response.status == 200)
        }
    }

    @Test("TLS 1.2 and 1.3 only, with forward-secret AEAD suites; ALPN offers h2 then http/1.1")
    func versionsAndALPN() async throws {
        try await Self.withTLSLacquer { lacquer, tlsPort, _, _, _ in
            let twelve = try Self.sClient(tlsPort, ["-tls1_2"])
            #expect(twelve.contains("Protocol  : TLSv1.2") || twelve.contains("New, TLSv1.2"), "\(twelve.prefix(600))")
            #expect(twelve.contains("ECDHE"), "\(twelve.prefix(600))")
            let thirteen = try Self.sClient(tlsPort, ["-tls1_3"])
            #expect(thirteen.contains("TLSv1.3"))
            let before = lacquer.counters[.tlsHandshakeFailures]
            let eleven = try Self.sClient(tlsPort, ["-tls1_1"])
            #expect(!eleven.contains("Cipher is ECDHE"), "\(eleven.prefix(600))")
            #expect(eleven.contains("alert") || eleven.contains("no protocols available") || eleven.contains("Cipher is (NONE)"))
            let weak = try Self.sClient(tlsPort, ["-tls1_2", "-cipher", "AES128-SHA"])
            #expect(weak.contains("Cipher is (NONE)") || weak.contains("alert"), "\(weak.prefix(600))")
            #expect(try await eventually { lacquer.counters[.tlsHandshakeFailures] >= before + 1 })
            #expect(try Self.sClient(tlsPort, ["-alpn", "h2,http/1.1"]).contains("ALPN protocol: h2"))
            #expect(try Self.sClient(tlsPort, ["-alpn", "http/1.1"]).contains("ALPN protocol: http/1.1"))
        }
    }

    @Test("a returning client resumes its session (TLS 1.2 and 1.3) instead of a full handshake")
    func sessionResumption() async throws {
        try await Self.withTLSLacquer { lacquer, tlsPort, _, _, folder in
            for version in ["-tls1_2", "-tls1_3"] {
                let session = folder + "/session\(version)"
                // The request makes TLS 1.3 deliver its ticket before s_client leaves.
                let first = try ExternalTool.run(
                    "openssl", ["s_client", "-connect", "127.0.0.1:\(tlsPort)", version, "-sess_out", session, "-ign_eof"],
                    input: "GET /r HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n", timeout: 10)
                #expect(first.output.contains("New, TLSv1"), "\(first.output.prefix(400))")
                let second = try ExternalTool.run(
                    "openssl", ["s_client", "-connect", "127.0.0.1:\(tlsPort)", version, "-sess_in", session], timeout: 10)
                #expect(second.output.contains("Reused, TLSv1"), "\(version): \(second.output.prefix(600))")
            }
            // A client that drops the connection without a TLS close (Python's ssl does not send
            // close_notify on close) after a complete exchange.
            let script = """
                import socket, ssl
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
                s = context.wrap_socket(socket.create_connection(("127.0.0.1", \(tlsPort))))
                s.sendall(b"GET /py HTTP/1.1\\r\\nHost: a.test\\r\\n\\r\\n")
                print(s.recv(12).decode())
                s.close()
                """
            let python = try ExternalTool.run("python3", ["-c", script])
            #expect(python.output.hasPrefix("HTTP/1.1 200"), "\(python.output) \(python.errors)")
            try await Task.sleep(for: .milliseconds(200))
            // Clients that went away after their handshakes are not handshake failures.
            #expect(lacquer.counters[.tlsHandshakes] >= 5)
            #expect(lacquer.counters[.tlsHandshakeFailures] == 0)
        }
    }

    @Test("SIGHUP's reload swaps a changed certificate for new connections; a bad file keeps the old ones and names the file")
    func reloadCertificates() async throws {
        try await Self.withTLSLacquer { lacquer, tlsPort, _, _, folder in
            let maker = TestCertificates(folder: folder)
            #expect(Self.subject(try Self.sClient(tlsPort, ["-servername", "a.test"])) == "CN = a.test")
            // A renewed certificate for the same pair of files: other names, same paths.
            try maker.make("renewed", dnsNames: ["a.test", "renewed.test"])
            try FileManager.default.removeItem(atPath: folder + "/rsa.pem")
            try FileManager.default.removeItem(atPath: folder + "/rsa.key")
            try FileManager.default.copyItem(atPath: folder + "/renewed.pem", toPath: folder + "/rsa.pem")
            try FileManager.default.copyItem(atPath: folder + "/renewed.key", toPath: folder + "/rsa.key")
            // A slow response over a connection made before the reload finishes after it.
            async let slow = runBlocking { try Self.curl(["-k", "--http1.1", "https://localhost:\(tlsPort)/delay/1200"]) }
            try await Task.sleep(for: .milliseconds(400))
            let result = lacquer.reload()
            #expect(result.ok, "\(result.message)")
            #expect(result.message.contains("certificates reloaded (1 changed)"))
            let renewed = try String(contentsOfFile: folder + "/renewed.pem", encoding: .utf8)
                .split(separator: "\n").filter { !$0.hasPrefix("-----") }.joined(separator: "\n")
            let served = try Self.sClient(tlsPort, ["-servername", "a.test"])
            #expect(served.contains(renewed), "the renewed certificate is not the one served")
            let finished = try await slow
            #expect(finished.first?.status == 200 && finished.first?.body == "ok /delay/1200\n")
            // A key that does not belong to its certificate: refused, the old pair stays.
            try FileManager.default.removeItem(atPath: folder + "/rsa.key")
            try FileManager.default.copyItem(atPath: folder + "/ec.key", toPath: folder + "/rsa.key")
            let bad = lacquer.reload()
            #expect(!bad.ok)
            #expect(bad.message.contains(folder + "/rsa.key"), "\(bad.message)")
            #expect(lacquer.counters[.tlsReloadFailures] == 1)
            let still = try #require(try Self.curl(["-k", "--http1.1", "https://localhost:\(tlsPort)/after"]).first)
            #expect(still.status == 200)
            // A missing file is named too.
            try FileManager.default.removeItem(atPath: folder + "/rsa.pem")
            let missing = lacquer.reload()
            #expect(!missing.ok && missing.message.contains(folder + "/rsa.pem: no such file"), "\(missing.message)")
        }
    }

    @Test("VCL tells TLS from plain (import tls: is_tls, version, authority, alpn); it needs its import")
    func vclTLSFacts() async throws {
        let folder = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let path = folder + "/site.vcl"
        try """
        vcl 4.1;
        import tls;
        sub vcl_deliver {
            if (tls.is_tls()) {
                set resp.http.X-TLS = tls.version() + " " + tls.authority() + " " + tls.alpn();
            } else {
                set resp.http.X-TLS = "plain";
            }
        }
        """.write(toFile: path, atomically: true, encoding: .utf8)
        let compiled = try VCLLoader.load(path: path, purgeACL: .loopback)
        try await Self.withTLSLacquer(configure: { $0.vcl = compiled }) { _, tlsPort, plainPort, _, _ in
            let resolve = ["--resolve", "b.test:\(tlsPort):127.0.0.1"]
            let h2 = try #require(try Self.curl(["-k", "--http2", "--tlsv1.3"] + resolve + ["https://b.test:\(tlsPort)/x"]).first)
            #expect(h2.header("x-tls") == "TLSv1.3 b.test h2")
            let h1 = try #require(try Self.curl(["-k", "--http1.1", "--tlsv1.2", "--tls-max", "1.2"] + resolve + ["https://b.test:\(tlsPort)/x"]).first)
            #expect(h1.header("x-tls") == "TLSv1.2 b.test http/1.1")
            #expect(try httpGet(port: plainPort, "/x").header("X-TLS") == "plain")
        }
        try "vcl 4.1;\nsub vcl_recv { if (tls.is_tls()) { return (pass); } }\n".write(toFile: path, atomically: true, encoding: .utf8)
        #expect { _ = try VCLLoader.load(path: path, purgeACL: .loopback) } throws: { "\($0)".contains("needs 'import tls;'") }
    }

    @Test("start-up refuses a missing, non-PEM or mismatched certificate or key, naming the file")
    func startupErrors() async throws {
        let (folder, settings) = try Self.certificates()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        try "not a certificate\n".write(toFile: folder + "/junk.pem", atomically: true, encoding: .utf8)
        let rsa = settings.certificates[0]
        let ec = settings.certificates[1]
        let cases: [(TLSCertificatePair, String)] = [
            (TLSCertificatePair(certificatePath: folder + "/none.pem", keyPath: rsa.keyPath), folder + "/none.pem: no such file"),
            (TLSCertificatePair(certificatePath: folder + "/junk.pem", keyPath: rsa.keyPath), folder + "/junk.pem: not a PEM certificate"),
            (TLSCertificatePair(certificatePath: rsa.certificatePath, keyPath: folder + "/junk.pem"), folder + "/junk.pem: not an unencrypted PEM"),
            (TLSCertificatePair(certificatePath: rsa.certificatePath, keyPath: ec.keyPath), "\(ec.keyPath) does not belong to the certificate"),
        ]
        for (pair, expected) in cases {
            do {
                _ = try await withLacquer(configure: {
                    $0.listen = [HostAndPort(host: "127.0.0.1", port: 0, tls: true)]
                    $0.tls = TLSSettings(certificates: [pair])
                }) { _, _, _ in
                    Issue.record("started with \(pair)")
                }
            } catch {
                #expect("\(error)".contains(expected), "\(error)")
            }
        }
        do {
            _ = try await withLacquer(configure: { $0.listen = [HostAndPort(host: "127.0.0.1", port: 0, tls: true)] }) { _, _, _ in
                Issue.record("started a TLS listener without a certificate")
            }
        } catch {
            #expect("\(error)".contains("--tls-cert"), "\(error)")
        }
    }

    @Test("a client that connects and never finishes the handshake is closed after the header timeout")
    func handshakeTimeout() async throws {
        try await Self.withTLSLacquer(configure: { $0.clientTimeouts.header = .milliseconds(300) }) { lacquer, tlsPort, _, _, _ in
            let client = try RawHTTPClient(port: tlsPort)
            defer { client.close() }
            try client.send(bytes: [0x16, 0x03, 0x01])  // the start of a record, then nothing
            let started = Date()
            let rest = try client.readToEOF(max: 4096)
            #expect(rest.isEmpty || rest.count < 64)
            #expect(Date().timeIntervalSince(started) < 5)
            #expect(try await eventually { lacquer.counters[.tlsHandshakeTimeouts] == 1 })
        }
    }

    @Test("a TLS listener marked ,proxy takes the PROXY header before the handshake (curl --haproxy-protocol); without it the connection is refused")
    func proxyBeforeTLS() async throws {
        try await Self.withTLSLacquer(configure: {
            $0.listen[0] = HostAndPort(host: "127.0.0.1", port: 0, proxyProtocol: true, tls: true)
        }) { lacquer, tlsPort, _, _, _ in
            for version in ["--http1.1", "--http2"] {
                let echo = try #require(
                    try Self.curl(["-k", version, "--haproxy-protocol", "https://localhost:\(tlsPort)/echo"]).first)
                #expect(echo.status == 200, "\(version)")
                #expect(echo.body.lowercased().contains("x-forwarded-proto: https"))
            }
            let refused = try ExternalTool.run("curl", ["-s", "-k", "-o", "/dev/null", "--max-time", "5", "https://localhost:\(tlsPort)/"])
            #expect(refused.status != 0)
            #expect(try await eventually { lacquer.counters[.proxyHeaderRefused] >= 1 })
        }
    }

    @Test("plain HTTP/1.1 sent to the TLS port is refused without a response and without harm")
    func plainTextOnTLSPort() async throws {
        try await Self.withTLSLacquer { lacquer, tlsPort, plainPort, _, _ in
            let client = try RawHTTPClient(port: tlsPort)
            defer { client.close() }
            try client.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            _ = try? client.readToEOF(max: 4096)
            #expect(try await eventually { lacquer.counters[.tlsHandshakeFailures] >= 1 })
            #expect(try httpGet(port: plainPort, "/fine").status == 200)
        }
    }
}
