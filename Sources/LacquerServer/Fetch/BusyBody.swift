import NIOCore

/// The body of a busy object as it arrives: an append-only sequence of buffers addressed by byte
/// offset (Varnish's busy object over its storage segments).
///
/// A reader keeps only a byte offset. `slices(from:)` hands it the bytes from that offset to the
/// current end as slices of the stored buffers (no copy), so a reader that joins at any moment
/// reads every byte from 0 to the end exactly once, whatever sizes the parts arrived in and
/// however its reads interleave with appends.
struct BusyBody {
    private var parts: [ByteBuffer] = []
    /// `ends[i]` is the offset just past `parts[i]`.
    private var ends: [Int] = []

    /// Bytes appended so far.
    var count: Int { self.ends.last ?? 0 }

    /// Appends the readable bytes of `buffer` (an empty buffer changes nothing).
    mutating func append(_ buffer: ByteBuffer) {
        let length = buffer.readableBytes
        guard length > 0 else { return }
        self.parts.append(buffer)
        self.ends.append(self.count + length)
    }

    /// Drops every byte (a failed fill keeps nothing for readers).
    mutating func removeAll() {
        self.parts = []
        self.ends = []
    }

    /// The bytes from `offset` to the current end, in order, as slices of the stored buffers.
    /// Empty when `offset` is at or past the end.
    func slices(from offset: Int) -> [ByteBuffer] {
        guard offset >= 0, offset < self.count else { return [] }
        var index = self.partIndex(containing: offset)
        var result: [ByteBuffer] = []
        result.reserveCapacity(self.parts.count - index)
        let start = index == 0 ? 0 : self.ends[index - 1]
        let first = self.parts[index]
        let skip = offset - start
        if skip == 0 {
            result.append(first)
        } else if let rest = first.getSlice(at: first.readerIndex + skip, length: first.readableBytes - skip) {
            result.append(rest)
        }
        index += 1
        while index < self.parts.count {
            result.append(self.parts[index])
            index += 1
        }
        return result
    }

    /// The index of the part that holds byte `offset` (0 ≤ offset < count): binary search on `ends`.
    private func partIndex(containing offset: Int) -> Int {
        var low = 0
        var high = self.ends.count - 1
        while low < high {
            let middle = (low + high) / 2
            if self.ends[middle] <= offset {
                low = middle + 1
            } else {
                high = middle
            }
        }
        return low
    }
}
