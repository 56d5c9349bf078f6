#if canImport(Glibc)
import Glibc
#endif

/// A small blocking HTTP/1.1 client for the admin port (`lacquer stat`, `lacquer log`,
/// `lacquer admin`): one request per connection, `Connection: close`.
struct AdminClient {
    var host: String
    var port: Int
    /// Sent as `Authorization: Bearer <secret>` when set.
    var secret: String?

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    struct Response {
        var status: Int
        var body: String
    }

    /// Sends one request and returns the whole answer.
    func send(_ method: String, _ target: String, body: String? = nil) throws(Failure) -> Response {
        var status = 0
        var text: [UInt8] = []
        try self.stream(method, target, body: body, onHead: { status = $0 }, onBody: { text += $0 })
        return Response(status: status, body: String(decoding: text, as: UTF8.self))
    }

    /// Sends one request and hands the answer's body to `onBody` as it arrives (chunked or not),
    /// until the server closes; `onHead` gets the status first.
    func stream(
        _ method: String, _ target: String, body: String? = nil, onHead: (Int) -> Void, onBody: ([UInt8]) -> Void
    ) throws(Failure) {
        let fd = try self.connect()
        defer { close(fd) }
        var request = "\(method) \(target) HTTP/1.1\r\nHost: \(self.host)\r\nConnection: close\r\nUser-Agent: lacquer-cli\r\n"
        if let secret { request += "Authorization: Bearer \(secret)\r\n" }
        if let body { request += "Content-Type: text/plain\r\nContent-Length: \(body.utf8.count)\r\n" }
        request += "\r\n" + (body ?? "")
        let bytes = Array(request.utf8)
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw Failure(description: "cannot send to the admin port \(self.address): \(Self.lastError())") }
            sent += n
        }
        var buffer: [UInt8] = []
        var headDone = false
        var chunked = false
        var decoder = ChunkDecoder()
        var scratch = [UInt8](repeating: 0, count: 16 * 1024)
        while true {
            let n = scratch.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { break }
            buffer += scratch[0..<n]
            if !headDone {
                guard let end = Self.headEnd(buffer) else { continue }
                let headText = String(decoding: buffer[0..<end], as: UTF8.self)
                buffer.removeFirst(end + 4)
                headDone = true
                let statusLine = headText.split(separator: "\r\n").first ?? ""
                let parts = statusLine.split(separator: " ")
                onHead(parts.count > 1 ? Int(parts[1]) ?? 0 : 0)
                chunked = headText.lowercased().contains("transfer-encoding: chunked")
            }
            if chunked {
                let data = decoder.feed(buffer)
                buffer.removeAll()
                if !data.isEmpty { onBody(data) }
                if decoder.finished { break }
            } else if !buffer.isEmpty {
                onBody(buffer)
                buffer.removeAll()
            }
        }
        if !headDone {
            throw Failure(description: "the admin port \(self.address) closed the connection without an answer")
        }
    }

    var address: String { self.host.contains(":") ? "[\(self.host)]:\(self.port)" : "\(self.host):\(self.port)" }

    private func connect() throws(Failure) -> Int32 {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(self.host, String(self.port), &hints, &list) == 0, let first = list else {
            throw Failure(description: "cannot resolve the admin address \(self.address)")
        }
        defer { freeaddrinfo(list) }
        var lastError = "no address"
        var entry: UnsafeMutablePointer<addrinfo>? = first
        while let info = entry {
            let fd = socket(info.pointee.ai_family, Int32(SOCK_STREAM.rawValue), 0)
            if fd >= 0 {
                if Glibc.connect(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 { return fd }
                lastError = Self.lastError()
                close(fd)
            }
            entry = info.pointee.ai_next
        }
        throw Failure(description: "cannot connect to the admin port \(self.address): \(lastError) (is Lacquer running, with --admin \(self.address)? Point -T at its admin listener.)")
    }

    private static func lastError() -> String {
        String(cString: strerror(errno)).lowercased()
    }

    private static func headEnd(_ bytes: [UInt8]) -> Int? {
        guard bytes.count >= 4 else { return nil }
        for index in 0...(bytes.count - 4)
        where bytes[index] == 13 && bytes[index + 1] == 10 && bytes[index + 2] == 13 && bytes[index + 3] == 10 {
            return index
        }
        return nil
    }
}

/// Decodes a chunked body incrementally.
struct ChunkDecoder {
    private var pending: [UInt8] = []
    private var remaining = 0
    private var inData = false
    private(set) var finished = false

    mutating func feed(_ bytes: [UInt8]) -> [UInt8] {
        self.pending += bytes
        var out: [UInt8] = []
        while !self.finished {
            if self.inData {
                if self.remaining > 0 {
                    let take = min(self.remaining, self.pending.count)
                    guard take > 0 else { break }
                    out += self.pending[0..<take]
                    self.pending.removeFirst(take)
                    self.remaining -= take
                }
                if self.remaining > 0 { break }
                guard self.pending.count >= 2 else { break }
                self.pending.removeFirst(2)  // CRLF after the data
                self.inData = false
            } else {
                guard let lineEnd = self.pending.firstIndex(of: 10) else { break }
                let line = String(decoding: self.pending[0..<lineEnd], as: UTF8.self)
                self.pending.removeFirst(lineEnd + 1)
                let sizeText = line.split(separator: ";").first.map { $0.trimmingCharacters(in: [" ", "\r"]) } ?? ""
                guard let size = Int(sizeText, radix: 16) else {
                    self.finished = true
                    break
                }
                if size == 0 {
                    self.finished = true
                } else {
                    self.remaining = size
                    self.inData = true
                }
            }
        }
        return out
    }
}

extension Substring {
    fileprivate func trimmingCharacters(in set: Set<Character>) -> String {
        String(self.drop(while: { set.contains($0) }).reversed().drop(while: { set.contains($0) }).reversed())
    }
}
