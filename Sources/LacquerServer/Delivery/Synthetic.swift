import CachePolicy
import NIOCore
import NIOHTTP1

/// Responses Lacquer writes itself (Varnish's `vcl_synth`): errors, PURGE answers, admin pages.
/// Short `text/plain` bodies that say what happened, with our own framing and reason phrase.
enum Synthetic {
    struct Response {
        var head: HTTPResponseHead
        var body: ByteBuffer
    }

    static func response(
        status: Int,
        reason: String,
        now: Double,
        close: Bool,
        cacheName: String,
        contentType: String = "text/plain; charset=utf-8",
        body text: String? = nil,
        detail: String? = nil
    ) -> Response {
        let code = HTTPResponseStatus(statusCode: status)
        let bodyText = text ?? "\(status) \(code.reasonPhrase): \(reason)\n"
        var body = ByteBuffer()
        if status >= 200 && status != 204 && status != 304 {
            body.writeString(bodyText)
        }
        var headers = HTTPHeaders()
        headers.reserveCapacity(8)
        headers.add(name: "Date", value: HTTPDate.format(Int64(now)))
        headers.add(name: "Content-Type", value: contentType)
        headers.add(name: "Content-Length", value: String(body.readableBytes))
        headers.add(name: "Cache-Control", value: "no-store")
        headers.add(name: "X-Cache-Status", value: XCacheStatus.bypass.rawValue)
        headers.add(name: "Cache-Status", value: CacheStatusValue(detail: detail ?? sanitizeDetail(reason)).serialized(cacheName: cacheName))
        if close {
            headers.add(name: "Connection", value: "close")
        }
        return Response(head: HTTPResponseHead(version: .http1_1, status: code, headers: headers), body: body)
    }

    /// A short token-ish detail for `Cache-Status` (lowercase words joined by dashes).
    static func sanitizeDetail(_ reason: String) -> String {
        var out = ""
        var lastDash = true
        for scalar in reason.lowercased().unicodeScalars.prefix(60) {
            if (scalar >= "a" && scalar <= "z") || (scalar >= "0" && scalar <= "9") {
                out.unicodeScalars.append(scalar)
                lastDash = false
            } else if !lastDash {
                out.append("-")
                lastDash = true
            }
        }
        while out.hasSuffix("-") { out.removeLast() }
        return out.isEmpty ? "synthetic" : out
    }
}
