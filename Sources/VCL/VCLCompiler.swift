/// One VCL source text and the name its diagnostics use (normally the file's path).
public struct VCLSource: Sendable, Hashable {
    public var name: String
    public var text: String

    public init(name: String, text: String) {
        self.name = name
        self.text = text
    }

    /// builtin.vcl, as shipped in `vcl-like/builtin.vcl`.
    public static let builtin = VCLSource(name: "builtin.vcl", text: BuiltinVCL.text)
}

/// Entry point: source text in, `CompiledVCL` or every error out.
public enum VCLCompiler {
    /// At most this many errors are reported per compilation.
    public static var maxErrors: Int { DiagnosticSink.maxErrors }

    /// Compiles `sources` (concatenated in order) and, unless `appendBuiltin` is false, builtin.vcl
    /// after them, so each built-in sub the user leaves without `return` continues into the
    /// built-in behaviour. Throws all syntax and semantic errors found (up to `maxErrors`).
    /// - Parameter predefinedACLs: ACLs the server provides (e.g. `purge_acl` from `--purge-acl`);
    ///   a source that declares an ACL of the same name replaces it.
    public static func compile(
        _ sources: [VCLSource],
        appendBuiltin: Bool = true,
        predefinedACLs: [VCLACL] = [VCLACL.loopbackPurge]
    ) throws(VCLCompileErrors) -> CompiledVCL {
        let all = appendBuiltin ? sources + [VCLSource.builtin] : sources
        let files = all.map { SourceFile(name: $0.name, text: $0.text) }
        var sink = DiagnosticSink(files: files)
        var program = Program()
        for file in files {
            let tokens = Lexer.tokenize(file, into: &sink)
            var parser = Parser(tokens: tokens, sink: sink)
            parser.parseFile(into: &program)
            sink = parser.sink
        }
        guard sink.isEmpty else { throw VCLCompileErrors(sink.diagnostics) }
        var checker = Checker(sink: sink)
        checker.predefinedACLs = predefinedACLs
        guard let compiled = checker.check(program) else { throw VCLCompileErrors(checker.sink.diagnostics) }
        return compiled
    }

    /// Compiles one source text; convenience for `--check-config` and tests.
    public static func compile(_ text: String, name: String = "input.vcl", appendBuiltin: Bool = true) throws(VCLCompileErrors) -> CompiledVCL {
        try self.compile([VCLSource(name: name, text: text)], appendBuiltin: appendBuiltin)
    }
}
