import CachePolicy
import CacheStore
import Logging
import NIOCore
import NIOHTTP1
import VCL

/// Carries out one client request: the driver of `RequestStateMachine`, which decides every
/// step (see RequestFlow+StateMachine.swift). The flow runs the actions the machine asks for
/// (VCL, lookups, the coalescer, the backend exchange, writes to the client) and reports what
/// happened as events; it decides nothing about where the request goes next.
///
/// It lives on the client connection's event loop, as does the backend connection it uses, so
/// it needs no locks. The fetch side is in `RequestFlow+Fetch.swift`.
final class RequestFlow {
    typealias Mode = RequestStateMachine.FetchMode

    let server: ServerContext
    /// Held strongly: a fill outlives its client; the cycle with a connection handler ends
    /// when the handler moves on to its next request or the backend exchange ends. Never used
    /// directly: `client` is the only way to it, and it is nil once the client has gone.
    private let connection: any FlowClient
    /// Where the response goes, or nil once the client has gone (or the connection answered the
    /// request itself): a flow whose client left cannot write or reach back into the connection.
    var client: (any FlowClient)? { self.machine.clientGone ? nil : self.connection }
    /// The client's and our addresses, taken when the flow starts (for X-Forwarded-For, VCL and
    /// a background refresh, whether or not the client is still there).
    let peer: SocketAddress?
    let local: SocketAddress?
    /// The client's TLS session (X-Forwarded-Proto, VCL's tls functions), taken with the addresses.
    let tls: TLSFacts?
    /// Buffers for what the flow keeps (a fill's body), from the connection's allocator.
    let allocator: ByteBufferAllocator
    /// The client connection's event loop, captured when the flow starts: every callback of
    /// the flow (disk, backend, waiting list, timers) runs here, whether or not the client is
    /// still connected.
    let eventLoop: any EventLoop
    /// The steps.
    var machine: RequestStateMachine
    /// Set while actions are being carried out: an event reported meanwhile is taken by the
    /// machine at once, and its actions run after the current one, in order.
    private var dispatching = false
    /// The request as VCL left it after vcl_recv.
    var head: HTTPRequestHead
    var host: String
    /// The request body, streamed from the client as it arrives (nil: no body).
    let requestBody: RequestBodyStream?
    /// The whole body when it was small and complete before the backend connection was
    /// obtained: kept so the fetch may be sent again.
    var replayBody: ByteBuffer?
    let xid: UInt64
    var requestCacheControl: CacheControl
    /// The configuration this request started with (a reload does not change it mid-request).
    let vcl: CompiledVCL
    /// What VCL reads and writes for this request.
    var ctx: FlowContext
    /// Set when vcl_deliver replaced the response being delivered: the body that was to follow
    /// its head is dropped.
    var bodySuppressed = false

