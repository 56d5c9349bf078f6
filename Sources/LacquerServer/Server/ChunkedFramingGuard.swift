#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import NIOCore
import NIOHTTP1

/// Follows the framing of an HTTP/1 byte stream (request or response messages, one after
/// another) just far enough to read every chunk-size line, for the two things NIO's parser lets
/// through: a chunk size no 64-bit signed integer holds (RFC 9112 §7.1: "anticipate potentially
/// large hexadecimal numerals"; the parser takes `FFFFFFFFFFFFFFED` and then waits for 2^64
/// bytes that never come) and a chunk extension longer than the limit (HARDENING.md §2).
///
/// The parser stays the judge of syntax: anything this reading does not follow (a line it does
/// not expect, a connection switched to close-delimited) makes it step aside for the rest of the
/// connection, never reject. Pure: bytes in, a verdict out.
struct ChunkedFramingScanner {
    enum Problem: Error, Equatable {
        case chunkSizeTooLarge
        case chunkExtensionTooLong
    }

    enum Side { case request, response }

    private enum State {
        case startLine
        case fieldLineStart
        case fieldName
        case fieldValue
        case chunkSize
        case chunkExtension
        case chunkLineEnd
        case chunkData
        case chunkDataEnd
        case trailerLineStart
        case trailerLine
        case fixedBody
        /// Close-delimited, or a stream it does not follow: nothing more to read.
        case off
    }

    private enum Field { case other, transferEncoding, contentLength }

    let side: Side
    let maxChunkExtensionBytes: Int
    /// Whether the response being read answers a HEAD (it has no body, whatever it says).
    var respondingToHead = false
    private var state = State.startLine
    private var lineBytes = 0
    private var statusDigits = 0
    private var status = 0
    // The field being read: which, how much of its name matches the two we follow.
    private var field = Field.other
    private var teMatch = 0
    private var clMatch = 0
    private var nameLength = 0
    // What the head said about its body.
    private var chunked = false
    private var lastCodingIsChunked = false
    private var codingMatch = 0
    private var codingLength = 0
    private var contentLength: UInt64?
    // The chunk or fixed body being read.
    private var size: UInt64 = 0
    private var sizeDigits = 0
    private var remaining: UInt64 = 0

    private static let transferEncoding = Array("transfer-encoding".utf8)
    private static let contentLength = Array("content-length".utf8)
    private static let chunkedCoding = Array("chunked".utf8)

    init(side: Side, maxChunkExtensionBytes: Int = 4096) {
        self.side = side
        self.maxChunkExtensionBytes = maxChunkExtensionBytes
    }

    /// Whether a request or status line is being read (and how long it is so far): when the
    /// decoder overflows there, the request line is too long (414), not the header section.
    var readingStartLine: Bool {
        if case .startLine = self.state { self.lineBytes > 0 } else { false }
    }

    /// Whether the scanner still follows the stream.
    var isFollowing: Bool {
        if case .off = self.state { false } else { true }
    }

    /// Reads `bytes`; throws at the first problem (what follows it is not read).
    mutating func scan(_ bytes: UnsafeRawBufferPointer) throws(Problem) {
        var index = 0
        let count = bytes.count
        while index < count {
            switch self.state {
            case .off:
                return
            case .fixedBody, .chunkData:
                let take = Int(min(UInt64(count - index), self.remaining))
                index += take
                self.remaining -= UInt64(take)
                if self.remaining == 0 {
                    if case .chunkData = self.state {
                        self.state = .chunkDataEnd
                    } else {
                        self.state = .startLine
                    }
                    self.lineBytes = 0
                }
                continue
            case .startLine where self.side == .request && self.lineBytes > 0,
                .fieldValue where self.field == .other,
                .trailerLine:
                // Nothing to learn before the line feed: skip to it.
                let rest = count - index
                let base = bytes.baseAddress! + index
                guard let found = memchr(base, 0x0A, rest) else {
                    self.lineBytes += rest
                    return
                }
                let skipped = base.distance(to: UnsafeRawPointer(found))
                self.lineBytes += skipped
                index += skipped
            default:
                break
            }
            let byte = bytes[index]
            index += 1
            try self.step(byte)
        }
    }

