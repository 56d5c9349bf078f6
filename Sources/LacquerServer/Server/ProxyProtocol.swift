import NIOCore

/// The PROXY protocol header (HAProxy's specification, versions 1 and 2) a load balancer in
/// front sends before the client's bytes on a listener marked `,proxy` (Varnish's `-a …,PROXY`):
/// it names the client's address, which Lacquer then uses for the access log,
/// `X-Forwarded-For`, VCL's `client.ip` and the purge ACL.
///
/// Version 1 is a text line, `PROXY TCP4|TCP6|UNKNOWN src dst sport dport\r\n`, at most 107
/// bytes. Version 2 is binary: a 12-byte signature, version and command, family, a 16-bit
/// length, the addresses and optional TLVs (ignored). `UNKNOWN` (v1) and `LOCAL` or another
/// family (v2, e.g. the balancer's own health check) keep the connection's own addresses.
enum ProxyHeader {
    /// What the bytes at the start of a connection hold.
    enum Parsed: Equatable {
        /// No complete header yet, and nothing wrong so far.
        case needMore
        /// Not a PROXY header, or a malformed one.
        case invalid(String)
        /// A header of `length` bytes; nil addresses: keep the connection's own.
        case header(length: Int, source: SocketAddress?, destination: SocketAddress?)
    }

    static let v1MaxLength = 107
    static let v2Signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]
    /// The most bytes a v2 header may have here (16 fixed bytes and 2 KiB of addresses and TLVs).
    static let v2MaxLength = 16 + 2048

    static func parse(_ bytes: UnsafeRawBufferPointer) -> Parsed {
        guard let first = bytes.first else { return .needMore }
        if first == UInt8(ascii: "P") { return self.parseV1(bytes) }
        if first == 0x0D { return self.parseV2(bytes) }
        return .invalid("no PROXY protocol header")
    }

    private static func parseV1(_ bytes: UnsafeRawBufferPointer) -> Parsed {
        let prefix = Array("PROXY ".utf8)
        for (index, byte) in prefix.enumerated() {
            if index == bytes.count { return .needMore }
            if bytes[index] != byte { return .invalid("no PROXY protocol header") }
        }
        guard let lf = bytes.prefix(self.v1MaxLength).firstIndex(of: 0x0A) else {
            return bytes.count >= self.v1MaxLength ? .invalid("PROXY v1 line longer than 107 bytes") : .needMore
        }
        guard lf > 0, bytes[lf - 1] == 0x0D else { return .invalid("PROXY v1 line does not end in CRLF") }
        let line = String(decoding: bytes[prefix.count..<(lf - 1)], as: UTF8.self)
        let parts = line.split(separator: " ", omittingEmptySubsequences: false)
        guard let family = parts.first else { return .invalid("PROXY v1 line without a protocol") }
        if family == "UNKNOWN" {
            return .header(length: lf + 1, source: nil, destination: nil)
        }
        guard family == "TCP4" || family == "TCP6", parts.count == 5 else {
            return .invalid("PROXY v1 line is not TCP4/TCP6 src dst sport dport")
        }
        guard let sourcePort = self.port(parts[3]), let destinationPort = self.port(parts[4]),
            let source = try? SocketAddress(ipAddress: String(parts[1]), port: sourcePort),
            let destination = try? SocketAddress(ipAddress: String(parts[2]), port: destinationPort),
            (family == "TCP4") == (source.protocol == .inet), source.protocol == destination.protocol
        else {
            return .invalid("PROXY v1 addresses or ports are malformed")
        }
        return .header(length: lf + 1, source: source, destination: destination)
    }

    /// A port as v1 writes it: 1 to 5 digits, no sign, no leading zero, at most 65535.
    private static func port(_ text: Substring) -> Int? {
        guard (1...5).contains(text.count), text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
            text == "0" || !text.hasPrefix("0"), let value = Int(text), value <= 65535
        else { return nil }
        return value
    }

    private static func parseV2(_ bytes: UnsafeRawBufferPointer) -> Parsed {
        for (index, byte) in self.v2Signature.enumerated() {
            if index == bytes.count { return .needMore }
            if bytes[index] != byte { return .invalid("no PROXY protocol header") }
        }
        guard bytes.count >= 16 else { return .needMore }
        let versionCommand = bytes[12]
        guard versionCommand >> 4 == 2 else { return .invalid("PROXY v2 header with version \(versionCommand >> 4)") }
        let command = versionCommand & 0x0F
        guard command <= 1 else { return .invalid("PROXY v2 header with command \(command)") }
        let family = bytes[13]
        let length = Int(bytes[14]) << 8 | Int(bytes[15])
        guard 16 + length <= self.v2MaxLength else { return .invalid("PROXY v2 header longer than \(self.v2MaxLength) bytes") }
        guard bytes.count >= 16 + length else { return .needMore }
        let total = 16 + length
        // LOCAL (the balancer speaking for itself), or a family other than TCP: own addresses.
        guard command == 1 else { return .header(length: total, source: nil, destination: nil) }
        let body = UnsafeRawBufferPointer(rebasing: bytes[16..<total])
        switch family {
        case 0x11:  // TCP over IPv4
            guard body.count >= 12 else { return .invalid("PROXY v2 TCP4 addresses are cut short") }
            let source = self.ipv4(body[0..<4], port: body[8..<10])
            let destination = self.ipv4(body[4..<8], port: body[10..<12])
            return .header(length: total, source: source, destination: destination)
        case 0x21:  // TCP over IPv6
            guard body.count >= 36 else { return .invalid("PROXY v2 TCP6 addresses are cut short") }
            let source = self.ipv6(body[0..<16], port: body[32..<34])
            let destination = self.ipv6(body[16..<32], port: body[34..<36])
            return .header(length: total, source: source, destination: destination)
        default:
            return .header(length: total, source: nil, destination: nil)
        }
    }

    private static func portValue(_ bytes: Slice<UnsafeRawBufferPointer>) -> Int {
        Int(bytes[bytes.startIndex]) << 8 | Int(bytes[bytes.startIndex + 1])
    }

    private static func ipv4(_ address: Slice<UnsafeRawBufferPointer>, port: Slice<UnsafeRawBufferPointer>) -> SocketAddress? {
        let text = address.map(String.init).joined(separator: ".")
        return try? SocketAddress(ipAddress: text, port: self.portValue(port))
    }

    private static func ipv6(_ address: Slice<UnsafeRawBufferPointer>, port: Slice<UnsafeRawBufferPointer>) -> SocketAddress? {
        var groups: [String] = []
        var index = address.startIndex
        while index < address.endIndex {
            groups.append(String(Int(address[index]) << 8 | Int(address[index + 1]), radix: 16))
            index += 2
        }
        return try? SocketAddress(ipAddress: groups.joined(separator: ":"), port: self.portValue(port))
    }
}