    // Fetch state (see RequestFlow+Fetch.swift).
    /// The backend request vcl_backend_fetch is working on.
    var backendRequest: HTTPRequestHead?
    var lease: BackendPool.Lease?
    /// The backend the running fetch went to (for passive health).
    var fetchBackend: BackendStats?
    /// The backend whose fetch duration is still to be observed.
    var timedFetch: BackendStats?
    var storeDone = false
    /// The busy fetch this flow leads (it must be released on every exit path).
    var busy: BusyFetch?
    /// The busy fetch this flow waits on, and where it is in its body.
    var waitingOn: BusyFetch?
    var waitID = 0
    /// How many body bytes of the busy fetch this waiter has written.
    var waitOffset = 0
    /// The client's range of the body it waits on; nil: all of it.
    var waitWindow: BodyWindow?
    /// Set while `pumpWait` writes: a write can make the connection writable again at once and
    /// call back into the pump, which then only asks the running pump to look again.
    var waitPumping = false
    var waitPumpAgain = false
    var waitTimer: Scheduled<Void>?
    /// Whether the backend request carried our validators (a 304 then refers to the stale copy).
    var sentConditional = false
    /// Whether the backend request carried any validator (ours or the client's).
    var sentValidators = false
    /// Set when the backend answered 304 to our conditional fill, then the object it made.
    var revalidation: Revalidation?
    var revalidated: (object: StoredObject, cacheStatus: CacheStatusValue, xStatus: XCacheStatus)?
    var requestTime: Double = 0
    /// When the request arrived (the clock's time at the flow's start).
    let arrivedAt: Double
    var responseTime: Double = 0
    var backendHead: HTTPResponseHead?
    var storedHeaders: HTTPHeaders = [:]
    var decision: BackendResponseDecision?
    var varyNames: [String] = []
    var accumulated: ByteBuffer?
    var storeLimit = 0
    var closeAfter = false
    /// Commits of bans the running sub added (see `.runSub`).
    var banCommits: [EventLoopFuture<Void>] = []
    /// How a PURGE was carried out when it was not a plain URL purge (for its answer and the log).
    var purgeNote: String?
    /// A disk body being streamed to the client, if any.
    var diskReader: DiskBodyReader?
    var diskReadPaused = false
    /// The byte window of the disk body to send (a single range, or all of it), and how far we read.
    var diskWindow = BodyWindow(ranges: [], multipart: nil, length: 0)
    /// The client's range of a body being fetched (a Range request that missed); nil: all of it.
    var fetchWindow: BodyWindow?
    var bodyBytes = 0
    var expectedLength: Int?
    /// Set on a slice's sub-request (see `SliceWalker`): the slice it reads or fetches.
    var slice: SliceFetch?
    /// A fill whose answer is stored as slices while it streams by.
    var sliceTee: SliceTee?
    /// The walk over a sliced object's slices this response's body comes from.
    var sliceWalker: SliceWalker?
    /// The slice a fill asked the origin for instead of the whole object (a Range request past
    /// the first slice that missed), until its answer's head arrives.
    var sliceProbeIndex: Int?
    /// The probe's answer, when it was that slice of a large object: stored with its marker.
    var sliceProbe: SliceFetch?
    /// Set after a probe's answer was not a slice of a large object: the fill asks for all of it.
    var noSliceProbe = false
    /// The probe's Cache-Status, and the marker stored with its slice.
    var probeCacheStatus: CacheStatusValue?
    var probeMarker: StoredObject?

    init(server: ServerContext, client: any FlowClient, head: HTTPRequestHead, host: String, body: RequestBodyStream?) {
        self.server = server
        self.connection = client
        self.eventLoop = client.eventLoop
        self.tls = client.tls
        self.peer = client.peer
        self.local = client.local
        self.allocator = client.allocator
        var head = head
        if !host.isEmpty, head.headers.first(name: "host") != host {
            // The normalised host (lowercased, default port dropped) is what VCL and the backend see.
            head.headers.replaceOrAdd(name: "Host", value: host)
        }
        self.head = head
        self.host = host
        self.requestBody = body
        let xid = server.nextXID()
        self.xid = xid
        self.arrivedAt = server.clock()
        self.requestCacheControl = BuiltinPolicy.requestCacheControl(head.headers, ignored: server.configuration.ignoreRequestCacheControl)
        self.vcl = server.vcl
        self.ctx = FlowContext(head: head, xid: xid, peer: client.peer, local: client.local)
        self.ctx.tls = client.tls
        if server.vcl.usesThrottle {
            self.ctx.throttle = { [server] key, limit, period in server.isThrottled(key: key, limit: limit, period: period) }
        }
        self.machine = RequestStateMachine(
            hasDiskTier: server.disk != nil, staleIfErrorDefault: server.configuration.defaultStaleIfError)
    }

    var counters: Counters { self.server.counters }

    deinit {
        // Safety net: a busy fetch is never left claimed, whatever path ended this flow.
        if let busy = self.busy {
            self.server.coalescer.release(busy, outcome: .failed(.closedMidBody))
        }
    }

    /// Starts the request at vcl_recv.
    func start() {
        self.dispatch(.start)
    }

    /// The client can take more.
    func clientWritable() {
        self.dispatch(.clientWritable)
    }

    /// The client left before its response was complete.
    func clientGone() {
        self.counters.increment(.clientGoneMidResponse)
        self.dispatch(.clientGone)
    }

    /// Nothing more is written to the client (it left, or the connection answered the request
    /// itself, e.g. a 413 mid-body); a fill keeps going for the cache's sake.
    func abandonRequest() {
        self.dispatch(.clientGone)
    }

