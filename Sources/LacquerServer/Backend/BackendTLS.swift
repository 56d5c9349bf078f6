import Foundation
import NIOCore
import NIOSSL
import NIOTLS
import Synchronization

/// How Lacquer speaks TLS to an HTTPS backend (`--backend https://…`, VCL `.ssl = true;` as
/// Varnish Enterprise's backend attributes).
public struct BackendTLS: Sendable, Hashable {
    /// The name sent by SNI and checked against the certificate; nil: the backend's host
    /// (VCL `.ssl_sni`). An IP address is checked against the certificate's IP entries and
    /// not sent by SNI.
    public var serverName: String?
    /// Check the certificate chain against the trusted CAs (VCL `.ssl_verify_peer`); off only
    /// when asked by name (`--backend-no-verify`).
    public var verifyPeer = true
    /// Check that the certificate names the server (VCL `.ssl_verify_host`).
    public var verifyHost = true
    /// A PEM file of CAs to trust instead of the system trust store (`--backend-ca`, VCL `.ssl_ca_file`).
    public var caFile: String?

    public init(serverName: String? = nil, verifyPeer: Bool = true, verifyHost: Bool = true, caFile: String? = nil) {
        self.serverName = serverName
        self.verifyPeer = verifyPeer
        self.verifyHost = verifyHost
        self.caFile = caFile
    }
}

/// One TLS client context per distinct backend TLS setting, built once and shared by every
/// pool and probe (a context holds the trust store and the session cache, so connections to a
/// backend resume their TLS sessions).
enum BackendTLSContexts {
    private static let contexts = Mutex<[BackendTLS: NIOSSLContext]>([:])

    /// The context for `tls`; the error names the CA file when it cannot be used.
    static func context(for tls: BackendTLS) throws(TLSCertificateError) -> NIOSSLContext {
        if let context = self.contexts.withLock({ $0[tls] }) { return context }
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        configuration.applicationProtocols = ["http/1.1"]
        configuration.certificateVerification =
            !tls.verifyPeer ? .none : tls.verifyHost ? .fullVerification : .noHostnameVerification
        if let caFile = tls.caFile {
            guard FileManager.default.fileExists(atPath: caFile) else {
                throw TLSCertificateError("backend CA file \(caFile): no such file")
            }
            let certificates: [NIOSSLCertificate]
            do {
                certificates = try NIOSSLCertificate.fromPEMFile(caFile)
            } catch {
                throw TLSCertificateError("backend CA file \(caFile): cannot be read as PEM certificates")
            }
            guard !certificates.isEmpty else {
                throw TLSCertificateError("backend CA file \(caFile): no certificate in it")
            }
            configuration.trustRoots = .certificates(certificates)
        }
        let context: NIOSSLContext
        do {
            context = try NIOSSLContext(configuration: configuration)
        } catch {
            throw TLSCertificateError("backend TLS settings refused by the TLS library")
        }
        return self.contexts.withLock { contexts in
            if let existing = contexts[tls] { return existing }
            contexts[tls] = context
            return context
        }
    }

    /// The TLS handler for a connection to `backend` (SNI with its name unless that is an IP).
    static func handler(for backend: BackendConfiguration, tls: BackendTLS) throws -> NIOSSLClientHandler {
        let name = tls.serverName ?? backend.host
        let isAddress = (try? SocketAddress(ipAddress: name, port: 0)) != nil
        return try NIOSSLClientHandler(context: try self.context(for: tls), serverHostname: isAddress ? nil : name)
    }

    /// A TLS failure in plain words (never the library's text).
    static func describe(_ error: any Error) -> String {
        if let extra = error as? NIOSSLExtraError, extra == .failedToValidateHostname {
            return "the certificate does not name the server"
        }
        if let ssl = error as? NIOSSLError {
            switch ssl {
            case .handshakeFailed(let inner):
                let text = "\(inner)".uppercased()
                if text.contains("CERTIFICATE_VERIFY_FAILED") { return "the certificate is not trusted" }
                if text.contains("WRONG_VERSION_NUMBER") || text.contains("PACKET_LENGTH_TOO_LONG") { return "the backend does not speak TLS" }
                if text.contains("PROTOCOL_VERSION") || text.contains("UNSUPPORTED_PROTOCOL") { return "no TLS version in common" }
                return "the handshake failed"
            case .uncleanShutdown: return "the backend closed the connection during the handshake"
            default: return "the handshake failed"
            }
        }
        if error is BoringSSLError { return "the handshake failed" }
        return BackendPool.describe(error)
    }
}

/// A TLS handshake with a backend that failed, in plain words.
struct BackendTLSFailure: Error {
    var reason: String
}

/// Waits for a backend connection's TLS handshake: the pool hands the connection out only
/// once it is done, so a TLS failure is a connect failure (502 with a plain reason) and never
/// a half-sent request. Reads while it waits (backend channels do not read on their own).
final class BackendTLSHandshake: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    let done: EventLoopPromise<Void>
    private var finished = false

    init(promise: EventLoopPromise<Void>) {
        self.done = promise
    }

    func channelActive(context: ChannelHandlerContext) {
        context.fireChannelActive()
        context.read()
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.fireChannelReadComplete()
        if !self.finished { context.read() }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if !self.finished, case .handshakeCompleted = event as? TLSUserEvent {
            self.finished = true
            self.done.succeed(())
            context.fireUserInboundEventTriggered(event)
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !self.finished {
            self.finished = true
            self.done.fail(error)
            context.close(promise: nil)
            return
        }
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !self.finished {
            self.finished = true
            self.done.fail(NIOSSLError.uncleanShutdown)
        }
        context.fireChannelInactive()
    }
}