/// Reads the PROXY protocol header at the start of a connection on a `,proxy` listener, hands
/// the addresses to the connection, then steps aside: every later byte goes on untouched. A
/// connection without a valid header gets a plain 400 and is closed (a load balancer that
/// forgot the header, or a client that bypassed it).
final class ProxyProtocolHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let adopt: (SocketAddress?, SocketAddress?) -> Void
    private let counters: Counters
    private var buffered: ByteBuffer?
    private var done = false
    private var refused = false

    /// `adopt` takes the client's and the connected-to address the header named (nil: keep the
    /// socket's own).
    init(counters: Counters, adopt: @escaping (SocketAddress?, SocketAddress?) -> Void) {
        self.adopt = adopt
        self.counters = counters
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if self.refused { return }  // closing: nothing more is read
        guard !self.done else { return context.fireChannelRead(data) }
        var buffer = self.unwrapInboundIn(data)
        if var buffered = self.buffered {
            self.buffered = nil
            buffered.writeBuffer(&buffer)
            buffer = buffered
        }
        switch buffer.withUnsafeReadableBytes(ProxyHeader.parse) {
        case .needMore:
            self.buffered = buffer
        case .invalid(let reason):
            self.refuse(reason, context: context)
        case .header(let length, let source, let destination):
            self.done = true
            self.adopt(source, destination)
            buffer.moveReaderIndex(forwardBy: length)
            if buffer.readableBytes > 0 {
                context.fireChannelRead(self.wrapInboundOut(buffer))
            }
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
    }

    private func refuse(_ reason: String, context: ChannelHandlerContext) {
        self.refused = true
        self.counters.increment(.proxyHeaderRefused)
        let body = "400 Bad Request: \(reason)\n"
        var response = context.channel.allocator.buffer(capacity: 128 + body.utf8.count)
        response.writeString(
            "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n"
        )
        response.writeString(body)
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.writeAndFlush(NIOAny(response)).whenComplete { _ in bound.value.close(promise: nil) }
    }
}