    /// The dispatch loop: the machine takes `event`, then its actions are carried out in order;
    /// events they report are taken at once, their actions queued behind.
    func dispatch(_ event: RequestStateMachine.Event) {
        self.machine.handle(event)
        guard !self.dispatching else { return }
        self.dispatching = true
        defer { self.dispatching = false }
        while let action = self.machine.nextPendingAction() {
            self.perform(action)
        }
    }

    /// Tests a stored object against the bans added after it was received, with this request
    /// for the `req.*` conditions (`BanList.check`: only bans newer than `checkedThrough`).
    func banVerdict(_ object: some CacheCandidate, checkedThrough: UInt32) -> BanList.Verdict {
        let url = self.head.uri
        let requestHeaders = self.head.headers
        return self.server.bans.check(storedAt: object.responseTime, checkedThrough: checkedThrough) {
            let objectHeaders = object.headers
            return VCLBan.Subject(
                url: url, requestHeader: { requestHeaders.first(name: $0) }, status: object.status,
                objectHeader: { objectHeaders.first(name: $0) })
        }
    }

    /// Whether a fill's object may go into the tiers: no purge of its key, its surrogate keys
    /// or everything since its request was sent, and no ban added since it was received. A
    /// storable object is marked as checked against every current ban.
    func mayStore(_ object: StoredObject) -> Bool {
        if self.server.purgedSince(object, self.requestTime) { return false }
        switch self.banVerdict(object, checkedThrough: 0) {
        case .banned(let sequence):
            self.server.bans.noteRemoved(sequence)
            return false
        case .clear(let through):
            object.markBansChecked(through: through)
            return true
        }
    }

    /// Looks `key` up in the memory tier (bans applied); the machine gets what it found.
    func lookUpMemory(_ key: CacheKey) {
        let now = self.server.clock()
        var variants = self.server.memory.variants(for: key)
        if !self.server.bans.isEmpty {
            variants.removeAll { object in
                switch self.banVerdict(object, checkedThrough: object.bansCheckedThrough) {
                case .banned(let sequence):
                    if self.server.memory.remove(object) {
                        self.server.bans.noteRemoved(sequence)
                        self.counters.increment(.bannedObjects)
                    }
                    return true
                case .clear(let through):
                    object.markBansChecked(through: through)
                    return false
                }
            }
        }
        self.dropPartsThatCannotAnswer(&variants)
        let outcome = BuiltinPolicy.lookup(
            variants: variants, requestHeaders: self.head.headers, requestCacheControl: self.requestCacheControl,
            varyListFields: self.server.configuration.varyListFields, now: now, ttlCap: self.ctx.reqTTL,
            requestArrived: self.arrivedAt)
        self.dispatch(.lookedUp(.init(outcome, copy: { .memory($0) }), .memory, now: now))
    }

    /// Looks `key` up in the disk tier (bans applied); a read failure is a miss.
    func lookUpDisk(_ key: CacheKey) {
        guard let disk = self.server.disk else {
            return self.dispatch(.lookedUp(.miss(fwd: .uriMiss), .disk, now: self.server.clock()))
        }
        // The hit lane has just asked the disk for this request and found nothing.
        let found =
            self.client?.takeNothingStored(key) == true
            ? self.eventLoop.makeSucceededFuture([]) : disk.lookup(key, on: self.eventLoop)
        let loopBound = NIOLoopBound(self, eventLoop: self.eventLoop)
        found.whenComplete { result in
            let flow = loopBound.value
            var heads: [DiskObjectHead]
            switch result {
            case .success(let found):
                heads = found
            case .failure(let error):
                disk.noteReadFailure(error, key: key)
                heads = []
            }
            if !flow.server.bans.isEmpty {
                heads.removeAll { head in
                    guard case .banned(let sequence) = flow.banVerdict(head, checkedThrough: 0) else { return false }
                    disk.remove(head)
                    flow.server.bans.noteRemoved(sequence)
                    flow.counters.increment(.bannedObjects)
                    return true
                }
            }
            let now = flow.server.clock()
            flow.dropPartsThatCannotAnswer(&heads)
            let outcome = BuiltinPolicy.lookup(
                variants: heads, requestHeaders: flow.head.headers, requestCacheControl: flow.requestCacheControl,
                varyListFields: flow.server.configuration.varyListFields, now: now, ttlCap: flow.ctx.reqTTL,
                requestArrived: flow.arrivedAt)
            flow.dispatch(.lookedUp(.init(outcome, copy: { .disk($0) }), .disk, now: now))
        }
    }

