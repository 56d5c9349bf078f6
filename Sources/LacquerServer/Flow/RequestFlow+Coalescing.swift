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
    /// Ends the busy state this flow leads, if any; idempotent.
    func releaseBusy(_ outcome: BusyFetch.Outcome) {
        guard let busy = self.busy else { return }
        self.busy = nil
        self.server.coalescer.release(busy, outcome: outcome)
    }

    // MARK: Waiting

    /// Subscribes to the busy fetch joined, and arms the wait timer (the backend's first-byte
    /// timeout).
    func wait() {
        guard let busy = self.waitingOn else { return }
        self.counters.increment(.coalescedWaiters)
        let loopBound = NIOLoopBound(self, eventLoop: self.eventLoop)
        let subscription = busy.subscribe(on: self.eventLoop) { event in
            loopBound.value.busyEvent(event)
        }
        self.waitID = subscription.id
        let timeout = self.server.configuration.backends.first?.firstByteTimeout ?? .seconds(60)
        self.waitTimer = self.eventLoop.scheduleTask(in: timeout) {
            let flow = loopBound.value
            guard flow.machine.waiting, flow.machine.response == .none else { return }
            flow.counters.increment(.waiterTimeouts)
            flow.dispatch(.timer(now: flow.server.clock()))
        }
        if let outcome = subscription.outcome {
            self.busyEvent(.finished(outcome))
        } else if subscription.hasHead {
            self.busyEvent(.head)
        }
    }

    func stopWaiting() {
        if let busy = self.waitingOn {
            busy.unsubscribe(self.waitID)
        }
        self.waitingOn = nil
        self.waitTimer?.cancel()
        self.waitTimer = nil
    }

    private func busyEvent(_ event: BusyFetch.Event) {
        switch event {
        case .head:
            guard let head = self.waitingOn?.head else { return }
            // Not for us as it streams (another variant, or a coding we cannot take): look
            // again once it is stored.
            let forUs =
                VaryKey.variant(names: head.varyNames, requestHeaders: self.head.headers, listFields: self.server.configuration.varyListFields) == head.variant
                && !BodyTransform.needsGunzip(storedHeaders: head.headers, requestHeaders: self.head.headers)
                && (!self.head.headers.contains(name: "authorization")
                    || Storability.sharesWithAuthorization(CacheControl(headers: head.headers)))
            self.dispatch(.busyHead(forUs: forUs))
        case .data:
            self.dispatch(.busyData)
        case .finished(let outcome):
            if case .uncacheable = outcome { self.counters.increment(.cacheHitForMiss) }
            self.dispatch(.busyFinished(outcome, now: self.server.clock()))
        }
    }

    func writeWaiterHead() {
        guard let head = self.waitingOn?.head else { return }
        self.waitTimer?.cancel()
        self.waitTimer = nil
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
        var status = HTTPResponseStatus(statusCode: head.status, reasonPhrase: head.reason)
        self.waitWindow = nil
        if head.status == 200, let length = head.expectedLength, self.head.headers.contains(name: "range") {
            // The client's range, as it streams by; the bytes before it are never read.
            switch self.answerRange(&headers, length: length) {
            case .whole:
                break
            case .partial(var window):
                status = .partialContent
                self.waitOffset = window.skipToFirstRange()
                self.waitWindow = window
            case .unsatisfiable:
                guard self.emitHead(HTTPResponseHead(version: .http1_1, status: .rangeNotSatisfiable, headers: headers)) else { return }
                return self.dispatch(.delivered)
            }
        }
        guard self.emitHead(HTTPResponseHead(version: .http1_1, status: status, headers: headers)) else { return }
        if !hasBody || self.head.method == .HEAD {
            return self.dispatch(.delivered)
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
            guard let busy = self.waitingOn, self.machine.response == .streaming(.busy), self.client != nil else { return }
            let (parts, outcome) = busy.body(from: self.waitOffset)
            for part in parts {
                self.waitOffset += part.readableBytes
                if var window = self.waitWindow {
                    let inside = window.take(part)
                    self.waitWindow = window
                    if let inside { self.emitBody(inside) }
                    if window.isComplete { return self.dispatch(.delivered) }
                } else {
                    self.emitBody(part)
                }
                guard let client = self.client, self.machine.response == .streaming(.busy) else { return }
                if !client.isWritable {
                    return  // resumed by `clientWritable`
                }
            }
            if parts.isEmpty, let outcome {
                if case .complete = outcome {
                    self.dispatch(.delivered)
                } else {
                    // The fill failed mid-body: cut the connection so the client sees a
                    // truncated response, never a clean end.
                    self.dispatch(.deliveryFailed)
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
            server: self.server, client: BackgroundClient(eventLoop: self.eventLoop, peer: self.peer, local: self.local, tls: self.tls), head: head,
            host: self.host, body: nil)
        refresh.busy = busy
        refresh.slice = self.slice
        refresh.ctx.backendHint = self.ctx.backendHint
        refresh.ctx.bereqBackend = self.ctx.bereqBackend
        refresh.dispatch(.startRefresh(key: key, stale: stale))
    }
}
