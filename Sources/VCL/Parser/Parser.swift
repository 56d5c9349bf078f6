/// Builds the syntax tree from tokens (libvcc's `vcc_parse.c` + `vcc_expr.c` for shape only; types
/// and names are the checker's business).
///
/// Recovers at statement and declaration boundaries so one run reports many errors. Nesting is
/// bounded (`maxDepth`) so hostile input cannot exhaust the stack.
struct Parser {
    struct Abort: Error {}

    static let maxDepth = 128
    static let topLevelKeywords: Set<String> = ["vcl", "backend", "probe", "acl", "sub", "import", "include"]

    private var tokens: [Token]
    private var pos = 0
    var depth = 0
    private var sawVersion = false
    var sink: DiagnosticSink

    init(tokens: [Token], sink: DiagnosticSink) {
        self.tokens = tokens
        self.sink = sink
    }

    // MARK: tokens

    var current: Token { self.tokens[self.pos] }
    func peek(_ n: Int = 1) -> Token { self.tokens[min(self.pos + n, self.tokens.count - 1)] }

    @discardableResult
    mutating func advance() -> Token {
        let t = self.tokens[self.pos]
        if !t.isEOF { self.pos += 1 }
        return t
    }

    mutating func accept(_ p: Punct) -> Bool {
        if self.current.isPunct(p) {
            self.advance()
            return true
        }
        return false
    }

    mutating func fail(_ message: String, at token: Token? = nil, hint: String? = nil) -> Abort {
        self.sink.error(message, at: token ?? self.current, hint: hint)
        return Abort()
    }

    mutating func expect(_ p: Punct, _ context: String, hint: String? = nil) throws(Abort) {
        guard self.accept(p) else {
            var h = hint
            if h == nil, p == .semicolon { h = "statements and fields end with ';'" }
            throw self.fail("expected '\(p.rawValue)' \(context), found \(self.current.display)", hint: h)
        }
    }

    private mutating func expectIdentifier(_ what: String) throws(Abort) -> Token {
        guard self.current.kind == .identifier else {
            throw self.fail("expected \(what), found \(self.current.display)")
        }
        return self.advance()
    }

    mutating func enter() throws(Abort) {
        if self.depth >= Parser.maxDepth {
            throw self.fail("nesting is too deep (more than \(Parser.maxDepth) levels)")
        }
        self.depth += 1
    }

    // MARK: program

    /// Parses one file's tokens into `program`.
    mutating func parseFile(into program: inout Program) {
        if self.current.isIdentifier("vcl") {
            do throws(Abort) { try self.parseVersion() } catch { self.synchronizeTopLevel() }
        } else {
            self.sink.error(
                "missing VCL version declaration",
                at: self.current,
                hint: "start the file with 'vcl 4.1;'"
            )
        }
        while !self.current.isEOF && !self.sink.isFull {
            do throws(Abort) {
                if let decl = try self.parseDeclaration() { program.declarations.append(decl) }
            } catch {
                self.synchronizeTopLevel()
            }
        }
    }

    private mutating func parseVersion() throws(Abort) {
        let kw = self.advance()
        let v = self.current
        guard v.kind == .real || v.kind == .integer else {
            throw self.fail("expected a version number after 'vcl', found \(v.display)", hint: "write 'vcl 4.1;'")
        }
        self.advance()
        if v.text != "4.0" && v.text != "4.1" {
            self.sink.error("unsupported VCL version \(v.text)", at: v, hint: "Lacquer reads VCL 4.0 and 4.1: write 'vcl 4.1;'")
        }
        if self.sawVersion { self.sink.error("duplicate VCL version declaration", at: kw) }
        self.sawVersion = true
        try self.expect(.semicolon, "after the VCL version")
    }

    private mutating func synchronizeTopLevel() {
        var depth = 0
        repeat {
            let t = self.advance()
            if t.isPunct(.lbrace) { depth += 1 }
            if t.isPunct(.rbrace) { depth = max(0, depth - 1) }
            if depth == 0, self.current.kind == .identifier, Parser.topLevelKeywords.contains(self.current.text),
                self.peek().kind == .identifier || self.peek().kind == .real || self.peek().kind == .string
            {
                return
            }
        } while !self.current.isEOF
    }