    /// Delivers a stored copy from either tier (the counters say how it was found).
    func deliverStored(_ copy: StaleCopy, xStatus: XCacheStatus, detail: String?, refresh: CacheKey?) {
        // A stale answer from a soft-purged copy says why it is stale (RFC 9211 detail).
        let detail = copy.softPurged && xStatus != .hit ? "soft-purged" : detail
        if let refresh {
            self.startBackgroundRefresh(key: refresh, stale: copy)
        }
        switch (xStatus, detail) {
        case (.hit, _), (.stale, "max-stale"): self.counters.increment(.cacheHit)
        case (.updating, _): self.counters.increment(.updatingServed)
        case (.stale, _): self.counters.increment(.staleServed)
        default: break
        }
        let now = self.server.clock()
        switch copy {
        case .memory(let object):
            // A slice stays at the cold end of the memory tier (see `SliceGeometry`).
            if xStatus == .hit, self.slice == nil { self.server.memory.touch(object) }
            let status = CacheStatusValue(hit: true, ttl: Int(object.remainingTTL(at: now).rounded(.down)), detail: detail)
            self.deliver(object, xStatus: xStatus, cacheStatus: status, now: now)
        case .disk(let head):
            guard let disk = self.server.disk else { return self.dispatch(.diskReadFailed(head.key)) }
            self.deliverFromDisk(head, disk: disk, xStatus: xStatus, detail: detail)
        }
    }

    /// `vcl_deliver` for a stored object: stored head + Age, Via and the cache status fields.
    func deliver(_ stored: StoredObject, xStatus: XCacheStatus, cacheStatus: CacheStatusValue, now: Double) {
        self.ctx.objHits = 1  // obj.hits: 0 on a fetch, at least 1 when delivering a stored object
        if self.slice == nil, let geometry = SliceGeometry.marker(stored) {
            return self.deliverSliced(
                key: stored.key, storedHeaders: stored.headers, geometry: geometry, age: stored.age(at: now), xStatus: xStatus,
                cacheStatus: cacheStatus)
        }
        if self.slice == nil, let part = StoredPart.range(status: stored.status, headers: stored.headers, bodyLength: stored.bodyLength) {
            return self.deliverPart(stored, part: part, age: stored.age(at: now), xStatus: xStatus, cacheStatus: cacheStatus)
        }
        if self.deliverPlain(stored, xStatus: xStatus, cacheStatus: cacheStatus, now: now) {
            return
        }
        var object = stored
        // Parsed and copied once: both are computed from the stored bytes on each access.
        var storedHeaders = stored.headers
        var body = stored.body
        if stored.mentionsGzip, BodyTransform.needsGunzip(storedHeaders: storedHeaders, requestHeaders: self.head.headers) {
            if let (headers, gunzipped) = BodyTransform.gunzip(
                headers: storedHeaders, body: body, maxOutputBytes: self.server.configuration.diskMaxBufferedObjectBytes)
            {
                self.counters.increment(.gunzipped)
                object = stored.replacing(headers: headers, body: gunzipped, hiddenFields: self.server.memory.surrogateKeyFields)
                storedHeaders = object.headers
                body = object.body
            } else {
                // Corrupt gzip from the origin: passed through unchanged, never a crash.
                self.counters.increment(.gzipCorrupt)
            }
        }
        let plan = self.writeStoredHead(
            status: object.status, reason: object.reason, storedHeaders: storedHeaders,
            bodyLength: body.readableBytes, age: object.age(at: now),
            xStatus: xStatus, cacheStatus: cacheStatus)
        switch plan {
        case .none:
            break
        case .full:
            if body.readableBytes > 0 {
                self.emitFinalBody(body)
            }
        case .window(var window):
            if let out = window.take(body) {
                self.emitFinalBody(out)
            }
        }
        if !self.bodySuppressed {
            self.dispatch(.delivered)
        }
    }

