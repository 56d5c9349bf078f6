import Foundation
import Logging
import Testing

@testable import LacquerServer

/// The access log's line formats and its query language, without a server.
@Suite("Access log formats and queries")
struct AccessLogFormatTests {
    static func record() -> AccessRecord {
        // 2026-12-02T20:50:01.250Z
        var record = AccessRecord(time: 1_796_244_601.25, client: "192.0.2.7", method: "GET", target: "/a/b?x=1", proto: "HTTP/1.1")
        record.status = 200
        record.bytes = 1234
        record.cache = "MISS"
        record.timeToFirstByte = 0.012345
        record.duration = 0.5
        record.backend = "app"
        record.xid = 1042
        record.host = "www.example"
        record.referer = "https://ref.example/"
        record.userAgent = "curl/8.0"
        return record
    }

    @Test("the default line is NCSA combined followed by cache status, TTFB, time, backend and xid")
    func defaultLine() {
        let line = AccessLogFormat.combined.line(Self.record())
        #expect(
            line
                == "192.0.2.7 - - [02/Dec/2026:20:50:01 +0000] \"GET /a/b?x=1 HTTP/1.1\" 200 1234 \"https://ref.example/\" \"curl/8.0\" cache=MISS ttfb=0.012345 time=0.500000 backend=app xid=1042\n"
        )
    }

    @Test("every code: escaping, dashes for what is missing, and the writer's clock across records")
    func everyCode() throws {
        let everything = try AccessLogFormat.parse(
            #"%h %l %u %t "%r" %s %b %D %T %H %m %U %q %{Host}i "%{Referer}i" "%{User-agent}i" %{X-Cache-Status}o %{Varnish:time_firstbyte}x %{Varnish:vxid}x %{Varnish:hitmiss}x %{Varnish:handling}x %{Lacquer:backend}x %{Lacquer:time}x"#)
        var odd = Self.record()
        odd.target = "/é\"\u{1}"
        odd.userAgent = nil
        odd.xid = nil
        odd.backend = nil
        odd.bytes = 0
        odd.timeToFirstByte = -1
        odd.duration = 12.3456789
        var refused = AccessRecord(time: 1_796_244_602.9, client: "::1", method: "-", target: "-", proto: "-")
        refused.status = 431
        let oddLine = everything.line(odd)
        #expect(oddLine.contains(#""GET /\xC3\xA9\"\x01 HTTP/1.1" 200 - 12345679 12 HTTP/1.1 GET /\xC3\xA9\"\x01  www.example"#), "\(oddLine)")
        #expect(oddLine.contains(#""https://ref.example/" "-" MISS - - miss miss - 12.345679"#), "\(oddLine)")
        #expect(everything.line(refused).contains(#" "-" 431 "#))
        // The writer keeps one clock: each record still gets its own second.
        var clock = LogClock()
        var bytes: [UInt8] = []
        var later = Self.record()
        later.time += 61
        AccessLogFormat.combined.append(Self.record(), to: &bytes, clock: &clock)
        AccessLogFormat.combined.append(Self.record(), to: &bytes, clock: &clock)
        AccessLogFormat.combined.append(later, to: &bytes, clock: &clock)
        let lines = String(decoding: bytes, as: UTF8.self).split(separator: "\n")
        #expect(lines.count == 3)
        #expect(lines[0] == lines[1])
        #expect(lines[2].contains("[02/Dec/2026:20:51:02 +0000]"), "\(lines[2])")
    }

    @Test("a pipe nobody reads cannot hang the writer or a stop: the batch is dropped and counted")
    func stuckPipe() throws {
        var ends: [Int32] = [0, 0]
        #expect(pipe(&ends) == 0)
        defer { close(ends[0]); close(ends[1]) }
        let counters = Counters()
        let log = try AccessLog(
            destination: .file("/proc/self/fd/\(ends[1])"), format: .combined, counters: counters, logger: .init(label: "test"))
        for _ in 0..<5000 { log.record(Self.record(), shard: 0) }  // about 1 MB, the pipe holds 64 KiB
        let started = Date()
        log.writeBatch()
        #expect(Date().timeIntervalSince(started) < 5)
        #expect(counters[.accessLogDropped] >= 1)
        log.start()
        for _ in 0..<5000 { log.record(Self.record(), shard: 0) }
        let stopping = Date()
        log.stop()
        #expect(Date().timeIntervalSince(stopping) < 5)
    }

    @Test("records from several loops are merged by request time, each kept once")
    func mergeByTime() {
        func records(_ times: [Double]) -> [AccessRecord] {
            times.map { AccessRecord(time: $0, client: "c", method: "GET", target: "/\($0)", proto: "HTTP/1.1") }
        }
        var merged: [AccessRecord] = []
        AccessLog.merge([records([1, 4, 5]), records([]), records([2, 3, 6, 7]), records([0.5])], into: &merged)
        #expect(merged.map(\.time) == [0.5, 1, 2, 3, 4, 5, 6, 7])
    }

    @Test("a request with no fields of its own: dashes where NCSA puts them")
    func dashes() {
        var record = AccessRecord(time: 0, client: "::1", method: "-", target: "-", proto: "-")
        record.status = 400
        let line = AccessLogFormat.combined.line(record)
        #expect(line == "::1 - - [01/Jan/1970:00:00:00 +0000] \"-\" 400 - \"-\" \"-\" cache=- ttfb=- time=0.000000 backend=- xid=-\n")
    }

    @Test("varnishncsa codes: %m %U %q %H %s %D %T and the Varnish extended variables")
    func customFormat() throws {
        let format = try AccessLogFormat.parse(
            #"%m %U%q %H %s %D %T %{Host}i %{X-Cache-Status}o %{Varnish:hitmiss}x %{Varnish:handling}x %{Varnish:time_firstbyte}x %{Varnish:vxid}x 100%%\t."#)
        #expect(format.line(Self.record()) == "GET /a/b?x=1 HTTP/1.1 200 500000 0 www.example MISS miss miss 0.012345 1042 100%\t.\n")
    }

    @Test(
        "a format with an unknown code is refused with the column of the code",
        arguments: [
            ("%h %Z", 4, "'%Z'"), ("%{Cookie}i", 1, "'Cookie'"), ("%{Varnish:nope}x", 1, "Varnish:nope"), ("abc %", 5, "end"),
            ("%{Host", 1, "closing"),
        ])
    func badFormat(text: String, column: Int, fragment: String) {
        #expect {
            _ = try AccessLogFormat.parse(text)
        } throws: { error in
            guard let error = error as? AccessLogFormat.ParseError else { return false }
            return error.column == column && error.message.contains(fragment)
        }
    }

    @Test("a request cannot forge a line: quotes, backslashes and control bytes are escaped")
    func escaping() {
        var record = Self.record()
        record.target = "/x\"y\\z\n"
        record.userAgent = "evil\"\r\n127.0.0.1 - - fake"
        let line = AccessLogFormat.combined.line(record)
        #expect(line.filter { $0 == "\n" }.count == 1)
        #expect(line.contains(#""GET /x\"y\\z\x0A HTTP/1.1""#))
        #expect(line.contains(#""evil\"\x0D\x0A127.0.0.1 - - fake""#))
    }

    @Test("JSON lines carry every field, with null for what is missing")
    func json() throws {
        var record = Self.record()
        record.backend = nil
        record.incomplete = true
        let line = AccessLogFormat.json.line(record)
        #expect(line.hasSuffix("}\n"))
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(object["time"] as? String == "2026-12-02T20:50:01.250Z")
        #expect(object["status"] as? Int == 200)
        #expect(object["bytes"] as? Int == 1234)
        #expect(object["cache"] as? String == "MISS")
        #expect(object["target"] as? String == "/a/b?x=1")
        #expect(object["xid"] as? Int == 1042)
        #expect(object["backend"] is NSNull)
        #expect(object["complete"] as? Bool == false)
        #expect((object["ttfb"] as? Double).map { abs($0 - 0.012345) < 1e-9 } == true)
    }

    @Test("queries: numbers, text, regular expressions, and, or, not, parentheses")
    func queries() throws {
        let record = Self.record()
        let cases: [(String, Bool)] = [
            ("status >= 500", false), ("status < 300", true), ("status == 200", true), ("status != 200", false),
            ("cache = MISS", true), ("cache == miss", true), ("cache = HIT", false), ("url ~ ^/a/", true),
            ("url !~ ^/a/", false), ("backend == app and status == 200", true), ("cache == HIT or status == 200", true),
            ("not cache == HIT", true), ("(cache == HIT or cache == MISS) and ttfb > 0.01", true), ("time >= 1", false),
            ("ua ~ \"curl/\"", true), ("client == '192.0.2.7'", true), ("xid == 1042", true), ("method == POST", false),
        ]
        for (query, expected) in cases {
            let filter = try AccessLogFilter.parse(query)
            #expect(filter.matches(record) == expected, "\(query)")
        }
    }

    @Test(
        "a bad query says what is wrong",
        arguments: [
            ("colour == red", "unknown field 'colour'"), ("status >= many", "compares numbers"), ("status == many", "is a number"), ("url < 3", "compares numbers"),
            ("status", "must be followed by"), ("url ~ \"(\"", "bad regular expression"), ("url ~ (", "needs a value"), ("(status == 1", "missing ')'"),
            ("", "empty"), ("status == 1 extra", "unexpected 'extra'"), ("ua == \"x", "unterminated quote"),
        ])
    func badQuery(query: String, fragment: String) {
        #expect {
            _ = try AccessLogFilter.parse(query)
        } throws: { error in
            (error as? AccessLogFilter.ParseError)?.message.contains(fragment) == true
        }
    }

    @Test("the writer formats queued records in order and feeds matching ones to a tail; a full queue drops and counts")
    func writerBatches() throws {
        let counters = Counters()
        let directory = try FileManager.default.url(
            for: .itemReplacementDirectory, in: .userDomainMask, appropriateFor: URL(fileURLWithPath: "/tmp"), create: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("access.log").path
        let log = try AccessLog(destination: .file(path), format: .combined, counters: counters, logger: .init(label: "test"))
        let tailed = TailCollector()
        let id = log.subscribe(filter: try AccessLogFilter.parse("status >= 500"), json: true) { tailed.append($0) }
        for status in [200, 503, 404, 502] {
            var record = Self.record()
            record.status = status
            log.record(record, shard: 0)
        }
        log.writeBatch()
        let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n")
        #expect(lines.map { $0.split(separator: " ")[8] } == ["200", "503", "404", "502"])
        #expect(tailed.text.split(separator: "\n").count == 2)
        #expect(tailed.text.contains("\"status\":503") && tailed.text.contains("\"status\":502"))
        log.unsubscribe(id)
        for _ in 0..<(AccessLog.maxPendingPerShard + 3) { log.record(Self.record(), shard: 1) }  // one loop: one shard
        #expect(counters[.accessLogDropped] == 3)
        log.stop()
    }
}

/// Collects what a live tail is sent.
final class TailCollector: @unchecked Sendable {
    private let lock = NSLock()
    private var collected = ""

    func append(_ text: String) -> Bool {
        self.lock.withLock { self.collected += text }
        return true
    }

    var text: String { self.lock.withLock { self.collected } }
}
