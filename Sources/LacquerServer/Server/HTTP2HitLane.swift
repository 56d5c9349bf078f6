import CachePolicy
import CacheStore
import NIOCore
import NIOHPACK
import NIOHTTP1
import NIOHTTP2

/// `HitFastLane` for HTTP/2, on the connection between NIO's HTTP/2 handler and the stream
/// multiplexer: a new stream whose request is a plain GET or HEAD (the same allow-list of
/// fields as `FastRequestHead`) for an object `HitFastLane.laneHit` selects is answered
/// here with the fields of a plain delivery (`PlainHit.http2Fields`, the list `PlainHit.encode`
/// writes for HTTP/1.1), as HEADERS and DATA frames, and never becomes a stream channel. Every
/// other frame goes on to the multiplexer, which gives the stream NIO's HTTP/2-to-HTTP/1 codec,
/// `HTTP2StreamAdapter` and a `ClientChannelHandler`.
///
/// NIO's connection manager, before it, learns of every stream (answered here or not) from the
/// handler's stream events, for its idle timeout and graceful close.
///
/// A stream answered here stays open until its last DATA frame leaves, which a client's flow
/// control may hold (a 64 KiB initial window, RFC 9113 §6.9.2): its WINDOW_UPDATE and
/// RST_STREAM frames, which NIO's handler has already applied, stop here, as the multiplexer
/// has no channel for them and would raise an error that ends the connection. A client that
/// holds such a stream without opening its window gets the send timeouts of every other
/// response (`LaneStreams`): RST_STREAM (CANCEL) once no WINDOW_UPDATE came for `sendIdle`, or
/// `sendTotal` passed, so a stalled stream does not keep its body buffered for ever.
final class HTTP2HitLane: ChannelDuplexHandler {
    typealias InboundIn = HTTP2Frame
    typealias InboundOut = HTTP2Frame
    typealias OutboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    private let server: ServerContext
    private let facts: ConnectionFacts
    /// The highest stream id a client opened (a HEADERS frame with a higher id opens a stream).
    private var highestStream: HTTP2StreamID = .rootStream
    /// The streams answered here that NIO's handler has not closed yet (at most the
    /// connection's concurrent streams), with their send deadlines.
    private var openAnswers = LaneStreams()
    private var stallTimer: Scheduled<Void>?
    private let now: @Sendable () -> NIODeadline
    private var wroteAnswers = false
    /// The Via value (`1.1 <name>`).
    private let viaValue: String