    private mutating func parseDeclaration() throws(Abort) -> Declaration? {
        let kw = self.current
        guard kw.kind == .identifier else {
            throw self.fail(
                "expected a declaration ('backend', 'probe', 'acl', 'sub' or 'import'), found \(kw.display)"
            )
        }
        switch kw.text {
        case "vcl":
            try self.parseVersion()
            return nil
        case "import":
            self.advance()
            let name = try self.expectIdentifier("a module name after 'import'")
            if self.current.isIdentifier("from") {
                self.advance()
                if self.current.kind == .string { self.advance() }
            }
            try self.expect(.semicolon, "after 'import \(name.text)'")
            return .import(name: name.text, location: name.location)
        case "include":
            throw self.fail(
                "'include' is not supported",
                hint: "pass every file to Lacquer; sources are concatenated in the order given"
            )
        case "backend":
            self.advance()
            let name = try self.expectIdentifier("a backend name")
            return .backend(BackendDecl(name: Name(name), fields: try self.parseFields("backend")))
        case "probe":
            self.advance()
            let name = try self.expectIdentifier("a probe name")
            return .probe(ProbeDecl(name: Name(name), fields: try self.parseFields("probe"), location: kw.location))
        case "acl":
            self.advance()
            let name = try self.expectIdentifier("an ACL name")
            return .acl(ACLDecl(name: Name(name), entries: try self.parseACLEntries()))
        case "sub":
            self.advance()
            let name = try self.expectIdentifier("a subroutine name")
            try self.expect(.lbrace, "to open the body of sub \(name.text)")
            return .sub(SubDecl(name: Name(name), body: self.parseBlockBody()))
        default:
            throw self.fail(
                "expected a declaration ('backend', 'probe', 'acl', 'sub' or 'import'), found \(kw.display)",
                hint: kw.text == "set" || kw.text == "if" ? "statements belong inside a 'sub'" : nil
            )
        }
    }

    private mutating func parseFields(_ what: String) throws(Abort) -> [Field] {
        try self.expect(.lbrace, "to open the \(what)")
        try self.enter()
        defer { self.depth -= 1 }
        var fields: [Field] = []
        while !self.current.isPunct(.rbrace) {
            if self.current.isEOF { throw self.fail("expected '}' to close the \(what), found end of file") }
            try self.expect(.dot, "before a \(what) field name", hint: "fields are written '.name = value;'")
            let name = Name(try self.expectIdentifier("a field name"))
            try self.expect(.assign, "after .\(name.text)")
            let value: Field.Value
            if self.current.isPunct(.lbrace) {
                let loc = self.current.location
                value = .block(ProbeDecl(name: nil, fields: try self.parseFields("probe"), location: loc))
                _ = self.accept(.semicolon)
            } else if self.current.kind == .string && self.peek().kind == .string {
                var strings: [String] = []
                while self.current.kind == .string { strings.append(self.advance().text) }
                value = .strings(strings)
                try self.expect(.semicolon, "after .\(name.text)")
            } else {
                value = .expr(try self.parseExpr())
                try self.expect(.semicolon, "after .\(name.text)")
            }
            fields.append(Field(name: name, value: value))
        }
        self.advance()
        return fields
    }

    private mutating func parseACLEntries() throws(Abort) -> [ACLEntry] {
        try self.expect(.lbrace, "to open the ACL")
        var entries: [ACLEntry] = []
        while !self.current.isPunct(.rbrace) {
            if self.current.isEOF { throw self.fail("expected '}' to close the ACL, found end of file") }
            let negated = self.accept(.not)
            let addr = self.current
            guard addr.kind == .string else {
                throw self.fail(
                    "expected an address in double quotes, found \(addr.display)",
                    hint: "ACL entries look like \"10.0.0.0\"/8; or ! \"10.1.2.3\";"
                )
            }
            self.advance()
            var prefix: Int?
            if self.accept(.slash) {
                let bits = self.current
                guard bits.kind == .integer else { throw self.fail("expected a prefix length after '/', found \(bits.display)") }
                self.advance()
                prefix = Int(bits.number)
            }
            entries.append(
                ACLEntry(negated: negated, address: addr.text, prefixLength: prefix, location: addr.location, length: addr.length)
            )
            try self.expect(.semicolon, "after an ACL entry")
        }
        self.advance()
        return entries
    }

    // MARK: statements

    /// Parses statements up to and including the closing '}'. Recovers from bad statements.
    private mutating func parseBlockBody() -> [Stmt] {
        var body: [Stmt] = []
        do throws(Abort) { try self.enter() } catch {
            self.synchronizeTopLevel()
            return body
        }
        defer { self.depth -= 1 }
        while !self.current.isPunct(.rbrace) && !self.sink.isFull {
            if self.current.isEOF {
                self.sink.error("expected '}' before end of file", at: self.current, hint: "a '{' is not closed")
                return body
            }
            if self.current.kind == .identifier, ["sub", "backend", "acl", "probe"].contains(self.current.text),
                self.peek().kind == .identifier
            {
                self.sink.error("expected '}' before '\(self.current.text)'", at: self.current, hint: "a '{' is not closed")
                return body
            }
            do throws(Abort) {
                if let s = try self.parseStatement() { body.append(s) }
            } catch {
                self.synchronizeStatement()
            }
        }
        self.advance()
        return body
    }