    private mutating func step(_ byte: UInt8) throws(Problem) {
        let lf: UInt8 = 0x0A
        let cr: UInt8 = 0x0D
        switch self.state {
        case .startLine:
            if byte == lf {
                if self.lineBytes == 0 { return }  // an empty line before a message is allowed
                self.startHead()
                return
            }
            if byte != cr { self.lineBytes += 1 }
            if self.side == .response {
                // "HTTP/1.1 200 ...": the three digits after the first space.
                if self.statusDigits == 0, byte == 0x20, self.status == 0 {
                    self.statusDigits = 1
                } else if self.statusDigits >= 1, self.statusDigits <= 3, byte >= 0x30, byte <= 0x39 {
                    self.status = self.status * 10 + Int(byte - 0x30)
                    self.statusDigits += 1
                }
            }
        case .fieldLineStart:
            if byte == cr { return }
            if byte == lf { return self.headEnded() }
            self.state = .fieldName
            self.beginField()
            try self.step(byte)
        case .fieldName:
            if byte == UInt8(ascii: ":") {
                if self.teMatch == Self.transferEncoding.count && self.nameLength == self.teMatch {
                    self.field = .transferEncoding
                    self.lastCodingIsChunked = false
                    self.codingMatch = 0
                    self.codingLength = 0
                } else if self.clMatch == Self.contentLength.count && self.nameLength == self.clMatch {
                    self.field = .contentLength
                    self.contentLength = 0
                }
                self.state = .fieldValue
                return
            }
            if byte == lf { return self.stepAside() }
            let lower = byte | 0x20
            if self.teMatch == self.nameLength, self.teMatch < Self.transferEncoding.count, Self.transferEncoding[self.teMatch] == lower {
                self.teMatch += 1
            }
            if self.clMatch == self.nameLength, self.clMatch < Self.contentLength.count, Self.contentLength[self.clMatch] == lower {
                self.clMatch += 1
            }
            self.nameLength += 1
        case .fieldValue:
            if byte == lf {
                if self.field == .transferEncoding {
                    self.finishCoding()
                    self.chunked = self.lastCodingIsChunked
                }
                self.state = .fieldLineStart
                return
            }
            switch self.field {
            case .other:
                break
            case .contentLength:
                if byte >= 0x30 && byte <= 0x39, let length = self.contentLength {
                    let (times, o1) = length.multipliedReportingOverflow(by: 10)
                    let (sum, o2) = times.addingReportingOverflow(UInt64(byte - 0x30))
                    self.contentLength = o1 || o2 ? nil : sum
                }
            case .transferEncoding:
                if byte == UInt8(ascii: ",") {
                    self.finishCoding()
                } else if byte != 0x20 && byte != 0x09 && byte != cr {
                    let lower = byte | 0x20
                    if self.codingMatch == self.codingLength, self.codingMatch < Self.chunkedCoding.count,
                        Self.chunkedCoding[self.codingMatch] == lower
                    {
                        self.codingMatch += 1
                    }
                    self.codingLength += 1
                }
            }
        case .chunkSize:
            if let digit = Self.hexValue(byte) {
                if self.sizeDigits == 0 && digit == 0 {
                    self.sawDigit = true  // leading zeros do not count
                    return
                }
                self.sawDigit = true
                self.sizeDigits += 1
                // Below 2^63: a size every recipient can hold (and far beyond any body we take).
                if self.sizeDigits > 16 || (self.sizeDigits == 16 && self.size >= 1 << 59) {
                    throw .chunkSizeTooLarge
                }
                self.size = self.size << 4 | UInt64(digit)
                return
            }
            guard self.sawDigit else { return self.stepAside() }
            switch byte {
            case UInt8(ascii: ";"):
                self.state = .chunkExtension
                self.lineBytes = 1
            case 0x20, 0x09:
                self.state = .chunkExtension  // BWS before an extension
                self.lineBytes = 1
            case cr:
                self.state = .chunkLineEnd
            case lf:
                self.chunkLineEnded()
            default:
                self.stepAside()
            }
        case .chunkExtension:
            if byte == lf { return self.chunkLineEnded() }
            if byte == cr { return }
            self.lineBytes += 1
            if self.lineBytes > self.maxChunkExtensionBytes {
                throw .chunkExtensionTooLong
            }
        case .chunkLineEnd:
            if byte == lf { return self.chunkLineEnded() }
            self.stepAside()
        case .chunkDataEnd:
            if byte == cr { return }
            if byte == lf {
                self.beginChunk()
                return
            }
            self.stepAside()
        case .trailerLineStart:
            if byte == cr { return }
            if byte == lf {
                self.state = .startLine
                self.lineBytes = 0
                return
            }
            self.state = .trailerLine
        case .trailerLine:
            if byte == lf { self.state = .trailerLineStart }
        case .fixedBody, .chunkData, .off:
            break
        }
    }

