import Glibc
import NIOCore
import Synchronization
import NIOHTTP1

/// One cached response: an immutable value shared by reference between the tiers and every
/// delivery that reads it (Varnish's `struct objcore` + `struct object`, condensed).
///
/// Times are seconds since the Unix epoch as `Double` (Varnish's `vtim_real`). The object's
/// age at any instant is `now - origin`, where `origin = responseTime - correctedInitialAge`
/// (RFC 9111 §4.2.3), so the Age header stays right wherever the object is served from,
/// including after a restart. Freshness ends at `origin + ttl`; after that the object may be
/// served stale for `grace` seconds and kept for revalidation for `keep` seconds more.
///
/// Lifecycle: created by the fetch once the response is complete and storable → inserted
/// into the memory tier (and later the disk tier) → served by reference → dropped on purge,
/// eviction, replacement by a newer variant, or when `origin + ttl + grace + keep` passes.
// Sendable: every stored property is immutable after init but the atomic ban mark; the field
// bytes behind `wireBase` are written once in init, only read afterwards, and freed in deinit.
public final class StoredObject: @unchecked Sendable {
    // Stored properties are declared in an order that leaves almost no padding between them
    // (the 32-bit offsets in pairs, the flags, status and ban mark last): 120 bytes with the
    // object's header, so malloc's chunk is 128.

    /// The cache key. Its bytes live at the end of `wire` (a String of its own would be one
    /// more allocation per object); this builds a `CacheKey` from them. To compare, use
    /// `hasKey(_:)`, which builds nothing.
    public var key: CacheKey {
        CacheKey(canonical: String(decoding: self.keyBytes, as: UTF8.self), digest: self.keyDigest)
    }
    /// The key's digest (`CacheKey.digest`).
    public let keyDigest: UInt64

    /// Whether this object is stored under `key` (digest, then bytes).
    public func hasKey(_ key: CacheKey) -> Bool {
        guard key.digest == self.keyDigest else { return false }
        let bytes = self.keyBytes
        var canonical = key.canonical
        return canonical.withUTF8 { other in
            guard other.count == bytes.count else { return false }
            guard let lhs = other.baseAddress, let rhs = bytes.baseAddress else { return true }  // both empty
            return memcmp(lhs, rhs, bytes.count) == 0
        }
    }

    /// Whether both objects are stored under the same key.
    public func hasSameKey(as other: StoredObject) -> Bool {
        guard other.keyDigest == self.keyDigest else { return false }
        let lhs = self.keyBytes
        let rhs = other.keyBytes
        guard lhs.count == rhs.count else { return false }
        guard let left = lhs.baseAddress, let right = rhs.baseAddress else { return true }  // both empty
        return memcmp(left, right, lhs.count) == 0
    }

    /// The key's canonical bytes (`CacheKey.canonical`), in the object's own allocation.
    var keyBytes: UnsafeBufferPointer<UInt8> {
        UnsafeBufferPointer(rebasing: self.wire[Int(self.keyStart)...])
    }
    /// The normalised values of the request headers named by the response's `Vary`
    /// (empty when the response has no Vary). See `CachePolicy.VaryKey`.
    public var variant: String { self.extras?.variant ?? "" }
    /// The lowercased field names the stored response's `Vary` lists (empty when none).
    public var varyNames: [String] { self.extras?.varyNames ?? [] }
    /// What few objects have: a Vary (its variant and names) and a body larger than
    /// `inlineBodyLimit`. One reference for both: an object with neither pays 8 bytes, and the
    /// object is 120 bytes (a 128-byte malloc chunk; two references made it 128, a 144-byte chunk).
    private let extras: Extras?

    private final class Extras: Sendable {
        let variant: String
        let varyNames: [String]
        let large: LargeBody?

