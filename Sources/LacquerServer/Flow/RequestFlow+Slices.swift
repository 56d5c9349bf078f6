import CachePolicy
import CacheStore
import NIOCore
import NIOHTTP1

/// Large objects in slices (see `SliceGeometry`): the first download is cut into slices as it
/// streams by (`SliceTee`); a request that finds the marker is answered from the slices
/// (`SliceWalker`), each read by a sub-request that fetches it with Range when it is missing;
/// removing the object removes its slices.
extension RequestFlow {
    /// Whether an answer of `length` bytes with these fields may be stored as slices: storable,
    /// to a GET, longer than `--slice-threshold` and one slice, with no Vary, with fields that
    /// tell its versions apart (`SliceGeometry.identifiesVersion`), not recoded on the way in.
    /// Not for a slice's own fetch.
    func maySlice(length: Int, headers: HTTPHeaders, decision: BackendResponseDecision) -> Bool {
        let configuration = self.server.configuration
        return self.slice == nil && configuration.sliceThreshold > 0 && decision.storable && self.head.method == .GET
            && self.varyNames.isEmpty && !self.ctx.doGzip && !self.ctx.doGunzip && length > configuration.sliceThreshold
            && length > configuration.sliceSize && SliceGeometry.identifiesVersion(headers)
    }

    /// The geometry a fill's whole answer is stored in, when it is stored as slices: a 200 with a
    /// Content-Length that the origin also serves in ranges (`Accept-Ranges: bytes`).
    func sliceGeometry(status: Int, headers: HTTPHeaders, decision: BackendResponseDecision) -> SliceGeometry? {
        guard status == 200, let length = self.expectedLength,
            headers["accept-ranges"].contains(where: { $0.lowercased().contains("bytes") }),
            self.maySlice(length: length, headers: headers, decision: decision)
        else { return nil }
        return SliceGeometry(size: self.server.configuration.sliceSize, length: length)
    }

    /// The slice a fill asks for instead of the whole object: for a GET whose ranges all start
    /// past the first slice (a player seeking into an object not stored yet), the slice holding
    /// the lowest one. Not with If-Range (it needs the whole answer's validators first).
    func sliceProbeTarget() -> Int? {
        let configuration = self.server.configuration
        guard self.slice == nil, !self.noSliceProbe, configuration.sliceThreshold > 0, self.head.method == .GET,
            !self.head.headers.contains(name: "if-range"), let value = self.head.headers.first(name: "range"),
            let first = RangeRequest.lowestFirstPosition(value), first >= configuration.sliceSize
        else { return nil }
        return first / configuration.sliceSize
    }

    enum ProbeAnswer {
        /// Exactly the slice asked for, of an object longer than the threshold.
        case slice(SliceFetch)
        /// Another answer (a 200 is the whole object; an error is an error): handled as usual.
        case other
        /// A 206 or 416 that is not that: ask for the whole object.
        case fetchWhole
    }

    /// What the answer to a slice probe is.
    func probeAnswer(index: Int, status: Int, headers: HTTPHeaders) -> ProbeAnswer {
        let configuration = self.server.configuration
        switch status {
        case 206:
            guard let (range, length) = RangeRequest.parseContentRange(headers.first(name: "content-range")),
                length > configuration.sliceThreshold, length > configuration.sliceSize
            else { return .fetchWhole }
            let fetch = SliceFetch(geometry: SliceGeometry(size: configuration.sliceSize, length: length), index: index)
            guard index < fetch.geometry.count, range == fetch.range else { return .fetchWhole }
            return .slice(fetch)
        case 416:
            return .fetchWhole
        default:
            return .other
        }
    }

    /// Stores the probe's slice and its marker (at the end of its body).
    func storeProbedSlice(_ probe: SliceFetch) {
        guard case .fill(let key, _, _) = self.machine.fetch, let body = self.accumulated, body.readableBytes == probe.range.count,
            self.storeSlice(probe.index, body: body, geometry: probe.geometry, base: key)
        else { return }
        self.probeMarker = self.storeMarker(key, geometry: probe.geometry)
    }

