import Logging
import NIOCore
import NIOPosix

/// Polls one backend with its probe (Varnish's `.probe`) and keeps its health in `BackendStats`,
/// where the director on every event loop reads it.
///
/// One per backend with a probe, running on one event loop. Each round opens a fresh connection,
/// sends the probe request (`Connection: close`), and waits up to `timeout` for the status line:
/// good when it carries the expected status; a refused or timed-out connect, a close before the
/// status line, another status or the timeout are bad. The next round starts `interval` after
/// this one started, or at once when this one ran longer; rounds never overlap.
///
/// Lifecycle: `start()` → round (connect → request → status line | error | timeout → record)
/// → wait → round … → `stop()` (cancels the timer, closes the round's connection).
final class HealthProbe: Sendable {
    private struct State {
        var stopped = false
        var nextRound: Scheduled<Void>?
        var round: Round?
        var rounds = 0
    }

    /// The probe in flight.
    private struct Round {
        let id: Int
        let started: NIODeadline
        var timeout: Scheduled<Void>?
        var channel: (any Channel)?
    }

    let backend: BackendConfiguration
    let configuration: ProbeConfiguration
    let stats: BackendStats
    let eventLoop: any EventLoop
    private let logger: Logger
    private let requestBytes: [UInt8]
    private let state: NIOLoopBoundBox<State>

    init(backend: BackendConfiguration, probe: ProbeConfiguration, stats: BackendStats, eventLoop: any EventLoop, logger: Logger) {
        self.backend = backend
        self.configuration = probe
        self.stats = stats
        self.eventLoop = eventLoop
        self.logger = logger
        self.requestBytes = Array(Self.request(for: probe, backend: backend).utf8)
        self.state = NIOLoopBoundBox.makeBoxSendingValue(State(), eventLoop: eventLoop)
    }

    /// The bytes a probe sends: the raw `request` lines, or a GET for `url` with the backend's
    /// Host (its `hostHeader` when it has one, as Varnish's `.host_header`).
    static func request(for probe: ProbeConfiguration, backend: BackendConfiguration) -> String {
        if let lines = probe.request {
            return lines.joined(separator: "\r\n") + "\r\n\r\n"
        }
        let host = backend.host.contains(":") ? "[\(backend.host)]" : backend.host
        let authority = backend.hostHeader ?? (backend.port == 80 ? host : "\(host):\(backend.port)")
        return "GET \(probe.url) HTTP/1.1\r\nHost: \(authority)\r\nConnection: close\r\n"
            + "User-Agent: lacquer-probe\r\nAccept: */*\r\n\r\n"
    }

    /// Starts the first round now (as Varnish does), then one every interval.
    func start() {
        self.eventLoop.execute {
            guard !self.state.value.stopped, self.state.value.round == nil else { return }
            self.startRound()
        }
    }

    /// Stops probing; the future completes once the round in flight (if any) has closed its connection.
    func stop() -> EventLoopFuture<Void> {
        self.eventLoop.flatSubmit {
            self.state.value.stopped = true
            self.state.value.nextRound?.cancel()
            self.state.value.nextRound = nil
            guard let round = self.state.value.round else { return self.eventLoop.makeSucceededVoidFuture() }
            self.state.value.round = nil
            round.timeout?.cancel()
            guard let channel = round.channel else { return self.eventLoop.makeSucceededVoidFuture() }
            channel.close(promise: nil)
            return channel.closeFuture
        }
    }

