import CachePolicy
import CacheStore
import NIOCore
import NIOHTTP1

/// Answers the commonest request, a plain GET or HEAD for a fresh stored object (without Vary,
/// or with `Vary: Accept-Encoding`), straight from the bytes read: no HTTP/1 decoder, pipeline
/// handler, request head or flow.
/// Everything else goes on to the decoder exactly as before.
///
/// It sits before the decoder and reads each request head strictly (`FastRequestHead`):
/// - a plain request, while the connection has nothing in flight, whose key's variant for it
///   (chosen as `BuiltinPolicy.lookup` chooses, when every variant varies on nothing or on
///   Accept-Encoding only) is fresh, a 200 with nothing to merge, and not gzip for a client
///   that does not take gzip (what `RequestFlow.deliverPlain` writes), and when the
///   configuration leaves vcl_recv, vcl_hash, vcl_hit and vcl_deliver to builtin.vcl and the
///   object has been tested against every active ban: answered here, with the same bytes the flow would write;
/// - any other complete request without a body: handed to the decoder, exactly its bytes, so
///   the decoder stays at a message boundary; requests behind it go the same way until every
///   request handed over has been answered, which keeps responses in order;
/// - anything it does not fully understand (a body, an upgrade, odd syntax, a head past the
///   limits): the decoder gets all bytes from there on, for the rest of the connection.
///
/// The decoder (and what goes with it) is added to the pipeline when the lane first hands it
/// bytes (`addDecoder`), so a connection that only ever asks for hits never builds it.
final class HitFastLane: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    /// The most bytes of an incomplete head the lane keeps (real heads arrive in one read; a
    /// head still incomplete past this goes to the decoder with the rest of the connection).
    static let maxPendingHeadBytes = 4096

    private let server: ServerContext
    private let connection: ClientChannelHandler
    /// The server's limits (shared, not copied per connection).
    private let settings: ConnectionSettings
    /// The start of a request whose head is not complete yet.
    private var pending: ByteBuffer?
    /// Requests handed to the decoder (compared with the responses the connection completed).
    private var handedOver = 0
    /// Set once the decoder has taken over the connection's bytes.
    private var passthrough = false
    /// Adds the decoder after the lane; nil once done.
    private var addDecoder: ((ChannelPipeline.SynchronousOperations) throws -> Void)?

    /// The variants `Vary: Accept-Encoding` gives (see `VaryKey.variant`).
    private static let gzipVariant = VaryKey.variant(
        names: ["accept-encoding"], requestHeaders: HTTPHeaders([("accept-encoding", "gzip")]))
    private static let identityVariant = VaryKey.variant(names: ["accept-encoding"], requestHeaders: HTTPHeaders())

    init(
        server: ServerContext, connection: ClientChannelHandler,
        addDecoder: @escaping (ChannelPipeline.SynchronousOperations) throws -> Void
    ) {
        self.server = server
        self.connection = connection
        self.settings = server.connectionSettings
        self.addDecoder = addDecoder
    }

    /// Passes `bytes` on to the decoder, adding it first if it is not there yet (the connection
    /// closes when it cannot be added).
    private func toDecoder(_ bytes: ByteBuffer, context: ChannelHandlerContext) {
        if let addDecoder = self.addDecoder {
            self.addDecoder = nil
            do {
                try addDecoder(context.pipeline.syncOperations)
            } catch {
                return context.close(promise: nil)
            }
        }
        context.fireChannelRead(self.wrapInboundOut(bytes))
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if self.passthrough {
            return self.toDecoder(self.unwrapInboundIn(data), context: context)
        }
        var buffer = self.unwrapInboundIn(data)
        if var pending = self.pending {
            self.pending = nil
            pending.writeBuffer(&buffer)
            buffer = pending
        }
        var answered = false
        reading: while buffer.readableBytes > 0 {
            let outcome = buffer.withUnsafeReadableBytes { FastRequestHead.classify($0, limits: self.settings.limits) }
            switch outcome {
            case .needMore:
                guard buffer.readableBytes <= Self.maxPendingHeadBytes else {
                    // Each read re-reads the head from its start: past this, a head arriving in
                    // small pieces costs the decoder's incremental parser less.
                    return self.leaveToDecoder(buffer, flushing: answered, context: context)
                }
                self.pending = buffer
                break reading
            case .unsure:
                return self.leaveToDecoder(buffer, flushing: answered, context: context)
            case .other(let length):
                self.handOver(self.carryingExtensionMethod(buffer.readSlice(length: length)!), context: context)
            case .plain(let head):
                if self.answer(head, in: buffer, context: context) {
                    buffer.moveReaderIndex(forwardBy: head.length)
                    answered = true
                } else {
                    self.handOver(buffer.readSlice(length: head.length)!, context: context)
                }
            }
            guard context.channel.isActive else { return }
        }
        if answered {
            context.flush()
            if self.pending != nil {
                self.connection.bytesArrived()  // the next request started: its header timer runs
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.giveUpPending(context: context)
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .inputClosed? = event as? ChannelEvent {
            self.giveUpPending(context: context)
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// Hands a partial head to the decoder (which reports it as it always did) and stops.
    private func giveUpPending(context: ChannelHandlerContext) {
        guard let pending = self.pending else {
            self.passthrough = true
            return
        }
        self.pending = nil
        self.leaveToDecoder(pending, flushing: false, context: context)
    }

    /// Gives the decoder `rest` and every later byte of the connection.
    private func leaveToDecoder(_ rest: ByteBuffer, flushing: Bool, context: ChannelHandlerContext) {
        self.passthrough = true
        if flushing { context.flush() }
        self.toDecoder(rest, context: context)
    }

    /// A bodiless request as the decoder may take it: an extension method the parser does not
    /// know is swapped for the placeholder and queued on the connection (`ExtensionMethods`).
    private func carryingExtensionMethod(_ request: ByteBuffer) -> ByteBuffer {
        guard let space = request.readableBytesView.firstIndex(of: UInt8(ascii: " ")) else { return request }
        let methodLength = space - request.readerIndex
        guard let method = request.getString(at: request.readerIndex, length: methodLength) else { return request }
        if method == ExtensionMethods.placeholder {
            self.connection.queueRequestMethod(method)
            return request
        }
        guard ExtensionMethods.isUnknownToParser(method) else { return request }
        self.connection.queueRequestMethod(method)
        var swapped = ByteBuffer()
        swapped.reserveCapacity(request.readableBytes - methodLength + ExtensionMethods.placeholder.utf8.count)
        swapped.writeString(ExtensionMethods.placeholder)
        swapped.writeImmutableBuffer(request.getSlice(at: space, length: request.readableBytes - methodLength)!)
        return swapped
    }

    private func handOver(_ request: ByteBuffer, context: ChannelHandlerContext) {
        self.handedOver += 1
        self.toDecoder(request, context: context)
    }

    /// Writes the stored response for `head` if the lane may answer it; false (nothing written,
    /// nothing counted) otherwise.
    private func answer(_ head: FastRequestHead, in buffer: ByteBuffer, context: ChannelHandlerContext) -> Bool {
        let server = self.server
        guard server.hitPathIsBuiltin, context.channel.isWritable,
            self.connection.fastLaneMayAnswer(handedOver: self.handedOver)
        else { return false }
        let key = buffer.withUnsafeReadableBytes { bytes in
            CacheKey(host: UnsafeRawBufferPointer(rebasing: bytes[head.host]), target: UnsafeRawBufferPointer(rebasing: bytes[head.target]))
        }
        let now = server.clock()
        let acceptEncoding = head.acceptEncoding.map { range in
            buffer.withUnsafeReadableBytes { String(decoding: UnsafeRawBufferPointer(rebasing: $0[range]), as: UTF8.self) }
        }
        let object: StoredObject
        let status: CacheStatusValue
        var bodyFile: (file: OpenBodyFile, length: Int)?
        switch Self.laneHit(server: server, key: key, acceptEncoding: acceptEncoding, now: now, sendsFiles: self.connection.sendsFiles) {
        case .hit(let found, let foundStatus):
            (object, status) = (found, foundStatus)
        case .file(let found, let foundStatus, let file, let length):
            (object, status, bodyFile) = (found, foundStatus, (file, length))
        case .nothingStored:
            // The flow this request is handed to need not ask the disk again.
            self.connection.noteNothingStored(key)
            return false
        case .flow:
            return false
        }
        let started = NIODeadline.now()
        server.counters.increment(.cacheHit)
        server.counters.increment(.cacheHitFast)
        let (response, largeBody) = PlainHit.encode(
            object, withBody: !head.isHead, age: object.age(at: now), xStatus: .hit, cacheStatus: status,
            close: false, viaLine: server.viaLine, cacheName: server.cacheStatusName,
            allocator: context.channel.allocator, fileLength: bodyFile?.length)
        context.write(NIOAny(response), promise: nil)
        if let bodyFile, !head.isHead {
            server.counters.increment(.bodySentFromFile)
            FileBody.writeRegion(of: bodyFile.file, offset: 0, count: bodyFile.length, loop: context.eventLoop) {
                context.write(NIOAny($0), promise: $1)
            }
        } else if let largeBody {
            FileBody.write(largeBody, of: object, allowed: self.connection.sendsFiles, server: server, loop: context.eventLoop) {
                context.write(NIOAny($0), promise: $1)
            }
        }
        let duration = ClientChannelHandler.seconds(NIODeadline.now() - started)
        server.requestDurations.observe(.hit, seconds: duration)
        var record: AccessRecord?
        if server.accessLog.isCapturing {
            record = Self.logRecord(head, in: buffer, time: now, object: object, bodyLength: bodyFile?.length, client: self.connection)
            record?.duration = duration
            record?.timeToFirstByte = duration
        }
        self.connection.fastLaneAnswered(log: record)
        return true
    }

    /// The access log record of a request the lane answered (times are the lane's own: it
    /// answers in the same read that brought the request).
    private static func logRecord(
        _ head: FastRequestHead, in buffer: ByteBuffer, time: Double, object: StoredObject, bodyLength: Int?, client: ClientChannelHandler
    ) -> AccessRecord {
        func text(_ range: Range<Int>?) -> String? {
            guard let range else { return nil }
            return buffer.withUnsafeReadableBytes { String(decoding: UnsafeRawBufferPointer(rebasing: $0[range]), as: UTF8.self) }
        }
        var record = AccessRecord(
            time: time, client: client.logClientAddress, method: head.isHead ? "HEAD" : "GET", target: text(head.target) ?? "",
            proto: "HTTP/1.1")
        record.status = object.status
        record.bytes = head.isHead ? 0 : bodyLength ?? object.bodyLength
        record.cache = XCacheStatus.hit.rawValue
        record.host = text(head.host)
        record.userAgent = text(head.userAgent)
        record.referer = text(head.referer)
        return record
    }

    /// What a lane (this one or `HTTP2HitLane`) found for a plain GET or HEAD.
    enum LaneAnswer {
        /// The object from memory (`storedResponse`) or, when memory holds nothing under the key,
        /// from disk (`diskResponse`: counted as a disk hit, noted for the disk LRU and promoted
        /// into memory, as `RequestFlow.deliverFromDisk` does), with its Cache-Status.
        case hit(StoredObject, CacheStatusValue)
        /// A disk-only object (too large for memory) whose verified body file is open and cached
        /// (`DiskTier.openVerifiedIfCached`): the object holds its head only, and the body of
        /// `length` bytes is sent from `file`. Only for a connection that sends files.
        case file(StoredObject, CacheStatusValue, OpenBodyFile, length: Int)
        /// Neither tier holds anything under the key (the disk said so without waiting).
        case nothingStored
        /// The flow decides.
        case flow
    }

    static func laneHit(server: ServerContext, key: CacheKey, acceptEncoding: String?, now: Double, sendsFiles: Bool) -> LaneAnswer {
        let bansThrough = server.bans.newestSequence
        if let object = Self.storedResponse(
            memory: server.memory, key: key, acceptEncoding: acceptEncoding, now: now, bansThrough: bansThrough)
        {
            return .hit(object, Self.cacheStatus(object, now: now, detail: nil))
        }
        guard let disk = server.disk else { return .flow }
        return Self.diskResponse(
            server: server, disk: disk, key: key, rule: Rule(acceptEncoding: acceptEncoding, now: now, bansThrough: bansThrough),
            sendsFiles: sendsFiles)
    }

    private static func cacheStatus(_ object: StoredObject, now: Double, detail: String?) -> CacheStatusValue {
        CacheStatusValue(hit: true, ttl: Int(HitRules.remainingFreshness(object, now: now).rounded(.down)), detail: detail)
    }

    /// The stored object the lane answers a plain GET or HEAD for `key` with, given its one
    /// Accept-Encoding value (nil: none), or nil when the flow must decide. The variant is the
    /// one `BuiltinPolicy.lookup` selects, when every variant varies on nothing or on
    /// Accept-Encoding alone; it must be fresh and deliverable as stored, by `HitRules`.
    static func storedResponse(
        memory: MemoryTier, key: CacheKey, acceptEncoding: String?, now: Double, bansThrough: UInt32 = 0
    ) -> StoredObject? {
        let rule = Rule(acceptEncoding: acceptEncoding, now: now, bansThrough: bansThrough)
        return memory.selectVariant(for: key, matching: rule.matching, servable: rule.servable)
    }

    /// The same answer from the disk tier, when the memory tier holds nothing under `key`: the
    /// lookup runs here only if it need not wait for the disk, and only a body read with its head
    /// (kept in the index) is answered: counted, noted and promoted as the flow does. Or, on a
    /// connection that `sendsFiles`, a disk-only object whose verified file is at hand, as the
    /// flow sends it (`RequestFlow.deliverFromFile`).
    private static func diskResponse(server: ServerContext, disk: DiskStorage, key: CacheKey, rule: Rule, sendsFiles: Bool) -> LaneAnswer {
        guard server.memory.holdsNothing(for: key), let heads = disk.lookupWithoutWaiting(key) else { return .flow }
        guard !heads.isEmpty else { return .nothingStored }
        var choice = MemoryTier.VariantChoice<DiskObjectHead>()
        for head in heads {
            if let body = head.prefetchedBody {
                choice.consider(head, server.objectFromDisk(head, body: body), matching: rule.matching)
            } else if FileBody.mayUseVerifiedFile(head, connectionSendsFiles: sendsFiles, memory: server.memory) {
                // Its head only: enough to choose the variant and write the response head.
                let object = head.storedObject(body: ByteBuffer(), hiddenFields: server.memory.surrogateKeyFields, kept: false)
                choice.consider(head, object, matching: rule.matching)
            } else {
                return .flow
            }
        }
        guard let chosen = choice.chosen(servable: rule.servable) else { return .flow }
        if chosen.candidate.prefetchedBody == nil {
            guard case .open(let file) = disk.tier.openVerifiedIfCached(chosen.candidate) else { return .flow }
            server.servedFromDisk(chosen.candidate, disk: disk)
            return .file(
                chosen.object, Self.cacheStatus(chosen.object, now: rule.now, detail: "disk"), file, length: Int(chosen.candidate.bodyLength))
        }
        server.servedFromDisk(chosen.candidate, disk: disk)
        server.promoteFromDisk(chosen.object, lookedUpAt: rule.now)
        return .hit(chosen.object, Self.cacheStatus(chosen.object, now: rule.now, detail: "disk"))
    }

    /// What the lane answers, for one request.
    private struct Rule {
        /// What the request's Accept-Encoding allows (a gzip body as it is), read as the flow
        /// reads it; no Accept-Encoding allows no gzip.
        let takesGzip: Bool
        /// The variant it selects (Vary: Accept-Encoding).
        let selectedVariant: String
        let now: Double
        let bansThrough: UInt32

        init(acceptEncoding: String?, now: Double, bansThrough: UInt32) {
            self.takesGzip = acceptEncoding.map { AcceptEncoding.acceptsGzip(lines: [$0]) } ?? false
            self.selectedVariant = self.takesGzip ? HitFastLane.gzipVariant : HitFastLane.identityVariant
            self.now = now
            self.bansThrough = bansThrough
        }

        func matching(_ object: StoredObject) -> MemoryTier.VariantMatch {
            let names = object.varyNames
            if names.isEmpty { return .matches }
            // A Vary on anything but Accept-Encoding is the flow's to evaluate.
            guard names.count == 1, names[0] == "accept-encoding" else { return .unknown }
            return object.variant == self.selectedVariant ? .matches : .differs
        }

        func servable(_ object: StoredObject) -> Bool {
            // An object not yet tested against every active ban is the flow's to test.
            object.bansCheckedThrough >= self.bansThrough
                && HitRules.deliverableAsStored(object, clientTakesGzip: self.takesGzip)
                && HitRules.remainingFreshness(object, now: self.now) > 0
        }
    }
}
