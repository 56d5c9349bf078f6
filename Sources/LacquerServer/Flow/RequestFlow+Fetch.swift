import CachePolicy
import CacheStore
import Logging
import NIOCore
import NIOHTTP1
import VCL

/// The fetch half of the flow: `vcl_backend_fetch`, `vcl_backend_response`, streaming the body
/// to the client (at the client's pace) while keeping a copy to store, and the error paths.
extension RequestFlow: BackendExchangeDelegate {
    /// `vcl_miss` / `vcl_pass` → `vcl_backend_fetch`: builds the backend request (a fresh
    /// start for every try) and runs vcl_backend_fetch on it.
    func prepareFetch(_ mode: Mode) {
        self.lease = nil
        self.backendHead = nil
        self.revalidation = nil
        self.sentConditional = false
        self.storeDone = false
        self.accumulated = nil
        self.decision = nil
        self.bodyBytes = 0
        self.expectedLength = nil
        self.fetchWindow = nil
        self.sliceTee = nil
        self.sliceProbeIndex = nil
        self.sliceProbe = nil
        self.probeCacheStatus = nil
        self.probeMarker = nil
        self.ctx.bereqRetries = self.machine.retries
        let isFill = mode.isFill
        // A HEAD miss fetches the whole object with GET, as Varnish does, so it can be stored.
        let method: HTTPMethod = isFill ? .GET : self.head.method
        // A fill is a GET: the request body is not sent (Varnish's builtin vcl_backend_fetch).
        let requestBody = isFill ? nil : self.requestBody
        var request = BackendRequest.make(
            client: self.head, method: method, isFill: isFill, bodyFraming: requestBody?.framing,
            clientAddress: self.peer?.ipAddress, clientTLS: self.tls != nil, xid: self.xid, viaName: self.server.configuration.viaName)
        if case .fill(_, let stale?, _) = mode {
            // Revalidate the stored copy rather than refetch it (RFC 9111 §4.3.1).
            if let etag = stale.headers.first(name: "etag") {
                request.headers.replaceOrAdd(name: "If-None-Match", value: etag)
                self.sentConditional = true
            }
            if let lastModified = stale.headers.first(name: "last-modified") {
                request.headers.replaceOrAdd(name: "If-Modified-Since", value: lastModified)
                self.sentConditional = true
            }
        }
        if let slice = self.slice {
            // A slice's fetch asks for its bytes only (revalidated with the validators above).
            request.headers.replaceOrAdd(name: "Range", value: slice.rangeHeader)
        } else if case .fill(_, nil, _) = mode, let index = self.sliceProbeTarget() {
            // A Range request past the first slice that missed: ask for the slice its range starts
            // in, as nginx's slice module does; the answer says whether the object is large.
            let size = self.server.configuration.sliceSize
            request.headers.replaceOrAdd(name: "Range", value: "bytes=\(index * size)-\((index + 1) * size - 1)")
            self.sliceProbeIndex = index
        }
        // Timeouts VCL leaves alone (negative) come from the backend picked below.
        self.ctx.connectTimeout = -1
        self.ctx.firstByteTimeout = -1
        self.ctx.betweenBytesTimeout = -1
        let result = self.runBackendFetch(&request)
        self.backendRequest = request
        self.dispatch(.sub(.backendFetch, result))
    }

