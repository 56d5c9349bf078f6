import CSQLiteNoWait
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// The bytes a connection has written but not yet sent: those NIO still buffers and those the
/// kernel holds unsent in the socket's send queue (`TCP_INFO`'s `tcpi_notsent_bytes`; bytes sent
/// but not yet acknowledged do not count). What decides whether a connection whose last response
/// was handed over is still sending it (HTTP/1.1 keep-alive, HTTP/2 idle) and how a drain closes.
enum UnsentBytes {
    /// Measures `channel` and reports on its event loop (0 for a channel that is not a socket).
    /// Call on the channel's event loop.
    static func measure(_ channel: any Channel, _ report: @escaping (Int) -> Void) {
        let buffered = (try? channel.syncOptions?.getOption(.bufferedWritableBytes)) ?? 0
        guard let socket = channel as? any SocketOptionProvider else { return report(buffered) }
        let bound = NIOLoopBound(report, eventLoop: channel.eventLoop)
        let info: EventLoopFuture<lacquer_tcp_info> = socket.unsafeGetSocketOption(
            level: .tcp, name: NIOBSDSocket.Option(rawValue: CInt(TCP_INFO)))
        info.whenComplete { result in
            let queued = (try? result.get()).map { info in withUnsafePointer(to: info) { Int(lacquer_tcp_info_notsent_bytes($0)) } } ?? 0
            bound.value(buffered + queued)
        }
    }
}
