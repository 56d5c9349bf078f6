import CacheStore
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// The admin listener: `/health`, `/stats` (JSON), `/metrics` (Prometheus text format),
/// `POST /reload` (reload the configuration file), `POST /ban` (body: a ban expression),
/// `GET /bans`, `GET /backends` and `GET /log` (live requests, streamed; `?q=` filters).
/// Bound to loopback by default; it exposes counters, never cached content.
///
/// With a secret (`--admin-secret FILE`, as varnishd's `-S`), every endpoint but `/health`,
/// `/stats` and `/metrics` wants `Authorization: Bearer <secret>`, else 401.
///
/// Endpoints that read files, compile a configuration or gather figures (`/reload`, `/stats`,
/// `/metrics`) run on a thread pool, never on the event loop, which serves clients too.
final class AdminHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    /// What the admin endpoints act on.
    struct Actions: Sendable {
        var stats: @Sendable () -> StatsSnapshot
        var reload: @Sendable () -> LacquerServer.ReloadResult
        var ban: @Sendable (String) -> String?
        /// The active bans, one per line.
        var bans: @Sendable () -> String = { "" }
        /// Purges by surrogate key (`soft`: marks stale); the count, or why it failed.
        var purgeKeys: @Sendable (_ keys: [String], _ soft: Bool) -> Result<Int, PurgeFailure> = { _, _ in .success(0) }
        /// Invalidates everything stored so far; why it failed, or nil.
        var purgeAll: @Sendable () -> String? = { nil }
        /// The backends and their health, one per line.
        var backends: @Sendable () -> String = { "" }
        /// The access log live tails read.
        var accessLog: AccessLog?
    }

    let actions: Actions
    /// The bytes a request's `Authorization` must equal (nil: the admin is open).
    private let expectedAuthorization: [UInt8]?
    /// The live tail this connection streams, if any.
    private var tail: Int?
    private var head: HTTPRequestHead?
    private var body = ""
    private var bodyTooLarge = false
    static let maxBodyBytes = 64 * 1024

    init(actions: Actions, secret: String? = nil) {
        self.actions = actions
        self.expectedAuthorization = secret.map { Array("Bearer \($0)".utf8) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let tail = self.tail {
            self.actions.accessLog?.unsubscribe(tail)
            self.tail = nil
        }
        context.fireChannelInactive()
    }

    /// Whether `head` may use `path` (the open endpoints need no secret).
    private func authorized(_ head: HTTPRequestHead, path: String) -> Bool {
        guard let expected = self.expectedAuthorization else { return true }
        if ["/health", "/stats", "/metrics"].contains(path) && (head.method == .GET || head.method == .HEAD) {
            return true
        }
        guard let given = head.headers.first(name: "authorization") else { return false }
        // Compared in constant time for equal lengths (the secret's length is not hidden).
        let bytes = Array(given.utf8)
        guard bytes.count == expected.count else { return false }
        var difference: UInt8 = 0
        for index in 0..<bytes.count { difference |= bytes[index] ^ expected[index] }
        return difference == 0
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            self.body = ""
            self.bodyTooLarge = false
        case .body(let buffer):
            if self.body.utf8.count + buffer.readableBytes > Self.maxBodyBytes {
                self.bodyTooLarge = true
            } else {
                self.body += String(buffer: buffer)
            }
        case .end:
            guard let head = self.head else { return }
            self.head = nil
            self.respond(to: head, context: context)
        }
    }

    /// An endpoint's answer: status, content type, body.
    typealias Answer = (status: HTTPResponseStatus, contentType: String, body: String)
    private static let plainText = "text/plain; charset=utf-8"

    private func respond(to head: HTTPRequestHead, context: ChannelHandlerContext) {
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        let text = Self.plainText
        let actions = self.actions
        guard self.authorized(head, path: path) else {
            return self.write(
                (.unauthorized, text, "401 this admin endpoint needs Authorization: Bearer <the --admin-secret file's contents>\n"),
                for: head, context: context, extra: [("WWW-Authenticate", "Bearer realm=\"lacquer admin\"")])
        }
        if head.method == .GET, path == "/log" {
            return self.startTail(head, context: context)
        }
        let slow: (@Sendable () -> Answer)?
        switch (head.method, path) {
        case (.GET, "/stats"), (.HEAD, "/stats"):
            slow = { (.ok, "application/json", actions.stats().json()) }
        case (.GET, "/metrics"), (.HEAD, "/metrics"):
            slow = { (.ok, "text/plain; version=0.0.4", actions.stats().prometheus()) }
        case (.GET, "/bans"), (.HEAD, "/bans"):
            slow = { (.ok, text, actions.bans()) }
        case (.GET, "/backends"), (.HEAD, "/backends"):
            slow = { (.ok, text, actions.backends()) }
        case (.POST, "/ban"):
            // Recorded in the disk tier before the answer: off the event loop.
            let expression = self.body.trimmingCharacters(in: .whitespacesAndNewlines)
            let tooLarge = self.bodyTooLarge
            slow = {
                if tooLarge {
                    return (.payloadTooLarge, text, "413 ban expression too long\n")
                } else if expression.isEmpty {
                    return (.badRequest, text, "400 send the ban expression as the body, e.g. req.url ~ ^/news\n")
                } else if let error = actions.ban(expression) {
                    return (.badRequest, text, "400 \(error)\n")
                }
                return (.ok, text, "ban added: \(expression)\n")
            }
        case (.POST, "/purge"):
            // Committed to the disk tier before the answer: off the event loop.
            let query = Self.queryItems(head.uri)
            var named: [String] = []
            for (name, value) in query where name == "key" {
                SurrogateKeyFields.split(value, into: &named)
            }
            let keys = named
            let soft = query.contains { $0.0 == "soft" && $0.1 == "1" }
            let all = query.contains { $0.0 == "all" && $0.1 == "1" }
            slow = {
                if all {
                    if let error = actions.purgeAll() { return (.serviceUnavailable, text, "503 \(error)\n") }
                    return (.ok, text, "Purged everything stored until now (the ban lurker removes the objects in the background)\n")
                }
                guard !keys.isEmpty else {
                    return (.badRequest, text, "400 name the surrogate keys: POST /purge?key=k1%20k2 (&soft=1 to mark stale), or POST /purge?all=1\n")
                }
                switch actions.purgeKeys(keys, soft) {
                case .success(let count):
                    let noun = count == 1 ? "object" : "objects"
                    return (.ok, text, "Purged \(count) \(noun) (\(soft ? "soft, " : "")keys: \(keys.joined(separator: " ")))\n")
                case .failure(let failure):
                    return (.serviceUnavailable, text, "503 \(failure.reason)\n")
                }
            }
        case (.POST, "/reload"):
            slow = {
                let result = actions.reload()
                return (result.ok ? .ok : .unprocessableEntity, text, result.message + "\n")
            }
        default:
            slow = nil
        }
        if let slow {
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            NIOThreadPool.singleton.runIfActive(eventLoop: context.eventLoop, slow).whenComplete { result in
                let (handler, context) = loopBound.value
                let answer = (try? result.get()) ?? (.internalServerError, text, "500 could not run the request\n")
                handler.write(answer, for: head, context: context)
            }
            return
        }
        self.write(self.answer(head: head, path: path), for: head, context: context)
    }

    /// Why a purge could not be done (plain words, for the answer).
    struct PurgeFailure: Error {
        var reason: String
    }

    /// The query's `name=value` pairs, percent- and `+`-decoded.
    static func queryItems(_ uri: String) -> [(String, String)] {
        guard let query = uri.split(separator: "?", maxSplits: 1).dropFirst().first else { return [] }
        return query.split(separator: "&").map { item in
            let parts = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            func decode(_ text: Substring) -> String {
                let spaced = text.replacingOccurrences(of: "+", with: " ")
                return spaced.removingPercentEncoding ?? spaced
            }
            return (decode(parts[0]), parts.count > 1 ? decode(parts[1]) : "")
        }
    }

    /// The answer of an endpoint that needs no waiting.
    private func answer(head: HTTPRequestHead, path: String) -> Answer {
        let text = Self.plainText
        switch (head.method, path) {
        case (.GET, "/health"), (.HEAD, "/health"):
            return (.ok, text, "ok\n")
        case (_, "/reload"), (_, "/ban"), (_, "/purge"):
            return (.methodNotAllowed, text, "405 Method Not Allowed (use POST)\n")
        case (_, "/health"), (_, "/stats"), (_, "/metrics"), (_, "/bans"), (_, "/backends"), (_, "/log"):
            return (.methodNotAllowed, text, "405 Method Not Allowed\n")
        default:
            return (
                .notFound, text,
                "404 Not Found: try /health, /stats, /metrics, /bans, /backends, /log, POST /reload, POST /ban or POST /purge\n"
            )
        }
    }

    private func write(
        _ answer: Answer, for head: HTTPRequestHead, context: ChannelHandlerContext, extra: [(String, String)] = []
    ) {
        let (status, contentType, body) = answer
        var buffer = context.channel.allocator.buffer(capacity: body.utf8.count)
        buffer.writeString(body)
        var headers = HTTPHeaders(extra)
        headers.add(name: "Content-Type", value: contentType)
        headers.add(name: "Content-Length", value: String(buffer.readableBytes))
        headers.add(name: "Cache-Control", value: "no-store")
        if !head.isKeepAlive {
            headers.add(name: "Connection", value: "close")
        }
        context.write(self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        if head.method != .HEAD {
            context.write(self.wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        }
        let channel = context.channel
        let done = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: done)
        if !head.isKeepAlive {
            done.futureResult.whenComplete { _ in channel.close(promise: nil) }
        }
    }
}

