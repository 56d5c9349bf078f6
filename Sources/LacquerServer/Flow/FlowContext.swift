import Foundation
import CachePolicy
import NIOCore
import NIOHTTP1
import VCL

/// What VCL sees of one request and may change: the views of ARCHITECTURE.md's `FlowContext`.
///
/// One value per request, owned by its `RequestFlow` and passed `inout` to each sub, so the
/// evaluator works on plain fields (no locks, no boxing). The flow reads the changes back after
/// each sub: the request head after `vcl_recv`, the hash after `vcl_hash`, the backend request
/// after `vcl_backend_fetch`, the response's fate after `vcl_backend_response`, and the
/// response head after `vcl_deliver` / `vcl_synth`.
public struct FlowContext: VCLContext {
    // req.*
    var reqMethod: String
    var reqURL: String
    var reqProto: String
    var reqHeaders: HTTPHeaders
    var restarts = 0
    var xid: UInt64
    var backendHint: VCLBackendRef?
    var hashAlwaysMiss = false
    var hashIgnoreBusy = false
    /// VCL's req.ttl: an upper limit on the stored TTL for this request's lookups; nil when unset.
    var reqTTL: Double?
    /// The connection's addresses; turned into VCL IPs only when VCL reads them.
    let peer: SocketAddress?
    let local: SocketAddress?
    var clientIP: VCLIP { Self.vclIP(self.peer) }
    var serverIP: VCLIP { Self.vclIP(self.local) }
    // vcl_hash
    public internal(set) var hashParts: [String] = []
    // obj.* (read-only; set on a hit)
    var objStatus = 0
    var objReason = ""
    var objHeaders = HTTPHeaders()
    var objTTL = 0.0
    var objGrace = 0.0
    var objKeep = 0.0
    var objAge = 0.0
    var objHits = 0
    // resp.*
    var respStatus = 0
    var respReason = ""
    var respHeaders = HTTPHeaders()
    // bereq.*
    var bereqMethod = ""
    var bereqURL = ""
    var bereqProto = "HTTP/1.1"
    var bereqHeaders = HTTPHeaders()
    var bereqRetries = 0
    var bereqBackend: VCLBackendRef?
    var bereqUncacheable = false
    var connectTimeout = 0.0
    var firstByteTimeout = 0.0
    var betweenBytesTimeout = 0.0
    /// The backend the fetch went to (`beresp.backend`).
    var fetchedFrom: String?
    // beresp.*
    var berespStatus = 0
    var berespReason = ""
    var berespHeaders = HTTPHeaders()
    var berespTTL = 0.0
    var berespGrace = 0.0
    var berespKeep = 0.0
    var berespAge = 0.0
    var berespUncacheable = false
    var doGzip = false
    var doGunzip = false
    // side effects
    var syntheticBody: String?
    var bans: [String] = []
    var logLines: [String] = []

    /// The client's TLS session (vmod tls), nil over plain HTTP.
    var tls: TLSFacts?

    public init(head: HTTPRequestHead, xid: UInt64, peer: SocketAddress?, local: SocketAddress?) {
        self.reqMethod = head.method.rawValue
        self.reqURL = head.uri
        self.reqProto = "HTTP/\(head.version.major).\(head.version.minor)"
        self.reqHeaders = head.headers
        self.xid = xid
        self.peer = peer
        self.local = local
    }

    static func vclIP(_ address: SocketAddress?) -> VCLIP {
        guard let address, let text = address.ipAddress, let ip = VCLIP(parsing: text) else {
            return VCLIP(bytes: [0, 0, 0, 0], text: "0.0.0.0")
        }
        return ip
    }

    // MARK: VCLContext

    public func header(_ scope: HeaderScope, _ name: String) -> String? {
        let headers = self.headers(scope)
        guard let first = headers.first(name: name) else { return nil }
        // Several lines of one field read as one value, as Varnish joins them (rare: only then
        // is the array built).
        var lines = 0
        for (fieldName, _) in headers where fieldName.utf8.count == name.utf8.count && fieldName.lowercased() == name.lowercased() {
            lines += 1
            if lines > 1 { return headers[name].joined(separator: ", ") }
        }
        return first
    }

    public mutating func setHeader(_ scope: HeaderScope, _ name: String, _ value: String) {
        self.withHeaders(scope) { $0.replaceOrAdd(name: name, value: value) }
    }

    public mutating func unsetHeader(_ scope: HeaderScope, _ name: String) {
        self.withHeaders(scope) { $0.remove(name: name) }
    }

    private func headers(_ scope: HeaderScope) -> HTTPHeaders {
        switch scope {
        case .req: self.reqHeaders
        case .bereq: self.bereqHeaders
        case .beresp: self.berespHeaders
        case .obj: self.objHeaders
        case .resp: self.respHeaders
        }
    }

    private mutating func withHeaders(_ scope: HeaderScope, _ body: (inout HTTPHeaders) -> Void) {
        switch scope {
        case .req: body(&self.reqHeaders)
        case .bereq: body(&self.bereqHeaders)
        case .beresp: body(&self.berespHeaders)
        case .obj: break  // read-only (the checker refuses writes)
        case .resp: body(&self.respHeaders)
        }
    }

    public func string(_ variable: VCLStringVariable) -> String? {
        switch variable {
        case .reqMethod: self.reqMethod
        case .reqURL: self.reqURL
        case .reqProto: self.reqProto
        case .reqXid: String(self.xid)
        case .bereqMethod: self.bereqMethod
        case .bereqURL: self.bereqURL
        case .bereqProto: self.bereqProto
        case .bereqXid: String(self.xid)
        case .berespReason: self.berespReason
        case .berespProto: "HTTP/1.1"
        case .objReason: self.objReason
        case .objProto: "HTTP/1.1"
        case .respReason: self.respReason
        case .respProto: "HTTP/1.1"
        case .clientIdentity: self.clientIP.text
        case .serverHostname, .serverIdentity: FlowContext.hostname
        case .tlsVersion: self.tls?.version ?? ""
        case .tlsAuthority: self.tls?.serverName ?? ""
        case .tlsALPN: self.tls?.alpn ?? ""
        }
    }

