import Testing
@testable import VCL

@Suite("Lexer")
struct LexerTests {
    func lex(_ text: String) -> (tokens: [Token], errors: [VCLDiagnostic]) {
        let file = SourceFile(name: "t.vcl", text: text)
        var sink = DiagnosticSink(files: [file])
        let tokens = Lexer.tokenize(file, into: &sink)
        return (tokens, sink.diagnostics)
    }

    @Test("every punctuator, longest match first")
    func punctuators() {
        let all = Punct.allCases.map(\.rawValue).joined(separator: " ")
        let (tokens, errors) = self.lex(all)
        #expect(errors.isEmpty)
        #expect(tokens.dropLast().map(\.kind) == Punct.allCases.map { .punct($0) })
        #expect(self.lex("a==b!=c!~d<=e>=f&&g||h").tokens.filter { if case .punct = $0.kind { true } else { false } }
            .map(\.text) == ["==", "!=", "!~", "<=", ">=", "&&", "||"])
    }

    @Test("identifiers keep dots and dashes: req.http.X-Forwarded-For is one token")
    func identifiers() {
        let (tokens, _) = self.lex("set req.http.X-Forwarded-For = _a1;")
        #expect(tokens.map(\.text) == ["set", "req.http.X-Forwarded-For", "=", "_a1", ";", ""])
        #expect(tokens[1].kind == .identifier)
        #expect(tokens.last?.kind == .eof)
    }

    @Test("numbers: integers, reals, and durations in every unit", arguments: [
        ("10ms", 0.01), ("10s", 10.0), ("2m", 120.0), ("1.5h", 5400.0), ("1d", 86_400.0), ("1w", 604_800.0), ("1y", 31_536_000.0),
    ])
    func durations(text: String, seconds: Double) {
        let (tokens, errors) = self.lex(text)
        #expect(errors.isEmpty)
        #expect(tokens[0].kind == .duration)
        #expect(abs(tokens[0].number - seconds) < 1e-9)
    }

    @Test("integers and reals")
    func plainNumbers() {
        let (tokens, _) = self.lex("42 4.1 0")
        #expect(tokens.map(\.kind) == [.integer, .real, .integer, .eof])
        #expect(tokens[0].number == 42)
        #expect(tokens[1].number == 4.1)
    }

    @Test("an unknown duration unit is an error pointing at the unit")
    func badUnit() {
        let (_, errors) = self.lex("set beresp.ttl = 10k;")
        #expect(errors.count == 1)
        #expect(errors[0].message == "unknown duration unit 'k'")
        #expect(errors[0].location.column == 20)
    }

    @Test("strings: \"...\" and {\"...\"} spanning lines, with quotes and braces inside")
    func strings() {
        let (tokens, errors) = self.lex(#"x = "a b" + {"say "hi" {to} me"} + {"line1"# + "\n" + #"line2"} + "";"#)
        #expect(errors.isEmpty)
        let strings = tokens.filter { $0.kind == .string }.map(\.text)
        #expect(strings == ["a b", #"say "hi" {to} me"#, "line1\nline2", ""])
    }

    @Test("a \"...\" string may not span lines")
    func unterminatedString() {
        let (_, errors) = self.lex("x = \"abc\ny\";")
        #expect(errors.first?.message == "unterminated string")
        #expect(errors.first?.location == SourceLocation(file: "t.vcl", line: 1, column: 5))
        #expect(self.lex("{\"never closed").errors.first?.message == "unterminated long string")
    }

    @Test("comments: #, // and /* */ are skipped; line numbers keep counting")
    func comments() {
        let (tokens, errors) = self.lex("# one\na // two\n/* three\n four */ b /**/ c")
        #expect(errors.isEmpty)
        #expect(tokens.map(\.text) == ["a", "b", "c", ""])
        #expect(tokens[1].location.line == 4)
        #expect(tokens[1].location.column == 10)
        #expect(self.lex("/* open").errors.first?.message == "unterminated comment")
    }

    @Test("an unexpected character is reported and skipped")
    func badCharacter() {
        let (tokens, errors) = self.lex("a @ b 'c'")
        #expect(errors.map(\.message) == ["unexpected character '@'", "unexpected character '''", "unexpected character '''"])
        #expect(errors[1].hint == "VCL strings use double quotes: \"...\"")
        #expect(tokens.map(\.text) == ["a", "b", "c", ""])
    }
}
