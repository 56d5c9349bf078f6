import Testing
@testable import VCL

/// Renders an expression as an S-expression to check shape and precedence.
func sexpr(_ e: Expr) -> String {
    switch e.kind {
    case .string(let s): return "\"\(s)\""
    case .integer(let i): return "\(i)"
    case .real(let r): return "\(r)"
    case .duration(let d): return "\(d)s"
    case .bool(let b): return "\(b)"
    case .name(let n): return n
    case .call(let f, let args): return "\(f)(" + args.map(sexpr).joined(separator: ", ") + ")"
    case .unary(let op, let x): return "(\(op.rawValue) \(sexpr(x)))"
    case .binary(let op, let l, let r): return "(\(op.rawValue) \(sexpr(l)) \(sexpr(r)))"
    }
}

@Suite("Parser")
struct ParserTests {
    func parse(_ text: String) -> (Program, [VCLDiagnostic]) {
        let file = SourceFile(name: "t.vcl", text: text)
        var sink = DiagnosticSink(files: [file])
        let tokens = Lexer.tokenize(file, into: &sink)
        var parser = Parser(tokens: tokens, sink: sink)
        var program = Program()
        parser.parseFile(into: &program)
        return (program, parser.sink.diagnostics)
    }

    func expr(_ text: String) -> String {
        let (program, errors) = self.parse("vcl 4.1; sub vcl_recv { set req.http.X = \(text); }")
        guard errors.isEmpty, case .sub(let s)? = program.declarations.first, case .set(_, let v)? = s.body.first?.kind else {
            return "error: \(errors.map(\.message))"
        }
        return sexpr(v)
    }

    @Test("precedence: || < && < ! < comparison < + - < * /", arguments: [
        ("a || b && c", "(|| a (&& b c))"),
        ("a && b || c", "(|| (&& a b) c)"),
        ("!a == b", "(! (== a b))"),
        ("!a && b", "(&& (! a) b)"),
        ("a + b == c", "(== (+ a b) c)"),
        ("a + b * c", "(+ a (* b c))"),
        ("a - b - c", "(- (- a b) c)"),
        ("(a || b) && c", "(&& (|| a b) c)"),
        ("-1s + 2s", "(+ (- 1.0s) 2.0s)"),
        ("req.url ~ \"^/a\" && req.url !~ \"b\"", "(&& (~ req.url \"^/a\") (!~ req.url \"b\"))"),
        ("regsub(req.url, \"a\", \"b\") + std.tolower(\"X\")", "(+ regsub(req.url, \"a\", \"b\") std.tolower(\"X\"))"),
        ("true", "true"),
    ])
    func precedence(text: String, tree: String) {
        #expect(self.expr(text) == tree)
    }

    @Test("every statement kind")
    func statements() throws {
        let (program, errors) = self.parse("""
            vcl 4.1;
            import std;
            sub vcl_recv {
                set req.http.A = "1";
                unset req.http.B;
                if (a) { call x; } elseif (b) { return (pass); } else { return (synth(404, "Not Found")); }
                hash_data(req.url);
                ;
            }
            sub vcl_init { new rr = directors.round_robin(); rr.add_backend(b1); }
            """)
        #expect(errors.isEmpty)
        #expect(program.declarations.count == 3)
        guard case .sub(let recv) = program.declarations[1], case .sub(let initSub) = program.declarations[2] else {
            Issue.record("expected subs")
            return
        }
        let kinds = recv.body.map { stmt -> String in
            switch stmt.kind {
            case .set: "set"
            case .unset: "unset"
            case .if(let branches, let e): "if\(branches.count)\(e == nil ? "" : "+else")"
            case .return: "return"
            case .call: "call"
            case .new: "new"
            case .expr: "expr"
            }
        }
        #expect(kinds == ["set", "unset", "if2+else", "expr"])
        guard case .if(let branches, let elseBody?) = recv.body[2].kind, case .return(let action, let args)? = elseBody.first?.kind else {
            Issue.record("expected if with else")
            return
        }
        #expect(branches[0].body.count == 1)
        #expect(action.text == "synth")
        #expect(args.map(sexpr) == ["404", "\"Not Found\""])
        guard case .new(let n, let ctor, _)? = initSub.body.first?.kind else {
            Issue.record("expected new")
            return
        }
        #expect(n.text == "rr")
        #expect(ctor.text == "directors.round_robin")
    }

    @Test("backend, probe and acl declarations")
    func declarations() {
        let (program, errors) = self.parse("""
            vcl 4.1;
            probe p { .url = "/health"; .request = "GET / HTTP/1.1" "Host: x"; .interval = 5s; }
            backend b { .host = "127.0.0.1"; .port = "8080"; .probe = { .url = "/"; }; }
            acl local { "127.0.0.1"; "10.0.0.0"/8; ! "10.1.2.3"; }
            """)
        #expect(errors.isEmpty)
        guard case .probe(let p) = program.declarations[0], case .backend(let b) = program.declarations[1],
            case .acl(let a) = program.declarations[2]
        else {
            Issue.record("wrong declarations")
            return
        }
        #expect(p.fields.map(\.name.text) == ["url", "request", "interval"])
        if case .strings(let lines) = p.fields[1].value { #expect(lines == ["GET / HTTP/1.1", "Host: x"]) } else { Issue.record("request") }
        if case .block = b.fields[2].value {} else { Issue.record("inline probe") }
        #expect(a.entries.map(\.address) == ["127.0.0.1", "10.0.0.0", "10.1.2.3"])
        #expect(a.entries.map(\.prefixLength) == [nil, 8, nil])
        #expect(a.entries.map(\.negated) == [false, false, true])
    }

    @Test("syntax errors carry file:line:col and recovery finds later ones")
    func recovery() {
        let (_, errors) = self.parse("""
            vcl 4.1;
            sub vcl_recv {
                set req.url "x";
                set req.http.A = ;
            }
            sub vcl_deliver { return (deliver) }
            """)
        #expect(errors.map(\.message) == [
            "expected '=' after 'set req.url', found string \"x\"",
            "expected an expression, found ';'",
            "expected ';' after 'return (...)', found '}'",
        ])
        #expect(errors.map(\.location.line) == [3, 4, 6])
    }

    @Test("missing version line, and deep nesting, are errors not crashes")
    func limits() {
        #expect(self.parse("sub vcl_recv {}").1.first?.message == "missing VCL version declaration")
        let deep = "vcl 4.1; sub vcl_recv { set req.http.X = " + String(repeating: "(", count: 5000) + "1;}"
        #expect(self.parse(deep).1.first?.message.hasPrefix("nesting is too deep") == true)
        let long = "vcl 4.1; sub vcl_recv { set req.http.X = " + Array(repeating: "\"a\"", count: 5000).joined(separator: " + ") + ";}"
        #expect(self.parse(long).1.first?.message.hasPrefix("nesting is too deep") == true)
    }
}
