import NIOHTTP1
import Testing

@testable import CachePolicy

/// One row of the storability table.
struct StorabilityCase: Sendable, CustomTestStringConvertible {
    var label: String
    var method = "GET"
    var request: [(String, String)] = []
    var status = 200
    var response: [(String, String)] = [("Cache-Control", "max-age=60")]
    var expected: StorabilityDecision

    var testDescription: String { self.label }

    func evaluate() -> StorabilityDecision {
        let requestHeaders = HTTPHeaders(self.request)
        let responseHeaders = HTTPHeaders(self.response)
        // As the server does: the targeted field aimed at this cache (RFC 9213) decides.
        let targeted = TargetedCacheControl.effective(responseHeaders: responseHeaders)
        return Storability.evaluate(
            method: self.method,
            requestHeaders: requestHeaders,
            requestCacheControl: CacheControl(headers: requestHeaders),
            status: self.status,
            responseHeaders: TargetedCacheControl.freshnessHeaders(responseHeaders, source: targeted.source),
            responseCacheControl: targeted.cacheControl
        )
    }
}

@Suite("Storability")
struct StorabilityTests {
    static let table: [StorabilityCase] = [
        .init(label: "GET 200 max-age", expected: .storable),
        .init(label: "HEAD is not stored directly", method: "HEAD", expected: .notStorable(reason: .method)),
        .init(label: "POST", method: "POST", expected: .notStorable(reason: .method)),
        .init(label: "methods are case-sensitive", method: "get", expected: .notStorable(reason: .method)),
        .init(label: "request no-store", request: [("Cache-Control", "no-store")], expected: .notStorable(reason: .noStore)),
        .init(label: "response no-store", response: [("Cache-Control", "max-age=60, no-store")], expected: .notStorable(reason: .noStore)),
        .init(label: "must-understand with a known status overrides no-store",
              response: [("Cache-Control", "max-age=60, no-store, must-understand")], expected: .storable),
        .init(label: "must-understand with an unknown status", status: 299,
              response: [("Cache-Control", "max-age=60, no-store, must-understand")], expected: .notStorable(reason: .noStore)),
        .init(label: "Surrogate-Control no-store",
              response: [("Cache-Control", "max-age=60"), ("Surrogate-Control", "no-store")],
              expected: .notStorable(reason: .noStore)),
        .init(label: "Surrogate-Control no-store aimed at another cache",
              response: [("Cache-Control", "max-age=60"), ("Surrogate-Control", "no-store;othercdn")], expected: .storable),
        .init(label: "CDN-Cache-Control beats Surrogate-Control and Cache-Control (RFC 9213 §2.1)",
              response: [("Cache-Control", "no-store"), ("CDN-Cache-Control", "max-age=60"), ("Surrogate-Control", "no-store")],
              expected: .storable),
        .init(label: "CDN-Cache-Control no-store beats a storable Cache-Control",
              response: [("Cache-Control", "max-age=60"), ("CDN-Cache-Control", "no-store")], expected: .notStorable(reason: .noStore)),
        .init(label: "Surrogate-Control max-age only",
              response: [("Cache-Control", "max-age=60"), ("Surrogate-Control", "max-age=600")], expected: .storable),
        .init(label: "bare private", response: [("Cache-Control", "private, max-age=60")], expected: .notStorable(reason: .private)),
        .init(label: "qualified private is storable", response: [("Cache-Control", "private=\"x-user\", max-age=60")], expected: .storable),
        .init(label: "Set-Cookie", response: [("Cache-Control", "max-age=60"), ("Set-Cookie", "a=b")], expected: .notStorable(reason: .setCookie)),
        .init(label: "Set-Cookie even with public", response: [("Cache-Control", "public, max-age=60"), ("set-cookie", "a=b")],
              expected: .notStorable(reason: .setCookie)),
        .init(label: "Vary *", response: [("Cache-Control", "max-age=60"), ("Vary", "Accept, *")], expected: .notStorable(reason: .varyStar)),
        .init(label: "Vary on a field", response: [("Cache-Control", "max-age=60"), ("Vary", "Accept")], expected: .storable),
        .init(label: "Authorization", request: [("Authorization", "Basic x")], expected: .notStorable(reason: .authorization)),
        .init(label: "Authorization + public", request: [("Authorization", "Basic x")],
              response: [("Cache-Control", "public, max-age=60")], expected: .storable),
        .init(label: "Authorization + s-maxage", request: [("Authorization", "Basic x")],
              response: [("Cache-Control", "s-maxage=60")], expected: .storable),
        .init(label: "Authorization + must-revalidate", request: [("Authorization", "Basic x")],
              response: [("Cache-Control", "must-revalidate, max-age=60")], expected: .storable),
        .init(label: "Cookie in the request is VCL's business", request: [("Cookie", "a=b")], expected: .storable),
        .init(label: "206", status: 206, expected: .notStorable(reason: .partial)),
        .init(label: "304", status: 304, expected: .notStorable(reason: .status)),
        .init(label: "100", status: 100, expected: .notStorable(reason: .status)),
        .init(label: "103", status: 103, expected: .notStorable(reason: .status)),
        .init(label: "unknown 299 with max-age", status: 299, expected: .storable),
        .init(label: "unknown 499 with Expires", status: 499, response: [("Expires", "Thu, 01 Jan 2099 00:00:00 GMT")], expected: .storable),
        .init(label: "unknown 599 with s-maxage", status: 599, response: [("Cache-Control", "s-maxage=60")], expected: .storable),
        .init(label: "unknown 299 with public", status: 299, response: [("Cache-Control", "public")], expected: .storable),
        .init(label: "unknown 299 without freshness (never heuristic)", status: 299, response: [], expected: .notStorable(reason: .noFreshness)),
        .init(label: "unknown 599 with must-understand", status: 599, response: [("Cache-Control", "max-age=60, must-understand")],
              expected: .notStorable(reason: .status)),
        .init(label: "a code outside 100-599", status: 600, expected: .notStorable(reason: .status)),
        .init(label: "500 with max-age", status: 500, expected: .storable),
        .init(label: "200 without freshness (heuristic)", response: [], expected: .storable),
        .init(label: "404 without freshness (heuristic)", status: 404, response: [], expected: .storable),
        .init(label: "302 without freshness", status: 302, response: [], expected: .notStorable(reason: .noFreshness)),
        .init(label: "503 without freshness", status: 503, response: [], expected: .notStorable(reason: .noFreshness)),
        .init(label: "302 with Expires", status: 302, response: [("Expires", "Thu, 01 Jan 2099 00:00:00 GMT")], expected: .storable),
        .init(label: "503 with an invalid Expires is still explicit", status: 503, response: [("Expires", "0")], expected: .storable),
        .init(label: "302 with s-maxage", status: 302, response: [("Cache-Control", "s-maxage=5")], expected: .storable),
        .init(label: "302 with public", status: 302, response: [("Cache-Control", "public")], expected: .storable),
        .init(label: "503 with no-cache is stored to revalidate", status: 503, response: [("Cache-Control", "no-cache")], expected: .storable),
    ]

