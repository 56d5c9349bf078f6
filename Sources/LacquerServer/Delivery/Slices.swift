import CachePolicy
import CacheStore
import NIOCore
import NIOHTTP1

/// How a large object is cut into slices (nginx's `slice` module, ATS's `slice` plugin): slice
/// `n` holds bytes `n * size` to `min((n + 1) * size, length) - 1`, stored as an object of its
/// own under `key(_:index:)`.
///
/// A sliced object leaves a *marker* under its own key: a stored `206` with no body whose
/// `Content-Range: bytes 0-(size - 1)/length` gives the geometry, and whose other fields and
/// freshness are those of the whole response. No other stored 206 has an empty body, so such an
/// object under a request's key always means "the body is in slices". The marker is revalidated
/// like any object; the slices carry the same validators and are checked against it when read.
///
/// Slices enter the memory tier at its cold end and stay there when read (the marker is an object
/// like any other): they are the first to go, so a large download never pushes the small hot
/// objects out of memory; the disk tier keeps them, as nginx keeps its slices on disk.
struct SliceGeometry: Hashable {
    /// Bytes per slice (the last one may be shorter).
    let size: Int
    /// The whole representation's length.
    let length: Int

    var count: Int { (self.length + self.size - 1) / self.size }

    /// The bytes slice `index` holds.
    func range(_ index: Int) -> ClosedRange<Int> {
        (index * self.size)...(min((index + 1) * self.size, self.length) - 1)
    }

    /// The slice holding byte `offset`.
    func index(of offset: Int) -> Int { offset / self.size }

    /// Slice `index`'s key: the object's key parts and one more that no request can hash (VCL
    /// strings and request targets hold no control characters), naming the slice size too, so a
    /// changed `--slice-size` never mixes slices of two geometries.
    func key(_ base: CacheKey, index: Int) -> CacheKey {
        CacheKey(parts: base.parts + ["\u{1}slice \(self.size) \(index)"])
    }

    /// Every slice key of the object.
    func keys(_ base: CacheKey) -> [CacheKey] {
        (0..<self.count).map { self.key(base, index: $0) }
    }

    /// The `Content-Range` a marker carries.
    var markerContentRange: String {
        RangeRequest.contentRange(0...(self.size - 1), length: self.length)
    }

    /// The geometry a stored response stands for when it is a marker (a 206 with no body whose
    /// range starts at 0 and ends before the length), else nil.
    static func marker(status: Int, headers: @autoclosure () -> HTTPHeaders, bodyLength: Int) -> SliceGeometry? {
        guard status == 206, bodyLength == 0,
            let (range, length) = RangeRequest.parseContentRange(headers().first(name: "content-range")),
            range.lowerBound == 0, range.upperBound + 1 < length
        else { return nil }
        return SliceGeometry(size: range.count, length: length)
    }

    static func marker(_ object: StoredObject) -> SliceGeometry? {
        Self.marker(status: object.status, headers: object.headers, bodyLength: object.bodyLength)
    }

    /// Whether fields tell an object's versions apart well enough to combine slices fetched at
    /// different times (RFC 9111 §3.4): a strong ETag, or with no ETag a Last-Modified.
    static func identifiesVersion(_ headers: HTTPHeaders) -> Bool {
        if let etag = headers.first(name: "etag") { return !etag.hasPrefix("W/") }
        return headers.contains(name: "last-modified")
    }
}

/// What a slice sub-request fetches: one slice of a sliced object (set on the `RequestFlow`
/// that fetches it; its key, backend Range and what it may store follow from it).
struct SliceFetch {
    let geometry: SliceGeometry
    let index: Int

    var range: ClosedRange<Int> { self.geometry.range(self.index) }

    /// The backend request's `Range`.
    var rangeHeader: String { "bytes=\(self.range.lowerBound)-\(self.range.upperBound)" }

    /// Whether an origin answer is this slice: a 206 with exactly its range and the object's length.
    func isAnswer(status: Int, headers: HTTPHeaders) -> Bool {
        guard status == 206, let (range, length) = RangeRequest.parseContentRange(headers.first(name: "content-range")) else {
            return false
        }
        return range == self.range && length == self.geometry.length
    }
}

/// Cuts a fill's body into slices as it streams by (the first download of a large object):
/// each complete slice is handed back to be stored, nothing larger than one slice is held.
struct SliceTee {
    let key: CacheKey
    let geometry: SliceGeometry
    /// Bytes of the body seen so far.
    private(set) var offset = 0
    private var pending: ByteBuffer?
    /// Set once the marker is stored (after slice 0).
    var markerStored = false

