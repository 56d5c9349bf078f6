import CachePolicy
import CacheStore
import NIOCore
import NIOHTTP1

/// Coalescing (Varnish's waiting list), background refresh and stale answers.
///
/// A miss first joins the key's busy fetch: the first request leads and fetches; the others
/// wait on it and stream its body as it arrives (`Cache-Status: …; hit; collapsed`). A waiter
/// gives up after the backend's first-byte timeout. An uncacheable answer releases every waiter
/// at once to fetch on its own, and marks the key hit-for-miss.
extension RequestFlow {
    /// `vcl_miss` with coalescing.
    func coalescedFetch(key: CacheKey, stale: StaleCopy?, fwd: CacheStatusValue.Forward) {
        if self.ctx.hashIgnoreBusy {
            // req.hash_ignore_busy: do not wait on a fetch already running for the key; fetch
            // (and store) our own, as Varnish's lookup does when told to ignore busy objects.
            return self.fetch(.fill(key: key, stale: stale, fwd: fwd))
        }
        switch self.server.coalescer.join(key, now: self.server.clock()) {
        case .leader(let busy):
            self.busy = busy
            self.fetch(.fill(key: key, stale: stale, fwd: fwd))
        case .waiter(let busy):
            self.wait(on: busy, key: key, stale: stale, fwd: fwd)
        case .hitForMiss:
            self.counters.increment(.cacheHitForMiss)
            self.fetch(.fill(key: key, stale: stale, fwd: fwd))
        }
    }

    /// Ends the busy state this flow leads, if any; idempotent.
    func releaseBusy(_ outcome: BusyFetch.Outcome) {
        guard let busy = self.busy else { return }
        self.busy = nil
        self.server.coalescer.release(busy, outcome: outcome)
    }

    // MARK: Waiting

    private func wait(on busy: BusyFetch, key: CacheKey, stale: StaleCopy?, fwd: CacheStatusValue.Forward) {
        self.counters.increment(.coalescedWaiters)
        self.waitingOn = busy
        self.waitStale = stale
        self.mode = .fill(key: key, stale: stale, fwd: fwd)
        let loopBound = NIOLoopBound(self, eventLoop: self.eventLoop)
        let subscription = busy.subscribe(on: self.eventLoop) { event in
            loopBound.value.busyEvent(event)
        }
        self.waitID = subscription.id
        let timeout = self.server.configuration.backends.first?.firstByteTimeout ?? .seconds(60)
        self.waitTimer = self.eventLoop.scheduleTask(in: timeout) {
            loopBound.value.waitTimedOut()
        }
        if let outcome = subscription.outcome {
            self.busyEvent(.finished(outcome))
        } else if subscription.hasHead {
            self.busyEvent(.head)
        }
    }

    private func stopWaiting() {
        if let busy = self.waitingOn {
            busy.unsubscribe(self.waitID)
        }
        self.waitingOn = nil
        self.waitTimer?.cancel()
        self.waitTimer = nil
    }

    private func waitTimedOut() {
        guard self.waitingOn != nil, !self.waitStreaming else { return }
        self.stopWaiting()
        self.counters.increment(.waiterTimeouts)
        self.failWaiter(.firstByteTimeout)
    }

    func busyEvent(_ event: BusyFetch.Event) {
        guard let busy = self.waitingOn, !self.finished else { return }
        switch event {
        case .head:
            guard !self.waitStreaming, let head = busy.head else { return }
            let matches = VaryKey.variant(names: head.varyNames, requestHeaders: self.head.headers) == head.variant
            if !matches || BodyTransform.needsGunzip(storedHeaders: head.headers, requestHeaders: self.head.headers) {
                // Not for us as it streams: look again once it is stored.
                return
            }
            self.waitTimer?.cancel()
            self.waitTimer = nil
            self.writeWaiterHead(head)
        case .data:
            self.pumpWait()
        case .finished(let outcome):
            if self.waitStreaming {
                if case .failed = outcome {
                    self.stopWaiting()
                    self.finished = true
                    self.client?.abort(self)
                } else {
                    self.pumpWait()
                }
                return
            }
            self.stopWaiting()
            switch outcome {
            case .complete, .retryLookup:
                self.lookupAgain()
            case .uncacheable:
                // Released at once to fetch on our own, in parallel with the others; this is
                // Varnish's hit-for-miss, met while waiting.
                self.counters.increment(.cacheHitForMiss)
                if case .fill(let key, let stale, let fwd) = self.mode {
                    self.fetch(.fill(key: key, stale: stale, fwd: fwd))
                }
            case .failed(let error):
                self.failWaiter(error)
            }
        }
    }

    private func lookupAgain() {
        self.lookupRetries += 1
        guard self.lookupRetries <= 3 else {
            // The object keeps not matching us (e.g. another variant): fetch our own.
            if case .fill(let key, let stale, let fwd) = self.mode {
                return self.fetch(.fill(key: key, stale: stale, fwd: fwd))
            }
            return
        }
        self.lookup()
    }