    init(server: ServerContext, facts: ConnectionFacts, now: @escaping @Sendable () -> NIODeadline = { .now() }) {
        self.server = server
        self.facts = facts
        self.now = now
        self.viaValue = "1.1 \(server.configuration.viaName)"
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = self.unwrapInboundIn(data)
        if case .headers(let headers) = frame.payload, frame.streamID > self.highestStream {
            self.highestStream = frame.streamID
            if headers.endStream, self.answer(headers.headers, stream: frame.streamID, context: context) {
                self.openAnswers.answered(frame.streamID, now: self.now())
                if self.stallTimer == nil { self.scheduleStallCheck(context: context) }
                return
            }
            self.server.counters.increment(.http2Streams)
        } else if !self.openAnswers.isEmpty {
            if frame.streamID == .rootStream {
                if case .windowUpdate = frame.payload { self.openAnswers.progressed(nil, now: self.now()) }
            } else if self.openAnswers.contains(frame.streamID) {
                // WINDOW_UPDATE or RST_STREAM for a stream answered here: NIO's handler applied it.
                if case .windowUpdate = frame.payload { self.openAnswers.progressed(frame.streamID, now: self.now()) }
                return
            }
        }
        context.fireChannelRead(data)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // NIO's handler sends this after the frames that closed the stream.
        if !self.openAnswers.isEmpty, let closed = event as? StreamClosedEvent {
            self.openAnswers.closed(closed.streamID)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.stallTimer?.cancel()
        self.stallTimer = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.stallTimer?.cancel()
        self.stallTimer = nil
        context.fireChannelInactive()
    }

    /// Resets the streams answered here whose client stopped taking their bytes (no window
    /// for `sendIdle`, or longer than `sendTotal` in all), then looks again when the next may.
    private func scheduleStallCheck(context: ChannelHandlerContext) {
        let timeouts = self.server.connectionSettings.timeouts
        guard let due = self.openAnswers.nextCheck(idle: timeouts.sendIdle, total: timeouts.sendTotal) else { return }
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        self.stallTimer = context.eventLoop.scheduleTask(deadline: due) {
            let (lane, context) = bound.value
            lane.stallTimer = nil
            let stalled = lane.openAnswers.expire(now: lane.now(), idle: timeouts.sendIdle, total: timeouts.sendTotal)
            for stream in stalled {
                lane.server.counters.increment(.sessClosedTimeout)
                context.write(lane.wrapOutboundOut(HTTP2Frame(streamID: stream, payload: .rstStream(.cancel))), promise: nil)
            }
            if !stalled.isEmpty { context.flush() }
            if !lane.openAnswers.isEmpty { lane.scheduleStallCheck(context: context) }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if self.wroteAnswers {
            self.wroteAnswers = false
            context.flush()
        }
        context.fireChannelReadComplete()
    }

    /// A request the lane may answer, read from its header block: nil when it is not plain.
    struct PlainRequest {
        var isHead: Bool
        var authority: String
        var path: String
        var acceptEncoding: String?
        var userAgent: String?
        var referer: String?
    }

    /// The rules of `FastRequestHead` over an HTTP/2 header block: method GET or HEAD, an
    /// origin-form path of visible ASCII without `#` within the limits, an `:authority` in
    /// normal form (no Host field), at most one Accept-Encoding, every other field harmless.
    static func plainRequest(_ headers: HPACKHeaders, limits: Limits) -> PlainRequest? {
        var method: String?
        var path: String?
        var authority: String?
        var sawScheme = false
        var request = PlainRequest(isHead: false, authority: "", path: "")
        var acceptEncodings = 0
        var totalBytes = 0
        for (name, value, _) in headers {
            totalBytes += name.utf8.count + value.utf8.count + 2
            switch name {
            case ":method": method = value
            case ":path": path = value
            case ":authority": authority = value
            case ":scheme": sawScheme = true
            case "accept-encoding":
                acceptEncodings += 1
                request.acceptEncoding = value
            case "user-agent": request.userAgent = value
            case "referer": request.referer = value
            default:
                guard FastRequestHead.isHarmlessField(name) else { return nil }
            }
            if name.utf8.count + value.utf8.count + 2 > limits.headerFieldBytes { return nil }
        }
        guard sawScheme, acceptEncodings <= 1, headers.count <= limits.headerFieldCount, totalBytes <= limits.headerTotalBytes,
            let method, method == "GET" || method == "HEAD", let path, let authority
        else { return nil }
        guard path.utf8.first == UInt8(ascii: "/"), path.utf8.count <= limits.requestLineBytes,
            path.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "#") }),
            RequestValidation.isNormalHost(authority)
        else { return nil }
        request.isHead = method == "HEAD"
        request.authority = authority
        request.path = path
        return request
    }

    /// Writes the stored response for stream `stream` if the lane may answer; false (nothing
    /// written, nothing counted) otherwise.
    private func answer(_ headers: HPACKHeaders, stream: HTTP2StreamID, context: ChannelHandlerContext) -> Bool {
        let server = self.server
        guard server.hitPathIsBuiltin, server.rateLimiter == nil, context.channel.isWritable,
            let request = Self.plainRequest(headers, limits: server.configuration.limits)
        else { return false }
        let now = server.clock()
        guard
            case .hit(let object, let status) = HitFastLane.laneHit(
                server: server, key: CacheKey(host: request.authority, target: request.path),
                acceptEncoding: request.acceptEncoding, now: now, sendsFiles: false)
        else { return false }
        let started = NIODeadline.now()
        server.counters.increment(.http2Streams)
        server.counters.increment(.clientReq)
        server.counters.increment(.cacheHit)
        server.counters.increment(.cacheHitFast)
        let fields = PlainHit.http2Fields(
            object, age: object.age(at: now), xStatus: .hit, cacheStatus: status, viaValue: self.viaValue,
            cacheName: server.cacheStatusName, cache: server.http2FieldCache(on: context.eventLoop))
        var body = ByteBuffer()
        if !request.isHead {
            body = context.channel.allocator.buffer(capacity: object.inlineBodyLength)
            if let large = object.writeInlineBody(into: &body) { body = large }
        }
        let hasBody = !request.isHead && body.readableBytes > 0
        context.write(self.wrapOutboundOut(HTTP2Frame(streamID: stream, payload: .headers(.init(headers: fields, endStream: !hasBody)))), promise: nil)
        if hasBody {
            context.write(self.wrapOutboundOut(HTTP2Frame(streamID: stream, payload: .data(.init(data: .byteBuffer(body), endStream: true)))), promise: nil)
        }
        self.wroteAnswers = true
        let duration = ClientChannelHandler.seconds(NIODeadline.now() - started)
        server.requestDurations.observe(.hit, seconds: duration)
        if server.accessLog.isCapturing {
            var record = AccessRecord(
                time: now, client: self.facts.peer?.ipAddress ?? "-", method: request.isHead ? "HEAD" : "GET", target: request.path,
                proto: "HTTP/2.0")
            record.status = object.status
            record.bytes = request.isHead ? 0 : object.bodyLength
            record.cache = XCacheStatus.hit.rawValue
            record.host = request.authority
            record.userAgent = request.userAgent
            record.referer = request.referer
            record.duration = duration
            record.timeToFirstByte = duration
            server.accessLog.record(record, shard: server.loopIndex(context.eventLoop))
        }
        return true
    }
}

