import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A clock that starts at the real time and moves only when a test says so, so expiry and
/// grace are tested without sleeping.
public final class TestClock: Sendable {
    private let offset = Mutex<Double>(0)

    public init() {}

    /// The current test time in seconds since the epoch.
    @Sendable public func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9 + self.offset.withLock { $0 }
    }

    /// Moves time forward by `seconds`.
    public func advance(_ seconds: Double) {
        self.offset.withLock { $0 += seconds }
    }
}