        init(variant: String, varyNames: [String], large: LargeBody?) {
            self.variant = variant
            self.varyNames = varyNames
            self.large = large
        }
    }
    public var status: Int { Int(self.statusCode) }
    /// The reason phrase, kept at the end of `wire` (a String of its own would cost 16 bytes
    /// of every object).
    public var reason: String {
        String(decoding: UnsafeBufferPointer(rebasing: self.wire[Int(self.rewrittenEnd)..<Int(self.keyStart)]), as: UTF8.self)
    }
    /// Whether the reason phrase is `OK` (compared without building a String).
    public var reasonIsOK: Bool {
        let wire = self.wire
        let start = Int(self.rewrittenEnd)
        return Int(self.keyStart) - start == 2 && wire[start] == UInt8(ascii: "O") && wire[start + 1] == UInt8(ascii: "K")
    }
    /// The stored header fields, packed (`PackedFields`), with the body between them, in one
    /// allocation of exactly this size (a `ByteBuffer` would round it up to a power of two):
    ///
    /// ```
    /// [plain lines size] [plain fields] [body, when at most `inlineBodyLimit` bytes] [rewritten fields] [reason phrase] [key]
    /// 0                                 plainEnd                                    bodyEnd            rewrittenEnd    keyStart
    /// ```
    ///
    /// "Rewritten" fields are those a delivery replaces (`Content-Length`, `Accept-Ranges`,
    /// `Via`, `Cache-Status`, `X-Cache-Status`); everything else is written to the client as it
    /// was stored, so a plain hit writes the plain fields out and copies the body. The plain
    /// fields' size as lines (a LEB128 length) leads, so a delivery sizes its buffer at once.
    /// (Raw memory rather than an array: no array header, and the allocation is exactly its size.)
    private let wireBase: UnsafeMutablePointer<UInt8>
    private let wireCount: UInt32
    var wire: UnsafeBufferPointer<UInt8> { UnsafeBufferPointer(start: self.wireBase, count: Int(self.wireCount)) }
    /// Where the packed plain fields end (and the inline body starts) in `wire`.
    let plainEnd: UInt32
    /// Where the inline body ends (and the rewritten fields start) in `wire`.
    var bodyEnd: Int { Int(self.inlineBodyEnd) }
    private let inlineBodyEnd: UInt32
    /// Where the rewritten fields end (and the reason phrase starts) in `wire`.
    private let rewrittenEnd: UInt32
    /// The body, when it is larger than `inlineBodyLimit`: shared by every delivery, never copied.
    var largeBody: ByteBuffer? { self.large?.bytes }
    /// A large body and, once the disk tier holds it, its file there (in `extras`: an object
    /// with an inline body pays nothing for it, not a `ByteBuffer`'s 24 bytes).
    private var large: LargeBody? { self.extras?.large }

    private final class LargeBody: Sendable {
        let bytes: ByteBuffer
        /// The disk tier's file holding exactly these bytes, if one is known, and the descriptor
        /// kept open on it. See `bodyFile`.
        let file = Mutex<(note: BodyFileNote?, open: OpenBodyFile?)>((nil, nil))

        init(_ bytes: ByteBuffer) {
            self.bytes = bytes
        }
    }

    /// A disk tier body file known to hold exactly this object's (large) body: noted by the disk
    /// tier when its row for this object commits, or when a disk hit read the file whole and its
    /// checksums matched. A delivery may send the body from that file (sendfile(2)) while the
    /// file is still that version and its pages are in the page cache; else it writes the bytes
    /// it holds.
    public var bodyFile: BodyFileNote? {
        self.large?.file.withLock { $0.note }
    }

    /// The note and the descriptor kept open on its file, if any.
    var bodyFileState: (note: BodyFileNote, open: OpenBodyFile?)? {
        self.large?.file.withLock { state in state.note.map { ($0, state.open) } }
    }

    /// Notes that `file` holds this object's body (ignored for an inline body).
    public func noteBodyFile(_ file: BodyFileNote) {
        self.large?.file.withLock { $0 = (file, nil) }
    }

    /// Forgets `file` (it is gone, or another version now) and closes what was kept open on it;
    /// a later note of another file stays.
    public func forgetBodyFile(_ file: BodyFileNote) {
        let dropped: OpenBodyFile? = self.large?.file.withLock { state in
            guard state.note?.id == file.id else { return nil }
            defer { state = (nil, nil) }
            return state.open
        }
        _ = dropped  // released outside the lock: its deinit closes the descriptor
    }

