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
    /// Runs `sub`, or reports its builtin default when the configuration does not define it.
    func run(_ sub: VCLSubroutine) -> RequestStateMachine.SubResult {
        switch sub {
        case .recv:
            self.ctx.restarts = self.machine.restarts
            if self.machine.restarts > 0 { self.counters.increment(.restarts) }
            let result: RequestStateMachine.SubResult
            if let builtin = self.builtinRecv() {
                result = .returned(builtin)
            } else {
                result = self.runSub(.recv)
                if result != .failed { self.applyRequestChanges() }
            }
            if case .returned(.synth(403, _)) = result, self.head.method == .PURGE {
                self.counters.increment(.purgeDenied)
            }
            return result
        case .pass:
            self.counters.increment(.cacheBypass)
            return self.userDefines(.pass) ? self.runSub(.pass) : .builtin
        case .miss:
            let result = self.userDefines(.miss) ? self.runSub(.miss) : .builtin
            switch result {
            case .builtin, .returned(.fetch), .returned(.none):
                self.counters.increment(self.machine.missIsRefresh ? .cacheExpired : .cacheMiss)
            default:
                break
            }
            return result
        case .purge:
            // vcl_purge decides the answer (e.g. synth, or restart to refetch at once).
            guard self.userDefines(.purge) else { return .builtin }
            let result = self.runSub(.purge)
            if result != .failed { self.applyRequestChanges() }
            return result
        default:
            return self.userDefines(sub) ? self.runSub(sub) : .builtin
        }
    }

    /// Runs `sub` of the loaded VCL; a runtime failure is logged and counted (the machine
    /// decides what follows: a 503, as in Varnish).
    func runSub(_ sub: VCLSubroutine) -> RequestStateMachine.SubResult {
        let action: VCLAction
        do {
            action = try self.vcl.run(sub, context: &self.ctx)
        } catch {
            self.counters.increment(.vclFailures)
            self.server.logger.warning(
                "VCL runtime error", metadata: ["xid": "\(self.xid)", "sub": "\(sub.rawValue)", "error": "\(error)"])
            return .failed
        }
        self.applySideEffects()
        return .returned(action)
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
            let time = self.server.clock()
            guard self.server.bans.add(ban, now: time) != nil else {
                self.counters.increment(.bansRefused)
                return "too many bans"
            }
            self.counters.increment(.bansAdded)
            if let disk = self.server.disk {
                self.banCommits.append(disk.persistBan(time: time, expression: ban.text, on: self.eventLoop))
            }
            self.server.logger.notice("ban added", metadata: ["expression": "\(ban.text)", "source": "vcl", "xid": "\(self.xid)"])
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
        self.requestCacheControl = BuiltinPolicy.requestCacheControl(
            self.head.headers, ignored: self.server.configuration.ignoreRequestCacheControl)
    }

    // MARK: vcl_recv

    /// builtin.vcl's vcl_recv taken natively, when the configuration does not define vcl_recv
    /// and the request is as it arrived (no restart): GET and HEAD are looked up unless they
    /// carry a Cookie, other methods are passed. nil for the methods whose answer needs the
    /// VCL (PRI, CONNECT, TRACE, PURGE with its ACL, extension methods), which then runs.
    func builtinRecv() -> VCLAction? {
        guard self.ctx.restarts == 0, !self.userDefines(.recv) else { return nil }
        switch self.head.method {
        case .GET, .HEAD:
            return self.head.headers.contains(name: "cookie") ? .pass : .hash
        case .PURGE, .CONNECT, .TRACE:
            return nil
        case let method where method.rawValue == "PRI" || ExtensionMethods.isUnknownToParser(method.rawValue):
            // PRI, and extension methods, which builtin.vcl answers 501.
            return nil
        default:
            return .pass
        }
    }

    // MARK: vcl_hash

    /// Runs vcl_hash and returns the key from its hash_data() calls.
    func computeKey() -> CacheKey? {
        if !self.userDefines(.hash), let host = self.head.headers.first(name: "host") {
            // builtin.vcl's vcl_hash, natively: hash_data(req.url); hash_data(req.http.host).
            return BuiltinPolicy.hash(target: self.head.uri, host: host)
        }
        self.ctx.hashParts.removeAll(keepingCapacity: true)
        guard self.runSub(.hash) != .failed else { return nil }
        if self.ctx.hashParts.isEmpty {
            return BuiltinPolicy.hash(target: self.head.uri, host: self.host)
        }
        return CacheKey(parts: self.ctx.hashParts)
    }

    // MARK: vcl_hit

    /// Runs vcl_hit on `copy` with obj.* set from it.
    func runHit(_ copy: StaleCopy) -> RequestStateMachine.SubResult {
        guard self.userDefines(.hit) else { return .builtin }
        let now = self.server.clock()
        switch copy {
        case .memory(let object): self.exposeObject(object, now: now)
        case .disk(let head): self.exposeObject(head, now: now)
        }
        return self.runSub(.hit)
    }

    private func exposeObject(_ object: some CacheCandidate, now: Double) {
        self.ctx.objStatus = object.status
        self.ctx.objReason = object.reason
        self.ctx.objHeaders = object.headers
        self.ctx.objTTL = object.origin + object.ttl - now
        self.ctx.objGrace = object.grace
        self.ctx.objKeep = object.keep
        self.ctx.objAge = max(0, now - object.origin)
    }

    // MARK: vcl_backend_fetch

    /// Runs vcl_backend_fetch on the backend request being prepared and applies what it changed.
    func runBackendFetch(_ request: inout HTTPRequestHead) -> RequestStateMachine.SubResult {
        guard self.userDefines(.backendFetch) else { return .builtin }
        self.ctx.bereqMethod = request.method.rawValue
        self.ctx.bereqURL = request.uri
        self.ctx.bereqHeaders = request.headers
        let result = self.runSub(.backendFetch)
        switch result {
        case .returned(.fetch), .returned(.none):
            request.method = HTTPMethod(rawValue: self.ctx.bereqMethod)
            request.uri = self.ctx.bereqURL
            request.headers = self.ctx.bereqHeaders
        default:
            break
        }
        return result
    }

    // MARK: vcl_backend_response

    enum BackendResponseVerdict {
        case deliver
        case retry
        case abandon
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
    /// otherwise (synth, or a failure): nothing of this response is written then, and the
    /// machine takes the synthetic answer instead.
    func runDeliver(_ head: inout HTTPResponseHead) -> Bool {
        guard self.userDefines(.deliver) else { return true }
        self.ctx.respStatus = Int(head.status.code)
        self.ctx.respReason = head.status.reasonPhrase
        self.ctx.respHeaders = head.headers
        let result = self.runSub(.deliver)
        switch result {
        case .builtin, .returned(.deliver), .returned(.none):
            if self.ctx.respStatus != Int(head.status.code) || self.ctx.respReason != head.status.reasonPhrase {
                head.status = HTTPResponseStatus(statusCode: self.ctx.respStatus, reasonPhrase: self.ctx.respReason)
            }
            head.headers = self.ctx.respHeaders
            return true
        case .failed:
            self.replaceResponse(status: 503, reason: "VCL failure in vcl_deliver")
        case .returned(.synth(let status, let reason)):
            self.replaceResponse(status: status, reason: reason ?? RequestStateMachine.standardReason(status))
        case .returned(let other):
            // restart from vcl_deliver would need the response being delivered to be dropped.
            self.replaceResponse(status: 503, reason: "vcl_deliver returned \(other), which Lacquer does not support there")
        }
        return false
    }

    private func replaceResponse(status: Int, reason: String) {
        self.bodySuppressed = true
        self.dispatch(.deliverReplaced(status: status, reason: reason))
    }

    /// Writes a response head to the client through vcl_deliver; false when nothing was written.
    @discardableResult
    func emitHead(_ head: HTTPResponseHead) -> Bool {
        guard let client = self.client else { return false }
        var head = head
        // vcl_deliver runs on what the client gets: a slice's sub-request only feeds the
        // response of the request it serves, which runs vcl_deliver itself.
        guard self.slice != nil || self.runDeliver(&head) else { return false }
        client.writeHead(head)
        return true
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

    /// Runs vcl_synth with resp.* set to the answer being made.
    func runSynth(status: Int, reason: String) -> RequestStateMachine.SubResult {
        guard self.userDefines(.synth) else { return .builtin }
        self.ctx.respStatus = status
        self.ctx.respReason = reason
        self.ctx.respHeaders = HTTPHeaders()
        self.ctx.syntheticBody = nil
        return self.runSub(.synth)
    }

    // MARK: vcl_backend_error

    /// Runs vcl_backend_error for a fetch that failed with no stale copy to stand in.
    func runBackendError(_ error: BackendError) -> RequestStateMachine.SubResult {
        guard self.userDefines(.backendError) else { return .builtin }
        self.ctx.berespStatus = 503
        self.ctx.berespReason = HTTPResponseStatus(statusCode: 503).reasonPhrase
        self.ctx.berespHeaders = HTTPHeaders()
        self.ctx.syntheticBody = nil
        return self.runSub(.backendError)
    }
}
