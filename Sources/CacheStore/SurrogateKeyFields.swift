/// Which response fields list an object's surrogate keys (cache tags: Fastly's `Surrogate-Key`,
/// Cloudflare's `Cache-Tag`, Varnish xkey's `xkey`), and whether clients see them.
///
/// A field's value is a list of keys separated by spaces or commas. Keys are indexed with the
/// object in both tiers, so a purge by key costs in proportion to the objects tagged with it.
public struct SurrogateKeyFields: Sendable, Equatable {
    /// Lowercased field names.
    public let names: [String]
    /// Whether the fields are kept out of client responses (Fastly strips `Surrogate-Key`).
    public let hidden: Bool

    /// The most keys read from one object; the most bytes in one key (longer ones are ignored).
    public static let maxKeys = 256
    public static let maxKeyBytes = 256

    public static let none = SurrogateKeyFields(names: [], hidden: false)
    /// The default: `xkey`, `Surrogate-Key` and `Cache-Tag`, hidden from clients.
    public static let standard = SurrogateKeyFields(names: ["xkey", "surrogate-key", "cache-tag"], hidden: true)

    public init(names: [String], hidden: Bool) {
        var seen: [String] = []
        for name in names.map({ $0.lowercased() }) where !seen.contains(name) { seen.append(name) }
        self.names = seen
        self.hidden = hidden
    }

    /// Whether a field of this name lists keys.
    public func reads(_ name: String) -> Bool {
        guard !self.names.isEmpty else { return false }
        return self.names.contains { $0.utf8.count == name.utf8.count && $0 == name.lowercased() }
    }

    func reads(_ name: UnsafeBufferPointer<UInt8>) -> Bool {
        self.names.contains { ASCIIFolding.equals(name, $0.utf8) }
    }

    /// Whether a stored field of this name is kept out of plain deliveries.
    func hides(_ name: UnsafeBufferPointer<UInt8>) -> Bool {
        self.hidden && self.reads(name)
    }

    /// Appends the keys in `value` (space- or comma-separated) to `keys`, skipping repeats,
    /// keys longer than `maxKeyBytes` and any beyond `maxKeys`.
    public static func split(_ value: String, into keys: inout [String]) {
        for part in value.split(whereSeparator: { $0 == " " || $0 == "," || $0 == "\t" }) {
            guard keys.count < self.maxKeys else { return }
            guard part.utf8.count <= self.maxKeyBytes else { continue }
            let key = String(part)
            if !keys.contains(key) { keys.append(key) }
        }
    }

    /// The keys listed in `value`.
    public static func split(_ value: String) -> [String] {
        var keys: [String] = []
        self.split(value, into: &keys)
        return keys
    }
}
