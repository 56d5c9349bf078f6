import Testing

@testable import LacquerServer

@Suite("Configuration values")
struct ConfigurationParsingTests {
    @Test(
        "sizes in bytes, binary and decimal units",
        arguments: [
            ("1048576", 1_048_576), ("512KiB", 512 * 1024), ("64MB", 64_000_000), ("1GiB", 1 << 30),
            ("256M", 256 << 20), ("10k", 10 * 1024), ("2gib", 2 << 30), ("7B", 7), (" 3MiB ", 3 << 20),
        ])
    func sizes(text: String, bytes: Int) {
        #expect(ByteSize.parse(text) == bytes)
    }

    @Test("sizes that are not sizes are rejected", arguments: ["", "MB", "12XB", "1.5GiB", "-1", "99999999999999999999", "9999999999T"])
    func badSizes(text: String) {
        #expect(ByteSize.parse(text) == nil)
    }

    @Test("listen addresses")
    func hostAndPort() {
        #expect(HostAndPort.parse("127.0.0.1:6081") == HostAndPort(host: "127.0.0.1", port: 6081))
        #expect(HostAndPort.parse("[::1]:0") == HostAndPort(host: "::1", port: 0))
        #expect(HostAndPort.parse(":80") == HostAndPort(host: "0.0.0.0", port: 80))
        #expect(HostAndPort.parse("localhost") == nil)
        #expect(HostAndPort.parse("1.2.3.4:70000") == nil)
        #expect(HostAndPort.parse("::1:80") == nil)
    }

    @Test("backend URLs: http or https, no path")
    func backendURLs() {
        #expect(BackendConfiguration.parse(url: "http://127.0.0.1:8080", name: "a")?.port == 8080)
        #expect(BackendConfiguration.parse(url: "http://origin.local", name: "a")?.port == 80)
        #expect(BackendConfiguration.parse(url: "http://origin.local/", name: "a")?.host == "origin.local")
        #expect(BackendConfiguration.parse(url: "https://origin", name: "a")?.port == 443)
        #expect(BackendConfiguration.parse(url: "https://origin/x", name: "a") == nil)
        #expect(BackendConfiguration.parse(url: "http://origin/path", name: "a") == nil)
        #expect(BackendConfiguration.parse(url: "http://user@origin", name: "a") == nil)
        #expect(BackendConfiguration.parse(url: "127.0.0.1:80", name: "a") == nil)
    }

    @Test("ACL: longest prefix wins, negation, IPv6, and bad entries name the problem")
    func acl() throws {
        let acl = ACL(entries: [
            try ACL.parseEntry("10.0.0.0/8"), try ACL.parseEntry("!10.1.2.3"), try ACL.parseEntry("2001:db8::/32"),
        ])
        #expect(acl.allows([10, 9, 9, 9]))
        #expect(!acl.allows([10, 1, 2, 3]))
        #expect(!acl.allows([11, 0, 0, 1]))
        #expect(acl.allows([0x20, 0x01, 0x0d, 0xb8] + Array(repeating: 0, count: 12)))
        #expect(ACL.loopback.allows([127, 0, 0, 1]))
        #expect(!ACL.loopback.allows([127, 0, 0, 2]))
        #expect(throws: ACLParseError.self) { try ACL.parseEntry("10.0.0.0/33") }
        #expect(throws: ACLParseError.self) { try ACL.parseEntry("not-an-ip") }
        do {
            _ = try ACL.parseEntry("1.2.3.4/x")
        } catch {
            #expect(error.description.contains("1.2.3.4/x"))
        }
    }

    @Test("Host normalisation: lowercase, default port stripped, junk refused")
    func hostNormalisation() {
        #expect(RequestValidation.normaliseHost("Example.COM") == "example.com")
        #expect(RequestValidation.normaliseHost("example.com:80") == "example.com")
        #expect(RequestValidation.normaliseHost("example.com:8080") == "example.com:8080")
        #expect(RequestValidation.normaliseHost("[::1]:80") == "[::1]")
        #expect(RequestValidation.normaliseHost("a b") == nil)
        #expect(RequestValidation.normaliseHost("a/b") == nil)
        #expect(RequestValidation.normaliseHost("user@host") == nil)
        #expect(RequestValidation.normaliseHost("host:") == nil)
        #expect(RequestValidation.normaliseHost("") == nil)
        #expect(RequestValidation.normaliseHost(":8080") == nil)
        #expect(RequestValidation.normaliseHost("host:123456") == nil)
        #expect(RequestValidation.normaliseHost("host:080") == "host:080")
        #expect(RequestValidation.normaliseHost("127.0.0.1:8080") == "127.0.0.1:8080")
    }

    @Test("A host already in normal form is taken as it is, and only then")
    func normalHostShortcut() {
        for normal in ["example.com", "127.0.0.1:8080", "a-b_c~d.e:1", "x:65535", "host:080"] {
            #expect(RequestValidation.isNormalHost(normal), "\(normal)")
        }
        for other in ["Example.com", "example.com:80", "", ":1", "h:", "h:123456", "[::1]", "a b", "h:8a", "h:1:2"] {
            #expect(!RequestValidation.isNormalHost(other), "\(other)")
        }
    }
}
