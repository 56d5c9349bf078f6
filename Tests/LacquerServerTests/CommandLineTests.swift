import FixtureOrigin
import LacquerServer
import Foundation
import LacquerTesting
import Testing

/// The real `lacquer` binary, as a user runs it: flags, exit codes, messages, serving, SIGTERM.
@Suite("lacquer command line", .serialized, .timeLimit(.minutes(2)))
struct CommandLineTests {
    /// The `lacquer` executable SwiftPM built next to the test bundle.
    static var binary: URL {
        let bundleDir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        let candidates = [bundleDir, bundleDir.deletingLastPathComponent()].map { $0.appendingPathComponent("lacquer") }
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0.path) } ?? candidates[0]
    }

    struct Finished {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// Runs lacquer to completion (bounded: killed after `timeout` seconds).
    func run(_ arguments: [String], timeout: Double = 20) throws -> Finished {
        let process = Process()
        process.executableURL = Self.binary
        process.arguments = arguments
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline {
            Thread.sleep(forTimeInterval: 0.02)
        }
        if process.isRunning {
            process.terminate()
            Issue.record("lacquer \(arguments) did not exit within \(timeout) s")
        }
        process.waitUntilExit()
        return Finished(
            status: process.terminationStatus,
            stdout: String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self),
            stderr: String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self))
    }

    @Test("the binary exists where SwiftPM built it")
    func binaryBuilt() {
        #expect(FileManager.default.isExecutableFile(atPath: Self.binary.path), "\(Self.binary.path)")
    }

    @Test(
        "a bad flag or value prints one clear line and the usage, and exits 64",
        arguments: [
            (["--memory", "12XB", "--backend", "http://127.0.0.1:1"], "--memory '12XB'"),
            (["--backend", "ftp://origin"], "--backend 'ftp://origin'"),
            (["--listen", "nowhere", "--backend", "http://127.0.0.1:1"], "--listen 'nowhere'"),
            (["--purge-acl", "10.0.0.0/40", "--backend", "http://127.0.0.1:1"], "prefix length 40"),
            (["--no-such-flag", "--backend", "http://127.0.0.1:1"], "--no-such-flag"),
            ([], "no backend"),
            (["--hit-for-miss=-1", "--backend", "http://127.0.0.1:1"], "--hit-for-miss must be"),
            (["--stale-if-error", "soon", "--backend", "http://127.0.0.1:1"], "--stale-if-error"),
            (["--max-request-body", "lots", "--backend", "http://127.0.0.1:1"], "--max-request-body 'lots'"),
            (["--passive-failures=-1", "--backend", "http://127.0.0.1:1"], "--passive-failures '-1'"),
            (["--passive-cooldown=-3", "--backend", "http://127.0.0.1:1"], "--passive-cooldown '-3.0'"),
            (["--rate-limit", "0", "--backend", "http://127.0.0.1:1"], "--rate-limit '0.0'"),
            (["--max-client-connections", "0", "--backend", "http://127.0.0.1:1"], "--max-client-connections '0'"),
            (["--keepalive-requests", "0", "--backend", "http://127.0.0.1:1"], "--keepalive-requests '0' must be 1 or more"),
            (["--access-log-format", "%h %Z", "--backend", "http://127.0.0.1:1"], "--access-log-format: column 4"),
            (["--drain-timeout=-1", "--backend", "http://127.0.0.1:1"], "--drain-timeout '-1.0'"),
            (["--user", "no-such-user-here", "--backend", "http://127.0.0.1:1"], "--user 'no-such-user-here': no such user"),
            (["--max-object-size", "big", "--backend", "http://127.0.0.1:1"], "--max-object-size 'big'"),
            (["--slice-threshold", "huge", "--backend", "http://127.0.0.1:1"], "--slice-threshold 'huge' is not a size"),
            (["--slice-size", "1KiB", "--backend", "http://127.0.0.1:1"], "--slice-size '1KiB' must be a size from 64KiB to 64MiB"),
            (["--slice-size", "1GiB", "--backend", "http://127.0.0.1:1"], "--slice-size '1GiB' must be"),
            (["admin", "frobnicate"], "unknown admin command 'frobnicate'"),
            (["log", "-q", "colour == red"], "unknown field 'colour'"),
        ])
    func badFlag(arguments: [String], message: String) throws {
        let result = try run(arguments)
        #expect(result.status == 64)
        #expect(result.stderr.contains(message), "\(result.stderr)")
        #expect(result.stderr.contains("Usage: lacquer"), "\(result.stderr)")
    }

    @Test("--help documents every flag")
    func help() throws {
        let result = try run(["--help"])
        #expect(result.status == 0)
        for flag in [
            "--listen", "--backend", "--memory", "--storage-dir", "--admin", "--purge-acl", "--demo", "--config",
            "--check-config", "--grace", "--stale-if-error", "--hit-for-miss", "--max-request-body", "--disk-size",
            "--passive-failures", "--passive-cooldown", "--passive-5xx", "--rate-limit", "--rate-burst", "--max-client-connections", "--keepalive-requests",
            "--access-log", "--access-log-format", "--drain-timeout", "--admin-secret", "--max-object-size", "--user",
            "--gzip-on-store", "--no-sendfile", "--threads", "--log-level", "--version", "--slice-threshold", "--slice-size",
        ] {
            #expect(result.stdout.contains(flag), "\(flag) missing from --help")
        }
        // Every option with a default shows it.
        for shown in ["(default: 256MiB)", "(default: 1000)", "(default: 1GiB)", "(default: 30.0)", "(default: -)", "(default: ./lacquer-cache)"] {
            #expect(result.stdout.contains(shown), "\(shown) missing from --help")
        }
        for subcommand in ["stat", "log", "admin"] {
            #expect(result.stdout.contains(subcommand), "\(subcommand) missing from --help")
        }
    }

    @Test("the committed man page covers every flag --help shows (regenerate it with generate-manual)")
    func manPage() throws {
        let help = try run(["--help"]).stdout
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let page = try String(contentsOf: root.appendingPathComponent("packaging/lacquer.1"), encoding: .utf8)
            .replacingOccurrences(of: "Fl ", with: "-")  // mdoc: `Fl -listen` is shown as --listen
        let flags = Set(help.matches(of: /--[a-z0-9][a-z0-9-]+/).map { String($0.output) })
        #expect(flags.count > 30)
        for flag in flags.sorted() {
            #expect(page.contains(flag), "\(flag) is missing from packaging/lacquer.1")
        }
    }

    @Test("--version prints the version")
    func version() throws {
        let result = try run(["--version"])
        #expect(result.status == 0)
        #expect(result.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == LacquerVersion.string)
    }

    /// Starts the binary; returns it with its port, admin port and stdout.
    func startLacquer(_ extra: [String], origin: FixtureOrigin, storage: String) throws -> (Process, port: Int, admin: Int, stdout: Pipe) {
        let process = Process()
        process.executableURL = Self.binary
        let adminPort = try Self.freePort()
        process.arguments = [
            "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:\(adminPort)", "--backend", origin.baseURL, "--threads", "1",
            "--storage-dir", storage,
        ] + extra
        let err = Pipe()
        let out = Pipe()
        process.standardError = err
        process.standardOutput = out
        try process.run()
        let port = try Self.waitForListening(err.fileHandleForReading, timeout: 20)
        return (process, port, adminPort, out)
    }

    /// A port nothing listens on right now (bound, read back, released).
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    @Test("SIGTERM drains: a slow 5 MB download started before it completes, then lacquer exits 0")
    func sigtermDrains() async throws {
        let origin = try await FixtureOrigin.start()
        defer { Task { try? await origin.shutdown() } }
        let storage = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: storage) }
        let (process, port, _, _) = try self.startLacquer(["--access-log", "off"], origin: origin, storage: storage)
        defer { if process.isRunning { process.terminate() } }
        let download = try RawHTTPClient(port: port, timeout: 15)
        try download.send("GET /slowbody/5242880/200 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        let head = try download.readResponseHead()
        #expect(head.status == 200)
        kill(process.processIdentifier, SIGTERM)
        let body = try await runBlocking { try download.readToEOF(max: 6 << 20) }
        #expect(body.count == 5_242_880)
        let deadline = Date().addingTimeInterval(15)
        while process.isRunning && Date() < deadline { try await Task.sleep(for: .milliseconds(20)) }
        #expect(!process.isRunning)
        if !process.isRunning { #expect(process.terminationStatus == 0) }
    }

    @Test("--user drops root once the listeners are bound: it serves, stores to disk, and runs as that user")
    func dropsPrivileges() async throws {
        guard getuid() == 0, getpwnam("nobody") != nil else { return }  // only root can switch users
        let origin = try await FixtureOrigin.start()
        defer { Task { try? await origin.shutdown() } }
        let parent = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: parent) }
        chmod(parent, 0o755)
        let (process, port, admin, _) = try self.startLacquer(
            ["--user", "nobody", "--access-log", "off"], origin: origin, storage: parent + "/cache")
        defer { if process.isRunning { process.terminate() } }
        let nobody = getpwnam("nobody").pointee.pw_uid
        // The event loop threads switch right after the listeners are bound.
        var switched = false
        for _ in 0..<200 where !switched {
            let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(process.processIdentifier)/task")) ?? []
            switched = tasks.contains { task in
                let status = (try? String(contentsOfFile: "/proc/\(process.processIdentifier)/task/\(task)/status", encoding: .utf8)) ?? ""
                let comm = (try? String(contentsOfFile: "/proc/\(process.processIdentifier)/task/\(task)/comm", encoding: .utf8)) ?? ""
                return comm.hasPrefix("NIO-ELT") && status.contains("Uid:\t\(nobody)\t\(nobody)\t\(nobody)\t\(nobody)")
            }
            if !switched { try await Task.sleep(for: .milliseconds(20)) }
        }
        #expect(switched)
        #expect(try httpGet(port: port, "/u?cc=max-age%3D600").status == 200)
        #expect(try await waitForDiskStored(admin: admin, count: 1) == 1)
        #expect(try httpGet(port: port, "/u?cc=max-age%3D600").header("X-Cache-Status") == "HIT")
        kill(process.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(15)
        while process.isRunning && Date() < deadline { try await Task.sleep(for: .milliseconds(20)) }
        #expect(!process.isRunning)
    }

    @Test("lacquer admin, stat and log talk to the admin port; without the secret a ban is refused")
    func clientCommands() async throws {
        let origin = try await FixtureOrigin.start()
        defer { Task { try? await origin.shutdown() } }
        let storage = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: storage) }
        let secret = storage + "/secret"
        try "hunter2\n".write(toFile: secret, atomically: true, encoding: .utf8)
        let (process, port, admin, _) = try self.startLacquer(["--admin-secret", secret], origin: origin, storage: storage + "/cache")
        defer { if process.isRunning { process.terminate() } }
        let target = ["-T", "127.0.0.1:\(admin)"]
        _ = try httpGet(port: port, "/s?cc=max-age%3D60&h=xkey:s-key")
        _ = try httpGet(port: port, "/s?cc=max-age%3D60&h=xkey:s-key")
        // A ban on a request header stays while an older object is stored (the lurker cannot test it).
        let refused = try run(["admin", "ban", "req.http.x-test == 1 && req.url ~ ^/js/"] + target)
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("401"), "\(refused.stderr)")
        let added = try run(["admin", "ban", "req.http.x-test == 1 && req.url ~ ^/js/", "-S", secret] + target)
        #expect(added.status == 0, "\(added.stderr)")
        let bans = try run(["admin", "bans", "-S", secret] + target)
        #expect(bans.stdout.contains("req.url ~ ^/js/"))
        let backends = try run(["admin", "backends", "-S", secret] + target)
        #expect(backends.stdout.contains("healthy"))
        let noKeys = try run(["admin", "purge"] + target)
        #expect(noKeys.status != 0)
        let once = try run(["stat", "--once"] + target)
        #expect(once.status == 0)
        #expect(once.stdout.contains("hit ratio 50.0%"), "\(once.stdout)")
        #expect(once.stdout.contains("cache_hit "))
        let json = try run(["stat", "--json"] + target)
        let document = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        #expect((document["counters"] as? [String: Any])?["cache_hit"] as? Int == 1)
        #expect(document["rates_since_start"] != nil)
        let purged = try run(["admin", "purge", "s-key", "-S", secret] + target)
        #expect(purged.status == 0, "\(purged.stderr)")
        #expect(purged.stdout.contains("Purged 1 object"), "\(purged.stdout)")
        #expect(try httpGet(port: port, "/s?cc=max-age%3D60&h=xkey:s-key").header("X-Cache-Status") == "MISS")
        #expect(try run(["admin", "purge-all", "-S", secret] + target).status == 0)
        #expect(try httpGet(port: port, "/s?cc=max-age%3D60&h=xkey:s-key").header("X-Cache-Status") == "MISS")

        // lacquer log -q: only the matching requests, as they happen.
        let tail = Process()
        tail.executableURL = Self.binary
        tail.arguments = ["log", "-q", "status >= 500", "-S", secret] + target
        let out = Pipe()
        tail.standardOutput = out
        tail.standardError = Pipe()
        try tail.run()
        defer { if tail.isRunning { tail.terminate() } }
        // A reader thread collects what it prints until it exits; requests go on meanwhile.
        let reader = Task {
            try await runBlocking {
                var text = ""
                while true {
                    let data = out.fileHandleForReading.availableData
                    if data.isEmpty { return text }
                    text += String(decoding: data, as: UTF8.self)
                    if text.contains("/status/503") { return text }
                }
            }
        }
        let deadline = Date().addingTimeInterval(10)
        var sent = 0
        while Date() < deadline, sent < 100 {
            _ = try httpGet(port: port, "/ok")
            _ = try httpGet(port: port, "/status/503")
            sent += 1
            try await Task.sleep(for: .milliseconds(100))
            if sent >= 3 { break }  // the tail subscribed well before the third round
        }
        try await Task.sleep(for: .milliseconds(300))
        tail.terminate()  // ends the reader if nothing matched
        let printed = try await reader.value
        #expect(printed.contains("\"GET /status/503 HTTP/1.1\" 503"), "\(printed)")
        #expect(!printed.contains("/ok"))
        kill(process.processIdentifier, SIGTERM)
    }

    @Test("serves MISS then HIT, logs its bound address for port 0, and exits cleanly on SIGTERM")
    func servesAndStops() async throws {
        let origin = try await FixtureOrigin.start()
        defer { Task { try? await origin.shutdown() } }
        let process = Process()
        process.executableURL = Self.binary
        let storage = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: storage) }
        process.arguments = [
            "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--backend", origin.baseURL, "--threads", "1",
            "--storage-dir", storage,
        ]
        let err = Pipe()
        process.standardError = err
        process.standardOutput = Pipe()
        try process.run()
        defer { if process.isRunning { process.terminate() } }
        let port = try Self.waitForListening(err.fileHandleForReading, timeout: 20)
        let first = try httpGet(port: port, "/cli?cc=max-age%3D60")
        let second = try httpGet(port: port, "/cli?cc=max-age%3D60")
        #expect(first.header("X-Cache-Status") == "MISS")
        #expect(second.header("X-Cache-Status") == "HIT")
        #expect(origin.requestCount(path: "/cli") == 1)
        kill(process.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(15)
        while process.isRunning && Date() < deadline { try await Task.sleep(for: .milliseconds(20)) }
        #expect(!process.isRunning)
        if !process.isRunning { #expect(process.terminationStatus == 0) }
    }

    @Test("--demo: the built-in origin answers slowly, the printed curl line shows MISS then HIT, stdout a pipe")
    func demo() async throws {
        let process = Process()
        process.executableURL = Self.binary
        let storage = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: storage) }
        process.arguments = ["--demo", "--listen", "127.0.0.1:0", "--admin", "off", "--threads", "1", "--storage-dir", storage]
        let out = Pipe()
        process.standardOutput = out
        process.standardError = Pipe()
        try process.run()
        defer { if process.isRunning { process.terminate() } }
        // The curl lines arrive although stdout is a pipe, not a terminal.
        var printed = ""
        let deadline = Date().addingTimeInterval(20)
        while !printed.contains("Press Ctrl-C"), Date() < deadline {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            printed += String(decoding: chunk, as: UTF8.self)
        }
        let url = try #require(
            printed.split(separator: "'").first { $0.hasPrefix("http://127.0.0.1:") }.map(String.init), "\(printed)")
        let withoutScheme = url.dropFirst("http://127.0.0.1:".count)
        let port = try #require(Int(withoutScheme.prefix { $0.isNumber }))
        let target = String(withoutScheme.drop { $0.isNumber })
        let started = Date()
        let first = try httpGet(port: port, target)
        #expect(Date().timeIntervalSince(started) >= 0.9)  // the demo origin takes 1 s
        #expect(first.header("X-Cache-Status") == "MISS")
        #expect(first.bodyString == "Hello from the slow demo origin\n")
        let second = try httpGet(port: port, target)
        #expect(second.header("X-Cache-Status") == "HIT")
        kill(process.processIdentifier, SIGTERM)
        let stop = Date().addingTimeInterval(15)
        while process.isRunning && Date() < stop { try await Task.sleep(for: .milliseconds(20)) }
        #expect(!process.isRunning)
    }

    @Test("--check-config: a valid file exits 0; errors print file:line:col, the line, a caret, and exit 1")
    func checkConfig() throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let good = directory + "/good.vcl"
        try "vcl 4.1;\nbackend app { .host = \"127.0.0.1\"; .port = \"8080\"; }\nsub vcl_recv { if (req.url ~ \"^/admin\") { return (pass); } }\n"
            .write(toFile: good, atomically: true, encoding: .utf8)
        let ok = try run(["--check-config", good])
        #expect(ok.status == 0)
        #expect(ok.stdout.contains("OK"))
        let bad = directory + "/bad.vcl"
        try "vcl 4.1;\nsub vcl_recv {\n    set req.http.X = req.nosuch;\n}\n".write(toFile: bad, atomically: true, encoding: .utf8)
        let failed = try run(["--check-config", bad])
        #expect(failed.status == 1)
        #expect(failed.stderr.contains("bad.vcl:3:"), "\(failed.stderr)")
        #expect(failed.stderr.contains("^"))
        let missing = try run(["--check-config", directory + "/none.vcl"])
        #expect(missing.status == 1)
        #expect(missing.stderr.contains("none.vcl: cannot read the file"), "\(missing.stderr)")
        let broken = try run(["--config", bad, "--listen", "127.0.0.1:0", "--admin", "off"])
        #expect(broken.status == 1)
        #expect(broken.stderr.contains("bad.vcl:3:"))
    }

    @Test("--config runs the file's backends and subs; SIGHUP reloads it, a broken edit leaves the old one running")
    func configAndSIGHUP() async throws {
        let origin = try await FixtureOrigin.start()
        defer { Task { try? await origin.shutdown() } }
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/site.vcl"
        func write(_ version: String) throws {
            try """
                vcl 4.1;
                backend origin { .host = "127.0.0.1"; .port = "\(origin.port)"; }
                sub vcl_deliver { set resp.http.X-Config = "\(version)"; }
                """.write(toFile: path, atomically: true, encoding: .utf8)
        }
        try write("one")
        let process = Process()
        process.executableURL = Self.binary
        process.arguments = [
            "--listen", "127.0.0.1:0", "--admin", "off", "--config", path, "--threads", "1", "--storage-dir", directory + "/cache",
        ]
        let err = Pipe()
        process.standardError = err
        process.standardOutput = Pipe()
        try process.run()
        defer { if process.isRunning { process.terminate() } }
        let port = try Self.waitForListening(err.fileHandleForReading, timeout: 20)
        #expect(try httpGet(port: port, "/c").header("X-Config") == "one")
        try write("two")
        kill(process.processIdentifier, SIGHUP)
        var seen = ""
        for _ in 0..<100 {
            seen = try httpGet(port: port, "/c").header("X-Config") ?? ""
            if seen == "two" { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(seen == "two")
        try "vcl 4.1;\nsub vcl_deliver { set resp.http.X-Config = ; }\n".write(toFile: path, atomically: true, encoding: .utf8)
        kill(process.processIdentifier, SIGHUP)
        try await Task.sleep(for: .milliseconds(300))
        #expect(process.isRunning)
        #expect(try httpGet(port: port, "/c").header("X-Config") == "two")
        kill(process.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(15)
        while process.isRunning && Date() < deadline { try await Task.sleep(for: .milliseconds(20)) }
        #expect(!process.isRunning)
    }

    @Test("a port in use is named in the error and the exit status is non-zero")
    func portInUse() async throws {
        try await withLacquer { _, port, origin async throws in
            let storage = try makeTemporaryDirectory()
            defer { try? FileManager.default.removeItem(atPath: storage) }
            let result = try run([
                "--listen", "127.0.0.1:\(port)", "--admin", "off", "--backend", origin.baseURL, "--storage-dir", storage,
            ])
            #expect(result.status != 0)
            #expect(result.stderr.contains("cannot listen on 127.0.0.1:\(port): address already in use"), "\(result.stderr)")
        }
    }

    /// Reads stderr until the "listening on HOST:PORT" line; returns the port.
    static func waitForListening(_ handle: FileHandle, timeout: Double) throws -> Int {
        let deadline = Date().addingTimeInterval(timeout)
        var text = ""
        while Date() < deadline {
            let data = handle.availableData
            if data.isEmpty { break }
            text += String(decoding: data, as: UTF8.self)
            for line in text.split(separator: "\n") where line.contains("listening on") && !line.contains("admin") {
                if let portText = line.split(separator: ":").last, let port = Int(portText.trimmingCharacters(in: .whitespaces)) {
                    return port
                }
            }
        }
        throw CLIError(message: "lacquer never logged its address; stderr: \(text)")
    }

    struct CLIError: Error, CustomStringConvertible {
        var message: String
        var description: String { self.message }
    }
}
