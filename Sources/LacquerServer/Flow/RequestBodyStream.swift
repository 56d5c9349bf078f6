import NIOCore

/// Where a request body's bytes come from: the client connection, which can stop and resume
/// reading from its socket (TCP backpressure towards the uploader).
protocol RequestBodySource: AnyObject {
    func pauseReading()
    func resumeReading()
}

/// Where a request body's bytes go: the backend connection carrying the exchange.
protocol RequestBodySink: AnyObject {
    /// Whether the sink takes more bytes now (its channel is writable).
    var canTakeBody: Bool { get }
    func writeRequestBody(_ buffer: ByteBuffer)
    func endRequestBody()
    /// The body will never be complete (client gone, over the limit): the exchange must be
    /// abandoned and its connection closed, never reused.
    func abortRequestBody()
}

/// One request body on its way from the client to the backend, with bounded memory.
///
/// The client connection pushes parts as they arrive; the flow attaches the backend connection
/// once it has one. Until then, and whenever the backend's channel is not writable, parts wait
/// here; above ``highWater`` bytes waiting, the client connection stops reading, and it resumes
/// once they are written. So an upload holds at most a few reads' worth of bytes, whatever its size.
///
/// A body that ended before a backend connection was attached, and is at most ``replayLimit``
/// bytes, is handed over whole instead (``takeComplete()``): the flow keeps it and may send it
/// again (a retry after a reset keep-alive connection, VCL `return (retry)`). A streamed body is
/// never replayed.
///
/// Lifecycle: receiving → ended (all parts arrived) | aborted; independently, unattached →
/// attached (streaming) → detached (the exchange ended; later parts are dropped).
/// All calls happen on the client connection's event loop (the backend connection's loop too).
final class RequestBodyStream {
    /// How the client framed the body, which is how it is forwarded.
    enum Framing: Equatable {
        case length(Int)
        case chunked
    }

    /// Bytes waiting before the client connection stops reading.
    static let highWater = 64 * 1024
    /// The largest body kept whole for a possible retry.
    static let replayLimit = 64 * 1024

    let framing: Framing
    private(set) var received = 0
    private(set) var isEnded = false
    private(set) var isAborted = false
    /// Whether a sink took (some of) the body: it can no longer be replayed.
    private(set) var isStreaming = false
    /// Set once the exchange no longer wants the body: parts are counted and dropped.
    private(set) var isDetached = false
    private var pending = CircularBuffer<ByteBuffer>()
    private(set) var pendingBytes = 0
    private var sink: (any RequestBodySink)?
    private weak var source: (any RequestBodySource)?
    private var readingPaused = false

    init(framing: Framing, source: (any RequestBodySource)?) {
        self.framing = framing
        self.source = source
    }

    // MARK: From the client

    /// A body part arrived from the client.
    func append(_ buffer: ByteBuffer) {
        guard !self.isAborted, !self.isEnded else { return }
        self.received += buffer.readableBytes
        if self.isDetached { return }
        if let sink = self.sink, self.pending.isEmpty, sink.canTakeBody {
            sink.writeRequestBody(buffer)
        } else {
            self.pending.append(buffer)
            self.pendingBytes += buffer.readableBytes
        }
        self.updateReading()
    }

    /// The client sent the whole body.
    func end() {
        guard !self.isAborted, !self.isEnded else { return }
        self.isEnded = true
        self.drain()
    }

    /// The body will never be complete: tells the sink to abandon its exchange.
    func abort() {
        guard !self.isAborted else { return }
        self.isAborted = true
        self.dropPending()
        let sink = self.sink
        self.sink = nil
        sink?.abortRequestBody()
    }

    // MARK: From the flow and the backend connection

    /// Whether a failed exchange may be sent again: nothing was streamed (the bytes are the
    /// flow's copy from ``takeComplete()``, or there are none).
    var isReplayable: Bool { !self.isStreaming }

    /// The whole body, if it has ended, was never streamed, and is at most ``replayLimit`` bytes.
    func takeComplete() -> ByteBuffer? {
        guard self.isEnded, !self.isStreaming, !self.isAborted, !self.isDetached,
            self.pendingBytes <= Self.replayLimit
        else { return nil }
        var whole = ByteBuffer()
        whole.reserveCapacity(self.pendingBytes)
        for part in self.pending {
            whole.writeImmutableBuffer(part)
        }
        self.dropPending()
        self.isDetached = true
        return whole
    }

    /// Starts streaming into `sink`: what waits is written as the sink takes it.
    func attach(_ sink: any RequestBodySink) {
        guard !self.isDetached, !self.isAborted, self.sink == nil else {
            if self.isAborted { sink.abortRequestBody() }
            return
        }
        self.isStreaming = true
        self.sink = sink
        self.drain()
    }

    /// The sink's channel became writable again.
    func sinkWritable() {
        self.drain()
    }

    /// The exchange is over (answered, failed or abandoned): the rest of the body is not wanted.
    func detach() {
        self.isDetached = true
        self.sink = nil
        self.dropPending()
    }

    // MARK: -

    private func drain() {
        while let sink = self.sink, sink.canTakeBody, let part = self.pending.popFirst() {
            self.pendingBytes -= part.readableBytes
            sink.writeRequestBody(part)
        }
        if self.isEnded, self.pending.isEmpty, let sink = self.sink {
            self.sink = nil
            sink.endRequestBody()
        }
        self.updateReading()
    }

    private func dropPending() {
        self.pending.removeAll()
        self.pendingBytes = 0
        self.updateReading()
    }

    private func updateReading() {
        if !self.readingPaused, self.pendingBytes > Self.highWater, !self.isEnded {
            self.readingPaused = true
            self.source?.pauseReading()
        } else if self.readingPaused, self.pendingBytes <= Self.highWater / 2 {
            self.readingPaused = false
            self.source?.resumeReading()
        }
    }
}
