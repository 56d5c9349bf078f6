import CachePolicy
import CacheStore
import NIOCore
import NIOHTTP1
import VCL

/// Everything a running Lacquer needs to know, with the safe defaults of HARDENING.md.
///
/// The command line (and later the VCL-like config) fills this in; tests build it directly.
/// Every number here is a default an operator can change.
public struct ServerConfiguration: Sendable {
    /// Where clients connect. Port 0 means any free port; `LacquerServer.boundAddresses` tells which.
    public var listen: [HostAndPort] = [HostAndPort(host: "127.0.0.1", port: 6081)]
    /// The admin listener (`/health`, `/stats`, `/metrics`); nil disables it.
    public var admin: HostAndPort? = HostAndPort(host: "127.0.0.1", port: 6082)
    /// Origins, used round-robin (skipping those whose probe says they are sick).
    public var backends: [BackendConfiguration] = []
    /// The configuration file (`--config`), reloaded by SIGHUP and `POST /reload`.
    public var vclPath: String?
    /// The compiled configuration; nil runs builtin.vcl alone (compiled at start-up with `purgeACL`).
    public var vcl: CompiledVCL?
    /// Memory tier budget in bytes (head + body + bookkeeping).
    public var memoryBytes: Int = 256 << 20
    /// Largest object the memory tier admits.
    public var memoryMaxObjectBytes: Int = 1 << 20
    /// Disk tier folder.
    public var storageDirectory: String = "./lacquer-cache"
    /// Disk tier budget in bytes; 0 disables the disk tier (memory only).
    public var diskBytes: Int64 = 1 << 30
    /// Largest body a fetch buffers to hand to the disk tier (bigger ones stream through unstored).
    public var diskMaxBufferedObjectBytes: Int = 32 << 20
    /// Body bytes queued for the disk writer at most; beyond it writes are dropped and counted.
    public var diskMaxQueuedBytes: Int = 64 << 20
    /// Seconds between expiry sweeps and disk evictions.
    public var maintenanceInterval: Double = 30
    /// The response fields that list surrogate keys (cache tags); default xkey, Surrogate-Key
    /// and Cache-Tag.
    public var surrogateKeyHeaders: [String] = SurrogateKeyFields.standard.names
    /// Request fields read as weighted lists when they form a variant key (`VaryKey.normaliseList`):
    /// lowercased names (`--vary-normalise`).
    public var varyListFields: Set<String> = VaryKey.standardListFields
    /// Objects larger than this (known from a 200's Content-Length) are stored as slices of
    /// `sliceSize` bytes, each its own object, and served from the slices present, fetching only
    /// the missing ones with Range (nginx's slice module). 0 turns slicing off.
    public var sliceThreshold: Int = 8 << 20
    /// The size of one slice (`--slice-size`).
    public var sliceSize: Int = 1 << 20
    /// Answer requests as if they carried no Cache-Control or Pragma (`--ignore-request-cache-control`).
    public var ignoreRequestCacheControl = false
    /// Whether clients get the surrogate key fields (by default they are removed, as Fastly does).
    public var showSurrogateKeys = false
    var surrogateKeyFields: SurrogateKeyFields {
        SurrogateKeyFields(names: self.surrogateKeyHeaders, hidden: !self.showSurrogateKeys)
    }
    /// The least grace a soft-purged object gets: it is served stale (UPDATING) this long while
    /// one fetch refreshes it (Varnish's default_grace).
    public var softPurgeGrace: Double = 10
    /// Seconds between ban lurker passes while a ban is active (a pass starts only when the
    /// last one has finished).
    public var banLurkerInterval: Double = 1
    /// Objects the ban lurker tests between pauses (Varnish's `ban_lurker_batch`).
    public var banLurkerBatch: Int = 1000
    /// Seconds the ban lurker pauses between batches (Varnish's `ban_lurker_sleep`).
    public var banLurkerSleep: Double = 0.01
    /// Who may PURGE (matched on the TCP peer address).
    public var purgeACL: ACL = .loopback
    /// Seconds a stale object may be served while it is refreshed, when the response says nothing.
    /// 0 by default: RFC 9111 §4.2.4 allows stale answers only with permission
    /// (stale-while-revalidate from the origin, or this setting as the operator's out-of-band one).
    public var defaultGrace: Double = 0
    /// Seconds past expiry a stored object may stand in for a failed origin when the response
    /// carries no stale-if-error (RFC 5861 §4); 0 by default for the same reason as `defaultGrace`.
    public var defaultStaleIfError: Double = 0
    /// Seconds an object is kept after grace, for revalidation.
    public var defaultKeep: Double = 0
    /// Cap on the TTL of responses with status >= 400 (CPDoS defence).
    public var errorStatusTTLCap: Double = 10
    /// How long an uncacheable answer is remembered (Varnish's hit-for-miss).
    public var hitForMissTTL: Double = 120
    /// Gzip compressible, uncompressed responses once when storing them (one copy serves all).
    public var gzipOnStore: Bool = false
    /// Send large stored bodies from their disk tier file with sendfile(2) on plain HTTP/1.1
    /// connections (`FileBody`); off, they are always copied from memory (nginx's `sendfile`).
    public var sendfile: Bool = true
    /// Event loop threads; 0 means one per core.
    public var threads: Int = 0
    public var limits: Limits = Limits()
    /// Requests per client address (nil: no limit); over it, 429 with Retry-After.
    public var rateLimit: RateLimitConfiguration?
    public var clientTimeouts: ClientTimeouts = ClientTimeouts()
    /// The cache's name in `Cache-Status` (RFC 9211).
    public var cacheName: String = "Lacquer"
    /// The pseudonym in `Via` (RFC 9110 §7.6.3).
    public var viaName: String = "lacquer"
    /// Where the access log goes (nil: nowhere; live tails on the admin port still work).
    public var accessLog: AccessLog.Destination?
    /// How its lines look (NCSA combined plus Lacquer's fields by default).
    public var accessLogFormat: AccessLogFormat = .combined
    /// The probe `--probe` gave every backend (kept for backends a reload declares without one).
    public var defaultProbe: ProbeConfiguration?
    /// How long SIGTERM waits for responses and fills in flight before closing what is left.
    public var drainTimeout: Double = 30
    /// Certificates for the TLS listeners (`--tls-cert`, `--tls-key`); nil when there are none.
    public var tls: TLSSettings?
    /// The contents of `--admin-secret`: when set, the admin's POST endpoints and live views
    /// want `Authorization: Bearer <secret>`.
    public var adminSecret: String?