    /// Keeps `open` (on the file `note` names) with the object, unless one is kept already (that
    /// one is returned) or the note changed (`open` is returned, not kept).
    func keepOpen(_ open: OpenBodyFile, for note: BodyFileNote) -> OpenBodyFile {
        self.large?.file.withLock { state in
            guard state.note?.id == note.id else { return open }
            if let kept = state.open { return kept }
            state.open = open
            return open
        } ?? open
    }

    /// When the request that produced this response was sent (RFC 9111 `request_time`).
    public let requestTime: Double
    /// When the response was received (RFC 9111 `response_time`).
    public let responseTime: Double
    /// `responseTime - corrected_initial_age`: the instant at which the object's age was 0.
    public let origin: Double
    /// Freshness lifetime in seconds (may be 0: store for revalidation only).
    public let ttl: Double
    /// Seconds after expiry during which a stale copy may be served while refreshing.
    public let grace: Double
    /// Seconds after grace during which the object is kept only to revalidate it.
    public let keep: Double
    /// Stale copies must never be served without successful validation
    /// (`must-revalidate`, `proxy-revalidate`, `s-maxage`, or `no-cache`).
    public let mustRevalidate: Bool
    /// Whether a plain hit may write the stored fields as they are: a 200 with no `Via`,
    /// `Cache-Status` or `X-Cache-Status` of its own (a delivery would have to merge those).
    public let plainDeliverable: Bool
    /// Whether any `Content-Encoding` value mentions gzip (a client that does not accept it
    /// needs the stored body transformed).
    public let mentionsGzip: Bool
    /// Whether a soft purge made this copy stale (a stale answer from it says so).
    public let softPurged: Bool
    /// Where the reason phrase ends (and the key's canonical bytes start) in `wire`.
    private let keyStart: UInt32
    /// Kept small and last, with the flags, so the object packs into fewer bytes.
    private let statusCode: UInt16
    /// Whether `wire` came from `ObjectMemory` (else from malloc).
    let wireInSlot: Bool
    /// The newest ban this object has been tested against (Varnish's per-object ban pointer):
    /// bans up to it need no test again. The only mutable state, and atomic.
    private let banMark = Atomic<UInt32>(0)

    /// The sequence number of the newest ban this object is known not to meet (0: none tested).
    public var bansCheckedThrough: UInt32 { self.banMark.load(ordering: .relaxed) }

    /// Records that the object meets no ban up to `sequence`. Marks only move forward; two
    /// threads racing may leave the lower mark, which costs a repeated test, never a missed one.
    public func markBansChecked(through sequence: UInt32) {
        if sequence > self.banMark.load(ordering: .relaxed) {
            self.banMark.store(sequence, ordering: .relaxed)
        }
    }

    /// Bodies up to this size are kept in the same allocation as the header fields (and copied
    /// into each response, which costs less than a second buffer and write); larger ones are
    /// kept as their own shared buffer.
    public static let inlineBodyLimit = 16 * 1024

    public convenience init(
        key: CacheKey,
        variant: String,
        varyNames: [String],
        status: Int,
        reason: String,
        headers: HTTPHeaders,
        body: ByteBuffer,
        requestTime: Double,
        responseTime: Double,
        origin: Double,
        ttl: Double,
        grace: Double,
        keep: Double,
        mustRevalidate: Bool,
        hiddenFields: SurrogateKeyFields = .none,
        softPurged: Bool = false
    ) {
        self.init(
            key: key, variant: variant, varyNames: varyNames, status: status, reason: reason, fields: .list(headers),
            body: body, requestTime: requestTime, responseTime: responseTime, origin: origin, ttl: ttl, grace: grace,
            keep: keep, mustRevalidate: mustRevalidate, hiddenFields: hiddenFields, softPurged: softPurged)
    }

    /// Where the header fields come from: a list, or the disk index's encoding (`HeaderCodec`)
    /// read in place, already checked (`HeaderCodec.isValid`): a disk hit builds no header list.
    enum FieldSource {
        case list(HTTPHeaders)
        case encoded(UnsafeRawBufferPointer)

        /// Calls `body` with each field's name and value bytes, in order.
        func forEach(_ body: (UnsafeBufferPointer<UInt8>, UnsafeBufferPointer<UInt8>) -> Void) {
            switch self {
            case .list(let headers):
                for (name, value) in headers {
                    var name = name
                    var value = value
                    name.withUTF8 { name in value.withUTF8 { value in body(name, value) } }
                }
            case .encoded(let bytes):
                HeaderCodec.forEachField(bytes, body)
            }
        }
    }

