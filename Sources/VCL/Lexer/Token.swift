/// The kinds of token the VCL lexer produces (libvcc's `vcc_token.c` split).
enum TokenKind: Sendable, Equatable {
    /// A name; may contain `.`, `-` and `_` after its first letter, so `req.http.X-Forwarded-For`
    /// is one identifier, as in Varnish.
    case identifier
    /// `"..."` or `{"..."}`; `Token.text` holds the contents without the quotes.
    case string
    case integer
    case real
    /// A number with a unit (`10s`, `1.5h`, `100ms`); `Token.number` is in seconds.
    case duration
    case punct(Punct)
    case eof
}

/// Operators and punctuation.
enum Punct: String, Sendable, CaseIterable {
    case lbrace = "{", rbrace = "}", lparen = "(", rparen = ")", semicolon = ";", comma = ","
    case dot = ".", assign = "=", eq = "==", ne = "!=", match = "~", notMatch = "!~"
    case lt = "<", gt = ">", le = "<=", ge = ">=", and = "&&", or = "||", not = "!"
    case plus = "+", minus = "-", star = "*", slash = "/"
}

/// One token: its kind, its text (the spelling, or a string's contents), its numeric value when
/// it is a number, and where it starts.
struct Token: Sendable {
    var kind: TokenKind
    var text: String
    var number: Double = 0
    var location: SourceLocation
    /// Length of the token's spelling in bytes (for the `^~~~` marker).
    var length: Int

    var isEOF: Bool { self.kind == .eof }

    func isPunct(_ p: Punct) -> Bool { self.kind == .punct(p) }

    func isIdentifier(_ name: String) -> Bool { self.kind == .identifier && self.text == name }

    /// A short description for "expected X, found Y" messages.
    var display: String {
        switch self.kind {
        case .eof: return "end of file"
        case .string: return "string \"\(self.text.count > 30 ? String(self.text.prefix(30)) + "…" : self.text)\""
        case .punct(let p): return "'\(p.rawValue)'"
        default: return "'\(self.text)'"
        }
    }
}
