/// The outcome of one health probe.
enum ProbeResult: Equatable, Sendable, CustomStringConvertible {
    case ok
    case failed(String)

    /// `ok` or `failed: REASON`, as `/stats` shows it.
    var description: String {
        switch self {
        case .ok: "ok"
        case .failed(let why): "failed: \(why)"
        }
    }
}

/// The last `window` probe results of one backend as bits (bit 0 = the latest), and the health
/// they add up to: healthy while at least `threshold` of them are good (Varnish's `happy` word).
/// Pure: the probe driver feeds it results, the director and `/stats` read it.
struct ProbeWindow: Equatable, Sendable {
    let window: Int
    let threshold: Int
    private(set) var bits: UInt64
    private(set) var isHealthy: Bool
    /// How many times the health flipped (healthy ↔ sick) since start-up.
    private(set) var changes = 0
    /// The latest result; nil before the first probe finished.
    private(set) var last: ProbeResult?

    init(window: Int, threshold: Int, initial: Int) {
        self.window = min(64, max(1, window))
        self.threshold = threshold
        let initialGood = min(self.window, max(0, initial))
        self.bits = initialGood == 64 ? .max : (UInt64(1) << UInt64(initialGood)) - 1
        self.isHealthy = initialGood >= threshold
    }

    init(_ configuration: ProbeConfiguration) {
        self.init(window: configuration.window, threshold: configuration.threshold, initial: configuration.initialGood)
    }

    private var mask: UInt64 {
        self.window == 64 ? .max : (UInt64(1) << UInt64(self.window)) - 1
    }

    /// Good results among the last `window`.
    var good: Int {
        (self.bits & self.mask).nonzeroBitCount
    }

    /// Adds one result; returns whether the health changed.
    @discardableResult
    mutating func record(_ result: ProbeResult) -> Bool {
        self.bits = ((self.bits << 1) | (result == .ok ? 1 : 0)) & self.mask
        self.last = result
        let healthy = self.good >= self.threshold
        guard healthy != self.isHealthy else { return false }
        self.isHealthy = healthy
        self.changes += 1
        return true
    }
}
