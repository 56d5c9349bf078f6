import CachePolicy
import CacheStore
import Logging
import NIOCore
import NIOHTTP1
import VCL

/// Running the loaded VCL at each step of the flow, and applying what it changed.
///
/// Subs a configuration does not define run builtin.vcl's code; where that code only returns
/// the step's default action (vcl_hit's freshness and grace test, which the RFC lookup already
/// made; vcl_miss, vcl_pass, vcl_deliver, vcl_backend_fetch, vcl_backend_response) the flow
/// takes that action without evaluating it. builtin vcl_recv and vcl_hash are taken natively for
/// the requests whose answer needs no ACL or synthetic response (see `builtinRecv`).
extension RequestFlow {
    /// How many times a request may restart before it ends in a 503 (Varnish's max_restarts).
    static let maxRestarts = 4
    /// How many times a fetch may be retried from VCL (Varnish's max_retries).
    static let maxRetries = 4

    /// Runs `sub`; nil when it failed at runtime, in which case the request has been answered
    /// with a 503 (that request only).
    func runSub(_ sub: VCLSubroutine) -> VCLAction? {
        let action: VCLAction
        do {
            action = try self.vcl.run(sub, context: &self.ctx)
        } catch {
            self.counters.increment(.vclFailures)
            self.server.logger.warning(
                "VCL runtime error", metadata: ["xid": "\(self.xid)", "sub": "\(sub.rawValue)", "error": "\(error)"])
            if !self.finished && !self.clientIsGone {
                // As in Varnish: the request ends in vcl_synth with a 503 (natively when the
                // failure was in vcl_synth itself).
                if sub == .synth {
                    self.nativeSynth(status: 503, reason: "VCL failure in \(sub.rawValue)", body: nil)
                } else {
                    self.synth(status: 503, reason: "VCL failure in \(sub.rawValue)")
                }
            }
            return nil
        }
        self.applySideEffects()
        return action
    }

    func userDefines(_ sub: VCLSubroutine) -> Bool {
        self.vcl.userDefined.contains(sub)
    }

    private func applySideEffects() {
        if !self.ctx.logLines.isEmpty {
            for line in self.ctx.logLines {
                self.server.logger.info("\(line)", metadata: ["xid": "\(self.xid)", "source": "vcl"])
            }
            self.ctx.logLines.removeAll()
        }
        if !self.ctx.bans.isEmpty {
            for expression in self.ctx.bans {
                self.addBan(expression)
            }
            self.ctx.bans.removeAll()
        }
    }

    /// Adds a ban; a bad expression is logged and counted (as in Varnish, VCL goes on).
    @discardableResult
    func addBan(_ expression: String) -> String? {
        do {
            let ban = try VCLBan.parse(expression)
            guard self.server.bans.add(ban, now: self.server.clock()) else {
                self.counters.increment(.bansRefused)
                return "too many bans"
            }
            self.counters.increment(.bansAdded)
            return nil
        } catch {
            self.counters.increment(.bansRefused)
            self.server.logger.warning("ban refused", metadata: ["xid": "\(self.xid)", "error": "\(error)"])
            return error.description
        }
    }

    /// Takes the request head back from VCL after vcl_recv (method, URL, headers, host).
    func applyRequestChanges() {
        if self.ctx.reqMethod != self.head.method.rawValue {
            self.head.method = HTTPMethod(rawValue: self.ctx.reqMethod)
        }
        if self.ctx.reqURL != self.head.uri {
            self.head.uri = self.ctx.reqURL
        }
        self.head.headers = self.ctx.reqHeaders
        if let host = self.ctx.reqHeaders.first(name: "host"), host != self.host {
            self.host = RequestValidation.normaliseHost(host) ?? host.lowercased()
        }
        self.requestCacheControl = BuiltinPolicy.requestCacheControl(self.head.headers)
    }

    // MARK: vcl_recv

    func recv() {
        let action: VCLAction
        if let builtin = self.builtinRecv() {
            action = builtin
        } else {
            guard let evaluated = self.runSub(.recv) else { return }
            self.applyRequestChanges()
            action = evaluated
        }
        switch action {
        case .hash, .lookup:
            self.lookup()
        case .pass, .pipe:
            // pipe is carried out as pass: the request and its answer go through unstored.
            let safe = self.head.method == .GET || self.head.method == .HEAD
            let detail = action == .pipe ? "pipe" : !safe ? "method" : self.head.headers.contains(name: "cookie") ? "cookie" : "vcl"
            self.passThrough(fwd: safe ? .bypass : .method, detail: detail)
        case .purge:
            self.purge()
        case .synth(let status, let reason):
            if self.head.method == .PURGE && status == 403 {
                self.counters.increment(.purgeDenied)
            }
            self.synth(status: status, reason: reason ?? Self.standardReason(status))
        case .restart:
            self.restart()
        default:
            self.synth(status: 503, reason: "vcl_recv returned \(action)")
        }
    }

