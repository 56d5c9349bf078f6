import LacquerTesting
import NIOHTTP1
import Testing

@testable import LacquerServer

/// The backend exchange state machine, driven without sockets through a mock connection that
/// refuses impossible actions (async-http-client's mocks in spirit): a second read while one is
/// outstanding, a body before its head, an owner told twice, anything on a closed connection.
@Suite("Backend exchange state machine")
struct BackendExchangeStateMachineTests {
    struct Impossible: Error, CustomStringConvertible {
        var description: String
    }

    /// What a connection can do, checked.
    struct MockConnection {
        var open = true
        var readOutstanding = false
        var inExchange = false
        var headDelivered = false
        /// How many exchanges reported an end or a failure to their owner.
        var ownerTold = 0
        var exchangesStarted = 0

        mutating func perform(_ action: BackendExchangeStateMachine.Action) throws {
            switch action {
            case .none, .arm, .refuseExchange:
                break
            case .read:
                guard self.open else { throw Impossible(description: "read on a closed connection") }
                guard !self.readOutstanding else { throw Impossible(description: "a second read while one is outstanding") }
                self.readOutstanding = true
            case .sendRequest:
                guard self.open, !self.inExchange else { throw Impossible(description: "a request on a busy or closed connection") }
                self.inExchange = true
                self.exchangesStarted += 1
            case .deliverInterim:
                guard self.inExchange, !self.headDelivered else { throw Impossible(description: "an interim head out of place") }
            case .deliverHead:
                guard self.inExchange, !self.headDelivered else { throw Impossible(description: "a second head") }
                self.headDelivered = true
            case .deliverBody:
                guard self.headDelivered else { throw Impossible(description: "a body before its head") }
            case .finish(let reuse, _):
                guard self.headDelivered else { throw Impossible(description: "an end without a head") }
                self.inExchange = false
                self.headDelivered = false
                self.ownerTold += 1
                if !reuse { self.open = false }
            case .fail(_, let notify, let beforeHead):
                if notify {
                    guard self.inExchange else { throw Impossible(description: "an owner told of a failure outside an exchange") }
                    guard beforeHead == !self.headDelivered else { throw Impossible(description: "before/after head mislabelled") }
                    self.ownerTold += 1
                }
                self.inExchange = false
                self.headDelivered = false
                self.open = false
            }
        }

        mutating func readCompleted() { self.readOutstanding = false }
    }

    static let head200 = HTTPResponseHead(version: .http1_1, status: .ok)

    @Test("a keep-alive exchange: request, head, body, end; back to idle with a read outstanding")
    func keepAlive() throws {
        var machine = BackendExchangeStateMachine(maxResponseHeaderBytes: 32768, maxResponseHeaderFields: 100)
        var connection = MockConnection()
        try connection.perform(machine.channelActive())
        #expect(machine.startExchange(streamedBody: false) == .sendRequest(armFirstByte: true))
        try connection.perform(.sendRequest(armFirstByte: true))
        #expect(machine.responseHead(Self.head200) == .deliverHead)
        try connection.perform(.deliverHead)
        #expect(machine.responseBody() == .deliverBody)
        #expect(machine.responseEnd(channelIsActive: true) == .finish(reuse: true, stopUpload: false))
        #expect(machine.state == .idle && machine.exchanges == 1)
    }

    @Test("an interim 103 goes to the owner, a 101 is dropped, the final head follows")
    func interim() {
        var machine = BackendExchangeStateMachine(maxResponseHeaderBytes: 32768, maxResponseHeaderFields: 100)
        _ = machine.startExchange(streamedBody: false)
        #expect(machine.responseHead(HTTPResponseHead(version: .http1_1, status: .custom(code: 103, reasonPhrase: "Early Hints"))) == .deliverInterim)
        #expect(machine.responseHead(HTTPResponseHead(version: .http1_1, status: .switchingProtocols)) == .none)
        #expect(machine.responseHead(Self.head200) == .deliverHead)
    }

    @Test("a response that ends while the request body is still going out: the connection is not reused")
    func earlyAnswerToUpload() {
        var machine = BackendExchangeStateMachine(maxResponseHeaderBytes: 32768, maxResponseHeaderFields: 100)
        #expect(machine.startExchange(streamedBody: true) == .sendRequest(armFirstByte: false))
        #expect(machine.responseHead(Self.head200) == .deliverHead)
        #expect(machine.responseEnd(channelIsActive: true) == .finish(reuse: false, stopUpload: true))
        #expect(machine.state == .closed)
    }

