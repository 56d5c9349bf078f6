import FixtureOrigin
import Foundation
import LacquerServer
import LacquerTesting
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization
import Testing

// An independent conformance suite, modelled on mnot's cache-tests.fyi groups and written from
// the text of RFC 9111 (HTTP Caching), RFC 9110 (HTTP Semantics), RFC 9211 (Cache-Status) and
// RFC 9213 (Targeted Cache-Control) — what a correct *shared* cache MUST / SHOULD do, not what
// Lacquer happens to do. Reuse is judged mainly by the origin's request count (independent of
// Lacquer's own X-Cache-Status), so every assertion is about behaviour on the wire.
//
// Two origins are used: the URL-driven fixture origin, and (for scenarios where the origin must
// answer differently from one request to the next: 304s that change fields, a Vary that changes,
// an origin that goes away) a small scripted origin defined at the end of this file.

// MARK: - Helpers

/// Percent-encodes a query value (everything but unreserved characters).
private func enc(_ value: String) -> String {
    var allowed = CharacterSet(charactersIn: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
    allowed.insert(charactersIn: "-._~")
    return value.addingPercentEncoding(withAllowedCharacters: allowed) ?? value
}

/// `path?name=value&…` with every value percent-encoded.
private func target(_ path: String, _ parameters: [(String, String)]) -> String {
    parameters.isEmpty ? path : path + "?" + parameters.map { "\($0.0)=\(enc($0.1))" }.joined(separator: "&")
}

/// Sends `target` `times` times (sequentially) and returns the responses.
private func fetch(_ port: Int, _ target: String, times: Int, headers: [(String, String)] = []) throws -> [RawHTTPResponse] {
    var responses: [RawHTTPResponse] = []
    for _ in 0..<times {
        responses.append(try httpGet(port: port, target, headers: headers))
    }
    return responses
}

/// Waits (bounded, 1 s) until Lacquer reports `count` stored objects: a 304 sent to the client
/// can leave before the cache fill it rides on has completed.
private func waitForStored(_ lacquer: LacquerServer, _ count: Int) async throws {
    for _ in 0..<200 where lacquer.counters[.objectsStored] < count {
        try await Task.sleep(for: .milliseconds(5))
    }
}

/// An HTTP-date (IMF-fixdate) `offset` seconds from now.
private func imfDate(_ offset: Double) -> String {
    formatDate(offset, "EEE, dd MMM yyyy HH:mm:ss 'GMT'")
}

private func formatDate(_ offset: Double, _ format: String) -> String {
    let formatter = DateFormatter()
    formatter.locale = Locale(identifier: "en_US_POSIX")
    formatter.timeZone = TimeZone(identifier: "GMT")
    formatter.dateFormat = format
    return formatter.string(from: Date(timeIntervalSinceNow: offset))
}

/// Runs `body` with Lacquer in front of a scripted origin (the fixture origin also runs, unused).
private func withScriptedLacquer(
    clock: TestClock? = nil,
    _ script: [String: [Scripted]],
    _ body: (_ lacquer: LacquerServer, _ port: Int, _ origin: ScriptedOrigin) async throws -> Void
) async throws {
    let scripted = try await ScriptedOrigin.start(script)
    let scriptedPort = scripted.port
    var clockFunction: (@Sendable () -> Double)?
    if let clock {
        clockFunction = { @Sendable in clock.now() }
    }
    let configure: (inout ServerConfiguration) -> Void = { configuration in
        configuration.backends = [BackendConfiguration(name: "scripted", host: "127.0.0.1", port: scriptedPort)]
    }
    do {
        try await withLacquer(configure: configure, clock: clockFunction) { lacquer, port, _ async throws in
            try await body(lacquer, port, scripted)
        }
    } catch {
        await scripted.shutdown()
        throw error
    }
    await scripted.shutdown()
}

// MARK: - cc-parse: Cache-Control parsing (RFC 9111 §5.2, §1.2.2, §4.2.1)

@Suite("Conformance: cc-parse (RFC 9111 §5.2)", .serialized, .timeLimit(.minutes(2)))
struct ConformanceCacheControlParseTests {
    @Test("§5.2: directive names are case-insensitive (MAX-AGE)")
    func caseInsensitiveName() async throws {
        try await withLacquer { _, port, origin async throws in
            _ = try fetch(port, target("/cc-case", [("cc", "MAX-AGE=3600")]), times: 2)
            #expect(origin.requestCount(path: "/cc-case") == 1)
        }
    }

    @Test("§5.2: a quoted max-age value is accepted (recipients ought to accept both forms)")
    func quotedMaxAge() async throws {
        try await withLacquer { _, port, origin async throws in
            _ = try fetch(port, target("/cc-quoted", [("cc", "max-age=\"3600\"")]), times: 2)
            #expect(origin.requestCount(path: "/cc-quoted") == 1)
        }
    }

    @Test("§5.2 / RFC 9110 §5.6.1: empty list elements and optional whitespace are tolerated")
    func emptyElementsAndWhitespace() async throws {
        try await withLacquer { _, port, origin async throws in
            _ = try fetch(port, target("/cc-ws", [("cc", " , ,  max-age=3600 ,, ")]), times: 2)
            #expect(origin.requestCount(path: "/cc-ws") == 1)
        }
    }

    @Test("§5.2 / RFC 9110 §5.3: Cache-Control split over two field lines is one list (no-store in the second line counts)")
    func twoFieldLines() async throws {
        try await withLacquer { _, port, origin async throws in
            _ = try fetch(port, target("/cc-lines", [("cc", "max-age=3600"), ("h", "Cache-Control: no-store")]), times: 2)
            #expect(origin.requestCount(path: "/cc-lines") == 2)
        }
    }

    @Test("§5.2.2.5: NO-STORE in upper case still forbids storing")
    func upperCaseNoStore() async throws {
        try await withLacquer { _, port, origin async throws in
            _ = try fetch(port, target("/cc-ns-case", [("cc", "max-age=3600, NO-STORE")]), times: 2)
            #expect(origin.requestCount(path: "/cc-ns-case") == 2)
        }
    }

    @Test("§5.2.3: unknown extension directives are ignored, even with a quoted value containing a comma and no-store")
    func unknownExtensionIgnored() async throws {
        try await withLacquer { _, port, origin async throws in
            let url = target("/cc-ext", [("cc", "foo, max-age=3600, bar=\"baz, no-store\", qux=1")])
            _ = try fetch(port, url, times: 2)
            #expect(origin.requestCount(path: "/cc-ext") == 1)
        }
    }

    @Test("§4.2.1: duplicate max-age whose first occurrence is 0 is not reused (use the first or treat as stale)")
    func duplicateMaxAgeFirstZero() async throws {
        try await withLacquer { _, port, origin async throws in
            _ = try fetch(port, target("/cc-dup", [("cc", "max-age=0, max-age=3600")]), times: 2)
            #expect(origin.requestCount(path: "/cc-dup") == 2)
        }
    }

    @Test("§4.2.1 / §1.2.2: max-age with junk (max-age=3600abc) is invalid: not reused as fresh")
    func maxAgeWithJunk() async throws {
        try await withLacquer { _, port, origin async throws in
            _ = try fetch(port, target("/cc-junk", [("cc", "max-age=3600abc")]), times: 2)
            #expect(origin.requestCount(path: "/cc-junk") == 2)
        }
    }

    @Test("§1.2.2: a negative max-age is invalid: not reused as fresh")
    func negativeMaxAge() async throws {
        try await withLacquer { _, port, origin async throws in
            _ = try fetch(port, target("/cc-neg", [("cc", "max-age=-1")]), times: 2)
            #expect(origin.requestCount(path: "/cc-neg") == 2)
        }
    }

    @Test("§1.2.2: a delta-seconds larger than the cache can represent MUST be taken as 2147483648 (fresh)")
    func hugeMaxAge() async throws {
        try await withLacquer { _, port, origin async throws in
            _ = try fetch(port, target("/cc-huge", [("cc", "max-age=99999999999999999999999")]), times: 2)
            #expect(origin.requestCount(path: "/cc-huge") == 1)
        }
    }

    @Test("§5.2.2.4: no-cache=\"Field\" names a field: the field is never sent from cache without revalidation")
    func qualifiedNoCache() async throws {
        try await withLacquer { _, port, origin async throws in
            let url = target("/cc-ncf", [("cc", "max-age=3600, no-cache=\"X-Secret\""), ("h", "X-Secret: s3")])
            _ = try httpGet(port: port, url)
            let second = try httpGet(port: port, url)
            if origin.requestCount(path: "/cc-ncf") == 1 {
                #expect(second.header("X-Secret") == nil)
            }
        }
    }
}

// MARK: - freshness (RFC 9111 §4.2, §4.2.1, §4.2.2, §4.2.3)

@Suite("Conformance: freshness (RFC 9111 §4.2)", .serialized, .timeLimit(.minutes(2)))
struct ConformanceFreshnessTests {
    @Test("§4.2: a fresh response (max-age) is reused; once stale it is not")
    func maxAgeFreshThenStale() async throws {
        let clock = TestClock()
        try await withLacquer(clock: clock.now) { _, port, origin async throws in
            let url = target("/f-ma", [("cc", "max-age=30"), ("nodate", "1")])
            _ = try fetch(port, url, times: 2)
            #expect(origin.requestCount(path: "/f-ma") == 1)
            clock.advance(31)
            _ = try httpGet(port: port, url)
            #expect(origin.requestCount(path: "/f-ma") == 2)
        }
    }

    @Test("§4.2.1 / §5.3: Expires in the future makes a response fresh")
    func expiresFuture() async throws {
        try await withLacquer { _, port, origin async throws in
            _ = try fetch(port, target("/f-exp", [("expires", "3600")]), times: 2)
            #expect(origin.requestCount(path: "/f-exp") == 1)
        }
    }

    @Test("§4.2.1 / §5.3: Expires in the past means stale")
    func expiresPast() async throws {
        try await withLacquer { _, port, origin async throws in
            _ = try fetch(port, target("/f-exp-past", [("expires", "-3600")]), times: 2)
            #expect(origin.requestCount(path: "/f-exp-past") == 2)
        }
    }

    @Test("§4.2.1: max-age takes precedence over an Expires in the past")
    func maxAgeBeatsExpires() async throws {
        try await withLacquer { _, port, origin async throws in
            _ = try fetch(port, target("/f-ma-exp", [("cc", "max-age=3600"), ("expires", "-3600")]), times: 2)
            #expect(origin.requestCount(path: "/f-ma-exp") == 1)
        }
    }

    @Test("§4.2.1: max-age=0 takes precedence over an Expires in the future")
    func maxAgeZeroBeatsExpires() async throws {
        try await withLacquer { _, port, origin async throws in
            _ = try fetch(port, target("/f-ma0-exp", [("cc", "max-age=0"), ("expires", "3600")]), times: 2)
            #expect(origin.requestCount(path: "/f-ma0-exp") == 2)
        }
    }

    @Test("§5.2.2.10: s-maxage overrides max-age=0 in a shared cache")
    func sMaxAgeBeatsMaxAge() async throws {
        try await withLacquer { _, port, origin async throws in
            _ = try fetch(port, target("/f-sma", [("cc", "max-age=0, s-maxage=3600")]), times: 2)
            #expect(origin.requestCount(path: "/f-sma") == 1)
        }
    }

    @Test("§5.2.2.10: s-maxage=0 overrides max-age=3600 in a shared cache")
    func sMaxAgeZeroBeatsMaxAge() async throws {
        try await withLacquer { _, port, origin async throws in
            _ = try fetch(port, target("/f-sma0", [("cc", "max-age=3600, s-maxage=0")]), times: 2)
            #expect(origin.requestCount(path: "/f-sma0") == 2)
        }
    }

    @Test("§5.2.2.10: s-maxage overrides Expires too")
    func sMaxAgeBeatsExpires() async throws {
        try await withLacquer { _, port, origin async throws in
            _ = try fetch(port, target("/f-sma-exp", [("cc", "s-maxage=3600"), ("expires", "-60")]), times: 2)
            #expect(origin.requestCount(path: "/f-sma-exp") == 1)
        }
    }

    @Test("§4.2.3: an upstream Age larger than max-age makes the response stale on arrival")
    func ageBeyondMaxAge() async throws {
        try await withLacquer { _, port, origin async throws in
            _ = try fetch(port, target("/f-age-old", [("cc", "max-age=3600"), ("age", "7200")]), times: 2)
            #expect(origin.requestCount(path: "/f-age-old") == 2)
        }
    }

    @Test("§4.2.3: an upstream Age below max-age keeps it fresh, and counts in the Age sent")
    func ageWithinMaxAge() async throws {
        try await withLacquer { _, port, origin async throws in
            let responses = try fetch(port, target("/f-age", [("cc", "max-age=3600"), ("age", "1800")]), times: 2)
            #expect(origin.requestCount(path: "/f-age") == 1)
            #expect((Int(responses[1].header("Age") ?? "") ?? 0) >= 1800)
        }
    }

    @Test("§4.2.3: apparent age from a Date in the past counts (Date 1 h ago, max-age 30 min: stale)")
    func dateInPast() async throws {
        try await withLacquer { _, port, origin async throws in
            _ = try fetch(port, target("/f-date-past", [("cc", "max-age=1800"), ("date", "-3600")]), times: 2)
            #expect(origin.requestCount(path: "/f-date-past") == 2)
        }
    }

    @Test("§4.2.3: a Date in the future gives apparent age 0, not a negative age")
    func dateInFuture() async throws {
        try await withLacquer { _, port, origin async throws in
            let responses = try fetch(port, target("/f-date-fut", [("cc", "max-age=1800"), ("date", "3600")]), times: 2)
            #expect(origin.requestCount(path: "/f-date-fut") == 1)
            #expect((Int(responses[1].header("Age") ?? "-1") ?? -1) >= 0)
        }
    }

    @Test("§4.2.1: the Expires lifetime is Expires minus Date, not Expires minus the cache's clock")
    func expiresRelativeToDate() async throws {
        try await withLacquer { _, port, origin async throws in
            // Date is 2 h ahead, Expires 1 h ahead: the origin says it expired an hour before it was sent.
            _ = try fetch(port, target("/f-exp-date", [("date", "7200"), ("expires", "3600")]), times: 2)
            #expect(origin.requestCount(path: "/f-exp-date") == 2)
        }
    }

    @Test("§4.2.2: heuristic freshness may be used for a 200 with Last-Modified and no explicit lifetime")
    func heuristic200() async throws {
        try await withLacquer { _, port, origin async throws in
            _ = try fetch(port, target("/f-heur", [("lm", "-86400")]), times: 2)
            #expect(origin.requestCount(path: "/f-heur") == 1)
        }
    }

    @Test("§4.2.2: a cache MUST NOT use heuristics when an explicit expiration time is present (Expires in the past)")
    func noHeuristicWithExplicitExpires() async throws {
        try await withLacquer { _, port, origin async throws in
            _ = try fetch(port, target("/f-heur-exp", [("lm", "-86400"), ("expires", "-10")]), times: 2)
            #expect(origin.requestCount(path: "/f-heur-exp") == 2)
        }
    }

    @Test("§4.2.1 / §3: max-age=0 without validators: not reused")
    func maxAgeZeroNoValidator() async throws {
        try await withLacquer { _, port, origin async throws in
            _ = try fetch(port, target("/f-ma0", [("cc", "max-age=0")]), times: 2)
            #expect(origin.requestCount(path: "/f-ma0") == 2)
        }
    }
}

// MARK: - expires (RFC 9111 §5.3, RFC 9110 §5.6.7)

@Suite("Conformance: expires (RFC 9111 §5.3)", .serialized, .timeLimit(.minutes(2)))
struct ConformanceExpiresTests {
    @Test("RFC 9110 §5.6.7: Expires in the obsolete RFC 850 format MUST be accepted")
    func rfc850Expires() async throws {
        try await withLacquer { _, port, origin async throws in
            let value = formatDate(3600, "EEEE, dd-MMM-yy HH:mm:ss 'GMT'")
            _ = try fetch(port, target("/e-850", [("expires", value)]), times: 2)
            #expect(origin.requestCount(path: "/e-850") == 1)
        }
    }

    @Test("RFC 9110 §5.6.7: Expires in the obsolete asctime format MUST be accepted")
    func asctimeExpires() async throws {
        try await withLacquer { _, port, origin async throws in
            var value = formatDate(3600, "EEE MMM dd HH:mm:ss yyyy")
            // asctime pads the day with a space, not a zero.
            let parts = value.split(separator: " ", omittingEmptySubsequences: false)
            if parts.count == 5, parts[2].hasPrefix("0") {
                value = "\(parts[0]) \(parts[1])  \(parts[2].dropFirst()) \(parts[3]) \(parts[4])"
            }
            _ = try fetch(port, target("/e-asc", [("expires", value)]), times: 2)
            #expect(origin.requestCount(path: "/e-asc") == 1)
        }
    }

    @Test("§5.3: an invalid Expires (\"0\") means already expired")
    func expiresZero() async throws {
        try await withLacquer { _, port, origin async throws in
            _ = try fetch(port, target("/e-zero", [("expires", "0x")]), times: 2)
            _ = try fetch(port, target("/e-zero2", [("h", "Expires: 0")]), times: 2)
            #expect(origin.requestCount(path: "/e-zero") == 2)
            #expect(origin.requestCount(path: "/e-zero2") == 2)
        }
    }

    @Test("§5.3: an unparseable Expires date is treated as in the past")
    func expiresGarbage() async throws {
        try await withLacquer { _, port, origin async throws in
            _ = try fetch(port, target("/e-garbage", [("expires", "next tuesday")]), times: 2)
            #expect(origin.requestCount(path: "/e-garbage") == 2)
        }
    }

    @Test("§5.3: Expires is ignored when max-age is present, even if Expires is invalid")
    func invalidExpiresWithMaxAge() async throws {
        try await withLacquer { _, port, origin async throws in
            _ = try fetch(port, target("/e-inv-ma", [("expires", "garbage"), ("cc", "max-age=3600")]), times: 2)
            #expect(origin.requestCount(path: "/e-inv-ma") == 1)
        }
    }
}

// MARK: - age-parse and the Age field (RFC 9111 §5.1, §4)

@Suite("Conformance: age (RFC 9111 §5.1)", .serialized, .timeLimit(.minutes(2)))
struct ConformanceAgeTests {
    @Test("§4: a response served from cache carries exactly one Age, the current age, replacing any upstream Age")
    func ageOnHit() async throws {
        let clock = TestClock()
        try await withLacquer(clock: clock.now) { _, port, origin async throws in
            let url = target("/a-hit", [("cc", "max-age=3600"), ("age", "5"), ("nodate", "1")])
            _ = try httpGet(port: port, url)
            clock.advance(100)
            let hit = try httpGet(port: port, url)
            #expect(origin.requestCount(path: "/a-hit") == 1)
            #expect(hit.headers("Age").count == 1)
            let age = Int(hit.header("Age") ?? "") ?? -1
            #expect(age >= 105 && age < 200)
        }
    }

    @Test("§5.1: a non-numeric Age is ignored rather than breaking reuse")
    func nonNumericAge() async throws {
        try await withLacquer { _, port, origin async throws in
            _ = try fetch(port, target("/a-nonnum", [("cc", "max-age=3600"), ("age", "abc")]), times: 2)
            #expect(origin.requestCount(path: "/a-nonnum") == 1)
        }
    }

    @Test("§1.2.2: an Age too large to represent is taken as 2147483648: stale")
    func hugeAge() async throws {
        try await withLacquer { _, port, origin async throws in
            _ = try fetch(port, target("/a-huge", [("cc", "max-age=3600"), ("age", "99999999999999999999")]), times: 2)
            #expect(origin.requestCount(path: "/a-huge") == 2)
        }
    }

    @Test("§5.1: the Age sent is a non-negative integer (delta-seconds)")
    func ageIsDeltaSeconds() async throws {
        try await withLacquer { _, port, _ async throws in
            let responses = try fetch(port, target("/a-int", [("cc", "max-age=3600")]), times: 2)
            for response in responses {
                let value = response.header("Age") ?? "0"
                #expect(!value.isEmpty && value.allSatisfy(\.isNumber))
            }
        }
    }
}

// MARK: - stale (RFC 9111 §4.2.4, §5.2.2.2, §5.2.2.8, §5.2.1.2)

@Suite("Conformance: stale (RFC 9111 §4.2.4)", .serialized, .timeLimit(.minutes(2)))
struct ConformanceStaleTests {
    @Test("§4.2.4: a cache MUST NOT send a stale response unless permitted: the origin is asked")
    func staleNotServedByDefault() async throws {
        let clock = TestClock()
        try await withLacquer(clock: clock.now) { _, port, origin async throws in
            let url = target("/s-def", [("cc", "max-age=10"), ("nodate", "1")])
            _ = try httpGet(port: port, url)
            clock.advance(12)  // within Lacquer's default grace: still not a permission to serve stale
            let second = try httpGet(port: port, url)
            #expect(origin.requestCount(path: "/s-def") == 2)
            #expect(second.header("X-Origin-Count") == "2")
        }
    }

    @Test("§5.2.1.2: request max-stale permits a stale response within the limit")
    func maxStalePermits() async throws {
        let clock = TestClock()
        try await withLacquer(clock: clock.now) { _, port, origin async throws in
            let url = target("/s-ms", [("cc", "max-age=10"), ("nodate", "1")])
            _ = try httpGet(port: port, url)
            clock.advance(20)
            _ = try httpGet(port: port, url, headers: [("Cache-Control", "max-stale=60")])
            #expect(origin.requestCount(path: "/s-ms") == 1)
            _ = try httpGet(port: port, url, headers: [("Cache-Control", "max-stale=5")])
            #expect(origin.requestCount(path: "/s-ms") == 2)
        }
    }

    @Test(
        "§5.2.2.2 / §5.2.2.8 / §5.2.2.10 / §5.2.2.4: must-revalidate, proxy-revalidate, s-maxage and no-cache forbid serving stale even with max-stale",
        arguments: ["max-age=10, must-revalidate", "max-age=10, proxy-revalidate", "s-maxage=10", "max-age=10, no-cache"])
    func staleForbidden(cc: String) async throws {
        let clock = TestClock()
        try await withLacquer(clock: clock.now) { _, port, origin async throws in
            let url = target("/s-forbid", [("cc", cc), ("nodate", "1"), ("etag", "sf")])
            _ = try httpGet(port: port, url)
            clock.advance(20)
            _ = try httpGet(port: port, url, headers: [("Cache-Control", "max-stale")])
            #expect(origin.requestCount(path: "/s-forbid") == 2)
        }
    }

    @Test("§5.2.2.2: with must-revalidate and the origin unreachable, the cache MUST answer an error, not the stale copy")
    func mustRevalidateOriginDown() async throws {
        let clock = TestClock()
        try await withScriptedLacquer(clock: clock, [
            "/s-mr": [
                Scripted(headers: ["Cache-Control: max-age=10, must-revalidate", "ETag: \"mr\""], body: "stale body"),
                Scripted(drop: true),
            ]
        ]) { _, port, origin async throws in
            _ = try httpGet(port: port, "/s-mr")
            clock.advance(20)
            let response = try httpGet(port: port, "/s-mr", headers: [("Cache-Control", "max-stale")])
            #expect(response.status >= 500)
            #expect(response.bodyString != "stale body")
        }
    }

    @Test("§4.3.3: a 5xx to a revalidation of a must-revalidate response is forwarded, not the stale copy")
    func mustRevalidate5xx() async throws {
        let clock = TestClock()
        try await withScriptedLacquer(clock: clock, [
            "/s-mr5": [
                Scripted(headers: ["Cache-Control: max-age=10, must-revalidate", "ETag: \"mr5\""], body: "stale body"),
                Scripted(status: 503, body: "down"),
            ]
        ]) { _, port, origin async throws in
            _ = try httpGet(port: port, "/s-mr5")
            clock.advance(20)
            let response = try httpGet(port: port, "/s-mr5")
            #expect(response.status == 503)
            #expect(response.bodyString != "stale body")
        }
    }
}

// MARK: - vary (RFC 9111 §4.1)

@Suite("Conformance: vary (RFC 9111 §4.1)", .serialized, .timeLimit(.minutes(2)))
struct ConformanceVaryTests {
    @Test("§4.1: a stored response is reused only when the nominated request field matches")
    func varyMatch() async throws {
        try await withLacquer { _, port, origin async throws in
            let url = target("/v-1", [("cc", "max-age=3600"), ("vary", "X-Foo")])
            _ = try httpGet(port: port, url, headers: [("X-Foo", "1")])
            _ = try httpGet(port: port, url, headers: [("X-Foo", "1")])
            #expect(origin.requestCount(path: "/v-1") == 1)
            _ = try httpGet(port: port, url, headers: [("X-Foo", "2")])
            #expect(origin.requestCount(path: "/v-1") == 2)
        }
    }

    @Test("§4.1: a field absent from the original request does not match a request that has it (and vice versa)")
    func varyAbsentVersusPresent() async throws {
        try await withLacquer { _, port, origin async throws in
            let url = target("/v-abs", [("cc", "max-age=3600"), ("vary", "X-Foo")])
            _ = try httpGet(port: port, url)
            _ = try httpGet(port: port, url, headers: [("X-Foo", "1")])
            #expect(origin.requestCount(path: "/v-abs") == 2)
            _ = try httpGet(port: port, url)
            _ = try httpGet(port: port, url, headers: [("X-Foo", "1")])
            #expect(origin.requestCount(path: "/v-abs") == 2)
        }
    }

    @Test("§4.1: with Vary naming two fields, both must match")
    func varyTwoFields() async throws {
        try await withLacquer { _, port, origin async throws in
            let url = target("/v-two", [("cc", "max-age=3600"), ("vary", "X-A, X-B")])
            _ = try httpGet(port: port, url, headers: [("X-A", "1"), ("X-B", "1")])
            _ = try httpGet(port: port, url, headers: [("X-A", "1"), ("X-B", "2")])
            #expect(origin.requestCount(path: "/v-two") == 2)
            _ = try httpGet(port: port, url, headers: [("X-A", "1"), ("X-B", "1")])
            #expect(origin.requestCount(path: "/v-two") == 2)
        }
    }

    @Test("§4.1: Vary spread over two field lines is one list")
    func varyTwoLines() async throws {
        try await withLacquer { _, port, origin async throws in
            let url = target("/v-lines", [("cc", "max-age=3600"), ("vary", "X-A"), ("h", "Vary: X-B")])
            _ = try httpGet(port: port, url, headers: [("X-A", "1"), ("X-B", "1")])
            _ = try httpGet(port: port, url, headers: [("X-A", "1"), ("X-B", "2")])
            #expect(origin.requestCount(path: "/v-lines") == 2)
        }
    }

    @Test("§4.1: field names in Vary match request fields case-insensitively")
    func varyNameCase() async throws {
        try await withLacquer { _, port, origin async throws in
            let url = target("/v-case", [("cc", "max-age=3600"), ("vary", "x-foo")])
            _ = try httpGet(port: port, url, headers: [("X-FOO", "1")])
            _ = try httpGet(port: port, url, headers: [("x-Foo", "1")])
            #expect(origin.requestCount(path: "/v-case") == 1)
        }
    }

    @Test("§4.1: a value that differs only in whitespace after a comma may be normalised and matched")
    func varyWhitespaceNormalisation() async throws {
        try await withLacquer { _, port, origin async throws in
            let url = target("/v-ws", [("cc", "max-age=3600"), ("vary", "X-Foo")])
            _ = try httpGet(port: port, url, headers: [("X-Foo", "a,b")])
            _ = try httpGet(port: port, url, headers: [("X-Foo", "a, b")])
            #expect(origin.requestCount(path: "/v-ws") == 1)
        }
    }

    @Test("§4.1: Vary: * always fails to match: never reused")
    func varyStar() async throws {
        try await withLacquer { _, port, origin async throws in
            _ = try fetch(port, target("/v-star", [("cc", "max-age=3600"), ("vary", "*")]), times: 2)
            #expect(origin.requestCount(path: "/v-star") == 2)
        }
    }

    @Test("§4.1: when the origin changes Vary, a request matching only the old variant's fields is not answered by the new one")
    func varyChange() async throws {
        try await withScriptedLacquer([
            "/v-chg": [
                Scripted(headers: ["Cache-Control: max-age=3600", "Vary: X-A"], body: "varies on A"),
                Scripted(headers: ["Cache-Control: max-age=3600", "Vary: X-B"], body: "varies on B"),
                Scripted(headers: ["Cache-Control: max-age=3600", "Vary: X-B"], body: "third"),
            ]
        ]) { _, port, origin async throws in
            _ = try httpGet(port: port, "/v-chg", headers: [("X-A", "1"), ("X-B", "1")])
            let second = try httpGet(port: port, "/v-chg", headers: [("X-A", "2"), ("X-B", "1")])
            #expect(second.bodyString == "varies on B")
            let third = try httpGet(port: port, "/v-chg", headers: [("X-A", "3"), ("X-B", "1")])
            // Stored B-variant matches (X-B: 1): reuse allowed; the A-variant must not be chosen.
            #expect(third.bodyString != "varies on A")
            let fourth = try httpGet(port: port, "/v-chg", headers: [("X-A", "1"), ("X-B", "9")])
            // Matches the old A-variant only; the most recent matching response wins, never B's for X-B: 9.
            #expect(fourth.bodyString != "varies on B")
        }
    }
}

// MARK: - conditional (RFC 9111 §4.3, RFC 9110 §13)

@Suite("Conformance: conditional (RFC 9111 §4.3, RFC 9110 §13)", .serialized, .timeLimit(.minutes(2)))
struct ConformanceConditionalTests {
    @Test("§4.3.1: a stale response with an ETag is validated with If-None-Match; a 304 serves the stored body")
    func etagValidation() async throws {
        let clock = TestClock()
        try await withLacquer(clock: clock.now) { _, port, origin async throws in
            let url = target("/c-etag", [("cc", "max-age=10"), ("etag", "e1"), ("nodate", "1"), ("body", "stored body")])
            _ = try httpGet(port: port, url)
            clock.advance(20)
            let second = try httpGet(port: port, url)
            #expect(origin.requests(path: "/c-etag").last?.header("If-None-Match") == "\"e1\"")
            #expect(second.status == 200)
            #expect(second.bodyString == "stored body")
        }
    }

    @Test("§4.3.1 / RFC 9110 §13.1.3: a stale response with only Last-Modified is validated with If-Modified-Since equal to it")
    func lastModifiedValidation() async throws {
        let clock = TestClock()
        try await withLacquer(clock: clock.now) { _, port, origin async throws in
            let url = target("/c-lm", [("cc", "max-age=10"), ("lm", "-3600"), ("nodate", "1")])
            let first = try httpGet(port: port, url)
            clock.advance(20)
            let second = try httpGet(port: port, url)
            #expect(origin.requests(path: "/c-lm").last?.header("If-Modified-Since") == first.header("Last-Modified"))
            #expect(second.status == 200)
            #expect(second.body == first.body)
        }
    }

    @Test("§4.3.1 / RFC 9110 §8.8.1: with both validators stored, both are sent")
    func bothValidatorsSent() async throws {
        let clock = TestClock()
        try await withLacquer(clock: clock.now) { _, port, origin async throws in
            let url = target("/c-both", [("cc", "max-age=10"), ("lm", "-3600"), ("etag", "b"), ("nodate", "1")])
            _ = try httpGet(port: port, url)
            clock.advance(20)
            _ = try httpGet(port: port, url)
            let sent = origin.requests(path: "/c-both").last
            #expect(sent?.header("If-None-Match") == "\"b\"")
            #expect(sent?.header("If-Modified-Since") != nil)
        }
    }

    @Test("§4.3.1: a weak ETag may be used in If-None-Match")
    func weakETagValidation() async throws {
        let clock = TestClock()
        try await withLacquer(clock: clock.now) { _, port, origin async throws in
            let url = target("/c-weak", [("cc", "max-age=10"), ("etag", "W/\"w1\""), ("nodate", "1")])
            _ = try httpGet(port: port, url)
            clock.advance(20)
            let second = try httpGet(port: port, url)
            #expect(origin.requests(path: "/c-weak").last?.header("If-None-Match") == "W/\"w1\"")
            #expect(second.status == 200)
        }
    }

    @Test("§4.3.4: a 304 freshens the stored response: the next request is served without the origin")
    func notModifiedFreshens() async throws {
        let clock = TestClock()
        try await withLacquer(clock: clock.now) { _, port, origin async throws in
            let url = target("/c-fresh", [("cc", "max-age=10"), ("etag", "f"), ("nodate", "1")])
            _ = try httpGet(port: port, url)
            clock.advance(20)
            _ = try httpGet(port: port, url)
            _ = try httpGet(port: port, url)
            #expect(origin.requestCount(path: "/c-fresh") == 2)
        }
    }

    @Test("§3.2 / §4.3.4: header fields in a 304 replace the stored ones (served now and on later hits)")
    func notModifiedUpdatesFields() async throws {
        let clock = TestClock()
        try await withScriptedLacquer(clock: clock, [
            "/c-upd": [
                Scripted(headers: ["Cache-Control: max-age=10", "ETag: \"u\"", "X-Version: 1"], body: "body"),
                Scripted(status: 304, headers: ["Cache-Control: max-age=3600", "ETag: \"u\"", "X-Version: 2"]),
            ]
        ]) { _, port, origin async throws in
            _ = try httpGet(port: port, "/c-upd")
            clock.advance(20)
            let revalidated = try httpGet(port: port, "/c-upd")
            #expect(revalidated.header("X-Version") == "2")
            #expect(revalidated.bodyString == "body")
            let hit = try httpGet(port: port, "/c-upd")
            #expect(hit.header("X-Version") == "2")
            #expect(origin.count("/c-upd") == 2)
        }
    }

    @Test("§4.2.3 / §4.3.4: after a successful revalidation the Age restarts (the response was just validated)")
    func ageAfterRevalidation() async throws {
        let clock = TestClock()
        try await withLacquer(clock: clock.now) { _, port, _ async throws in
            let url = target("/c-age", [("cc", "max-age=10"), ("etag", "ag"), ("nodate", "1")])
            _ = try httpGet(port: port, url)
            clock.advance(1000)
            let revalidated = try httpGet(port: port, url)
            #expect((Int(revalidated.header("Age") ?? "9999") ?? 9999) < 10)
        }
    }

    @Test("§3.2: a 304's Content-Length (e.g. 0) never replaces the stored one; the stored body is served whole")
    func notModifiedKeepsContentLength() async throws {
        let clock = TestClock()
        try await withScriptedLacquer(clock: clock, [
            "/c-cl": [
                Scripted(headers: ["Cache-Control: max-age=10", "ETag: \"cl\""], body: "twelve bytes"),
                Scripted(status: 304, headers: ["Cache-Control: max-age=3600", "ETag: \"cl\"", "Content-Length: 0"]),
            ]
        ]) { _, port, _ async throws in
            _ = try httpGet(port: port, "/c-cl")
            clock.advance(20)
            let response = try httpGet(port: port, "/c-cl")
            #expect(response.bodyString == "twelve bytes")
            #expect(response.header("Content-Length") == "12")
        }
    }

    @Test("§4.3.4: a 304 whose strong validator matches no stored response MUST NOT update the stored response")
    func notModifiedWithOtherETag() async throws {
        let clock = TestClock()
        try await withScriptedLacquer(clock: clock, [
            "/c-mismatch": [
                Scripted(headers: ["Cache-Control: max-age=10", "ETag: \"a\"", "X-Version: a"], body: "body a"),
                Scripted(status: 304, headers: ["Cache-Control: max-age=3600", "ETag: \"b\"", "X-Version: b"]),
                Scripted(headers: ["Cache-Control: max-age=3600", "ETag: \"b\"", "X-Version: b"], body: "body b"),
            ]
        ]) { _, port, _ async throws in
            _ = try httpGet(port: port, "/c-mismatch")
            clock.advance(20)
            let second = try httpGet(port: port, "/c-mismatch")
            // The stored "a" body must never be presented as representation "b".
            #expect(!(second.bodyString == "body a" && second.header("ETag") == "\"b\""))
            let third = try httpGet(port: port, "/c-mismatch")
            #expect(!(third.bodyString == "body a" && third.header("ETag") == "\"b\""))
        }
    }

    @Test("§4.3.3: a full 200 to the validation request replaces the stored response")
    func changedReplaces() async throws {
        let clock = TestClock()
        try await withScriptedLacquer(clock: clock, [
            "/c-200": [
                Scripted(headers: ["Cache-Control: max-age=10", "ETag: \"1\""], body: "old"),
                Scripted(headers: ["Cache-Control: max-age=3600", "ETag: \"2\""], body: "new"),
            ]
        ]) { _, port, origin async throws in
            _ = try httpGet(port: port, "/c-200")
            clock.advance(20)
            #expect(try httpGet(port: port, "/c-200").bodyString == "new")
            #expect(try httpGet(port: port, "/c-200").bodyString == "new")
            #expect(origin.count("/c-200") == 2)
        }
    }

    @Test("§4.3.2 / RFC 9110 §13.1.2: a client's matching If-None-Match gets 304 from a fresh stored response")
    func clientIfNoneMatch() async throws {
        try await withLacquer { _, port, origin async throws in
            let url = target("/c-inm", [("cc", "max-age=3600"), ("etag", "x")])
            _ = try httpGet(port: port, url)
            let response = try httpGet(port: port, url, headers: [("If-None-Match", "\"x\"")])
            #expect(response.status == 304)
            #expect(response.body.isEmpty)
            #expect(origin.requestCount(path: "/c-inm") == 1)
        }
    }

    @Test("RFC 9110 §13.1.2: If-None-Match uses weak comparison (W/\"x\" matches a stored \"x\")")
    func clientIfNoneMatchWeak() async throws {
        try await withLacquer { _, port, _ async throws in
            let url = target("/c-inm-w", [("cc", "max-age=3600"), ("etag", "x")])
            _ = try httpGet(port: port, url)
            #expect(try httpGet(port: port, url, headers: [("If-None-Match", "W/\"x\"")]).status == 304)
        }
    }

    @Test("RFC 9110 §13.1.2: If-None-Match with a list, one of which matches")
    func clientIfNoneMatchList() async throws {
        try await withLacquer { _, port, _ async throws in
            let url = target("/c-inm-l", [("cc", "max-age=3600"), ("etag", "x")])
            _ = try httpGet(port: port, url)
            #expect(try httpGet(port: port, url, headers: [("If-None-Match", "\"a\", \"x\"")]).status == 304)
            #expect(try httpGet(port: port, url, headers: [("If-None-Match", "\"a\", \"b\"")]).status == 200)
        }
    }

    @Test("RFC 9110 §13.1.2: If-None-Match: * matches any stored representation")
    func clientIfNoneMatchStar() async throws {
        try await withLacquer { _, port, _ async throws in
            let url = target("/c-inm-star", [("cc", "max-age=3600"), ("etag", "x")])
            _ = try httpGet(port: port, url)
            #expect(try httpGet(port: port, url, headers: [("If-None-Match", "*")]).status == 304)
        }
    }

    @Test("RFC 9110 §13.1.3: If-Modified-Since at or after Last-Modified gets 304; before it gets 200")
    func clientIfModifiedSince() async throws {
        try await withLacquer { _, port, _ async throws in
            let url = target("/c-ims", [("cc", "max-age=3600"), ("lm", "-86400")])
            let first = try httpGet(port: port, url)
            let lastModified = first.header("Last-Modified") ?? ""
            #expect(try httpGet(port: port, url, headers: [("If-Modified-Since", lastModified)]).status == 304)
            #expect(try httpGet(port: port, url, headers: [("If-Modified-Since", imfDate(-3 * 86400))]).status == 200)
        }
    }

    @Test("RFC 9110 §13.2.2: If-None-Match takes precedence over If-Modified-Since")
    func ifNoneMatchPrecedence() async throws {
        try await withLacquer { _, port, _ async throws in
            let url = target("/c-prec", [("cc", "max-age=3600"), ("lm", "-86400"), ("etag", "p")])
            _ = try httpGet(port: port, url)
            let response = try httpGet(
                port: port, url, headers: [("If-None-Match", "\"other\""), ("If-Modified-Since", imfDate(0))])
            #expect(response.status == 200)
        }
    }

    @Test("RFC 9110 §15.4.5: a 304 from cache carries the ETag, Cache-Control, Expires, Vary, Content-Location and Date a 200 would")
    func notModifiedFields() async throws {
        try await withLacquer { _, port, _ async throws in
            let url = target("/c-304f", [
                ("cc", "max-age=3600"), ("etag", "f"), ("expires", "3600"), ("vary", "X-A"),
                ("h", "Content-Location: /c-304f/loc"),
            ])
            _ = try httpGet(port: port, url)
            let response = try httpGet(port: port, url, headers: [("If-None-Match", "\"f\"")])
            #expect(response.status == 304)
            #expect(response.header("ETag") == "\"f\"")
            #expect(response.header("Cache-Control") == "max-age=3600")
            #expect(response.header("Expires") != nil)
            #expect(response.header("Vary") == "X-A")
            #expect(response.header("Content-Location") == "/c-304f/loc")
            #expect(response.header("Date") != nil)
        }
    }

    @Test("RFC 9110 §13.1.2 / §4.3.2: a client's conditional on a miss is not forwarded as-is into the cache fill, yet answered correctly")
    func clientConditionalOnMiss() async throws {
        try await withLacquer { lacquer, port, origin async throws in
            let url = target("/c-miss", [("cc", "max-age=3600"), ("etag", "m")])
            let first = try httpGet(port: port, url, headers: [("If-None-Match", "\"m\"")])
            #expect(first.status == 304)
            try await waitForStored(lacquer, 1)
            let full = try httpGet(port: port, url)
            #expect(full.status == 200)
            #expect(full.bodyString == "ok /c-miss\n")
            #expect(origin.requestCount(path: "/c-miss") == 1)
        }
    }
}

// MARK: - invalidation (RFC 9111 §4.4)

@Suite("Conformance: invalidation (RFC 9111 §4.4)", .serialized, .timeLimit(.minutes(2)))
struct ConformanceInvalidationTests {
    @Test("§4.4: a non-error response to an unsafe method invalidates the target URI", arguments: ["POST", "PUT", "DELETE", "PATCH"])
    func unsafeMethodInvalidates(method: String) async throws {
        try await withLacquer { _, port, origin async throws in
            let url = target("/i-m", [("cc", "max-age=3600")])
            _ = try fetch(port, url, times: 2)
            #expect(origin.requestCount(path: "/i-m") == 1)
            let client = try RawHTTPClient(port: port)
            defer { client.close() }
            let unsafe = try client.request(method, url, body: Array("x".utf8))
            #expect(unsafe.status == 200)
            _ = try httpGet(port: port, url)
            let gets = origin.requests(path: "/i-m").filter { $0.method == "GET" }
            #expect(gets.count == 2)
        }
    }

    @Test("§4.4: any other unsafe method (here WebDAV PROPPATCH) invalidates on a non-error answer")
    func otherUnsafeMethodInvalidates() async throws {
        try await withLacquer { _, port, origin async throws in
            let url = target("/i-dav", [("cc", "max-age=3600")])
            _ = try httpGet(port: port, url)
            let client = try RawHTTPClient(port: port)
            defer { client.close() }
            let response = try client.request("PROPPATCH", url, body: Array("x".utf8))
            #expect(response.status == 200)
            _ = try httpGet(port: port, url)
            #expect(origin.requests(path: "/i-dav").filter { $0.method == "GET" }.count == 2)
        }
    }

    @Test("§4.4: a 3xx (non-error) answer to POST invalidates too")
    func redirectAfterPostInvalidates() async throws {
        try await withScriptedLacquer([
            "/i-303": [
                Scripted(headers: ["Cache-Control: max-age=3600"], body: "v1"),
                Scripted(status: 303, headers: ["Location: /elsewhere"], body: "see other"),
                Scripted(headers: ["Cache-Control: max-age=3600"], body: "v2"),
            ]
        ]) { _, port, origin async throws in
            _ = try httpGet(port: port, "/i-303")
            let client = try RawHTTPClient(port: port)
            defer { client.close() }
            #expect(try client.request("POST", "/i-303", body: Array("x".utf8)).status == 303)
            #expect(try httpGet(port: port, "/i-303").bodyString == "v2")
            #expect(origin.count("/i-303") == 3)
        }
    }

    @Test("RFC 9110 §9.1 / §3.7: an unrecognised (but well-formed) method is not a syntax error: 501 or forwarded, not 400")
    func unknownMethodNot400() async throws {
        try await withLacquer { _, port, _ async throws in
            let client = try RawHTTPClient(port: port)
            defer { client.close() }
            let response = try client.request("FROB", "/i-unk")
            #expect(response.status == 501)
        }
    }

    @Test("§4.4: safe methods (HEAD, OPTIONS) do not invalidate")
    func safeMethodsDoNotInvalidate() async throws {
        try await withLacquer { _, port, origin async throws in
            let url = target("/i-safe", [("cc", "max-age=3600")])
            _ = try httpGet(port: port, url)
            _ = try httpGet(port: port, url, method: "HEAD")
            _ = try httpGet(port: port, url, method: "OPTIONS")
            _ = try httpGet(port: port, url)
            #expect(origin.requests(path: "/i-safe").filter { $0.method == "GET" }.count == 1)
        }
    }

    @Test("§4.4: a same-origin Location of a successful POST may be invalidated")
    func locationInvalidated() async throws {
        try await withLacquer { _, port, origin async throws in
            let other = target("/i-loc-target", [("cc", "max-age=3600")])
            _ = try httpGet(port: port, other)
            let client = try RawHTTPClient(port: port)
            defer { client.close() }
            _ = try client.request("POST", target("/i-loc", [("h", "Location: \(other)")]), body: Array("x".utf8))
            _ = try httpGet(port: port, other)
            #expect(origin.requestCount(path: "/i-loc-target") == 2)
        }
    }

    @Test("§4.4: a same-origin Content-Location of a successful PUT may be invalidated")
    func contentLocationInvalidated() async throws {
        try await withLacquer { _, port, origin async throws in
            let other = target("/i-cl-target", [("cc", "max-age=3600")])
            _ = try httpGet(port: port, other)
            let client = try RawHTTPClient(port: port)
            defer { client.close() }
            _ = try client.request("PUT", target("/i-cl", [("h", "Content-Location: http://127.0.0.1\(other)")]), body: Array("x".utf8))
            _ = try httpGet(port: port, other)
            #expect(origin.requestCount(path: "/i-cl-target") == 2)
        }
    }

    @Test("§4.4: a cache MUST NOT invalidate a Location of another origin")
    func crossOriginLocationNotInvalidated() async throws {
        try await withLacquer { _, port, origin async throws in
            let other = target("/i-xo-target", [("cc", "max-age=3600")])
            _ = try httpGet(port: port, other)
            let client = try RawHTTPClient(port: port)
            defer { client.close() }
            _ = try client.request("POST", target("/i-xo", [("h", "Location: http://evil.example\(other)")]), body: Array("x".utf8))
            _ = try httpGet(port: port, other)
            #expect(origin.requestCount(path: "/i-xo-target") == 1)
        }
    }

    @Test("§4.4 / §3: a response to POST is not used to answer a later GET")
    func postResponseNotReused() async throws {
        try await withLacquer { _, port, origin async throws in
            let url = target("/i-post", [("cc", "max-age=3600")])
            let client = try RawHTTPClient(port: port)
            defer { client.close() }
            _ = try client.request("POST", url, body: Array("x".utf8))
            _ = try httpGet(port: port, url)
            #expect(origin.requests(path: "/i-post").map(\.method) == ["POST", "GET"])
        }
    }
}

// MARK: - status (RFC 9111 §3, RFC 9110 §15.1)

@Suite("Conformance: status (RFC 9111 §3, RFC 9110 §15.1)", .serialized, .timeLimit(.minutes(2)))
struct ConformanceStatusTests {
    @Test(
        "RFC 9110 §15.1: heuristically cacheable statuses may be reused with only Last-Modified",
        arguments: [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501])
    func heuristicallyCacheable(status: Int) async throws {
        try await withLacquer { _, port, origin async throws in
            let url = target("/st-h", [("status", String(status)), ("lm", "-86400")])
            _ = try fetch(port, url, times: 2)
            #expect(origin.requestCount(path: "/st-h") == 1)
        }
    }

    @Test("RFC 9110 §15.1: other statuses (302, 307, 400, 500, 503) are never reused on heuristics", arguments: [302, 307, 400, 500, 503])
    func notHeuristicallyCacheable(status: Int) async throws {
        try await withLacquer { _, port, origin async throws in
            let url = target("/st-nh", [("status", String(status)), ("lm", "-86400")])
            _ = try fetch(port, url, times: 2)
            #expect(origin.requestCount(path: "/st-nh") == 2)
        }
    }

    @Test("§3: 302 and 307 with explicit freshness may be stored and reused", arguments: [302, 307])
    func explicitRedirects(status: Int) async throws {
        try await withLacquer { _, port, origin async throws in
            let url = target("/st-ex", [("status", String(status)), ("cc", "max-age=3600"), ("h", "Location: /elsewhere")])
            let responses = try fetch(port, url, times: 2)
            #expect(origin.requestCount(path: "/st-ex") == 1)
            #expect(responses[1].status == status)
            #expect(responses[1].header("Location") == "/elsewhere")
        }
    }

    @Test("§3.3 / §3.4: a 206 from the origin is never used to answer a later request as a whole")
    func partialNotStoredWhole() async throws {
        try await withLacquer { _, port, origin async throws in
            let url = target("/st-206", [("status", "206"), ("cc", "max-age=3600"), ("h", "Content-Range: bytes 0-3/10")])
            _ = try fetch(port, url, times: 2)
            #expect(origin.requestCount(path: "/st-206") == 2)
        }
    }

    @Test("§5.2.2.3: must-understand with an understood status overrides no-store")
    func mustUnderstandUnderstood() async throws {
        try await withLacquer { _, port, origin async throws in
            _ = try fetch(port, target("/st-mu", [("cc", "must-understand, no-store, max-age=3600")]), times: 2)
            #expect(origin.requestCount(path: "/st-mu") == 1)
        }
    }

    @Test("§5.2.2.3: must-understand with a status the cache does not understand MUST NOT be stored")
    func mustUnderstandUnknownStatus() async throws {
        try await withLacquer { _, port, origin async throws in
            _ = try fetch(port, target("/st-mu299", [("status", "299"), ("cc", "must-understand, no-store, max-age=3600")]), times: 2)
            #expect(origin.requestCount(path: "/st-mu299") == 2)
        }
    }

    @Test("§3: a final status the cache does not know is stored when it has explicit freshness (299, 499, 599), and served with its code and reason")
    func unknownStatusWithFreshness() async throws {
        try await withLacquer { _, port, origin async throws in
            for code in [299, 499, 599] {
                let url = target("/st-u\(code)", [("status", "\(code)"), ("cc", "max-age=3600")])
                let first = try httpGet(port: port, url)
                let second = try httpGet(port: port, url)
                #expect(first.status == code && second.status == code)
                #expect(second.header("X-Cache-Status") == "HIT", "\(code)")
                #expect(second.body == first.body && second.reason == first.reason)
                #expect(origin.requestCount(path: "/st-u\(code)") == 1, "\(code)")
            }
            // Without explicit freshness: never heuristically fresh, so not stored.
            _ = try fetch(port, target("/st-u298", [("status", "298")]), times: 2)
            #expect(origin.requestCount(path: "/st-u298") == 2)
        }
    }

    @Test("§3.3: an incomplete (truncated) response is not stored and never used later")
    func truncatedNotStored() async throws {
        try await withLacquer { _, port, origin async throws in
            let url = target("/truncate/2000", [("cc", "max-age=3600")])
            for _ in 0..<2 {
                do {
                    _ = try httpGet(port: port, url)
                } catch {
                    // The cut is signalled by closing the connection: expected.
                }
            }
            #expect(origin.requestCount(path: "/truncate/2000") == 2)
        }
    }
}

// MARK: - cdn-cache-control (RFC 9213)

@Suite("Conformance: cdn-cache-control (RFC 9213)", .serialized, .timeLimit(.minutes(2)))
struct ConformanceCDNCacheControlTests {
    @Test("RFC 9213 §2.1: CDN-Cache-Control max-age wins over Cache-Control no-store")
    func cdnOverridesNoStore() async throws {
        try await withLacquer { _, port, origin async throws in
            _ = try fetch(port, target("/cdn-1", [("cc", "no-store"), ("h", "CDN-Cache-Control: max-age=3600")]), times: 2)
            #expect(origin.requestCount(path: "/cdn-1") == 1)
        }
    }

    @Test("RFC 9213 §2.1: CDN-Cache-Control no-store wins over Cache-Control max-age")
    func cdnNoStore() async throws {
        try await withLacquer { _, port, origin async throws in
            _ = try fetch(port, target("/cdn-2", [("cc", "max-age=3600"), ("h", "CDN-Cache-Control: no-store")]), times: 2)
            #expect(origin.requestCount(path: "/cdn-2") == 2)
        }
    }

    @Test("RFC 9213 §2.1: CDN-Cache-Control max-age=0 wins over a longer Cache-Control max-age")
    func cdnShorter() async throws {
        try await withLacquer { _, port, origin async throws in
            _ = try fetch(port, target("/cdn-3", [("cc", "max-age=3600"), ("h", "CDN-Cache-Control: max-age=0")]), times: 2)
            #expect(origin.requestCount(path: "/cdn-3") == 2)
        }
    }

    @Test("RFC 9213 §2.1: when CDN-Cache-Control applies, Expires is ignored")
    func cdnIgnoresExpires() async throws {
        try await withLacquer { _, port, origin async throws in
            _ = try fetch(port, target("/cdn-4", [("expires", "-60"), ("h", "CDN-Cache-Control: max-age=3600")]), times: 2)
            #expect(origin.requestCount(path: "/cdn-4") == 1)
        }
    }

    @Test("RFC 9213 §2.1: a CDN-Cache-Control that fails to parse as a Dictionary is ignored: Cache-Control decides")
    func cdnInvalidIgnored() async throws {
        try await withLacquer { _, port, origin async throws in
            _ = try fetch(port, target("/cdn-5", [("cc", "max-age=3600"), ("h", "CDN-Cache-Control: max-age=\"unterminated")]), times: 2)
            #expect(origin.requestCount(path: "/cdn-5") == 1)
        }
    }

    @Test("RFC 9213 §2.1: CDN-Cache-Control does not change what downstream caches see in Cache-Control")
    func cacheControlPassedOn() async throws {
        try await withLacquer { _, port, _ async throws in
            let responses = try fetch(port, target("/cdn-6", [("cc", "max-age=60"), ("h", "CDN-Cache-Control: max-age=3600")]), times: 2)
            #expect(responses.allSatisfy { $0.header("Cache-Control") == "max-age=60" })
        }
    }
}

// MARK: - headers (RFC 9111 §3.1, §3.2, RFC 9110 §7.6)

@Suite("Conformance: headers (RFC 9111 §3.1, RFC 9110 §7.6)", .serialized, .timeLimit(.minutes(2)))
struct ConformanceHeaderTests {
    @Test("RFC 9110 §7.6.1 / RFC 9111 §3.1: fields named in the origin's Connection are neither forwarded nor stored")
    func connectionNominatedFieldsDropped() async throws {
        try await withLacquer { _, port, origin async throws in
            let url = target("/h-hop", [("cc", "max-age=3600"), ("h", "Connection: X-Hop"), ("h", "X-Hop: 1"), ("h", "X-Keep: 1")])
            let responses = try fetch(port, url, times: 2)
            #expect(origin.requestCount(path: "/h-hop") == 1)
            for response in responses {
                #expect(response.header("X-Hop") == nil)
                #expect(response.header("X-Keep") == "1")
                #expect(response.header("Keep-Alive") == nil)
            }
        }
    }

    @Test("RFC 9110 §7.6.1: fields named in the client's Connection are not forwarded to the origin")
    func clientConnectionFieldsDropped() async throws {
        try await withLacquer { _, port, origin async throws in
            _ = try httpGet(port: port, "/h-req", headers: [("Connection", "X-Private"), ("X-Private", "1"), ("X-Public", "1")])
            let sent = origin.requests(path: "/h-req").first
            #expect(sent?.header("X-Private") == nil)
            #expect(sent?.header("X-Public") == "1")
        }
    }

    @Test("RFC 9110 §7.6.3: Via is added to the forwarded request and to the response, after any upstream Via")
    func via() async throws {
        try await withLacquer { _, port, origin async throws in
            let response = try httpGet(port: port, target("/h-via", [("h", "Via: 1.1 upstream")]), headers: [("Via", "1.0 client-proxy")])
            let sentVia = origin.requests(path: "/h-via").first?.header("Via") ?? ""
            #expect(sentVia.hasPrefix("1.0 client-proxy"))
            #expect(sentVia.split(separator: ",").count == 2)
            let via = response.headers("Via").joined(separator: ", ")
            #expect(via.hasPrefix("1.1 upstream"))
            #expect(via.split(separator: ",").count == 2)
        }
    }

    @Test("RFC 9110 §6.6.1: the origin's Date is kept on a stored response, not replaced by the cache's")
    func dateKept() async throws {
        try await withLacquer { _, port, _ async throws in
            let url = target("/h-date", [("cc", "max-age=3600"), ("date", "-100")])
            let responses = try fetch(port, url, times: 2)
            #expect(responses[0].header("Date") != nil)
            #expect(responses[1].header("Date") == responses[0].header("Date"))
        }
    }

    @Test("§3.1: end-to-end fields of the origin are stored and served unchanged")
    func endToEndFieldsStored() async throws {
        try await withLacquer { _, port, _ async throws in
            let url = target("/h-e2e", [("cc", "max-age=3600"), ("h", "X-Custom: a, b"), ("h", "Link: </s.css>; rel=preload")])
            let responses = try fetch(port, url, times: 2)
            #expect(responses[1].header("X-Custom") == "a, b")
            #expect(responses[1].header("Link") == "</s.css>; rel=preload")
        }
    }

    @Test("§3.1 / §5.2.2.7: private=\"Field\": that field is not stored, so not served from cache")
    func privateFieldNotStored() async throws {
        try await withLacquer { _, port, origin async throws in
            let url = target("/h-privf", [("cc", "max-age=3600, private=\"X-Secret\""), ("h", "X-Secret: s")])
            let responses = try fetch(port, url, times: 2)
            if origin.requestCount(path: "/h-privf") == 1 {
                #expect(responses[1].header("X-Secret") == nil)
            }
        }
    }
}

// MARK: - partial (RFC 9110 §14, RFC 9111 §3.3–§3.4)

@Suite("Conformance: partial (RFC 9110 §14)", .serialized, .timeLimit(.minutes(2)))
struct ConformancePartialTests {
    @Test("RFC 9110 §14.2 / §15.3.7: a satisfiable single range of a stored response is a 206 with the right bytes")
    func singleRange() async throws {
        try await withLacquer { _, port, _ async throws in
            let url = target("/bytes/100", [("cc", "max-age=3600")])
            _ = try httpGet(port: port, url)
            let response = try httpGet(port: port, url, headers: [("Range", "bytes=10-19")])
            #expect(response.status == 206)
            #expect(response.header("Content-Range") == "bytes 10-19/100")
            #expect(response.bodyString == "klmnopqrst")
        }
    }

    @Test("RFC 9110 §14.3: a stored 200 served whole advertises Accept-Ranges: bytes")
    func acceptRanges() async throws {
        try await withLacquer { _, port, _ async throws in
            let responses = try fetch(port, target("/bytes/100", [("cc", "max-age=3600")]), times: 2)
            #expect(responses[1].status == 200)
            #expect(responses[1].header("Accept-Ranges") == "bytes")
        }
    }

    @Test("RFC 9110 §14.1.2: a suffix range takes the last N bytes")
    func suffixRange() async throws {
        try await withLacquer { _, port, _ async throws in
            let url = target("/bytes/100", [("cc", "max-age=3600")])
            _ = try httpGet(port: port, url)
            let response = try httpGet(port: port, url, headers: [("Range", "bytes=-5")])
            #expect(response.status == 206)
            #expect(response.header("Content-Range") == "bytes 95-99/100")
            #expect(response.body.count == 5)
        }
    }

    @Test("RFC 9110 §15.5.17: an unsatisfiable range gets 416 with Content-Range bytes */length")
    func unsatisfiable() async throws {
        try await withLacquer { _, port, _ async throws in
            let url = target("/bytes/100", [("cc", "max-age=3600")])
            _ = try httpGet(port: port, url)
            let response = try httpGet(port: port, url, headers: [("Range", "bytes=500-600")])
            #expect(response.status == 416)
            #expect(response.header("Content-Range") == "bytes */100")
        }
    }

    @Test("RFC 9110 §13.1.5: If-Range with a weak or different ETag gets the whole representation (strong comparison)")
    func ifRangeStrong() async throws {
        try await withLacquer { _, port, _ async throws in
            let url = target("/bytes/100", [("cc", "max-age=3600"), ("etag", "r")])
            _ = try httpGet(port: port, url)
            let weak = try httpGet(port: port, url, headers: [("Range", "bytes=0-9"), ("If-Range", "W/\"r\"")])
            #expect(weak.status == 200)
            #expect(weak.body.count == 100)
            let other = try httpGet(port: port, url, headers: [("Range", "bytes=0-9"), ("If-Range", "\"zz\"")])
            #expect(other.status == 200)
            let match = try httpGet(port: port, url, headers: [("Range", "bytes=0-9"), ("If-Range", "\"r\"")])
            #expect(match.status == 206)
        }
    }

    @Test("RFC 9110 §14.2: a Range on a non-GET method is ignored (HEAD gets the 200 head)")
    func rangeIgnoredForHead() async throws {
        try await withLacquer { _, port, _ async throws in
            let url = target("/bytes/100", [("cc", "max-age=3600")])
            _ = try httpGet(port: port, url)
            let response = try httpGet(port: port, url, method: "HEAD", headers: [("Range", "bytes=0-9")])
            #expect(response.status == 200)
            #expect(response.header("Content-Length") == "100")
        }
    }

    @Test("§3.4 / RFC 9110 §14: a Range request on a miss gets a 206 of those bytes")
    func rangeOnMiss() async throws {
        try await withLacquer { _, port, _ async throws in
            let url = target("/bytes/100", [("cc", "max-age=3600")])
            let response = try httpGet(port: port, url, headers: [("Range", "bytes=0-4")])
            #expect(response.status == 206)
            #expect(response.bodyString == "abcde")
            #expect(response.header("Content-Range") == "bytes 0-4/100")
        }
    }
}

// MARK: - other: request and response directives, Authorization, HEAD (RFC 9111 §3.5, §5.2, §5.4)

@Suite("Conformance: other directives (RFC 9111 §5.2, §3.5, §5.4)", .serialized, .timeLimit(.minutes(2)))
struct ConformanceOtherTests {
    @Test("§5.2.2.5: a response with no-store is not stored")
    func responseNoStore() async throws {
        try await withLacquer { _, port, origin async throws in
            _ = try fetch(port, target("/o-ns", [("cc", "no-store, max-age=3600")]), times: 2)
            #expect(origin.requestCount(path: "/o-ns") == 2)
        }
    }

    @Test("§5.2.1.5: a request with no-store: the response to it is not stored")
    func requestNoStore() async throws {
        try await withLacquer { _, port, origin async throws in
            let url = target("/o-rns", [("cc", "max-age=3600")])
            _ = try httpGet(port: port, url, headers: [("Cache-Control", "no-store")])
            _ = try httpGet(port: port, url)
            #expect(origin.requestCount(path: "/o-rns") == 2)
        }
    }

    @Test("§5.2.2.7: a shared cache MUST NOT store a response with private")
    func responsePrivate() async throws {
        try await withLacquer { _, port, origin async throws in
            _ = try fetch(port, target("/o-priv", [("cc", "private, max-age=3600")]), times: 2)
            #expect(origin.requestCount(path: "/o-priv") == 2)
        }
    }

    @Test("§5.2.2.4: a no-cache response with a validator is revalidated on every use")
    func responseNoCache() async throws {
        try await withLacquer { _, port, origin async throws in
            let url = target("/o-nc", [("cc", "no-cache, max-age=3600"), ("etag", "nc")])
            _ = try fetch(port, url, times: 3)
            let requests = origin.requests(path: "/o-nc")
            #expect(requests.count == 3)
            #expect(requests.dropFirst().allSatisfy { $0.header("If-None-Match") == "\"nc\"" })
        }
    }

    @Test("§5.2.2.4: a no-cache response without validators is never reused")
    func responseNoCacheNoValidator() async throws {
        try await withLacquer { _, port, origin async throws in
            _ = try fetch(port, target("/o-nc2", [("cc", "no-cache, max-age=3600")]), times: 2)
            #expect(origin.requestCount(path: "/o-nc2") == 2)
        }
    }

    @Test("§5.2.1.4: a request with no-cache is not satisfied from cache without validation")
    func requestNoCache() async throws {
        try await withLacquer { _, port, origin async throws in
            let url = target("/o-rnc", [("cc", "max-age=3600")])
            _ = try httpGet(port: port, url)
            let second = try httpGet(port: port, url, headers: [("Cache-Control", "no-cache")])
            #expect(origin.requestCount(path: "/o-rnc") == 2)
            #expect(second.header("X-Origin-Count") == "2")
        }
    }

    @Test("§5.4: Pragma: no-cache in a request without Cache-Control acts as no-cache")
    func pragmaNoCache() async throws {
        try await withLacquer { _, port, origin async throws in
            let url = target("/o-pragma", [("cc", "max-age=3600")])
            _ = try httpGet(port: port, url)
            _ = try httpGet(port: port, url, headers: [("Pragma", "no-cache")])
            #expect(origin.requestCount(path: "/o-pragma") == 2)
        }
    }

    @Test("§5.4: Pragma is ignored when the request has Cache-Control")
    func pragmaIgnoredWithCacheControl() async throws {
        try await withLacquer { _, port, origin async throws in
            let url = target("/o-pragma2", [("cc", "max-age=3600")])
            _ = try httpGet(port: port, url)
            _ = try httpGet(port: port, url, headers: [("Pragma", "no-cache"), ("Cache-Control", "max-stale=10")])
            #expect(origin.requestCount(path: "/o-pragma2") == 1)
        }
    }

    @Test("§5.2.1.1: request max-age: a response older than that is not reused")
    func requestMaxAge() async throws {
        let clock = TestClock()
        try await withLacquer(clock: clock.now) { _, port, origin async throws in
            let url = target("/o-rma", [("cc", "max-age=3600"), ("nodate", "1")])
            _ = try httpGet(port: port, url)
            clock.advance(60)
            _ = try httpGet(port: port, url, headers: [("Cache-Control", "max-age=120")])
            #expect(origin.requestCount(path: "/o-rma") == 1)
            _ = try httpGet(port: port, url, headers: [("Cache-Control", "max-age=30")])
            #expect(origin.requestCount(path: "/o-rma") == 2)
        }
    }

    @Test("§5.2.1.3: request min-fresh: a response that will not stay fresh that long is not reused")
    func requestMinFresh() async throws {
        try await withLacquer { _, port, origin async throws in
            let url = target("/o-mf", [("cc", "max-age=100")])
            _ = try httpGet(port: port, url)
            _ = try httpGet(port: port, url, headers: [("Cache-Control", "min-fresh=10")])
            #expect(origin.requestCount(path: "/o-mf") == 1)
            _ = try httpGet(port: port, url, headers: [("Cache-Control", "min-fresh=1000")])
            #expect(origin.requestCount(path: "/o-mf") == 2)
        }
    }

    @Test("§5.2.1.7: only-if-cached with nothing stored answers 504 without contacting the origin")
    func onlyIfCached() async throws {
        try await withLacquer { _, port, origin async throws in
            let response = try httpGet(port: port, "/o-oic", headers: [("Cache-Control", "only-if-cached")])
            #expect(response.status == 504)
            #expect(origin.requestCount(path: "/o-oic") == 0)
        }
    }

    @Test("§3.5: a response to a request with Authorization is not reused for another request")
    func authorizationNotStored() async throws {
        try await withLacquer { _, port, origin async throws in
            let url = target("/o-auth", [("cc", "max-age=3600")])
            _ = try httpGet(port: port, url, headers: [("Authorization", "Basic YTpi")])
            _ = try httpGet(port: port, url)
            #expect(origin.requestCount(path: "/o-auth") == 2)
        }
    }

    @Test(
        "§3.5: with Authorization, public, s-maxage or must-revalidate allow storing",
        arguments: ["public, max-age=3600", "s-maxage=3600", "must-revalidate, max-age=3600"])
    func authorizationAllowed(cc: String) async throws {
        try await withLacquer { _, port, origin async throws in
            let url = target("/o-auth-ok", [("cc", cc)])
            _ = try httpGet(port: port, url, headers: [("Authorization", "Basic YTpi")])
            _ = try httpGet(port: port, url, headers: [("Authorization", "Basic YTpi")])
            #expect(origin.requestCount(path: "/o-auth-ok") == 1)
        }
    }

    @Test("§3.5: a request with Authorization is answered from the cache only by a response that allowed sharing, whatever request stored it")
    func authorizationNeedsSharedResponse() async throws {
        try await withLacquer { _, port, origin async throws in
            let auth = [("Authorization", "Basic YTpi")]
            // Stored by an anonymous request, with no word on sharing: the logged-in user goes to
            // the origin (which sees the credentials); the stored copy stays for everyone else.
            let url = target("/o-auth-anon", [("cc", "max-age=3600")])
            _ = try httpGet(port: port, url)
            let private1 = try httpGet(port: port, url, headers: auth)
            #expect(private1.header("X-Cache-Status") == "MISS")
            #expect(private1.header("Cache-Status")?.contains("fwd=request") == true, "\(private1.header("Cache-Status") ?? "")")
            #expect(origin.requests(path: "/o-auth-anon").last?.header("Authorization") == "Basic YTpi")
            let anonymous = try httpGet(port: port, url)
            #expect(anonymous.header("X-Cache-Status") == "HIT", "the logged-in request neither replaced nor disabled the stored copy")
            #expect(origin.requestCount(path: "/o-auth-anon") == 2)
            // Responses that allowed sharing answer requests with Authorization from the cache.
            for (index, cc) in ["public, max-age=3600", "s-maxage=3600", "must-revalidate, max-age=3600"].enumerated() {
                let shared = target("/o-auth-shared\(index)", [("cc", cc)])
                _ = try httpGet(port: port, shared)
                #expect(try httpGet(port: port, shared, headers: auth).header("X-Cache-Status") == "HIT", "\(cc)")
                #expect(origin.requestCount(path: "/o-auth-shared\(index)") == 1)
            }
        }
    }

    @Test("§3.5: a request with Authorization that arrives while an anonymous fill runs does not get that fill's answer")
    func authorizationDoesNotWaitOnAnonymousFill() async throws {
        try await withLacquer { _, port, origin async throws in
            let url = target("/slowbody/2000/80", [("cc", "max-age=3600")])
            async let anonymous = runBlocking { try httpGet(port: port, url) }
            try await Task.sleep(for: .milliseconds(200))
            let authorized = try await runBlocking { try httpGet(port: port, url, headers: [("Authorization", "Bearer t")]) }
            #expect(authorized.header("X-Cache-Status") == "MISS", "\(authorized.header("Cache-Status") ?? "")")
            #expect(try await anonymous.header("X-Cache-Status") == "MISS")
            #expect(origin.requests(path: "/slowbody/2000/80").contains { $0.header("Authorization") == "Bearer t" })
        }
    }

    @Test("RFC 9110 §9.3.2: HEAD is answered from a stored GET with the same fields and no body")
    func headFromGet() async throws {
        try await withLacquer { _, port, origin async throws in
            let url = target("/o-head", [("cc", "max-age=3600"), ("h", "X-Thing: 1")])
            let get = try httpGet(port: port, url)
            let head = try httpGet(port: port, url, method: "HEAD")
            #expect(head.status == 200)
            #expect(head.body.isEmpty)
            #expect(head.header("Content-Length") == get.header("Content-Length"))
            #expect(head.header("X-Thing") == "1")
            #expect(origin.requestCount(path: "/o-head") == 1)
        }
    }

    @Test("§3 (Set-Cookie): a response carrying one client's Set-Cookie never reaches another client from cache")
    func setCookieNotShared() async throws {
        try await withLacquer { _, port, _ async throws in
            let url = target("/o-sc", [("cc", "max-age=3600"), ("setcookie", "session=alice")])
            _ = try httpGet(port: port, url)
            let second = try httpGet(port: port, url)
            #expect(second.header("X-Origin-Count") == "2")
        }
    }

    @Test("RFC 9110 §12.5.3 / content coding: a client that does not accept gzip never gets a gzip body from cache")
    func gzipOnlyToAcceptingClients() async throws {
        try await withLacquer { _, port, _ async throws in
            let url = target("/o-gz", [("cc", "max-age=3600"), ("gzbody", "hello world"), ("vary", "Accept-Encoding")])
            let gz = try httpGet(port: port, url, headers: [("Accept-Encoding", "gzip")])
            #expect(gz.header("Content-Encoding") == "gzip")
            let plain = try httpGet(port: port, url, headers: [("Accept-Encoding", "identity")])
            #expect(plain.header("Content-Encoding") == nil)
            #expect(plain.bodyString == "hello world")
            let none = try httpGet(port: port, url)
            #expect(none.header("Content-Encoding") == nil || none.header("Content-Encoding") == "identity")
        }
    }
}

// MARK: - content coding (RFC 9110 §8.4, §12.5.3, §7.7)

@Suite("Conformance: content coding (RFC 9110 §8.4, §7.7)", .serialized, .timeLimit(.minutes(2)))
struct ConformanceContentCodingTests {
    @Test("RFC 9110 §12.5.3: gzip;q=0 means not acceptable: no gzip body")
    func gzipQZero() async throws {
        try await withLacquer { _, port, _ async throws in
            let url = target("/cc-gzq", [("cc", "max-age=3600"), ("gzbody", "hello world"), ("vary", "Accept-Encoding")])
            _ = try httpGet(port: port, url, headers: [("Accept-Encoding", "gzip")])
            let response = try httpGet(port: port, url, headers: [("Accept-Encoding", "gzip;q=0, deflate")])
            #expect(response.header("Content-Encoding") != "gzip")
        }
    }

    @Test("RFC 9110 §7.7 / RFC 9111 §5.2.2.6: a proxy MUST NOT transform the content of a no-transform response")
    func noTransform() async throws {
        try await withLacquer { _, port, _ async throws in
            let url = target("/cc-nt", [("cc", "max-age=3600, no-transform"), ("gzbody", "hello world")])
            let gz = try httpGet(port: port, url, headers: [("Accept-Encoding", "gzip")])
            let plain = try httpGet(port: port, url)
            #expect(plain.header("Content-Encoding") == "gzip")
            #expect(plain.body == gz.body)
        }
    }

    @Test("RFC 9110 §8.8.3: a body decoded for a client is not labelled with the stored strong ETag")
    func decodedBodyETag() async throws {
        try await withLacquer { _, port, _ async throws in
            let url = target("/cc-etag", [("cc", "max-age=3600"), ("gzbody", "hello world"), ("etag", "gz1")])
            _ = try httpGet(port: port, url, headers: [("Accept-Encoding", "gzip")])
            let plain = try httpGet(port: port, url)
            if plain.header("Content-Encoding") == nil {
                #expect(plain.header("ETag") != "\"gz1\"")
            }
        }
    }
}

// MARK: - Cache-Status (RFC 9211) and 1xx (RFC 9110 §15.2)

@Suite("Conformance: Cache-Status and interim responses (RFC 9211, RFC 9110 §15.2)", .serialized, .timeLimit(.minutes(2)))
struct ConformanceCacheStatusTests {
    @Test("RFC 9211 §2.1–§2.5: a miss says fwd and fwd-status and stored; a hit says hit and ttl")
    func missThenHit() async throws {
        try await withLacquer { _, port, _ async throws in
            let responses = try fetch(port, target("/cs-1", [("cc", "max-age=3600")]), times: 2)
            let miss = responses[0].header("Cache-Status") ?? ""
            #expect(miss.contains("fwd=uri-miss"))
            #expect(miss.contains("fwd-status=200"))
            #expect(miss.contains("stored"))
            let hit = responses[1].header("Cache-Status") ?? ""
            #expect(hit.contains("; hit"))
            #expect(!hit.contains("fwd="))
            #expect(hit.contains("ttl="))
        }
    }

    @Test("RFC 9211 §2: an upstream Cache-Status is kept and this cache's member is appended last")
    func appendsToUpstream() async throws {
        try await withLacquer { _, port, _ async throws in
            let response = try httpGet(port: port, target("/cs-2", [("h", "Cache-Status: OriginCache; hit")]))
            let value = response.headers("Cache-Status").joined(separator: ", ")
            #expect(value.hasPrefix("OriginCache; hit"))
            #expect(value.split(separator: ",").last?.trimmingCharacters(in: .whitespaces).hasPrefix("Lacquer") == true)
        }
    }

    @Test("RFC 9211 §2.2: a revalidation of a stale response reports fwd=stale and the 304 as fwd-status")
    func revalidationStatus() async throws {
        let clock = TestClock()
        try await withLacquer(clock: clock.now) { _, port, _ async throws in
            let url = target("/cs-3", [("cc", "max-age=10"), ("etag", "cs"), ("nodate", "1")])
            _ = try httpGet(port: port, url)
            clock.advance(20)
            let value = try httpGet(port: port, url).header("Cache-Status") ?? ""
            #expect(value.contains("fwd=stale"))
            #expect(value.contains("fwd-status=304"))
        }
    }

    @Test("RFC 9110 §15.2: a 1xx from the origin is forwarded to an HTTP/1.1 client")
    func interimForwarded() async throws {
        try await withLacquer { _, port, _ async throws in
            let client = try RawHTTPClient(port: port)
            defer { client.close() }
            try client.send("GET /x-103?status=103 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            let response = try client.readResponse()
            #expect(response.status == 200)
            #expect(response.interimResponses.map(\.status) == [103])
        }
    }

    @Test("RFC 8297 / RFC 9111 §3: a 103 reaches the client with its fields and name; only the final response is stored, and a hit has no 103 and none of its fields")
    func earlyHintsNotStored() async throws {
        try await withLacquer { _, port, origin async throws in
            let url = target("/x-eh", [("status", "103"), ("ih", "Link:</s.css>; rel=preload; as=style"), ("ih", "X-Hint:1"), ("cc", "max-age=600")])
            let client = try RawHTTPClient(port: port)
            defer { client.close() }
            try client.send("GET \(url) HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            let interim = try client.readResponse(returnInterim: true)
            #expect(interim.status == 103 && interim.reason == "Early Hints")
            #expect(interim.header("Link") == "</s.css>; rel=preload; as=style")
            let first = try client.readResponse()
            #expect(first.status == 200 && first.header("X-Cache-Status") == "MISS")
            #expect(first.header("X-Hint") == nil && first.header("Link") == nil)
            try client.send("GET \(url) HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            let hit = try client.readResponse(returnInterim: true)
            #expect(hit.status == 200 && hit.header("X-Cache-Status") == "HIT", "a stored 1xx would come first")
            #expect(hit.header("X-Hint") == nil && hit.header("Link") == nil)
            #expect(origin.requestCount(path: "/x-eh") == 1)
        }
    }

    @Test("RFC 9113 §8.1: a 103 from the origin reaches an HTTP/2 client before the final response")
    func earlyHintsOverHTTP2() async throws {
        try await withLacquer(configure: {
            $0.listen = [HostAndPort(host: "127.0.0.1", port: 0, http2PriorKnowledge: true)]
        }) { _, port, _ async throws in
            let url = "http://127.0.0.1:\(port)" + target("/x-eh2", [("status", "103"), ("ih", "Link:</a.js>; rel=preload"), ("cc", "max-age=600")])
            let outcome = try ExternalTool.run("curl", ["-s", "-S", "-D", "-", "-o", "/dev/null", "--http2-prior-knowledge", "--max-time", "10", url])
            let statuses = outcome.output.split(separator: "\r\n").filter { $0.hasPrefix("HTTP/") }
            #expect(statuses == ["HTTP/2 103 ", "HTTP/2 200 "], "\(outcome.output) \(outcome.errors)")
            #expect(outcome.output.lowercased().contains("link: </a.js>; rel=preload"))
        }
    }

    @Test("RFC 9110 §15.2: a server MUST NOT send a 1xx response to an HTTP/1.0 client")
    func noInterimToHTTP10() async throws {
        try await withLacquer { _, port, _ async throws in
            let client = try RawHTTPClient(port: port)
            defer { client.close() }
            try client.send("GET /x-103b?status=103 HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            let response = try client.readResponse()
            #expect(response.status == 200)
            #expect(response.interimResponses.isEmpty)
        }
    }
}

// MARK: - A scripted origin

/// One scripted answer: status, header lines (`Name: value`), body; or `drop` to close without
/// answering.
struct Scripted: Sendable {
    var status: Int = 200
    var headers: [String] = []
    var body: String = ""
    var drop = false
}

/// An origin that answers the n-th request for a path with the n-th scripted response (the last
/// one repeats). No Date is sent unless scripted, so Lacquer's (test) clock supplies it.
final class ScriptedOrigin: Sendable {
    struct Received: Sendable {
        var method: String
        var path: String
        var headers: [String: String]
    }

    private struct State {
        var script: [String: [Scripted]]
        var received: [Received] = []
    }

    private let state: Mutex<State>
    private let group: MultiThreadedEventLoopGroup
    private let channel: any Channel

    private init(script: [String: [Scripted]], group: MultiThreadedEventLoopGroup, channel: any Channel) {
        self.state = Mutex(State(script: script))
        self.group = group
        self.channel = channel
    }

    static func start(_ script: [String: [Scripted]]) async throws -> ScriptedOrigin {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let box = Box()
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(ScriptedHandler(box: box))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let origin = ScriptedOrigin(script: script, group: group, channel: channel)
        box.origin.withLock { $0 = origin }
        return origin
    }

    var port: Int { self.channel.localAddress?.port ?? 0 }

    func count(_ path: String) -> Int {
        self.state.withLock { $0.received.filter { $0.path == path }.count }
    }

    func requests(_ path: String) -> [Received] {
        self.state.withLock { $0.received.filter { $0.path == path } }
    }

    fileprivate func next(method: String, uri: String, headers: HTTPHeaders) -> Scripted {
        let path = String(uri.split(separator: "?", maxSplits: 1).first ?? "")
        var fields: [String: String] = [:]
        for (name, value) in headers { fields[name.lowercased()] = value }
        return self.state.withLock { state in
            let index = state.received.filter { $0.path == path }.count
            state.received.append(Received(method: method, path: path, headers: fields))
            guard let answers = state.script[path], !answers.isEmpty else {
                return Scripted(status: 404, body: "not scripted")
            }
            return answers[min(index, answers.count - 1)]
        }
    }

    func shutdown() async {
        try? await self.channel.close()
        try? await self.group.shutdownGracefully()
    }

    fileprivate final class Box: Sendable {
        let origin = Mutex<ScriptedOrigin?>(nil)
    }
}

private final class ScriptedHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let box: ScriptedOrigin.Box
    private var head: HTTPRequestHead?

    init(box: ScriptedOrigin.Box) {
        self.box = box
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch Self.unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
        case .body:
            break
        case .end:
            guard let head = self.head, let origin = self.box.origin.withLock({ $0 }) else { return }
            self.head = nil
            let answer = origin.next(method: head.method.rawValue, uri: head.uri, headers: head.headers)
            if answer.drop {
                context.close(promise: nil)
                return
            }
            var headers = HTTPHeaders()
            for line in answer.headers {
                guard let colon = line.firstIndex(of: ":") else { continue }
                headers.add(
                    name: String(line[..<colon]),
                    value: String(line[line.index(after: colon)...]).trimmingCharacters(in: .whitespaces))
            }
            let hasBody = answer.status >= 200 && answer.status != 204 && answer.status != 304
            if hasBody && !headers.contains(name: "content-length") {
                headers.add(name: "Content-Length", value: String(answer.body.utf8.count))
            }
            let responseHead = HTTPResponseHead(
                version: .http1_1, status: HTTPResponseStatus(statusCode: answer.status), headers: headers)
            context.write(Self.wrapOutboundOut(.head(responseHead)), promise: nil)
            if hasBody && head.method != .HEAD && !answer.body.isEmpty {
                let buffer = context.channel.allocator.buffer(string: answer.body)
                context.write(Self.wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
            }
            context.writeAndFlush(Self.wrapOutboundOut(.end(nil)), promise: nil)
        }
    }
}
