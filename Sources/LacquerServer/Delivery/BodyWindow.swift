import CachePolicy
import NIOCore

/// The bytes a `206` sends of a body that streams by in parts (a fill from the origin, or a
/// waiter reading a fill): one range, or several ascending ones as `multipart/byteranges`
/// (RFC 9110 §14.6), chosen by `RangeRequest.evaluate`. Each part of the whole body is turned
/// into what the client gets of it; the window knows when the client has had everything, so its
/// response can end while the fill goes on for the cache.
struct BodyWindow {
    let ranges: [ClosedRange<Int>]
    /// The multipart framing, nil for a single range.
    let multipart: (boundary: String, contentType: String?)?
    /// The full body's length (for the part headers' Content-Range).
    let length: Int
    /// Where in the whole body the bytes given to the window begin.
    let start: Int
    /// How many bytes of the whole body have gone by.
    private(set) var offset: Int
    /// The range the next bytes may fall in.
    private var current = 0
    private var closed = false

    /// A window on `ranges` (ascending, not overlapping); `startingAt` skips the bytes before it
    /// (a reader that can start anywhere begins at the first range).
    init(ranges: [ClosedRange<Int>], multipart: (boundary: String, contentType: String?)?, length: Int, startingAt: Int = 0) {
        self.ranges = ranges
        self.multipart = multipart
        self.length = length
        self.start = startingAt
        self.offset = startingAt
    }

    /// What the client gets, for a body that is at hand as a whole from `start` on (a file):
    /// the framing bytes (multipart part headers and closing) and, between them, the ranges of
    /// the body to send, counted from `start`. The same bytes as `take` makes of the whole body.
    enum Segment: Equatable {
        case bytes(String)
        case body(Range<Int>)
    }

    func segments() -> [Segment] {
        var out: [Segment] = []
        for range in self.ranges {
            if let multipart = self.multipart {
                out.append(.bytes(Multipart.partHeader(boundary: multipart.boundary, contentType: multipart.contentType, range: range, length: self.length)))
            }
            out.append(.body((range.lowerBound - self.start)..<(range.upperBound + 1 - self.start)))
        }
        if let multipart = self.multipart {
            out.append(.bytes(Multipart.closing(boundary: multipart.boundary)))
        }
        return out
    }

    /// Moves to the first byte the client gets (for a reader that can start anywhere); returns
    /// that offset.
    mutating func skipToFirstRange() -> Int {
        self.skipToNextRange()
    }

    /// Moves past the bytes before the next range the client gets (for a reader that can start
    /// anywhere: a disk body, a sliced object's next slice); returns that offset.
    mutating func skipToNextRange() -> Int {
        while self.current < self.ranges.count, self.ranges[self.current].upperBound < self.offset {
            self.current += 1
        }
        if self.current < self.ranges.count {
            self.offset = max(self.offset, self.ranges[self.current].lowerBound)
        }
        return self.offset
    }

    /// Everything the client gets has been produced.
    var isComplete: Bool { self.closed }

    /// What the client gets of the next `part` of the body (nil when nothing).
    mutating func take(_ part: ByteBuffer) -> ByteBuffer? {
        guard !self.closed else { return nil }
        let start = self.offset
        let end = start + part.readableBytes
        self.offset = end
        var out: ByteBuffer?
        while self.current < self.ranges.count {
            let range = self.ranges[self.current]
            let low = max(range.lowerBound, start)
            let high = min(range.upperBound + 1, end)
            guard low < high else {
                if range.upperBound < start {
                    self.current += 1  // a range this part is past (only when the caller skipped it)
                    continue
                }
                break  // the range starts after this part
            }
            guard let slice = part.getSlice(at: part.readerIndex + (low - start), length: high - low) else { break }
            if let multipart = self.multipart {
                var joined = out ?? ByteBuffer()
                if low == range.lowerBound {
                    joined.writeString(
                        Multipart.partHeader(boundary: multipart.boundary, contentType: multipart.contentType, range: range, length: self.length))
                }
                joined.writeImmutableBuffer(slice)
                out = joined
            } else {
                out = slice
            }
            guard high == range.upperBound + 1 else { break }  // the part ends inside the range
            self.current += 1
        }
        if self.current == self.ranges.count {
            self.closed = true
            if let multipart = self.multipart {
                var joined = out ?? ByteBuffer()
                joined.writeString(Multipart.closing(boundary: multipart.boundary))
                out = joined
            }
        }
        return out
    }

    /// The Content-Length of what the window produces.
    var contentLength: Int {
        guard let multipart = self.multipart else { return self.ranges.first?.count ?? 0 }
        return Multipart.totalLength(boundary: multipart.boundary, contentType: multipart.contentType, ranges: self.ranges, length: self.length)
    }
}
