import NIOCore
import NIOHTTP1

/// Serialises `HTTPServerResponsePart`s for the client connection (RFC 9112 §4-§7), and lets a
/// response whose head the flow already wrote as bytes (a plain hit: stored fields copied as
/// they are) pass through untouched.
///
/// Framing is the caller's: the head says `Content-Length` or `Transfer-Encoding: chunked`,
/// and body parts are chunk-framed only in the second case. A response to HEAD never carries
/// body bytes or a chunked terminator.
///
/// A pre-encoded response is written as `.head(any head)` right after `expectPreEncodedHead()`,
/// then `.body` parts holding the bytes (head first), then `.end`. The `.head` still travels
/// through `HTTPServerPipelineHandler`, which needs it to pair responses with requests.
final class ResponseEncoder: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = IOData

    private var isChunked = false
    private var preEncoded = false
    private var preEncodedHeadPending = false
    /// Set by the connection for each request: whether it is a HEAD request.
    var respondingToHead = false

    /// The next `.head` is a placeholder: the bytes follow as body parts.
    func expectPreEncodedHead() {
        self.preEncodedHeadPending = true
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch Self.unwrapOutboundIn(data) {
        case .head(let head):
            if self.preEncodedHeadPending {
                self.preEncodedHeadPending = false
                self.preEncoded = true
                self.isChunked = false
                promise?.succeed(())
                return
            }
            let code = head.status.code
            if code < 200 && code != 101 {
                // An interim response: the final head follows.
                context.write(Self.wrapOutboundOut(.byteBuffer(Self.encode(head, allocator: context.channel.allocator))), promise: promise)
                return
            }
            self.preEncoded = false
            self.isChunked =
                !self.respondingToHead && head.version.major == 1 && head.version.minor >= 1
                && head.headers.first(name: "transfer-encoding")?.lowercased() == "chunked"
            context.write(Self.wrapOutboundOut(.byteBuffer(Self.encode(head, allocator: context.channel.allocator))), promise: promise)
        case .body(let part):
            if self.respondingToHead && !self.preEncoded {
                // RFC 9112 §6.3: a response to HEAD ends with its head.
                promise?.succeed(())
                return
            }
            if self.preEncoded || !self.isChunked {
                context.write(Self.wrapOutboundOut(part), promise: promise)
                return
            }
            let count = part.readableBytes
            guard count > 0 else {
                // An empty chunk would end the body: write nothing, keep the promise in order.
                context.write(Self.wrapOutboundOut(part), promise: promise)
                return
            }
            var size = context.channel.allocator.buffer(capacity: 16)
            size.writeString(String(count, radix: 16))
            size.writeStaticString("\r\n")
            context.write(Self.wrapOutboundOut(.byteBuffer(size)), promise: nil)
            context.write(Self.wrapOutboundOut(part), promise: nil)
            var crlf = context.channel.allocator.buffer(capacity: 2)
            crlf.writeStaticString("\r\n")
            context.write(Self.wrapOutboundOut(.byteBuffer(crlf)), promise: promise)
        case .end(let trailers):
            var buffer: ByteBuffer
            if self.isChunked {
                buffer = context.channel.allocator.buffer(capacity: 8)
                buffer.writeStaticString("0\r\n")
                if let trailers {
                    for (name, value) in trailers {
                        buffer.writeString(name)
                        buffer.writeStaticString(": ")
                        buffer.writeString(value)
                        buffer.writeStaticString("\r\n")
                    }
                }
                buffer.writeStaticString("\r\n")
            } else {
                // Nothing to write, but the promise must not complete before earlier writes.
                buffer = context.channel.allocator.buffer(capacity: 0)
            }
            self.isChunked = false
            self.preEncoded = false
            if buffer.readableBytes == 0 && promise == nil { return }
            context.write(Self.wrapOutboundOut(.byteBuffer(buffer)), promise: promise)
        }
    }

    /// Status line, fields and the empty line.
    static func encode(_ head: HTTPResponseHead, allocator: ByteBufferAllocator) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: 256)
        buffer.writeStaticString("HTTP/")
        buffer.writeString(String(head.version.major))
        buffer.writeStaticString(".")
        buffer.writeString(String(head.version.minor))
        buffer.writeStaticString(" ")
        buffer.writeString(String(head.status.code))
        buffer.writeStaticString(" ")
        Self.writeText(head.status.reasonPhrase, into: &buffer)
        buffer.writeStaticString("\r\n")
        for (name, value) in head.headers {
            Self.writeText(name, into: &buffer)
            buffer.writeStaticString(": ")
            Self.writeText(value, into: &buffer)
            buffer.writeStaticString("\r\n")
        }
        buffer.writeStaticString("\r\n")
        return buffer
    }

    /// Writes `text`; CR, LF and NUL become SP (RFC 9110 §5.5), so no field, whatever VCL put
    /// in it, can end the head early or split the response.
    static func writeText(_ text: String, into buffer: inout ByteBuffer) {
        if !text.utf8.contains(where: { $0 == 0x0D || $0 == 0x0A || $0 == 0x00 }) {
            buffer.writeString(text)
            return
        }
        for byte in text.utf8 {
            buffer.writeInteger(byte == 0x0D || byte == 0x0A || byte == 0x00 ? UInt8(0x20) : byte)
        }
    }
}
