import NIOHTTP1
import Testing

@testable import CachePolicy

@Suite("AgeCalculation")
struct AgeTests {
    @Test(
        "The Age header is delta-seconds; invalid values are ignored (RFC 9111 §5.1)",
        arguments: [
            (headers(), nil),
            (headers(("Age", "42")), Int64(42)),
            (headers(("age", " 7 ")), 7),
            (headers(("Age", "abc")), nil),
            (headers(("Age", "-5")), nil),
            (headers(("Age", "1.5")), nil),
            (headers(("Age", "")), nil),
            (headers(("Age", "99999999999999999999")), 2_147_483_648),
            (headers(("Age", "abc"), ("Age", "12")), 12),  // first valid line
            (headers(("Age", "5, 9")), 5),  // first valid member of a list
            (headers(("Age", ", 9")), 9),
        ] as [(HTTPHeaders, Int64?)]
    )
    func ageHeader(fields: HTTPHeaders, expected: Int64?) {
        #expect(AgeCalculation.ageHeader(fields) == expected)
    }

    @Test("No Age and no delay: the apparent age from Date wins (RFC 9111 §4.2.3)")
    func apparentAge() {
        let age = AgeCalculation.correctedInitialAge(ageHeader: nil, dateHeader: 1000, requestTime: 1010, responseTime: 1010)
        #expect(age == 10)
    }

    @Test("Age plus response delay wins over a smaller apparent age (RFC 9111 §4.2.3)")
    func correctedAgeValue() {
        // apparent_age = 1010 - 1005 = 5; corrected_age_value = 30 + (1010 - 1008) = 32
        let age = AgeCalculation.correctedInitialAge(ageHeader: 30, dateHeader: 1005, requestTime: 1008, responseTime: 1010)
        #expect(age == 32)
    }

    @Test("A Date in the future gives apparent age 0, not negative (RFC 9111 §4.2.3)")
    func futureDate() {
        let age = AgeCalculation.correctedInitialAge(ageHeader: nil, dateHeader: 5000, requestTime: 999.5, responseTime: 1000)
        #expect(age == 0.5)
    }

    @Test("Without Date only Age and the response delay count (RFC 9111 §4.2.3, RFC 9110 §6.6.1)")
    func noDate() {
        let age = AgeCalculation.correctedInitialAge(ageHeader: 3, dateHeader: nil, requestTime: 100, responseTime: 101.25)
        #expect(age == 4.25)
        #expect(AgeCalculation.correctedInitialAge(ageHeader: nil, dateHeader: nil, requestTime: 100, responseTime: 100) == 0)
    }

    @Test("A response time before the request time (clock step) never lowers the age (RFC 9111 §4.2.3)")
    func negativeDelay() {
        let age = AgeCalculation.correctedInitialAge(ageHeader: 10, dateHeader: nil, requestTime: 200, responseTime: 100)
        #expect(age == 10)
    }

    @Test("current_age adds the resident time (RFC 9111 §4.2.3)")
    func currentAge() {
        #expect(AgeCalculation.currentAge(correctedInitialAge: 32, responseTime: 1010, now: 1070) == 92)
        #expect(AgeCalculation.currentAge(correctedInitialAge: 32, responseTime: 1010, now: 1000) == 32)
    }

    @Test(
        "The Age value sent is whole seconds, clamped (RFC 9111 §5.1, §1.2.2)",
        arguments: [(0.0, "0"), (59.9, "59"), (-3, "0"), (1e12, "2147483648"), (.nan, "0"), (.infinity, "0")]
    )
    func headerValue(age: Double, text: String) {
        #expect(AgeCalculation.headerValue(age) == text)
    }
}
