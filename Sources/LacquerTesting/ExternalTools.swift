import Foundation

/// Runs real client programs (curl, openssl, nghttp) the way a user would, bounded in time.
public enum ExternalTool {
    public struct Outcome: Sendable {
        public var status: Int32
        public var output: String
        public var errors: String
        /// Killed because it ran past its time limit.
        public var timedOut: Bool
    }

    /// The full path of `name` on the usual system paths, or nil.
    public static func find(_ name: String) -> String? {
        for folder in ["/usr/bin", "/usr/local/bin", "/bin", "/usr/sbin"] {
            let path = folder + "/" + name
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return nil
    }

    /// Runs `name` with `arguments` (stdin gets `input`), killing it after `timeout` seconds.
    public static func run(_ name: String, _ arguments: [String], input: String = "", timeout: Double = 20) throws -> Outcome {
        guard let path = self.find(name) else {
            throw ToolMissing(name: name)
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        let stdin = Pipe()
        let stdout = Pipe()
        let stderr = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        process.standardError = stderr
        try process.run()
        stdin.fileHandleForWriting.write(Data(input.utf8))
        try? stdin.fileHandleForWriting.close()
        let killed = LockedData()
        let killer = DispatchWorkItem {
            if process.isRunning {
                killed.set(Data())
                process.terminate()
            }
        }
        DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: killer)
        // Both pipes are drained at once so neither fills and blocks the tool.
        let errorData = LockedData()
        let errorReader = Thread { errorData.set(stderr.fileHandleForReading.readDataToEndOfFile()) }
        errorReader.start()
        let outputData = stdout.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let started = Date()
        while !errorData.isSet && Date().timeIntervalSince(started) < 5 { usleep(2_000) }
        killer.cancel()
        let timedOut = killed.isSet
        return Outcome(
            status: process.terminationStatus, output: String(decoding: outputData, as: UTF8.self),
            errors: String(decoding: errorData.value, as: UTF8.self), timedOut: timedOut)
    }

    public struct ToolMissing: Error, CustomStringConvertible {
        public var name: String
        public var description: String { "\(name) is not installed (.ci/run installs it)" }
    }
}

private final class LockedData: @unchecked Sendable {
    private let lock = NSLock()
    private var data = Data()
    private var done = false
    func set(_ value: Data) {
        self.lock.lock()
        self.data = value
        self.done = true
        self.lock.unlock()
    }
    var isSet: Bool {
        self.lock.lock()
        defer { self.lock.unlock() }
        return self.done
    }
    var value: Data {
        self.lock.lock()
        defer { self.lock.unlock() }
        return self.data
    }
}

/// Certificates made for a test with the openssl command line: self-signed leaves, or a test
/// CA and leaves it signs (a chain).
public struct TestCertificates {
    public let folder: String

    public init(folder: String) {
        self.folder = folder
    }

    public enum KeyType: Sendable {
        case rsa, ecdsa
    }

    /// Makes `NAME.pem` and `NAME.key` for a certificate whose subjectAltName lists `dnsNames`;
    /// signed by `ca` (a name made with `makeCA`) when given, else self-signed. Returns the paths.
    @discardableResult
    public func make(_ name: String, dnsNames: [String], key: KeyType = .rsa, ca: String? = nil) throws -> (certificate: String, key: String) {
        let certificate = self.folder + "/\(name).pem"
        let keyPath = self.folder + "/\(name).key"
        let keyArguments = key == .rsa ? ["-newkey", "rsa:2048"] : ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
        let san = "subjectAltName=" + dnsNames.map { "DNS:\($0)" }.joined(separator: ",")
        if let ca {
            let request = self.folder + "/\(name).csr"
            try self.openssl(["req", "-new"] + keyArguments + ["-nodes", "-keyout", keyPath, "-out", request, "-subj", "/CN=\(dnsNames.first ?? name)"])
            let extensions = self.folder + "/\(name).ext"
            try (san + "\n").write(toFile: extensions, atomically: true, encoding: .utf8)
            try self.openssl([
                "x509", "-req", "-in", request, "-CA", self.folder + "/\(ca).pem", "-CAkey", self.folder + "/\(ca).key",
                "-CAcreateserial", "-out", certificate, "-days", "30", "-extfile", extensions,
            ])
            // The chain: leaf first, then the CA that signed it.
            let leaf = try String(contentsOfFile: certificate, encoding: .utf8)
            let authority = try String(contentsOfFile: self.folder + "/\(ca).pem", encoding: .utf8)
            try (leaf + authority).write(toFile: self.folder + "/\(name)-chain.pem", atomically: true, encoding: .utf8)
        } else {
            try self.openssl(
                ["req", "-x509"] + keyArguments + [
                    "-nodes", "-keyout", keyPath, "-out", certificate, "-days", "30", "-subj", "/CN=\(dnsNames.first ?? name)", "-addext", san,
                ])
        }
        return (certificate, keyPath)
    }

    /// A certificate authority `NAME.pem` / `NAME.key` for `make(ca:)`.
    @discardableResult
    public func makeCA(_ name: String) throws -> String {
        try self.openssl([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", self.folder + "/\(name).key", "-out", self.folder + "/\(name).pem",
            "-days", "30", "-subj", "/CN=Lacquer Test CA \(name)", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        ])
        return self.folder + "/\(name).pem"
    }

    private func openssl(_ arguments: [String]) throws {
        let outcome = try ExternalTool.run("openssl", arguments)
        guard outcome.status == 0 else {
            throw OpenSSLFailed(arguments: arguments, errors: outcome.errors)
        }
    }

    public struct OpenSSLFailed: Error, CustomStringConvertible {
        public var arguments: [String]
        public var errors: String
        public var description: String { "openssl \(arguments.joined(separator: " ")): \(errors)" }
    }
}
