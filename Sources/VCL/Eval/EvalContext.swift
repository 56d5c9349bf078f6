/// What compiled VCL needs from the server for one request: the header fields and scalar
/// variables it may read and change, and the side effects it may ask for. The server's
/// `FlowContext` implements it; the evaluator never touches sockets, storage or clocks.
///
/// The checker guarantees a variable is only read or written in the subroutines where Varnish
/// makes it available, so an implementation may answer a default (nil, 0, false) for anything
/// that does not exist in the current step.
public protocol VCLContext {
    func header(_ scope: HeaderScope, _ name: String) -> String?
    /// Sets (replaces) a header field. The value has been checked: no CR, LF or NUL.
    mutating func setHeader(_ scope: HeaderScope, _ name: String, _ value: String)
    mutating func unsetHeader(_ scope: HeaderScope, _ name: String)

    func string(_ variable: VCLStringVariable) -> String?
    mutating func setString(_ variable: VCLStringVariable, _ value: String)
    func int(_ variable: VCLIntVariable) -> Int
    mutating func setInt(_ variable: VCLIntVariable, _ value: Int)
    /// Durations in seconds.
    func duration(_ variable: VCLDurationVariable) -> Double
    mutating func setDuration(_ variable: VCLDurationVariable, _ seconds: Double)
    func bool(_ variable: VCLBoolVariable) -> Bool
    mutating func setBool(_ variable: VCLBoolVariable, _ value: Bool)
    func ip(_ variable: VCLIPVariable) -> VCLIP
    func backend(_ variable: VCLBackendVariable) -> VCLBackendRef?
    mutating func setBackend(_ variable: VCLBackendVariable, _ value: VCLBackendRef)

    /// `hash_data(s)`: feed `s` into the cache key (vcl_hash only).
    mutating func hashData(_ s: String)
    /// `ban(expr)`: add a ban expression such as `req.url ~ "^/news"`.
    mutating func ban(_ expression: String)
    /// `synthetic(body)`: the body of a synthetic response (vcl_synth, vcl_backend_error).
    mutating func synthetic(_ body: String)
    /// `std.log(s)`: a line for the access/VCL log.
    mutating func log(_ s: String)
    /// `vsthrottle.is_denied(key, limit, period)`: takes one call for `key`; true when it is over
    /// `limit` calls within `period` seconds.
    mutating func isDenied(key: String, limit: Int, period: Double) -> Bool
}

extension VCLContext {
    /// Without a throttle (e.g. a test context), nothing is denied.
    public mutating func isDenied(key: String, limit: Int, period: Double) -> Bool { false }
}

/// Which message a header variable refers to.
public enum HeaderScope: String, Sendable, Hashable, CaseIterable {
    case req, bereq, beresp, obj, resp
}

/// STRING variables other than headers.
public enum VCLStringVariable: String, Sendable, Hashable, CaseIterable {
    case reqMethod = "req.method", reqURL = "req.url", reqProto = "req.proto", reqXid = "req.xid"
    case bereqMethod = "bereq.method", bereqURL = "bereq.url", bereqProto = "bereq.proto", bereqXid = "bereq.xid"
    case berespReason = "beresp.reason", berespProto = "beresp.proto"
    case objReason = "obj.reason", objProto = "obj.proto"
    case respReason = "resp.reason", respProto = "resp.proto"
    case clientIdentity = "client.identity", serverHostname = "server.hostname", serverIdentity = "server.identity"
    /// vmod tls (Varnish Enterprise's names): `tls.version()`, `tls.authority()` (the SNI name),
    /// `tls.alpn()`; empty over plain HTTP.
    case tlsVersion = "tls.version", tlsAuthority = "tls.authority", tlsALPN = "tls.alpn"
}

/// INT variables.
public enum VCLIntVariable: String, Sendable, Hashable, CaseIterable {
    case reqRestarts = "req.restarts", bereqRetries = "bereq.retries"
    case berespStatus = "beresp.status", objStatus = "obj.status", objHits = "obj.hits", respStatus = "resp.status"
}

/// DURATION variables (seconds).
public enum VCLDurationVariable: String, Sendable, Hashable, CaseIterable {
    case reqTTL = "req.ttl"
    case berespTTL = "beresp.ttl", berespGrace = "beresp.grace", berespKeep = "beresp.keep", berespAge = "beresp.age"
    case objTTL = "obj.ttl", objGrace = "obj.grace", objKeep = "obj.keep", objAge = "obj.age"
    case bereqConnectTimeout = "bereq.connect_timeout", bereqFirstByteTimeout = "bereq.first_byte_timeout"
    case bereqBetweenBytesTimeout = "bereq.between_bytes_timeout"
}

/// BOOL variables.
public enum VCLBoolVariable: String, Sendable, Hashable, CaseIterable {
    case reqHashAlwaysMiss = "req.hash_always_miss", reqHashIgnoreBusy = "req.hash_ignore_busy"
    case reqCanGzip = "req.can_gzip", bereqUncacheable = "bereq.uncacheable"
    case berespUncacheable = "beresp.uncacheable", berespDoGzip = "beresp.do_gzip"
    case berespDoGunzip = "beresp.do_gunzip", berespDoStream = "beresp.do_stream", berespDoESI = "beresp.do_esi"
    /// `tls.is_tls()`: the client connection is TLS.
    case tlsIsTLS = "tls.is_tls"
}

/// IP variables.
public enum VCLIPVariable: String, Sendable, Hashable, CaseIterable {
    case clientIP = "client.ip", serverIP = "server.ip", localIP = "local.ip", remoteIP = "remote.ip"
}

/// BACKEND variables.
public enum VCLBackendVariable: String, Sendable, Hashable, CaseIterable {
    case reqBackendHint = "req.backend_hint", bereqBackend = "bereq.backend", berespBackend = "beresp.backend"
}

/// An IP address: 4 or 16 bytes in network order, plus its text form (used when VCL turns it
/// into a string, e.g. `hash_data(server.ip)`).
public struct VCLIP: Sendable, Hashable, CustomStringConvertible {
    public var bytes: [UInt8]
    public var text: String

    public init(bytes: [UInt8], text: String) {
        self.bytes = bytes
        self.text = text
    }

    /// Parses a literal IPv4 or IPv6 address; nil if it is not one.
    public init?(parsing text: String) {
        guard let bytes = IPAddressParser.parse(text) else { return nil }
        self.bytes = bytes
        self.text = text
    }

    public var description: String { self.text }
}

/// A backend as VCL names it: a declared backend, or a director (with the key a hash director
/// picks by). The server resolves directors, because health lives there.
public enum VCLBackendRef: Sendable, Hashable, CustomStringConvertible {
    case backend(String)
    case director(String, key: String?)

    public var name: String {
        switch self {
        case .backend(let n), .director(let n, _): return n
        }
    }

    public var description: String { self.name }
}