    init(
        key: CacheKey,
        variant: String,
        varyNames: [String],
        status: Int,
        reason: String,
        fields: FieldSource,
        body: ByteBuffer,
        requestTime: Double,
        responseTime: Double,
        origin: Double,
        ttl: Double,
        grace: Double,
        keep: Double,
        mustRevalidate: Bool,
        hiddenFields: SurrogateKeyFields,
        softPurged: Bool,
        inlineBody: Bool = true
    ) {
        self.keyDigest = key.digest
        self.statusCode = UInt16(clamping: status)
        self.requestTime = requestTime
        self.responseTime = responseTime
        self.origin = origin
        self.ttl = ttl
        self.grace = grace
        self.keep = keep
        self.mustRevalidate = mustRevalidate
        self.softPurged = softPurged

        // Two passes over the fields: where each goes and how it packs, then the bytes.
        var plainBytes = 0
        var plainLines = 0
        var rewrittenBytes = 0
        var merged = false
        var gzip = false
        var plans: [(kind: FieldKind, packing: PackedFields.Plan)] = []
        plans.reserveCapacity(8)
        fields.forEach { name, value in
            var kind = Self.fieldKind(name, status: status)
            if kind == .plain, hiddenFields.hides(name) {
                // Kept (the index and VCL read it) but out of what a plain delivery copies.
                kind = .rewritten
            }
            let packing = PackedFields.plan(name: name, value: value, packDates: inlineBody)
            plans.append((kind, packing))
            switch kind {
            case .plain:
                plainBytes += packing.packedSize
                plainLines += packing.lineSize
                if name.count == 16, ASCIIFolding.equals(name, "content-encoding"), ASCIIFolding.contains(value, "gzip") {
                    gzip = true
                }
            case .rewritten:
                rewrittenBytes += packing.packedSize
            case .merged:
                rewrittenBytes += packing.packedSize
                merged = true
            case .dropped:
                break
            }
        }
        // The plain fields' size as lines leads, so a delivery sizes its buffer without a pass.
        plainBytes += PackedFields.lengthSize(plainLines)
        // `inlineBody` false: the body stays the buffer it came in (an object delivered once and
        // not kept, which need not pay for a copy).
        let inline = inlineBody && body.readableBytes <= Self.inlineBodyLimit
        let bodyBytes = inline ? body.readableBytes : 0
        let reasonBytes = reason.utf8.count
        let keyBytes = key.canonical.utf8.count
        let total = plainBytes + bodyBytes + rewrittenBytes + reasonBytes + keyBytes
        // An object that will be kept takes a slot of `ObjectMemory` (apart from request memory);
        // one delivered once and dropped (`inlineBody` false) takes malloc's, freed at once.
        let base = inlineBody ? ObjectMemory.shared.allocate(total) : .allocate(capacity: total)
        self.wireInSlot = inlineBody
        do {
            let buffer = UnsafeMutableBufferPointer(start: base, count: total)
            var at = 0
            PackedFields.writeLength(plainLines, into: buffer, at: &at)
            var index = 0
            fields.forEach { name, value in
                if plans[index].kind == .plain {
                    PackedFields.pack(name: name, value: value, plan: plans[index].packing, into: buffer, at: &at)
                }
                index += 1
            }
            if inline {
                body.withUnsafeReadableBytes { bytes in
                    if let base = bytes.baseAddress, bytes.count > 0 {
                        UnsafeMutableRawBufferPointer(buffer).baseAddress!.advanced(by: at)
                            .copyMemory(from: base, byteCount: bytes.count)
                    }
                    at += bytes.count
                }
            }
            index = 0
            fields.forEach { name, value in
                if plans[index].kind == .rewritten || plans[index].kind == .merged {
                    PackedFields.pack(name: name, value: value, plan: plans[index].packing, into: buffer, at: &at)
                }
                index += 1
            }
            for byte in reason.utf8 {
                buffer[at] = byte
                at += 1
            }
            for byte in key.canonical.utf8 {
                buffer[at] = byte
                at += 1
            }
            precondition(at == total, "StoredObject: field bytes miscounted")
        }
        self.wireBase = base
        self.wireCount = UInt32(total)
        self.plainEnd = UInt32(plainBytes)
        self.inlineBodyEnd = UInt32(plainBytes + bodyBytes)
        self.rewrittenEnd = UInt32(plainBytes + bodyBytes + rewrittenBytes)
        self.keyStart = UInt32(plainBytes + bodyBytes + rewrittenBytes + reasonBytes)
        let large = inline ? nil : LargeBody(body)
        self.extras =
            variant.isEmpty && varyNames.isEmpty && large == nil
            ? nil : Extras(variant: variant, varyNames: varyNames, large: large)
        self.plainDeliverable = status == 200 && !merged
        self.mentionsGzip = gzip
    }