extension AdminHandler {
    /// `GET /log[?q=QUERY][&format=json]`: a chunked stream of access log lines for requests
    /// that match the query, as they finish, until the reader leaves. Lines a slow reader
    /// cannot take are dropped for it (the cache never waits for a tail).
    private func startTail(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        guard let accessLog = self.actions.accessLog else {
            return self.write((.serviceUnavailable, Self.plainText, "503 no access log\n"), for: head, context: context)
        }
        let parameters = Self.queryParameters(head.uri)
        var filter: AccessLogFilter?
        if let query = parameters["q"], !query.trimmingCharacters(in: .whitespaces).isEmpty {
            do {
                filter = try AccessLogFilter.parse(query)
            } catch {
                return self.write((.badRequest, Self.plainText, "400 \(error.message)\n"), for: head, context: context)
            }
        }
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: parameters["format"] == "json" ? "application/x-ndjson" : Self.plainText)
        headers.add(name: "Transfer-Encoding", value: "chunked")
        headers.add(name: "Cache-Control", value: "no-store")
        context.writeAndFlush(self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
        let channel = context.channel
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let eventLoop = context.eventLoop
        self.tail = accessLog.subscribe(filter: filter, json: parameters["format"] == "json") { lines in
            guard channel.isActive else { return false }
            eventLoop.execute {
                let (handler, context) = loopBound.value
                guard channel.isActive, channel.isWritable else { return }  // a slow reader misses lines
                var buffer = channel.allocator.buffer(capacity: lines.utf8.count)
                buffer.writeString(lines)
                context.writeAndFlush(handler.wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
            }
            return true
        }
    }

    /// `a=1&b=x%20y` → ["a": "1", "b": "x y"] (`+` is a space, as in forms).
    static func queryParameters(_ uri: String) -> [String: String] {
        guard let mark = uri.firstIndex(of: "?") else { return [:] }
        var result: [String: String] = [:]
        for pair in uri[uri.index(after: mark)...].split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = Self.percentDecoded(String(parts[0]))
            result[name] = parts.count > 1 ? Self.percentDecoded(String(parts[1])) : ""
        }
        return result
    }

