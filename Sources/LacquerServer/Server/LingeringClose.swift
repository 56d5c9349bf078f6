import NIOCore

/// A lingering close (RFC 9112 §9.6, nginx's `lingering_close`): after a response that ends the
/// connection while the client may still be sending its request body (a 413, an answer before
/// the upload ended), the sending half is closed (FIN after the response's last byte) and what
/// the client still sends is read and dropped, until it closes, no byte came for `idle`, or
/// `total` has passed (nginx: `lingering_timeout` 5 s, `lingering_time` 30 s). Closing at once
/// with unread bytes would send a reset, and a client still uploading could lose the response
/// before reading it.
///
/// Added first in the pipeline, so no decoder, lane or TLS handler sees the dropped bytes, and
/// it asks for reads itself (the connection's handler may have paused reading for the upload).
final class LingeringClose: ChannelDuplexHandler, RemovableChannelHandler {
    /// First in a socket channel's pipeline: what it reads is bytes.
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = NIOAny

    private let idle: TimeAmount
    private let endsAt: NIODeadline
    private let now: @Sendable () -> NIODeadline
    private var lastByte: NIODeadline
    private var timer: Scheduled<Void>?

    init(idle: TimeAmount, total: TimeAmount, now: @escaping @Sendable () -> NIODeadline) {
        let start = now()
        self.idle = idle
        self.endsAt = start + total
        self.now = now
        self.lastByte = start
    }

    /// Starts lingering on `channel`, whose response has been flushed (on its event loop).
    static func start(
        on channel: any Channel, idle: TimeAmount, total: TimeAmount, now: @escaping @Sendable () -> NIODeadline
    ) {
        do {
            try channel.pipeline.syncOperations.addHandler(Self(idle: idle, total: total, now: now), position: .first)
        } catch {
            return channel.close(promise: nil)
        }
        let halfClosed = channel.eventLoop.makePromise(of: Void.self)
        halfClosed.futureResult.whenFailure { _ in channel.close(promise: nil) }  // no half-close here: close
        channel.close(mode: .output, promise: halfClosed)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.schedule(context: context)
        context.read()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.timer?.cancel()
        self.timer = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.lastByte = self.now()  // the bytes are dropped
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.read()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .inputClosed? = event as? ChannelEvent {
            context.close(promise: nil)  // the client is done: so are we
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.timer?.cancel()
        self.timer = nil
        context.fireChannelInactive()
    }

    /// When lingering ends if no byte comes before.
    private var deadline: NIODeadline {
        min(self.lastByte + self.idle, self.endsAt)
    }

    /// One timer, moved lazily: it fires at the deadline as last computed, and a firing that finds
    /// a byte came since schedules the next one.
    private func schedule(context: ChannelHandlerContext) {
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        self.timer = context.eventLoop.scheduleTask(deadline: self.deadline) {
            let (handler, context) = bound.value
            handler.timer = nil
            if handler.now() >= handler.deadline {
                context.close(promise: nil)
            } else {
                handler.schedule(context: context)
            }
        }
    }
}
