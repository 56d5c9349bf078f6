import CachePolicy
import CacheStore
import LacquerTesting
import NIOCore
import NIOHTTP1
import Testing

@testable import LacquerServer

/// The hit fast lane and the request flow decide a hit with the same rules: fed random stored
/// variants and random plain requests, whatever the lane answers is exactly what the flow would
/// deliver as stored (the lane may leave a request to the flow, never answer it differently).
@Suite("Hit decisions: the fast lane against the flow")
struct HitDecisionDifferentialTests {
    static let acceptEncodings: [String?] = [
        nil, "gzip", "gzip, deflate, br", "identity", "br", "*", "*;q=0", "gzip;q=0", "gzip;q=0, *", "*, gzip;q=0",
        "gzip;q=abc, *", "*;q=abc", "x-gzip", "GZIP;Q=0.5", "gzip;q=1.0001", "deflate, gzip ; q=0.001", "",
    ]
    static let languages: [String?] = [nil, "en", "de, en;q=0.5"]
    static let varyNames: [[String]] = [[], ["accept-encoding"], ["accept-language"], ["accept-encoding", "accept-language"]]

    static func object(
        key: CacheKey, random: inout SeededRandom, now: Double, index: Int
    ) -> StoredObject {
        let names = Self.varyNames.randomElement(using: &random)!
        // The request that stored it decides its variant.
        var storingRequest = HTTPHeaders()
        if let value = Self.acceptEncodings.randomElement(using: &random)! { storingRequest.add(name: "Accept-Encoding", value: value) }
        if let value = Self.languages.randomElement(using: &random)! { storingRequest.add(name: "Accept-Language", value: value) }
        var headers = HTTPHeaders([("Content-Type", "text/plain")])
        if random.next() % 3 == 0 { headers.add(name: "Content-Encoding", value: "gzip") }
        if !names.isEmpty { headers.add(name: "Vary", value: names.joined(separator: ", ")) }
        if random.next() % 8 == 0 { headers.add(name: "Via", value: "1.1 upstream") }
        let status = [200, 200, 200, 404, 301].randomElement(using: &random)!
        let origin = now - Double.random(in: 0...100, using: &random)
        return StoredObject(
            key: key, variant: VaryKey.variant(names: names, requestHeaders: storingRequest), varyNames: names,
            status: status, reason: "R", headers: headers, body: ByteBuffer(string: "body \(index)"),
            requestTime: origin, responseTime: origin + Double(index) * 0.001, origin: origin,
            ttl: Double.random(in: 0...120, using: &random), grace: 0, keep: 0, mustRevalidate: false)
    }

    @Test("random stored variants × random plain requests: the lane answers only what the flow would, with the same object")
    func laneAgreesWithFlow() {
        let seed = SeededRandom.seed(fallback: 0x417)
        var random = SeededRandom(seed: seed)
        var laneAnswered = 0
        var flowPlain = 0
        for round in 0..<3000 {
            let now = 1_000_000.0
            let memory = MemoryTier(capacityBytes: 1 << 20)
            let key = CacheKey(host: "h", target: "/\(round)")
            for index in 0..<Int.random(in: 1...4, using: &random) {
                memory.insert(Self.object(key: key, random: &random, now: now, index: index))
            }
            let acceptEncoding = Self.acceptEncodings.randomElement(using: &random)!
            let language = Self.languages.randomElement(using: &random)!
            var request = HTTPHeaders([("Host", "h")])
            if let acceptEncoding { request.add(name: "Accept-Encoding", value: acceptEncoding) }
            if let language { request.add(name: "Accept-Language", value: language) }

            // The flow: lookup, then the plain delivery's gate.
            let variants = memory.variants(for: key)
            var flowChoice: StoredObject?
            if case .hit(let object) = BuiltinPolicy.lookup(
                variants: variants, requestHeaders: request, requestCacheControl: BuiltinPolicy.requestCacheControl(request, ignored: false),
                now: now),
                HitRules.wantsStoredAsIs(method: .GET, requestHeaders: request),
                HitRules.deliverableAsStored(object, clientTakesGzip: AcceptEncoding.acceptsGzip(request))
            {
                flowChoice = object
                flowPlain += 1
            }
            let laneChoice = HitFastLane.storedResponse(memory: memory, key: key, acceptEncoding: acceptEncoding, now: now)
            if let laneChoice {
                laneAnswered += 1
                #expect(
                    flowChoice === laneChoice,
                    "seed \(seed) round \(round): the lane answered \(laneChoice.variant.debugDescription) (status \(laneChoice.status)), the flow \(flowChoice.map { $0.variant.debugDescription } ?? "nothing plain")")
            } else if let flowChoice, flowChoice.varyNames.allSatisfy({ $0 == "accept-encoding" }),
                variants.allSatisfy({ $0.varyNames.allSatisfy { $0 == "accept-encoding" } })
            {
                // Where the lane can read everything the flow reads, it must not leave a plain hit.
                Issue.record("seed \(seed) round \(round): the flow delivers \(flowChoice.variant.debugDescription) as stored, the lane declined")
            }
        }
        // Both paths were exercised.
        #expect(laneAnswered > 100 && flowPlain > laneAnswered, "lane \(laneAnswered), flow \(flowPlain)")
    }
}