    private mutating func synchronizeStatement() {
        var depth = 0
        while !self.current.isEOF {
            if self.current.isPunct(.rbrace) {
                if depth == 0 { return }
                depth -= 1
            } else if self.current.isPunct(.lbrace) {
                depth += 1
            } else if self.current.isPunct(.semicolon) && depth == 0 {
                self.advance()
                return
            }
            self.advance()
        }
    }

    private mutating func parseBlock(_ context: String) throws(Abort) -> [Stmt] {
        try self.expect(.lbrace, context)
        return self.parseBlockBody()
    }

    private mutating func parseStatement() throws(Abort) -> Stmt? {
        let t = self.current
        if self.accept(.semicolon) { return nil }
        guard t.kind == .identifier else {
            throw self.fail("expected a statement, found \(t.display)")
        }
        switch t.text {
        case "set":
            self.advance()
            let target = Name(try self.expectIdentifier("a variable after 'set'"))
            if !self.current.isPunct(.assign) {
                let hint = self.current.isPunct(.plus) ? "write 'set x = x + y;'" : nil
                throw self.fail("expected '=' after 'set \(target.text)', found \(self.current.display)", hint: hint)
            }
            self.advance()
            let value = try self.parseExpr()
            try self.expect(.semicolon, "after the value")
            return Stmt(kind: .set(target: target, value: value), location: t.location)
        case "unset", "remove":
            if t.text == "remove" {
                self.sink.error("'remove' is not VCL 4.x", at: t, hint: "use 'unset'")
            }
            self.advance()
            let target = Name(try self.expectIdentifier("a variable after 'unset'"))
            try self.expect(.semicolon, "after 'unset \(target.text)'")
            return Stmt(kind: .unset(target: target), location: t.location)
        case "if":
            return try self.parseIf()
        case "return":
            self.advance()
            try self.expect(.lparen, "after 'return'", hint: "write 'return (hash);'")
            let action = Name(try self.expectIdentifier("an action"))
            var args: [Expr] = []
            if self.accept(.lparen) { args = try self.parseArgs() }
            try self.expect(.rparen, "after the action")
            try self.expect(.semicolon, "after 'return (...)'")
            return Stmt(kind: .return(action: action, args: args), location: t.location)
        case "call":
            self.advance()
            let sub = Name(try self.expectIdentifier("a subroutine name after 'call'"))
            try self.expect(.semicolon, "after 'call \(sub.text)'")
            return Stmt(kind: .call(sub: sub), location: t.location)
        case "new":
            self.advance()
            let name = Name(try self.expectIdentifier("an object name after 'new'"))
            try self.expect(.assign, "after 'new \(name.text)'")
            let ctor = Name(try self.expectIdentifier("a constructor such as directors.round_robin()"))
            try self.expect(.lparen, "after \(ctor.text)")
            let args = try self.parseArgs()
            try self.expect(.semicolon, "after 'new \(name.text) = …'")
            return Stmt(kind: .new(name: name, constructor: ctor, args: args), location: t.location)
        case "else", "elseif", "elsif", "elif":
            throw self.fail("'\(t.text)' without a preceding 'if'")
        default:
            if self.peek().isPunct(.lparen) {
                let e = try self.parsePrimary()
                try self.expect(.semicolon, "after the call")
                return Stmt(kind: .expr(e), location: t.location)
            }
            throw self.fail(
                "expected a statement, found \(t.display)",
                hint: "statements are set, unset, if, return, call, new, or a function call"
            )
        }
    }

    private mutating func parseIf() throws(Abort) -> Stmt {
        let start = self.advance()
        try self.enter()
        defer { self.depth -= 1 }
        var branches: [(condition: Expr, body: [Stmt])] = []
        try self.expect(.lparen, "after 'if'")
        let c = try self.parseExpr()
        try self.expect(.rparen, "after the condition")
        branches.append((c, try self.parseBlock("to open the 'if' body")))
        var elseBody: [Stmt]?
        while self.current.kind == .identifier {
            let kw = self.current.text
            if kw == "elseif" || kw == "elsif" || kw == "elif" || (kw == "else" && self.peek().isIdentifier("if")) {
                self.advance()
                if kw == "else" { self.advance() }
                try self.expect(.lparen, "after '\(kw)'")
                let c = try self.parseExpr()
                try self.expect(.rparen, "after the condition")
                branches.append((c, try self.parseBlock("to open the 'elseif' body")))
            } else if kw == "else" {
                self.advance()
                elseBody = try self.parseBlock("to open the 'else' body")
                break
            } else {
                break
            }
        }
        return Stmt(kind: .if(branches: branches, elseBody: elseBody), location: start.location)
    }
}
