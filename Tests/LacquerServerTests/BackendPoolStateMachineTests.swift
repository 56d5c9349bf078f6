import LacquerTesting
import Testing

@testable import LacquerServer

/// The backend pool's bookkeeping, driven without sockets through a mock pool that refuses
/// impossible orders: more connections than allowed, a connection handed to two requests, a
/// waiter served twice or after it gave up, anything handed out after shutdown.
@Suite("Backend pool state machine")
struct BackendPoolStateMachineTests {
    final class Connection {
        let id: Int
        var usable = true
        init(id: Int) { self.id = id }
    }

    struct Impossible: Error, CustomStringConvertible {
        var description: String
    }

    /// What the driver does with the machine's orders, checked.
    struct MockPool {
        let max: Int
        var open: [Int: Connection] = [:]  // every live connection
        var inUse: Set<Int> = []
        var waiting: Set<Int> = []
        var served: Set<Int> = []
        var nextConnection = 0
        var connecting = 0
        var shutDown = false

        mutating func opened() -> Connection {
            let connection = Connection(id: self.nextConnection)
            self.nextConnection += 1
            return connection
        }

        mutating func check(_ action: BackendPoolStateMachine<Connection>.AcquireAction) throws -> Connection? {
            switch action {
            case .fail:
                guard self.shutDown else { throw Impossible(description: "refused while running") }
                return nil
            case .use(let connection):
                guard !self.shutDown else { throw Impossible(description: "handed out after shutdown") }
                guard self.open[connection.id] != nil, !self.inUse.contains(connection.id) else {
                    throw Impossible(description: "connection \(connection.id) handed out twice or after closing")
                }
                self.inUse.insert(connection.id)
                return connection
            case .connect:
                guard !self.shutDown else { throw Impossible(description: "connect after shutdown") }
                guard self.open.count + self.connecting < self.max else { throw Impossible(description: "over the limit") }
                let connection = self.opened()
                self.open[connection.id] = connection
                self.inUse.insert(connection.id)
                return connection
            case .wait(let id):
                guard self.open.count + self.connecting >= self.max else { throw Impossible(description: "waits with a free slot") }
                self.waiting.insert(id)
                return nil
            }
        }

        mutating func checkSlot(_ action: BackendPoolStateMachine<Connection>.SlotAction) throws {
            guard case .connectFor(let id) = action else { return }
            guard self.waiting.remove(id) != nil, !self.served.contains(id) else {
                throw Impossible(description: "waiter \(id) served twice or after giving up")
            }
            guard self.open.count + self.connecting < self.max else { throw Impossible(description: "over the limit for a waiter") }
            self.served.insert(id)
            let connection = self.opened()
            self.open[connection.id] = connection
            self.inUse.insert(connection.id)
        }
    }

    @Test("LIFO reuse of idle connections, a FIFO queue when full, a freed connection goes to the oldest waiter")
    func scripted() throws {
        var machine = BackendPoolStateMachine<Connection>(maxConnections: 2)
        guard case .connect = machine.acquire(isUsable: { $0.usable }) else { Issue.record("no connect"); return }
        guard case .connect = machine.acquire(isUsable: { $0.usable }) else { Issue.record("no second connect"); return }
        guard case .wait(let first) = machine.acquire(isUsable: { $0.usable }) else { Issue.record("no wait"); return }
        guard case .wait(let second) = machine.acquire(isUsable: { $0.usable }) else { Issue.record("no second wait"); return }
        let a = Connection(id: 0)
        guard case .handTo(let served, let given) = machine.connectionIdle(a), served == first, given === a else {
            Issue.record("the oldest waiter was not served"); return
        }
        let gaveUp = machine.waiterTimedOut(second)
        let again = machine.waiterTimedOut(second)
        #expect(gaveUp && !again)
        guard case .park = machine.connectionIdle(a) else { Issue.record("not parked"); return }
        let b = Connection(id: 1)
        guard case .park = machine.connectionIdle(b) else { Issue.record("not parked"); return }
        guard case .use(let reused) = machine.acquire(isUsable: { $0.usable }), reused === b else {
            Issue.record("not the most recently parked"); return
        }
        a.usable = false
        guard case .wait = machine.acquire(isUsable: { $0.usable }) else { Issue.record("an unusable idle connection was used"); return }
        guard case .connectFor = machine.connectionClosed(a) else { Issue.record("the freed slot went unused"); return }
        let (idle, waiting) = machine.shutdown()
        #expect(idle.isEmpty && waiting.isEmpty)
        guard case .fail = machine.acquire(isUsable: { _ in true }) else { Issue.record("acquired after shutdown"); return }
        guard case .close = machine.connectionIdle(b) else { Issue.record("parked after shutdown"); return }
    }

    @Test("random sequences: the mock pool never sees an impossible order")
    func randomSequences() {
        let seed = SeededRandom.seed(fallback: 0x9001)
        var random = SeededRandom(seed: seed)
        for round in 0..<1000 {
            let max = Int.random(in: 1...4, using: &random)
            var machine = BackendPoolStateMachine<Connection>(maxConnections: max)
            var mock = MockPool(max: max)
            var trace: [String] = []
            do {
                for _ in 0..<Int.random(in: 1...60, using: &random) {
                    let event = Int.random(in: 0..<8, using: &random)
                    trace.append("\(event)")
                    switch event {
                    case 0, 1:
                        _ = try mock.check(machine.acquire(isUsable: { $0.usable }))
                    case 2:
                        // An exchange ends on a connection in use: it goes back.
                        guard let id = mock.inUse.randomElement(using: &random), let connection = mock.open[id] else { continue }
                        mock.inUse.remove(id)
                        switch machine.connectionIdle(connection) {
                        case .handTo(let waiter, let given):
                            guard given === connection, mock.waiting.remove(waiter) != nil else {
                                throw Impossible(description: "handed to a waiter that is not waiting")
                            }
                            mock.inUse.insert(id)
                        case .park: break
                        case .close:
                            guard mock.shutDown else { throw Impossible(description: "closed while running") }
                        }
                    case 3:
                        // A connection closes (in use or idle).
                        guard let id = mock.open.keys.randomElement(using: &random), let connection = mock.open.removeValue(forKey: id)
                        else { continue }
                        mock.inUse.remove(id)
                        try mock.checkSlot(machine.connectionClosed(connection))
                    case 4:
                        // A connect fails: its slot frees.
                        guard let id = mock.inUse.randomElement(using: &random), let connection = mock.open[id],
                            connection.id == mock.nextConnection - 1
                        else { continue }
                        mock.open[id] = nil
                        mock.inUse.remove(id)
                        try mock.checkSlot(machine.connectFailed())
                    case 5:
                        guard let waiter = mock.waiting.randomElement(using: &random) else { continue }
                        if machine.waiterTimedOut(waiter) { mock.waiting.remove(waiter) }
                    case 6:
                        // The backend closes an idle connection quietly; the pool learns later.
                        mock.open.values.filter { !mock.inUse.contains($0.id) }.randomElement(using: &random)?.usable = false
                    default:
                        if random.next() % 10 == 0 {
                            let (idle, waiting) = machine.shutdown()
                            mock.shutDown = true
                            for connection in idle where mock.inUse.contains(connection.id) {
                                throw Impossible(description: "an in-use connection closed as idle")
                            }
                            mock.waiting.subtract(waiting)
                        }
                    }
                    if machine.open > max { throw Impossible(description: "\(machine.open) open of \(max)") }
                }
            } catch {
                Issue.record("seed \(seed) round \(round) events \(trace.joined(separator: ",")): \(error)")
                return
            }
        }
    }
}
