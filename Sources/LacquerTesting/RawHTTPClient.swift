import FixtureOrigin
import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// One HTTP response as it came off the wire.
public struct RawHTTPResponse: Sendable {
    public var status: Int
    public var reason: String
    /// The version token of the status line, e.g. `HTTP/1.1`.
    public var version: String
    /// Header fields in received order, names as sent.
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]
    /// Trailer fields of a chunked body, in received order.
    public var trailers: [(name: String, value: String)]
    /// 1xx responses that came before this one (when `readResponse` skipped them).
    public var interimResponses: [RawHTTPResponse]

    public init(
        status: Int,
        reason: String,
        version: String,
        headers: [(name: String, value: String)],
        body: [UInt8] = [],
        trailers: [(name: String, value: String)] = [],
        interimResponses: [RawHTTPResponse] = []
    ) {
        self.status = status
        self.reason = reason
        self.version = version
        self.headers = headers
        self.body = body
        self.trailers = trailers
        self.interimResponses = interimResponses
    }

    /// The first value of header `name` (case-insensitive), or nil.
    public func header(_ name: String) -> String? {
        let wanted = name.lowercased()
        return self.headers.first { $0.name.lowercased() == wanted }?.value
    }

    /// Every value of header `name` (case-insensitive), in received order.
    public func headers(_ name: String) -> [String] {
        let wanted = name.lowercased()
        return self.headers.filter { $0.name.lowercased() == wanted }.map(\.value)
    }

    /// The body decoded as UTF-8 (invalid bytes replaced).
    public var bodyString: String {
        String(decoding: self.body, as: UTF8.self)
    }
}

/// Errors of `RawHTTPClient`; each says what the peer did, so a failing test explains itself.
public enum RawHTTPError: Error, CustomStringConvertible, Sendable {
    /// Name resolution or connect(2) failed.
    case connectFailed(host: String, port: Int, errno: Int32)
    /// Nothing arrived (or could be sent) within the timeout.
    case timedOut(seconds: Double)
    /// The peer closed the connection before a response's status line began.
    case closedBeforeResponse
    /// The peer closed the connection in the middle of a response head.
    case closedInHead(partial: String)
    /// The body ended early: `partial` holds the head and the bytes that did arrive.
    case incompleteBody(partial: RawHTTPResponse, expected: Int?)
    /// The bytes were not valid HTTP/1.x.
    case malformed(String)
    /// send(2) or recv(2) failed (e.g. ECONNRESET).
    case socketError(operation: String, errno: Int32)

    public var description: String {
        switch self {
        case .connectFailed(let host, let port, let code):
            return "connect to \(host):\(port) failed: \(String(cString: strerror(code)))"
        case .timedOut(let seconds):
            return "timed out after \(seconds) s"
        case .closedBeforeResponse:
            return "connection closed by peer before a response"
        case .closedInHead(let partial):
            return "connection closed by peer inside a response head: \(partial.debugDescription)"
        case .incompleteBody(let partial, let expected):
            return "connection closed after \(partial.body.count) body bytes"
                + (expected.map { " of \($0)" } ?? "") + " (status \(partial.status))"
        case .malformed(let what):
            return "malformed response: \(what)"
        case .socketError(let operation, let code):
            return "\(operation) failed: \(String(cString: strerror(code)))"
        }
    }
}

/// A deliberately dumb HTTP/1.x client on one blocking TCP connection.
///
/// Tests use it to send exactly the bytes they mean (pipelining, malformed requests, smuggling
/// attempts) and to read responses without a client library's fixing-up in between. Every
/// socket operation has a receive/send timeout (`SO_RCVTIMEO`/`SO_SNDTIMEO`), so a test fails
/// with `RawHTTPError.timedOut` instead of hanging.
///
/// Calls block the calling thread: from async tests, prefer `runBlocking { ... }` so the Swift
/// concurrency pool (two threads on a two-core machine) is not starved. It is `Sendable` so it
/// can be handed to such a thread, but it must be used by one thread at a time.
public final class RawHTTPClient: @unchecked Sendable {
    private var fd: Int32
    private let timeout: Double
    /// Received bytes not yet consumed: `storage[readIndex..<writeIndex]`. Raw memory, so that
    /// reading a gigabyte body costs no per-byte work in debug builds.
    private var storage: UnsafeMutableRawBufferPointer
    private var readIndex = 0
    private var writeIndex = 0
    private var sawEOF = false