    /// Picks a backend and sends the prepared request.
    func startFetch() {
        guard var request = self.backendRequest, let mode = self.machine.fetch else { return }
        self.backendRequest = nil
        let isFill = mode.isFill
        let backendRef = self.ctx.bereqBackend ?? self.ctx.backendHint
        let pool: BackendPool
        switch self.server.pool(
            for: backendRef, vcl: self.vcl, key: self.head.uri, on: self.eventLoop, alreadyAdmitted: self.fetchBackend)
        {
        case .success(let chosen):
            pool = chosen
        case .failure(let error):
            // No backend, or none healthy: a stale-if-error copy if there is one, else 503.
            return self.dispatch(.backendFailed(error, beforeHead: true, retryable: false, now: self.server.clock()))
        }
        self.ctx.fetchedFrom = pool.backend.name
        self.fetchBackend = pool.stats
        self.timedFetch = pool.stats
        if request.headers.first(name: "host") == nil {
            // An HTTP/1.0 request may come without Host; the origin never gets one without it
            // (RFC 9112 §3.2). As Varnish: the backend's host header, else its own address.
            request.headers.add(name: "Host", value: pool.backend.hostHeader ?? pool.backend.authority)
        }
        if self.ctx.firstByteTimeout < 0 {
            self.ctx.firstByteTimeout = Double(pool.backend.firstByteTimeout.nanoseconds) / 1e9
        }
        if self.ctx.betweenBytesTimeout < 0 {
            self.ctx.betweenBytesTimeout = Double(pool.backend.betweenBytesTimeout.nanoseconds) / 1e9
        }
        let backendRequest = request
        // A 304 can only answer a request that carried a validator (ours or the client's).
        self.sentValidators = request.headers.contains(name: "if-none-match") || request.headers.contains(name: "if-modified-since")
        self.counters.increment(.backendReq)
        self.requestTime = self.server.clock()
        let firstByteTimeout = TimeAmount.nanoseconds(Int64(self.ctx.firstByteTimeout * 1e9))
        let betweenBytesTimeout = TimeAmount.nanoseconds(Int64(self.ctx.betweenBytesTimeout * 1e9))
        let loopBound = NIOLoopBound(self, eventLoop: self.eventLoop)
        // bereq.connect_timeout, when vcl_backend_fetch set it, for a new connection.
        let connectTimeout = self.ctx.connectTimeout >= 0 ? TimeAmount.nanoseconds(Int64(self.ctx.connectTimeout * 1e9)) : nil
        let acquire = {
            pool.acquire(connectTimeout: connectTimeout).whenComplete { result in
                let flow = loopBound.value
                switch result {
                case .success(let lease):
                    flow.lease = lease
                    flow.dispatch(.backendConnected)
                    guard flow.machine.fetching, flow.lease != nil else { return }
                    lease.connection.startExchange(
                        head: backendRequest, body: flow.outgoingBody(isFill ? nil : flow.requestBody), delegate: flow,
                        firstByteTimeout: firstByteTimeout,
                        betweenBytesTimeout: betweenBytesTimeout)
                case .failure(let error):
                    flow.backendFailed(error as? BackendError ?? .connectFailed(BackendPool.describe(error)), beforeHead: true)
                }
            }
        }
        // A fill waits while the disk tier's write queue is over its high mark (`FillGate`):
        // what it fetches is written, not dropped. It fetches either way, as a fill whose
        // client left does (the object is for the cache).
        if isFill, let room = self.server.disk?.waitForRoom(on: self.eventLoop) {
            room.assumeIsolated().whenComplete { _ in acquire() }
        } else {
            acquire()
        }
    }

    /// What the exchange sends: the kept copy of a small complete body (replayable), or the
    /// body streamed as it arrives (never replayed).
    func outgoingBody(_ stream: RequestBodyStream?) -> OutgoingBody {
        guard let stream else { return .none }
        if let replay = self.replayBody {
            return .buffered(replay)
        }
        if let whole = stream.takeComplete() {
            self.replayBody = whole
            return .buffered(whole)
        }
        self.machine.bodyStreamed = true
        return .streamed(stream)
    }

    /// Whether a fetch that failed with `error` is sent again on another connection: once, for
    /// a reused connection the origin had closed (`closedBeforeHead`), an idempotent method, and
    /// a request body that can be sent again (none, or the kept copy — never a streamed one).
    static func mayRetry(error: BackendError, alreadyRetried: Bool, idempotent: Bool, bodyStreamed: Bool) -> Bool {
        error == .closedBeforeHead && !alreadyRetried && idempotent && !bodyStreamed
    }