    /// Where a stored field goes: among the fields a plain delivery copies, among those a delivery
    /// rewrites (kept after the body), or nowhere. `Content-Length` is not kept: a delivery states
    /// the length of what it sends (as Varnish does). Nor is a 200's `Accept-Ranges`: every
    /// delivery of a 200 says `bytes`. Via and the cache-status fields are rewritten by merging.
    private enum FieldKind {
        case plain, rewritten, merged, dropped
    }

    private static func fieldKind(_ name: UnsafeBufferPointer<UInt8>, status: Int) -> FieldKind {
        switch name.count {
        case 3:
            return ASCIIFolding.equals(name, "via") ? .merged : .plain
        case 12:
            return ASCIIFolding.equals(name, "cache-status") ? .merged : .plain
        case 13:
            guard ASCIIFolding.equals(name, "accept-ranges") else { return .plain }
            return status == 200 ? .dropped : .rewritten
        case 14:
            if ASCIIFolding.equals(name, "x-cache-status") { return .merged }
            return ASCIIFolding.equals(name, "content-length") ? .dropped : .plain
        default:
            return .plain
        }
    }

    /// The response header fields as stored: hop-by-hop fields removed, no `Age`, `Date` present.
    /// Parsed from the stored bytes on each call: the hit path does not need it.
    public var headers: HTTPHeaders {
        var headers = HTTPHeaders()
        self.forEachField { name, value in
            headers.add(name: String(decoding: name, as: UTF8.self), value: String(decoding: value, as: UTF8.self))
        }
        return headers
    }

    /// Calls `body` with each stored field's name and value bytes, in order (the plain fields,
    /// then the rewritten ones).
    private func forEachField(_ body: (UnsafeBufferPointer<UInt8>, UnsafeBufferPointer<UInt8>) -> Void) {
        let bytes = self.wire
        PackedFields.forEachField(bytes, from: self.plainStart, to: Int(self.plainEnd), body)
        PackedFields.forEachField(bytes, from: self.bodyEnd, to: Int(self.rewrittenEnd), body)
    }

    /// The plain fields' size as lines, and where the packed plain fields start in `wire`.
    private var plainLinesAndStart: (lines: Int, start: Int) {
        var at = 0
        let lines = PackedFields.readLength(self.wire, at: &at)
        return (lines, at)
    }

    private var plainStart: Int { self.plainLinesAndStart.start }

    /// The complete response body (a copy of the stored bytes when they are kept inline).
    public var body: ByteBuffer {
        if let largeBody = self.largeBody { return largeBody }
        var buffer = ByteBuffer()
        buffer.reserveCapacity(self.inlineBodyLength)
        self.writeWire(into: &buffer, from: Int(self.plainEnd), to: self.bodyEnd)
        return buffer
    }

    /// The body length in bytes.
    public var bodyLength: Int {
        self.largeBody?.readableBytes ?? self.inlineBodyLength
    }

    /// The length of the body kept in the object's own allocation (0 for a large body).
    public var inlineBodyLength: Int { self.bodyEnd - Int(self.plainEnd) }

    /// The bytes `writePlainFields` appends.
    public var plainFieldsLength: Int { self.plainLinesAndStart.lines }