    private var sawDigit = false

    private mutating func startHead() {
        self.state = .fieldLineStart
        self.chunked = false
        self.contentLength = nil
    }

    private mutating func beginField() {
        self.field = .other
        self.teMatch = 0
        self.clMatch = 0
        self.nameLength = 0
    }

    private mutating func finishCoding() {
        if self.codingLength > 0 {
            self.lastCodingIsChunked = self.codingMatch == Self.chunkedCoding.count && self.codingLength == self.codingMatch
        }
        self.codingMatch = 0
        self.codingLength = 0
    }

    private mutating func headEnded() {
        self.lineBytes = 0
        if self.side == .response {
            let status = self.status
            self.status = 0
            self.statusDigits = 0
            if status >= 100 && status < 200 {
                self.state = .startLine  // an interim response: the final head follows
                return
            }
            if self.respondingToHead || status == 204 || status == 304 {
                self.state = .startLine
                return
            }
        }
        if self.chunked {
            return self.beginChunk()
        }
        if let length = self.contentLength, length > 0 {
            self.remaining = length
            self.state = .fixedBody
            return
        }
        // A response with neither is delimited by the close; a request has no body.
        self.state = self.side == .response && self.contentLength == nil ? .off : .startLine
    }

    private mutating func beginChunk() {
        self.state = .chunkSize
        self.size = 0
        self.sizeDigits = 0
        self.sawDigit = false
    }

    private mutating func chunkLineEnded() {
        if self.size == 0 {
            self.state = .trailerLineStart
        } else {
            self.remaining = self.size
            self.state = .chunkData
        }
    }

    private mutating func stepAside() {
        self.state = .off
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case 0x30...0x39: byte - 0x30
        case 0x41...0x46: byte - 0x41 + 10
        case 0x61...0x66: byte - 0x61 + 10
        default: nil
        }
    }
}

/// Runs a `ChunkedFramingScanner` over the bytes on their way to NIO's HTTP/1 decoder; a
/// problem is raised as the decoder's own `invalidChunkSize` error (so every handler after it,
/// `HTTPServerPipelineHandler` included, treats it as the parse error it is). The bytes carrying
/// it never reach the decoder; `problem` says which it was.
final class ChunkedFramingGuard: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    var scanner: ChunkedFramingScanner
    private(set) var problem: ChunkedFramingScanner.Problem?
    private var failed: Bool { self.problem != nil }
    private var reported = false

    /// The problem found, the first time it is asked for (the parse error it raised may travel
    /// the pipeline more than once).
    func takeProblem() -> ChunkedFramingScanner.Problem? {
        guard !self.reported, let problem = self.problem else { return nil }
        self.reported = true
        return problem
    }

    /// Where the bytes read are counted (backend connections: `backend_bytes_received`).
    var receivedBytes: (counters: Counters, counter: Counter)?

    init(side: ChunkedFramingScanner.Side, maxChunkExtensionBytes: Int = 4096) {
        self.scanner = ChunkedFramingScanner(side: side, maxChunkExtensionBytes: maxChunkExtensionBytes)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if let (counters, counter) = self.receivedBytes {
            counters.increment(counter, by: self.unwrapInboundIn(data).readableBytes)
        }
        guard !self.failed else { return }
        guard self.scanner.isFollowing else { return context.fireChannelRead(data) }
        let buffer = self.unwrapInboundIn(data)
        do {
            try buffer.withUnsafeReadableBytes { bytes throws(ChunkedFramingScanner.Problem) in
                try self.scanner.scan(bytes)
            }
        } catch {
            self.problem = error
            context.fireErrorCaught(HTTPParserError.invalidChunkSize)
            return
        }
        context.fireChannelRead(data)
    }
}
