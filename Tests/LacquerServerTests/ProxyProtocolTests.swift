import FixtureOrigin
import Foundation
import LacquerTesting
import NIOCore
import Testing

@testable import LacquerServer

/// The PROXY protocol (v1 and v2) on listeners marked `,proxy`: the parser, and over sockets
/// the client address it names reaching X-Forwarded-For and the purge ACL; a missing or
/// malformed header is refused.
@Suite("PROXY protocol", .serialized, .timeLimit(.minutes(2)))
struct ProxyProtocolTests {
    private func parse(_ bytes: [UInt8]) -> ProxyHeader.Parsed {
        bytes.withUnsafeBytes { ProxyHeader.parse($0) }
    }

    private func v2(command: UInt8 = 0x21, family: UInt8 = 0x11, addresses: [UInt8]) -> [UInt8] {
        ProxyHeader.v2Signature + [command, family, UInt8(addresses.count >> 8), UInt8(addresses.count & 0xFF)] + addresses
    }

    @Test("v1: TCP4, TCP6 and UNKNOWN lines; partial lines wait; malformed ones are refused")
    func version1() throws {
        let line = Array("PROXY TCP4 203.0.113.7 192.0.2.1 56324 443\r\nGET / HTTP/1.1\r\n".utf8)
        guard case .header(let length, let source, let destination) = self.parse(line) else {
            Issue.record("not parsed")
            return
        }
        #expect(length == 44)
        #expect(source?.ipAddress == "203.0.113.7" && source?.port == 56324)
        #expect(destination?.ipAddress == "192.0.2.1" && destination?.port == 443)
        guard case .header(_, let six, _) = self.parse(Array("PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n".utf8)) else {
            Issue.record("TCP6 not parsed")
            return
        }
        #expect(six?.ipAddress == "2001:db8::1")
        #expect(self.parse(Array("PROXY UNKNOWN\r\n".utf8)) == .header(length: 15, source: nil, destination: nil))
        #expect(self.parse(Array("PROX".utf8)) == .needMore)
        #expect(self.parse(Array("PROXY TCP4 1.2.3.4 5.6.7.8 1 2".utf8)) == .needMore)
        for bad in [
            "GET / HTTP/1.1\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1 70000\r\n",
            "PROXY TCP4 2001:db8::1 5.6.7.8 1 2\r\n", "PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
        ] {
            guard case .invalid = self.parse(Array(bad.utf8)) else {
                Issue.record("accepted: \(bad.debugDescription)")
                continue
            }
        }
        guard case .invalid = self.parse(Array(("PROXY UNKNOWN " + String(repeating: "x", count: 120)).utf8)) else {
            Issue.record("a line past 107 bytes was not refused")
            return
        }
    }

    @Test("v2: PROXY over TCP4 and TCP6 with TLVs, LOCAL, other families; partial headers wait; bad ones are refused")
    func version2() throws {
        let four = self.v2(addresses: [198, 51, 100, 9, 192, 0, 2, 1, 0xDC, 0x05, 0x01, 0xBB] + [0x04, 0x00, 0x01, 0x00])
        guard case .header(let length, let source, let destination) = self.parse(four) else {
            Issue.record("not parsed")
            return
        }
        #expect(length == four.count)
        #expect(source?.ipAddress == "198.51.100.9" && source?.port == 0xDC05)
        #expect(destination?.port == 443)
        let six = self.v2(family: 0x21, addresses: [0x20, 0x01, 0x0D, 0xB8] + Array(repeating: 0, count: 11) + [7] + Array(repeating: 0, count: 16) + [0, 80, 0, 81])
        guard case .header(_, let source6, _) = self.parse(six) else {
            Issue.record("TCP6 not parsed")
            return
        }
        #expect(source6?.ipAddress == "2001:db8::7")
        #expect(self.parse(self.v2(command: 0x20, addresses: [])) == .header(length: 16, source: nil, destination: nil))
        #expect(self.parse(self.v2(family: 0x31, addresses: Array(repeating: 0, count: 216))) == .header(length: 232, source: nil, destination: nil))
        #expect(self.parse(Array(four.prefix(20))) == .needMore)
        #expect(self.parse(Array(four.prefix(7))) == .needMore)
        guard case .invalid = self.parse(self.v2(command: 0x11, addresses: [])),
            case .invalid = self.parse(self.v2(command: 0x22, addresses: [])),
            case .invalid = self.parse(self.v2(addresses: [1, 2, 3])),
            case .invalid = self.parse([0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0B])
        else {
            Issue.record("a bad v2 header was accepted")
            return
        }
    }

    @Test("over sockets: the named client reaches the access log, X-Forwarded-For and the purge ACL; a connection without the header gets 400")
    func overSockets() async throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let logPath = directory + "/access.log"
        try await withLacquer(configure: {
            $0.listen = [HostAndPort(host: "127.0.0.1", port: 0, proxyProtocol: true)]
            $0.accessLog = .file(logPath)
        }) { lacquer, port, _ async throws in
            // v1, the header and the request in one write.
            let client = try RawHTTPClient(port: port)
            defer { client.close() }
            try client.send("PROXY TCP4 203.0.113.7 127.0.0.1 40000 6081\r\nGET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            let echo = try client.readResponse()
            #expect(echo.status == 200)
            #expect(echo.bodyString.lowercased().contains("x-forwarded-for: 203.0.113.7"), "\(echo.bodyString)")
            // The same connection goes on with the same client: its PURGE is not from the ACL.
            #expect(try client.request("PURGE", "/anything").status == 403)

            // v2 in two pieces, naming loopback: PURGE is allowed.
            let loopback = try RawHTTPClient(port: port)
            defer { loopback.close() }
            let header = ProxyHeader.v2Signature + [0x21, 0x11, 0, 12, 127, 0, 0, 1, 127, 0, 0, 1, 0x9C, 0x40, 0x17, 0xC1]
            try loopback.send(bytes: Array(header.prefix(9)))
            try await Task.sleep(for: .milliseconds(20))
            try loopback.send(bytes: Array(header.dropFirst(9)) + Array("PURGE /nothing HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".utf8))
            #expect(try loopback.readResponse().status == 404)

            // No header: refused and closed.
            let plain = try RawHTTPClient(port: port)
            defer { plain.close() }
            try plain.send("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            let refused = try plain.readResponse()
            #expect(refused.status == 400)
            #expect(refused.bodyString.contains("PROXY"))
            _ = try plain.readToEOF()
            #expect(plain.isClosedByPeer)
            #expect(lacquer.counters[.proxyHeaderRefused] == 1)
            let logged = try await eventually {
                let text = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
                return text.contains("203.0.113.7 - - [") && text.contains("\"GET /echo HTTP/1.1\" 200")
            }
            #expect(logged, "the access log names the client the PROXY header gave")
        }
    }

    @Test("--listen HOST:PORT,proxy marks a listener; anything else after a comma is refused")
    func listenerSyntax() {
        #expect(HostAndPort.parseListener("127.0.0.1:6086,proxy") == HostAndPort(host: "127.0.0.1", port: 6086, proxyProtocol: true))
        #expect(HostAndPort.parseListener("[::1]:6086,PROXY")?.proxyProtocol == true)
        #expect(HostAndPort.parseListener("127.0.0.1:6081") == HostAndPort(host: "127.0.0.1", port: 6081))
        #expect(HostAndPort.parseListener("127.0.0.1:6081,tls") == nil)
        #expect(HostAndPort.parseListener("127.0.0.1:6081,") == nil)
    }
}
