import NIOHTTP1
import Testing

@testable import CachePolicy

@Suite("Freshness")
struct FreshnessTests {
    /// The response time used throughout: 1994-11-06T08:49:37Z.
    let now = Double(rfcExampleInstant)
    let date = HTTPDate.format(rfcExampleInstant)

    func lifetime(_ fields: HTTPHeaders, status: Int = 200) -> FreshnessLifetime {
        Freshness.lifetime(status: status, headers: fields, cacheControl: CacheControl(headers: fields), responseTime: self.now)
    }

    @Test("s-maxage beats max-age and Expires in a shared cache (RFC 9111 §4.2.1, §5.2.2.10)")
    func sMaxAgeFirst() {
        let fields = headers(
            ("Cache-Control", "max-age=60, s-maxage=30"), ("Date", self.date), ("Expires", HTTPDate.format(rfcExampleInstant + 600))
        )
        #expect(self.lifetime(fields) == FreshnessLifetime(seconds: 30, source: .sMaxAge))
    }

    @Test("max-age beats Expires (RFC 9111 §4.2.1, §5.3)")
    func maxAgeOverridesExpires() {
        let fields = headers(("Cache-Control", "max-age=60"), ("Date", self.date), ("Expires", HTTPDate.format(rfcExampleInstant + 600)))
        #expect(self.lifetime(fields) == FreshnessLifetime(seconds: 60, source: .maxAge))
    }

    @Test("max-age beats an invalid Expires too (RFC 9111 §5.3)")
    func maxAgeOverridesInvalidExpires() {
        let fields = headers(("Cache-Control", "max-age=60"), ("Expires", "0"))
        #expect(self.lifetime(fields) == FreshnessLifetime(seconds: 60, source: .maxAge))
    }

    @Test("Expires minus Date is the lifetime (RFC 9111 §4.2.1)")
    func expiresMinusDate() {
        let fields = headers(("Date", self.date), ("Expires", HTTPDate.format(rfcExampleInstant + 600)))
        #expect(self.lifetime(fields) == FreshnessLifetime(seconds: 600, source: .expires))
    }

    @Test("Without Date, Expires is measured from the response time (RFC 9110 §6.6.1)")
    func expiresWithoutDate() {
        let fields = headers(("Expires", HTTPDate.format(rfcExampleInstant + 90)))
        let result = Freshness.lifetime(
            status: 200, headers: fields, cacheControl: CacheControl(), responseTime: self.now + 30
        )
        #expect(result == FreshnessLifetime(seconds: 60, source: .expires))
    }

    @Test(
        "An invalid Expires, especially 0, means already expired (RFC 9111 §5.3)",
        arguments: ["0", "-1", "garbage", "", "Sun, 31 Feb 1994 08:49:37 GMT"]
    )
    func invalidExpires(value: String) {
        let fields = headers(("Date", self.date), ("Expires", value))
        #expect(self.lifetime(fields) == FreshnessLifetime(seconds: 0, source: .expires))
    }

    @Test("Expires in the past is lifetime 0, never negative (RFC 9111 §4.2.1)")
    func expiresInThePast() {
        let fields = headers(("Date", self.date), ("Expires", HTTPDate.format(rfcExampleInstant - 600)))
        #expect(self.lifetime(fields) == FreshnessLifetime(seconds: 0, source: .expires))
    }