    @Test("Storability table (RFC 9111 §3, §3.5, HARDENING.md §8)", arguments: Self.table)
    func decision(row: StorabilityCase) {
        #expect(row.evaluate() == row.expected)
    }

    @Test("The method check comes before everything else, so the reason is stable (RFC 9111 §3)")
    func reasonOrder() {
        let row = StorabilityCase(
            label: "POST no-store Set-Cookie", method: "POST", request: [("Cache-Control", "no-store")],
            response: [("Set-Cookie", "a=b")], expected: .notStorable(reason: .method)
        )
        #expect(row.evaluate() == row.expected)
    }

    @Test("Understood statuses exclude 206, 304 and informational codes (RFC 9111 §3)")
    func understoodStatuses() {
        #expect(!Storability.understoodStatuses.contains(206))
        #expect(!Storability.understoodStatuses.contains(304))
        #expect(Storability.understoodStatuses.allSatisfy { $0 >= 200 && $0 < 600 })
        #expect(Freshness.heuristicallyCacheable.subtracting([206]).isSubset(of: Storability.understoodStatuses))
    }

    @Test("Fields named by qualified private / no-cache are omitted from storage (RFC 9111 §5.2.2.4, §5.2.2.7)")
    func fieldsToOmit() {
        let cc = CacheControl(parsing: "private=\"X-User, x-token\", no-cache=\"x-token, Set-Cookie2\"")
        #expect(Storability.fieldsToOmit(cc) == ["x-user", "x-token", "set-cookie2"])
        #expect(Storability.fieldsToOmit(CacheControl(parsing: "private, no-cache")).isEmpty)
    }
}
