/// ASCII case folding for header field names, which are case-insensitive ASCII tokens
/// (RFC 9110 §5.1): compared byte by byte, with no String built.
enum ASCIIFolding {
    /// `byte` with an ASCII capital letter lowered.
    @inline(__always)
    static func lower(_ byte: UInt8) -> UInt8 {
        byte >= 0x41 && byte <= 0x5A ? byte | 0x20 : byte
    }

    /// Whether `bytes`, ASCII letters lowered, are `lowercase`.
    static func equals<Lowercase: Collection<UInt8>>(_ bytes: UnsafeBufferPointer<UInt8>, _ lowercase: Lowercase) -> Bool {
        guard bytes.count == lowercase.count else { return false }
        return zip(bytes, lowercase).allSatisfy { Self.lower($0) == $1 }
    }

    /// Whether `bytes`, ASCII letters lowered, are `lowercase`.
    static func equals(_ bytes: UnsafeBufferPointer<UInt8>, _ lowercase: StaticString) -> Bool {
        Self.equals(bytes, UnsafeBufferPointer(start: lowercase.utf8Start, count: lowercase.utf8CodeUnitCount))
    }

    /// Whether `bytes`, ASCII letters lowered, contain `lowercase`.
    static func contains(_ bytes: UnsafeBufferPointer<UInt8>, _ lowercase: StaticString) -> Bool {
        let count = lowercase.utf8CodeUnitCount
        guard count > 0 else { return true }
        guard bytes.count >= count else { return false }
        let expected = UnsafeBufferPointer(start: lowercase.utf8Start, count: count)
        return (0...(bytes.count - count)).contains { start in
            Self.equals(UnsafeBufferPointer(rebasing: bytes[start..<(start + count)]), expected)
        }
    }
}
