import CachePolicy
import CacheStore
import NIOCore
import NIOHTTP1

/// A 304 answer to a conditional fill: the stale copy it confirms, and the 304's fields.
struct Revalidation {
    var key: CacheKey
    var stale: StaleCopy
    var fwd: CacheStatusValue.Forward
    var notModifiedHeaders: HTTPHeaders
}

/// Revalidation (RFC 9111 §4.3.3, §4.3.4): the stored copy's header fields are updated with the
/// 304's (except the ones that describe the stored body), freshness is recomputed from the merged
/// fields, the updated object replaces the old one in both tiers, and the client gets it as
/// REVALIDATED (or a 304 of its own when its validators match).
extension RequestFlow {
    func completeRevalidation(_ revalidation: Revalidation) {
        guard NotModifiedMerge.selects(stored: revalidation.stale.headers, notModified: revalidation.notModifiedHeaders) else {
            // A 304 for another representation than the one stored (RFC 9111 §4.3.4): it
            // updates nothing; fetch the object afresh.
            return self.refetchWithoutValidators(revalidation)
        }
        switch revalidation.stale {
        case .memory(let object):
            self.serveRevalidated(revalidation, status: object.status, reason: object.reason, body: object.body)
        case .disk(let head):
            guard let disk = self.server.disk else {
                return self.refetchWithoutValidators(revalidation)
            }
            let loopBound = NIOLoopBound(self, eventLoop: self.eventLoop)
            disk.load(head, on: self.eventLoop).whenComplete { result in
                let flow = loopBound.value
                switch result {
                case .success(let object):
                    flow.serveRevalidated(revalidation, status: object.status, reason: object.reason, body: object.body)
                case .failure(let error):
                    disk.noteReadFailure(error, key: head.key)
                    flow.refetchWithoutValidators(revalidation)
                }
            }
        }
    }

    /// The stored body is gone (checksum failure): fetch the object afresh.
    private func refetchWithoutValidators(_ revalidation: Revalidation) {
        self.dispatch(.revalidated(ok: false))
    }

    private func serveRevalidated(_ revalidation: Revalidation, status: Int, reason: String, body: ByteBuffer) {
        var merged = NotModifiedMerge.merge(stored: revalidation.stale.headers, notModified: revalidation.notModifiedHeaders)
        if self.server.configuration.limits.responseHeadersExceed(merged) {
            // The 304's fields would make a stored head over the response limits (Squid
            // CVE-2023-5824): no merge; the old copy goes, and the object is fetched afresh.
            self.counters.increment(.fetchTooLargeHeaders)
            _ = self.invalidate(revalidation.key)
            return self.refetchWithoutValidators(revalidation)
        }
        merged.remove(name: "age")
        for name in TargetedCacheControl.fieldsToStripBeforeForwarding() {
            merged.remove(name: name)
        }
        // A stored 206 (a sliced object's marker, a slice, part of a representation) was stored
        // as its 200 would be.
        let decision = BuiltinPolicy.backendResponse(
            method: "GET", requestHeaders: self.head.headers, requestCacheControl: self.requestCacheControl,
            status: status == 206 ? 200 : status, responseHeaders: merged, requestTime: self.requestTime,
            responseTime: self.responseTime, configuration: self.server.configuration)
        for name in decision.omittedFields {
            merged.remove(name: name)
        }
        let varyNames = VaryKey.fieldNames(merged) ?? []
        let object = StoredObject(
            key: revalidation.key,
            variant: VaryKey.variant(names: varyNames, requestHeaders: self.head.headers, listFields: self.server.configuration.varyListFields),
            varyNames: varyNames,
            status: status,
            reason: reason,
            headers: merged,
            body: body,
            requestTime: self.requestTime,
            responseTime: self.responseTime,
            origin: decision.origin,
            ttl: decision.ttl,
            grace: decision.grace,
            keep: decision.keep,
            mustRevalidate: decision.mustRevalidate, hiddenFields: self.server.memory.surrogateKeyFields)
        var cacheStatus = CacheStatusValue(fwd: revalidation.fwd, fwdStatus: 304)
        if decision.storable && VaryKey.fieldNames(merged) != nil && self.mayStore(object) {
            _ = self.server.insertIntoMemory(object, unlessPurgedSince: self.requestTime, cold: self.slice != nil)
            self.server.disk?.store(object)
            cacheStatus.stored = true
            cacheStatus.ttl = Int((object.remainingTTL(at: self.responseTime)).rounded(.down))
            self.counters.increment(.objectsStored)
        } else {
            // The 304 made the response unstorable (e.g. `no-store` now): serve it once, drop the old copy.
            _ = self.invalidate(revalidation.key)
            cacheStatus.detail = decision.reason?.rawValue
        }
        self.counters.increment(.cacheRevalidated)
        // Waiters look up again and find the updated object.
        self.releaseBusy(.retryLookup)
        self.revalidated = (object, cacheStatus, .revalidated)
        self.dispatch(.revalidated(ok: true))
    }
}