/// The streams `HTTP2HitLane` answered that are still open, with when each was answered and when
/// its client last gave it window: the send-idle and send-total timeouts of a lane stream, as
/// the connection's state machine keeps them for every other response. No I/O, no clock of its own.
struct LaneStreams {
    private var streams: [HTTP2StreamID: (answered: NIODeadline, progress: NIODeadline)] = [:]

    var isEmpty: Bool { self.streams.isEmpty }

    func contains(_ stream: HTTP2StreamID) -> Bool {
        self.streams[stream] != nil
    }

    mutating func answered(_ stream: HTTP2StreamID, now: NIODeadline) {
        self.streams[stream] = (now, now)
    }

    /// A WINDOW_UPDATE for `stream`, or for the connection (nil: every stream may go on).
    mutating func progressed(_ stream: HTTP2StreamID?, now: NIODeadline) {
        if let stream {
            self.streams[stream]?.progress = now
        } else {
            for key in self.streams.keys { self.streams[key]?.progress = now }
        }
    }

    mutating func closed(_ stream: HTTP2StreamID) {
        self.streams[stream] = nil
    }

    /// When the earliest stream may run out of time, if any is open.
    func nextCheck(idle: TimeAmount, total: TimeAmount) -> NIODeadline? {
        self.streams.values.map { Self.deadline($0, idle: idle, total: total) }.min()
    }

    /// A stream runs out of time `idle` after its last window, or `total` after its answer.
    private static func deadline(_ stream: (answered: NIODeadline, progress: NIODeadline), idle: TimeAmount, total: TimeAmount) -> NIODeadline {
        min(stream.progress + idle, stream.answered + total)
    }

    /// Removes and returns the streams out of time at `now`.
    mutating func expire(now: NIODeadline, idle: TimeAmount, total: TimeAmount) -> [HTTP2StreamID] {
        let out = self.streams.filter { now >= Self.deadline($0.value, idle: idle, total: total) }.map(\.key)
        for stream in out { self.streams[stream] = nil }
        return out.sorted()
    }
}