    // MARK: BackendExchangeDelegate

    /// 1xx answers (102 Processing, 103 Early Hints, RFC 8297) pass through to HTTP/1.1 and
    /// HTTP/2 clients, never to HTTP/1.0 ones (RFC 9110 §15.2); hop-by-hop fields stripped. They
    /// are never stored: only the final response is. A 100 Continue is ours to send, not the
    /// origin's.
    func backendInterimResponse(_ head: HTTPResponseHead) {
        let version = self.head.version
        guard let client = self.client, self.machine.response == .none, version.major >= 2 || version.minor >= 1,
            head.status != .continue
        else { return }
        var headers = head.headers
        HopByHop.strip(&headers)
        let code = Int(head.status.code)
        // NIO's decoder keeps no reason phrase for codes it has no name for (103).
        let reason = head.status.reasonPhrase.isEmpty ? Self.interimReason(code) : head.status.reasonPhrase
        client.writeHead(
            HTTPResponseHead(version: .http1_1, status: HTTPResponseStatus(statusCode: code, reasonPhrase: reason), headers: headers))
        client.flush()
    }

    /// The registered names of the 1xx codes (RFC 9110 §15.2, RFC 8297).
    static func interimReason(_ code: Int) -> String {
        switch code {
        case 101: return "Switching Protocols"
        case 102: return "Processing"
        case 103: return "Early Hints"
        default: return "Informational"
        }
    }