    init(key: CacheKey, geometry: SliceGeometry) {
        self.key = key
        self.geometry = geometry
    }

    /// Takes the next part of the body; returns the slices it completed, in order.
    mutating func take(_ part: ByteBuffer, allocator: ByteBufferAllocator) -> [(index: Int, body: ByteBuffer)] {
        var completed: [(index: Int, body: ByteBuffer)] = []
        var part = part
        while part.readableBytes > 0, self.offset < self.geometry.length {
            let index = self.geometry.index(of: self.offset)
            let range = self.geometry.range(index)
            var buffer = self.pending ?? allocator.buffer(capacity: range.count)
            let take = min(part.readableBytes, range.upperBound + 1 - self.offset)
            guard let bytes = part.readSlice(length: take) else { break }
            buffer.writeImmutableBuffer(bytes)
            self.offset += take
            if self.offset == range.upperBound + 1 {
                completed.append((index, buffer))
                self.pending = nil
            } else {
                self.pending = buffer
            }
        }
        return completed
    }
}

/// Delivers a sliced object's body (the whole of it, or the client's ranges) from its slices,
/// one slice at a time, in order. Each slice is read by a sub-request, a `RequestFlow` of its own
/// for the slice's key (nginx's slice module makes subrequests the same way), so a slice is
/// looked up in memory and on disk, coalesced with other readers, revalidated, or fetched from
/// the origin with `Range` and stored, by the same rules as any object.
///
/// Each slice's answer must be a 206 of exactly that slice, with the marker's validators (ETag,
/// else Last-Modified). One that is not is fetched once more from the origin (a stored slice of
/// an older version); if the origin's answer does not fit either, the object has changed: the
/// marker and its slices are removed and the response is cut (its head is out), as nginx does on
/// a slice whose ETag differs. Slices go on only while the client can take more; a client that
/// leaves stops the walk, and a slice being fetched is still stored.
final class SliceWalker {
    private weak var flow: RequestFlow?
    let key: CacheKey
    let geometry: SliceGeometry
    private let etag: String?
    private let lastModified: String?
    private var window: BodyWindow
    private var index = 0
    /// Bytes at the start of the current slice the window does not want.
    private var skip = 0
    private var received = 0
    private var accepted = false
    private var refetched = false
    private var sub: RequestFlow?
    private var sink: SliceSink?
    private var paused = false
    private(set) var finished = false
    /// The highest slice read ahead so far.
    private var readAhead = -1

    init(flow: RequestFlow, key: CacheKey, geometry: SliceGeometry, headers: HTTPHeaders, window: BodyWindow) {
        self.flow = flow
        self.key = key
        self.geometry = geometry
        self.etag = headers.first(name: "etag")
        self.lastModified = headers.first(name: "last-modified")
        self.window = window
    }

    func start() {
        self.next()
    }

    /// The client can take more.
    func resume() {
        guard !self.finished else { return }
        if self.paused {
            self.paused = false
            self.next()
        } else {
            self.sub?.clientWritable()
        }
    }

    /// The client left: stop (a slice being fetched is still stored).
    func close() {
        self.finished = true
        self.dropSub()
    }

    /// Whether the client can take more (what a slice's delivery paces itself by).
    var clientWritable: Bool { self.flow?.client?.isWritable ?? true }

    func flushClient() { self.flow?.client?.flush() }

    /// Starts the next slice the window wants, once the client can take it.
    private func next() {
        guard !self.finished, let flow = self.flow else { return }
        guard let client = flow.client else { return self.close() }
        guard client.isWritable else {
            self.paused = true
            return
        }
        let offset = self.window.skipToNextRange()
        let index = self.geometry.index(of: offset)
        self.request(index, skip: offset - self.geometry.range(index).lowerBound, fresh: false)
    }

    private func request(_ index: Int, skip: Int, fresh: Bool) {
        guard let flow = self.flow else { return }
        self.refetched = fresh
        self.index = index
        self.skip = skip
        self.received = 0
        self.accepted = false
        let sink = SliceSink(walker: self, eventLoop: flow.eventLoop, allocator: flow.allocator, peer: flow.peer, local: flow.local, tls: flow.tls)
        let sub = RequestFlow(server: flow.server, client: sink, head: self.subHead(flow), host: flow.host, body: nil)
        sub.slice = SliceFetch(geometry: self.geometry, index: index)
        sub.ctx.backendHint = flow.ctx.backendHint
        if fresh { sub.ctx.hashAlwaysMiss = true }
        self.sub = sub
        self.sink = sink
        sub.start()
        self.readAhead(after: index)
    }