    /// The probe's body is complete: the client and the waiters are answered from the slices,
    /// or, when nothing could be stored, the whole object is fetched.
    func completeSliceProbe() {
        self.observeFetchDuration()
        if let expected = self.expectedLength, expected != self.bodyBytes {
            self.accumulated = nil
        }
        self.storeAccumulated()
        self.accumulated = nil
        guard let marker = self.probeMarker, let cacheStatus = self.probeCacheStatus else {
            self.noSliceProbe = true
            return self.dispatch(.revalidated(ok: false))
        }
        self.probeMarker = nil
        self.releaseBusy(.retryLookup)
        self.revalidated = (marker, cacheStatus, .miss)
        self.dispatch(.revalidated(ok: true))
    }

    /// A body part of a fill stored as slices: every slice it completes is stored, and the
    /// marker once slice 0 is.
    func teeSlices(_ part: ByteBuffer) {
        guard var tee = self.sliceTee else { return }
        let completed = tee.take(part, allocator: self.allocator)
        self.sliceTee = tee
        for (index, body) in completed {
            guard self.storeSlice(index, body: body, geometry: tee.geometry, base: tee.key) else {
                // A purge or ban arrived while fetching: nothing more of this answer is stored.
                self.sliceTee = nil
                return
            }
            if index == 0, !tee.markerStored {
                self.sliceTee?.markerStored = true
                self.storeMarker(tee.key, geometry: tee.geometry)
            }
        }
    }

    /// Stores slice `index` of the answer being fetched; false when a purge or ban forbids it.
    @discardableResult
    func storeSlice(_ index: Int, body: ByteBuffer, geometry: SliceGeometry, base: CacheKey) -> Bool {
        guard let decision = self.decision else { return false }
        var headers = self.storedHeaders
        headers.replaceOrAdd(name: "Content-Range", value: RangeRequest.contentRange(geometry.range(index), length: geometry.length))
        headers.replaceOrAdd(name: "Content-Length", value: String(body.readableBytes))
        let object = self.storable(key: geometry.key(base, index: index), status: 206, headers: headers, body: body, decision: decision)
        guard self.mayStore(object) else {
            self.counters.increment(.objectsNotStoredPurged)
            return false
        }
        // Slices go in at the cold end of the memory tier (see `SliceGeometry`).
        let inMemory = self.server.insertIntoMemory(object, unlessPurgedSince: self.requestTime, cold: true)
        let toDisk = self.server.disk?.store(object) ?? false
        if inMemory || toDisk { self.counters.increment(.slicesStored) }
        return true
    }

    /// Stores the marker of the object being fetched in slices (its fields, freshness and
    /// geometry; no body); returns it unless a purge or ban forbids it.
    @discardableResult
    private func storeMarker(_ key: CacheKey, geometry: SliceGeometry) -> StoredObject? {
        guard let decision = self.decision else { return nil }
        var headers = self.storedHeaders
        headers.replaceOrAdd(name: "Content-Range", value: geometry.markerContentRange)
        headers.remove(name: "content-length")
        let marker = self.storable(key: key, status: 206, headers: headers, body: ByteBuffer(), decision: decision)
        guard self.mayStore(marker) else {
            self.counters.increment(.objectsNotStoredPurged)
            return nil
        }
        self.server.coalescer.clearHitForMiss(key)
        let inMemory = self.server.insertIntoMemory(marker, unlessPurgedSince: self.requestTime)
        let toDisk = self.server.disk?.store(marker) ?? false
        if inMemory || toDisk { self.counters.increment(.objectsStored) }
        return marker
    }

    private func storable(key: CacheKey, status: Int, headers: HTTPHeaders, body: ByteBuffer, decision: BackendResponseDecision)
        -> StoredObject
    {
        StoredObject(
            key: key, variant: "", varyNames: [], status: status, reason: "Partial Content", headers: headers, body: body,
            requestTime: self.requestTime, responseTime: self.responseTime, origin: decision.origin, ttl: decision.ttl,
            grace: decision.grace, keep: decision.keep, mustRevalidate: decision.mustRevalidate,
            hiddenFields: self.server.memory.surrogateKeyFields)
    }