    /// `vcl_backend_response`, then the head goes to the client.
    func backendResponseHead(_ head: HTTPResponseHead) {
        self.responseTime = self.server.clock()
        let serverError = head.status.code >= 500
        self.recordPassiveHealth(failed: serverError && self.fetchBackend?.passiveHealth?.serverErrorsCount == true)
        self.backendHead = head
        var status = Int(head.status.code)
        var reasonPhrase = head.status.reasonPhrase
        var headers = head.headers
        HopByHop.strip(&headers)
        // Content-Range on another status has no meaning (RFC 9110 §14.4) but is stored and
        // forwarded like any field (RFC 9111 §3.1); a 206 or 416 Lacquer makes from it states its
        // own.
        if !headers.contains(name: "date") {
            headers.add(name: "Date", value: HTTPDate.format(Int64(self.responseTime)))
        }
        self.expectedLength = headers.first(name: "content-length").flatMap(Int.init)
        guard let mode = self.machine.fetch else { return }
        if status == 304, !self.sentValidators {
            // Varnish: "Unexpected 304". Nothing is stored and the connection is not reused.
            self.lease?.connection.abandon()
            return self.backendFailed(.framing("304 Not Modified answering an unconditional request"), beforeHead: true)
        }
        if status == 304, self.sentConditional, case .fill(let key, let stale?, let fwd) = mode {
            // The stored copy is still good: finish the exchange, then serve the updated copy.
            self.revalidation = Revalidation(key: key, stale: stale, fwd: fwd, notModifiedHeaders: headers)
            return self.dispatch(.backendHead(.notModified))
        }
        if status >= 500, case .fill(_, let stale?, _) = mode,
            stale.usableOnError(at: self.responseTime, defaultWindow: self.server.configuration.defaultStaleIfError)
        {
            // Stale-if-error: the origin answers with a server error, a stale copy is allowed.
            self.releaseBusy(.failed(.framing("origin answered \(status)")))
            return self.dispatch(.backendHead(.serverError(stale)))
        }
        let clientIsHead = self.head.method == .HEAD
        var xStatus: XCacheStatus
        var cacheStatus = CacheStatusValue(fwdStatus: status)
        var ageHeader: String?

        switch mode {
        case .fill(let key, let stale, let fwd):
            // EXPIRED only when the stored copy had gone stale; a refetch the request demanded is a MISS.
            xStatus = (stale != nil && fwd == .stale) ? .expired : .miss
            cacheStatus.fwd = fwd
            var probed: SliceFetch?
            if let index = self.sliceProbeIndex {
                self.sliceProbeIndex = nil
                switch self.probeAnswer(index: index, status: status, headers: headers) {
                case .slice(let fetch): probed = fetch
                case .other: break
                case .fetchWhole:
                    // Not a slice of a large object (a smaller one, or a range we cannot place):
                    // ask for the whole object instead.
                    self.noSliceProbe = true
                    return self.dispatch(.backendHead(.retry))
                }
            }
            // A slice's fetch stores the 206 of exactly its range as it would a 200; so does any
            // fill whose answer is a 206 with a body of exactly its Content-Range (RFC 9111 §3.3:
            // stored as the part it is, `StoredPart`).
            let isSlice = (self.slice ?? probed)?.isAnswer(status: status, headers: headers) ?? false
            let isPart = StoredPart.range(status: status, headers: headers, bodyLength: self.expectedLength ?? 0) != nil
            var decision = BuiltinPolicy.backendResponse(
                method: "GET", requestHeaders: self.head.headers, requestCacheControl: self.requestCacheControl,
                status: isSlice || isPart ? 200 : status, responseHeaders: headers, requestTime: self.requestTime,
                responseTime: self.responseTime, configuration: self.server.configuration)
            let verdict = self.runBackendResponse(status: &status, reason: &reasonPhrase, headers: &headers, decision: &decision)
            guard self.carryOut(verdict) else { return }
            if status != Int(head.status.code) || reasonPhrase != head.status.reasonPhrase {
                self.backendHead = HTTPResponseHead(
                    version: head.version, status: HTTPResponseStatus(statusCode: status, reasonPhrase: reasonPhrase),
                    headers: head.headers)
                cacheStatus.fwdStatus = Int(head.status.code)
            }
            if decision.storable {
                if let names = VaryKey.fieldNames(headers) {
                    self.varyNames = names
                } else {
                    decision.storable = false
                    decision.reason = .varyStar
                }
            }
            self.storeLimit =
                self.server.disk == nil
                ? self.server.memory.admissionLimit
                : max(self.server.memory.admissionLimit, self.server.configuration.diskMaxBufferedObjectBytes)
            if let probed {
                guard self.maySlice(length: probed.geometry.length, headers: headers, decision: decision) else {
                    self.noSliceProbe = true
                    return self.dispatch(.backendHead(.retry))
                }
                self.sliceProbe = probed
            } else if decision.storable, let geometry = self.sliceGeometry(status: status, headers: headers, decision: decision) {
                // Too large to hold whole: stored in slices as it streams by.
                self.sliceTee = SliceTee(key: key, geometry: geometry)
            }
            if decision.storable, self.sliceTee == nil, let length = self.expectedLength, length > self.storeLimit {
                decision.storable = false
                decision.reason = .tooLarge
                self.counters.increment(.objectsNotStoredTooLarge)
            }
            if decision.storable {
                var stored = headers
                stored.remove(name: "age")
                for name in decision.omittedFields {
                    stored.remove(name: name)
                }
                for name in TargetedCacheControl.fieldsToStripBeforeForwarding() {
                    stored.remove(name: name)
                }
                self.storedHeaders = stored
                self.accumulated = self.sliceTee == nil ? self.allocator.buffer(capacity: self.expectedLength ?? 0) : nil
                cacheStatus.stored = true
                cacheStatus.ttl = Int(decision.ttl - (self.responseTime - decision.origin))
                if self.sliceProbe != nil {
                    // The slice is kept and stored with its marker; the client (and every waiter,
                    // told to look again) is then answered from the slices.
                    self.decision = decision
                    self.probeCacheStatus = cacheStatus
                    return self.dispatch(.backendHead(.notModified))
                }
                // Waiters may start streaming now.
                self.busy?.publishHead(
                    BusyFetch.Head(
                        status: status, reason: reasonPhrase, headers: stored, varyNames: self.varyNames,
                        variant: VaryKey.variant(names: self.varyNames, requestHeaders: self.head.headers, listFields: self.server.configuration.varyListFields),
                        origin: decision.origin, ttl: decision.ttl, expectedLength: self.expectedLength))
            } else {
                self.counters.increment(.objectsNotStoredUncacheable)
                cacheStatus.detail = decision.reason?.rawValue
                if stale != nil {
                    // The new answer is not storable: the old object must not be served any more.
                    _ = self.invalidate(key)
                }
                if status < 500 {
                    // Hit-for-miss: later requests go to the origin in parallel, not one behind
                    // another. Not for server errors: a failing origin keeps getting one fetch at a
                    // time. Not when only this request's Authorization kept it from being stored:
                    // the next anonymous request may store it.
                    if decision.reason != .authorization {
                        let now = self.server.clock()
                        self.server.coalescer.markHitForMiss(key, until: now + self.server.configuration.hitForMissTTL, now: now)
                    }
                    self.releaseBusy(.uncacheable)
                } else {
                    self.releaseBusy(.failed(.framing("origin answered \(status)")))
                }
            }
            ageHeader = String(Int(max(0, self.responseTime - decision.origin)))
            self.decision = decision
        case .pass(let cause):
            xStatus = .bypass
            (cacheStatus.fwd, cacheStatus.detail) = self.passStatus(cause)
            // vcl_backend_response runs for pass fetches too (beresp is uncacheable there): it
            // may change the status and header fields, retry or abandon.
            var passDecision = BackendResponseDecision(
                storable: false, reason: .pass, ttl: 0, grace: 0, keep: 0, mustRevalidate: false, origin: self.responseTime)
            let verdict = self.runBackendResponse(
                status: &status, reason: &reasonPhrase, headers: &headers, decision: &passDecision)
            guard self.carryOut(verdict) else { return }
            if BuiltinPolicy.invalidates(method: self.head.method), (200..<400).contains(status) {
                self.invalidateAfterUnsafeMethod(responseHeaders: headers)
            }
        }

        // Fields aimed only at this cache stop here (RFC 9213 §2.1, Edge Architecture).
        for name in TargetedCacheControl.fieldsToStripBeforeForwarding() {
            headers.remove(name: name)
            self.storedHeaders.remove(name: name)
        }
        // Response framing towards the client is ours (HARDENING.md §6).
        var out = headers
        if let ageHeader {
            out.replaceOrAdd(name: "Age", value: ageHeader)
        }
        self.addViaAndStatus(&out, xStatus: xStatus, cacheStatus: cacheStatus)
        let hasBody = Self.statusHasBody(status) && self.head.method != .HEAD
        let requestWasHeadAsGet = clientIsHead
        self.closeAfter = (self.client?.mustCloseAfter(self.head) ?? true)
        if Self.statusHasBody(status) {
            if self.expectedLength == nil {
                if requestWasHeadAsGet {
                    // Unknown length and no body to send: say nothing about framing.
                } else if self.head.version.minor >= 1 {
                    out.add(name: "Transfer-Encoding", value: "chunked")
                } else {
                    self.closeAfter = true  // HTTP/1.0 client: close-delimited
                }
            }
        }
        if self.closeAfter {
            out.replaceOrAdd(name: "Connection", value: "close")
        }
        if mode.isFill, status == 200,
            ConditionalRequest.isNotModified(
                method: self.head.method.rawValue, requestHeaders: self.head.headers, storedHeaders: headers)
        {
            // The client's own validator matches the fresh answer: 304 to it, keep filling the cache.
            out.remove(name: "content-length")
            out.remove(name: "transfer-encoding")
            self.emitHead(HTTPResponseHead(version: .http1_1, status: .notModified, headers: out))
            return self.dispatch(.backendHead(.answered(keepFetching: self.accumulated != nil)))
        }
        var outStatus = HTTPResponseStatus(statusCode: status, reasonPhrase: reasonPhrase)
        if mode.isFill, status == 200, let length = self.expectedLength, self.head.headers.contains(name: "range") {
            // A Range request that missed: the whole object is fetched (and stored), the client
            // gets its range as it streams by (Varnish does the same). Without a Content-Length
            // the range cannot be placed before the end, so the client gets the whole 200, which
            // RFC 9110 §14.2 allows.
            switch self.answerRange(&out, length: length) {
            case .whole:
                break
            case .partial(let window):
                outStatus = .partialContent
                self.fetchWindow = window
            case .unsatisfiable:
                self.emitHead(HTTPResponseHead(version: .http1_1, status: .rangeNotSatisfiable, headers: out))
                return self.dispatch(.backendHead(.answered(keepFetching: self.accumulated != nil)))
            }
        }
        self.emitHead(HTTPResponseHead(version: .http1_1, status: outStatus, headers: out))
        if mode.isFill, clientIsHead, self.accumulated == nil, Self.statusHasBody(status), self.expectedLength != 0 {
            // A HEAD answered from a body we will neither send nor store: end now and drop the connection.
            return self.dispatch(.backendHead(.answered(keepFetching: false)))
        }
        self.dispatch(.backendHead(.streaming(sendsBody: hasBody)))
    }