    /// Starts reading the slice after `index` while this one is sent, when the client wants some
    /// of it and memory does not hold it: a sub-request of its own whose answer goes nowhere, so
    /// the slice is fetched (or loaded from disk) and stored, and the walker finds it stored, or
    /// joins its fetch, when it gets there. The origin's latency is not paid once per slice.
    private func readAhead(after index: Int) {
        let next = index + 1
        guard !self.finished, next > self.readAhead, next < self.geometry.count, let flow = self.flow,
            let last = self.window.ranges.last?.upperBound, last >= self.geometry.range(next).lowerBound
        else { return }
        self.readAhead = next
        let key = self.geometry.key(self.key, index: next)
        guard flow.server.memory.variants(for: key).isEmpty else { return }
        let client = BackgroundClient(eventLoop: flow.eventLoop, peer: flow.peer, local: flow.local, tls: flow.tls)
        let ahead = RequestFlow(server: flow.server, client: client, head: self.subHead(flow), host: flow.host, body: nil)
        ahead.slice = SliceFetch(geometry: self.geometry, index: next)
        ahead.ctx.backendHint = flow.ctx.backendHint
        ahead.start()
    }

    /// A slice sub-request's head: the client's GET without its Range and conditional fields.
    private func subHead(_ flow: RequestFlow) -> HTTPRequestHead {
        var head = flow.head
        head.method = .GET
        for name in BackendRequest.fillStrippedFields {
            head.headers.remove(name: name)
        }
        return head
    }

    private func dropSub() {
        let sub = self.sub
        self.sub = nil
        self.sink = nil
        sub?.abandonRequest()
    }

    // MARK: What the slice's sub-request writes

    func sliceHead(_ head: HTTPResponseHead, from sink: SliceSink) {
        guard sink === self.sink, !self.finished, head.status.code >= 200 else { return }
        let status = Int(head.status.code)
        let slice = SliceFetch(geometry: self.geometry, index: self.index)
        let fits = slice.isAnswer(status: status, headers: head.headers)
        if fits, self.sameVersion(head.headers) {
            self.accepted = true
            return
        }
        self.dropSub()
        if !self.refetched && head.headers.first(name: "x-cache-status") != "MISS" {
            // A stored slice of another version, or a failed answer: ask the origin once more.
            let (index, skip) = (self.index, self.skip)
            self.refetched = true
            self.later { walker in
                guard !walker.finished else { return }
                walker.request(index, skip: skip, fresh: true)
            }
            return
        }
        if fits || status == 200 {
            // The origin's current answer is another version of the object: the marker and
            // every slice go; the next request fetches it afresh.
            self.flow?.server.counters.increment(.slicesChanged)
            _ = self.flow?.invalidate(self.key)
        }
        self.fail()
    }

    func sliceBody(_ buffer: ByteBuffer, from sink: SliceSink) {
        guard sink === self.sink, !self.finished, self.accepted, let flow = self.flow else { return }
        var part = buffer
        self.received += part.readableBytes
        guard self.received <= self.geometry.range(self.index).count else { return self.fail() }
        if self.skip > 0 {
            let dropped = min(self.skip, part.readableBytes)
            part.moveReaderIndex(forwardBy: dropped)
            self.skip -= dropped
            guard part.readableBytes > 0 else { return }
        }
        if let out = self.window.take(part) {
            flow.emitBody(out)
        }
        if self.window.isComplete {
            self.finished = true
            self.dropSub()
            flow.dispatch(.delivered)
        }
    }

    func sliceEnd(from sink: SliceSink) {
        guard sink === self.sink, !self.finished else { return }
        guard self.accepted, self.received == self.geometry.range(self.index).count else { return self.fail() }
        self.sub = nil
        self.sink = nil
        // The next slice starts from the event loop, not from inside this one's delivery: a long
        // run of stored slices never deepens the stack, and other connections get their turn.
        self.later { $0.next() }
    }