    static func percentDecoded(_ text: String) -> String {
        var bytes: [UInt8] = []
        var iterator = Array(text.utf8).makeIterator()
        while let byte = iterator.next() {
            if byte == UInt8(ascii: "+") {
                bytes.append(UInt8(ascii: " "))
            } else if byte == UInt8(ascii: "%"), let high = iterator.next(), let low = iterator.next(),
                let value = UInt8(String(decoding: [high, low], as: UTF8.self), radix: 16)
            {
                bytes.append(value)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// Everything `/stats` and `/metrics` report, taken at one instant.
public struct StatsSnapshot: Sendable {
    public var uptimeSeconds: Double
    public var counters: [(name: String, value: Int)]
    public var memory: [(name: String, value: Int)]
    /// Empty when the disk tier is off.
    public var disk: [(name: String, value: Int)]
    /// Fetches in flight, hit-for-miss keys, active bans.
    public var fetches: [(name: String, value: Int)] = []
    public var connections: Int
    /// One entry per configured backend, in configuration order.
    public var backends: [BackendSnapshot] = []
    public var version = LacquerVersion.string
    /// Request durations by cache status (nil: not collected).
    public var requestDurations: RequestDurations?
    /// HELP text per counter name.
    public var counterHelp: [String: String] = Dictionary(uniqueKeysWithValues: Counter.allCases.map { ($0.name, $0.help) })

    /// `{"uptime_seconds":…, "connections":…, "counters":{…}, "memory":{…}, "disk":{…}|null,
    /// "fetches":{…}, "backends":[{"name":…, "address":…, "healthy":…, "probe":{…}|null, …}]}`,
    /// encoded from `StatsDocument` by Foundation's JSON encoder (keys sorted, so the text is stable).
    public func json() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        guard let data = try? encoder.encode(StatsDocument(self)) else { return "{}\n" }
        return String(decoding: data, as: UTF8.self) + "\n"
    }

    /// A JSON string literal (RFC 8259 §7 escapes).
    static func jsonString(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }

    /// Prometheus text exposition (see `PrometheusText`): every counter as
    /// `lacquer_<name>_total`, tier sizes as gauges and tier events as counters, request and
    /// backend fetch durations as histograms, build info, uptime and what is in flight.
    public func prometheus() -> String {
        var out = PrometheusText()
        out.family("lacquer_build_info", .gauge, "Lacquer's version (always 1).")
        out.sample("lacquer_build_info", [("version", self.version)], 1)
        out.family("lacquer_uptime_seconds", .gauge, "Seconds since Lacquer started.")
        out.sample("lacquer_uptime_seconds", [], (self.uptimeSeconds * 1000).rounded() / 1000)
        out.family("lacquer_connections", .gauge, "Client connections open now.")
        out.sample("lacquer_connections", [], self.connections)
        let counterNames = Set(self.counters.map(\.name))
        for (name, value) in self.counters {
            let family = "lacquer_\(name)_total"
            out.family(family, .counter, self.counterHelp[name] ?? name)
            out.sample(family, [], value)
        }
        for (tier, figures) in [("memory", self.memory), ("disk", self.disk)] {
            for (name, value) in figures {
                if Self.gaugeFigures.contains(name) {
                    let family = "lacquer_\(tier)_\(name)"
                    out.family(family, .gauge, "The \(tier) tier's \(name.replacing("_", with: " ")) now.")
                    out.sample(family, [], value)
                } else {
                    // A tier event count; named apart from a server counter of the same name.
                    let base = counterNames.contains("\(tier)_\(name)") ? "\(tier)_tier_\(name)" : "\(tier)_\(name)"
                    let family = "lacquer_\(base)_total"
                    out.family(family, .counter, "The \(tier) tier's \(name.replacing("_", with: " ")) since start.")
                    out.sample(family, [], value)
                }
            }
        }
        for (name, value) in self.fetches {
            let (family, help): (String, String) =
                switch name {
                case "in_flight": ("lacquer_fetches_in_flight", "Backend fetches in flight (fills that requests may wait on).")
                case "bans": ("lacquer_bans_active", "Bans in the ban list.")
                case "hit_for_miss_objects": ("lacquer_hit_for_miss_objects", "Keys marked hit-for-miss now.")
                default: ("lacquer_\(name)", name)
                }
            out.family(family, .gauge, help)
            out.sample(family, [], value)
        }
        if let durations = self.requestDurations {
            out.family("lacquer_request_duration_seconds", .histogram, "Seconds from a request's head to the end of its response, by X-Cache-Status.")
            for (label, histogram) in durations.all {
                out.histogram("lacquer_request_duration_seconds", [("cache", label)], histogram)
            }
        }
        if !self.backends.isEmpty {
            out.family("lacquer_backend_healthy", .gauge, "Whether the backend takes traffic (1) or is sick (0).")
            for backend in self.backends {
                out.sample("lacquer_backend_healthy", [("backend", backend.name)], backend.healthy ? 1 : 0)
            }
            out.family("lacquer_backend_connections", .gauge, "Backend connections open now.")
            for backend in self.backends {
                out.sample("lacquer_backend_connections", [("backend", backend.name)], backend.openConnections)
            }
            out.family("lacquer_backend_requests_total", .counter, "Requests sent to the backend.")
            for backend in self.backends {
                out.sample("lacquer_backend_requests_total", [("backend", backend.name)], backend.requests)
            }
            out.family("lacquer_backend_failures_total", .counter, "Failed fetches from the backend, by kind.")
            for backend in self.backends {
                for (kind, value) in backend.failures {
                    out.sample("lacquer_backend_failures_total", [("backend", backend.name), ("kind", kind)], value)
                }
            }
            out.family("lacquer_backend_fetch_duration_seconds", .histogram, "Seconds from sending a fetch to the end of its body or its failure.")
            for backend in self.backends {
                if let histogram = backend.fetchDurations {
                    out.histogram("lacquer_backend_fetch_duration_seconds", [("backend", backend.name)], histogram)
                }
            }
        }
        return out.text
    }

    /// Tier figures that are levels (gauges); the others only grow (counters).
    static let gaugeFigures: Set<String> = ["objects", "bytes", "capacity_bytes", "disk_full", "slot_bytes", "run_bytes"]
}

/// The JSON document `/stats` serves: a Codable view of a `StatsSnapshot`.
struct StatsDocument: Encodable {
    /// Named figures as one JSON object.
    struct Figures: Encodable {
        var pairs: [(name: String, value: Int)]

        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: Key.self)
            for pair in self.pairs {
                try container.encode(pair.value, forKey: Key(pair.name))
            }
        }
    }

    struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(_ name: String) { self.stringValue = name }
        init?(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    struct Probe: Encodable {
        var good: Int
        var window: Int
        var threshold: Int
        var last: String?
        var changes: Int

        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: Key.self)
            try container.encode(self.good, forKey: Key("good"))
            try container.encode(self.window, forKey: Key("window"))
            try container.encode(self.threshold, forKey: Key("threshold"))
            try container.encode(self.last, forKey: Key("last"))  // null before the first probe
            try container.encode(self.changes, forKey: Key("changes"))
        }
    }