    private func startRound() {
        self.state.value.nextRound = nil
        self.state.value.rounds += 1
        let id = self.state.value.rounds
        var round = Round(id: id, started: .now())
        round.timeout = self.eventLoop.scheduleTask(in: self.configuration.timeout) {
            self.finishRound(id, .failed("timeout"))
        }
        self.state.value.round = round
        let expected = self.configuration.expectedResponse
        let bytes = self.requestBytes
        let backend = self.backend
        ClientBootstrap(group: self.eventLoop)
            .connectTimeout(self.configuration.timeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls = backend.tls {
                        // Probes go over TLS too; a failed handshake fails the round.
                        try channel.pipeline.syncOperations.addHandler(BackendTLSContexts.handler(for: backend, tls: tls))
                    }
                    let handler = ProbeResponseHandler(request: bytes, expectedStatus: expected) { result in
                        self.finishRound(id, result)
                    }
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
            .connect(host: self.backend.host, port: self.backend.port)
            .hop(to: self.eventLoop)
            .whenComplete { result in
                switch result {
                case .success(let channel):
                    if self.state.value.round?.id == id {
                        self.state.value.round?.channel = channel
                    } else {
                        channel.close(promise: nil)
                    }
                case .failure(let error):
                    if let error = error as? ChannelError, case .connectTimeout = error {
                        self.finishRound(id, .failed("connect timeout"))
                    } else {
                        self.finishRound(id, .failed("connect failed: \(BackendPool.describe(error))"))
                    }
                }
            }
    }

    /// Records the result of round `id` (once; later reports of the same round are ignored) and
    /// schedules the next round.
    private func finishRound(_ id: Int, _ result: ProbeResult) {
        self.eventLoop.assertInEventLoop()
        guard let round = self.state.value.round, round.id == id else { return }
        self.state.value.round = nil
        round.timeout?.cancel()
        round.channel?.close(promise: nil)
        if let (window, changed) = self.stats.recordProbe(result), changed {
            let metadata: Logger.Metadata = [
                "backend": "\(self.backend.name)", "good": "\(window.good)/\(window.window)", "last": "\(result)",
            ]
            if window.isHealthy {
                self.logger.notice("backend is healthy", metadata: metadata)
            } else {
                self.logger.warning("backend is sick", metadata: metadata)
            }
        }
        guard !self.state.value.stopped else { return }
        let elapsed = NIODeadline.now() - round.started
        let delay = max(.zero, self.configuration.interval - elapsed)
        self.state.value.nextRound = self.eventLoop.scheduleTask(in: delay) {
            self.startRound()
        }
    }
}

/// Writes the probe request once connected and reads until the status line: reports `.ok` when
/// it carries the expected status, a failure otherwise (or when the connection ends first).
/// Reports exactly once, then closes the connection.
final class ProbeResponseHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// More than any sane status line; a backend that sends more without a newline fails.
    static let maxStatusLineBytes = 4096

    private let request: [UInt8]
    private let expectedStatus: Int
    private let report: (ProbeResult) -> Void
    private var received: [UInt8] = []
    private var reported = false

    init(request: [UInt8], expectedStatus: Int, report: @escaping (ProbeResult) -> Void) {
        self.request = request
        self.expectedStatus = expectedStatus
        self.report = report
    }

    func channelActive(context: ChannelHandlerContext) {
        var buffer = context.channel.allocator.buffer(capacity: self.request.count)
        buffer.writeBytes(self.request)
        context.writeAndFlush(self.wrapOutboundOut(buffer), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !self.reported else { return }
        let buffer = self.unwrapInboundIn(data)
        self.received.append(contentsOf: buffer.readableBytesView)
        if let newline = self.received.firstIndex(of: UInt8(ascii: "\n")) {
            self.finish(Self.evaluate(statusLine: self.received[..<newline], expected: self.expectedStatus), context: context)
        } else if self.received.count > Self.maxStatusLineBytes {
            self.finish(.failed("status line too long"), context: context)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !self.reported {
            self.reported = true
            self.report(.failed(self.received.isEmpty ? "closed without a response" : "closed before a complete status line"))
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.finish(.failed("\(BackendPool.describe(error))"), context: context)
    }

    private func finish(_ result: ProbeResult, context: ChannelHandlerContext) {
        guard !self.reported else { return }
        self.reported = true
        self.report(result)
        context.close(promise: nil)
    }

    /// `HTTP/1.x NNN ...` with NNN the expected status → ok.
    static func evaluate(statusLine: ArraySlice<UInt8>, expected: Int) -> ProbeResult {
        var line = String(decoding: statusLine, as: UTF8.self)
        if line.hasSuffix("\r") { line.removeLast() }
        let parts = line.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), parts[1].count == 3, let status = Int(parts[1]) else {
            return .failed("not an HTTP/1 status line")
        }
        return status == expected ? .ok : .failed("status \(status), expected \(expected)")
    }
}