    /// The common case of `deliver`, without building a header list: a stored 200 for a GET or
    /// HEAD with no Range or validators, and no vcl_deliver of the configuration's. The stored
    /// fields are copied as they are and the fields of this delivery written after them, into one
    /// buffer with the (inline) body. Returns false, having written nothing, when the request
    /// needs more than that; `writeStoredHead` then does it all.
    private func deliverPlain(_ object: StoredObject, xStatus: XCacheStatus, cacheStatus: CacheStatusValue, now: Double) -> Bool {
        guard !self.userDefines(.deliver), let client = self.client, client.takesPreEncoded else { return false }
        let method = self.head.method
        let requestHeaders = self.head.headers
        guard HitRules.wantsStoredAsIs(method: method, requestHeaders: requestHeaders),
            HitRules.deliverableAsStored(object, clientTakesGzip: AcceptEncoding.acceptsGzip(requestHeaders))
        else { return false }
        self.closeAfter = client.mustCloseAfter(self.head)
        let (head, largeBody) = PlainHit.encode(
            object, withBody: method != .HEAD, age: object.age(at: now), xStatus: xStatus, cacheStatus: cacheStatus,
            close: self.closeAfter, viaLine: self.server.viaLine, cacheName: self.server.cacheStatusName,
            allocator: self.allocator)
        let bodyBytes = method == .HEAD ? 0 : object.bodyLength
        client.writePreEncoded(head, status: object.status, cache: xStatus, bodyBytes: largeBody == nil ? bodyBytes : 0)
        if let largeBody {
            client.writeStoredBody(largeBody, of: object)
        }
        self.dispatch(.delivered)
        return true
    }

    /// What follows a stored response's head.
    enum BodyPlan {
        case none
        case full
        /// A 206: the bytes of the window (one range, or multipart/byteranges).
        case window(BodyWindow)
    }

    /// Writes the head of a stored response: a 304 for a matching conditional request (RFC 9110
    /// §13.2.2), a 206 / 416 for a Range request (RFC 9110 §14), else the stored status.
    /// Returns what the body must be.
    func writeStoredHead(
        status: Int, reason: String, storedHeaders: HTTPHeaders, bodyLength: Int, age: Double,
        xStatus: XCacheStatus, cacheStatus: CacheStatusValue
    ) -> BodyPlan {
        var headers = storedHeaders
        headers.reserveCapacity(headers.count + 6)
        headers.add(name: "Age", value: String(Int(age)))
        self.addViaAndStatus(&headers, xStatus: xStatus, cacheStatus: cacheStatus)
        self.closeAfter = (self.client?.mustCloseAfter(self.head) ?? true)
        if self.closeAfter {
            headers.replaceOrAdd(name: "Connection", value: "close")
        }
        if status == 200,
            ConditionalRequest.isNotModified(
                method: self.head.method.rawValue, requestHeaders: self.head.headers, storedHeaders: storedHeaders)
        {
            headers.remove(name: "content-length")
            self.emitHead(HTTPResponseHead(version: .http1_1, status: .notModified, headers: headers))
            return .none
        }
        guard Self.statusHasBody(status) else {
            self.emitHead(
                HTTPResponseHead(
                    version: .http1_1, status: HTTPResponseStatus(statusCode: status, reasonPhrase: reason), headers: headers))
            return .none
        }
        var outStatus = HTTPResponseStatus(statusCode: status, reasonPhrase: reason)
        var plan = BodyPlan.full
        headers.replaceOrAdd(name: "Content-Length", value: String(bodyLength))
        if status == 200 {
            switch self.answerRange(&headers, length: bodyLength) {
            case .whole:
                break
            case .partial(let window):
                outStatus = .partialContent
                plan = .window(window)
            case .unsatisfiable:
                self.emitHead(HTTPResponseHead(version: .http1_1, status: .rangeNotSatisfiable, headers: headers))
                return .none
            }
        }
        self.emitHead(HTTPResponseHead(version: .http1_1, status: outStatus, headers: headers))
        return self.head.method == .HEAD ? .none : plan
    }

