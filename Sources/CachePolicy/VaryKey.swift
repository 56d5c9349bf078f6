import NIOHTTP1

/// Secondary cache keys from `Vary` (RFC 9111 §4.1).
///
/// A stored response can only answer requests whose "selecting header fields" match those of the
/// request that produced it. §4.1 allows normalising the values before comparing them ("by
/// adding or removing whitespace where allowed ... combining multiple header fields"); we do
/// that so that trivially different requests share a variant, which keeps the variant count per
/// key (capped at 32, HARDENING.md §7) low. Accept-Encoding gets a stronger normalisation
/// because the proxy only ever serves gzip or identity.
public enum VaryKey {
    /// Lowercased, de-duplicated, sorted field names the response's `Vary` lists; `[]` when there
    /// is no `Vary`; `nil` when `Vary` contains `*` (no request can match, §4.1).
    public static func fieldNames(_ responseHeaders: HTTPHeaders) -> [String]? {
        var names: [String] = []
        for line in responseHeaders["vary"] {
            for member in line.split(separator: ",") {
                let name = member.trimmingOWS()
                if name == "*" { return nil }
                if name.isEmpty { continue }
                names.append(name.lowercased())
            }
        }
        return Array(Set(names)).sorted()
    }

    /// A canonical string of the request's values for `names` (pass ``fieldNames(_:)``'s result).
    ///
    /// Per name: all field lines combined with `,`; whitespace around commas and at the ends
    /// removed; inner runs of whitespace collapsed to one space. Accept-Encoding becomes `gzip` if
    /// gzip (or `x-gzip`, or `*` without gzip excluded) is accepted with q > 0, otherwise
    /// `identity`; an absent or empty Accept-Encoding is `identity` too, since that is what such
    /// a client is served. For every other field an absent header is distinct from an empty one.
    ///
    /// The result is unambiguous: each entry is `name`, then `=` and the value or `!` for absent,
    /// then a newline; backslash and line breaks (and `=`, `!` in names) are escaped, so no
    /// name or value can forge the boundary of another entry.
    ///
    /// Fields in `listFields` (by default Accept-Language) are read as weighted lists and
    /// normalised further (`normaliseList`): members' case, order among equal weights, spelling
    /// of q-values and repeats do not split variants.
    public static func variant(
        names: [String], requestHeaders: HTTPHeaders, listFields: Set<String> = Self.standardListFields
    ) -> String {
        var result = ""
        for name in names {
            let lowered = name.lowercased()
            Self.appendEscaped(lowered, isName: true, to: &result)
            let lines = requestHeaders[lowered]
            if lowered == "accept-encoding" {
                result += "=" + (AcceptEncoding.acceptsGzip(lines: lines) ? "gzip" : "identity")
            } else if lines.isEmpty {
                result += "!"
            } else {
                result += "="
                let combined = lines.joined(separator: ",")
                let value = listFields.contains(lowered) ? Self.normaliseList(combined) : Self.normalise(combined)
                Self.appendEscaped(value, isName: false, to: &result)
            }
            result += "\n"
        }
        return result
    }

    /// The fields read as weighted lists by default: Accept-Language (Accept-Encoding has its own,
    /// stronger rule).
    public static let standardListFields: Set<String> = ["accept-language"]

    /// A weighted list (`a, b;q=0.5`, RFC 9110 §12.4.2) in one spelling: members lowercased with
    /// their whitespace removed, a repeated member dropped (the first counts), q-values written
    /// as thousandths (`q=0.9`, `q=0.90` and `Q=0.900` are the same; `q=1` left out; a q-value
    /// outside RFC 9110's grammar stays as written), members sorted
    /// by weight (highest first), then by name. Two values equal after this select the same
    /// representation from any origin that follows the RFC.
    public static func normaliseList(_ value: String) -> String {
        var members: [(name: String, weight: Int)] = []
        var seen: Set<String> = []
        for element in value.split(separator: ",") {
            var parameters: [String] = []
            var weight = 1000
            for (index, piece) in element.split(separator: ";", omittingEmptySubsequences: false).enumerated() {
                let text = String(piece.filter { $0 != " " && $0 != "\t" }).lowercased()
                if index > 0, text.hasPrefix("q="), let parsed = QValue.parse(String(text.dropFirst(2))) {
                    weight = parsed
                } else if index == 0 || !text.isEmpty {
                    parameters.append(text)
                }
            }
            let name = parameters.joined(separator: ";")
            guard !name.isEmpty, seen.insert(name).inserted else { continue }
            members.append((name, weight))
        }
        members.sort { $0.weight != $1.weight ? $0.weight > $1.weight : $0.name < $1.name }
        return members.map { member in
            guard member.weight != 1000 else { return member.name }
            var digits = String(member.weight)
            digits = String(repeating: "0", count: 3 - digits.count) + digits
            while digits.hasSuffix("0") { digits.removeLast() }
            return member.name + ";q=0." + (digits.isEmpty ? "0" : digits)
        }.joined(separator: ",")
    }

    /// Whitespace normalisation of one combined field value (RFC 9111 §4.1).
    static func normalise(_ value: String) -> String {
        var output: [UInt8] = []
        output.reserveCapacity(value.utf8.count)
        var pendingSpace = false
        for byte in value.utf8 {
            switch byte {
            case UInt8(ascii: " "), UInt8(ascii: "\t"):
                pendingSpace = true
            case UInt8(ascii: ","):
                // Whitespace before a comma is dropped, and so is any that follows it.
                output.append(byte)
                pendingSpace = false
            default:
                if pendingSpace, let last = output.last, last != UInt8(ascii: ",") {
                    output.append(UInt8(ascii: " "))
                }
                pendingSpace = false
                output.append(byte)
            }
        }
        return String(decoding: output, as: UTF8.self)
    }

    /// Escapes backslash and line breaks, and in names also `=` and `!`, which end a name.
    private static func appendEscaped(_ text: String, isName: Bool, to result: inout String) {
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "=" where isName, "!" where isName: result += "\\" + String(scalar)
            default: result.unicodeScalars.append(scalar)
            }
        }
    }
}
