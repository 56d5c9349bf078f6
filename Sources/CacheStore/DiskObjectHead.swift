import NIOCore
import NIOHTTP1

/// The metadata of one object in the disk tier: everything a `StoredObject` has except its body,
/// read from the index alone (a lookup never touches a body file).
///
/// Pass it to `DiskTier.openBody(_:)` to stream the body or `DiskTier.load(_:)` to read it whole;
/// both verify the length and each block's CRC32C against `blockChecksums` before returning bytes.
public struct DiskObjectHead: Sendable {
    public let key: CacheKey
    public let variant: String
    public let varyNames: [String]
    public let status: Int
    public let reason: String
    /// The stored header fields in the index's encoding (`HeaderCodec`), checked when the row
    /// was read: a disk hit builds its object from these bytes, and only a request that reads
    /// the fields as a list decodes them.
    let encodedHeaders: [UInt8]
    /// The stored header fields.
    public var headers: HTTPHeaders {
        // Checked when the row was read, so this never fails; an empty list if it ever did.
        HeaderCodec.decode(self.encodedHeaders) ?? HTTPHeaders()
    }
    public let requestTime: Double
    public let responseTime: Double
    public let origin: Double
    public private(set) var ttl: Double
    public private(set) var grace: Double
    public let keep: Double
    public let mustRevalidate: Bool
    /// The body length in bytes, as the index recorded it when the body was written.
    public let bodyLength: Int64
    /// The body file's id: it names `bodies/ab/cd/<id>` and is the index row's primary key.
    /// Ids are never reused while a tier is open, so a head can never reach another object's body.
    public let fileID: Int64
    /// The CRC32C of each 64 KiB block of the body (the last block may be shorter).
    public let blockChecksums: [UInt32]
    /// When the object was last used (seconds since the epoch), as the index knows it.
    public let lastAccess: Double
    /// The bytes this object is charged against the disk tier's capacity.
    public let size: Int64
    /// Whether a soft purge made it stale.
    public private(set) var softPurged: Bool
    /// Whether the body is kept in the index (its `bodies` table), not in a file (`inlineBodyLimit`).
    public let inlineBody: Bool
    /// A body kept in the index, read (and verified) by the lookup that found the head: a disk
    /// hit on a small object needs no second read.
    public internal(set) var prefetchedBody: ByteBuffer?

    /// The head as a soft purge at `time` leaves it: stale from then on, servable stale for at
    /// least `minimumGrace` seconds (`StoredObject.softPurged`). Nil when already stale then.
    public func softPurged(at time: Double, minimumGrace: Double) -> DiskObjectHead? {
        let ttl = time - self.origin
        guard ttl < self.ttl else { return nil }
        var copy = self
        copy.ttl = max(0, ttl)
        copy.grace = max(self.grace, minimumGrace)
        copy.softPurged = true
        return copy
    }

    /// The instant after which the object is of no use at all and may be dropped.
    public var expiresEntirely: Double {
        self.origin + self.ttl + self.grace + self.keep
    }

    /// The object with `body` attached (the caller has read and verified it), built from the
    /// encoded fields as they are (no header list in between).
    ///
    /// `kept`: whether the memory tier may keep the object (`MemoryTier.admits`). One it will not
    /// keep is delivered once and dropped, so its body stays the buffer it was read into instead
    /// of being copied into the object's own allocation.
    public func storedObject(body: ByteBuffer, hiddenFields: SurrogateKeyFields = .none, kept: Bool = true) -> StoredObject {
        self.encodedHeaders.withUnsafeBytes { fields in
            StoredObject(
                key: self.key,
                variant: self.variant,
                varyNames: self.varyNames,
                status: self.status,
                reason: self.reason,
                fields: .encoded(fields),
                body: body,
                requestTime: self.requestTime,
                responseTime: self.responseTime,
                origin: self.origin,
                ttl: self.ttl,
                grace: self.grace,
                keep: self.keep,
                mustRevalidate: self.mustRevalidate,
                hiddenFields: hiddenFields,
                softPurged: self.softPurged,
                inlineBody: kept
            )
        }
    }

    /// The columns `init(row:)` reads, in order.
    static let columns = """
        id, key, variant, vary_names, status, reason, headers, body_length, checksums, request_time, \
        response_time, origin, ttl, grace, keep, must_revalidate, last_access, size, soft_purged, inline_body
        """

