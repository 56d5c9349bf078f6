import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// Keep-alive connections to one backend from one event loop.
///
/// Each event loop has its own pools, so a client connection and the backend connection that
/// serves it live on the same loop and no byte crosses threads on the pass and miss paths
/// (async-http-client keeps a per-loop preference for the same reason). The pool bounds the
/// connections it opens (`maxConnections` shared out over the loops); a request that finds the
/// pool full waits in a FIFO queue up to `queueTimeout`.
///
/// Lifecycle of a connection: connecting → in use → idle (LIFO, closed after `idleTimeout`)
/// → in use … → closed (error, `Connection: close`, idle timeout, or shutdown).
final class BackendPool {
    /// Futures need Sendable values; a lease never leaves its pool's event loop.
    struct Lease: @unchecked Sendable {
        let connection: BackendChannelHandler
        /// Whether the connection served an earlier exchange (a failure before the head may be retried).
        let reused: Bool
    }

    private struct Waiter {
        let id: Int
        let promise: EventLoopPromise<Lease>
        let timer: Scheduled<Void>
    }

    let backend: BackendConfiguration
    let eventLoop: any EventLoop
    let maxConnections: Int
    /// This backend's health and figures, shared with its pools on the other loops.
    let stats: BackendStats
    private let counters: Counters
    private let limits: Limits
    // The shared gauges follow these (one relaxed add per change).
    private var open = 0 {
        didSet { self.stats.openConnections.wrappingAdd(self.open - oldValue, ordering: .relaxed) }
    }
    // (No `oldValue` on the collections: reading it would copy them on every change.)
    private var idle: [(handler: BackendChannelHandler, timer: Scheduled<Void>)] = [] {
        didSet {
            self.stats.idleConnections.wrappingAdd(self.idle.count - self.reportedIdle, ordering: .relaxed)
            self.reportedIdle = self.idle.count
        }
    }
    private var waiters = CircularBuffer<Waiter>() {
        didSet {
            self.stats.queued.wrappingAdd(self.waiters.count - self.reportedQueued, ordering: .relaxed)
            self.reportedQueued = self.waiters.count
        }
    }
    private var reportedIdle = 0
    private var reportedQueued = 0
    private var nextWaiterID = 0
    private var isShutdown = false

    init(
        backend: BackendConfiguration, eventLoop: any EventLoop, maxConnections: Int, stats: BackendStats,
        counters: Counters, limits: Limits
    ) {
        self.backend = backend
        self.eventLoop = eventLoop
        self.maxConnections = max(1, maxConnections)
        self.stats = stats
        self.counters = counters
        self.limits = limits
    }

    var openConnections: Int { self.open }
    var idleConnections: Int { self.idle.count }

    /// A connection for one exchange: an idle one, a new one, or the next to become free.
    /// - Parameter connectTimeout: for a new connection, instead of the backend's (VCL's
    ///   `bereq.connect_timeout`).
    func acquire(connectTimeout: TimeAmount? = nil) -> EventLoopFuture<Lease> {
        self.eventLoop.preconditionInEventLoop()
        if self.isShutdown {
            return self.eventLoop.makeFailedFuture(BackendError.connectFailed("shutting down"))
        }
        self.stats.countRequest()
        while let (handler, timer) = self.idle.popLast() {
            timer.cancel()
            if handler.isUsable {
                self.counters.increment(.backendReuse)
                return self.eventLoop.makeSucceededFuture(Lease(connection: handler, reused: true))
            }
        }
        if self.open < self.maxConnections {
            return self.connect(timeout: connectTimeout ?? self.backend.connectTimeout).map {
                Lease(connection: $0, reused: false)
            }
        }
        let promise = self.eventLoop.makePromise(of: Lease.self)
        let id = self.nextWaiterID
        self.nextWaiterID += 1
        let loopBound = NIOLoopBound(self, eventLoop: self.eventLoop)
        let timer = self.eventLoop.scheduleTask(in: self.backend.queueTimeout) {
            loopBound.value.waiterTimedOut(id)
        }
        self.waiters.append(Waiter(id: id, promise: promise, timer: timer))
        return promise.futureResult
    }

    /// Closes idle connections and refuses new work.
    func shutdown() {
        self.isShutdown = true
        for (handler, timer) in self.idle {
            timer.cancel()
            handler.abandon()
        }
        self.idle.removeAll()
        while let waiter = self.waiters.popFirst() {
            waiter.timer.cancel()
            waiter.promise.fail(BackendError.connectFailed("shutting down"))
        }
    }

