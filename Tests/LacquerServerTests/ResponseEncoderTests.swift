import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import LacquerServer

/// The client connection's response encoder on its own: framing, HEAD, pre-encoded responses.
@Suite("ResponseEncoder")
struct ResponseEncoderTests {
    private func channel() throws -> (EmbeddedChannel, ResponseEncoder) {
        let encoder = ResponseEncoder()
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(encoder)
        return (channel, encoder)
    }

    private func written(_ channel: EmbeddedChannel) throws -> String {
        var text = ""
        while let data = try channel.readOutbound(as: IOData.self) {
            guard case .byteBuffer(let buffer) = data else { continue }
            text += String(buffer: buffer)
        }
        return text
    }

    private func head(_ fields: [(String, String)]) -> HTTPServerResponsePart {
        .head(HTTPResponseHead(version: .http1_1, status: .ok, headers: HTTPHeaders(fields)))
    }

    @Test("a chunked response is chunk-framed and ends with the last chunk; a sized one is not framed")
    func framing() throws {
        let (channel, _) = try self.channel()
        try channel.writeOutbound(self.head([("Transfer-Encoding", "chunked")]))
        try channel.writeOutbound(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: "hello world"))))
        try channel.writeOutbound(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer())))
        try channel.writeOutbound(HTTPServerResponsePart.end(nil))
        #expect(try self.written(channel) == "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nb\r\nhello world\r\n0\r\n\r\n")
        try channel.writeOutbound(self.head([("Content-Length", "2")]))
        try channel.writeOutbound(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: "ok"))))
        try channel.writeOutbound(HTTPServerResponsePart.end(nil))
        #expect(try self.written(channel) == "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    }

    @Test("a response to HEAD ends with its head, even one that says chunked (RFC 9112 §6.3)")
    func headResponse() throws {
        let (channel, encoder) = try self.channel()
        encoder.respondingToHead = true
        try channel.writeOutbound(self.head([("Transfer-Encoding", "chunked")]))
        try channel.writeOutbound(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: "not sent"))))
        try channel.writeOutbound(HTTPServerResponsePart.end(nil))
        #expect(try self.written(channel) == "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    }

    @Test("a pre-encoded response passes through as written; the next response is encoded again")
    func preEncoded() throws {
        let (channel, encoder) = try self.channel()
        encoder.respondingToHead = true  // a pre-encoded answer to HEAD simply carries no body bytes
        encoder.expectPreEncodedHead()
        try channel.writeOutbound(self.head([("X-Ignored", "1")]))
        try channel.writeOutbound(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: "HTTP/1.1 200 OK\r\nA: b\r\n\r\n"))))
        try channel.writeOutbound(HTTPServerResponsePart.end(nil))
        #expect(try self.written(channel) == "HTTP/1.1 200 OK\r\nA: b\r\n\r\n")
        encoder.respondingToHead = false
        try channel.writeOutbound(
            HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: .notFound, headers: ["Content-Length": "0"])))
        try channel.writeOutbound(HTTPServerResponsePart.end(nil))
        #expect(try self.written(channel) == "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    }

    @Test("an interim response is written and the final one follows")
    func interim() throws {
        let (channel, _) = try self.channel()
        try channel.writeOutbound(HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: .continue)))
        try channel.writeOutbound(self.head([("Content-Length", "0")]))
        try channel.writeOutbound(HTTPServerResponsePart.end(nil))
        #expect(try self.written(channel) == "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    }

    @Test("CR, LF and NUL in a field or reason become spaces: nothing VCL sets can split a response")
    func controlBytes() throws {
        let (channel, _) = try self.channel()
        try channel.writeOutbound(
            HTTPServerResponsePart.head(
                HTTPResponseHead(
                    version: .http1_1, status: HTTPResponseStatus(statusCode: 299, reasonPhrase: "O\r\nK"),
                    headers: HTTPHeaders([("X-A", "1\r\nSet-Cookie: x=1"), ("Content-Length", "0")]))))
        try channel.writeOutbound(HTTPServerResponsePart.end(nil))
        #expect(try self.written(channel) == "HTTP/1.1 299 O  K\r\nX-A: 1  Set-Cookie: x=1\r\nContent-Length: 0\r\n\r\n")
    }
}
