import CachePolicy
import CompressNIO
import NIOCore
import NIOHTTP1

// Streaming gzip for delivery: gunzip a stored gzip body for a client that does not accept it,
// gzip a plain body for one that does (Varnish's http_gzip_support), and the header-level
// decisions that go with it (RFC 9110 §8.4 Content-Encoding, §12.5.3 Accept-Encoding).
//
// zlib does the work, through compress-nio's ZlibCompressor / ZlibDecompressor. Each coder is a
// class around one z_stream: not Sendable, used by the one event loop that delivers the body.
// Bodies arrive and leave as ByteBuffer chunks, never joined, so a large body is never held
// twice in memory.

/// Why a body could not be gzipped or gunzipped.
enum CompressionError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The input is not a valid gzip stream: bad header, bad deflate data, CRC or length mismatch,
    /// junk after the last member, or (at ``GzipDecoder/finish()``) cut short.
    case corrupt
    /// Decompressing would produce more than the decoder's limit (a "zip bomb").
    case outputLimitExceeded(limit: Int)
    /// The coder was used after `finish`, or after it had already thrown.
    case streamClosed
    /// zlib failed for a reason that is not the input's fault (out of memory, internal error).
    case zlib(String)

    var description: String {
        switch self {
        case .corrupt:
            "the gzip body is corrupt or truncated"
        case .outputLimitExceeded(let limit):
            "the gzip body expands to more than \(limit) bytes"
        case .streamClosed:
            "the gzip stream was already finished or failed"
        case .zlib(let message):
            "zlib failed: \(message)"
        }
    }
}

/// Streaming gunzip (RFC 1952) of a body that arrives in chunks.
///
/// Call ``decompress(_:allocator:)`` for each chunk and ``finish()`` after the last one:
/// `finish` is where a body cut short is detected, since a gzip stream only proves it is complete
/// with its 8-byte trailer (CRC-32 and length, checked by zlib). Several gzip members one after
/// another are one valid stream (RFC 1952 §2.2, what `cat a.gz b.gz` gives) and decode to the
/// concatenation; anything else after a member is ``CompressionError/corrupt``, as in Varnish
/// ("Junk after gzip data"). After any error the decoder stays failed.
final class GzipDecoder {
    private enum State {
        case streaming
        case closed
    }

    private let decompressor: ZlibDecompressor
    private let maxOutputBytes: Int
    private var produced = 0
    private var state = State.streaming

    /// - Parameter maxOutputBytes: the most bytes the whole body may decompress to; beyond it
    ///   ``decompress(_:allocator:)`` throws ``CompressionError/outputLimitExceeded(limit:)``.
    ///   The default, 1 GiB, is the disk tier's largest object (HARDENING.md §10).
    init(maxOutputBytes: Int = 1 << 30) throws(CompressionError) {
        do {
            self.decompressor = try ZlibDecompressor(algorithm: .gzip)
        } catch {
            throw .zlib(String(describing: error))
        }
        self.maxOutputBytes = max(0, maxOutputBytes)
    }

    /// Decompresses one chunk; returns what it decoded, possibly nothing (a header, or a chunk
    /// too small to complete a deflate block).
    /// - Parameters:
    ///   - input: the next bytes of the gzip body.
    ///   - allocator: allocates the returned buffer.
    func decompress(_ input: ByteBuffer, allocator: ByteBufferAllocator) throws(CompressionError) -> ByteBuffer {
        guard self.state == .streaming else { throw .streamClosed }
        var input = input
        // Small chunks usually decode to a few times their size; big ones are bounded by the growth below.
        var output = allocator.buffer(capacity: min(max(input.readableBytes * 4, 512), 64 * 1024))
        guard input.readableBytes > 0 else { return output }
        do {
            while true {
                do {
                    try self.decompressor.inflate(from: &input, to: &output)
                    // A normal return is Z_OK with all input used, or Z_STREAM_END (the end of a member).
                    try self.checkLimit(output)
                    if input.readableBytes == 0 { break }
                    // Bytes after the end of a member: only another member may follow (RFC 1952 §2.2).
                    // Its header is checked by zlib, so junk fails as Z_DATA_ERROR.
                    try self.decompressor.reset()
                } catch let error as CompressNIOError where error == .bufferOverflow {
                    // The output is full; zlib keeps its place, so continue into more room.
                    try self.checkLimit(output)
                    // Grow geometrically, but never far past the limit: one byte over is enough to tell.
                    let remaining = self.maxOutputBytes - self.produced - output.readableBytes
                    output.reserveCapacity(minimumWritableBytes: min(max(output.capacity, 16 * 1024), remaining) + 1)
                } catch let error as CompressNIOError where error == .inputBufferOverflow {
                    // Z_BUF_ERROR with no input left: everything was used, the stream wants more.
                    try self.checkLimit(output)
                    break
                }
            }
        } catch let error as CompressionError {
            self.state = .closed
            throw error
        } catch let error as CompressNIOError where error == .corruptData {
            self.state = .closed
            throw .corrupt
        } catch {
            self.state = .closed
            throw .zlib(String(describing: error))
        }
        self.produced += output.readableBytes
        return output
    }