    /// builtin.vcl's vcl_recv taken natively, when the configuration does not define vcl_recv
    /// and the request is as it arrived (no restart): GET and HEAD are looked up unless they
    /// carry a Cookie, other methods are passed. nil for the methods whose answer needs the
    /// VCL (PRI, CONNECT, TRACE, and PURGE with its ACL), which then runs.
    func builtinRecv() -> VCLAction? {
        guard self.ctx.restarts == 0, !self.userDefines(.recv) else { return nil }
        switch self.head.method {
        case .GET, .HEAD:
            return self.head.headers.contains(name: "cookie") ? .pass : .hash
        case .PURGE, .CONNECT, .TRACE:
            return nil
        case let method where method.rawValue == "PRI":
            return nil
        default:
            return .pass
        }
    }

    /// `return (restart)`: the request starts over at vcl_recv with what VCL changed.
    func restart() {
        self.ctx.restarts += 1
        guard self.ctx.restarts <= Self.maxRestarts else {
            return self.synth(status: 503, reason: "Too many restarts")
        }
        self.counters.increment(.restarts)
        self.recv()
    }

    // MARK: vcl_hash

    /// Runs vcl_hash and returns the key from its hash_data() calls.
    func computeKey() -> CacheKey? {
        if !self.userDefines(.hash), let host = self.head.headers.first(name: "host") {
            // builtin.vcl's vcl_hash, natively: hash_data(req.url); hash_data(req.http.host).
            return BuiltinPolicy.hash(target: self.head.uri, host: host)
        }
        self.ctx.hashParts.removeAll(keepingCapacity: true)
        guard self.runSub(.hash) != nil else { return nil }
        if self.ctx.hashParts.isEmpty {
            return BuiltinPolicy.hash(target: self.head.uri, host: self.host)
        }
        return CacheKey(parts: self.ctx.hashParts)
    }

    // MARK: vcl_pass

    func passThrough(fwd: CacheStatusValue.Forward, detail: String) {
        self.counters.increment(.cacheBypass)
        if self.userDefines(.pass) {
            guard let action = self.runSub(.pass) else { return }
            switch action {
            case .fetch, .none: break
            case .synth(let status, let reason): return self.synth(status: status, reason: reason ?? Self.standardReason(status))
            case .restart: return self.restart()
            default: return self.synth(status: 503, reason: "vcl_pass returned \(action)")
            }
        }
        self.fetch(.pass(fwd: fwd, detail: detail))
    }

    // MARK: vcl_hit

    enum HitVerdict {
        /// Go on as the RFC lookup decided (builtin vcl_hit: deliver while fresh or in grace).
        case proceed
        /// `return (deliver)` on an object the lookup would refetch: serve it, refresh behind.
        case deliverStale
        case miss
        case pass
        /// Answered (synth, restart, failure).
        case handled
    }

    func runHit(_ object: some CacheCandidate, now: Double, lookupWouldRefetch: Bool) -> HitVerdict {
        guard self.userDefines(.hit) else { return .proceed }
        self.ctx.objStatus = object.status
        self.ctx.objReason = object.reason
        self.ctx.objHeaders = object.headers
        self.ctx.objTTL = object.origin + object.ttl - now
        self.ctx.objGrace = object.grace
        self.ctx.objKeep = object.keep
        self.ctx.objAge = max(0, now - object.origin)
        guard let action = self.runSub(.hit) else { return .handled }
        switch action {
        case .deliver, .none:
            return lookupWouldRefetch ? .deliverStale : .proceed
        case .miss:
            return .miss
        case .pass:
            return .pass
        case .synth(let status, let reason):
            self.synth(status: status, reason: reason ?? Self.standardReason(status))
            return .handled
        case .restart:
            self.restart()
            return .handled
        default:
            self.synth(status: 503, reason: "vcl_hit returned \(action)")
            return .handled
        }
    }

    // MARK: vcl_miss

