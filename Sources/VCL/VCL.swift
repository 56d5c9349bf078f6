/// The vcl-like configuration language (lexer, parser, checker, evaluator) lives here.
///
/// Until it lands, Lacquer runs its built-in behaviour (`LacquerServer.BuiltinPolicy`), which
/// `vcl-like/builtin.vcl` will express in the language itself. This module may import only
/// `CachePolicy`: the server hands it request and response views and turns its `return (...)`
/// into flow events, so the language never touches storage or sockets.
public enum VCL {
    /// The VCL syntax version this module will accept (`vcl 4.1;`).
    public static let syntaxVersion = "4.1"
}
