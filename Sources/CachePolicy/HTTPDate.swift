/// HTTP-date parsing and formatting (RFC 9110 §5.6.7), written by hand.
///
/// Why by hand: `Date`, `Expires`, `Last-Modified` and `If-Modified-Since` are read on every
/// fetch and written on every delivery, and Foundation's formatters are slow and allocate. The
/// calendar arithmetic is Howard Hinnant's days-from-civil algorithm, which is exact for the
/// proleptic Gregorian calendar and needs neither `timegm` nor the process's time zone.
///
/// What is accepted (RFC 9110 §5.6.7 says recipients MUST accept all three):
/// - IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`
/// - obsolete RFC 850: `Sunday, 06-Nov-94 08:49:37 GMT`
/// - ANSI C asctime: `Sun Nov  6 08:49:37 1994`
///
/// Deliberate choices:
/// - Day and month names and `GMT` are matched case-insensitively, and leading/trailing
///   whitespace is ignored: §5.6.7 asks recipients to be robust when parsing timestamps.
/// - The day name must be a real one for the format (short for IMF/asctime, long for RFC 850),
///   but need not agree with the date: it is redundant, and origins get it wrong.
/// - The structure is otherwise exact (digit counts, separators, ranges, day-of-month against the
///   month's length), so garbage such as `"0"` or `"-1"` is `nil`; callers treat that as "in the
///   past" where RFC 9111 §5.3 requires it.
/// - A second of 60 (a leap second) is accepted and counts as the first second of the next minute.
public enum HTTPDate {
    /// Parses IMF-fixdate, obsolete RFC 850 and asctime formats (RFC 9110 §5.6.7).
    ///
    /// RFC 850's two-digit year is resolved with the 50-year rule against ``referenceYear``, as
    /// this module has no clock; use ``parse(_:now:)`` where the current time is at hand.
    /// - Returns: seconds since the Unix epoch, `nil` if `text` is not a valid HTTP-date.
    public static func parse<S: StringProtocol>(_ text: S) -> Int64? {
        Self.parse(text, referenceYear: Self.referenceYear)
    }

    /// Parses like ``parse(_:)``, resolving an RFC 850 two-digit year against `now`: a year that
    /// appears to be more than 50 years in the future is taken as the most recent past year with
    /// the same last two digits (RFC 9110 §5.6.7).
    /// - Parameters:
    ///   - text: the field value.
    ///   - now: the current time in seconds since the epoch.
    public static func parse<S: StringProtocol>(_ text: S, now: Double) -> Int64? {
        let clamped = now.isNaN ? 0 : Int64(max(min(now, 253_402_300_799), 0))
        return Self.parse(text, referenceYear: Self.civil(fromDays: Self.floorDiv(clamped, 86_400)).year)
    }

    /// The year two-digit RFC 850 years are resolved against by ``parse(_:)``. RFC 850 dates
    /// are obsolete and rare; with 2025 the rule maps `00`–`75` to 20xx and `76`–`99` to 19xx.
    public static let referenceYear: Int64 = 2025

    /// Formats as IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT` (RFC 9110 §5.6.7).
    ///
    /// Times outside years 0000–9999 are clamped into that range, since IMF-fixdate has a
    /// four-digit year.
    public static func format(_ secondsSinceEpoch: Int64) -> String {
        String(unsafeUninitializedCapacity: Self.fixdateLength) { buffer in
            Self.writeFixdate(secondsSinceEpoch, to: UnsafeMutableRawPointer(buffer.baseAddress!))
            return Self.fixdateLength
        }
    }

    /// The length of every IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
    public static let fixdateLength = 29

    /// Writes `secondsSinceEpoch` as IMF-fixdate into the `fixdateLength` bytes at `target`
    /// (clamped as ``format(_:)`` says). Allocates nothing: a stored object's dates are written
    /// out this way on every delivery (`PackedFields`).
    public static func writeFixdate(_ secondsSinceEpoch: Int64, to target: UnsafeMutableRawPointer) {
        // 0000-01-01T00:00:00Z ... 9999-12-31T23:59:59Z
        let seconds = min(max(secondsSinceEpoch, -62_167_219_200), 253_402_300_799)
        let days = Self.floorDiv(seconds, 86_400)
        let secondOfDay = seconds - days * 86_400
        let date = Self.civil(fromDays: days)
        let weekday = Int((days % 7 + 7 + 4) % 7)  // 1970-01-01 was a Thursday (4).
        let out = target.assumingMemoryBound(to: UInt8.self)
        @inline(__always) func two(_ value: Int64, at index: Int) {
            out[index] = UInt8(truncatingIfNeeded: 0x30 + value / 10)
            out[index + 1] = UInt8(truncatingIfNeeded: 0x30 + value % 10)
        }
        Self.dayAndMonthLetters.withUnsafeBufferPointer { letters in
            for index in 0..<3 {
                out[index] = letters[weekday * 3 + index]
                out[index + 8] = letters[21 + (date.month - 1) * 3 + index]
            }
        }
        out[3] = UInt8(ascii: ",")
        out[4] = UInt8(ascii: " ")
        two(Int64(date.day), at: 5)
        out[7] = UInt8(ascii: " ")
        out[11] = UInt8(ascii: " ")
        two(date.year / 100, at: 12)
        two(date.year % 100, at: 14)
        out[16] = UInt8(ascii: " ")
        two(secondOfDay / 3600, at: 17)
        out[19] = UInt8(ascii: ":")
        two(secondOfDay / 60 % 60, at: 20)
        out[22] = UInt8(ascii: ":")
        two(secondOfDay % 60, at: 23)
        out[25] = UInt8(ascii: " ")
        out[26] = UInt8(ascii: "G")
        out[27] = UInt8(ascii: "M")
        out[28] = UInt8(ascii: "T")
    }