    /// What a Range request gets of a complete 200.
    enum RangeAnswer {
        case whole
        case partial(BodyWindow)
        case unsatisfiable
    }

    /// RFC 9110 §14 for this request and a complete 200 of `length` bytes with the fields
    /// `headers` (stored, or just received from the origin; their validators decide If-Range),
    /// by `RangeRequest.evaluate`: sets Accept-Ranges, and for a 206 its Content-Range or
    /// multipart Content-Type and its Content-Length, for a 416 `bytes */length` and no body.
    /// Every delivery of a complete 200 (memory, disk, a fill, a waiter on a fill) asks this.
    func answerRange(_ headers: inout HTTPHeaders, length: Int) -> RangeAnswer {
        headers.replaceOrAdd(name: "Accept-Ranges", value: "bytes")
        let decision = RangeRequest.evaluate(
            rangeHeader: self.head.headers.first(name: "range"), ifRange: self.head.headers.first(name: "if-range"),
            method: self.head.method.rawValue, storedStatus: 200, storedHeaders: headers, length: length)
        let window: BodyWindow
        switch decision {
        case .full:
            return .whole
        case .single(let range):
            headers.replaceOrAdd(name: "Content-Range", value: RangeRequest.contentRange(range, length: length))
            window = BodyWindow(ranges: [range], multipart: nil, length: length)
        case .multiple(let ranges):
            let boundary = Multipart.boundary(seed: self.xid)
            let contentType = headers.first(name: "content-type")
            headers.replaceOrAdd(name: "Content-Type", value: Multipart.contentType(boundary: boundary))
            window = BodyWindow(ranges: ranges, multipart: (boundary, contentType), length: length)
        case .unsatisfiable:
            headers.replaceOrAdd(name: "Content-Range", value: RangeRequest.unsatisfiedContentRange(length: length))
            headers.replaceOrAdd(name: "Content-Length", value: "0")
            return .unsatisfiable
        }
        headers.replaceOrAdd(name: "Content-Length", value: String(window.contentLength))
        return .partial(window)
    }

    /// `return (purge)` from vcl_recv (builtin.vcl allows it from `purge_acl`): removes every
    /// variant under `key` from both tiers, and reports only once the disk removal is committed
    /// (durable). With `xkey-purge: k1 k2` (Varnish xkey's header) it purges every object
    /// tagged with those surrogate keys instead; `xkey-softpurge`, or `Fastly-Soft-Purge: 1`
    /// with either form, makes the objects stale instead of removing them.
    func purge(_ key: CacheKey) {
        let headers = self.head.headers
        let softHeader = headers.first(name: "fastly-soft-purge").map { $0.split(separator: " ").first == "1" } ?? false
        var surrogateKeys: [String] = []
        for value in headers["xkey-purge"] { SurrogateKeyFields.split(value, into: &surrogateKeys) }
        let softKeys = headers["xkey-softpurge"]
        for value in softKeys { SurrogateKeyFields.split(value, into: &surrogateKeys) }
        let soft = softHeader || !softKeys.isEmpty
        let loopBound = NIOLoopBound(self, eventLoop: self.eventLoop)
        let work: EventLoopFuture<Int>
        let byKey = !surrogateKeys.isEmpty || headers.contains(name: "xkey-purge") || !softKeys.isEmpty
        if byKey {
            self.purgeNote = (soft ? "soft, " : "") + "keys: " + surrogateKeys.joined(separator: " ")
            work = self.server.purge(surrogateKeys: surrogateKeys, soft: soft, on: self.eventLoop)
        } else if soft {
            self.purgeNote = "soft"
            work = self.server.softPurge(key, on: self.eventLoop)
        } else {
            work = self.removeWithSlices(key).committed
        }
        work.whenComplete { result in
            let flow = loopBound.value
            switch result {
            case .success(let count):
                flow.purged(count: count, answersZero: byKey)
            case .failure(let error):
                // The cause goes to the log; the client gets a plain reason.
                flow.server.logger.error(
                    "purge could not be committed to the disk tier",
                    metadata: ["xid": "\(flow.xid)", "url": "\(flow.head.uri)", "error": "\(error)"])
                flow.dispatch(.purgeFailed)
            }
        }
    }

