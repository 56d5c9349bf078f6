/// The declarations of a compiled VCL program, as plain values the server builds its backend
/// pool, probes and directors from.

/// `backend NAME { ... }`. Timeouts are seconds; nil means "the server's default".
public struct VCLBackend: Sendable, Hashable {
    public var name: String
    public var host: String
    public var port: Int
    public var hostHeader: String?
    public var connectTimeout: Double?
    public var firstByteTimeout: Double?
    public var betweenBytesTimeout: Double?
    public var maxConnections: Int?
    public var probe: VCLProbe?
    /// `.ssl = true;`: the backend speaks HTTPS (Varnish Enterprise's attribute names).
    public var ssl = false
    /// `.ssl_sni`: the name sent by SNI and checked (default: `.host`).
    public var sslServerName: String?
    /// `.ssl_verify_peer`, `.ssl_verify_host`: certificate checks (on by default).
    public var sslVerifyPeer = true
    public var sslVerifyHost = true
    /// `.ssl_ca_file`: CAs to trust instead of the system's.
    public var sslCAFile: String?

    public init(name: String, host: String, port: Int = 80) {
        self.name = name
        self.host = host
        self.port = port
    }
}

/// `probe NAME { ... }` or an inline `.probe = { ... }`. Defaults are Varnish's.
public struct VCLProbe: Sendable, Hashable {
    /// nil for an inline probe.
    public var name: String?
    public var url: String = "/"
    /// A complete raw request (`.request = "GET / HTTP/1.1" "Host: x";` joined with CRLF and
    /// ending in an empty line), used instead of `url` when set.
    public var request: String?
    public var expectedResponse: Int = 200
    public var interval: Double = 5
    public var timeout: Double = 2
    public var window: Int = 8
    public var threshold: Int = 3
    public var initial: Int?

    public init(name: String?) { self.name = name }
}

/// A director declared in vcl_init: `new NAME = directors.KIND(); NAME.add_backend(b[, weight]);`
public struct VCLDirector: Sendable, Hashable {
    public enum Kind: String, Sendable, Hashable, CaseIterable {
        /// Each healthy member in turn.
        case roundRobin = "round_robin"
        /// A healthy member at random, in proportion to its weight.
        case random
        /// A member chosen by hashing the key given to `.backend(key)`, weighted; stable while health holds.
        case hash
        /// The first healthy member in the order added.
        case fallback
    }

    public struct Member: Sendable, Hashable {
        public var backend: String
        public var weight: Double
    }

    public var name: String
    public var kind: Kind
    public var members: [Member]
}
