import ArgumentParser
import LacquerServer
import NIOCore

/// The health-probe flags: one probe, applied to every `--backend`.
struct ProbeOptions: ParsableArguments {
    @Option(name: .customLong("probe"), help: ArgumentHelp("Health-check every backend with GET PATH; backends that fail it get no traffic.", valueName: "PATH"))
    var path: String?

    @Option(name: .customLong("probe-interval"), help: ArgumentHelp("Seconds between probes (default 5).", valueName: "SECONDS"))
    var interval: Double?

    @Option(name: .customLong("probe-timeout"), help: ArgumentHelp("Seconds a probe may take to get its status line (default 2).", valueName: "SECONDS"))
    var timeout: Double?

    @Option(name: .customLong("probe-window"), help: ArgumentHelp("How many recent probes are remembered, 1-64 (default 8).", valueName: "N"))
    var window: Int?

    @Option(name: .customLong("probe-threshold"), help: ArgumentHelp("How many of them must succeed for a backend to be healthy (default 3).", valueName: "N"))
    var threshold: Int?

    /// The longest interval or timeout accepted (a day).
    static let maxSeconds = 86_400.0

    func validate() throws {
        guard let path = self.path else {
            let stray = [
                ("--probe-interval", self.interval != nil), ("--probe-timeout", self.timeout != nil),
                ("--probe-window", self.window != nil), ("--probe-threshold", self.threshold != nil),
            ].first { $0.1 }
            if let (flag, _) = stray {
                throw ValidationError("\(flag) needs --probe PATH (the path to health-check)")
            }
            return
        }
        if !path.hasPrefix("/") || path.utf8.contains(where: { $0 <= 0x20 || $0 == 0x7F }) {
            throw ValidationError("--probe '\(path)' is not a path (e.g. /health)")
        }
        if let interval = self.interval, !(interval > 0 && interval <= Self.maxSeconds) {
            throw ValidationError("--probe-interval must be a number of seconds > 0 (at most 86400)")
        }
        if let timeout = self.timeout, !(timeout > 0 && timeout <= Self.maxSeconds) {
            throw ValidationError("--probe-timeout must be a number of seconds > 0 (at most 86400)")
        }
        if let window = self.window, !(1...64).contains(window) {
            throw ValidationError("--probe-window must be between 1 and 64")
        }
        let window = self.window ?? ProbeConfiguration().window
        if let threshold = self.threshold, !(1...window).contains(threshold) {
            throw ValidationError("--probe-threshold must be between 1 and the probe window (\(window))")
        }
        if self.threshold == nil, ProbeConfiguration().threshold > window {
            throw ValidationError("--probe-window \(window) is below the default threshold 3: pass --probe-threshold too")
        }
        do {
            try self.configuration?.validate()
        } catch {
            throw ValidationError("--probe: \(error.description)")
        }
    }

    /// The probe the flags describe, nil without `--probe`.
    var configuration: ProbeConfiguration? {
        guard let path = self.path else { return nil }
        var probe = ProbeConfiguration(url: path)
        if let interval = self.interval { probe.interval = Self.amount(interval) }
        if let timeout = self.timeout { probe.timeout = Self.amount(timeout) }
        if let window = self.window { probe.window = window }
        if let threshold = self.threshold { probe.threshold = threshold }
        return probe
    }

    private static func amount(_ seconds: Double) -> TimeAmount {
        .nanoseconds(Int64((min(seconds, maxSeconds) * 1e9).rounded()))
    }
}
