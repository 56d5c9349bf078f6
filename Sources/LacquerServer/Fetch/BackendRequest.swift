import CachePolicy
import NIOCore
import NIOHTTP1

/// Builds the request we send to the origin from the parsed client request (HARDENING.md §6):
/// origin-form target, our own framing, hop-by-hop and spoofable routing fields removed,
/// `X-Forwarded-For` appended, `X-Forwarded-Proto`, `Via` and `X-Lacquer-Xid` set.
enum BackendRequest {
    /// Client fields that could make the origin or a later hop misroute or mis-key the request.
    static let strippedFields: [String] = [
        "x-forwarded-host", "x-forwarded-proto", "x-forwarded-scheme", "forwarded", "x-original-url",
        "x-rewrite-url", "x-http-method-override", "x-http-method", "x-method-override", "x-cache-status",
        "x-lacquer-xid", "content-length", "expect",
    ]

    /// Conditional and range fields removed on a cache-filling fetch: we want the whole object.
    static let fillStrippedFields: [String] = [
        "if-none-match", "if-modified-since", "if-match", "if-unmodified-since", "if-range", "range",
    ]

    static func make(
        client: HTTPRequestHead,
        method: HTTPMethod,
        isFill: Bool,
        bodyFraming: RequestBodyStream.Framing?,
        clientAddress: String?,
        clientTLS: Bool = false,
        xid: UInt64,
        viaName: String
    ) -> HTTPRequestHead {
        var headers = client.headers
        HopByHop.strip(&headers)
        for name in strippedFields {
            headers.remove(name: name)
        }
        if isFill {
            for name in fillStrippedFields {
                headers.remove(name: name)
            }
            // One stored copy serves all clients: ask for gzip only if this client takes it, by
            // the rule VaryKey's Accept-Encoding normalisation applies (no variant string built).
            let acceptsGzip = AcceptEncoding.acceptsGzip(headers)
            headers.remove(name: "accept-encoding")
            if acceptsGzip {
                headers.add(name: "Accept-Encoding", value: "gzip")
            }
        }
        if let clientAddress {
            let previous = headers["x-forwarded-for"].joined(separator: ", ")
            headers.remove(name: "x-forwarded-for")
            headers.add(name: "X-Forwarded-For", value: previous.isEmpty ? clientAddress : previous + ", " + clientAddress)
        }
        headers.add(name: "X-Forwarded-Proto", value: clientTLS ? "https" : "http")
        let via = headers["via"].joined(separator: ", ")
        headers.remove(name: "via")
        headers.add(name: "Via", value: via.isEmpty ? "1.1 \(viaName)" : via + ", 1.1 \(viaName)")
        headers.add(name: "X-Lacquer-Xid", value: String(xid))
        // The body keeps the client's framing: a length stays a length, chunked stays chunked.
        switch bodyFraming {
        case .length(let length):
            headers.add(name: "Content-Length", value: String(length))
        case .chunked:
            headers.add(name: "Transfer-Encoding", value: "chunked")
        case nil where method == .POST || method == .PUT || method == .PATCH:
            headers.add(name: "Content-Length", value: "0")
        case nil:
            break
        }
        return HTTPRequestHead(version: .http1_1, method: method, uri: client.uri, headers: headers)
    }
}
