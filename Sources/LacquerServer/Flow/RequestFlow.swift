import CachePolicy
import CacheStore
import NIOCore
import NIOHTTP1

/// One client request's trip through Varnish's states:
///
/// ```
/// recv ─┬─ lookup (hash) ─┬─ hit ──────────────────────────────▶ deliver
///       │                 ├─ miss / refresh ─▶ fetch ─▶ backend_response ─▶ deliver (+ store)
///       ├─ pass ──────────┴──────────────────▶ fetch ─▶ deliver (not stored)
///       ├─ purge ─────────────────────────────────────────────▶ synth
///       └─ synth ─────────────────────────────────────────────▶ deliver
/// ```
///
/// The decisions at each step come from `BuiltinPolicy` (later: the loaded VCL); this class only
/// carries them out. It lives on the client connection's event loop, as does the backend
/// connection it uses, so it needs no locks. The fetch side is in `RequestFlow+Fetch.swift`.
final class RequestFlow {
    enum Mode {
        /// A cache-filling fetch; `stale` is the object being replaced, if any.
        case fill(key: CacheKey, stale: StoredObject?, fwd: CacheStatusValue.Forward)
        /// Not stored; `fwd` is `method` or `bypass`.
        case pass(fwd: CacheStatusValue.Forward, detail: String)
    }

    let server: ServerContext
    unowned let client: ClientChannelHandler
    let head: HTTPRequestHead
    let host: String
    let body: ByteBuffer?
    let xid: UInt64
    let requestCacheControl: CacheControl

    // Fetch state (see RequestFlow+Fetch.swift).
    var mode: Mode = .pass(fwd: .bypass, detail: "")
    var lease: BackendPool.Lease?
    var retried = false
    var requestTime: Double = 0
    var responseTime: Double = 0
    var backendHead: HTTPResponseHead?
    var storedHeaders: HTTPHeaders = [:]
    var decision: BackendResponseDecision?
    var varyNames: [String] = []
    var accumulated: ByteBuffer?
    var storeLimit = 0
    var sendBody = true
    var closeAfter = false
    var clientIsGone = false
    var finished = false
    var bodyBytes = 0
    var expectedLength: Int?

    init(server: ServerContext, client: ClientChannelHandler, head: HTTPRequestHead, host: String, body: ByteBuffer?) {
        self.server = server
        self.client = client
        self.head = head
        self.host = host
        self.body = body
        self.xid = server.nextXID()
        self.requestCacheControl = BuiltinPolicy.requestCacheControl(head.headers)
    }

    var counters: Counters { self.server.counters }

    /// `vcl_recv`.
    func start() {
        switch BuiltinPolicy.recv(method: self.head.method, headers: self.head.headers) {
        case .lookup:
            self.lookup()
        case .pass(let reason):
            self.counters.increment(.cacheBypass)
            let fwd: CacheStatusValue.Forward = reason == "method" ? .method : .bypass
            self.fetch(.pass(fwd: fwd, detail: reason))
        case .purge:
            self.purge()
        case .synth(let status, let reason):
            self.synth(status: status, reason: reason)
        }
    }

    /// `vcl_hash` + lookup + `vcl_hit` / `vcl_miss`.
    private func lookup() {
        let key = BuiltinPolicy.hash(target: self.head.uri, host: self.host)
        let now = self.server.clock()
        let variants = self.server.memory.variants(for: key)
        let outcome = BuiltinPolicy.lookup(
            variants: variants, requestHeaders: self.head.headers,
            requestCacheControl: self.requestCacheControl, now: now)
        switch outcome {
        case .hit(let object):
            self.counters.increment(.cacheHit)
            self.server.memory.touch(object)
            let status = CacheStatusValue(hit: true, ttl: Int(object.remainingTTL(at: now).rounded(.down)))
            self.deliver(object, xStatus: .hit, cacheStatus: status, now: now)
        case .staleHit(let object):
            self.counters.increment(.cacheHit)
            let status = CacheStatusValue(hit: true, ttl: Int(object.remainingTTL(at: now).rounded(.down)), detail: "max-stale")
            self.deliver(object, xStatus: .stale, cacheStatus: status, now: now)
        case .refresh(let object, let fwd):
            if self.requestCacheControl.onlyIfCached {
                return self.synth(status: 504, reason: "only-if-cached and no fresh stored response")
            }
            self.counters.increment(.cacheExpired)
            self.fetch(.fill(key: key, stale: object, fwd: fwd))
        case .miss(let fwd):
            if self.requestCacheControl.onlyIfCached {
                return self.synth(status: 504, reason: "only-if-cached and nothing stored")
            }
            self.counters.increment(.cacheMiss)
            self.fetch(.fill(key: key, stale: nil, fwd: fwd))
        }
    }

