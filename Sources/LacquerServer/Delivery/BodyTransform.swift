import CachePolicy
import NIOCore
import NIOHTTP1

/// Content-coding transformations a cache may make (RFC 9110 §7.7, §8.4): gunzip a stored gzip
/// body for a client that does not accept gzip, and gzip a compressible body once on store so one
/// stored copy serves every client. A transformed response gets a weak ETag (its bytes differ
/// from the origin's), and `no-transform` forbids both.
enum BodyTransform {
    static func isGzip(_ headers: HTTPHeaders) -> Bool {
        for value in headers["content-encoding"] {
            for coding in tokens(value) where coding == "gzip" || coding == "x-gzip" {
                return true
            }
        }
        return false
    }

    /// The lowercased, trimmed members of a comma-separated field value.
    static func tokens(_ value: String) -> [String] {
        value.split(separator: ",").map { String($0).trimmingOWS().lowercased() }
    }

    static func forbidsTransform(_ headers: HTTPHeaders) -> Bool {
        CacheControl(headers: headers).noTransform
    }

    /// Whether a stored response must be gunzipped for this client.
    static func needsGunzip(storedHeaders: HTTPHeaders, requestHeaders: HTTPHeaders) -> Bool {
        isGzip(storedHeaders) && !ContentCoding.acceptsGzip(requestHeaders) && !forbidsTransform(storedHeaders)
    }

    /// The identity-coded body and headers of a stored gzip response; nil if the gzip is corrupt
    /// (the caller then serves it unchanged and counts it).
    static func gunzip(headers: HTTPHeaders, body: ByteBuffer, maxOutputBytes: Int) -> (HTTPHeaders, ByteBuffer)? {
        guard let decoder = try? GzipDecoder(maxOutputBytes: maxOutputBytes) else { return nil }
        let allocator = ByteBufferAllocator()
        guard var out = try? decoder.decompress(body, allocator: allocator), (try? decoder.finish()) != nil else {
            return nil
        }
        var headers = headers
        headers.remove(name: "content-encoding")
        headers.replaceOrAdd(name: "Content-Length", value: String(out.readableBytes))
        self.weakenETag(&headers)
        self.addVaryAcceptEncoding(&headers)
        out = out.slice()
        return (headers, out)
    }

    /// The gzip-coded body and headers for storing, when the response may and should be compressed.
    static func gzipForStore(status: Int, headers: HTTPHeaders, body: ByteBuffer) -> (HTTPHeaders, ByteBuffer)? {
        guard status == 200, body.readableBytes >= 256, !headers.contains(name: "content-encoding"),
            ContentCoding.isCompressibleType(headers.first(name: "content-type")), !forbidsTransform(headers),
            let encoder = try? GzipEncoder(level: 6)
        else { return nil }
        let allocator = ByteBufferAllocator()
        guard var out = try? encoder.compress(body, allocator: allocator),
            var tail = try? encoder.finish(allocator: allocator)
        else { return nil }
        out.writeBuffer(&tail)
        guard out.readableBytes < body.readableBytes else { return nil }
        var headers = headers
        headers.replaceOrAdd(name: "Content-Encoding", value: "gzip")
        headers.replaceOrAdd(name: "Content-Length", value: String(out.readableBytes))
        self.weakenETag(&headers)
        self.addVaryAcceptEncoding(&headers)
        return (headers, out)
    }

    static func weakenETag(_ headers: inout HTTPHeaders) {
        if let etag = headers.first(name: "etag") {
            headers.replaceOrAdd(name: "ETag", value: ContentCoding.weakened(etag: etag))
        }
    }

    static func addVaryAcceptEncoding(_ headers: inout HTTPHeaders) {
        let names = headers["vary"].flatMap { tokens($0) }
        if !names.contains("accept-encoding") && !names.contains("*") {
            headers.add(name: "Vary", value: "Accept-Encoding")
        }
    }
}