    /// vcl_backend_response's retry or abandon goes to the machine (the response is dropped,
    /// its connection closed: refetch, or a 503). Returns true only for `.deliver`.
    private func carryOut(_ verdict: BackendResponseVerdict) -> Bool {
        switch verdict {
        case .deliver: return true
        case .retry: self.dispatch(.backendHead(.retry))
        case .abandon: self.dispatch(.backendHead(.abandon))
        }
        return false
    }

    /// Cache-Status's forward reason and detail for a pass.
    func passStatus(_ cause: RequestStateMachine.PassCause) -> (CacheStatusValue.Forward, String) {
        switch cause {
        case .recv(let pipe):
            let safe = self.head.method == .GET || self.head.method == .HEAD
            let detail = pipe ? "pipe" : !safe ? "method" : self.head.headers.contains(name: "cookie") ? "cookie" : "vcl"
            return (safe ? .bypass : .method, detail)
        case .vcl:
            return (.bypass, "vcl")
        case .coding:
            return (.request, "gunzip-too-large")
        }
    }

    func backendResponseBody(_ buffer: ByteBuffer) {
        self.bodyBytes += buffer.readableBytes
        self.busy?.publishChunk(buffer)
        if self.sliceTee != nil {
            self.teeSlices(buffer)
        }
        if self.accumulated != nil {
            if self.accumulated!.readableBytes + buffer.readableBytes > self.storeLimit {
                self.accumulated = nil
                self.counters.increment(.objectsNotStoredTooLarge)
            } else {
                self.accumulated!.writeImmutableBuffer(buffer)
                if let expected = self.expectedLength, self.accumulated!.readableBytes == expected {
                    self.storeAccumulated()
                }
            }
        }
        // A fill stored in slices goes on without its client until its marker is stored (one
        // slice); after that, missing slices are fetched when someone asks for them.
        let needed =
            self.accumulated != nil || (self.busy?.waiterCount ?? 0) > 0 || (self.sliceTee.map { !$0.markerStored } ?? false)
        self.dispatch(.backendBody(buffer, needed: needed))
    }