    /// `vcl_deliver` for a stored object: stored head + Age, Via and the cache status fields.
    func deliver(_ object: StoredObject, xStatus: XCacheStatus, cacheStatus: CacheStatusValue, now: Double) {
        var headers = object.headers
        headers.reserveCapacity(headers.count + 5)
        headers.add(name: "Age", value: String(Int(object.age(at: now))))
        self.addViaAndStatus(&headers, xStatus: xStatus, cacheStatus: cacheStatus)
        let close = self.client.mustCloseAfter(self.head)
        if close {
            headers.replaceOrAdd(name: "Connection", value: "close")
        }
        if object.status == 200,
            ConditionalRequest.isNotModified(
                method: self.head.method.rawValue, requestHeaders: self.head.headers, storedHeaders: object.headers)
        {
            headers.remove(name: "content-length")
            self.client.writeHead(HTTPResponseHead(version: .http1_1, status: .notModified, headers: headers))
            self.finish(close: close)
            return
        }
        let hasBody = Self.statusHasBody(object.status)
        if hasBody {
            headers.replaceOrAdd(name: "Content-Length", value: String(object.body.readableBytes))
        }
        self.client.writeHead(HTTPResponseHead(version: .http1_1, status: HTTPResponseStatus(statusCode: object.status, reasonPhrase: object.reason), headers: headers))
        if hasBody && self.head.method != .HEAD && object.body.readableBytes > 0 {
            self.client.writeBody(object.body)
        }
        self.finish(close: close)
    }

    /// PURGE: allowed only from the purge ACL; removes every variant under the request's key.
    private func purge() {
        guard self.server.configuration.purgeACL.allows(self.client.peer) else {
            self.counters.increment(.purgeDenied)
            return self.synth(status: 403, reason: "PURGE is not allowed from this address")
        }
        let key = BuiltinPolicy.hash(target: self.head.uri, host: self.host)
        let removed = self.server.memory.remove(key: key)
        if removed.isEmpty {
            self.counters.increment(.purgeMiss)
            self.synth(status: 404, reason: "Not in cache", body: "404 Not in cache: \(self.head.uri)\n")
        } else {
            self.counters.increment(.purgeOK)
            self.synth(status: 200, reason: "Purged", body: "200 Purged \(removed.count) object(s): \(self.head.uri)\n")
        }
    }

    /// `vcl_synth`: a response of our own.
    func synth(status: Int, reason: String, body: String? = nil) {
        let close = self.client.mustCloseAfter(self.head)
        let response = Synthetic.response(
            status: status, reason: reason, now: self.server.clock(), close: close,
            cacheName: self.server.configuration.cacheName, body: body)
        switch status {
        case 502: self.counters.increment(.synth502)
        case 503: self.counters.increment(.synth503)
        case 504: self.counters.increment(.synth504)
        default: break
        }
        self.client.writeHead(response.head)
        if self.head.method != .HEAD && response.body.readableBytes > 0 {
            self.client.writeBody(response.body)
        }
        self.finish(close: close)
    }

    func addViaAndStatus(_ headers: inout HTTPHeaders, xStatus: XCacheStatus, cacheStatus: CacheStatusValue) {
        let name = self.server.configuration.cacheName
        let via = headers["via"].joined(separator: ", ")
        let viaName = self.server.configuration.viaName
        headers.remove(name: "via")
        headers.add(name: "Via", value: via.isEmpty ? "1.1 \(viaName)" : via + ", 1.1 \(viaName)")
        headers.remove(name: "x-cache-status")
        headers.add(name: "X-Cache-Status", value: xStatus.rawValue)
        let upstream = headers["cache-status"]
        headers.remove(name: "cache-status")
        var value = cacheStatus.serialized(cacheName: name)
        if !upstream.isEmpty {
            // RFC 9211 §2: the cache nearest the origin comes first; we append ourselves.
            value = upstream.joined(separator: ", ") + ", " + value
        }
        headers.add(name: "Cache-Status", value: value)
    }

    func finish(close: Bool) {
        guard !self.finished else { return }
        self.finished = true
        if self.clientIsGone { return }
        self.client.finishResponse(self, close: close)
    }

    static func statusHasBody(_ status: Int) -> Bool {
        !(status < 200 || status == 204 || status == 304)
    }
}
