import CachePolicy
import Synchronization

/// A latency histogram with fixed buckets (seconds), updated lock-free from any thread:
/// one relaxed atomic add for the bucket, one for the sum (in nanoseconds). Prometheus's
/// cumulative buckets, `_sum` and `_count` are computed when rendered.
public final class LatencyHistogram: Sendable {
    /// Upper bounds in seconds: 0.5 ms to 60 s.
    public static let bounds: [Double] = [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
    ]
    /// One slot per bound, then +Inf.
    private let buckets: InlineArray<17, Atomic<Int>>
    private let sumNanoseconds = Atomic<Int>(0)

    public init() {
        self.buckets = InlineArray { _ in Atomic<Int>(0) }
    }

    public func observe(seconds: Double) {
        let value = max(0, seconds)
        var index = Self.bounds.count
        for (position, bound) in Self.bounds.enumerated() where value <= bound {
            index = position
            break
        }
        self.buckets[index].wrappingAdd(1, ordering: .relaxed)
        self.sumNanoseconds.wrappingAdd(Int(min(value, 1e9) * 1e9), ordering: .relaxed)
    }

    /// Cumulative counts per bound (the last is +Inf, the total), and the sum in seconds.
    public func snapshot() -> (cumulative: [Int], sum: Double) {
        var running = 0
        var cumulative: [Int] = []
        cumulative.reserveCapacity(Self.bounds.count + 1)
        for index in 0...Self.bounds.count {
            running += self.buckets[index].load(ordering: .relaxed)
            cumulative.append(running)
        }
        return (cumulative, Double(self.sumNanoseconds.load(ordering: .relaxed)) / 1e9)
    }
}

/// Request durations by the `X-Cache-Status` the response carried (`none` for answers
/// without one: refusals and synthetic errors).
public final class RequestDurations: Sendable {
    public static let labels: [String] = XCacheStatus.allLabels + ["none"]
    private let histograms: [LatencyHistogram]

    public init() {
        self.histograms = Self.labels.map { _ in LatencyHistogram() }
    }

    func observe(cache: String?, seconds: Double) {
        let index = cache.flatMap { XCacheStatus(rawValue: $0) }.flatMap { XCacheStatus.allLabels.firstIndex(of: $0.rawValue) }
        self.histograms[index ?? (Self.labels.count - 1)].observe(seconds: seconds)
    }

    func observe(_ status: XCacheStatus, seconds: Double) {
        let index = XCacheStatus.allLabels.firstIndex(of: status.rawValue) ?? (Self.labels.count - 1)
        self.histograms[index].observe(seconds: seconds)
    }

    var all: [(label: String, histogram: LatencyHistogram)] {
        Array(zip(Self.labels, self.histograms))
    }
}

extension XCacheStatus {
    static let allLabels = ["HIT", "MISS", "EXPIRED", "STALE", "UPDATING", "REVALIDATED", "BYPASS"]
}

/// Prometheus text exposition (format 0.0.4): every family with `# HELP` and `# TYPE` before
/// its samples, counters named `_total`, label values escaped. `promtool check metrics`
/// accepts it (CI runs it).
struct PrometheusText {
    private(set) var text = ""
    private var declared: Set<String> = []

    enum Kind: String {
        case counter, gauge, histogram
    }

    /// Declares a family (once; later calls for the same name add nothing).
    mutating func family(_ name: String, _ kind: Kind, _ help: String) {
        guard self.declared.insert(name).inserted else { return }
        self.text += "# HELP \(name) \(Self.escapeHelp(help))\n# TYPE \(name) \(kind.rawValue)\n"
    }

    mutating func sample(_ name: String, _ labels: [(String, String)] = [], _ value: Double) {
        self.text += name
        if !labels.isEmpty {
            self.text += "{" + labels.map { "\($0.0)=\"\(Self.escapeLabel($0.1))\"" }.joined(separator: ",") + "}"
        }
        self.text += " " + Self.number(value) + "\n"
    }

    mutating func sample(_ name: String, _ labels: [(String, String)] = [], _ value: Int) {
        self.sample(name, labels, Double(value))
    }

    mutating func histogram(_ name: String, _ labels: [(String, String)], _ histogram: LatencyHistogram) {
        let (cumulative, sum) = histogram.snapshot()
        for (index, bound) in LatencyHistogram.bounds.enumerated() {
            self.sample(name + "_bucket", labels + [("le", Self.number(bound))], cumulative[index])
        }
        self.sample(name + "_bucket", labels + [("le", "+Inf")], cumulative[LatencyHistogram.bounds.count])
        self.sample(name + "_sum", labels, sum)
        self.sample(name + "_count", labels, cumulative[LatencyHistogram.bounds.count])
    }

    static func number(_ value: Double) -> String {
        if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        return String(value)
    }

    static func escapeLabel(_ text: String) -> String {
        text.replacing("\\", with: "\\\\").replacing("\"", with: "\\\"").replacing("\n", with: "\\n")
    }

    static func escapeHelp(_ text: String) -> String {
        text.replacing("\\", with: "\\\\").replacing("\n", with: "\\n")
    }
}