    func backendResponseEnd() {
        self.lease = nil
        self.dispatch(.backendEnd)
    }

    /// The exchange ended: store the body (when complete), release the waiters.
    func completeFetch() {
        self.observeFetchDuration()
        if let expected = self.expectedLength, expected != self.bodyBytes {
            // The decoder enforces Content-Length; this is a guard against a short close-delimited body.
            self.accumulated = nil
        }
        self.storeAccumulated()
        self.accumulated = nil
        self.releaseBusy(.complete)
    }

    /// Stores the complete body (once): at the end of the response, or as soon as the last byte a
    /// Content-Length announced has arrived, before that byte goes to the client, so a client
    /// that already holds the whole response never finds the object missing.
    func storeAccumulated() {
        guard !self.storeDone else { return }
        self.storeDone = true
        if let probe = self.sliceProbe {
            return self.storeProbedSlice(probe)
        }
        if case .fill(let key, _, _) = self.machine.fetch, let decision = self.decision, decision.storable,
            var body = self.accumulated, let backendHead = self.backendHead
        {
            var headers = self.storedHeaders
            let status = Int(backendHead.status.code)
            if Self.statusHasBody(status) {
                headers.replaceOrAdd(name: "Content-Length", value: String(body.readableBytes))
            }
            if self.ctx.doGunzip, BodyTransform.isGzip(headers),
                let (plainHeaders, plainBody) = BodyTransform.gunzip(
                    headers: headers, body: body, maxOutputBytes: self.server.configuration.diskMaxBufferedObjectBytes)
            {
                // beresp.do_gunzip: stored (and later delivered) without its gzip coding. The
                // stored copy varies on what the origin said, nothing more.
                headers = plainHeaders
                headers.remove(name: "vary")
                for value in self.storedHeaders["vary"] { headers.add(name: "Vary", value: value) }
                body = plainBody
                self.counters.increment(.gunzipped)
            } else if self.server.configuration.gzipOnStore || self.ctx.doGzip, !self.ctx.doGunzip,
                self.server.memory.admits(bodyLength: body.readableBytes),
                let (gzHeaders, gzBody) = BodyTransform.gzipForStore(status: status, headers: headers, body: body)
            {
                // --gzip-on-store or beresp.do_gzip.
                headers = gzHeaders
                body = gzBody
                self.counters.increment(.gzippedOnStore)
            }
            // A gzip copy serves every client (gunzipped on the fly when needed), so Accept-Encoding
            // does not split it into variants.
            var matchNames = self.varyNames
            if BodyTransform.isGzip(headers) {
                matchNames.removeAll { $0 == "accept-encoding" }
            }
            let object = StoredObject(
                key: key,
                variant: VaryKey.variant(names: matchNames, requestHeaders: self.head.headers, listFields: self.server.configuration.varyListFields),
                varyNames: matchNames,
                status: status,
                reason: backendHead.status.reasonPhrase,
                headers: headers,
                body: body,
                requestTime: self.requestTime,
                responseTime: self.responseTime,
                origin: decision.origin,
                ttl: decision.ttl,
                grace: decision.grace,
                keep: decision.keep,
                mustRevalidate: decision.mustRevalidate, hiddenFields: self.server.memory.surrogateKeyFields)
            guard self.mayStore(object) else {
                // A PURGE or ban arrived while this fetch was in flight: it wins; the answer is not stored.
                self.counters.increment(.objectsNotStoredPurged)
                return
            }
            self.server.coalescer.clearHitForMiss(key)
            let inMemory = self.server.insertIntoMemory(object, unlessPurgedSince: self.requestTime, cold: self.slice != nil)
            let toDisk = self.server.disk?.store(object) ?? false
            if inMemory || toDisk {
                self.counters.increment(self.slice == nil ? .objectsStored : .slicesStored)
            } else {
                self.counters.increment(.objectsNotStoredTooLarge)
            }
        }
    }

