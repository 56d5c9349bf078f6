import Testing

@testable import CachePolicy

@Suite("HTTPDate")
struct HTTPDateTests {
    @Test(
        "The three formats of the RFC example parse to the same instant (RFC 9110 §5.6.7)",
        arguments: [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ]
    )
    func rfcExample(text: String) {
        #expect(HTTPDate.parse(text) == rfcExampleInstant)
    }

    @Test(
        "IMF-fixdate formatting of known instants (RFC 9110 §5.6.7)",
        arguments: [
            (Int64(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT"),
            (0, "Thu, 01 Jan 1970 00:00:00 GMT"),
            (951_825_600, "Tue, 29 Feb 2000 12:00:00 GMT"),
            (4_107_542_400, "Mon, 01 Mar 2100 00:00:00 GMT"),
            (-1, "Wed, 31 Dec 1969 23:59:59 GMT"),
            (-2_208_988_800, "Mon, 01 Jan 1900 00:00:00 GMT"),
            (2_147_483_648, "Tue, 19 Jan 2038 03:14:08 GMT"),
            (253_402_300_799, "Fri, 31 Dec 9999 23:59:59 GMT"),
        ]
    )
    func formatKnown(seconds: Int64, text: String) {
        #expect(HTTPDate.format(seconds) == text)
        #expect(HTTPDate.parse(text) == seconds)
    }

    @Test("format and parse round-trip across four centuries (RFC 9110 §5.6.7)")
    func roundTrip() {
        // A stride that is not a multiple of a day visits every time of day and every date shape.
        var seconds: Int64 = -2_208_988_800
        var failures = 0
        while seconds < 10_000_000_000 {
            if HTTPDate.parse(HTTPDate.format(seconds)) != seconds { failures += 1 }
            seconds += 3_999_971
        }
        #expect(failures == 0)
    }

    @Test("Instants beyond years 0000–9999 are clamped when formatting (RFC 9110 §5.6.7 4DIGIT year)")
    func formatClamps() {
        #expect(HTTPDate.format(.max) == "Fri, 31 Dec 9999 23:59:59 GMT")
        #expect(HTTPDate.format(.min) == HTTPDate.format(-62_167_219_200))
        #expect(HTTPDate.format(.min).hasSuffix("01 Jan 0000 00:00:00 GMT"))
    }

    @Test(
        "Malformed dates are rejected (RFC 9110 §5.6.7)",
        arguments: [
            "", "0", "-1", "garbage",
            "Sun, 06 Nov 1994 08:49:37",  // no GMT
            "Sun, 06 Nov 1994 08:49:37 UTC",  // wrong zone
            "Sun, 06 Nov 1994 08:49:37 +0000",
            "Sun, 06 Nov 1994 08:49:37 GMT junk",  // trailing garbage
            "Sun, 6 Nov 1994 08:49:37 GMT",  // one-digit day in IMF-fixdate
            "Sun, 06 Nov 94 08:49:37 GMT",  // two-digit year in IMF-fixdate
            "Sun, 06 Foo 1994 08:49:37 GMT",  // unknown month
            "Xyz, 06 Nov 1994 08:49:37 GMT",  // unknown day name
            "Sunday, 06 Nov 1994 08:49:37 GMT",  // long day name needs RFC 850 dashes
            "Sun, 06-Nov-94 08:49:37 GMT",  // short day name with RFC 850 date
            "Sun, 31 Feb 1994 08:49:37 GMT",  // no such day
            "Mon, 29 Feb 1900 00:00:00 GMT",  // 1900 is not a leap year
            "Sun, 00 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Nov 1994 08:60:00 GMT",
            "Sun, 06 Nov 1994 08:49:61 GMT",
            "Sun, 06 Nov 1994 8:49:37 GMT",
            "Sun,06 Nov 1994 08:49:37 GMT",
            "Sun Nov 6 08:49:37 1994",  // asctime needs two characters for the day
            "Sun Nov  6 08:49:37 94",
            "Sun Nov  6 08:49:37 1994 GMT",
            "Sunday Nov  6 08:49:37 1994",
            "Sunday, 06-Nov-1994 08:49:37 GMT",  // RFC 850 has a two-digit year
            "Sunday, 06-Nov-94 08:49:37",
        ]
    )
    func rejectsInvalid(text: String) {
        #expect(HTTPDate.parse(text) == nil)
    }

    @Test("Leap-year rules: 2000 has Feb 29, 2100 does not (RFC 9110 §5.6.7 Gregorian calendar)")
    func leapYears() {
        #expect(HTTPDate.parse("Tue, 29 Feb 2000 12:00:00 GMT") == 951_825_600)
        #expect(HTTPDate.parse("Mon, 29 Feb 2100 00:00:00 GMT") == nil)
        #expect(HTTPDate.parse("Thu, 29 Feb 2024 00:00:00 GMT") != nil)
        #expect(HTTPDate.parse("Sat, 29 Feb 2025 00:00:00 GMT") == nil)
    }

    @Test("Names and GMT are matched case-insensitively; surrounding whitespace is ignored (RFC 9110 §5.6.7 robustness)")
    func robustParsing() {
        #expect(HTTPDate.parse("sun, 06 nov 1994 08:49:37 gmt") == rfcExampleInstant)
        #expect(HTTPDate.parse("  Sun, 06 Nov 1994 08:49:37 GMT\t") == rfcExampleInstant)
        #expect(HTTPDate.parse("SUNDAY, 06-NOV-94 08:49:37 GMT") == rfcExampleInstant)
        #expect(HTTPDate.parse("Sun, 06 Nov 1994 08:49:37 GMT"[...]) == rfcExampleInstant)
    }

    @Test("A wrong weekday is tolerated: the day name is redundant (RFC 9110 §5.6.7 robustness)")
    func weekdayMismatchTolerated() {
        #expect(HTTPDate.parse("Mon, 06 Nov 1994 08:49:37 GMT") == rfcExampleInstant)
    }

    @Test("A leap second counts as the next minute's first second (RFC 9110 §5.6.7)")
    func leapSecond() {
        #expect(HTTPDate.parse("Sun, 06 Nov 1994 08:49:60 GMT") == 784_111_800)
    }

    @Test(
        "RFC 850 two-digit years: more than 50 years ahead means the previous century (RFC 9110 §5.6.7)",
        arguments: [
            // (text, now, expected)
            ("Sunday, 06-Nov-94 08:49:37 GMT", 1_750_000_000.0, Int64(784_111_777)),  // 2025: 2094 is > 50 years ahead
            ("Saturday, 06-Nov-76 08:49:37 GMT", 1_750_000_000.0, 216_118_177),  // 2025: 2076 is 51 years ahead → 1976
            ("Wednesday, 06-Nov-75 08:49:37 GMT", 1_750_000_000.0, 3_340_255_777),  // 2025: 2075 is exactly 50 → 2075
            ("Wednesday, 06-Nov-30 08:49:37 GMT", 1_750_000_000.0, 1_920_185_377),
            ("Sunday, 06-Nov-29 08:49:37 GMT", 3_471_292_800.0, 5_044_322_977),  // 2080: 2129 stays
            ("Thursday, 06-Nov-31 08:49:37 GMT", 3_471_292_800.0, 1_951_721_377),  // 2080: 2131 → 2031
        ]
    )
    func rfc850FiftyYearRule(text: String, now: Double, expected: Int64) {
        #expect(HTTPDate.parse(text, now: now) == expected)
    }

    @Test("Without a clock, RFC 850 years resolve against the reference year (RFC 9110 §5.6.7)")
    func rfc850DefaultReference() {
        #expect(HTTPDate.referenceYear == 2025)
        #expect(HTTPDate.parse("Saturday, 06-Nov-76 08:49:37 GMT") == 216_118_177)
        #expect(HTTPDate.parse("Wednesday, 06-Nov-75 08:49:37 GMT") == 3_340_255_777)
    }

    @Test("A NaN clock does not trap (HARDENING.md §14)")
    func nanClock() {
        #expect(HTTPDate.parse("Sun, 06 Nov 1994 08:49:37 GMT", now: .nan) == rfcExampleInstant)
    }
}