    @Test("the first-byte timer starts once a streamed body is all sent")
    func firstByteAfterUpload() {
        var machine = BackendExchangeStateMachine(maxResponseHeaderBytes: 32768, maxResponseHeaderFields: 100)
        _ = machine.startExchange(streamedBody: true)
        #expect(machine.requestBodyEnded() == .arm(.firstByte))
        #expect(machine.requestBodyEnded() == .none)
    }

    @Test("failures in each state: the owner is told once, before or after the head; never outside an exchange")
    func failures() {
        func fresh() -> BackendExchangeStateMachine {
            BackendExchangeStateMachine(maxResponseHeaderBytes: 32768, maxResponseHeaderFields: 100)
        }
        var idle = fresh()
        #expect(idle.channelInactive() == .fail(.closedMidBody, notify: false, beforeHead: false))
        var waiting = fresh()
        _ = waiting.startExchange(streamedBody: false)
        #expect(waiting.timerFired(.firstByte) == .fail(.firstByteTimeout, notify: true, beforeHead: true))
        #expect(waiting.channelInactive() == .fail(.closedMidBody, notify: false, beforeHead: false))  // told already
        var body = fresh()
        _ = body.startExchange(streamedBody: false)
        _ = body.responseHead(Self.head200)
        #expect(body.channelInactive() == .fail(.closedMidBody, notify: true, beforeHead: false))
        var unsolicited = fresh()
        #expect(unsolicited.responseHead(Self.head200) == .fail(.framing("unsolicited response"), notify: false, beforeHead: false))
        var parser = fresh()
        _ = parser.startExchange(streamedBody: false)
        #expect(parser.errorCaught(parser: true) == .fail(.framing("malformed response"), notify: true, beforeHead: true))
        var busy = fresh()
        _ = busy.startExchange(streamedBody: false)
        #expect(busy.startExchange(streamedBody: false) == .refuseExchange)
    }

    @Test("response headers over the limits fail the exchange before the head")
    func headerLimits() {
        var machine = BackendExchangeStateMachine(maxResponseHeaderBytes: 100, maxResponseHeaderFields: 100)
        _ = machine.startExchange(streamedBody: false)
        let big = HTTPResponseHead(version: .http1_1, status: .ok, headers: HTTPHeaders([("X-Big", String(repeating: "a", count: 200))]))
        #expect(machine.responseHead(big) == .fail(.headersTooLarge, notify: true, beforeHead: true))
    }

    @Test("random event sequences: the mock connection never sees an impossible action, and every exchange's owner is told at most once")
    func randomSequences() throws {
        let seed = SeededRandom.seed(fallback: 0xBAC)
        var random = SeededRandom(seed: seed)
        for round in 0..<2000 {
            var machine = BackendExchangeStateMachine(maxResponseHeaderBytes: 1000, maxResponseHeaderFields: 100)
            var connection = MockConnection()
            var trace: [String] = []
            do {
                try connection.perform(machine.channelActive())
                for _ in 0..<Int.random(in: 1...30, using: &random) {
                    let event = Int.random(in: 0..<14, using: &random)
                    trace.append("\(event)")
                    let action: BackendExchangeStateMachine.Action
                    switch event {
                    case 0: action = machine.startExchange(streamedBody: random.next() % 2 == 0)
                    case 1: action = machine.responseHead(Self.head200)
                    case 2: action = machine.responseHead(HTTPResponseHead(version: .http1_1, status: .continue))
                    case 3: action = machine.responseBody()
                    case 4: action = machine.responseEnd(channelIsActive: random.next() % 4 != 0)
                    case 5:
                        connection.readCompleted()
                        action = machine.readComplete()
                    case 6: action = machine.channelInactive()
                    case 7: action = machine.errorCaught(parser: random.next() % 2 == 0)
                    case 8: action = machine.timerFired(random.next() % 2 == 0 ? .firstByte : .betweenBytes)
                    case 9: action = machine.requestBodyEnded()
                    case 10:
                        machine.pause()
                        action = .none
                    case 11: action = machine.resume()
                    case 12: action = machine.sendTimedOut()
                    default: action = machine.wantRead()
                    }
                    if case .refuseExchange = action { continue }
                    try connection.perform(action)
                    if !connection.open && machine.state != .closed {
                        throw Impossible(description: "the connection closed but the machine is \(machine.state)")
                    }
                }
            } catch {
                Issue.record("seed \(seed) round \(round) events \(trace.joined(separator: ",")): \(error)")
                return
            }
            #expect(connection.ownerTold <= connection.exchangesStarted)
        }
    }
}
