import FixtureOrigin
import Foundation
import LacquerTesting
import NIOCore
import Testing

@testable import LacquerServer

/// What an operator relies on, over real sockets: the access log and its reopen, the live tail,
/// the drain on stop, the locked admin, metrics Prometheus accepts, and plain errors.
@Suite("Operability", .serialized, .timeLimit(.minutes(2)))
struct OperabilityTests {
    /// Waits (bounded) until `path` holds at least `count` lines; returns them.
    static func lines(in path: String, atLeast count: Int, timeout: Double = 5) async throws -> [String] {
        let deadline = Date().addingTimeInterval(timeout)
        var lines: [String] = []
        while Date() < deadline {
            let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
            lines = text.split(separator: "\n").map(String.init)
            if lines.count >= count { return lines }
            try await Task.sleep(for: .milliseconds(20))
        }
        return lines
    }

    // MARK: The access log

    @Test("every request is logged once: a miss, a fast-lane hit, a pass, a PURGE and a refused request")
    func accessLogLines() async throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/access.log"
        try await withLacquer(configure: { $0.accessLog = .file(path) }) { _, port, _ async throws in
            _ = try httpGet(port: port, "/log/a?cc=max-age%3D60", headers: [("User-Agent", "probe/1.0"), ("Referer", "http://r.example/")])
            _ = try httpGet(port: port, "/log/a?cc=max-age%3D60", headers: [("User-Agent", "probe/1.0")])
            _ = try httpGet(port: port, "/status/404")
            _ = try httpGet(port: port, "/log/a?cc=max-age%3D60", method: "PURGE")
            let raw = try RawHTTPClient(port: port)
            try raw.send("GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
            _ = try raw.readResponse()
            raw.close()
            let lines = try await Self.lines(in: path, atLeast: 5)
            #expect(lines.count == 5, "\(lines)")
            guard lines.count == 5 else { return }
            #expect(lines[0].hasPrefix("127.0.0.1 - - ["))
            #expect(lines[0].contains("\"GET /log/a?cc=max-age%3D60 HTTP/1.1\" 200 "))
            #expect(lines[0].contains("\"http://r.example/\" \"probe/1.0\" cache=MISS"))
            #expect(lines[0].contains("backend=origin xid="))
            #expect(lines[1].contains("cache=HIT"))
            #expect(lines[1].contains("\"-\" \"probe/1.0\""))
            #expect(lines[2].contains("\"GET /status/404 HTTP/1.1\" 404 "))
            #expect(lines[3].contains("\"PURGE /log/a?cc=max-age%3D60 HTTP/1.1\" 200 "))
            #expect(lines[4].contains("\"GET /x HTTP/1.1\" 400 "))
            for line in lines {
                let ttfb = line.split(separator: " ").first { $0.hasPrefix("ttfb=") }
                #expect(ttfb.flatMap { Double($0.dropFirst(5)) } != nil, "\(line)")
            }
        }
    }

