import CachePolicy
/// Parses sizes as operators write them: `1048576`, `512KiB`, `64MB`, `1GiB`, `2G`, `10k`.
///
/// `KB`, `MB`, `GB`, `TB` are decimal (powers of 1000, as the SI says); `KiB`, `MiB`, … and the
/// bare letters `k`, `M`, `G`, `T` are binary (powers of 1024, as Varnish reads `-s malloc,256m`).
/// `B` may follow a number. Case-insensitive. Overflow and fractions are rejected.
public enum ByteSize {
    public static func parse(_ text: String) -> Int? {
        let trimmed = text.trimmingOWS()
        let digits = trimmed.prefix(while: { $0.isASCII && $0.isNumber })
        guard !digits.isEmpty, let value = Int(digits) else { return nil }
        let unit = trimmed.dropFirst(digits.count).lowercased()
        let multiplier: Int
        switch unit {
        case "", "b": multiplier = 1
        case "k", "kib": multiplier = 1 << 10
        case "m", "mib": multiplier = 1 << 20
        case "g", "gib": multiplier = 1 << 30
        case "t", "tib": multiplier = 1 << 40
        case "kb": multiplier = 1_000
        case "mb": multiplier = 1_000_000
        case "gb": multiplier = 1_000_000_000
        case "tb": multiplier = 1_000_000_000_000
        default: return nil
        }
        let (result, overflow) = value.multipliedReportingOverflow(by: multiplier)
        return overflow ? nil : result
    }
}