    /// Decodes an index row selected with `columns`; nil if the row is malformed (it is then dropped).
    /// `key`: the key the row was selected by (`key = ?`), which its key column then holds; it is
    /// taken as it is instead of being decoded again.
    init?(row: SQLiteStatement, key: CacheKey? = nil) {
        guard let encodedHeaders = row.withBlob(6, { HeaderCodec.isValid($0) ? Array($0) : nil }) else { return nil }
        let bodyLength = row.int64(7)
        let checksums: [UInt32]? = row.withBlob(8) { raw in
            guard bodyLength >= 0, raw.count == BodyFile.blockCount(length: bodyLength) * 4 else { return nil }
            var checksums: [UInt32] = []
            checksums.reserveCapacity(raw.count / 4)
            for index in stride(from: 0, to: raw.count, by: 4) {
                checksums.append(UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: index, as: UInt32.self)))
            }
            return checksums
        }
        guard let checksums else { return nil }
        let varyNames = row.text(3)
        self.fileID = row.int64(0)
        self.key =
            key
            ?? row.withBlob(1) { keyBytes in
                CacheKey(
                    parts: keyBytes.isEmpty
                        ? [] : keyBytes.split(separator: 0, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) })
            }
        self.variant = row.text(2)
        self.varyNames = varyNames.isEmpty ? [] : varyNames.split(separator: ",").map(String.init)
        self.status = Int(row.int64(4))
        self.reason = row.text(5)
        self.encodedHeaders = encodedHeaders
        self.bodyLength = bodyLength
        self.blockChecksums = checksums
        self.requestTime = row.double(9)
        self.responseTime = row.double(10)
        self.origin = row.double(11)
        self.ttl = row.double(12)
        self.grace = row.double(13)
        self.keep = row.double(14)
        self.mustRevalidate = row.int64(15) != 0
        self.lastAccess = row.double(16)
        self.size = row.int64(17)
        self.softPurged = row.int64(18) != 0
        self.inlineBody = row.int64(19) != 0
        self.prefetchedBody = nil
    }
}

/// The on-disk form of response headers: a little-endian UInt32 field count, then for each
/// field a UInt32 length + name bytes and a UInt32 length + value bytes. Length-prefixed, so
/// any byte may appear in a value; decoding re-checks the response limits of HARDENING §3.
enum HeaderCodec {
    static let maxFields = 100
    static let maxFieldBytes = 8 * 1024
    static let maxTotalBytes = 32 * 1024

    static func encode(_ headers: HTTPHeaders) -> [UInt8] {
        var bytes: [UInt8] = []
        self.append(UInt32(headers.count), to: &bytes)
        for (name, value) in headers {
            self.append(UInt32(name.utf8.count), to: &bytes)
            bytes.append(contentsOf: name.utf8)
            self.append(UInt32(value.utf8.count), to: &bytes)
            bytes.append(contentsOf: value.utf8)
        }
        return bytes
    }

    /// True if `headers` fit the limits a load from disk enforces (so a stored object can be read back).
    static func withinLimits(_ headers: HTTPHeaders) -> Bool {
        guard headers.count <= self.maxFields else { return false }
        var total = 0
        for (name, value) in headers {
            let field = name.utf8.count + value.utf8.count
            guard field <= self.maxFieldBytes else { return false }
            total += field
        }
        return total <= self.maxTotalBytes
    }

    static func decode(_ bytes: [UInt8]) -> HTTPHeaders? {
        bytes.withUnsafeBytes { self.decode($0) }
    }

    static func decode(_ bytes: UnsafeRawBufferPointer) -> HTTPHeaders? {
        var fields: [(String, String)] = []
        let valid = self.forEachField(bytes) { name, value in
            fields.append((String(decoding: name, as: UTF8.self), String(decoding: value, as: UTF8.self)))
        }
        return valid ? HTTPHeaders(fields) : nil
    }

    /// Whether `bytes` decode: `decode` would not return nil.
    static func isValid(_ bytes: UnsafeRawBufferPointer) -> Bool {
        self.forEachField(bytes) { _, _ in }
    }

    /// Calls `body` with each field's name and value bytes, in order, as long as the encoding
    /// holds; returns whether all of `bytes` was a valid encoding within the limits. The one
    /// reader of the format: `decode`, `isValid` and `StoredObject`'s `.encoded` fields use it.
    @discardableResult
    static func forEachField(
        _ bytes: UnsafeRawBufferPointer, _ body: (UnsafeBufferPointer<UInt8>, UnsafeBufferPointer<UInt8>) -> Void
    ) -> Bool {
        var offset = 0
        func readUInt32() -> Int? {
            guard bytes.count - offset >= 4 else { return nil }
            let value = bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self)
            offset += 4
            return Int(UInt32(littleEndian: value))
        }
        func readBytes() -> UnsafeBufferPointer<UInt8>? {
            guard let length = readUInt32(), length <= self.maxFieldBytes, bytes.count - offset >= length else {
                return nil
            }
            defer { offset += length }
            return UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + length)]).assumingMemoryBound(to: UInt8.self)
        }
        guard let count = readUInt32(), count <= self.maxFields else { return false }
        var total = 0
        for _ in 0..<count {
            guard let name = readBytes(), let value = readBytes() else { return false }
            total += name.count + value.count
            guard name.count + value.count <= self.maxFieldBytes, total <= self.maxTotalBytes else {
                return false
            }
            body(name, value)
        }
        return offset == bytes.count
    }

    private static func append(_ value: UInt32, to bytes: inout [UInt8]) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }
}
