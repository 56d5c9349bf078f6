import CachePolicy
import CacheStore
import NIOCore
import NIOHTTP1

/// Where a flow's response goes: a client connection, or nowhere (a background refresh).
/// All calls happen on `eventLoop`.
protocol FlowClient: AnyObject {
    var eventLoop: any EventLoop { get }
    var allocator: ByteBufferAllocator { get }
    var isWritable: Bool { get }
    var peer: SocketAddress? { get }
    var local: SocketAddress? { get }
    /// The client's TLS session, when it came over TLS.
    var tls: TLSFacts? { get }
    /// Whether `writePreEncoded` may be used (an HTTP/1.1 connection; not an HTTP/2 stream).
    var takesPreEncoded: Bool { get }
    func writeHead(_ head: HTTPResponseHead)
    /// A final response head already serialised (status line to the empty line), possibly
    /// with body bytes after it: written as it is.
    func writePreEncoded(_ bytes: ByteBuffer, status: Int, cache: XCacheStatus, bodyBytes: Int)
    func writeBody(_ buffer: ByteBuffer)
    /// Body bytes the end of the response follows immediately: written without a flush of
    /// their own, so head, body and end leave in one write.
    func writeFinalBody(_ buffer: ByteBuffer)
    /// `writeFinalBody` for `object`'s large body, which a connection may send from the disk
    /// tier's file instead (`FileBody`).
    func writeStoredBody(_ buffer: ByteBuffer, of object: StoredObject)
    /// Whether `writeBodyFile` sends (plain HTTP/1.1 with sendfile on; `FileBody`).
    var sendsFiles: Bool { get }
    /// Writes `count` bytes of `file` from `offset` as body bytes, sent with sendfile(2); only
    /// called when `sendsFiles`. The file is held until the write is done.
    func writeBodyFile(_ file: OpenBodyFile, offset: Int, count: Int)
    func flush()
    /// Ends the response; `close` ends the connection after it.
    func finishResponse(_ flow: RequestFlow, close: Bool)
    /// Cuts the connection (a truncated response is the only honest signal once the head is out).
    func abort(_ flow: RequestFlow)
    /// Whether the connection must close after the response to `head`.
    func mustCloseAfter(_ head: HTTPRequestHead) -> Bool
    /// True when the hit lane, looking at this very request, found nothing stored under `key` in
    /// either tier, so the flow need not ask the disk again; forgets what was noted either way.
    func takeNothingStored(_ key: CacheKey) -> Bool
}

extension FlowClient {
    /// Only a connection whose hit lane looks at its requests notes anything.
    func takeNothingStored(_ key: CacheKey) -> Bool { false }

    /// Only a client connection sends files.
    func writeStoredBody(_ buffer: ByteBuffer, of object: StoredObject) {
        self.writeFinalBody(buffer)
    }

    var sendsFiles: Bool { false }

    func writeBodyFile(_ file: OpenBodyFile, offset: Int, count: Int) {
        assertionFailure("writeBodyFile on a client that does not send files")
    }
}

extension ClientChannelHandler: FlowClient {}

/// The client of a background fetch (stale-while-revalidate, grace): it has no one to answer,
/// so the fetch runs at the origin's pace and only fills the cache.
final class BackgroundClient: FlowClient {
    let eventLoop: any EventLoop
    let allocator = ByteBufferAllocator()
    let isWritable = true
    let peer: SocketAddress?
    let local: SocketAddress?
    let tls: TLSFacts?
    let takesPreEncoded = false

    init(eventLoop: any EventLoop, peer: SocketAddress? = nil, local: SocketAddress? = nil, tls: TLSFacts? = nil) {
        self.eventLoop = eventLoop
        self.peer = peer
        self.local = local
        self.tls = tls
    }

    func writeHead(_ head: HTTPResponseHead) {}
    func writePreEncoded(_ bytes: ByteBuffer, status: Int, cache: XCacheStatus, bodyBytes: Int) {}
    func writeBody(_ buffer: ByteBuffer) {}
    func writeFinalBody(_ buffer: ByteBuffer) {}
    func flush() {}
    func finishResponse(_ flow: RequestFlow, close: Bool) {}
    func abort(_ flow: RequestFlow) {}
    func mustCloseAfter(_ head: HTTPRequestHead) -> Bool { false }
}