    /// Ends the body: throws ``CompressionError/corrupt`` unless the last gzip member was
    /// complete, trailer included. The decoder cannot be used afterwards.
    func finish() throws(CompressionError) {
        guard self.state == .streaming else { throw .streamClosed }
        self.state = .closed
        // With no input, zlib reports Z_STREAM_END only if the member ended; otherwise Z_BUF_ERROR.
        var empty = ByteBufferAllocator().buffer(capacity: 16)
        var output = ByteBufferAllocator().buffer(capacity: 16)
        do {
            try self.decompressor.inflate(from: &empty, to: &output)
        } catch let error as CompressNIOError where error == .inputBufferOverflow || error == .corruptData {
            throw .corrupt
        } catch {
            throw .zlib(String(describing: error))
        }
        guard output.readableBytes == 0 else { throw .corrupt }
    }

    private func checkLimit(_ output: ByteBuffer) throws(CompressionError) {
        let (total, overflow) = self.produced.addingReportingOverflow(output.readableBytes)
        if overflow || total > self.maxOutputBytes { throw .outputLimitExceeded(limit: self.maxOutputBytes) }
    }
}

/// Streaming gzip (RFC 1952) of a body that leaves in chunks.
///
/// ``compress(_:allocator:)`` may return nothing while zlib collects enough input for a block;
/// ``flush(allocator:)`` forces out everything so far (a sync flush, for a client waiting on a
/// slow origin); ``finish(allocator:)`` writes the last block and the trailer. zlib writes a
/// fixed header (no name, mtime 0), so the same input and level always give the same bytes.
final class GzipEncoder {
    private let compressor: ZlibCompressor
    private var isFinished = false

    /// - Parameter level: zlib's level, 1 (fastest) to 9 (smallest), 0 stores; clamped to 0...9.
    ///   6 is zlib's and Varnish's default.
    init(level: Int = 6) throws(CompressionError) {
        let configuration = ZlibConfiguration(
            windowSize: 15, compressionLevel: Int32(min(max(level, 0), 9)), memoryLevel: 8, strategy: .default
        )
        do {
            self.compressor = try ZlibCompressor(algorithm: .gzip, configuration: configuration)
        } catch {
            throw .zlib(String(describing: error))
        }
    }

    /// Compresses one chunk; returns the compressed bytes zlib released, possibly none.
    func compress(_ input: ByteBuffer, allocator: ByteBufferAllocator) throws(CompressionError) -> ByteBuffer {
        guard !self.isFinished else { throw .streamClosed }
        var input = input
        var output = allocator.buffer(capacity: min(max(input.readableBytes / 2, 256), 64 * 1024))
        guard input.readableBytes > 0 else { return output }
        try self.run(from: &input, to: &output) { input, output in
            // Z_NO_FLUSH stops when the input is used up or the output is full.
            input.readableBytes > 0
        } deflate: { compressor, input, output in
            try compressor.deflate(from: &input, to: &output, flush: .no)
        }
        return output
    }

    /// Releases everything compressed so far (Z_SYNC_FLUSH), so the client can decode it now.
    /// Costs a few bytes each time; call it when the origin pauses, not per chunk.
    func flush(allocator: ByteBufferAllocator) throws(CompressionError) -> ByteBuffer {
        guard !self.isFinished else { throw .streamClosed }
        var input = allocator.buffer(capacity: 16)
        var output = allocator.buffer(capacity: 512)
        try self.run(from: &input, to: &output) { _, output in
            // A flush is complete when zlib left room in the output (zlib manual, deflate()).
            output.writableBytes == 0
        } deflate: { compressor, input, output in
            do {
                try compressor.deflate(from: &input, to: &output, flush: .sync)
            } catch let error as CompressNIOError where error == .bufferOverflow && output.writableBytes > 0 {
                // Z_BUF_ERROR with room to spare: nothing was pending (a repeated flush).
            }
        }
        return output
    }

