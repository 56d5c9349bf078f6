/// Occupancy and counters of a `MemoryTier`, summed over its shards (Varnish's `SMA.*` and
/// `n_lru_nuked` / `n_expired` counters). The counters only grow.
public struct MemoryTierStats: Sendable, Equatable {
    /// Objects stored now.
    public var objects: Int
    /// The sum of the stored objects' costs now; never above `capacityBytes`.
    public var bytes: Int
    /// The tier's byte budget.
    public var capacityBytes: Int
    /// Objects stored by `insert` (replacements included).
    public var inserts: Int
    /// Objects dropped to make room: LRU evictions and 33rd-variant evictions (not
    /// replacements, expiry or explicit removals).
    public var evictions: Int
    /// Inserts refused because the object's cost was above the admission limit.
    public var rejectedTooLarge: Int
    /// `variants(for:)` calls that found at least one variant.
    public var hits: Int
    /// `variants(for:)` calls that found none.
    public var misses: Int
    /// Objects dropped by `removeExpired(now:)`.
    public var expired: Int

    public init(
        objects: Int = 0,
        bytes: Int = 0,
        capacityBytes: Int = 0,
        inserts: Int = 0,
        evictions: Int = 0,
        rejectedTooLarge: Int = 0,
        hits: Int = 0,
        misses: Int = 0,
        expired: Int = 0
    ) {
        self.objects = objects
        self.bytes = bytes
        self.capacityBytes = capacityBytes
        self.inserts = inserts
        self.evictions = evictions
        self.rejectedTooLarge = rejectedTooLarge
        self.hits = hits
        self.misses = misses
        self.expired = expired
    }
}