    /// `shortDayNames` then `monthNames`, three letters each, for `writeFixdate`.
    private static let dayAndMonthLetters: [UInt8] = Array((Self.shortDayNames + Self.monthNames).joined().utf8)

    // MARK: - Calendar arithmetic

    /// Days since 1970-01-01 of a proleptic Gregorian date (Hinnant's `days_from_civil`).
    static func days(year: Int64, month: Int, day: Int) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = Self.floorDiv(y, 400)
        let yearOfEra = y - era * 400
        let shiftedMonth = Int64(month > 2 ? month - 3 : month + 9)
        let dayOfYear = (153 * shiftedMonth + 2) / 5 + Int64(day) - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }

    /// The proleptic Gregorian date of a day count since 1970-01-01 (Hinnant's `civil_from_days`).
    static func civil(fromDays days: Int64) -> (year: Int64, month: Int, day: Int) {
        let z = days + 719_468
        let era = Self.floorDiv(z, 146_097)
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let shiftedMonth = (5 * dayOfYear + 2) / 153
        let day = Int(dayOfYear - (153 * shiftedMonth + 2) / 5 + 1)
        let month = Int(shiftedMonth < 10 ? shiftedMonth + 3 : shiftedMonth - 9)
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }

    static func isLeapYear(_ year: Int64) -> Bool {
        (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
    }

    static func daysInMonth(_ month: Int, year: Int64) -> Int {
        switch month {
        case 2: return Self.isLeapYear(year) ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }

    private static func floorDiv(_ a: Int64, _ b: Int64) -> Int64 {
        a >= 0 ? a / b : -((-a + b - 1) / b)
    }

    static let shortDayNames = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
    static let longDayNames = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
    static let monthNames = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    // MARK: - Parsing

    private static func parse<S: StringProtocol>(_ text: S, referenceYear: Int64) -> Int64? {
        var string = String(text)
        return string.withUTF8 { buffer in
            var scanner = DateScanner(bytes: buffer)
            return scanner.parse(referenceYear: referenceYear)
        }
    }

    /// Parses an HTTP-date's bytes as ``parse(_:)`` does (without building a String).
    public static func parse(bytes: UnsafeBufferPointer<UInt8>) -> Int64? {
        var scanner = DateScanner(bytes: bytes)
        return scanner.parse(referenceYear: Self.referenceYear)
    }
}

/// A cursor over the bytes of one HTTP-date; each `mutating` step consumes input or fails.
private struct DateScanner {
    let bytes: UnsafeBufferPointer<UInt8>
    var index = 0
    var end: Int

    init(bytes: UnsafeBufferPointer<UInt8>) {
        self.bytes = bytes
        self.end = bytes.count
        // Robustness (RFC 9110 §5.6.7): ignore surrounding whitespace.
        while self.index < self.end, Self.isWhitespace(bytes[self.index]) { self.index += 1 }
        while self.end > self.index, Self.isWhitespace(bytes[self.end - 1]) { self.end -= 1 }
    }

    private static func isWhitespace(_ byte: UInt8) -> Bool {
        byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t")
    }

    mutating func parse(referenceYear: Int64) -> Int64? {
        let nameStart = self.index
        while self.index < self.end, Self.isLetter(self.bytes[self.index]) { self.index += 1 }
        let nameLength = self.index - nameStart
        guard self.index < self.end, nameLength >= 3 else { return nil }

        if self.bytes[self.index] == UInt8(ascii: ",") {
            self.index += 1
            guard self.expect(" ") else { return nil }
            if nameLength == 3 {
                guard Self.shortDayKeys.contains(self.folded3(at: nameStart)) else { return nil }
                return self.parseIMFFixdate()
            }
            guard self.matchName(from: nameStart, length: nameLength, in: HTTPDate.longDayNames) else { return nil }
            return self.parseRFC850(referenceYear: referenceYear)
        }
        guard nameLength == 3, Self.shortDayKeys.contains(self.folded3(at: nameStart)) else {
            return nil
        }
        guard self.expect(" ") else { return nil }
        return self.parseAsctime()
    }

    /// `DD Mon YYYY HH:MM:SS GMT`, after `day-name ", "`.
    private mutating func parseIMFFixdate() -> Int64? {
        guard let day = self.digits(2), self.expect(" "), let month = self.month(), self.expect(" "),
            let year = self.digits(4), self.expect(" "), let time = self.timeOfDay(), self.expect(" "),
            self.expectGMT(), self.index == self.end
        else { return nil }
        return Self.combine(year: year, month: month, day: Int(day), time: time)
    }

    /// `DD-Mon-YY HH:MM:SS GMT`, after `day-name-l ", "`.
    private mutating func parseRFC850(referenceYear: Int64) -> Int64? {
        guard let day = self.digits(2), self.expect("-"), let month = self.month(), self.expect("-"),
            let shortYear = self.digits(2), self.expect(" "), let time = self.timeOfDay(), self.expect(" "),
            self.expectGMT(), self.index == self.end
        else { return nil }
        // RFC 9110 §5.6.7: a two-digit year that appears to be more than 50 years in the future
        // is the most recent past year with those last two digits. The window is the century
        // ending 50 years after the reference year, so a year more than 49 years back (for
        // instance "29" read in 2080) moves forward into that window too.
        var year = referenceYear - referenceYear % 100 + shortYear
        if year > referenceYear + 50 { year -= 100 }
        if year <= referenceYear - 50 { year += 100 }
        return Self.combine(year: year, month: month, day: Int(day), time: time)
    }

    /// `Mon DD HH:MM:SS YYYY` where DD is two digits or a space and one digit, after `day-name " "`.
    private mutating func parseAsctime() -> Int64? {
        guard let month = self.month(), self.expect(" ") else { return nil }
        let day: Int64
        if self.expect(" ") {
            guard let digit = self.digits(1) else { return nil }
            day = digit
        } else {
            guard let twoDigits = self.digits(2) else { return nil }
            day = twoDigits
        }
        guard self.expect(" "), let time = self.timeOfDay(), self.expect(" "), let year = self.digits(4),
            self.index == self.end
        else { return nil }
        return Self.combine(year: year, month: month, day: Int(day), time: time)
    }

    private static func combine(year: Int64, month: Int, day: Int, time: Int64) -> Int64? {
        guard day >= 1, day <= HTTPDate.daysInMonth(month, year: year) else { return nil }
        return HTTPDate.days(year: year, month: month, day: day) * 86_400 + time
    }

    /// `HH:MM:SS` as seconds into the day.
    private mutating func timeOfDay() -> Int64? {
        guard let hour = self.digits(2), self.expect(":"), let minute = self.digits(2), self.expect(":"),
            let second = self.digits(2), hour < 24, minute < 60, second <= 60
        else { return nil }
        return hour * 3600 + minute * 60 + second
    }

    private mutating func month() -> Int? {
        guard self.end - self.index >= 3, let offset = Self.monthKeys.firstIndex(of: self.folded3(at: self.index)) else {
            return nil
        }
        self.index += 3
        return offset + 1
    }

    /// Three letters as one number, case folded (`folded3`): the short day names and the months.
    private static let shortDayKeys: [UInt32] = HTTPDate.shortDayNames.map { Self.folded3(Array($0.utf8), at: 0) }
    private static let monthKeys: [UInt32] = HTTPDate.monthNames.map { Self.folded3(Array($0.utf8), at: 0) }

    /// The three bytes at `start` as one number, each with bit 5 set: a letter compares equal to
    /// itself in either case (and to nothing else; as `matches` compares).
    @inline(__always)
    private func folded3(at start: Int) -> UInt32 {
        Self.folded3(self.bytes, at: start)
    }

    @inline(__always)
    private static func folded3<C: Collection<UInt8>>(_ bytes: C, at start: C.Index) -> UInt32 where C.Index == Int {
        UInt32(bytes[start] | 0x20) << 16 | UInt32(bytes[start + 1] | 0x20) << 8 | UInt32(bytes[start + 2] | 0x20)
    }

    private mutating func digits(_ count: Int) -> Int64? {
        guard self.end - self.index >= count else { return nil }
        var value: Int64 = 0
        for _ in 0..<count {
            let byte = self.bytes[self.index]
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
            value = value * 10 + Int64(byte - UInt8(ascii: "0"))
            self.index += 1
        }
        return value
    }

    private mutating func expect(_ character: Unicode.Scalar) -> Bool {
        guard self.index < self.end, self.bytes[self.index] == UInt8(ascii: character) else { return false }
        self.index += 1
        return true
    }

    private mutating func expectGMT() -> Bool {
        guard self.end - self.index >= 3, self.matches("GMT", at: self.index) else { return false }
        self.index += 3
        return true
    }

    private func matchName(from start: Int, length: Int, in names: [String]) -> Bool {
        names.contains { $0.utf8.count == length && self.matches($0, at: start) }
    }

    /// ASCII case-insensitive comparison of `name` with the input at `start`.
    private func matches(_ name: String, at start: Int) -> Bool {
        var position = start
        for expected in name.utf8 {
            guard position < self.end, self.bytes[position] | 0x20 == expected | 0x20 else { return false }
            position += 1
        }
        return true
    }

    private static func isLetter(_ byte: UInt8) -> Bool {
        (byte | 0x20) >= UInt8(ascii: "a") && (byte | 0x20) <= UInt8(ascii: "z")
    }
}
