import CachePolicy
import CacheStore
import NIOCore
import NIOHTTP1
import VCL

/// Carrying out the machine's actions. Each one does its work and reports the outcome as an
/// event (at once, or when the disk, the backend or a timer answers); none decides a step.
extension RequestFlow {
    func perform(_ action: RequestStateMachine.Action) {
        switch action {
        case .runSub(let sub):
            let result = self.run(sub)
            guard !self.banCommits.isEmpty else { return self.dispatch(.sub(sub, result)) }
            // A ban() the sub (vcl_recv, vcl_miss, vcl_pass, vcl_purge) added is committed to the
            // disk tier before the request goes on (and before its answer): it outlives a crash
            // right after. Bans from other subs are committed in the background.
            let commits = self.banCommits
            self.banCommits.removeAll()
            let loopBound = NIOLoopBound(self, eventLoop: self.eventLoop)
            EventLoopFuture.andAllComplete(commits, on: self.eventLoop).whenComplete { _ in
                loopBound.value.dispatch(.sub(sub, result))
            }
        case .runHit(let copy):
            self.dispatch(.sub(.hit, self.runHit(copy)))
        case .runSynth(let status, let reason):
            self.dispatch(.sub(.synth, self.runSynth(status: status, reason: reason)))
        case .runBackendError(let error):
            self.dispatch(.sub(.backendError, self.runBackendError(error)))
        case .hash:
            guard var key = self.computeKey() else {
                return self.dispatch(.sub(.hash, .failed))
            }
            if let slice = self.slice {
                key = slice.geometry.key(key, index: slice.index)
            }
            self.dispatch(
                .hashed(
                    key, alwaysMiss: self.ctx.hashAlwaysMiss, ignoreBusy: self.ctx.hashIgnoreBusy,
                    onlyIfCached: self.requestCacheControl.onlyIfCached))
        case .lookUp(let key, .memory):
            self.lookUpMemory(key)
        case .lookUp(let key, .disk):
            self.lookUpDisk(key)
        case .purge(let key):
            self.purge(key)
        case .join(let key, let recheck):
            self.join(key, recheck: recheck)
        case .wait:
            self.wait()
        case .stopWaiting:
            self.stopWaiting()
        case .writeWaiterHead:
            self.writeWaiterHead()
        case .pumpWaiter:
            self.pumpWait()
        case .prepareFetch(let mode):
            self.prepareFetch(mode)
        case .startFetch:
            self.startFetch()
        case .abandonFetch:
            self.lease?.connection.abandon()
            self.lease = nil
        case .pauseFetch:
            self.lease?.connection.pause()
        case .resumeFetch:
            self.lease?.connection.resume()
        case .writeFetchedBody(let part):
            if var window = self.fetchWindow {
                let inside = window.take(part)
                self.fetchWindow = window
                if let inside { self.emitBody(inside) }
                if window.isComplete {
                    // The client has its range; the fetch goes on for the cache and the waiters.
                    return self.dispatch(.clientPartSent)
                }
            } else {
                self.emitBody(part)
            }
            // The write may have found the client gone (and resumed the transfer for the fill):
            // hold the backend back only for a client that is still there and cannot take more.
            if let client = self.client, !client.isWritable {
                self.lease?.connection.pause()
            }
        case .completeFetch:
            self.completeFetch()
        case .failFetch(let error):
            self.releaseBusy(.failed(error))
        case .completeRevalidation:
            if self.sliceProbe != nil { return self.completeSliceProbe() }
            guard let revalidation = self.revalidation else { return self.dispatch(.revalidated(ok: false)) }
            self.revalidation = nil
            self.completeRevalidation(revalidation)
        case .deliver(let copy, let xStatus, let detail, let refresh):
            self.deliverStored(copy, xStatus: xStatus, detail: detail, refresh: refresh)
        case .deliverRevalidated:
            guard let (object, cacheStatus, xStatus) = self.revalidated else { return }
            self.revalidated = nil
            self.deliver(object, xStatus: xStatus, cacheStatus: cacheStatus, now: self.server.clock())
        case .resumeDiskRead:
            _ = self.resumeDiskIfPaused()
        case .closeDiskReader:
            if self.diskReadPaused, let reader = self.diskReader {
                // No read is in flight while paused; otherwise the pump closes it when the read returns.
                reader.close()
                self.diskReader = nil
                self.diskReadPaused = false
            }
        case .resumeSlices:
            self.sliceWalker?.resume()
        case .closeSlices:
            self.sliceWalker?.close()
            self.sliceWalker = nil
        case .writeSynthetic(let status, let reason, let body):
            self.writeSynthetic(status: status, reason: reason, extraHeaders: nil, body: self.render(body))
        case .writeVCLSynthetic(.backendError, _):
            self.writeSynthetic(
                status: self.ctx.berespStatus, reason: self.ctx.berespReason, extraHeaders: self.ctx.berespHeaders,
                body: self.ctx.syntheticBody ?? "")
        case .writeVCLSynthetic(_, let fallback):
            self.writeSynthetic(
                status: self.ctx.respStatus, reason: self.ctx.respReason, extraHeaders: self.ctx.respHeaders,
                body: self.ctx.syntheticBody ?? self.render(fallback) ?? "")
        case .finish:
            self.client?.finishResponse(self, close: self.closeAfter)
        case .abort:
            self.client?.abort(self)
        }
    }

    /// Whether the memory tier now holds an object this request takes as a hit (the lookup rule
    /// decides). Asked once the request holds the key's busy state, so no fill can store and let
    /// go between this check and the fetch the request would lead.
    private func memoryNowAnswers(_ key: CacheKey) -> Bool {
        var variants = self.server.memory.variants(for: key)
        self.dropPartsThatCannotAnswer(&variants)
        guard !variants.isEmpty else { return false }
        let outcome = BuiltinPolicy.lookup(
            variants: variants, requestHeaders: self.head.headers, requestCacheControl: self.requestCacheControl,
            varyListFields: self.server.configuration.varyListFields, now: self.server.clock(), ttlCap: self.ctx.reqTTL,
            requestArrived: self.arrivedAt)
        if case .hit = outcome { return true }
        return false
    }

    /// Joins the key's busy fetch (Varnish's waiting list), or leads it.
    private func join(_ key: CacheKey, recheck: Bool) {
        switch self.server.coalescer.join(key, now: self.server.clock()) {
        case .leader(let busy):
            if recheck, self.memoryNowAnswers(key) {
                // A fill stored the object and let its busy state go while this request looked
                // in the tiers: take the object, not a second fetch.
                self.server.coalescer.release(busy, outcome: .retryLookup)
                return self.dispatch(.joined(.storedMeanwhile))
            }
            self.busy = busy
            self.dispatch(.joined(.leader))
        case .waiter(let busy):
            self.waitingOn = busy
            self.dispatch(.joined(.waiter))
        case .hitForMiss:
            self.counters.increment(.cacheHitForMiss)
            self.dispatch(.joined(.hitForMiss))
        }
    }
}
