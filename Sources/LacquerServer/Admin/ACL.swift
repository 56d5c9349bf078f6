#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CachePolicy
import NIOCore

/// An access list of address prefixes, matched on the TCP peer (never on a header).
///
/// Entries are `ADDR` or `ADDR/BITS` for IPv4 and IPv6 and may be negated (Varnish's
/// `! "10.1.2.3";`); the longest matching prefix decides, as in Varnish. An IPv4-mapped IPv6
/// peer (`::ffff:127.0.0.1`) is matched as IPv4.
public struct ACL: Sendable, Equatable, CustomStringConvertible {
    public struct Entry: Sendable, Equatable {
        /// 4 or 16 bytes.
        public var address: [UInt8]
        public var prefixLength: Int
        public var negated: Bool
    }

    public var entries: [Entry]

    public init(entries: [Entry] = []) {
        self.entries = entries
    }

    /// `127.0.0.1` and `::1`: the default purge ACL.
    public static let loopback = ACL(entries: [
        Entry(address: [127, 0, 0, 1], prefixLength: 32, negated: false),
        Entry(address: Array(repeating: 0, count: 15) + [1], prefixLength: 128, negated: false),
    ])

    /// Parses `ADDR[/BITS]` (optionally prefixed by `!`). Throws a message naming what is wrong.
    public static func parseEntry(_ text: String) throws(ACLParseError) -> Entry {
        var spec = Substring(text.trimmingOWS())
        var negated = false
        if spec.hasPrefix("!") {
            negated = true
            spec = spec.dropFirst().drop(while: { $0 == " " })
        }
        var addressText = spec
        var bits: Int?
        if let slash = spec.firstIndex(of: "/") {
            addressText = spec[..<slash]
            let bitsText = spec[spec.index(after: slash)...]
            guard let b = Int(bitsText), !bitsText.hasPrefix("+"), !bitsText.hasPrefix("-") else {
                throw ACLParseError(text: text, reason: "prefix length '\(bitsText)' is not a number")
            }
            bits = b
        }
        guard let address = parseAddress(String(addressText)) else {
            throw ACLParseError(text: text, reason: "'\(addressText)' is not an IPv4 or IPv6 address")
        }
        let maxBits = address.count * 8
        let prefix = bits ?? maxBits
        guard (0...maxBits).contains(prefix) else {
            throw ACLParseError(text: text, reason: "prefix length \(prefix) is outside 0...\(maxBits)")
        }
        return Entry(address: address, prefixLength: prefix, negated: negated)
    }

    /// Whether `peer` is allowed: the longest matching prefix decides; no match means no.
    public func allows(_ peer: SocketAddress?) -> Bool {
        guard let peer, let bytes = ACL.bytes(of: peer) else { return false }
        return self.allows(bytes)
    }

    public func allows(_ bytes: [UInt8]) -> Bool {
        var best: Entry?
        for entry in self.entries where entry.address.count == bytes.count {
            if ACL.prefixMatches(entry.address, bytes, entry.prefixLength),
                entry.prefixLength >= (best?.prefixLength ?? -1)
            {
                best = entry
            }
        }
        guard let best else { return false }
        return !best.negated
    }

    public var description: String {
        self.entries.map { e in
            let addr = e.address.count == 4 ? e.address.map(String.init).joined(separator: ".") : ACL.formatV6(e.address)
            return (e.negated ? "!" : "") + addr + "/\(e.prefixLength)"
        }.joined(separator: ", ")
    }

    static func prefixMatches(_ a: [UInt8], _ b: [UInt8], _ bits: Int) -> Bool {
        var remaining = bits
        var i = 0
        while remaining > 0 {
            let mask: UInt8 = remaining >= 8 ? 0xFF : ~(0xFF >> UInt8(remaining))
            if a[i] & mask != b[i] & mask { return false }
            remaining -= 8
            i += 1
        }
        return true
    }

    /// The peer's address bytes; IPv4-mapped IPv6 becomes 4 bytes.
    static func bytes(of address: SocketAddress) -> [UInt8]? {
        guard let text = address.ipAddress, let bytes = parseAddress(text) else { return nil }
        if bytes.count == 16, bytes[0..<10].allSatisfy({ $0 == 0 }), bytes[10] == 0xFF, bytes[11] == 0xFF {
            return Array(bytes[12..<16])
        }
        return bytes
    }

    static func parseAddress(_ text: String) -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: 16)
        if inet_pton(AF_INET, text, &buffer) == 1 {
            return Array(buffer[0..<4])
        }
        if inet_pton(AF_INET6, text, &buffer) == 1 {
            return buffer
        }
        return nil
    }

    static func formatV6(_ bytes: [UInt8]) -> String {
        stride(from: 0, to: 16, by: 2).map { String(UInt16(bytes[$0]) << 8 | UInt16(bytes[$0 + 1]), radix: 16) }
            .joined(separator: ":")
    }
}

/// A malformed ACL entry, with the text and what is wrong with it.
public struct ACLParseError: Error, CustomStringConvertible, Equatable {
    public var text: String
    public var reason: String
    public var description: String { "invalid ACL entry '\(self.text)': \(self.reason)" }
}
