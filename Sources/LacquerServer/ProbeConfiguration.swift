import NIOCore

/// How Lacquer checks that a backend is up (Varnish's `.probe`).
///
/// Every `interval` a request goes to the backend over a fresh connection (`Connection: close`);
/// it is good when a status line with `expectedResponse` arrives within `timeout`. The last
/// `window` results are kept; the backend is healthy while at least `threshold` of them are good.
/// At start-up `initial` of them count as good (by default `threshold - 1`, so a backend is sick
/// until its first probe succeeds, as in Varnish). Sick backends get no client traffic.
public struct ProbeConfiguration: Sendable, Hashable {
    /// The path probed with `GET URL HTTP/1.1` (ignored when `request` is set).
    public var url: String = "/"
    /// Raw request lines sent instead of the GET for `url`, e.g. `["HEAD /ping HTTP/1.1",
    /// "Host: example.com", "Connection: close"]`; joined with CRLF and ended by an empty line.
    public var request: [String]?
    /// The status a healthy backend answers with.
    public var expectedResponse: Int = 200
    /// Time between the starts of two probes (a probe that runs late delays the next one).
    public var interval: TimeAmount = .seconds(5)
    /// How long a probe may take, from connect to the status line.
    public var timeout: TimeAmount = .seconds(2)
    /// How many of the latest probes are remembered (1…64).
    public var window: Int = 8
    /// How many of those must be good for the backend to be healthy (1…window).
    public var threshold: Int = 3
    /// How many probes count as good at start-up; nil means `threshold - 1`.
    public var initial: Int?

    public init(url: String = "/") {
        self.url = url
    }

    /// `initial`, or its default.
    public var initialGood: Int {
        self.initial ?? max(0, self.threshold - 1)
    }

    /// Checks the values; the error says which one is wrong and what is allowed.
    public func validate() throws(ProbeConfigurationError) {
        if self.request == nil {
            guard self.url.hasPrefix("/"), !Self.hasUnsafeBytes(self.url, allowSpace: false) else {
                throw .invalidURL(self.url)
            }
        } else if let lines = self.request {
            guard let first = lines.first, !first.isEmpty else { throw .invalidRequest("the request has no request line") }
            for line in lines where Self.hasUnsafeBytes(line, allowSpace: true) {
                throw .invalidRequest("line '\(line)' contains a control character")
            }
        }
        guard (100...999).contains(self.expectedResponse) else { throw .invalidExpectedResponse(self.expectedResponse) }
        guard self.interval > .zero else { throw .invalidInterval }
        guard self.timeout > .zero else { throw .invalidTimeout }
        guard (1...64).contains(self.window) else { throw .invalidWindow(self.window) }
        guard (1...self.window).contains(self.threshold) else {
            throw .invalidThreshold(threshold: self.threshold, window: self.window)
        }
        if let initial = self.initial, !(0...self.window).contains(initial) {
            throw .invalidInitial(initial: initial, window: self.window)
        }
    }

    private static func hasUnsafeBytes(_ text: String, allowSpace: Bool) -> Bool {
        text.utf8.contains { $0 < 0x20 || $0 == 0x7F || (!allowSpace && $0 == 0x20) }
    }
}

/// A probe setting out of range.
public enum ProbeConfigurationError: Error, Equatable, Sendable, CustomStringConvertible {
    case invalidURL(String)
    case invalidRequest(String)
    case invalidExpectedResponse(Int)
    case invalidInterval
    case invalidTimeout
    case invalidWindow(Int)
    case invalidThreshold(threshold: Int, window: Int)
    case invalidInitial(initial: Int, window: Int)

    public var description: String {
        switch self {
        case .invalidURL(let url): "probe URL '\(url)' must be a path starting with '/', without spaces or control characters"
        case .invalidRequest(let why): "probe request: \(why)"
        case .invalidExpectedResponse(let status): "probe expected response \(status) is not a status code (100-999)"
        case .invalidInterval: "probe interval must be more than 0 seconds"
        case .invalidTimeout: "probe timeout must be more than 0 seconds"
        case .invalidWindow(let window): "probe window \(window) must be between 1 and 64"
        case .invalidThreshold(let threshold, let window):
            "probe threshold \(threshold) must be between 1 and the window (\(window))"
        case .invalidInitial(let initial, let window): "probe initial \(initial) must be between 0 and the window (\(window))"
        }
    }
}
