import NIOHTTP1

/// Removal of hop-by-hop fields before forwarding or storing (RFC 9110 §7.6.1, HARDENING.md §6).
///
/// These fields describe one connection, not the message: a proxy that forwarded them would let a
/// client steer the proxy-to-origin connection (request smuggling via `Transfer-Encoding`,
/// `Upgrade`), and a cache that stored them would replay one connection's state to everyone.
/// `Proxy-Authenticate` and `Proxy-Authorization` are not hop-by-hop in RFC 9110 and are left
/// alone; only the legacy `Proxy-Connection` is stripped among the proxy fields.
///
/// A client may name any field in `Connection` (`Connection: Authorization, Cookie`) to have it
/// removed; RFC 9110 requires honouring that, and the caller rebuilds framing (Content-Length,
/// Transfer-Encoding, Host) from its parsed view anyway, so removal is always safe here.
public enum HopByHop {
    /// Lowercased names that are always hop-by-hop.
    public static let fieldNames: Set<String> = [
        "connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade", "proxy-connection",
    ]

    /// Removes `Connection` and every field it names, `Keep-Alive`, `TE`, `Trailer`,
    /// `Transfer-Encoding`, `Upgrade` and `Proxy-Connection`.
    /// - Parameter headers: request or response header fields, changed in place.
    public static func strip(_ headers: inout HTTPHeaders) {
        var named: [String] = []
        for line in headers["connection"] {
            for token in line.split(separator: ",") {
                let name = token.trimmingOWS()
                if !name.isEmpty { named.append(name.lowercased()) }
            }
        }
        for name in named { headers.remove(name: name) }
        for name in Self.fieldNames where headers.contains(name: name) {
            headers.remove(name: name)
        }
    }
}
