#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A seeded generator (SplitMix64) for randomised tests: a failure names its seed and replays
/// exactly with it.
public struct SeededRandom: RandomNumberGenerator, Sendable {
    public let seed: UInt64
    private var state: UInt64

    public init(seed: UInt64) {
        self.seed = seed
        self.state = seed
    }

    public mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A seed for a run: `LACQUER_SEED` from the environment when set (to replay a failure),
    /// else `fallback`.
    public static func seed(fallback: UInt64) -> UInt64 {
        if let text = getenv("LACQUER_SEED").map({ String(cString: $0) }), let value = UInt64(text) {
            return value
        }
        return fallback
    }
}

/// How long a seeded fuzz test runs: its default in `swift test`, or `LACQUER_FUZZ_ITERATIONS`
/// for a long run (`Tests/fuzz.sh`).
public enum FuzzBudget {
    public static func iterations(default fallback: Int) -> Int {
        if let text = getenv("LACQUER_FUZZ_ITERATIONS").map({ String(cString: $0) }), let value = Int(text), value > 0 {
            return value
        }
        return fallback
    }
}