    /// Runs `work` from the event loop, after what is running now.
    private func later(_ work: @escaping (SliceWalker) -> Void) {
        guard let eventLoop = self.flow?.eventLoop else { return }
        let loopBound = NIOLoopBound((self, work), eventLoop: eventLoop)
        eventLoop.execute {
            let (walker, work) = loopBound.value
            work(walker)
        }
    }

    func sliceFailed(from sink: SliceSink) {
        guard sink === self.sink, !self.finished else { return }
        self.fail()
    }

    private func fail() {
        guard !self.finished else { return }
        self.finished = true
        self.dropSub()
        self.flow?.dispatch(.deliveryFailed)
    }

    /// Whether a slice's fields name the marker's version: the same strong ETag, or with no ETag
    /// the same Last-Modified.
    private func sameVersion(_ headers: HTTPHeaders) -> Bool {
        guard SliceGeometry.identifiesVersion(headers) else { return false }
        if let etag = self.etag {
            return headers.first(name: "etag") == etag
        }
        return self.lastModified != nil && headers.first(name: "etag") == nil && headers.first(name: "last-modified") == self.lastModified
    }
}

/// The client of a slice's sub-request: what it writes goes to its `SliceWalker`.
final class SliceSink: FlowClient {
    private weak var walker: SliceWalker?
    let eventLoop: any EventLoop
    let allocator: ByteBufferAllocator
    let peer: SocketAddress?
    let local: SocketAddress?
    let tls: TLSFacts?
    let takesPreEncoded = false

    init(
        walker: SliceWalker, eventLoop: any EventLoop, allocator: ByteBufferAllocator, peer: SocketAddress?, local: SocketAddress?,
        tls: TLSFacts?
    ) {
        self.walker = walker
        self.eventLoop = eventLoop
        self.allocator = allocator
        self.peer = peer
        self.local = local
        self.tls = tls
    }

    var isWritable: Bool { self.walker?.clientWritable ?? true }
    func writeHead(_ head: HTTPResponseHead) { self.walker?.sliceHead(head, from: self) }
    func writePreEncoded(_ bytes: ByteBuffer, status: Int, cache: XCacheStatus, bodyBytes: Int) {
        self.walker?.sliceFailed(from: self)  // never offered (takesPreEncoded is false)
    }
    func writeBody(_ buffer: ByteBuffer) { self.walker?.sliceBody(buffer, from: self) }
    func writeFinalBody(_ buffer: ByteBuffer) { self.walker?.sliceBody(buffer, from: self) }
    func flush() { self.walker?.flushClient() }
    func finishResponse(_ flow: RequestFlow, close: Bool) { self.walker?.sliceEnd(from: self) }
    func abort(_ flow: RequestFlow) { self.walker?.sliceFailed(from: self) }
    func mustCloseAfter(_ head: HTTPRequestHead) -> Bool { false }
}

/// A stored 206 that holds part of a representation (RFC 9111 §3.3): an origin's partial answer,
/// stored as it came. It answers Range requests that fall inside it; any other request misses it
/// and fetches the whole object, which then replaces it.
enum StoredPart {
    /// The part's range and the representation's length, when a response of `status` with these
    /// fields and `bodyLength` body bytes is one: a 206 whose body is exactly its Content-Range.
    static func range(status: Int, headers: @autoclosure () -> HTTPHeaders, bodyLength: Int) -> (range: ClosedRange<Int>, length: Int)? {
        guard status == 206, bodyLength > 0,
            let (range, length) = RangeRequest.parseContentRange(headers().first(name: "content-range")), range.count == bodyLength
        else { return nil }
        return (range, length)
    }

    /// Whether a request (its Range, If-Range and method) is answered by a stored part: every
    /// range it asks for lies inside the part. The lookup and the delivery ask the same rule.
    static func answers(
        _ part: (range: ClosedRange<Int>, length: Int), storedHeaders: HTTPHeaders, method: String, requestHeaders: HTTPHeaders
    ) -> Bool {
        let decision = RangeRequest.evaluate(
            rangeHeader: requestHeaders.first(name: "range"), ifRange: requestHeaders.first(name: "if-range"), method: method,
            storedStatus: 200, storedHeaders: storedHeaders, length: part.length)
        switch decision {
        case .single(let range):
            return part.range.contains(range.lowerBound) && part.range.contains(range.upperBound)
        case .multiple(let ranges):
            return ranges.allSatisfy { part.range.contains($0.lowerBound) && part.range.contains($0.upperBound) }
        case .full, .unsatisfiable:
            return false
        }
    }
}