    @Test("Two different Expires lines are invalid, so expired (RFC 9111 §5.3, §4.2.1)")
    func conflictingExpires() {
        let later = HTTPDate.format(rfcExampleInstant + 600)
        #expect(self.lifetime(headers(("Date", self.date), ("Expires", later), ("Expires", later))).seconds == 600)
        #expect(
            self.lifetime(headers(("Date", self.date), ("Expires", later), ("Expires", HTTPDate.format(rfcExampleInstant + 60))))
                == FreshnessLifetime(seconds: 0, source: .expires)
        )
    }

    @Test("Heuristic: 10 % of Date - Last-Modified (RFC 9111 §4.2.2)")
    func heuristic() {
        let fields = headers(("Date", self.date), ("Last-Modified", HTTPDate.format(rfcExampleInstant - 10_000)))
        #expect(self.lifetime(fields) == FreshnessLifetime(seconds: 1_000, source: .heuristic))
    }

    @Test("Heuristic is capped (RFC 9111 §4.2.2)")
    func heuristicCap() {
        let fields = headers(("Date", self.date), ("Last-Modified", HTTPDate.format(rfcExampleInstant - 100 * 86_400)))
        #expect(self.lifetime(fields) == FreshnessLifetime(seconds: 86_400, source: .heuristic))
        let custom = Freshness.lifetime(
            status: 200, headers: fields, cacheControl: CacheControl(), responseTime: self.now,
            heuristicFraction: 0.5, heuristicCap: 3_600
        )
        #expect(custom == FreshnessLifetime(seconds: 3_600, source: .heuristic))
    }

    @Test("Heuristic without Date uses the response time (RFC 9110 §6.6.1)")
    func heuristicWithoutDate() {
        let fields = headers(("Last-Modified", HTTPDate.format(rfcExampleInstant - 500)))
        #expect(self.lifetime(fields) == FreshnessLifetime(seconds: 50, source: .heuristic))
    }

    @Test("The heuristically cacheable statuses are exactly RFC 9110 §15.1's list")
    func heuristicSet() {
        #expect(Freshness.heuristicallyCacheable == [200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501])
    }

    @Test(
        "Heuristic freshness applies to every heuristically cacheable status (RFC 9110 §15.1, RFC 9111 §4.2.2)",
        arguments: [200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501]
    )
    func heuristicStatuses(status: Int) {
        let fields = headers(("Date", self.date), ("Last-Modified", HTTPDate.format(rfcExampleInstant - 10_000)))
        #expect(self.lifetime(fields, status: status).source == .heuristic)
    }

    @Test(
        "No heuristic for other statuses, even with public (RFC 9111 §4.2.2, HARDENING.md §8)",
        arguments: [201, 302, 303, 307, 400, 401, 403, 408, 413, 429, 431, 500, 502, 503, 504]
    )
    func noHeuristicForOtherStatuses(status: Int) {
        let fields = headers(
            ("Date", self.date), ("Last-Modified", HTTPDate.format(rfcExampleInstant - 10_000)), ("Cache-Control", "public")
        )
        #expect(self.lifetime(fields, status: status) == FreshnessLifetime(seconds: 0, source: .none))
    }

    @Test(
        "No heuristic when the origin asks for revalidation (RFC 9111 §5.2.2.2, §5.2.2.4, §5.2.2.8)",
        arguments: ["no-cache", "must-revalidate", "proxy-revalidate", "no-store"]
    )
    func noHeuristicWithRevalidation(directive: String) {
        let fields = headers(
            ("Date", self.date), ("Last-Modified", HTTPDate.format(rfcExampleInstant - 10_000)), ("Cache-Control", directive)
        )
        #expect(self.lifetime(fields) == FreshnessLifetime(seconds: 0, source: .none))
    }

    @Test("Explicit lifetimes apply to any status (RFC 9111 §4.2.1)")
    func explicitForAnyStatus() {
        #expect(self.lifetime(headers(("Cache-Control", "max-age=5")), status: 503) == FreshnessLifetime(seconds: 5, source: .maxAge))
    }

    @Test("No Last-Modified, future or invalid Last-Modified: no heuristic lifetime (RFC 9111 §4.2.2)")
    func noUsableLastModified() {
        #expect(self.lifetime(headers(("Date", self.date))) == FreshnessLifetime(seconds: 0, source: .none))
        #expect(
            self.lifetime(headers(("Date", self.date), ("Last-Modified", HTTPDate.format(rfcExampleInstant + 100))))
                == FreshnessLifetime(seconds: 0, source: .none)
        )
        #expect(self.lifetime(headers(("Last-Modified", "yesterday"))) == FreshnessLifetime(seconds: 0, source: .none))
    }

    @Test("max-age=0 is an explicit zero lifetime, not a fallback to heuristics (RFC 9111 §4.2.1)")
    func maxAgeZero() {
        let fields = headers(("Cache-Control", "max-age=0"), ("Last-Modified", HTTPDate.format(rfcExampleInstant - 10_000)))
        #expect(self.lifetime(fields) == FreshnessLifetime(seconds: 0, source: .maxAge))
    }

    @Test("Fresh while the lifetime exceeds the current age (RFC 9111 §4.2)")
    func isFresh() {
        let life = FreshnessLifetime(seconds: 60, source: .maxAge)
        #expect(Freshness.isFresh(lifetime: life, currentAge: 59.9))
        #expect(!Freshness.isFresh(lifetime: life, currentAge: 60))
    }

    @Test("Source raw values name the rule (RFC 9111 §4.2.1)")
    func sourceNames() {
        #expect(FreshnessLifetime.Source.sMaxAge.rawValue == "s-maxage")
        #expect(FreshnessLifetime.Source.maxAge.rawValue == "max-age")
    }
}