    /// Appends the plain stored fields (each `name: value\r\n`) to `buffer`.
    public func writePlainFields(into buffer: inout ByteBuffer) {
        let (lines, start) = self.plainLinesAndStart
        guard lines > 0 else { return }
        let wire = self.wire
        let end = Int(self.plainEnd)
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: lines) { target in
            PackedFields.writeLines(wire, from: start, to: end, into: target)
        }
    }

    /// Appends the body to `buffer` when it is kept inline; returns the large body otherwise
    /// (to be written as a buffer of its own).
    public func writeInlineBody(into buffer: inout ByteBuffer) -> ByteBuffer? {
        if let largeBody = self.largeBody { return largeBody }
        self.writeWire(into: &buffer, from: Int(self.plainEnd), to: self.bodyEnd)
        return nil
    }

    /// The bytes `writePlainFields` and `writeInlineBody` append together (the body's only when
    /// it is kept inline).
    public var plainBytes: Int {
        self.plainFieldsLength + self.inlineBodyLength
    }

    private func writeWire(into buffer: inout ByteBuffer, from start: Int, to end: Int) {
        guard end > start else { return }
        buffer.writeBytes(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(self.wire)[start..<end]))
    }

    deinit {
        if self.wireInSlot {
            ObjectMemory.shared.deallocate(self.wireBase, count: Int(self.wireCount))
        } else {
            self.wireBase.deallocate()
        }
    }

    /// A copy with other header fields and body (e.g. a transformed coding); everything else kept.
    public func replacing(headers: HTTPHeaders, body: ByteBuffer, hiddenFields: SurrogateKeyFields = .none) -> StoredObject {
        StoredObject(
            key: self.key, variant: self.variant, varyNames: self.varyNames, status: self.status, reason: self.reason,
            headers: headers, body: body, requestTime: self.requestTime, responseTime: self.responseTime,
            origin: self.origin, ttl: self.ttl, grace: self.grace, keep: self.keep, mustRevalidate: self.mustRevalidate,
            hiddenFields: hiddenFields, softPurged: self.softPurged)
    }

    /// A soft purge's copy (Fastly's soft purge, Varnish xkey's `softpurge`): stale from `now`
    /// on, everything else kept, with at least `minimumGrace` seconds in which it may be served
    /// stale while one fetch refreshes it. Nil when the object is already stale at `now`.
    public func softPurged(at now: Double, minimumGrace: Double, hiddenFields: SurrogateKeyFields = .none) -> StoredObject? {
        let ttl = now - self.origin
        guard ttl < self.ttl else { return nil }
        let copy = StoredObject(
            key: self.key, variant: self.variant, varyNames: self.varyNames, status: self.status, reason: self.reason,
            headers: self.headers, body: self.body, requestTime: self.requestTime, responseTime: self.responseTime,
            origin: self.origin, ttl: max(0, ttl), grace: max(self.grace, minimumGrace), keep: self.keep,
            mustRevalidate: self.mustRevalidate, hiddenFields: hiddenFields, softPurged: true)
        copy.markBansChecked(through: self.bansCheckedThrough)
        return copy
    }

    /// The surrogate keys (cache tags) the object's fields named in `fields` list, read from the
    /// stored bytes (no header list is built). Empty when there are none.
    public func surrogateKeys(_ fields: SurrogateKeyFields) -> [String] {
        guard !fields.names.isEmpty else { return [] }
        var keys: [String] = []
        var values: [String] = []
        self.forEachField { name, value in
            if fields.reads(name) { values.append(String(decoding: value, as: UTF8.self)) }
        }
        for value in values {
            SurrogateKeyFields.split(value, into: &keys)
        }
        return keys
    }

    /// The age in seconds at `now` (never negative).
    @inlinable
    public func age(at now: Double) -> Double {
        max(0, now - self.origin)
    }

    /// Seconds of freshness left at `now`; negative once stale.
    @inlinable
    public func remainingTTL(at now: Double) -> Double {
        self.origin + self.ttl - now
    }

    /// The instant after which the object is of no use at all and may be dropped.
    public var expiresEntirely: Double {
        self.origin + self.ttl + self.grace + self.keep
    }

    /// The bytes this object costs in memory: header fields, body and a fixed bookkeeping share.
    public var cost: Int {
        Int(self.rewrittenEnd) + (self.largeBody?.readableBytes ?? 0) + self.variant.utf8.count + StoredObject.overhead
    }

    /// Fixed per-object bookkeeping charged against the memory budget (object, LRU node, map slot).
    public static let overhead = 256
}
