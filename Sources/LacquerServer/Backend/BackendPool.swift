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

    /// What the pool's driver keeps per waiting request: its promise and queue timer.
    private struct Waiter {
        let promise: EventLoopPromise<Lease>
        let timer: Scheduled<Void>
    }

    let backend: BackendConfiguration
    let eventLoop: any EventLoop
    /// This backend's health and figures, shared with its pools on the other loops.
    let stats: BackendStats
    private let counters: Counters
    private let limits: Limits
    /// Which connection a request gets, who waits, what a closed connection frees.
    private var machine: BackendPoolStateMachine<BackendChannelHandler>
    private var waiters: [Int: Waiter] = [:]
    private var idleTimers: [ObjectIdentifier: Scheduled<Void>] = [:]
    // The shared gauges follow the machine's figures (one relaxed add per change).
    private var reportedOpen = 0
    private var reportedIdle = 0
    private var reportedQueued = 0

    init(
        backend: BackendConfiguration, eventLoop: any EventLoop, maxConnections: Int, stats: BackendStats,
        counters: Counters, limits: Limits
    ) {
        self.backend = backend
        self.eventLoop = eventLoop
        self.machine = BackendPoolStateMachine(maxConnections: maxConnections)
        self.stats = stats
        self.counters = counters
        self.limits = limits
    }

    var maxConnections: Int { self.machine.maxConnections }
    var openConnections: Int { self.machine.open }
    var idleConnections: Int { self.machine.idle.count }

    /// Brings the shared gauges to the machine's figures.
    private func publishGauges() {
        let open = self.machine.open
        let idle = self.machine.idle.count
        let queued = self.machine.waiters.count
        if open != self.reportedOpen {
            self.stats.openConnections.wrappingAdd(open - self.reportedOpen, ordering: .relaxed)
            self.reportedOpen = open
        }
        if idle != self.reportedIdle {
            self.stats.idleConnections.wrappingAdd(idle - self.reportedIdle, ordering: .relaxed)
            self.reportedIdle = idle
        }
        if queued != self.reportedQueued {
            self.stats.queued.wrappingAdd(queued - self.reportedQueued, ordering: .relaxed)
            self.reportedQueued = queued
        }
    }

    /// A connection for one exchange: an idle one, a new one, or the next to become free.
    /// - Parameter connectTimeout: for a new connection, instead of the backend's (VCL's
    ///   `bereq.connect_timeout`).
    func acquire(connectTimeout: TimeAmount? = nil) -> EventLoopFuture<Lease> {
        self.eventLoop.preconditionInEventLoop()
        let action = self.machine.acquire { handler in
            self.idleTimers.removeValue(forKey: ObjectIdentifier(handler))?.cancel()
            return handler.isUsable
        }
        defer { self.publishGauges() }
        switch action {
        case .fail:
            return self.eventLoop.makeFailedFuture(BackendError.connectFailed("shutting down"))
        case .use(let handler):
            self.stats.countRequest()
            self.counters.increment(.backendReuse)
            return self.eventLoop.makeSucceededFuture(Lease(connection: handler, reused: true))
        case .connect:
            self.stats.countRequest()
            return self.connect(timeout: connectTimeout ?? self.backend.connectTimeout).map {
                Lease(connection: $0, reused: false)
            }
        case .wait(let id):
            self.stats.countRequest()
            let promise = self.eventLoop.makePromise(of: Lease.self)
            let loopBound = NIOLoopBound(self, eventLoop: self.eventLoop)
            let timer = self.eventLoop.scheduleTask(in: self.backend.queueTimeout) {
                loopBound.value.waiterTimedOut(id)
            }
            self.waiters[id] = Waiter(promise: promise, timer: timer)
            return promise.futureResult
        }
    }

    /// Closes idle connections and refuses new work.
    func shutdown() {
        let (idle, waiting) = self.machine.shutdown()
        for handler in idle {
            self.idleTimers.removeValue(forKey: ObjectIdentifier(handler))?.cancel()
            handler.abandon()
        }
        for id in waiting {
            guard let waiter = self.waiters.removeValue(forKey: id) else { continue }
            waiter.timer.cancel()
            waiter.promise.fail(BackendError.connectFailed("shutting down"))
        }
        self.publishGauges()
    }

    private func waiterTimedOut(_ id: Int) {
        guard self.machine.waiterTimedOut(id), let waiter = self.waiters.removeValue(forKey: id) else { return }
        self.publishGauges()
        self.stats.countFailure(.queueTimeout)
        waiter.promise.fail(BackendError.queueTimeout)
    }

    /// Opens a connection in a slot the machine already counted.
    private func connect(timeout: TimeAmount) -> EventLoopFuture<BackendChannelHandler> {
        self.counters.increment(.backendConn)
        let limits = self.limits
        let stats = self.stats
        let counters = self.counters
        let loopBound = NIOLoopBound(self, eventLoop: self.eventLoop)
        let decoderLimits = {
            var configuration = NIOHTTPDecoderLimitConfiguration()
            configuration.maxHeaderFieldSize = limits.headerFieldBytes + 64
            configuration.maxHeaderListSize = limits.headerTotalBytes + 1024
            configuration.maxHeaderFieldCount = limits.headerFieldCount + 1
            return configuration
        }()
        let backend = self.backend
        // With TLS, the connection is handed out once its handshake is done (or failed).
        let handshake = backend.tls == nil ? nil : self.eventLoop.makePromise(of: Void.self)
        let connected = ClientBootstrap(group: self.eventLoop)
            .connectTimeout(timeout)
            .channelOption(.autoRead, value: false)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    if let tls = backend.tls, let handshake {
                        try sync.addHandler(BackendTLSContexts.handler(for: backend, tls: tls))
                        try sync.addHandler(BackendTLSHandshake(promise: handshake))
                    }
                    let handler = BackendChannelHandler(
                        maxResponseHeaderBytes: limits.headerTotalBytes,
                        maxResponseHeaderFields: limits.headerFieldCount,
                        stats: stats
                    )
                    try sync.addHandler(HTTPRequestEncoder())
                    let framingGuard = ChunkedFramingGuard(side: .response, maxChunkExtensionBytes: limits.chunkExtensionBytes)
                    handler.framingGuard = framingGuard
                    framingGuard.receivedBytes = (counters, .backendBytesReceived)
                    try sync.addHandler(framingGuard)
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
        let ready = connected.flatMap { channel -> EventLoopFuture<any Channel> in
            guard let handshake else { return channel.eventLoop.makeSucceededFuture(channel) }
            let limit = channel.eventLoop.scheduleTask(in: timeout) {
                handshake.fail(BackendTLSFailure(reason: "the handshake timed out"))
                channel.close(promise: nil)
            }
            return handshake.futureResult.flatMapErrorThrowing { error in
                channel.close(promise: nil)
                throw (error as? BackendTLSFailure) ?? BackendTLSFailure(reason: BackendTLSContexts.describe(error))
            }.always { _ in limit.cancel() }.map { channel }
        }
        let future = ready.flatMapThrowing { channel -> BackendChannelHandler in
            try channel.pipeline.syncOperations.handler(type: BackendChannelHandler.self)
        }
        connected.whenFailure { error in handshake?.fail(error) }
        return future.map { handler in
            let pool = loopBound.value
            handler.onIdle = { handler in pool.connectionBecameIdle(handler) }
            handler.onClose = { handler in pool.connectionClosed(handler) }
            return handler
        }.flatMapErrorThrowing { error in
            let pool = loopBound.value
            pool.run(pool.machine.connectFailed())
            let failure: BackendError
            if let error = error as? ChannelError, case .connectTimeout = error {
                failure = .connectTimeout
            } else if let tls = error as? BackendTLSFailure {
                failure = .connectFailed("TLS handshake failed: \(tls.reason)")
            } else {
                failure = .connectFailed(BackendPool.describe(error))
            }
            stats.countFailure(failure)
            throw failure
        }
    }

    private func connectionBecameIdle(_ handler: BackendChannelHandler) {
        switch self.machine.connectionIdle(handler) {
        case .close:
            handler.abandon()
        case .handTo(let id, let handler):
            guard let waiter = self.waiters.removeValue(forKey: id) else {
                // Cannot happen (the machine and the driver track the same waiters): close
                // the connection rather than leak it.
                handler.abandon()
                break
            }
            waiter.timer.cancel()
            self.counters.increment(.backendReuse)
            waiter.promise.succeed(Lease(connection: handler, reused: true))
        case .park:
            let loopBound = NIOLoopBound((self, handler), eventLoop: self.eventLoop)
            self.idleTimers[ObjectIdentifier(handler)] = self.eventLoop.scheduleTask(in: self.backend.idleTimeout) {
                let (pool, handler) = loopBound.value
                pool.idleTimers[ObjectIdentifier(handler)] = nil
                if pool.machine.idleTimedOut(handler) {
                    pool.publishGauges()
                    handler.abandon()
                }
            }
        }
        self.publishGauges()
    }

    private func connectionClosed(_ handler: BackendChannelHandler) {
        self.counters.increment(.backendClose)
        self.idleTimers.removeValue(forKey: ObjectIdentifier(handler))?.cancel()
        self.run(self.machine.connectionClosed(handler))
    }

    /// A slot freed up: open a connection for the waiter the machine picked.
    private func run(_ action: BackendPoolStateMachine<BackendChannelHandler>.SlotAction) {
        defer { self.publishGauges() }
        guard case .connectFor(let id) = action else { return }
        guard let waiter = self.waiters.removeValue(forKey: id) else {
            // Cannot happen; give the slot back.
            _ = self.machine.connectFailed()
            return
        }
        waiter.timer.cancel()
        self.connect(timeout: self.backend.connectTimeout).map { Lease(connection: $0, reused: false) }.cascade(
            to: waiter.promise)
    }

    /// A plain reason for a socket error (`connection refused`, `address already in use`): the
    /// system's words for its errno, lowercased; never a library's description.
    static func describe(_ error: any Error) -> String {
        if let io = error as? IOError {
            return Self.plain(errno: io.errnoCode)
        }
        if let nio = error as? NIOConnectionError {
            if let first = nio.connectionErrors.first {
                return describe(first.error)
            }
            return nio.dnsAError != nil || nio.dnsAAAAError != nil ? "could not resolve \(nio.host)" : "cannot connect"
        }
        if let channel = error as? ChannelError, case .connectTimeout = channel {
            return "timed out"
        }
        if error is SocketAddressError {
            return "not a usable address"
        }
        return "cannot connect"
    }

    static func plain(errno code: Int32) -> String {
        switch code {
        case ECONNREFUSED: return "connection refused"
        case ECONNRESET: return "connection reset"
        case EADDRINUSE: return "address already in use"
        case EADDRNOTAVAIL: return "address not available"
        case EACCES, EPERM: return "permission denied"
        case ENETUNREACH: return "network unreachable"
        case EHOSTUNREACH: return "host unreachable"
        case ETIMEDOUT: return "timed out"
        default: return String(cString: strerror(code)).lowercased()
        }
    }
}
