import Foundation
import Testing

/// The health-probe flags of the `lacquer` binary.
@Suite("lacquer command line: probe flags", .serialized, .timeLimit(.minutes(2)))
struct CommandLineProbeTests {
    @Test(
        "a bad probe flag prints one clear line and the usage, and exits 64",
        arguments: [
            (["--probe", "health"], "--probe 'health' is not a path"),
            (["--probe", "/a b"], "--probe '/a b' is not a path"),
            (["--probe", "/health", "--probe-interval", "0"], "--probe-interval must be a number of seconds > 0"),
            (["--probe", "/health", "--probe-interval", "soon"], "--probe-interval"),
            (["--probe", "/health", "--probe-timeout=-1"], "--probe-timeout must be a number of seconds > 0"),
            (["--probe", "/health", "--probe-window", "65"], "--probe-window must be between 1 and 64"),
            (["--probe", "/health", "--probe-window", "0"], "--probe-window must be between 1 and 64"),
            (["--probe", "/health", "--probe-threshold", "9"], "--probe-threshold must be between 1 and the probe window (8)"),
            (["--probe", "/health", "--probe-window", "4", "--probe-threshold", "5"], "probe window (4)"),
            (["--probe", "/health", "--probe-window", "2"], "below the default threshold 3"),
            (["--probe-interval", "1"], "--probe-interval needs --probe PATH"),
            (["--probe-threshold", "2"], "--probe-threshold needs --probe PATH"),
        ])
    func badProbeFlag(arguments: [String], message: String) throws {
        let result = try CommandLineTests().run(arguments + ["--backend", "http://127.0.0.1:1"])
        #expect(result.status == 64)
        #expect(result.stderr.contains(message), "\(result.stderr)")
        #expect(result.stderr.contains("Usage: lacquer"), "\(result.stderr)")
        #expect(result.stderr.split(separator: "\n").first?.hasPrefix("Error:") == true, "\(result.stderr)")
    }

    @Test("--help documents the probe flags")
    func help() throws {
        let result = try CommandLineTests().run(["--help"])
        #expect(result.status == 0)
        for flag in ["--probe ", "--probe-interval", "--probe-timeout", "--probe-window", "--probe-threshold"] {
            #expect(result.stdout.contains(flag), "\(flag) missing from --help")
        }
    }
}
