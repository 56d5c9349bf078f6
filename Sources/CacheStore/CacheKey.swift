/// The primary key of a cached object: what Varnish's `vcl_hash` feeds into the hash.
///
/// By default the parts are the raw request-target (path and query, byte-exact: no decoding,
/// no slash merging, no parameter reordering) and the normalised host (lowercased, default
/// port stripped). GET and HEAD share a key; no other method is ever stored. VCL's
/// `hash_data()` may append further parts. The variants a `Vary` response header selects live
/// *under* one key (see `StoredObject.variant`), so a purge of a key removes all of them.
public struct CacheKey: Hashable, Sendable, CustomStringConvertible {
    /// The hashed parts, in order. `parts[0]` is the target and `parts[1]` the host by default.
    public let parts: [String]
    /// A stable 64-bit FNV-1a digest of the parts (each part followed by a NUL byte).
    /// Stable across runs and processes, so it may be persisted and used for sharding.
    public let digest: UInt64

    public init(parts: [String]) {
        self.parts = parts
        self.digest = CacheKey.fnv1a(parts)
    }

    /// The default key: request-target and normalised host.
    public init(host: String, target: String) {
        self.init(parts: [target, host])
    }

    /// One string that identifies the key exactly (parts joined by NUL); used as the disk index key.
    public var canonical: String {
        self.parts.joined(separator: "\u{0}")
    }

    public var description: String {
        self.parts.joined(separator: " ")
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(self.digest)
    }

    public static func == (lhs: CacheKey, rhs: CacheKey) -> Bool {
        lhs.digest == rhs.digest && lhs.parts == rhs.parts
    }

    static func fnv1a(_ parts: [String]) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for part in parts {
            for byte in part.utf8 {
                hash ^= UInt64(byte)
                hash &*= 0x0000_0100_0000_01b3
            }
            hash ^= 0
            hash &*= 0x0000_0100_0000_01b3
        }
        return hash
    }
}
