import Foundation
import NIOCore
import NIOSSL
import Synchronization

/// A certificate file and the file of its private key (`--tls-cert FILE --tls-key FILE`). The
/// certificate file holds the leaf first, then any intermediates (a chain), in PEM.
public struct TLSCertificatePair: Sendable, Hashable, CustomStringConvertible {
    public var certificatePath: String
    public var keyPath: String

    public init(certificatePath: String, keyPath: String) {
        self.certificatePath = certificatePath
        self.keyPath = keyPath
    }

    public var description: String { "\(self.certificatePath) (key \(self.keyPath))" }
}

/// TLS termination settings: the certificate pairs (chosen by SNI; the first is the default).
public struct TLSSettings: Sendable {
    public var certificates: [TLSCertificatePair]
    /// The protocols ALPN offers, most preferred first.
    public var applicationProtocols: [String] = ["h2", "http/1.1"]

    public init(certificates: [TLSCertificatePair]) {
        self.certificates = certificates
    }
}

/// A certificate that could not be used, in plain words naming the file.
public struct TLSCertificateError: Error, Sendable, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}

/// One certificate pair, read and checked: the names it answers for and the TLS context that
/// presents it. The context keeps its own session cache and session ticket keys, which
/// BoringSSL rotates by itself, so a returning client resumes without a full handshake.
final class LoadedCertificate: Sendable {
    let pair: TLSCertificatePair
    /// Both files' bytes: a reload rebuilds only the contexts whose files changed, so their
    /// clients keep resuming sessions.
    let fileBytes: [UInt8]
    /// The DNS names of the leaf's subjectAltName, lowercased (`*.example.com` for a wildcard).
    let names: [String]
    let context: NIOSSLContext
    /// When the leaf expires (seconds since 1970).
    let notAfter: Int

    private init(pair: TLSCertificatePair, fileBytes: [UInt8], names: [String], context: NIOSSLContext, notAfter: Int) {
        self.pair = pair
        self.fileBytes = fileBytes
        self.names = names
        self.context = context
        self.notAfter = notAfter
    }

    /// TLS 1.2 suites with forward secrecy and an AEAD (TLS 1.3's suites are all of that kind).
    static let cipherSuites = [
        "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    ].joined(separator: ":")

    /// Reads and checks `pair`; the error names the file at fault.
    static func load(_ pair: TLSCertificatePair, applicationProtocols: [String]) throws(TLSCertificateError) -> LoadedCertificate {
        let certificateBytes = try Self.read(pair.certificatePath, what: "certificate")
        let keyBytes = try Self.read(pair.keyPath, what: "key")
        let chain: [NIOSSLCertificate]
        do {
            chain = try NIOSSLCertificate.fromPEMBytes(certificateBytes)
        } catch {
            throw TLSCertificateError("TLS certificate \(pair.certificatePath): not a PEM certificate")
        }
        guard let leaf = chain.first else {
            throw TLSCertificateError("TLS certificate \(pair.certificatePath): no certificate in it")
        }
        let key: NIOSSLPrivateKey
        do {
            key = try NIOSSLPrivateKey(bytes: keyBytes, format: .pem)
        } catch {
            throw TLSCertificateError("TLS key \(pair.keyPath): not an unencrypted PEM private key (RSA or ECDSA)")
        }
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        configuration.minimumTLSVersion = .tlsv12
        configuration.maximumTLSVersion = .tlsv13
        configuration.cipherSuites = Self.cipherSuites
        configuration.applicationProtocols = applicationProtocols
        let context: NIOSSLContext
        do {
            context = try NIOSSLContext(configuration: configuration)
        } catch {
            // BoringSSL checks that the key belongs to the leaf certificate here.
            throw TLSCertificateError("TLS key \(pair.keyPath) does not belong to the certificate \(pair.certificatePath)")
        }
        var names: [String] = []
        for name in leaf._subjectAlternativeNames() where name.nameType == .dnsName {
            names.append(String(decoding: name.contents, as: UTF8.self).lowercased())
        }
        return LoadedCertificate(
            pair: pair, fileBytes: certificateBytes + keyBytes, names: names, context: context, notAfter: Int(leaf.notValidAfter))
    }

    private static func read(_ path: String, what: String) throws(TLSCertificateError) -> [UInt8] {
        guard FileManager.default.fileExists(atPath: path) else {
            throw TLSCertificateError("TLS \(what) \(path): no such file")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw TLSCertificateError("TLS \(what) \(path): cannot be read")
        }
        return [UInt8](data)
    }
}

/// The certificates TLS listeners present, chosen by the name a client asks for (SNI): an
/// exact name first, then a wildcard one label deep (`*.example.com`), then the first pair.
/// A reload (SIGHUP) reads every file again and swaps the whole set at once, or keeps the old
/// one when any file is bad; connections already open keep the certificate they got.
final class TLSCertificates: Sendable {
    struct Selection: Sendable {
        var all: [LoadedCertificate]
        var exact: [String: LoadedCertificate]
        var wildcard: [String: LoadedCertificate]

        init(_ all: [LoadedCertificate]) {
            self.all = all
            self.exact = [:]
            self.wildcard = [:]
            for certificate in all {
                for name in certificate.names {
                    if name.hasPrefix("*.") {
                        if self.wildcard[String(name.dropFirst(2))] == nil { self.wildcard[String(name.dropFirst(2))] = certificate }
                    } else if self.exact[name] == nil {
                        self.exact[name] = certificate
                    }
                }
            }
        }

        func choose(_ serverName: String?) -> LoadedCertificate {
            if let serverName {
                let name = serverName.lowercased()
                if let certificate = self.exact[name] { return certificate }
                if let dot = name.firstIndex(of: "."), let certificate = self.wildcard[String(name[name.index(after: dot)...])] {
                    return certificate
                }
            }
            return self.all[0]
        }
    }

    let settings: TLSSettings
    private let selection: Mutex<Selection>

    /// Reads every pair; throws the first problem, naming its file.
    init(_ settings: TLSSettings) throws(TLSCertificateError) {
        guard !settings.certificates.isEmpty else {
            throw TLSCertificateError("TLS listeners need a certificate: give --tls-cert FILE --tls-key FILE")
        }
        self.settings = settings
        var loaded: [LoadedCertificate] = []
        for pair in settings.certificates {
            loaded.append(try LoadedCertificate.load(pair, applicationProtocols: settings.applicationProtocols))
        }
        self.selection = Mutex(Selection(loaded))
    }

    /// The context for a connection that asked for `serverName` (nil: no SNI).
    func context(for serverName: String?) -> NIOSSLContext {
        self.selection.withLock { $0.choose(serverName).context }
    }

    /// The pairs in use now, in order.
    var loaded: [LoadedCertificate] { self.selection.withLock { $0.all } }

    /// Reads every file again. Pairs whose files are unchanged keep their context (and with it
    /// their session tickets). On any error nothing changes and the error names the file.
    /// Returns how many pairs changed.
    @discardableResult
    func reload() throws(TLSCertificateError) -> Int {
        let current = self.loaded
        var next: [LoadedCertificate] = []
        var changed = 0
        for (index, pair) in self.settings.certificates.enumerated() {
            let fresh = try LoadedCertificate.load(pair, applicationProtocols: self.settings.applicationProtocols)
            if index < current.count, current[index].fileBytes == fresh.fileBytes {
                next.append(current[index])
            } else {
                next.append(fresh)
                changed += 1
            }
        }
        self.selection.withLock { $0 = Selection(next) }
        return changed
    }
}
