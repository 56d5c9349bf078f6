/// One compile-time problem: where it is, what is wrong and what to do about it.
/// `description` renders it the way libvcc's `vcc_ErrWhere` does, plus a hint:
/// ```
/// site.vcl:12:9: error: unknown variable 'req.hdr.Cookie'
///     set req.hdr.Cookie = "";
///         ^~~~~~~~~~~~~~
///   hint: headers are 'req.http.NAME'
/// ```
public struct VCLDiagnostic: Sendable, Hashable, CustomStringConvertible {
    public var location: SourceLocation
    /// Bytes marked under the caret (at least 1).
    public var length: Int
    public var message: String
    public var hint: String?
    /// The quoted source line (filled in when the diagnostic is reported).
    public var sourceLine: String

    public init(location: SourceLocation, length: Int, message: String, hint: String? = nil, sourceLine: String = "") {
        self.location = location
        self.length = max(1, length)
        self.message = message
        self.hint = hint
        self.sourceLine = sourceLine
    }

    public var description: String {
        var out = "\(self.location): error: \(self.message)\n\(self.sourceLine)\n"
        // Keep tabs so the caret lines up under tab-indented source.
        var pad = ""
        for (i, ch) in self.sourceLine.utf8.enumerated() where i < self.location.column - 1 {
            pad.append(ch == UInt8(ascii: "\t") ? "\t" : " ")
        }
        let lineLen = self.sourceLine.utf8.count
        if self.location.column - 1 > lineLen {
            pad += String(repeating: " ", count: self.location.column - 1 - lineLen)
        }
        let room = max(1, min(self.length, lineLen - (self.location.column - 1)))
        out += pad + "^" + String(repeating: "~", count: room - 1)
        if let hint = self.hint {
            out += "\n  hint: \(hint)"
        }
        return out
    }
}

/// Every error found while compiling (up to `VCLCompiler.maxErrors`), in source order.
public struct VCLCompileErrors: Error, Sendable, CustomStringConvertible {
    public var diagnostics: [VCLDiagnostic]

    public init(_ diagnostics: [VCLDiagnostic]) { self.diagnostics = diagnostics }

    public var description: String {
        self.diagnostics.map(\.description).joined(separator: "\n")
    }
}

/// A failure while running compiled VCL for one request. The server answers that request with
/// `vcl_synth` and status 503, as Varnish does; other requests are not affected.
public struct VCLRuntimeError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Code: Sendable, Hashable {
        /// A header value would contain CR, LF or NUL.
        case badHeaderValue
        /// A status outside 100...999.
        case badStatus
        /// `call` nesting went deeper than `VCLLimits.maxCallDepth` (cannot happen for
        /// checked programs, kept as a guard).
        case callDepthExceeded
        /// A regular expression match hit PCRE2's match limit.
        case regexFailure
        /// Division by zero, or a number too large to be an INT.
        case arithmetic
    }

    public var code: Code
    public var message: String
    public var location: SourceLocation

    public init(_ code: Code, _ message: String, at location: SourceLocation) {
        self.code = code
        self.message = message
        self.location = location
    }

    public var description: String { "\(self.location): runtime error: \(self.message)" }
}

/// Collects diagnostics during one compilation, stops accepting past the cap.
struct DiagnosticSink {
    static let maxErrors = 20
    private(set) var diagnostics: [VCLDiagnostic] = []
    let files: [String: SourceFile]

    init(files: [SourceFile]) {
        var map: [String: SourceFile] = [:]
        for f in files where map[f.name] == nil { map[f.name] = f }
        self.files = map
    }

    var isFull: Bool { self.diagnostics.count >= Self.maxErrors }
    var isEmpty: Bool { self.diagnostics.isEmpty }

    mutating func error(_ message: String, at location: SourceLocation, length: Int = 1, hint: String? = nil) {
        guard !self.isFull else { return }
        // One error per position is enough; parsers recovering tend to repeat themselves.
        if self.diagnostics.contains(where: { $0.location == location }) { return }
        let line = self.files[location.file]?.lineText(location.line) ?? ""
        self.diagnostics.append(
            VCLDiagnostic(location: location, length: length, message: message, hint: hint, sourceLine: line)
        )
    }

    mutating func error(_ message: String, at token: Token, hint: String? = nil) {
        self.error(message, at: token.location, length: token.length, hint: hint)
    }
}