    /// Writes the final block and the gzip trailer. The encoder cannot be used afterwards.
    func finish(allocator: ByteBufferAllocator) throws(CompressionError) -> ByteBuffer {
        guard !self.isFinished else { throw .streamClosed }
        self.isFinished = true
        var input = allocator.buffer(capacity: 16)
        var output = allocator.buffer(capacity: 512)
        var ended = false
        try self.run(from: &input, to: &output) { _, _ in
            !ended
        } deflate: { compressor, input, output in
            // The wrapper reports "Z_OK under Z_FINISH" (more output to come) as bufferOverflow.
            try compressor.deflate(from: &input, to: &output, flush: .finish)
            ended = true
        }
        return output
    }

    /// Calls `deflate` until `more` says done, growing `output` whenever zlib runs out of room.
    private func run(
        from input: inout ByteBuffer,
        to output: inout ByteBuffer,
        while more: (ByteBuffer, ByteBuffer) -> Bool,
        deflate: (ZlibCompressor, inout ByteBuffer, inout ByteBuffer) throws -> Void
    ) throws(CompressionError) {
        do {
            repeat {
                if output.writableBytes == 0 {
                    output.reserveCapacity(minimumWritableBytes: max(output.capacity, 4096))
                }
                do {
                    try deflate(self.compressor, &input, &output)
                } catch let error as CompressNIOError where error == .bufferOverflow {
                    output.reserveCapacity(minimumWritableBytes: max(output.capacity, 4096))
                }
            } while more(input, output)
        } catch {
            self.isFinished = true
            throw .zlib(String(describing: error))
        }
    }
}

/// Content-coding decisions at the edge (RFC 9110 §8.4, §12.5.3).
enum ContentCoding {
    /// Whether the client accepts a gzip-coded response (`AcceptEncoding.acceptsGzip`).
    static func acceptsGzip(_ requestHeaders: HTTPHeaders) -> Bool {
        AcceptEncoding.acceptsGzip(requestHeaders)
    }

    /// Whether a body of this media type is worth gzipping: text (except `text/event-stream`,
    /// whose events must not wait in a compressor), JSON, JavaScript, XML and their `+json` /
    /// `+xml` kin (SVG, RSS, Atom), WebAssembly, uncompressed fonts and icons. Images, audio,
    /// video, archives, `woff`/`woff2` and unknown or missing types are not: already compressed,
    /// or not known to gain.
    static func isCompressibleType(_ contentType: String?) -> Bool {
        guard let contentType,
            let mediaType = contentType.split(separator: ";", omittingEmptySubsequences: false).first
        else { return false }
        let lowered = mediaType.trimmingOWS().lowercased()
        let parts = lowered.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else { return false }
        let type = parts[0]
        let subtype = parts[1]
        if type == "text" { return subtype != "event-stream" }
        if subtype.hasSuffix("+json") || subtype.hasSuffix("+xml") { return true }
        return Self.compressibleTypes.contains(lowered)
    }

    private static let compressibleTypes: Set<String> = [
        "application/json", "application/javascript", "application/x-javascript", "application/ecmascript",
        "application/xml", "application/wasm", "application/x-www-form-urlencoded", "application/graphql",
        "application/rtf", "application/x-sh", "application/vnd.ms-fontobject", "application/x-font-ttf",
        "application/x-font-otf", "application/x-ndjson", "application/x-yaml", "application/yaml",
        "font/ttf", "font/otf", "font/sfnt", "image/x-icon", "image/vnd.microsoft.icon", "image/bmp",
    ]

    /// The entity tag for a body we transformed: `W/` in front of a strong tag, a weak tag as is
    /// (RFC 9110 §8.8.3). A gzipped and a plain body are different bytes, so a strong tag that
    /// names one must not be reused for the other (§8.8.1); a weak tag only claims the two are
    /// semantically equivalent, which a content coding keeps. A malformed tag is quoted first.
    static func weakened(etag: String) -> String {
        let tag = etag.trimmingOWS()
        if tag.hasPrefix("W/") { return String(tag) }
        if tag.count >= 2, tag.hasPrefix("\""), tag.hasSuffix("\"") { return "W/" + tag }
        return "W/\"" + tag.filter { $0 != "\"" } + "\""
    }

}
