import Foundation
import NIOCore
import VCL

/// Why a configuration file could not be loaded: unreadable, or the compiler's diagnostics
/// (each `file:line:col: message`, the line, a caret and a hint).
public struct VCLLoadError: Error, Sendable, CustomStringConvertible {
    public var description: String
}

/// Loads VCL files for the server: reads, compiles (with builtin.vcl appended and the
/// `--purge-acl` addresses visible as `purge_acl`), and turns declared backends into backend
/// configurations.
public enum VCLLoader {
    /// The server's purge ACL as the VCL ACL `purge_acl`.
    public static func purgeACL(_ acl: ACL) -> VCLACL {
        VCLACL(
            name: VCLACL.purgeACLName,
            entries: acl.entries.map { VCLACL.Entry(network: $0.address, prefixLength: $0.prefixLength, negated: $0.negated) })
    }

    /// builtin.vcl alone: what runs without `--config`.
    public static func builtin(purgeACL: ACL) -> CompiledVCL {
        do {
            return try VCLCompiler.compile([], predefinedACLs: [Self.purgeACL(purgeACL)])
        } catch {
            // builtin.vcl is compiled by the test suite; failing here is a build defect.
            preconditionFailure("builtin.vcl does not compile: \(error)")
        }
    }

    /// Reads and compiles the file at `path`.
    public static func load(path: String, purgeACL: ACL) throws(VCLLoadError) -> CompiledVCL {
        let text: String
        do {
            let data = try Data(contentsOf: URL(fileURLWithPath: path))
            guard let decoded = String(data: data, encoding: .utf8) else {
                throw VCLLoadError(description: "\(path): not UTF-8 text")
            }
            text = decoded
        } catch let error as VCLLoadError {
            throw error
        } catch {
            throw VCLLoadError(description: "\(path): cannot read the file (\(Self.reason(error)))")
        }
        do {
            return try VCLCompiler.compile([VCLSource(name: path, text: text)], predefinedACLs: [Self.purgeACL(purgeACL)])
        } catch {
            throw VCLLoadError(description: error.description)
        }
    }

    /// The backends a VCL declares, as backend configurations (unset timeouts keep the defaults).
    public static func backendConfigurations(_ vcl: CompiledVCL) -> [BackendConfiguration] {
        vcl.backends.map { declared in
            var backend = BackendConfiguration(name: declared.name, host: declared.host, port: declared.port)
            if let t = declared.connectTimeout { backend.connectTimeout = .nanoseconds(Int64(t * 1e9)) }
            if let t = declared.firstByteTimeout { backend.firstByteTimeout = .nanoseconds(Int64(t * 1e9)) }
            if let t = declared.betweenBytesTimeout { backend.betweenBytesTimeout = .nanoseconds(Int64(t * 1e9)) }
            if let n = declared.maxConnections { backend.maxConnections = n }
            backend.hostHeader = declared.hostHeader
            if declared.ssl || declared.sslServerName != nil || declared.sslCAFile != nil {
                backend.tls = BackendTLS(
                    serverName: declared.sslServerName, verifyPeer: declared.sslVerifyPeer, verifyHost: declared.sslVerifyHost,
                    caFile: declared.sslCAFile)
            }
            backend.probe = declared.probe.map(Self.probeConfiguration)
            return backend
        }
    }

    /// A VCL `probe` as the server's probe settings (seconds become time amounts; a raw
    /// `.request` is split back into its lines).
    public static func probeConfiguration(_ declared: VCLProbe) -> ProbeConfiguration {
        var probe = ProbeConfiguration(url: declared.url)
        if let raw = declared.request {
            var lines = raw.components(separatedBy: "\r\n")
            while lines.last == "" { lines.removeLast() }
            probe.request = lines
        }
        probe.expectedResponse = declared.expectedResponse
        probe.interval = .nanoseconds(Int64((min(declared.interval, 86_400) * 1e9).rounded()))
        probe.timeout = .nanoseconds(Int64((min(declared.timeout, 86_400) * 1e9).rounded()))
        probe.window = declared.window
        probe.threshold = declared.threshold
        probe.initial = declared.initial
        return probe
    }

    private static func reason(_ error: any Error) -> String {
        let ns = error as NSError
        if let underlying = ns.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain {
            return String(cString: strerror(Int32(underlying.code)))
        }
        return ns.localizedDescription
    }
}