    @Test("reopen (SIGUSR1) moves the log to a fresh file after logrotate renamed the old one")
    func reopen() async throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/access.log"
        try await withLacquer(configure: { $0.accessLog = .file(path) }) { lacquer, port, _ async throws in
            _ = try httpGet(port: port, "/before")
            #expect(try await Self.lines(in: path, atLeast: 1).count == 1)
            try FileManager.default.moveItem(atPath: path, toPath: path + ".1")
            lacquer.reopenLogs()
            // The next batch reopens before it writes.
            _ = try httpGet(port: port, "/after")
            let fresh = try await Self.lines(in: path, atLeast: 1)
            #expect(fresh.count == 1)
            #expect(fresh.first?.contains("/after") == true)
            let rotated = try await Self.lines(in: path + ".1", atLeast: 1)
            #expect(rotated.count == 1)
            #expect(rotated.first?.contains("/before") == true)
        }
    }

    @Test("JSON lines: one object per request")
    func jsonLines() async throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/access.json"
        try await withLacquer(configure: {
            $0.accessLog = .file(path)
            $0.accessLogFormat = .json
        }) { _, port, _ async throws in
            _ = try httpGet(port: port, "/j?cc=max-age%3D60")
            let lines = try await Self.lines(in: path, atLeast: 1)
            let first = try #require(lines.first)
            let object = try #require(try JSONSerialization.jsonObject(with: Data(first.utf8)) as? [String: Any])
            #expect(object["target"] as? String == "/j?cc=max-age%3D60")
            #expect(object["cache"] as? String == "MISS")
            #expect(object["backend"] as? String == "origin")
            #expect(object["complete"] as? Bool == true)
        }
    }

    @Test("an access log that cannot be opened stops start-up with the file named")
    func unopenableLog() async throws {
        do {
            _ = try await withLacquer(configure: { $0.accessLog = .file("/nonexistent-dir/access.log") }) { _, _, _ in
                Issue.record("started with an access log it cannot open")
            }
        } catch let error as LacquerServerError {
            #expect(error.description == "cannot open access log /nonexistent-dir/access.log: no such file or directory")
        }
    }

    @Test("GET /log streams the requests that match its query, as they finish")
    func liveTail() async throws {
        try await withLacquer { lacquer, port, _ async throws in
            let adminPort = try #require(lacquer.adminAddress?.port)
            let tail = try RawHTTPClient(port: adminPort, timeout: 5)
            defer { tail.close() }
            try tail.send("GET /log?q=status%20%3E%3D%20500 HTTP/1.1\r\nHost: admin\r\n\r\n")
            let head = try tail.readResponseHead()
            #expect(head.status == 200)
            #expect(head.header("Transfer-Encoding") == "chunked")
            // The tail is registered once the head is out; these requests finish after it.
            _ = try httpGet(port: port, "/fine")
            _ = try httpGet(port: port, "/status/503")
            _ = try httpGet(port: port, "/status/502")
            var text = ""
            let deadline = Date().addingTimeInterval(5)
            while Date() < deadline, !(text.contains("/status/503") && text.contains("/status/502")) {
                let bytes = try tail.readSome()
                text += String(decoding: bytes, as: UTF8.self)
            }
            #expect(text.contains("\"GET /status/503 HTTP/1.1\" 503 "))
            #expect(text.contains("\"GET /status/502 HTTP/1.1\" 502 "))
            #expect(!text.contains("/fine"))
        }
    }

    // MARK: Drain

    @Test("a drain lets a slow 5 MB download finish, closes idle keep-alive connections and stops accepting")
    func drainFinishesDownloads() async throws {
        try await withLacquer { lacquer, port, _ async throws in
            let idle = try RawHTTPClient(port: port, timeout: 5)
            _ = try idle.request("GET", "/idle")
            let download = try RawHTTPClient(port: port, timeout: 10)
            try download.send("GET /slowbody/5242880/150 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            let head = try download.readResponseHead()
            #expect(head.status == 200)
            let started = Date()
            let drained = Task { await lacquer.drain() }
            // The idle connection is closed at once.
            let leftovers = try await runBlocking { try idle.readToEOF() }
            #expect(leftovers.isEmpty)
            #expect(idle.isClosedByPeer)
            // New connections are refused once the listener is closed.
            try await Task.sleep(for: .milliseconds(100))
            #expect(throws: (any Error).self) { _ = try httpGet(port: port, "/late", timeout: 2) }
            // The download completes, every byte, and the connection closes after it.
            let body = try await runBlocking { try download.readToEOF(max: 6 << 20) }
            #expect(body.count == 5_242_880)
            #expect(download.isClosedByPeer)
            await drained.value
            #expect(Date().timeIntervalSince(started) >= 1.0)  // it waited for the origin's 1.5 s body
        }
    }

    @Test("a second stop ends the drain at once: the download in flight is cut")
    func secondStopCuts() async throws {
        try await withLacquer(configure: { $0.drainTimeout = 30 }) { lacquer, port, _ async throws in
            let download = try RawHTTPClient(port: port, timeout: 10)
            try download.send("GET /slowbody/1048576/1000 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            _ = try download.readResponseHead()
            let stopped = Task { try await lacquer.runUntilStopped() }
            lacquer.requestStop()
            try await Task.sleep(for: .milliseconds(300))
            let started = Date()
            lacquer.requestStop()
            try await stopped.value
            #expect(Date().timeIntervalSince(started) < 5)
            let body = try await runBlocking { try download.readToEOF(max: 2 << 20) }
            #expect(body.count < 1_048_576)
        }
    }

    @Test("a drain with nothing in flight returns at once; the drain timeout bounds a stuck one")
    func drainTimeout() async throws {
        try await withLacquer(configure: { $0.drainTimeout = 0.5 }) { lacquer, port, _ async throws in
            let hanging = try RawHTTPClient(port: port, timeout: 10)
            try hanging.send("GET /hang HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            try await Task.sleep(for: .milliseconds(100))
            let started = Date()
            await lacquer.drain()
            let waited = Date().timeIntervalSince(started)
            #expect(waited >= 0.4 && waited < 3, "\(waited)")
        }
    }

    // MARK: The admin secret

    @Test("with a secret, POST /ban, /reload, /bans and /log want the bearer token; /health, /stats and /metrics stay open")
    func adminSecret() async throws {
        try await withLacquer(configure: { $0.adminSecret = "tok-123" }) { lacquer, _, _ async throws in
            let admin = try #require(lacquer.adminAddress?.port)
            let refused = try httpGet(port: admin, "/ban", method: "POST", body: "req.url ~ ^/js/")
            #expect(refused.status == 401)
            #expect(refused.header("WWW-Authenticate")?.hasPrefix("Bearer") == true)
            #expect(lacquer.counters[.bansAdded] == 0)
            let wrong = try httpGet(port: admin, "/ban", method: "POST", headers: [("Authorization", "Bearer tok-124")], body: "req.url ~ ^/js/")
            #expect(wrong.status == 401)
            for target in ["/bans", "/log", "/backends"] {
                #expect(try httpGet(port: admin, target).status == 401, "\(target)")
            }
            #expect(try httpGet(port: admin, "/reload", method: "POST").status == 401)
            let allowed = try httpGet(port: admin, "/ban", method: "POST", headers: [("Authorization", "Bearer tok-123")], body: "req.url ~ ^/js/")
            #expect(allowed.status == 200)
            #expect(lacquer.counters[.bansAdded] == 1)
            let bans = try httpGet(port: admin, "/bans", headers: [("Authorization", "Bearer tok-123")])
            #expect(bans.bodyString.contains("1 active ban(s)"))
            #expect(bans.bodyString.contains("req.url ~ ^/js/"))
            for target in ["/health", "/stats", "/metrics"] {
                #expect(try httpGet(port: admin, target).status == 200, "\(target)")
            }
        }
    }

    @Test("the secret file: contents trimmed; a missing or empty file is refused with its name")
    func secretFile() throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try "  s3cret\n".write(toFile: directory + "/secret", atomically: true, encoding: .utf8)
        #expect(try AdminSecret.read(path: directory + "/secret") == "s3cret")
        try "\n".write(toFile: directory + "/empty", atomically: true, encoding: .utf8)
        #expect { _ = try AdminSecret.read(path: directory + "/empty") } throws: { "\($0)".contains("/empty is empty") }
        #expect { _ = try AdminSecret.read(path: directory + "/none") } throws: { "\($0)".contains("/none: no such file") }
    }

    // MARK: Metrics

    @Test("/metrics: HELP and TYPE for every family, _total counters, sound histograms; promtool accepts it when installed")
    func metricsAreValid() async throws {
        try await withLacquer { lacquer, port, _ async throws in
            _ = try httpGet(port: port, "/m?cc=max-age%3D60")
            _ = try httpGet(port: port, "/m?cc=max-age%3D60")
            _ = try httpGet(port: port, "/status/500")
            let admin = try #require(lacquer.adminAddress?.port)
            // A request's duration is observed once its response has been written, which can be
            // just after the client has read it: wait (bounded) for the third one.
            var text = ""
            _ = try await eventually {
                text = try httpGet(port: admin, "/metrics").bodyString
                return text.contains("lacquer_request_duration_seconds_count{cache=\"MISS\"} 2")
            }
            let problems = PrometheusCheck.problems(text)
            #expect(problems.isEmpty, "\(problems)")
            #expect(text.contains("lacquer_build_info{version=\"\(LacquerVersion.string)\"} 1"))
            #expect(text.contains("# TYPE lacquer_cache_hit_total counter"))
            #expect(text.contains("# TYPE lacquer_request_duration_seconds histogram"))
            #expect(text.contains("lacquer_request_duration_seconds_count{cache=\"HIT\"} 1"))
            #expect(text.contains("lacquer_request_duration_seconds_count{cache=\"MISS\"} 2"))
            #expect(text.contains("lacquer_backend_fetch_duration_seconds_count{backend=\"origin\"} 2"))
            #expect(text.contains("# TYPE lacquer_memory_objects gauge"))
            #expect(text.contains("# TYPE lacquer_memory_inserts_total counter"))
            #expect(!text.contains("# TYPE lacquer_disk_write_errors gauge"))
            let sent = text.split(separator: "\n").first { $0.hasPrefix("lacquer_client_bytes_sent_total ") }
            #expect((sent?.split(separator: " ").last.flatMap { Int($0) } ?? 0) > 300, "\(sent ?? "none")")
            let received = text.split(separator: "\n").first { $0.hasPrefix("lacquer_client_bytes_received_total ") }
            #expect((received?.split(separator: " ").last.flatMap { Int($0) } ?? 0) > 50, "\(received ?? "none")")
            if let verdict = PrometheusCheck.promtool(text) {
                #expect(verdict.status == 0, "promtool: \(verdict.output)")
            }
        }
    }

    // MARK: Plain errors

    @Test("a refused backend: 502 in plain words, Cache-Status detail connection-refused, nothing from a library")
    func refusedBackend() async throws {
        try await withLacquer(configure: { $0.backends[0].port = 1 }) { _, port, _ async throws in
            let response = try httpGet(port: port, "/down")
            #expect(response.status == 502)
            #expect(response.bodyString == "502 Bad Gateway: connection to backend failed: connection refused\n")
            #expect(response.header("Cache-Status")?.hasSuffix("detail=connection-refused") == true)
            #expect(!response.bodyString.contains("error set"))
            #expect(!response.bodyString.contains("errno"))
        }
    }

    @Test("an HTTP/1.0 request without Host reaches the origin with the backend's own authority")
    func http10WithoutHost() async throws {
        try await withLacquer { _, port, origin async throws in
            let raw = try RawHTTPClient(port: port)
            defer { raw.close() }
            try raw.send("GET /echo HTTP/1.0\r\n\r\n")
            let response = try raw.readResponse()
            #expect(response.status == 200)
            #expect(response.bodyString.contains("\nhost: 127.0.0.1:\(origin.port)\n") || response.bodyString.contains("\nHost: 127.0.0.1:\(origin.port)\n"), "\(response.bodyString)")
        }
    }
}

/// A strict reading of the Prometheus text format (0.0.4), and `promtool` when it is installed.
enum PrometheusCheck {
    static func problems(_ text: String) -> [String] {
        var problems: [String] = []
        var types: [String: String] = [:]
        var helped: Set<String> = []
        var seenSeries: Set<String> = []
        var buckets: [String: [(le: Double, count: Double)]] = [:]
        var counts: [String: Double] = [:]
        let namePattern = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) where !line.isEmpty {
            if line.hasPrefix("# HELP ") {
                let name = String(line.dropFirst(7).prefix { $0 != " " })
                if !helped.insert(name).inserted { problems.append("HELP twice for \(name)") }
                if types[name] != nil { problems.append("HELP after TYPE or samples for \(name)") }
                continue
            }
            if line.hasPrefix("# TYPE ") {
                let parts = line.dropFirst(7).split(separator: " ")
                guard parts.count == 2 else { problems.append("bad TYPE line: \(line)"); continue }
                let name = String(parts[0])
                if types[name] != nil { problems.append("TYPE twice for \(name)") }
                if !helped.contains(name) { problems.append("no HELP for \(name)") }
                types[name] = String(parts[1])
                if parts[1] == "counter" && !name.hasSuffix("_total") { problems.append("counter \(name) without _total") }
                continue
            }
            if line.hasPrefix("#") { continue }
            guard let space = line.lastIndex(of: " ") else { problems.append("no value: \(line)"); continue }
            let series = String(line[..<space])
            let valueText = line[line.index(after: space)...]
            guard let value = Double(valueText) ?? (valueText == "+Inf" ? .infinity : nil) else {
                problems.append("bad value: \(line)"); continue
            }
            let name = String(series.prefix { $0 != "{" })
            if (try? namePattern.wholeMatch(in: name)) == nil { problems.append("bad name: \(name)") }
            if !seenSeries.insert(series).inserted { problems.append("duplicate series \(series)") }
            var family = name
            for suffix in ["_bucket", "_sum", "_count"] where name.hasSuffix(suffix) && types[String(name.dropLast(suffix.count))] == "histogram" {
                family = String(name.dropLast(suffix.count))
            }
            guard types[family] != nil else { problems.append("sample before TYPE: \(series)"); continue }
            if types[family] == "counter" && value < 0 { problems.append("negative counter \(series)") }
            if types[family] == "histogram" {
                let labels = series.drop { $0 != "{" }
                if name.hasSuffix("_bucket") {
                    guard let leRange = labels.range(of: "le=\""), let end = labels[leRange.upperBound...].firstIndex(of: "\"") else {
                        problems.append("bucket without le: \(series)"); continue
                    }
                    let leText = labels[leRange.upperBound..<end]
                    let le = leText == "+Inf" ? Double.infinity : Double(leText) ?? .nan
                    let key = family + labels.replacingOccurrences(of: "le=\"\(leText)\"", with: "")
                    buckets[key, default: []].append((le, value))
                } else if name.hasSuffix("_count") {
                    counts[family + labels.replacingOccurrences(of: "}", with: ",}")] = value
                }
            }
        }
        for (key, list) in buckets {
            if list.last?.le != .infinity { problems.append("no +Inf bucket in \(key)") }
            for index in list.indices.dropFirst() {
                if list[index].le <= list[index - 1].le { problems.append("buckets out of order in \(key)") }
                if list[index].count < list[index - 1].count { problems.append("buckets not cumulative in \(key)") }
            }
            if let total = list.last?.count, let count = counts[key], total != count {
                problems.append("+Inf bucket \(total) != _count \(count) in \(key)")
            }
        }
        return problems
    }

    /// `promtool check metrics` on `text`, or nil when promtool is not installed.
    static func promtool(_ text: String) -> (status: Int32, output: String)? {
        let candidates = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        guard let path = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else { return nil }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = ["check", "metrics"]
        let input = Pipe()
        let output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = output
        do {
            try process.run()
        } catch {
            return nil
        }
        input.fileHandleForWriting.write(Data(text.utf8))
        try? input.fileHandleForWriting.close()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}