    /// The running fetch ended (its body complete, or failed): its duration goes to its
    /// backend's histogram, once.
    func observeFetchDuration() {
        guard let backend = self.timedFetch else { return }
        self.timedFetch = nil
        backend.fetchDurations.observe(seconds: self.server.clock() - self.requestTime)
    }

    func backendFailed(_ error: BackendError, beforeHead: Bool) {
        self.observeFetchDuration()
        self.lease = nil
        self.accumulated = nil
        let retryable = Self.mayRetry(
            error: error, alreadyRetried: false, idempotent: self.isIdempotent, bodyStreamed: self.machine.bodyStreamed)
        if self.machine.retriesClosedConnection(beforeHead: beforeHead, retryable: retryable) {
            self.counters.increment(.backendRetry)
        } else {
            if Self.countsAgainstBackend(error) {
                self.recordPassiveHealth(failed: true)
            }
            self.counters.increment(.fetchFailed)
            switch error {
            case .connectFailed, .connectTimeout: self.counters.increment(.fetchConnectFailed)
            case .firstByteTimeout, .betweenBytesTimeout, .queueTimeout: self.counters.increment(.fetchTimeout)
            case .framing: self.counters.increment(.fetchFramingError)
            case .headersTooLarge: self.counters.increment(.fetchTooLargeHeaders)
            default: break
            }
            self.server.logger.warning(
                "backend fetch failed",
                metadata: ["xid": "\(self.xid)", "url": "\(self.head.uri)", "error": "\(error)"])
        }
        self.dispatch(.backendFailed(error, beforeHead: beforeHead, retryable: retryable, now: self.server.clock()))
    }