    struct Connections: Encodable {
        var open: Int
        var idle: Int
    }

    struct Backend: Encodable {
        var name: String
        var address: String
        var healthy: Bool
        var probe: Probe?
        var connections: Connections
        var queued: Int
        var requests: Int
        var failures: Figures

        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: Key.self)
            try container.encode(self.name, forKey: Key("name"))
            try container.encode(self.address, forKey: Key("address"))
            try container.encode(self.healthy, forKey: Key("healthy"))
            try container.encode(self.probe, forKey: Key("probe"))  // null without a probe
            try container.encode(self.connections, forKey: Key("connections"))
            try container.encode(self.queued, forKey: Key("queued"))
            try container.encode(self.requests, forKey: Key("requests"))
            try container.encode(self.failures, forKey: Key("failures"))
        }
    }

    var version: String
    var uptimeSeconds: Double
    var connections: Int
    var counters: Figures
    var memory: Figures
    var disk: Figures?
    var fetches: Figures
    var backends: [Backend]

    init(_ snapshot: StatsSnapshot) {
        self.version = snapshot.version
        self.uptimeSeconds = (snapshot.uptimeSeconds * 1000).rounded() / 1000
        self.connections = snapshot.connections
        self.counters = Figures(pairs: snapshot.counters)
        self.memory = Figures(pairs: snapshot.memory)
        self.disk = snapshot.disk.isEmpty ? nil : Figures(pairs: snapshot.disk)
        self.fetches = Figures(pairs: snapshot.fetches)
        self.backends = snapshot.backends.map { backend in
            Backend(
                name: backend.name, address: backend.address, healthy: backend.healthy,
                probe: backend.probe.map {
                    Probe(good: $0.good, window: $0.window, threshold: $0.threshold, last: $0.last, changes: $0.changes)
                },
                connections: Connections(open: backend.openConnections, idle: backend.idleConnections),
                queued: backend.queued, requests: backend.requests, failures: Figures(pairs: backend.failures))
        }
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: Key.self)
        try container.encode(self.version, forKey: Key("version"))
        try container.encode(self.uptimeSeconds, forKey: Key("uptime_seconds"))
        try container.encode(self.connections, forKey: Key("connections"))
        try container.encode(self.counters, forKey: Key("counters"))
        try container.encode(self.memory, forKey: Key("memory"))
        try container.encode(self.disk, forKey: Key("disk"))  // null when the disk tier is off
        try container.encode(self.fetches, forKey: Key("fetches"))
        try container.encode(self.backends, forKey: Key("backends"))
    }
}
