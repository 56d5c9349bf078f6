/// `acl NAME { "127.0.0.1"; "10.0.0.0"/8; ! "10.1.2.3"; }` compiled to prefixes. As in Varnish,
/// the most specific matching entry decides; a `!` entry that matches means "not in the ACL".
public struct VCLACL: Sendable, Hashable {
    public struct Entry: Sendable, Hashable {
        /// 4 or 16 bytes, with the bits past `prefixLength` cleared.
        public var network: [UInt8]
        public var prefixLength: Int
        public var negated: Bool

        /// An entry; bits of `network` past `prefixLength` are cleared.
        public init(network: [UInt8], prefixLength: Int, negated: Bool = false) {
            self.network = VCLACL.mask(network, bits: prefixLength)
            self.prefixLength = prefixLength
            self.negated = negated
        }
    }

    /// The name under which the server's purge ACL (`--purge-acl`) is visible to VCL; builtin.vcl
    /// checks PURGE requests against it. A file that declares an ACL of this name replaces it.
    public static let purgeACLName = "purge_acl"

    /// `purge_acl` with 127.0.0.1 and ::1, the default when nothing else is given.
    public static let loopbackPurge = VCLACL(name: purgeACLName, entries: [
        Entry(network: [127, 0, 0, 1], prefixLength: 32),
        Entry(network: Array(repeating: 0, count: 15) + [1], prefixLength: 128),
    ])

    public var name: String
    public var entries: [Entry]

    public init(name: String, entries: [Entry]) {
        self.name = name
        self.entries = entries
    }

    /// Whether an address (4 bytes for IPv4, 16 for IPv6, network order) is in the ACL.
    /// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) match IPv4 entries.
    public func matches(ipBytes: [UInt8]) -> Bool {
        var address = ipBytes
        if address.count == 16, address[0..<10].allSatisfy({ $0 == 0 }), address[10] == 0xFF, address[11] == 0xFF {
            address = Array(address[12..<16])
        }
        var best: Entry?
        for e in self.entries where e.network.count == address.count && e.prefixLength >= (best?.prefixLength ?? -1) {
            if Self.prefix(address, equals: e.network, bits: e.prefixLength) { best = e }
        }
        guard let best else { return false }
        return !best.negated
    }

    static func prefix(_ a: [UInt8], equals b: [UInt8], bits: Int) -> Bool {
        var remaining = bits
        var i = 0
        while remaining > 0, i < a.count {
            let mask: UInt8 = remaining >= 8 ? 0xFF : ~(0xFF >> UInt8(remaining))
            if a[i] & mask != b[i] & mask { return false }
            remaining -= 8
            i += 1
        }
        return true
    }

    /// Clears the bits past `bits`.
    static func mask(_ a: [UInt8], bits: Int) -> [UInt8] {
        var out = a
        for i in 0..<out.count {
            let keep = bits - i * 8
            if keep <= 0 {
                out[i] = 0
            } else if keep < 8 {
                out[i] &= ~(0xFF >> UInt8(keep))
            }
        }
        return out
    }
}