    /// Runs vcl_miss; false when the request went another way (pass, synth, restart).
    func runMiss() -> Bool {
        guard self.userDefines(.miss) else { return true }
        guard let action = self.runSub(.miss) else { return false }
        switch action {
        case .fetch, .none:
            return true
        case .pass:
            self.passThrough(fwd: .bypass, detail: "vcl")
        case .synth(let status, let reason):
            self.synth(status: status, reason: reason ?? Self.standardReason(status))
        case .restart:
            self.restart()
        default:
            self.synth(status: 503, reason: "vcl_miss returned \(action)")
        }
        return false
    }

    // MARK: vcl_backend_fetch

    /// Runs vcl_backend_fetch on the backend request; false when VCL abandoned the fetch.
    func runBackendFetch(_ request: inout HTTPRequestHead) -> Bool {
        guard self.userDefines(.backendFetch) else { return true }
        self.ctx.bereqMethod = request.method.rawValue
        self.ctx.bereqURL = request.uri
        self.ctx.bereqHeaders = request.headers
        guard let action = self.runSub(.backendFetch) else { return false }
        switch action {
        case .fetch, .none:
            request.method = HTTPMethod(rawValue: self.ctx.bereqMethod)
            request.uri = self.ctx.bereqURL
            request.headers = self.ctx.bereqHeaders
            return true
        default:
            self.synth(status: 503, reason: "Backend fetch abandoned by VCL")
            return false
        }
    }

    // MARK: vcl_backend_response

    enum BackendResponseVerdict {
        case deliver
        case retry
        case abandon
    }

    /// Carries out vcl_backend_response's retry or abandon (the backend response is dropped and its
    /// connection closed: refetch, or a 503). Returns true only for `.deliver`.
    func carryOut(_ verdict: BackendResponseVerdict) -> Bool {
        if case .deliver = verdict { return true }
        self.lease?.connection.abandon()
        self.lease = nil
        self.backendHead = nil
        if case .retry = verdict, self.ctx.bereqRetries < Self.maxRetries, !self.bodyStreamed {
            self.ctx.bereqRetries += 1
            self.fetch(self.mode)
            return false
        }
        // A no-op for a pass, which leads no busy fetch.
        self.releaseBusy(.failed(.framing("abandoned by VCL")))
        self.synth(status: 503, reason: "Backend response abandoned by VCL")
        return false
    }

    /// Runs vcl_backend_response with beresp.* set from the response and the RFC decision, and
    /// applies what it changed: TTL, grace, keep, uncacheable, status, reason and header fields.
    func runBackendResponse(
        status: inout Int, reason: inout String, headers: inout HTTPHeaders, decision: inout BackendResponseDecision
    ) -> BackendResponseVerdict {
        guard self.userDefines(.backendResponse) else { return .deliver }
        let age = max(0, self.responseTime - decision.origin)
        self.ctx.berespStatus = status
        self.ctx.berespReason = reason
        self.ctx.berespHeaders = headers
        self.ctx.berespAge = age
        self.ctx.berespTTL = decision.storable ? decision.ttl - age : 0
        self.ctx.berespGrace = decision.grace
        self.ctx.berespKeep = decision.keep
        self.ctx.berespUncacheable = decision.reason == .pass
        self.ctx.bereqMethod = self.head.method.rawValue
        self.ctx.bereqURL = self.head.uri
        let before = (ttl: self.ctx.berespTTL, grace: self.ctx.berespGrace, keep: self.ctx.berespKeep)
        let action: VCLAction
        do {
            action = try self.vcl.run(.backendResponse, context: &self.ctx)
        } catch {
            self.counters.increment(.vclFailures)
            self.server.logger.warning(
                "VCL runtime error", metadata: ["xid": "\(self.xid)", "sub": "vcl_backend_response", "error": "\(error)"])
            return .abandon
        }
        self.applySideEffects()
        switch action {
        case .retry: return .retry
        case .abandon: return .abandon
        default: break
        }
        status = self.ctx.berespStatus
        reason = self.ctx.berespReason
        headers = self.ctx.berespHeaders
        let changed = before.ttl != self.ctx.berespTTL || before.grace != self.ctx.berespGrace || before.keep != self.ctx.berespKeep
        if self.ctx.berespUncacheable {
            decision.storable = false
            decision.reason = .vcl
        } else if changed {
            // VCL set the lifetime: it decides, as in Varnish (unless storing cannot work).
            if decision.storable || !(decision.reason?.isHard ?? false) {
                decision.storable = self.ctx.berespTTL + self.ctx.berespGrace + self.ctx.berespKeep > 0
                decision.reason = decision.storable ? nil : .vclTTL
                decision.ttl = max(0, self.ctx.berespTTL) + age
                decision.grace = self.ctx.berespGrace
                decision.keep = self.ctx.berespKeep
            }
        }
        return .deliver
    }