    public init() {}
}

/// A listen or admin address.
public struct HostAndPort: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int
    /// A client listener whose connections start with a PROXY protocol header (v1 or v2).
    public var proxyProtocol = false
    /// A client listener that speaks TLS (`--listen-tls`), HTTP/2 or HTTP/1.1 by ALPN.
    public var tls = false
    /// A plain client listener that also takes HTTP/2 with prior knowledge (`,h2c`): a
    /// connection that starts with the HTTP/2 preface speaks HTTP/2 (RFC 9113 §3.3).
    public var http2PriorKnowledge = false
    public init(host: String, port: Int, proxyProtocol: Bool = false, tls: Bool = false, http2PriorKnowledge: Bool = false) {
        self.host = host
        self.port = port
        self.proxyProtocol = proxyProtocol
        self.tls = tls
        self.http2PriorKnowledge = http2PriorKnowledge
    }

    /// Parses a client listener: `HOST:PORT`, optionally followed by `,proxy` (Varnish's
    /// `-a HOST:PORT,PROXY`: its connections start with a PROXY protocol header) and, on a
    /// plain listener (`tls` false), `,h2c` (HTTP/2 with prior knowledge as well as HTTP/1.1).
    public static func parseListener(_ text: String, tls: Bool = false) -> HostAndPort? {
        var parts = text.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        guard let address = parts.first else { return nil }
        parts.removeFirst()
        guard var parsed = HostAndPort.parse(address) else { return nil }
        parsed.tls = tls
        for option in parts {
            switch option.lowercased() {
            case "proxy" where !parsed.proxyProtocol: parsed.proxyProtocol = true
            case "h2c" where !tls && !parsed.http2PriorKnowledge: parsed.http2PriorKnowledge = true
            default: return nil
            }
        }
        return parsed
    }

    /// Parses `HOST:PORT`, `[v6]:PORT` or `:PORT` (all interfaces). Nil when malformed.
    public static func parse(_ text: String) -> HostAndPort? {
        var host: Substring
        var portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return nil }
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { return nil }
            portText = rest.dropFirst()
        } else {
            guard let colon = text.lastIndex(of: ":") else { return nil }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
            if host.contains(":") { return nil }
        }
        if host.isEmpty { host = "0.0.0.0" }
        guard let port = Int(portText), (0...65535).contains(port), !portText.hasPrefix("+") else { return nil }
        return HostAndPort(host: String(host), port: port)
    }

    public var description: String {
        (self.host.contains(":") ? "[\(self.host)]:\(self.port)" : "\(self.host):\(self.port)") + (self.proxyProtocol ? ",proxy" : "")
            + (self.http2PriorKnowledge ? ",h2c" : "") + (self.tls ? " (TLS)" : "")
    }
}

/// One origin server.
public struct BackendConfiguration: Sendable, Hashable {
    public var name: String
    public var host: String
    public var port: Int
    public var connectTimeout: TimeAmount = .milliseconds(3500)
    public var firstByteTimeout: TimeAmount = .seconds(60)
    public var betweenBytesTimeout: TimeAmount = .seconds(60)
    /// Pooled keep-alive connections are closed after this long unused.
    public var idleTimeout: TimeAmount = .seconds(60)
    /// Connections open at once to this backend, over all event loops.
    public var maxConnections: Int = 200
    /// How long a request waits for a free connection when the pool is full.
    public var queueTimeout: TimeAmount = .seconds(10)
    /// Host header sent when the client's request has none (VCL `.host_header`).
    public var hostHeader: String?
    /// Health checks; nil means the backend is always considered healthy.
    public var probe: ProbeConfiguration?
    /// TLS to the backend (an HTTPS origin); nil: plain HTTP.
    public var tls: BackendTLS?

