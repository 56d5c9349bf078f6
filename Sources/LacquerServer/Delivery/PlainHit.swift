import CachePolicy
import CacheStore
import NIOCore
import NIOHPACK

/// The bytes of a plain delivery of a stored 200 (see `RequestFlow.deliverPlain` and
/// `HitFastLane`): the status line, the stored fields as they are, then this delivery's
/// Accept-Ranges, Content-Length, Age, Via and cache-status fields, and the inline body.
package enum PlainHit {
    /// Encodes the response into one buffer; returns it and, when the body is not kept inline,
    /// the body buffer to write after it (shared, never copied).
    /// - Parameters:
    ///   - viaLine: `Via: 1.1 <name>\r\n` (`ServerContext.viaLine`).
    ///   - cacheName: this cache's Cache-Status member name (`ServerContext.cacheStatusName`).
    ///   - fileLength: the body's length when it is sent from a file after the head (`object`
    ///     then holds no body bytes).
    package static func encode(
        _ object: StoredObject, withBody: Bool, age: Double, xStatus: XCacheStatus, cacheStatus: CacheStatusValue,
        close: Bool, viaLine: String, cacheName: String, allocator: ByteBufferAllocator, fileLength: Int? = nil
    ) -> (head: ByteBuffer, largeBody: ByteBuffer?) {
        var buffer = allocator.buffer(capacity: 256 + (withBody ? object.plainBytes : object.plainFieldsLength))
        buffer.writeStaticString("HTTP/1.1 200 ")
        if object.reasonIsOK {
            buffer.writeStaticString("OK\r\n")
        } else {
            ResponseEncoder.writeText(object.reason, into: &buffer)
            buffer.writeStaticString("\r\n")
        }
        object.writePlainFields(into: &buffer)
        buffer.writeStaticString("Accept-Ranges: bytes\r\nContent-Length: ")
        Self.writeDecimal(fileLength ?? object.bodyLength, into: &buffer)
        buffer.writeStaticString("\r\nAge: ")
        Self.writeDecimal(Int(age), into: &buffer)
        buffer.writeStaticString("\r\n")
        buffer.writeString(viaLine)
        buffer.writeStaticString("X-Cache-Status: ")
        buffer.writeString(xStatus.rawValue)
        buffer.writeStaticString("\r\nCache-Status: ")
        buffer.writeString(cacheStatus.serialized(member: cacheName))
        if close {
            buffer.writeStaticString("\r\nConnection: close")
        }
        buffer.writeStaticString("\r\n\r\n")
        guard withBody, fileLength == nil, let largeBody = object.writeInlineBody(into: &buffer) else {
            return (buffer, nil)
        }
        return (buffer, largeBody.readableBytes > 0 ? largeBody : nil)
    }

    /// The same delivery for HTTP/2 (`HTTP2HitLane`): `:status`, the stored fields, then the
    /// fields `encode` adds, in its order (a test holds the two to the same list); names
    /// lowercased, connection-specific fields left out (RFC 9113 §8.2.2). The stored fields are
    /// read into name-value pairs once per object (`cache`).
    package static func http2Fields(
        _ object: StoredObject, age: Double, xStatus: XCacheStatus, cacheStatus: CacheStatusValue, viaValue: String,
        cacheName: String, cache: HTTP2FieldCache?
    ) -> HPACKHeaders {
        var fields = HPACKHeaders()
        fields.reserveCapacity(16)
        fields.add(name: ":status", value: String(object.status))
        for (name, value) in cache?.storedFields(of: object) ?? HTTP2FieldCache.read(object) {
            fields.add(name: name, value: value)
        }
        fields.add(name: "accept-ranges", value: "bytes")
        fields.add(name: "content-length", value: String(object.bodyLength))
        fields.add(name: "age", value: String(Int(max(0, age))))
        fields.add(name: "via", value: viaValue)
        fields.add(name: "x-cache-status", value: xStatus.rawValue)
        fields.add(name: "cache-status", value: cacheStatus.serialized(member: cacheName))
        return fields
    }

    /// Stored objects' plain fields as HTTP/2 name-value pairs, per event loop; an entry holds
    /// its object weakly, so a dropped object's entry is never used again (and the table is
    /// emptied when it fills).
    package final class HTTP2FieldCache {
        private final class Entry {
            weak var object: StoredObject?
            let fields: [(String, String)]
            init(object: StoredObject, fields: [(String, String)]) {
                self.object = object
                self.fields = fields
            }
        }
        private var entries: [ObjectIdentifier: Entry] = [:]
        static let capacity = 4096

        package init() {}

        func storedFields(of object: StoredObject) -> [(String, String)] {
            let id = ObjectIdentifier(object)
            if let entry = self.entries[id], entry.object === object { return entry.fields }
            let fields = Self.read(object)
            if self.entries.count >= Self.capacity { self.entries.removeAll(keepingCapacity: true) }
            self.entries[id] = Entry(object: object, fields: fields)
            return fields
        }

        /// Fields of an HTTP/1.1 message that HTTP/2 forbids (RFC 9113 §8.2.2).
        private static let connectionSpecific: Set<String> = ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"]

        /// The object's plain fields (`StoredObject.writePlainFields`: `Name: value` lines).
        static func read(_ object: StoredObject) -> [(String, String)] {
            var buffer = ByteBuffer()
            object.writePlainFields(into: &buffer)
            var fields: [(String, String)] = []
            let text = buffer.readString(length: buffer.readableBytes) ?? ""
            for line in text.split(separator: "\r\n", omittingEmptySubsequences: true) {
                guard let colon = line.firstIndex(of: ":") else { continue }
                let name = line[..<colon].lowercased()
                guard !Self.connectionSpecific.contains(name) else { continue }
                let value = line[line.index(after: colon)...].drop { $0 == " " || $0 == "\t" }
                fields.append((name, String(value)))
            }
            return fields
        }
    }

    /// Writes a non-negative integer in decimal without building a String.
    static func writeDecimal(_ value: Int, into buffer: inout ByteBuffer) {
        var value = max(0, value)
        guard value >= 10 else {
            buffer.writeInteger(UInt8(0x30 + value))
            return
        }
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // room for 24 digits
        withUnsafeMutableBytes(of: &digits) { raw in
            var index = raw.count
            while value > 0 {
                index -= 1
                raw[index] = UInt8(0x30 + value % 10)
                value /= 10
            }
            buffer.writeBytes(UnsafeRawBufferPointer(rebasing: raw[index...]))
        }
    }
}