    public mutating func setString(_ variable: VCLStringVariable, _ value: String) {
        switch variable {
        case .reqMethod: self.reqMethod = value
        case .reqURL: self.reqURL = value
        case .bereqMethod: self.bereqMethod = value
        case .bereqURL: self.bereqURL = value
        case .berespReason: self.berespReason = value
        case .respReason: self.respReason = value
        default: break  // read-only (the checker refuses writes)
        }
    }

    public func int(_ variable: VCLIntVariable) -> Int {
        switch variable {
        case .reqRestarts: self.restarts
        case .bereqRetries: self.bereqRetries
        case .berespStatus: self.berespStatus
        case .objStatus: self.objStatus
        case .objHits: self.objHits
        case .respStatus: self.respStatus
        }
    }

    public mutating func setInt(_ variable: VCLIntVariable, _ value: Int) {
        switch variable {
        case .berespStatus: self.berespStatus = value
        case .respStatus: self.respStatus = value
        default: break
        }
    }

    public func duration(_ variable: VCLDurationVariable) -> Double {
        switch variable {
        case .reqTTL: self.reqTTL ?? -1
        case .berespTTL: self.berespTTL
        case .berespGrace: self.berespGrace
        case .berespKeep: self.berespKeep
        case .berespAge: self.berespAge
        case .objTTL: self.objTTL
        case .objGrace: self.objGrace
        case .objKeep: self.objKeep
        case .objAge: self.objAge
        case .bereqConnectTimeout: self.connectTimeout
        case .bereqFirstByteTimeout: self.firstByteTimeout
        case .bereqBetweenBytesTimeout: self.betweenBytesTimeout
        }
    }

    public mutating func setDuration(_ variable: VCLDurationVariable, _ seconds: Double) {
        switch variable {
        case .reqTTL: self.reqTTL = seconds
        case .berespTTL: self.berespTTL = seconds
        case .berespGrace: self.berespGrace = max(0, seconds)
        case .berespKeep: self.berespKeep = max(0, seconds)
        case .bereqConnectTimeout: self.connectTimeout = max(0, seconds)
        case .bereqFirstByteTimeout: self.firstByteTimeout = max(0, seconds)
        case .bereqBetweenBytesTimeout: self.betweenBytesTimeout = max(0, seconds)
        default: break
        }
    }

    public func bool(_ variable: VCLBoolVariable) -> Bool {
        switch variable {
        case .reqHashAlwaysMiss: self.hashAlwaysMiss
        case .reqHashIgnoreBusy: self.hashIgnoreBusy
        case .reqCanGzip: ContentCoding.acceptsGzip(self.reqHeaders)
        case .bereqUncacheable: self.bereqUncacheable
        case .berespUncacheable: self.berespUncacheable
        case .berespDoGzip: self.doGzip
        case .berespDoGunzip: self.doGunzip
        case .berespDoStream: true
        case .berespDoESI: false
        case .tlsIsTLS: self.tls != nil
        }
    }

    public mutating func setBool(_ variable: VCLBoolVariable, _ value: Bool) {
        switch variable {
        case .reqHashAlwaysMiss: self.hashAlwaysMiss = value
        case .reqHashIgnoreBusy: self.hashIgnoreBusy = value
        case .berespUncacheable:
            // As in Varnish, an object once marked uncacheable stays so.
            self.berespUncacheable = self.berespUncacheable || value
        case .berespDoGzip: self.doGzip = value
        case .berespDoGunzip: self.doGunzip = value
        case .berespDoStream, .berespDoESI: break  // refused at compile time
        default: break
        }
    }

    public func ip(_ variable: VCLIPVariable) -> VCLIP {
        switch variable {
        case .clientIP, .remoteIP: self.clientIP
        case .serverIP, .localIP: self.serverIP
        }
    }

    public func backend(_ variable: VCLBackendVariable) -> VCLBackendRef? {
        switch variable {
        case .reqBackendHint: self.backendHint
        case .bereqBackend: self.bereqBackend ?? self.backendHint
        case .berespBackend: self.fetchedFrom.map { .backend($0) } ?? self.bereqBackend ?? self.backendHint
        }
    }

    public mutating func setBackend(_ variable: VCLBackendVariable, _ value: VCLBackendRef) {
        switch variable {
        case .reqBackendHint: self.backendHint = value
        case .bereqBackend: self.bereqBackend = value
        case .berespBackend: break
        }
    }

    public mutating func hashData(_ s: String) { self.hashParts.append(s) }
    public mutating func ban(_ expression: String) { self.bans.append(expression) }
    public mutating func synthetic(_ body: String) { self.syntheticBody = body }
    public mutating func log(_ s: String) { self.logLines.append(s) }

    /// The server's vsthrottle table (nil in contexts without a server).
    var throttle: (@Sendable (_ key: String, _ limit: Int, _ period: Double) -> Bool)?

    public mutating func isDenied(key: String, limit: Int, period: Double) -> Bool {
        self.throttle?(key, limit, period) ?? false
    }

    /// The host name `server.hostname` reads.
    static let hostname: String = {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count) == 0 else { return "localhost" }
        let bytes = buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
        return String(decoding: bytes, as: UTF8.self)
    }()
}
