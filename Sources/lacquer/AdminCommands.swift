import ArgumentParser
import Foundation
import LacquerServer

#if canImport(Glibc)
import Glibc
#endif

/// Where the admin port is and how to prove who we are (shared by the client commands).
struct AdminConnectionOptions: ParsableArguments {
    @Option(name: [.customShort("T"), .customLong("admin-address")], help: ArgumentHelp("The admin listener of the running Lacquer (its --admin), as varnishadm's -T.", valueName: "HOST:PORT"))
    var admin = "127.0.0.1:6082"

    @Option(name: [.customShort("S"), .customLong("secret-file")], help: ArgumentHelp("The file given to --admin-secret (its contents, trimmed, are the secret).", valueName: "FILE"))
    var secretFile: String?

    func validate() throws {
        guard HostAndPort.parse(self.admin) != nil else {
            throw ValidationError("--admin-address '\(self.admin)' is not HOST:PORT")
        }
    }

    func client() throws -> AdminClient {
        guard let address = HostAndPort.parse(self.admin) else { throw ValidationError("--admin-address '\(self.admin)' is not HOST:PORT") }
        var secret: String?
        if let path = self.secretFile {
            do {
                secret = try AdminSecret.read(path: path)
            } catch {
                throw ValidationError("--secret-file: \(error.description)")
            }
        }
        let host = address.host.isEmpty ? "127.0.0.1" : address.host
        return AdminClient(host: host, port: address.port, secret: secret)
    }
}

/// Runs a client call; a failure is printed plainly and exits 1.
func adminCall<T>(_ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let failure as AdminClient.Failure {
        printError("lacquer: \(failure.description)")
        throw ExitCode(1)
    }
}

/// `lacquer admin ban|reload|backends|bans|stats`: varnishadm for the admin port.
struct Admin: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Talk to a running Lacquer's admin port (like varnishadm).",
        discussion: """
            ban EXPRESSION   add a ban, e.g. lacquer admin ban 'req.url ~ ^/js/'
            bans             list the active bans
            purge KEY...     purge every object tagged with a surrogate key (xkey, Surrogate-Key, Cache-Tag)
            softpurge KEY... mark those objects stale instead (served while one fetch refreshes them)
            purge-all        invalidate every object stored so far
            reload           reload the --config file (as SIGHUP)
            backends         list the backends and their health
            stats            print /stats (JSON)
            """)

    @OptionGroup var connection: AdminConnectionOptions

    @Argument(help: ArgumentHelp("ban, bans, purge, softpurge, purge-all, reload, backends or stats.", valueName: "COMMAND"))
    var command: String

    @Argument(help: ArgumentHelp("The ban expression (for ban; quote it, or put it after --), or the surrogate keys (for purge and softpurge).", valueName: "ARGUMENTS"))
    var arguments: [String] = []

    func validate() throws {
        guard ["ban", "bans", "purge", "softpurge", "purge-all", "reload", "backends", "stats"].contains(self.command) else {
            throw ValidationError(
                "unknown admin command '\(self.command)': use ban, bans, purge, softpurge, purge-all, reload, backends or stats")
        }
        if self.command == "ban" && self.arguments.isEmpty {
            throw ValidationError("ban needs an expression, e.g. lacquer admin ban 'req.url ~ ^/js/'")
        }
        if (self.command == "purge" || self.command == "softpurge") && self.arguments.isEmpty {
            throw ValidationError("\(self.command) needs one or more surrogate keys, e.g. lacquer admin \(self.command) product-42")
        }
    }

    func run() throws {
        let client = try self.connection.client()
        let response: AdminClient.Response = try adminCall {
            switch self.command {
            case "ban": return try client.send("POST", "/ban", body: self.arguments.joined(separator: " "))
            case "purge", "softpurge":
                let keys = self.arguments.joined(separator: " ").addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""
                return try client.send("POST", "/purge?key=" + keys + (self.command == "softpurge" ? "&soft=1" : ""))
            case "purge-all": return try client.send("POST", "/purge?all=1")
            case "reload": return try client.send("POST", "/reload")
            case "bans": return try client.send("GET", "/bans")
            case "backends": return try client.send("GET", "/backends")
            default: return try client.send("GET", "/stats")
            }
        }
        if (200..<300).contains(response.status) {
            print(response.body, terminator: "")
        } else {
            printError(response.body.trimmingCharacters(in: .whitespacesAndNewlines))
            throw ExitCode(1)
        }
    }
}

