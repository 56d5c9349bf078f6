import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Lacquer's version, as `--version`, `/stats`, `/metrics` and the start-up log line show it.
public enum LacquerVersion {
    public static let string = "0.9.0"
}

/// The admin secret file (`--admin-secret FILE`, as varnishd's `-S`): its contents, with
/// surrounding whitespace trimmed, are the bearer token the admin's locked endpoints want.
public enum AdminSecret {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    public static func read(path: String) throws(Failure) -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw Failure(description: "cannot read the secret file \(path): \(String(cString: strerror(errno)).lowercased())")
        }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while bytes.count <= 65536 {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else {
                throw Failure(description: "cannot read the secret file \(path): \(String(cString: strerror(errno)).lowercased())")
            }
            if n == 0 { break }
            bytes += chunk[0..<n]
        }
        let secret = String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard !secret.isEmpty else { throw Failure(description: "the secret file \(path) is empty") }
        guard !secret.utf8.contains(where: { $0 < 0x20 || $0 == 0x7F }) else {
            throw Failure(description: "the secret file \(path) holds control characters (one line of text is expected)")
        }
        return secret
    }
}