    private func failWaiter(_ error: BackendError) {
        if let stale = self.waitStale,
            stale.usableOnError(at: self.server.clock(), defaultWindow: self.server.configuration.defaultStaleIfError)
        {
            return self.serveStaleOnError(stale, error: error)
        }
        self.synth(status: error.status, reason: error.description)
    }

    private func writeWaiterHead(_ head: BusyFetch.Head) {
        self.waitStreaming = true
        let now = self.server.clock()
        var headers = head.headers
        headers.add(name: "Age", value: String(Int(max(0, now - head.origin))))
        let ttl = Int((head.origin + head.ttl - now).rounded(.down))
        self.addViaAndStatus(&headers, xStatus: .hit, cacheStatus: CacheStatusValue(hit: true, ttl: ttl, collapsed: true))
        self.closeAfter = (self.client?.mustCloseAfter(self.head) ?? true)
        let hasBody = Self.statusHasBody(head.status)
        if hasBody {
            if let length = head.expectedLength {
                headers.replaceOrAdd(name: "Content-Length", value: String(length))
            } else if self.head.method != .HEAD {
                if self.head.version.minor >= 1 {
                    headers.add(name: "Transfer-Encoding", value: "chunked")
                } else {
                    self.closeAfter = true
                }
            }
        }
        if self.closeAfter {
            headers.replaceOrAdd(name: "Connection", value: "close")
        }
        self.emitHead(
            HTTPResponseHead(
                version: .http1_1, status: HTTPResponseStatus(statusCode: head.status, reasonPhrase: head.reason),
                headers: headers))
        if !hasBody || self.head.method == .HEAD {
            self.stopWaiting()
            return self.finish(close: self.closeAfter)
        }
        self.pumpWait()
    }

    /// Writes what the leader has received so far; ends when the leader is done.
    ///
    /// Not re-entrant: writing a part may flush, and a flush that drains the socket reports the
    /// connection writable again from inside the write (`clientWritable` → here). Such a call only
    /// marks that the pump must look again; the offset is advanced before each write, so every
    /// byte goes out exactly once and in order.
    func pumpWait() {
        if self.waitPumping {
            self.waitPumpAgain = true
            return
        }
        self.waitPumping = true
        defer { self.waitPumping = false }
        repeat {
            self.waitPumpAgain = false
            guard let busy = self.waitingOn, self.waitStreaming, !self.finished else { return }
            if self.clientIsGone {
                return self.stopWaiting()
            }
            let (parts, outcome) = busy.body(from: self.waitOffset)
            for part in parts {
                self.waitOffset += part.readableBytes
                self.emitBody(part)
                if self.clientIsGone || self.finished { return }
                if self.client?.isWritable != true {
                    return  // resumed by `clientWritable`
                }
            }
            if parts.isEmpty, let outcome {
                self.stopWaiting()
                if case .complete = outcome {
                    self.finish(close: self.closeAfter)
                } else {
                    // The fill failed mid-body: cut the connection so the client sees a
                    // truncated response, never a clean end.
                    self.finished = true
                    self.client?.abort(self)
                }
                return
            }
            if outcome != nil { self.waitPumpAgain = true }
        } while self.waitPumpAgain
    }

    // MARK: Background refresh and stale answers

    /// Starts one background fetch to refresh `key`, unless one is already running.
    func startBackgroundRefresh(key: CacheKey, stale: StaleCopy) {
        guard case .leader(let busy) = self.server.coalescer.join(key, now: self.server.clock()) else { return }
        self.counters.increment(.backgroundRefreshes)
        var head = self.head
        head.method = .GET
        head.headers.remove(name: "cache-control")
        head.headers.remove(name: "pragma")
        let refresh = RequestFlow(
            server: self.server, client: BackgroundClient(eventLoop: self.eventLoop, peer: self.peer, local: self.local), head: head,
            host: self.host, body: nil)
        refresh.busy = busy
        refresh.ctx.backendHint = self.ctx.backendHint
        refresh.ctx.bereqBackend = self.ctx.bereqBackend
        refresh.fetch(.fill(key: key, stale: stale, fwd: .stale))
    }

    /// Stale-if-error: the origin failed and the stored copy may stand in (X-Cache-Status: STALE).
    func serveStaleOnError(_ stale: StaleCopy, error: BackendError) {
        guard !self.clientIsGone, !self.finished else { return }
        self.counters.increment(.staleServed)
        let now = self.server.clock()
        let detail = "stale-if-error"
        switch stale {
        case .memory(let object):
            let status = CacheStatusValue(
                hit: true, fwdStatus: nil, ttl: Int(object.remainingTTL(at: now).rounded(.down)), detail: detail)
            self.deliver(object, xStatus: .stale, cacheStatus: status, now: now)
        case .disk(let head):
            guard let disk = self.server.disk else { return self.synth(status: error.status, reason: error.description) }
            self.deliverFromDisk(head, disk: disk, xStatus: .stale, detail: detail)
        }
    }
}