    /// `host:port` (`[v6]:port`), the Host a request that had none is sent with.
    public var authority: String {
        let host = self.host.contains(":") ? "[\(self.host)]" : self.host
        return self.port == (self.tls == nil ? 80 : 443) ? host : "\(host):\(self.port)"
    }
    /// Passive health (what fetches say); nil turns it off.
    public var passiveHealth: PassiveHealthConfiguration? = PassiveHealthConfiguration()

    public init(name: String, host: String, port: Int) {
        self.name = name
        self.host = host
        self.port = port
    }

    /// Parses `http://host[:port]` or `https://host[:port]` (a path is not allowed: the backend
    /// gets the client's target). HTTPS verifies the certificate against the system trust store.
    public static func parse(url: String, name: String) -> BackendConfiguration? {
        let secure = url.lowercased().hasPrefix("https://")
        guard secure || url.lowercased().hasPrefix("http://") else { return nil }
        var rest = Substring(url.dropFirst(secure ? "https://".count : "http://".count))
        if rest.hasSuffix("/") { rest = rest.dropLast() }
        guard !rest.isEmpty, !rest.contains("/"), !rest.contains("@") else { return nil }
        var backend: BackendConfiguration
        if let hp = HostAndPort.parse(String(rest)) {
            guard hp.port > 0 else { return nil }
            backend = BackendConfiguration(name: name, host: hp.host, port: hp.port)
        } else {
            guard !rest.contains(":") else { return nil }
            backend = BackendConfiguration(name: name, host: String(rest), port: secure ? 443 : 80)
        }
        if secure { backend.tls = BackendTLS() }
        return backend
    }
}

/// Request and response limits (HARDENING.md §2, §3).
public struct Limits: Sendable {
    public var requestLineBytes = 8 * 1024
    public var headerFieldBytes = 8 * 1024
    public var headerTotalBytes = 32 * 1024
    public var headerFieldCount = 100
    public var methodBytes = 32
    /// A chunk extension (after `;` on a chunk-size line) longer than this is a 400.
    public var chunkExtensionBytes = 4 * 1024
    /// Request bodies stream to the backend (a few reads in memory), so the cap can be large,
    /// like nginx's `client_max_body_size`; above it → 413.
    public var requestBodyBytes = 10 * 1024 * 1024
    /// A body we do not forward (e.g. on a GET we answer from cache) is drained up to this, else we close.
    public var drainBytes = 64 * 1024
    public var requestsPerConnection = 1000
    /// Streams one HTTP/2 connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS).
    public var http2MaxConcurrentStreams = 100
    /// Streams an HTTP/2 client may reset within 30 seconds before it is sent GOAWAY and closed
    /// (the rapid reset attack, CVE-2023-44487).
    public var http2MaxResetsPer30s = 200
    public var maxConnections = 10_000
    /// Connections open at once from one client address (nil: no limit beyond `maxConnections`);
    /// over it a new connection is closed at once.
    public var connectionsPerClient: Int?
    public init() {}

    /// Whether a response header section is over the response limits (HARDENING.md §3): the one
    /// rule for a backend's head and a 304 merge (the disk tier re-checks its stored heads
    /// against the same figures when it reads them: `HeaderCodec` in CacheStore).
    static func headerSection(_ headers: HTTPHeaders, exceedsBytes maxBytes: Int, fields maxFields: Int) -> Bool {
        if headers.count > maxFields { return true }
        var bytes = 0
        for (name, value) in headers { bytes += name.utf8.count + value.utf8.count + 4 }
        return bytes > maxBytes
    }

    /// `headerSection(_:exceedsBytes:fields:)` with these limits.
    func responseHeadersExceed(_ headers: HTTPHeaders) -> Bool {
        Self.headerSection(headers, exceedsBytes: self.headerTotalBytes, fields: self.headerFieldCount)
    }
}

/// Client-side timeouts (HARDENING.md §4).
public struct ClientTimeouts: Sendable {
    /// From the first byte of a request to its complete head.
    public var header: TimeAmount = .seconds(10)
    /// Keep-alive idle time between requests.
    public var idle: TimeAmount = .seconds(5)
    /// Between reads of a request body.
    public var bodyIdle: TimeAmount = .seconds(10)
    /// A whole request body, from its head on (HARDENING.md §4).
    public var bodyTotal: TimeAmount = .seconds(120)
    /// Sending a response: longest time without progress.
    public var sendIdle: TimeAmount = .seconds(60)
    /// Sending a response: longest time in all, from its head on (Varnish's send_timeout).
    public var sendTotal: TimeAmount = .seconds(600)
    /// A lingering close (RFC 9112 §9.6): how long the rest of a request body is read and dropped
    /// after a response that closes the connection, while bytes keep coming within
    /// `lingerIdle` (nginx's lingering_time and lingering_timeout).
    public var lingerTotal: TimeAmount = .seconds(30)
    public var lingerIdle: TimeAmount = .seconds(5)
    public init() {}
}
