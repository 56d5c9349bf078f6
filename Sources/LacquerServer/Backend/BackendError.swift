/// Why a backend exchange failed; the flow maps each kind to a status (502/504) and a counter.
public enum BackendError: Error, Equatable, Sendable, CustomStringConvertible {
    case connectFailed(String)
    case connectTimeout
    case queueTimeout
    case firstByteTimeout
    case betweenBytesTimeout
    /// The connection closed before a complete response head arrived.
    case closedBeforeHead
    /// The connection closed (or was reset) after the head, in the middle of the body.
    case closedMidBody
    /// The response was not valid HTTP/1.
    case framing(String)
    /// The response's header section exceeded the limits (HARDENING.md §3: 502, not stored).
    case headersTooLarge
    case noBackend
    /// Every backend has a probe that currently says it is sick (Varnish's "no healthy backend").
    case allBackendsSick

    /// A short token for `Cache-Status`'s detail and the access log (RFC 9211 §2.8 leaves its
    /// form to the cache): never library text.
    public var token: String {
        switch self {
        case .connectFailed(let why): Synthetic.sanitizeDetail(why)
        case .connectTimeout: "connect-timeout"
        case .queueTimeout: "queue-timeout"
        case .firstByteTimeout: "first-byte-timeout"
        case .betweenBytesTimeout: "between-bytes-timeout"
        case .closedBeforeHead: "closed-before-response"
        case .closedMidBody: "closed-mid-body"
        case .framing: "invalid-response"
        case .headersTooLarge: "response-headers-too-large"
        case .noBackend: "no-backend"
        case .allBackendsSick: "no-healthy-backend"
        }
    }

    public var description: String {
        switch self {
        case .connectFailed(let why): "connection to backend failed: \(why)"
        case .connectTimeout: "connection to backend timed out"
        case .queueTimeout: "no backend connection became free in time"
        case .firstByteTimeout: "backend did not answer in time (first byte timeout)"
        case .betweenBytesTimeout: "backend stalled mid-response (between bytes timeout)"
        case .closedBeforeHead: "backend closed the connection without a response"
        case .closedMidBody: "backend closed the connection mid-body"
        case .framing(let why): "invalid response from backend: \(why)"
        case .headersTooLarge: "backend response headers exceed the limits"
        case .noBackend: "no backend is configured"
        case .allBackendsSick: "no healthy backend (the health probes of every backend that could serve this request are failing)"
        }
    }

    /// Timeouts answer 504, everything else 502 (nginx's mapping).
    var status: Int {
        switch self {
        case .connectTimeout, .queueTimeout, .firstByteTimeout, .betweenBytesTimeout: 504
        case .noBackend, .allBackendsSick: 503
        default: 502
        }
    }
}