/// `lacquer log`: live requests from the admin port (like varnishlog -q / varnishncsa).
struct Log: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print requests as a running Lacquer answers them (from the admin port).",
        discussion: """
            A query keeps the matching requests, e.g. -q 'status >= 500', -q 'cache == MISS and url ~ ^/api'.
            Fields: status, bytes, xid, ttfb, time (numbers); cache, method, url, client, backend, host, referer, ua, proto.
            Operators: == != < <= > >= ~ !~, joined with and, or, not and parentheses.
            """)

    @OptionGroup var connection: AdminConnectionOptions

    @Option(name: [.customShort("q"), .customLong("query")], help: ArgumentHelp("Only requests that match this query.", valueName: "QUERY"))
    var query: String?

    @Flag(name: .customLong("json"), help: "One JSON object per line instead of the access log format.")
    var json = false

    func validate() throws {
        if let query {
            do {
                _ = try AccessLogFilter.parse(query)
            } catch {
                throw ValidationError("-q: \(error.message)")
            }
        }
    }

    func run() throws {
        let client = try self.connection.client()
        var parameters: [String] = []
        if let query { parameters.append("q=" + Self.escape(query)) }
        if self.json { parameters.append("format=json") }
        let target = "/log" + (parameters.isEmpty ? "" : "?" + parameters.joined(separator: "&"))
        var status = 0
        var errorText: [UInt8] = []
        try adminCall {
            try client.stream(
                "GET", target, onHead: { status = $0 },
                onBody: { bytes in
                    if status == 200 {
                        bytes.withUnsafeBytes { _ = write(1, $0.baseAddress, $0.count) }
                    } else {
                        errorText += bytes
                    }
                })
        }
        if status != 200 {
            printError(String(decoding: errorText, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
            throw ExitCode(1)
        }
    }

    static func escape(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                let hex = String(byte, radix: 16, uppercase: true)
                out += "%" + (hex.count == 1 ? "0" + hex : hex)
            }
        }
        return out
    }
}

/// `lacquer stat`: counters and their rates, live (like varnishstat).
struct Stat: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show a running Lacquer's counters and their rates (from the admin port), like varnishstat.")

    @OptionGroup var connection: AdminConnectionOptions

    @Flag(name: [.customShort("1"), .customLong("once")], help: "Print the figures once (rates averaged since start) and exit.")
    var once = false

    @Flag(name: .customLong("json"), help: "Print the figures once as JSON (with per-second averages since start) and exit.")
    var json = false

    @Option(name: .customLong("interval"), help: ArgumentHelp("Seconds between refreshes of the live view.", valueName: "SECONDS"))
    var interval = 1.0

    @Option(name: .customLong("count"), help: ArgumentHelp("Stop the live view after this many refreshes (0: until interrupted).", valueName: "N"))
    var count = 0

    func validate() throws {
        guard self.interval >= 0.1, self.interval.isFinite else { throw ValidationError("--interval must be 0.1 s or more") }
        guard self.count >= 0 else { throw ValidationError("--count must be 0 or more") }
    }

    func run() throws {
        let client = try self.connection.client()
        var previous = try self.fetch(client)
        if self.json {
            var document = previous.document
            document["rates_since_start"] = previous.counters.mapValues { previous.uptime > 0 ? Double($0) / previous.uptime : 0 }
            let data = try JSONSerialization.data(withJSONObject: document, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
            return
        }
        if self.once {
            print(StatView.render(current: previous, previous: nil, live: false), terminator: "")
            return
        }
        var shown = 0
        while self.count == 0 || shown < self.count {
            Thread.sleep(forTimeInterval: self.interval)
            let current = try self.fetch(client)
            print("\u{1B}[H\u{1B}[2J" + StatView.render(current: current, previous: previous, live: true), terminator: "")
            fflush(nil)
            previous = current
            shown += 1
        }
    }

    private func fetch(_ client: AdminClient) throws -> StatSample {
        let response = try adminCall { try client.send("GET", "/stats") }
        guard response.status == 200, let sample = StatSample(json: response.body) else {
            printError("lacquer: the admin port did not answer /stats with figures (status \(response.status))")
            throw ExitCode(1)
        }
        return sample
    }
}

/// One `/stats` answer, parsed.
struct StatSample {
    var document: [String: Any]
    var uptime: Double
    var counters: [String: Int]
    var memory: [String: Int]
    var disk: [String: Int]?
    var connections: Int
    var inFlight: Int
    var version: String

