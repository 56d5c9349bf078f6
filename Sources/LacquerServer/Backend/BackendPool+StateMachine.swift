/// The bookkeeping of one backend's connections on one event loop, decided without I/O
/// (async-http-client's `HTTPConnectionPool.StateMachine` in spirit): which connection a
/// request gets, when a new one is opened, who waits, what an idle or closed connection
/// means. `BackendPool` connects, schedules the timers and settles the promises.
///
/// Rules: at most `maxConnections` open (connecting ones included); idle connections are
/// reused newest first (LIFO: the warmest socket) and closed after the idle timeout; requests
/// that find the pool full wait first in, first out, and a freed connection or slot goes to the
/// oldest waiter; after shutdown nothing is opened or handed out.
struct BackendPoolStateMachine<Connection: AnyObject> {
    typealias WaiterID = Int

    enum AcquireAction {
        /// Use this idle connection (already marked in use).
        case use(Connection)
        /// Open a new connection for the request (its slot is counted).
        case connect
        /// The pool is full: the request waits under this id (start its queue timer).
        case wait(WaiterID)
        /// The pool is shut down.
        case fail
    }

    enum IdleAction {
        /// Give the connection to this waiter (stop its queue timer).
        case handTo(WaiterID, Connection)
        /// Keep it idle (start its idle timer).
        case park
        /// Close it (the pool is shut down).
        case close
    }

    enum SlotAction {
        case none
        /// A slot is free and someone waits: open a connection for this waiter.
        case connectFor(WaiterID)
    }

    let maxConnections: Int
    /// Connections open or being opened.
    private(set) var open = 0
    /// Idle connections, the most recently parked last.
    private(set) var idle: [Connection] = []
    /// Waiting requests, oldest first.
    private(set) var waiters: [WaiterID] = []
    private var nextWaiterID = 0
    private(set) var isShutdown = false

    init(maxConnections: Int) {
        self.maxConnections = max(1, maxConnections)
    }

    /// A request wants a connection. `isUsable` says whether an idle one still is (its
    /// backend may have closed it since; such ones are skipped — their close is on its way).
    mutating func acquire(isUsable: (Connection) -> Bool) -> AcquireAction {
        if self.isShutdown { return .fail }
        while let connection = self.idle.popLast() {
            if isUsable(connection) { return .use(connection) }
        }
        if self.open < self.maxConnections {
            self.open += 1
            return .connect
        }
        let id = self.nextWaiterID
        self.nextWaiterID += 1
        self.waiters.append(id)
        return .wait(id)
    }

    /// Opening a connection failed: its slot is free again.
    mutating func connectFailed() -> SlotAction {
        self.open = max(0, self.open - 1)
        return self.serveWaiterWithNewConnection()
    }

    /// An exchange ended and `connection` can carry another.
    mutating func connectionIdle(_ connection: Connection) -> IdleAction {
        if self.isShutdown { return .close }
        if !self.waiters.isEmpty {
            return .handTo(self.waiters.removeFirst(), connection)
        }
        self.idle.append(connection)
        return .park
    }

    /// The idle timer of `connection` ran out: true when it was still idle (close it).
    mutating func idleTimedOut(_ connection: Connection) -> Bool {
        guard let index = self.idle.firstIndex(where: { $0 === connection }) else { return false }
        self.idle.remove(at: index)
        return true
    }

    /// `connection` closed (whatever the reason): its slot is free.
    mutating func connectionClosed(_ connection: Connection) -> SlotAction {
        self.open = max(0, self.open - 1)
        if let index = self.idle.firstIndex(where: { $0 === connection }) {
            self.idle.remove(at: index)
        }
        return self.serveWaiterWithNewConnection()
    }

    /// A waiter's queue timer ran out: true when it was still waiting (fail it).
    mutating func waiterTimedOut(_ id: WaiterID) -> Bool {
        guard let index = self.waiters.firstIndex(of: id) else { return false }
        self.waiters.remove(at: index)
        return true
    }

    /// Refuses new work: the idle connections to close and the waiters to fail.
    mutating func shutdown() -> (idle: [Connection], waiters: [WaiterID]) {
        self.isShutdown = true
        defer {
            self.idle = []
            self.waiters = []
        }
        return (self.idle, self.waiters)
    }

    private mutating func serveWaiterWithNewConnection() -> SlotAction {
        guard !self.isShutdown, self.open < self.maxConnections, !self.waiters.isEmpty else { return .none }
        self.open += 1
        return .connectFor(self.waiters.removeFirst())
    }
}