    // MARK: vcl_deliver

    /// Runs vcl_deliver on a response head about to be written. Returns false when VCL answered
    /// otherwise (synth): the caller then writes nothing more.
    func runDeliver(_ head: inout HTTPResponseHead) -> Bool {
        guard self.userDefines(.deliver) else { return true }
        self.ctx.respStatus = Int(head.status.code)
        self.ctx.respReason = head.status.reasonPhrase
        self.ctx.respHeaders = head.headers
        guard let action = self.runSub(.deliver) else {
            self.bodySuppressed = true
            return false
        }
        switch action {
        case .deliver, .none:
            if self.ctx.respStatus != Int(head.status.code) || self.ctx.respReason != head.status.reasonPhrase {
                head.status = HTTPResponseStatus(statusCode: self.ctx.respStatus, reasonPhrase: self.ctx.respReason)
            }
            head.headers = self.ctx.respHeaders
            return true
        case .synth(let status, let reason):
            self.bodySuppressed = true
            self.synth(status: status, reason: reason ?? Self.standardReason(status))
            return false
        default:
            // restart from vcl_deliver would need the response being delivered to be dropped.
            self.bodySuppressed = true
            self.synth(status: 503, reason: "vcl_deliver returned \(action), which Lacquer does not support there")
            return false
        }
    }

    /// Writes a response head to the client through vcl_deliver.
    func emitHead(_ head: HTTPResponseHead) {
        var head = head
        guard self.runDeliver(&head) else { return }
        self.client?.writeHead(head)
    }

    /// Writes body bytes unless vcl_deliver replaced the response.
    func emitBody(_ buffer: ByteBuffer) {
        guard !self.bodySuppressed else { return }
        self.client?.writeBody(buffer)
    }

    /// Writes the last body bytes of a response whose end follows at once (one flush).
    func emitFinalBody(_ buffer: ByteBuffer) {
        guard !self.bodySuppressed else { return }
        self.client?.writeFinalBody(buffer)
    }

    // MARK: vcl_synth

    /// A response of our own, through vcl_synth when the configuration defines it.
    func synth(status: Int, reason: String, body: String? = nil) {
        guard self.userDefines(.synth), !self.inSynth else {
            return self.nativeSynth(status: status, reason: reason, body: body)
        }
        self.inSynth = true
        self.ctx.respStatus = status
        self.ctx.respReason = reason
        self.ctx.respHeaders = HTTPHeaders()
        self.ctx.syntheticBody = nil
        guard let action = self.runSub(.synth) else { return }
        switch action {
        case .restart where self.ctx.restarts < Self.maxRestarts:
            self.inSynth = false
            return self.restart()
        default:
            break
        }
        let text = self.ctx.syntheticBody ?? body ?? ""
        self.writeSynthetic(
            status: self.ctx.respStatus, reason: self.ctx.respReason, extraHeaders: self.ctx.respHeaders, body: text)
    }

    /// The standard reason phrase for `status`.
    static func standardReason(_ status: Int) -> String {
        HTTPResponseStatus(statusCode: status).reasonPhrase
    }

    // MARK: vcl_backend_error

    /// A failed fetch with no stale copy to stand in: vcl_backend_error when the configuration
    /// defines it (deliver its synthetic answer, retry, or abandon), else the short error.
    func backendErrorResponse(_ error: BackendError) {
        guard self.userDefines(.backendError) else {
            return self.synth(status: error.status, reason: error.description)
        }
        self.ctx.berespStatus = 503
        self.ctx.berespReason = HTTPResponseStatus(statusCode: 503).reasonPhrase
        self.ctx.berespHeaders = HTTPHeaders()
        self.ctx.syntheticBody = nil
        guard let action = self.runSub(.backendError) else { return }
        switch action {
        case .retry where self.ctx.bereqRetries < Self.maxRetries && !self.bodyStreamed:
            self.ctx.bereqRetries += 1
            self.fetch(self.mode)
        case .abandon, .retry:
            self.nativeSynth(status: 503, reason: error.description, body: nil)
        default:
            self.writeSynthetic(
                status: self.ctx.berespStatus, reason: self.ctx.berespReason, extraHeaders: self.ctx.berespHeaders,
                body: self.ctx.syntheticBody ?? "")
        }
    }
}