    private func waiterTimedOut(_ id: Int) {
        guard let index = self.waiters.firstIndex(where: { $0.id == id }) else { return }
        let waiter = self.waiters.remove(at: index)
        self.stats.countFailure(.queueTimeout)
        waiter.promise.fail(BackendError.queueTimeout)
    }

    private func connect(timeout: TimeAmount) -> EventLoopFuture<BackendChannelHandler> {
        self.open += 1
        self.counters.increment(.backendConn)
        let limits = self.limits
        let stats = self.stats
        let loopBound = NIOLoopBound(self, eventLoop: self.eventLoop)
        let decoderLimits = {
            var configuration = NIOHTTPDecoderLimitConfiguration()
            configuration.maxHeaderFieldSize = limits.headerFieldBytes + 64
            configuration.maxHeaderListSize = limits.headerTotalBytes + 1024
            configuration.maxHeaderFieldCount = limits.headerFieldCount + 1
            return configuration
        }()
        let future = ClientBootstrap(group: self.eventLoop)
            .connectTimeout(timeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(.autoRead, value: false)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let handler = BackendChannelHandler(
                        maxResponseHeaderBytes: limits.headerTotalBytes,
                        maxResponseHeaderFields: limits.headerFieldCount,
                        stats: stats
                    )
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(HTTPRequestEncoder())
                    try sync.addHandler(
                        ByteToMessageHandler(
                            HTTPResponseDecoder(
                                leftOverBytesStrategy: .dropBytes,
                                informationalResponseStrategy: .forward,
                                limitConfiguration: decoderLimits
                            )
                        )
                    )
                    try sync.addHandler(handler)
                }
            }
            .connect(host: self.backend.host, port: self.backend.port)
            .flatMapThrowing { channel -> BackendChannelHandler in
                try channel.pipeline.syncOperations.handler(type: BackendChannelHandler.self)
            }
        return future.map { handler in
            let pool = loopBound.value
            handler.onIdle = { handler in pool.connectionBecameIdle(handler) }
            handler.onClose = { handler in pool.connectionClosed(handler) }
            return handler
        }.flatMapErrorThrowing { error in
            let pool = loopBound.value
            pool.open -= 1
            pool.serveWaitersAfterClose()
            let failure: BackendError
            if let error = error as? ChannelError, case .connectTimeout = error {
                failure = .connectTimeout
            } else {
                failure = .connectFailed(BackendPool.describe(error))
            }
            stats.countFailure(failure)
            throw failure
        }
    }

    private func connectionBecameIdle(_ handler: BackendChannelHandler) {
        if self.isShutdown {
            handler.abandon()
            return
        }
        if let waiter = self.waiters.popFirst() {
            waiter.timer.cancel()
            self.counters.increment(.backendReuse)
            waiter.promise.succeed(Lease(connection: handler, reused: true))
            return
        }
        let loopBound = NIOLoopBound((self, handler), eventLoop: self.eventLoop)
        let timer = self.eventLoop.scheduleTask(in: self.backend.idleTimeout) {
            let (pool, handler) = loopBound.value
            if let index = pool.idle.firstIndex(where: { $0.handler === handler }) {
                pool.idle.remove(at: index)
                handler.abandon()
            }
        }
        self.idle.append((handler, timer))
    }

    private func connectionClosed(_ handler: BackendChannelHandler) {
        self.open -= 1
        self.counters.increment(.backendClose)
        if let index = self.idle.firstIndex(where: { $0.handler === handler }) {
            self.idle[index].timer.cancel()
            self.idle.remove(at: index)
        }
        self.serveWaitersAfterClose()
    }

    /// A slot freed up: open a connection for the first waiter, if any.
    private func serveWaitersAfterClose() {
        guard !self.isShutdown, self.open < self.maxConnections, let waiter = self.waiters.popFirst() else { return }
        waiter.timer.cancel()
        self.connect(timeout: self.backend.connectTimeout).map { Lease(connection: $0, reused: false) }.cascade(to: waiter.promise)
    }

    static func describe(_ error: any Error) -> String {
        if let io = error as? IOError {
            return io.description
        }
        if let nio = error as? NIOConnectionError {
            if let first = nio.connectionErrors.first {
                return describe(first.error)
            }
            return "could not resolve \(nio.host)"
        }
        return "\(error)"
    }
}