    /// Connects to `host:port`.
    /// - Parameters:
    ///   - host: a numeric address or a name (`localhost`); `127.0.0.1` by default.
    ///   - port: the TCP port.
    ///   - timeout: seconds any single send or receive may block.
    ///   - receiveBuffer: the socket's receive buffer in bytes (SO_RCVBUF, set before connecting),
    ///     for a reader whose kernel must not take a large response off the server at once.
    public init(host: String = "127.0.0.1", port: Int, timeout: Double = 10, receiveBuffer: Int? = nil) throws {
        self.timeout = timeout
        self.fd = try Self.connect(host: host, port: port, timeout: timeout, receiveBuffer: receiveBuffer)
        self.storage = .allocate(byteCount: 256 * 1024, alignment: 16)
    }

    deinit {
        if self.fd >= 0 { _ = Glibc.close(self.fd) }
        self.storage.deallocate()
    }

    private var buffered: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: self.storage[self.readIndex..<self.writeIndex])
    }

    /// Whether a read has seen the peer close the connection (EOF).
    public var isClosedByPeer: Bool {
        self.sawEOF
    }

    /// Closes the connection; further calls fail.
    public func close() {
        if self.fd >= 0 {
            _ = Glibc.close(self.fd)
            self.fd = -1
        }
    }

    /// Closes with a TCP reset (SO_LINGER 0) instead of a FIN: the peer sees ECONNRESET.
    public func reset() {
        guard self.fd >= 0 else { return }
        var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
        _ = setsockopt(self.fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
        self.close()
    }

    /// Half-closes: sends a FIN (no more requests) while responses can still be read.
    public func shutdownWrite() {
        guard self.fd >= 0 else { return }
        _ = Glibc.shutdown(self.fd, Int32(SHUT_WR))
    }

    /// Reads one response head (status line and fields) and nothing of its body.
    public func readResponseHead() throws -> RawHTTPResponse {
        try self.readHead()
    }

    // MARK: - Sending

    /// Sends `raw` as UTF-8 bytes, exactly as given (write the `\r\n`s yourself).
    public func send(_ raw: String) throws {
        try self.send(bytes: Array(raw.utf8))
    }

    /// Sends `bytes` exactly as given.
    public func send(bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let sent = bytes.withUnsafeBytes { pointer in
                Glibc.send(self.fd, pointer.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL))
            }
            if sent < 0 {
                let code = errno
                if code == EINTR { continue }
                if code == EAGAIN || code == EWOULDBLOCK { throw RawHTTPError.timedOut(seconds: self.timeout) }
                throw RawHTTPError.socketError(operation: "send", errno: code)
            }
            offset += sent
        }
    }

    /// Sends a request and reads its response.
    /// - Parameters:
    ///   - method: the method token.
    ///   - target: the request target, e.g. `/path?query`.
    ///   - headers: header fields in order; `Host: 127.0.0.1` is added unless given, and
    ///     `Content-Length` when there is a body and neither it nor Transfer-Encoding is given.
    ///   - body: the request body, if any.
    public func request(
        _ method: String = "GET",
        _ target: String,
        headers: [(String, String)] = [],
        body: [UInt8]? = nil
    ) throws -> RawHTTPResponse {
        try self.send(bytes: Self.serialize(method, target, headers: headers, body: body))
        return try self.readResponse(isHead: method == "HEAD")
    }

    /// The bytes of a request as `request(_:_:headers:body:)` sends them.
    public static func serialize(
        _ method: String,
        _ target: String,
        headers: [(String, String)] = [],
        body: [UInt8]? = nil
    ) -> [UInt8] {
        var text = "\(method) \(target) HTTP/1.1\r\n"
        let names = Set(headers.map { $0.0.lowercased() })
        if !names.contains("host") { text += "Host: 127.0.0.1\r\n" }
        for (name, value) in headers { text += "\(name): \(value)\r\n" }
        if let body, !names.contains("content-length"), !names.contains("transfer-encoding") {
            text += "Content-Length: \(body.count)\r\n"
        }
        text += "\r\n"
        return Array(text.utf8) + (body ?? [])
    }

    // MARK: - Reading responses

    /// Reads exactly one final response (1xx interim responses before it are collected in
    /// `interimResponses`, or returned themselves when `returnInterim` is true).
    ///
    /// The body is framed by Transfer-Encoding: chunked (trailers kept), else Content-Length,
    /// else the connection closing; responses to HEAD (`isHead`), 1xx, 204 and 304 have none.
    /// - Throws: `RawHTTPError.closedBeforeResponse` when the peer closed first,
    ///   `.incompleteBody` (with what arrived) when the body was cut short.
    public func readResponse(isHead: Bool = false, returnInterim: Bool = false) throws -> RawHTTPResponse {
        var collector = BodyCollector.store([])
        var response = try self.readResponse(isHead: isHead, returnInterim: returnInterim, into: &collector)
        if case .store(let bytes) = collector { response.body = bytes }
        return response
    }

    /// Like `readResponse`, but counts and hashes the body (64-bit FNV-1a) instead of keeping it,
    /// so gigabyte bodies cost no memory. The returned response's `body` is empty.
    public func readResponseDiscardingBody(
        isHead: Bool = false
    ) throws -> (response: RawHTTPResponse, bodyLength: Int, checksum: UInt64) {
        var collector = BodyCollector.hash(length: 0, fnv: RawHTTPClient.fnvOffsetBasis)
        let response = try self.readResponse(isHead: isHead, returnInterim: false, into: &collector)
        guard case .hash(let length, let fnv) = collector else { preconditionFailure("collector changed kind") }
        return (response, length, fnv)
    }

    /// Returns what is buffered, or waits for the next bytes to arrive (empty at EOF). For
    /// reading a stream (a chunked live tail) as it comes.
    public func readSome() throws -> [UInt8] {
        if self.readIndex == self.writeIndex {
            if try !self.fill() { return [] }
        }
        let bytes = Array(self.buffered)
        self.readIndex = self.writeIndex
        return bytes
    }

    /// Reads until the peer closes (or `max` bytes arrived) and returns what came, including
    /// anything already buffered. Use it to check that a connection is closed: it throws
    /// `timedOut` if the peer keeps it open.
    public func readToEOF(max: Int = 1 << 20) throws -> [UInt8] {
        var result: [UInt8] = []
        while result.count < max {
            if self.readIndex == self.writeIndex {
                if try !self.fill() { break }
            }
            let take = Swift.min(self.writeIndex - self.readIndex, max - result.count)
            result.append(contentsOf: UnsafeRawBufferPointer(rebasing: self.buffered.prefix(take)))
            self.readIndex += take
        }
        return result
    }

    /// 64-bit FNV-1a over `bytes`, the checksum `readResponseDiscardingBody` computes.
    public static func fnv1a(_ bytes: [UInt8], seed: UInt64 = fnvOffsetBasis) -> UInt64 {
        bytes.withUnsafeBytes { fnv1a($0, seed: seed) }
    }

    /// 64-bit FNV-1a over raw bytes, continuing from `seed` (the fixture origin's, which its
    /// `/upload` answers with).
    public static func fnv1a(_ bytes: UnsafeRawBufferPointer, seed: UInt64 = fnvOffsetBasis) -> UInt64 {
        FixtureOrigin.fnv1a(bytes, seed: seed)
    }

    public static let fnvOffsetBasis = FixtureOrigin.fnvOffsetBasis

    private enum BodyCollector {
        case store([UInt8])
        case hash(length: Int, fnv: UInt64)

        mutating func consume(_ bytes: UnsafeRawBufferPointer) {
            switch self {
            case .store(var stored):
                self = .hash(length: 0, fnv: 0)  // drop the reference so the append does not copy
                stored.append(contentsOf: bytes)
                self = .store(stored)
            case .hash(let length, let fnv):
                self = .hash(length: length + bytes.count, fnv: RawHTTPClient.fnv1a(bytes, seed: fnv))
            }
        }
    }

    private func readResponse(
        isHead: Bool,
        returnInterim: Bool,
        into collector: inout BodyCollector
    ) throws -> RawHTTPResponse {
        var interim: [RawHTTPResponse] = []
        while true {
            var response = try self.readHead()
            if (100..<200).contains(response.status) && response.status != 101 {
                if returnInterim { return response }
                interim.append(response)
                continue
            }
            response.interimResponses = interim
            if isHead || response.status == 101 || response.status == 204 || response.status == 304 {
                return response
            }
            let transferEncoding = response.headers("Transfer-Encoding")
                .flatMap { $0.split(separator: ",") }
                .map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
            do {
                if !transferEncoding.isEmpty {
                    guard transferEncoding.last == "chunked" else {
                        try self.readUntilEOF(into: &collector)
                        return response
                    }
                    response.trailers = try self.readChunkedBody(into: &collector)
                } else if case let lengths = response.headers("Content-Length"), !lengths.isEmpty {
                    let values = Set(
                        lengths.flatMap { $0.split(separator: ",") }.map {
                            $0.trimmingCharacters(in: .whitespaces)
                        })
                    guard values.count == 1, let length = Int(values.first!), length >= 0 else {
                        throw RawHTTPError.malformed("Content-Length \(lengths)")
                    }
                    try self.readExactly(length, into: &collector)
                } else {
                    try self.readUntilEOF(into: &collector)
                }
            } catch RawHTTPError.closedBeforeResponse {
                var partial = response
                if case .store(let bytes) = collector { partial.body = bytes }
                let expected = response.header("Content-Length").flatMap { Int($0) }
                throw RawHTTPError.incompleteBody(partial: partial, expected: expected)
            }
            return response
        }
    }

    /// Reads a status line and header fields (obs-fold continuation lines are joined).
    private func readHead() throws -> RawHTTPResponse {
        let statusLine: String
        do {
            statusLine = try self.readLine()
        } catch RawHTTPError.closedBeforeResponse {
            throw RawHTTPError.closedBeforeResponse
        }
        let parts = statusLine.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/"), let status = Int(parts[1]), parts[1].count == 3 else {
            throw RawHTTPError.malformed("status line \(statusLine.debugDescription)")
        }
        var headers: [(name: String, value: String)] = []
        while true {
            let line: String
            do {
                line = try self.readLine()
            } catch RawHTTPError.closedBeforeResponse {
                throw RawHTTPError.closedInHead(partial: statusLine)
            }
            if line.isEmpty { break }
            if line.first == " " || line.first == "\t", !headers.isEmpty {
                headers[headers.count - 1].value += " " + line.trimmingCharacters(in: .whitespaces)
                continue
            }
            guard let colon = line.firstIndex(of: ":") else {
                throw RawHTTPError.malformed("header line \(line.debugDescription)")
            }
            headers.append(
                (String(line[..<colon]), String(line[line.index(after: colon)...]).trimmingCharacters(in: .whitespaces))
            )
        }
        return RawHTTPResponse(
            status: status,
            reason: parts.count > 2 ? String(parts[2]) : "",
            version: String(parts[0]),
            headers: headers
        )
    }

    private func readChunkedBody(into collector: inout BodyCollector) throws -> [(name: String, value: String)] {
        while true {
            let sizeLine = try self.readLine()
            let sizeText = sizeLine.split(separator: ";", maxSplits: 1).first.map {
                $0.trimmingCharacters(in: .whitespaces)
            }
            guard let sizeText, let size = Int(sizeText, radix: 16), size >= 0 else {
                throw RawHTTPError.malformed("chunk size line \(sizeLine.debugDescription)")
            }
            if size == 0 { break }
            try self.readExactly(size, into: &collector)
            let end = try self.readLine()
            guard end.isEmpty else { throw RawHTTPError.malformed("chunk not followed by CRLF") }
        }
        var trailers: [(name: String, value: String)] = []
        while true {
            let line = try self.readLine()
            if line.isEmpty { return trailers }
            guard let colon = line.firstIndex(of: ":") else {
                throw RawHTTPError.malformed("trailer line \(line.debugDescription)")
            }
            trailers.append(
                (String(line[..<colon]), String(line[line.index(after: colon)...]).trimmingCharacters(in: .whitespaces))
            )
        }
    }

    private func readExactly(_ count: Int, into collector: inout BodyCollector) throws {
        var remaining = count
        while remaining > 0 {
            if self.readIndex == self.writeIndex {
                guard try self.fill() else { throw RawHTTPError.closedBeforeResponse }
            }
            let take = Swift.min(remaining, self.writeIndex - self.readIndex)
            collector.consume(UnsafeRawBufferPointer(rebasing: self.buffered.prefix(take)))
            self.readIndex += take
            remaining -= take
        }
    }

    private func readUntilEOF(into collector: inout BodyCollector) throws {
        while true {
            if self.readIndex == self.writeIndex {
                guard try self.fill() else { return }
            }
            collector.consume(self.buffered)
            self.readIndex = self.writeIndex
        }
    }

    /// One line without its CRLF (a bare LF is accepted too). Throws `closedBeforeResponse` at EOF.
    private func readLine(maxLength: Int = 1 << 20) throws -> String {
        var searched = 0  // bytes after readIndex known to hold no LF
        while true {
            let unread = self.buffered
            if let found = memchr(unread.baseAddress! + searched, Int32(UInt8(ascii: "\n")), unread.count - searched) {
                let newline = unread.baseAddress!.distance(to: UnsafeRawPointer(found))
                var end = newline
                if end > 0 && unread[end - 1] == UInt8(ascii: "\r") { end -= 1 }
                let line = String(decoding: UnsafeRawBufferPointer(rebasing: unread[0..<end]), as: UTF8.self)
                self.readIndex += newline + 1
                return line
            }
            searched = unread.count
            if searched > maxLength {
                throw RawHTTPError.malformed("line longer than \(maxLength) bytes")
            }
            guard try self.fill() else { throw RawHTTPError.closedBeforeResponse }
        }
    }

    /// Receives more bytes after `writeIndex` (compacting or growing the storage first when it
    /// is full); false at EOF. Unread bytes keep their offset from `readIndex`.
    private func fill() throws -> Bool {
        if self.sawEOF { return false }
        if self.readIndex == self.writeIndex {
            self.readIndex = 0
            self.writeIndex = 0
        } else if self.writeIndex == self.storage.count {
            let unread = self.writeIndex - self.readIndex
            if self.readIndex > 0 {
                self.storage.baseAddress!.copyMemory(
                    from: self.storage.baseAddress! + self.readIndex, byteCount: unread)
            } else {
                let bigger = UnsafeMutableRawBufferPointer.allocate(byteCount: self.storage.count * 2, alignment: 16)
                bigger.baseAddress!.copyMemory(from: self.storage.baseAddress!, byteCount: unread)
                self.storage.deallocate()
                self.storage = bigger
            }
            self.readIndex = 0
            self.writeIndex = unread
        }
        while true {
            let received = Glibc.recv(
                self.fd,
                self.storage.baseAddress! + self.writeIndex,
                self.storage.count - self.writeIndex,
                0
            )
            if received > 0 {
                self.writeIndex += received
                return true
            }
            if received == 0 {
                self.sawEOF = true
                return false
            }
            let failure = errno
            switch failure {
            case EINTR:
                continue
            case EAGAIN, EWOULDBLOCK:
                throw RawHTTPError.timedOut(seconds: self.timeout)
            case ECONNRESET:
                self.sawEOF = true
                return false
            default:
                throw RawHTTPError.socketError(operation: "recv", errno: failure)
            }
        }
    }

    // MARK: - Connecting

    private static func connect(host: String, port: Int, timeout: Double, receiveBuffer: Int?) throws -> Int32 {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &list) == 0, let first = list else {
            throw RawHTTPError.connectFailed(host: host, port: port, errno: EHOSTUNREACH)
        }
        defer { freeaddrinfo(list) }
        var lastError: Int32 = ECONNREFUSED
        var candidate: UnsafeMutablePointer<addrinfo>? = first
        while let info = candidate {
            candidate = info.pointee.ai_next
            let fd = socket(info.pointee.ai_family, info.pointee.ai_socktype, info.pointee.ai_protocol)
            if fd < 0 {
                lastError = errno
                continue
            }
            var interval = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - timeout.rounded(.down)) * 1_000_000))
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &interval, socklen_t(MemoryLayout<timeval>.size))
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &interval, socklen_t(MemoryLayout<timeval>.size))
            var one: Int32 = 1
            setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            if let receiveBuffer {
                var bytes = Int32(clamping: receiveBuffer)
                setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, socklen_t(MemoryLayout<Int32>.size))
            }
            if Glibc.connect(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 {
                return fd
            }
            lastError = errno
            _ = Glibc.close(fd)
        }
        throw RawHTTPError.connectFailed(host: host, port: port, errno: lastError)
    }
}

/// One-shot helper: opens a connection, sends one request, reads the response, closes.
public func httpGet(
    port: Int,
    _ target: String,
    method: String = "GET",
    headers: [(String, String)] = [],
    host: String = "127.0.0.1",
    timeout: Double = 10,
    body: String? = nil
) throws -> RawHTTPResponse {
    let client = try RawHTTPClient(host: host, port: port, timeout: timeout)
    defer { client.close() }
    return try client.request(method, target, headers: headers, body: body.map { Array($0.utf8) })
}

/// Runs blocking `body` (e.g. `RawHTTPClient` calls) on a thread of its own and awaits it, so
/// blocking socket I/O never occupies a thread of Swift's cooperative pool.
public func runBlocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread {
            continuation.resume(with: Result { try body() })
        }
        thread.stackSize = 1 << 20
        thread.start()
    }
}
