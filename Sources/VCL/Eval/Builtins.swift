import CachePolicy

/// Run-time helpers behind the built-in functions and type conversions.
enum Builtins {
    /// INT to string.
    static func formatInt(_ d: Double) -> String {
        guard let i = self.int(d) else { return d.isNaN ? "0" : (d > 0 ? "9007199254740992" : "-9007199254740992") }
        return String(i)
    }

    /// DURATION and REAL to string, Varnish style: three decimals ("120.000").
    static func formatReal(_ d: Double) -> String {
        guard d.isFinite, abs(d) < 9e15 else { return d.isNaN ? "0.000" : (d > 0 ? "9e15" : "-9e15") }
        let negative = d < 0
        let scaled = Int((abs(d) * 1000).rounded())
        let whole = scaled / 1000
        let frac = scaled % 1000
        let fracText = frac < 10 ? "00\(frac)" : frac < 100 ? "0\(frac)" : "\(frac)"
        return (negative && scaled != 0 ? "-" : "") + "\(whole).\(fracText)"
    }

    /// A Double that is a whole number in INT range, as Int.
    static func int(_ d: Double) -> Int? {
        guard d.isFinite, abs(d) <= 9_007_199_254_740_992 else { return nil }
        return Int(d.rounded(.towardZero))
    }


    /// std.integer / std.real / std.duration.
    static func parse(_ s: String?, as type: VCLType) -> Double? {
        guard let s else { return nil }
        let t = s.trimmingOWS()
        switch type {
        case .int:
            return Int(t).flatMap { abs($0) <= 9_007_199_254_740_992 ? Double($0) : nil }
        case .real:
            return Double(t).flatMap { $0.isFinite ? $0 : nil }
        default:
            var numberEnd = t.startIndex
            while numberEnd < t.endIndex, "0123456789.-+".contains(t[numberEnd]) { numberEnd = t.index(after: numberEnd) }
            guard let value = Double(t[..<numberEnd]), value.isFinite,
                let factor = Lexer.durationUnits[String(t[numberEnd...])]
            else { return nil }
            return value * factor
        }
    }

    /// std.querysort: sorts the query string's parameters so equivalent URLs share a cache key.
    static func querysort(_ url: String) -> String {
        guard let q = url.firstIndex(of: "?") else { return url }
        let params = url[url.index(after: q)...].split(separator: "&").filter { !$0.isEmpty }
        guard !params.isEmpty else { return String(url[..<q]) }
        let sorted = params.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
        return String(url[..<q]) + "?" + sorted.joined(separator: "&")
    }

    static func lowercased(_ s: String) -> String {
        String(decoding: s.utf8.map { $0 >= 0x41 && $0 <= 0x5A ? $0 + 0x20 : $0 }, as: UTF8.self)
    }

    static func uppercased(_ s: String) -> String {
        String(decoding: s.utf8.map { $0 >= 0x61 && $0 <= 0x7A ? $0 - 0x20 : $0 }, as: UTF8.self)
    }

    /// Header values may not contain CR, LF or NUL (response splitting).
    static func isValidHeaderValue(_ s: String) -> Bool {
        !s.utf8.contains { $0 == 0x0D || $0 == 0x0A || $0 == 0 }
    }
}
