import Foundation
import LacquerTesting
import NIOCore
import Testing

@testable import LacquerServer

/// The pure parts of health probing: the bit window, the settings' validation, the probe
/// request and the status-line check. No sockets, no sleeps.
@Suite("Probe window and settings")
struct ProbeWindowTests {
    @Test("starts with `initial` good results: sick with the default threshold - 1, healthy at threshold")
    func initialState() {
        #expect(!ProbeWindow(window: 8, threshold: 3, initial: 2).isHealthy)
        #expect(ProbeWindow(window: 8, threshold: 3, initial: 3).isHealthy)
        #expect(ProbeWindow(window: 8, threshold: 3, initial: 2).good == 2)
        #expect(ProbeWindow(window: 64, threshold: 64, initial: 64).good == 64)
        #expect(ProbeWindow(ProbeConfiguration()).good == 2)
    }

    @Test("healthy while threshold of the last window results are good; each flip counts as a change")
    func slidingWindow() {
        var window = ProbeWindow(window: 3, threshold: 2, initial: 1)
        var changed = window.record(.ok)  // 011 → 2 good: healthy
        #expect(changed && window.isHealthy)
        changed = window.record(.failed("x"))  // 110 → still 2 good
        #expect(!changed && window.isHealthy)
        changed = window.record(.failed("y"))  // 100 → 1 good: sick
        #expect(changed && !window.isHealthy)
        #expect(window.last == .failed("y"))
        changed = window.record(.ok)  // 001 → 1
        #expect(!changed && !window.isHealthy)
        changed = window.record(.ok)  // 011 → 2
        #expect(changed && window.isHealthy)
        #expect(window.changes == 3)
        #expect(window.good == 2)
    }

    @Test("results older than the window are forgotten")
    func forgetsOld() {
        var window = ProbeWindow(window: 4, threshold: 4, initial: 0)
        for _ in 0..<10 { window.record(.ok) }
        #expect(window.good == 4)
        window.record(.failed("timeout"))
        #expect(window.good == 3)
        #expect(!window.isHealthy)
        #expect(window.last?.description == "failed: timeout")
    }

    static func probe(_ change: (inout ProbeConfiguration) -> Void) -> ProbeConfiguration {
        var probe = ProbeConfiguration()
        change(&probe)
        return probe
    }

    @Test(
        "invalid settings are rejected with a message naming the value",
        arguments: [
            (probe { $0.url = "health" }, "probe URL 'health'"),
            (probe { $0.url = "/a b" }, "probe URL '/a b'"),
            (probe { $0.window = 65 }, "probe window 65 must be between 1 and 64"),
            (probe { $0.window = 0 }, "probe window 0"),
            (probe { $0.threshold = 9 }, "probe threshold 9 must be between 1 and the window (8)"),
            (probe { $0.threshold = 0 }, "probe threshold 0"),
            (probe { $0.initial = 9 }, "probe initial 9"),
            (probe { $0.interval = .zero }, "probe interval must be more than 0"),
            (probe { $0.timeout = .milliseconds(-1) }, "probe timeout must be more than 0"),
            (probe { $0.expectedResponse = 42 }, "expected response 42"),
            (probe { $0.request = ["GET / HTTP/1.1\r\nX: y"] }, "control character"),
            (probe { $0.request = [] }, "no request line"),
        ])
    func invalid(probe: ProbeConfiguration, message: String) {
        #expect {
            try probe.validate()
        } throws: { error in
            (error as? ProbeConfigurationError)?.description.contains(message) == true
        }
    }

    @Test("the defaults are Varnish's and valid")
    func defaults() throws {
        let probe = ProbeConfiguration()
        try probe.validate()
        #expect(probe.url == "/")
        #expect(probe.expectedResponse == 200)
        #expect(probe.interval == .seconds(5))
        #expect(probe.timeout == .seconds(2))
        #expect(probe.window == 8 && probe.threshold == 3 && probe.initialGood == 2)
    }

    @Test("the probe request: GET URL with the backend's Host and Connection: close, or the raw lines")
    func request() {
        let backend = BackendConfiguration(name: "b", host: "origin.test", port: 8080)
        let text = HealthProbe.request(for: ProbeConfiguration(url: "/health"), backend: backend)
        #expect(text.hasPrefix("GET /health HTTP/1.1\r\nHost: origin.test:8080\r\nConnection: close\r\n"))
        #expect(text.hasSuffix("\r\n\r\n"))
        let plain = HealthProbe.request(for: ProbeConfiguration(), backend: BackendConfiguration(name: "b", host: "::1", port: 80))
        #expect(plain.contains("Host: [::1]\r\n"))
        var named = backend
        named.hostHeader = "www.example.com"
        #expect(HealthProbe.request(for: ProbeConfiguration(), backend: named).contains("Host: www.example.com\r\n"))
        var raw = ProbeConfiguration()
        raw.request = ["HEAD /ping HTTP/1.1", "Host: example.com", "Connection: close"]
        #expect(
            HealthProbe.request(for: raw, backend: backend)
                == "HEAD /ping HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n")
    }

    @Test(
        "the status line decides",
        arguments: [
            ("HTTP/1.1 200 OK\r", ProbeResult.ok),
            ("HTTP/1.0 200\r", .ok),
            ("HTTP/1.1 503 Service Unavailable\r", .failed("status 503, expected 200")),
            ("SSH-2.0-OpenSSH_9.6\r", .failed("not an HTTP/1 status line")),
            ("HTTP/1.1 2000 OK", .failed("not an HTTP/1 status line")),
        ])
    func statusLine(line: String, expected: ProbeResult) {
        #expect(ProbeResponseHandler.evaluate(statusLine: Array(line.utf8)[...], expected: 200) == expected)
    }

    @Test("a VCL backend's probe becomes the backend's probe settings")
    func fromVCL() throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/probe.vcl"
        try """
        vcl 4.1;
        probe healthz { .url = "/healthz"; .interval = 0.5s; .timeout = 250ms; .window = 5; .threshold = 4; .initial = 4; .expected_response = 204; }
        backend web { .host = "127.0.0.1"; .port = "8080"; .probe = healthz; }
        backend raw { .host = "127.0.0.1"; .port = "8081"; .probe = { .request = "HEAD / HTTP/1.1" "Host: x" "Connection: close"; } }
        """.write(toFile: path, atomically: true, encoding: .utf8)
        let vcl = try VCLLoader.load(path: path, purgeACL: .loopback)
        let backends = VCLLoader.backendConfigurations(vcl)
        let web = try #require(backends.first { $0.name == "web" }?.probe)
        #expect(web.url == "/healthz")
        #expect(web.interval == .milliseconds(500))
        #expect(web.timeout == .milliseconds(250))
        #expect(web.window == 5 && web.threshold == 4 && web.initialGood == 4)
        #expect(web.expectedResponse == 204)
        try web.validate()
        let raw = try #require(backends.first { $0.name == "raw" }?.probe)
        #expect(raw.request == ["HEAD / HTTP/1.1", "Host: x", "Connection: close"])
    }
}
