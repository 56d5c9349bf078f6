#if canImport(Glibc)
import Glibc
#endif

/// One client request as the access log records it: what was asked, what was answered, how
/// long it took and where it came from. Built on the connection's event loop from values the
/// connection already holds; formatted later, off the event loops (`AccessLog`).
public struct AccessRecord: Sendable {
    /// When the request head arrived (seconds since the Unix epoch, the server's clock).
    public var time: Double
    public var client: String
    /// "-" for a request the parser refused before it had a method.
    public var method: String
    public var target: String
    /// `HTTP/1.1`, `HTTP/1.0`.
    public var proto: String
    public var status: Int = 0
    /// Body bytes written to the client (headers excluded, as NCSA's `%b`).
    public var bytes: Int = 0
    /// The `X-Cache-Status` the response carried ("-" when it had none, e.g. a refusal).
    public var cache: String = "-"
    /// Seconds from the request head to the response head (-1: no head was written).
    public var timeToFirstByte: Double = -1
    /// Seconds from the request head to the end of the response (or the connection's end).
    public var duration: Double = 0
    public var backend: String?
    /// The transaction id (`X-Lacquer-Xid` to the origin); nil when no flow ran.
    public var xid: UInt64?
    public var host: String?
    public var referer: String?
    public var userAgent: String?
    /// Set when the response did not complete (the client left, or the connection was cut).
    public var incomplete = false

    public init(time: Double, client: String, method: String, target: String, proto: String) {
        self.time = time
        self.client = client
        self.method = method
        self.target = target
        self.proto = proto
    }

    /// The target's path, without the query (`%U`).
    var path: String {
        guard let query = self.target.firstIndex(of: "?") else { return self.target }
        return String(self.target[..<query])
    }

    /// The query with its `?` (`%q`), or "" (as varnishncsa).
    var query: String {
        guard let query = self.target.firstIndex(of: "?") else { return "" }
        return String(self.target[query...])
    }
}

/// Text helpers for log lines: no Foundation formatters on the writer's path.
enum LogText {
    /// `value` with `digits` decimals (e.g. 0.000123).
    static func fixed(_ value: Double, digits: Int) -> String {
        guard value.isFinite else { return "-" }
        var scale = 1.0
        for _ in 0..<digits { scale *= 10 }
        let negative = value < 0
        let scaled = Int64((abs(value) * scale).rounded())
        let whole = scaled / Int64(scale)
        var fraction = String(scaled % Int64(scale))
        if fraction.count < digits { fraction = String(repeating: "0", count: digits - fraction.count) + fraction }
        return (negative ? "-" : "") + String(whole) + (digits > 0 ? "." + fraction : "")
    }

    private static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    private static func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }

    private static func utc(_ time: Double) -> tm {
        var seconds = time_t(time.rounded(.down))
        var parts = tm()
        gmtime_r(&seconds, &parts)
        return parts
    }

    /// NCSA common log time, `[02/Dec/2026:20:50:01 +0000]` (UTC).
    static func clfTime(_ time: Double) -> String {
        let t = Self.utc(time)
        return "[\(Self.two(t.tm_mday))/\(Self.months[Int(t.tm_mon)])/\(t.tm_year + 1900):\(Self.two(t.tm_hour)):\(Self.two(t.tm_min)):\(Self.two(t.tm_sec)) +0000]"
    }

    /// RFC 3339 UTC with milliseconds, `2026-12-02T20:50:01.123Z`.
    static func isoTime(_ time: Double) -> String {
        let t = Self.utc(time)
        var millis = String(Int((time - time.rounded(.down)) * 1000))
        while millis.count < 3 { millis = "0" + millis }
        return "\(t.tm_year + 1900)-\(Self.two(t.tm_mon + 1))-\(Self.two(t.tm_mday))T\(Self.two(t.tm_hour)):\(Self.two(t.tm_min)):\(Self.two(t.tm_sec)).\(millis)Z"
    }
}