    /// Answers from a sliced object's marker: the whole body (a 200 of the object's length), the
    /// client's ranges (206, multipart too) or a 304 / 416, with the body read slice by slice.
    func deliverSliced(
        key: CacheKey, storedHeaders: HTTPHeaders, geometry: SliceGeometry, age: Double, xStatus: XCacheStatus,
        cacheStatus: CacheStatusValue
    ) {
        if BodyTransform.needsGunzip(storedHeaders: storedHeaders, requestHeaders: self.head.headers) {
            // A gzip body for a client that cannot take it: fetch a fresh answer for it.
            self.counters.increment(.cacheBypass)
            return self.dispatch(.codingUnavailable)
        }
        var headers = storedHeaders
        headers.remove(name: "content-range")
        let plan = self.writeStoredHead(
            status: 200, reason: "OK", storedHeaders: headers, bodyLength: geometry.length, age: age, xStatus: xStatus,
            cacheStatus: cacheStatus)
        guard !self.bodySuppressed else { return }
        let window: BodyWindow
        switch plan {
        case .none:
            return self.dispatch(.delivered)
        case .full:
            window = BodyWindow(ranges: [0...(geometry.length - 1)], multipart: nil, length: geometry.length)
        case .window(let ranges):
            window = ranges
        }
        let walker = SliceWalker(flow: self, key: key, geometry: geometry, headers: headers, window: window)
        self.sliceWalker = walker
        self.dispatch(.headWritten(.slices))
        walker.start()
    }

    /// Removes every variant of `key` from both tiers, with the slices of a sliced object
    /// stored under it: the memory copies at once (`inMemory` counts those under `key`), the disk
    /// copies in one durable commit (their lookups ignore them from now on; `committed` answers
    /// the number of objects that were under `key`).
    func removeWithSlices(_ key: CacheKey) -> (inMemory: Int, committed: EventLoopFuture<Int>) {
        let now = self.server.clock()
        self.server.coalescer.markPurged(key, at: now)
        let removed = self.server.memory.remove(key: key)
        self.forgetSlices(Set(removed.compactMap(SliceGeometry.marker)).flatMap { $0.keys(key) }, at: now)
        guard let disk = self.server.disk else {
            return (removed.count, self.eventLoop.makeSucceededFuture(removed.count))
        }
        let loopBound = NIOLoopBound(self, eventLoop: self.eventLoop)
        let committed = disk.remove(keys: [key], now: now, on: self.eventLoop) { heads in
            Set(heads.compactMap { SliceGeometry.marker(status: $0.status, headers: $0.headers, bodyLength: Int($0.bodyLength)) })
                .flatMap { $0.keys(key) }
        }.map { result in
            // Slices of a marker only the disk tier held may be in memory too.
            loopBound.value.forgetSlices(result.related, at: now)
            return max(removed.count, result.count)
        }
        return (removed.count, committed)
    }

    /// Removes slices from memory, and keeps a fill in flight from storing them.
    private func forgetSlices(_ keys: [CacheKey], at now: Double) {
        for sliceKey in keys {
            self.server.coalescer.markPurged(sliceKey, at: now)
            _ = self.server.memory.remove(key: sliceKey)
        }
    }
}

/// Stored parts of a representation (`StoredPart`, RFC 9111 §3.3).
extension RequestFlow {
    /// Leaves out of a lookup the stored parts this request cannot be answered from (all of them
    /// for a request without Range). A slice's sub-request keeps its slices: they are its objects.
    func dropPartsThatCannotAnswer<Candidate: CacheCandidate>(_ candidates: inout [Candidate]) {
        guard self.slice == nil else { return }
        candidates.removeAll { candidate in
            guard let part = StoredPart.range(status: candidate.status, headers: candidate.headers, bodyLength: candidate.storedBodyLength)
            else { return false }
            return !StoredPart.answers(
                part, storedHeaders: candidate.headers, method: self.head.method.rawValue, requestHeaders: self.head.headers)
        }
    }

    /// Answers a Range request from a stored part that holds every range it asks for.
    func deliverPart(
        _ stored: StoredObject, part: (range: ClosedRange<Int>, length: Int), age: Double, xStatus: XCacheStatus,
        cacheStatus: CacheStatusValue
    ) {
        var headers = stored.headers
        headers.remove(name: "content-range")
        let plan = self.writeStoredHead(
            status: 200, reason: "OK", storedHeaders: headers, bodyLength: part.length, age: age, xStatus: xStatus,
            cacheStatus: cacheStatus)
        switch plan {
        case .none:
            break
        case .window(let ranges):
            var window = BodyWindow(ranges: ranges.ranges, multipart: ranges.multipart, length: part.length, startingAt: part.range.lowerBound)
            if let out = window.take(stored.body) {
                self.emitFinalBody(out)
            }
        case .full:
            // The lookup took the part for this request's ranges only: never reached.
            return self.dispatch(.deliveryFailed)
        }
        if !self.bodySuppressed {
            self.dispatch(.delivered)
        }
    }
}