    /// Failures that say something about the backend's health (not our own limits or choices).
    static func countsAgainstBackend(_ error: BackendError) -> Bool {
        switch error {
        case .connectFailed, .connectTimeout, .firstByteTimeout, .betweenBytesTimeout, .closedBeforeHead, .closedMidBody,
            .framing, .headersTooLarge:
            true
        case .queueTimeout, .noBackend, .allBackendsSick:
            false
        }
    }

    /// Reports the fetch's outcome to its backend's passive health (once per fetch).
    private func recordPassiveHealth(failed: Bool) {
        guard let backend = self.fetchBackend else { return }
        self.fetchBackend = nil
        switch backend.recordFetch(failed: failed, now: self.server.clock()) {
        case .opened:
            self.counters.increment(.backendCircuitOpened)
            self.server.logger.warning(
                "backend is sick: failed fetches in a row (passive health)",
                metadata: ["backend": "\(backend.name)", "xid": "\(self.xid)"])
        case .recovered:
            self.server.logger.notice(
                "backend is healthy again: a trial fetch succeeded (passive health)",
                metadata: ["backend": "\(backend.name)", "xid": "\(self.xid)"])
        case .none:
            break
        }
    }

    private var isIdempotent: Bool {
        switch self.head.method {
        case .GET, .HEAD, .OPTIONS, .PUT, .DELETE, .TRACE: true
        default: false
        }
    }

    /// RFC 9111 §4.4: a non-error answer to an unsafe method invalidates the target URI and the
    /// same-origin Location / Content-Location URIs.
    private func invalidateAfterUnsafeMethod(responseHeaders: HTTPHeaders) {
        var targets = [self.head.uri]
        for name in ["location", "content-location"] {
            if let value = responseHeaders.first(name: name), let target = self.sameOriginTarget(value) {
                targets.append(target)
            }
        }
        for target in targets {
            let removed = self.invalidate(BuiltinPolicy.hash(target: target, host: self.host))
            if removed > 0 {
                self.counters.increment(.invalidations, by: removed)
            }
        }
    }

    /// The origin-form target of a same-origin URI reference, or nil for another origin.
    private func sameOriginTarget(_ reference: String) -> String? {
        if reference.hasPrefix("/") && !reference.hasPrefix("//") {
            return reference
        }
        let lower = reference.lowercased()
        guard lower.hasPrefix("http://") else { return nil }
        let rest = reference.dropFirst("http://".count)
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? rest.endIndex
        guard let authority = RequestValidation.normaliseHost(String(rest[..<authorityEnd])), authority == self.host else {
            return nil
        }
        let path = rest[authorityEnd...]
        return path.isEmpty ? "/" : (path.hasPrefix("?") ? "/" + path : String(path))
    }
}
