import NIOHTTP1

extension StringProtocol {
    /// Drops leading and trailing SP / HTAB (RFC 9110 §5.6.3 OWS). The one trimming helper of
    /// every module that reads field values or configuration text.
    public func trimmingOWS() -> Substring {
        var result = self[...]
        while let first = result.first, first == " " || first == "\t" { result = result.dropFirst() }
        while let last = result.last, last == " " || last == "\t" { result = result.dropLast() }
        return Substring(result)
    }
}

/// Weights (RFC 9110 §12.4.2), the one reader of them.
public enum QValue {
    /// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )` in thousandths (0…1000);
    /// nil when `text` is not a qvalue.
    public static func parse<S: StringProtocol>(_ text: S) -> Int? {
        let bytes = Array(text.utf8)
        guard let first = bytes.first, first == UInt8(ascii: "0") || first == UInt8(ascii: "1") else { return nil }
        var value = Int(first - UInt8(ascii: "0")) * 1000
        guard bytes.count > 1 else { return value }
        guard bytes[1] == UInt8(ascii: "."), bytes.count <= 5 else { return nil }
        var scale = 100
        for byte in bytes[2...] {
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
            value += Int(byte - UInt8(ascii: "0")) * scale
            scale /= 10
        }
        return value <= 1000 ? value : nil
    }

    /// The weight of a list member's parameters (`;q=…`; other parameters skipped): 1000 when
    /// absent, 0 when unreadable — a member whose weight cannot be read is not taken as
    /// acceptable.
    public static func weight<S: StringProtocol>(parameters: some Sequence<S>) -> Int {
        var result = 1000
        for parameter in parameters {
            let pair = parameter.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard pair[0].trimmingOWS().lowercased() == "q" else { continue }
            result = pair.count == 2 ? (Self.parse(pair[1].trimmingOWS()) ?? 0) : 0
        }
        return result
    }
}

/// Accept-Encoding (RFC 9110 §12.5.3) as far as a cache that stores gzip or identity needs it:
/// the one reader behind the Vary key, delivery (gunzip or not) and the hit fast lane.
public enum AcceptEncoding {
    /// Whether the client accepts a gzip-coded response.
    ///
    /// `gzip` and its alias `x-gzip` (§8.4.1.3) with a weight above 0 accept; an explicit
    /// `gzip;q=0` refuses even when `*` is acceptable (the more specific member wins); otherwise
    /// `*` with a weight above 0 accepts. An unreadable weight counts as 0 (`gzip;q=abc` does not
    /// accept gzip, and hides a `*`). Without any Accept-Encoding field the answer is no: §12.5.3
    /// lets a server assume any coding then, but plenty of scripted clients omit it without
    /// decoding gzip, and Varnish gunzips for them too.
    public static func acceptsGzip(lines: [String]) -> Bool {
        var gzipWeight: Int?
        var anyWeight: Int?
        for line in lines {
            for member in line.split(separator: ",") {
                let parts = member.split(separator: ";", omittingEmptySubsequences: false)
                let coding = parts[0].trimmingOWS().lowercased()
                guard !coding.isEmpty else { continue }
                let weight = QValue.weight(parameters: parts.dropFirst())
                switch coding {
                case "gzip", "x-gzip": gzipWeight = max(gzipWeight ?? 0, weight)
                case "*": anyWeight = max(anyWeight ?? 0, weight)
                default: break
                }
            }
        }
        if let gzipWeight { return gzipWeight > 0 }
        return (anyWeight ?? 0) > 0
    }

    public static func acceptsGzip(_ requestHeaders: HTTPHeaders) -> Bool {
        Self.acceptsGzip(lines: requestHeaders["accept-encoding"])
    }
}
