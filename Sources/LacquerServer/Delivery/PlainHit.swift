import CachePolicy
import CacheStore
import NIOCore

/// The bytes of a plain delivery of a stored 200 (see `RequestFlow.deliverPlain` and
/// `HitFastLane`): the status line, the stored fields as they are, then this delivery's
/// Accept-Ranges, Content-Length, Age, Via and cache-status fields, and the inline body.
package enum PlainHit {
    /// Encodes the response into one buffer; returns it and, when the body is not kept inline,
    /// the body buffer to write after it (shared, never copied).
    /// - Parameters:
    ///   - viaLine: `Via: 1.1 <name>\r\n` (`ServerContext.viaLine`).
    ///   - cacheName: this cache's Cache-Status member name (`ServerContext.cacheStatusName`).
    package static func encode(
        _ object: StoredObject, withBody: Bool, age: Double, xStatus: XCacheStatus, cacheStatus: CacheStatusValue,
        close: Bool, viaLine: String, cacheName: String, allocator: ByteBufferAllocator
    ) -> (head: ByteBuffer, largeBody: ByteBuffer?) {
        var buffer = allocator.buffer(capacity: 256 + (withBody ? object.plainBytes : object.plainFieldsEnd))
        buffer.writeStaticString("HTTP/1.1 200 ")
        if object.reasonIsOK {
            buffer.writeStaticString("OK\r\n")
        } else {
            ResponseEncoder.writeText(object.reason, into: &buffer)
            buffer.writeStaticString("\r\n")
        }
        object.writePlainFields(into: &buffer)
        buffer.writeStaticString("Accept-Ranges: bytes\r\nContent-Length: ")
        Self.writeDecimal(object.bodyLength, into: &buffer)
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
        guard withBody, let largeBody = object.writeInlineBody(into: &buffer) else {
            return (buffer, nil)
        }
        return (buffer, largeBody.readableBytes > 0 ? largeBody : nil)
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