    init?(json: String) {
        guard let object = try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any] else { return nil }
        self.document = object
        self.uptime = (object["uptime_seconds"] as? NSNumber)?.doubleValue ?? 0
        func figures(_ value: Any?) -> [String: Int]? {
            (value as? [String: Any])?.compactMapValues { ($0 as? NSNumber)?.intValue }
        }
        self.counters = figures(object["counters"]) ?? [:]
        self.memory = figures(object["memory"]) ?? [:]
        self.disk = figures(object["disk"])
        self.connections = (object["connections"] as? NSNumber)?.intValue ?? 0
        self.inFlight = figures(object["fetches"])?["in_flight"] ?? 0
        self.version = object["version"] as? String ?? "?"
    }
}

/// The text of `lacquer stat`: a summary, then every non-zero counter with its rate.
enum StatView {
    static func render(current: StatSample, previous: StatSample?, live: Bool) -> String {
        let elapsed = previous.map { max(0.001, current.uptime - $0.uptime) } ?? max(0.001, current.uptime)
        func rate(_ name: String) -> Double {
            let now = Double(current.counters[name] ?? 0)
            let before = Double(previous?.counters[name] ?? 0)
            return (now - before) / elapsed
        }
        func total(_ names: [String], in sample: StatSample?) -> Int {
            names.reduce(0) { $0 + (sample?.counters[$1] ?? 0) }
        }
        let hitNames = ["cache_hit", "updating_served", "stale_served"]
        let lookupNames = hitNames + ["cache_miss", "cache_expired"]
        let hits = total(hitNames, in: current) - total(hitNames, in: previous)
        let lookups = total(lookupNames, in: current) - total(lookupNames, in: previous)
        let ratio = lookups > 0 ? Double(hits) / Double(lookups) : 0
        let errorNames = ["synth_502", "synth_503", "synth_504", "fetch_failed"]
        var out = "Lacquer \(current.version)  up \(Self.duration(current.uptime))  "
        out += live ? "(rates over the last \(Self.number(elapsed)) s)\n" : "(rates averaged since start)\n"
        out += "  requests/s \(Self.number(rate("client_req")))   hit ratio \(Self.number(ratio * 100))%"
        out += "   backend fetches/s \(Self.number(rate("backend_req")))   errors/s \(Self.number(errorNames.map(rate).reduce(0, +)))\n"
        out += "  connections \(current.connections)   fetches in flight \(current.inFlight)\n"
        out += "  memory \(Self.bytes(current.memory["bytes"] ?? 0)) of \(Self.bytes(current.memory["capacity_bytes"] ?? 0)), \(current.memory["objects"] ?? 0) objects\n"
        if let disk = current.disk {
            out += "  disk \(Self.bytes(disk["bytes"] ?? 0)) of \(Self.bytes(disk["capacity_bytes"] ?? 0)), \(disk["objects"] ?? 0) objects\n"
        } else {
            out += "  disk off\n"
        }
        out += "\n" + Self.pad("COUNTER", 34) + Self.pad("VALUE", 14, right: true) + Self.pad("PER SECOND", 14, right: true) + "\n"
        for name in current.counters.keys.sorted() {
            let value = current.counters[name] ?? 0
            guard value != 0 else { continue }
            out += Self.pad(name, 34) + Self.pad(String(value), 14, right: true) + Self.pad(Self.number(rate(name)), 14, right: true) + "\n"
        }
        return out
    }

    static func pad(_ text: String, _ width: Int, right: Bool = false) -> String {
        let fill = String(repeating: " ", count: max(1, width - text.count))
        return right ? fill + text : text + fill
    }

    static func number(_ value: Double) -> String {
        String(format: value >= 100 ? "%.0f" : "%.1f", value)
    }

    static func bytes(_ value: Int) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var amount = Double(value)
        var unit = 0
        while amount >= 1024 && unit < units.count - 1 {
            amount /= 1024
            unit += 1
        }
        return unit == 0 ? "\(value) B" : String(format: "%.1f", amount) + " " + units[unit]
    }

    static func duration(_ seconds: Double) -> String {
        let total = Int(seconds)
        let (days, hours, minutes, secs) = (total / 86400, total / 3600 % 24, total / 60 % 60, total % 60)
        return days > 0 ? "\(days)d \(hours)h \(minutes)m" : hours > 0 ? "\(hours)h \(minutes)m \(secs)s" : "\(minutes)m \(secs)s"
    }
}
