/// The primary key of a cached object: what Varnish's `vcl_hash` feeds into the hash.
///
/// By default the parts are the raw request-target (path and query, byte-exact: no decoding,
/// no slash merging, no parameter reordering) and the normalised host (lowercased, default
/// port stripped). GET and HEAD share a key; no other method is ever stored. VCL's
/// `hash_data()` may append further parts. The variants a `Vary` response header selects live
/// *under* one key (see `StoredObject.variant`), so a purge of a key removes all of them.
public struct CacheKey: Hashable, Sendable, CustomStringConvertible {
    /// The parts joined by NUL (no part contains one: request targets, hosts and VCL strings
    /// cannot). One string instead of an array of strings: one allocation per cached object, not
    /// two or three. It is also the disk index's key.
    public let canonical: String
    /// A stable 64-bit FNV-1a digest of the parts (each part followed by a NUL byte).
    /// Stable across runs and processes, so it may be persisted and used for sharding.
    public let digest: UInt64

    public init(parts: [String]) {
        self.canonical = parts.joined(separator: "\u{0}")
        self.digest = parts.isEmpty ? CacheKey.fnvOffsetBasis : CacheKey.fnv1a(self.canonical)
    }

    /// The default key: request-target and normalised host.
    public init(host: String, target: String) {
        var canonical = String()
        canonical.reserveCapacity(target.utf8.count + 1 + host.utf8.count)
        canonical.append(target)
        canonical.append("\u{0}")
        canonical.append(host)
        self.canonical = canonical
        self.digest = CacheKey.fnv1a(canonical)
    }

    /// The default key from raw bytes (UTF-8 request-target and normalised host), built in one
    /// allocation.
    public init(host: UnsafeRawBufferPointer, target: UnsafeRawBufferPointer) {
        let canonical = String(unsafeUninitializedCapacity: target.count + 1 + host.count) { out in
            var index = 0
            for byte in target {
                out[index] = byte
                index += 1
            }
            out[index] = 0
            index += 1
            for byte in host {
                out[index] = byte
                index += 1
            }
            return index
        }
        self.canonical = canonical
        self.digest = CacheKey.fnv1a(canonical)
    }

    /// A key with a chosen digest: lets tests make two keys whose digests collide.
    init(canonical: String, digest: UInt64) {
        self.canonical = canonical
        self.digest = digest
    }

    /// The hashed parts, in order. `parts[0]` is the target and `parts[1]` the host by default.
    public var parts: [String] {
        self.canonical.split(separator: "\u{0}", omittingEmptySubsequences: false).map(String.init)
    }

    public var description: String {
        String(self.canonical.map { $0 == "\u{0}" ? " " : $0 })
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(self.digest)
    }

    public static func == (lhs: CacheKey, rhs: CacheKey) -> Bool {
        lhs.digest == rhs.digest && lhs.canonical == rhs.canonical
    }

    static let fnvOffsetBasis: UInt64 = 0xcbf2_9ce4_8422_2325

    /// FNV-1a over the canonical bytes and a final NUL: the same bytes as every part followed by NUL.
    static func fnv1a(_ canonical: String) -> UInt64 {
        var hash = CacheKey.fnvOffsetBasis
        for byte in canonical.utf8 {
            hash ^= UInt64(byte)
            hash &*= 0x0000_0100_0000_01b3
        }
        hash &*= 0x0000_0100_0000_01b3  // the final NUL: hash ^= 0 changes nothing
        return hash
    }
}
