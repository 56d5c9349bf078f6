import NIOHTTP1

/// Extension methods (RFC 9110 §9.1: a method is any token) reaching VCL.
///
/// NIO's HTTP/1 decoder (llhttp) refuses a method it does not know before anything else reads
/// the request. So that a configuration can give such a method a meaning (a `BAN` built with
/// `ban()`, say), the hit fast lane, which reads every bodiless request head before the decoder
/// while it still owns the connection's bytes, swaps an unknown method for `placeholder`, a
/// method the parser knows, and queues the original on the connection; the connection puts it
/// back when the decoder hands it that head. Every request with the placeholder method is queued
/// too (as itself), so the queue and the heads stay in step. builtin.vcl answers unknown methods
/// 501, as before; a request the lane cannot read (one with a body, after the decoder took over
/// the connection) is still refused 501 by the decoder.
enum ExtensionMethods {
    /// The methods llhttp parses in HTTP mode (its `HTTP_METHOD_MAP`, plus PRI).
    static let parserKnown: Set<String> = [
        "DELETE", "GET", "HEAD", "POST", "PUT", "CONNECT", "OPTIONS", "TRACE", "COPY", "LOCK", "MKCOL", "MOVE",
        "PROPFIND", "PROPPATCH", "SEARCH", "UNLOCK", "BIND", "REBIND", "UNBIND", "ACL", "REPORT", "MKACTIVITY",
        "CHECKOUT", "MERGE", "M-SEARCH", "NOTIFY", "SUBSCRIBE", "UNSUBSCRIBE", "PATCH", "PURGE", "MKCALENDAR", "LINK",
        "UNLINK", "SOURCE", "QUERY", "PRI",
    ]

    /// What an unknown method is carried through the decoder as.
    static let placeholder = "SOURCE"

    /// Whether `method` is one the decoder would refuse.
    static func isUnknownToParser(_ method: String) -> Bool {
        !self.parserKnown.contains(method)
    }
}