    private func purged(count: Int, answersZero: Bool = false) {
        self.counters.increment(count > 0 ? .purgeOK : .purgeMiss)
        self.server.logger.info(
            "purge",
            metadata: [
                "url": "\(self.head.uri)", "host": "\(self.host)", "objects": "\(count)", "how": "\(self.purgeNote ?? "url")",
                "client": "\(self.peer?.ipAddress ?? "-")", "xid": "\(self.xid)",
            ])
        self.dispatch(.purged(count: count, answersZero: answersZero))
    }

    /// The text of one of our own answers.
    func render(_ body: RequestStateMachine.SynthBody?) -> String? {
        switch body {
        case .purged(let count):
            "200 Purged \(count) \(count == 1 ? "object" : "objects")"
                + (self.purgeNote.map { " (\($0))" } ?? ": \(self.head.uri)") + "\n"
        case .notInCache: "404 Not in cache: \(self.head.uri)\n"
        case nil: nil
        }
    }

    /// Removes `key` (and a sliced object's slices) from both tiers without waiting for the disk
    /// (its tombstone takes effect at once). Returns the number of memory copies removed.
    func invalidate(_ key: CacheKey) -> Int {
        self.removeWithSlices(key).inMemory
    }

    /// Writes a synthetic response; `extraHeaders` (from VCL's resp.http / beresp.http) replace
    /// the defaults of the same name.
    func writeSynthetic(status: Int, reason: String, extraHeaders: HTTPHeaders?, body: String?) {
        guard let client = self.client else { return }
        let close = client.mustCloseAfter(self.head)
        self.closeAfter = close
        var response = Synthetic.response(
            status: status, reason: reason, now: self.server.clock(), close: close,
            cacheName: self.server.configuration.cacheName, body: body, detail: self.machine.synthDetail)
        if let extraHeaders {
            if reason != response.head.status.reasonPhrase, !reason.isEmpty,
                !reason.utf8.contains(where: { $0 < 0x20 || $0 == 0x7F })
            {
                response.head.status = HTTPResponseStatus(statusCode: status, reasonPhrase: reason)
            }
            for (name, value) in extraHeaders {
                let lowered = name.lowercased()
                guard lowered != "content-length", lowered != "transfer-encoding", lowered != "connection" else { continue }
                response.head.headers.replaceOrAdd(name: name, value: value)
            }
        }
        switch status {
        case 502: self.counters.increment(.synth502)
        case 503: self.counters.increment(.synth503)
        case 504: self.counters.increment(.synth504)
        default: break
        }
        client.writeHead(response.head)
        if self.head.method != .HEAD && response.body.readableBytes > 0 {
            client.writeBody(response.body)
        }
    }

    func addViaAndStatus(_ headers: inout HTTPHeaders, xStatus: XCacheStatus, cacheStatus: CacheStatusValue) {
        let keyFields = self.server.memory.surrogateKeyFields
        if keyFields.hidden {
            // Surrogate keys are for this cache, not for clients (as Fastly strips Surrogate-Key).
            for name in keyFields.names { headers.remove(name: name) }
        }
        let via = headers["via"].joined(separator: ", ")
        let viaName = self.server.configuration.viaName
        headers.remove(name: "via")
        headers.add(name: "Via", value: via.isEmpty ? "1.1 \(viaName)" : via + ", 1.1 \(viaName)")
        headers.remove(name: "x-cache-status")
        headers.add(name: "X-Cache-Status", value: xStatus.rawValue)
        let upstream = headers["cache-status"]
        headers.remove(name: "cache-status")
        var value = cacheStatus.serialized(member: self.server.cacheStatusName)
        if !upstream.isEmpty {
            // RFC 9211 §2: the cache nearest the origin comes first; we append ourselves.
            value = upstream.joined(separator: ", ") + ", " + value
        }
        headers.add(name: "Cache-Status", value: value)
    }

    static func statusHasBody(_ status: Int) -> Bool {
        !(status < 200 || status == 204 || status == 304)
    }
}

/// A head read back from the disk tier is over the response header limits.
struct DiskHeadOverLimits: Error, CustomStringConvertible {
    var description: String { "stored header section over the response limits" }
}
