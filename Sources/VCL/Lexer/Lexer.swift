/// Turns one source file into tokens (libvcc's `vcc_token.c`).
///
/// Never traps: any byte sequence yields tokens plus diagnostics. Strings are `"..."` (one line,
/// no escapes, as in VCL 4.1) or `{"..."}` (any bytes, ends at the first `"}`); comments are
/// `#`, `//` and `/* */`; numbers may carry a duration unit (`ms s m h d w y`).
struct Lexer {
    static let durationUnits: [String: Double] = [
        "ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800, "y": 31_536_000,
    ]

    private let file: SourceFile
    private let bytes: [UInt8]
    private var pos = 0
    private var line = 1
    private var lineStart = 0

    init(file: SourceFile) {
        self.file = file
        self.bytes = file.bytes
    }

    /// Lexes the whole file; the last token is always `.eof`.
    static func tokenize(_ file: SourceFile, into sink: inout DiagnosticSink) -> [Token] {
        var lexer = Lexer(file: file)
        var tokens: [Token] = []
        while true {
            let t = lexer.next(&sink)
            tokens.append(t)
            if t.isEOF { return tokens }
        }
    }

    private func peek(_ ahead: Int = 0) -> UInt8 {
        let i = self.pos + ahead
        return i < self.bytes.count ? self.bytes[i] : 0
    }

    private var atEnd: Bool { self.pos >= self.bytes.count }

    private var location: SourceLocation {
        SourceLocation(file: self.file.name, line: self.line, column: self.pos - self.lineStart + 1)
    }

    private mutating func advance() {
        if self.bytes[self.pos] == UInt8(ascii: "\n") {
            self.line += 1
            self.lineStart = self.pos + 1
        }
        self.pos += 1
    }

    private func text(_ from: Int, _ to: Int) -> String {
        String(decoding: self.bytes[from..<to], as: UTF8.self)
    }

    static func isIdentStart(_ b: UInt8) -> Bool {
        (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == UInt8(ascii: "_")
    }

    static func isIdentChar(_ b: UInt8) -> Bool {
        isIdentStart(b) || isDigit(b) || b == UInt8(ascii: ".") || b == UInt8(ascii: "-")
    }

    static func isDigit(_ b: UInt8) -> Bool { b >= 0x30 && b <= 0x39 }

    /// Skips whitespace and comments; reports an unterminated `/*`.
    private mutating func skipTrivia(_ sink: inout DiagnosticSink) {
        while !self.atEnd {
            let c = self.peek()
            if c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0D {
                self.advance()
            } else if c == UInt8(ascii: "#") || (c == UInt8(ascii: "/") && self.peek(1) == UInt8(ascii: "/")) {
                while !self.atEnd, self.peek() != 0x0A { self.advance() }
            } else if c == UInt8(ascii: "/") && self.peek(1) == UInt8(ascii: "*") {
                let start = self.location
                self.advance()
                self.advance()
                var closed = false
                while !self.atEnd {
                    if self.peek() == UInt8(ascii: "*") && self.peek(1) == UInt8(ascii: "/") {
                        self.advance()
                        self.advance()
                        closed = true
                        break
                    }
                    self.advance()
                }
                if !closed {
                    sink.error("unterminated comment", at: start, length: 2, hint: "close it with '*/'")
                }
            } else {
                return
            }
        }
    }

    mutating func next(_ sink: inout DiagnosticSink) -> Token {
        self.skipTrivia(&sink)
        let start = self.pos
        let loc = self.location
        guard !self.atEnd else { return Token(kind: .eof, text: "", location: loc, length: 1) }
        let c = self.peek()

        if c == UInt8(ascii: "{") && self.peek(1) == UInt8(ascii: "\"") {
            return self.longString(start: start, loc: loc, &sink)
        }
        if c == UInt8(ascii: "\"") {
            return self.shortString(start: start, loc: loc, &sink)
        }
        if Lexer.isIdentStart(c) {
            while !self.atEnd, Lexer.isIdentChar(self.peek()) { self.advance() }
            return Token(kind: .identifier, text: self.text(start, self.pos), location: loc, length: self.pos - start)
        }
        if Lexer.isDigit(c) {
            return self.number(start: start, loc: loc, &sink)
        }
        // Longest punctuator first.
        let two: [(UInt8, UInt8, Punct)] = [
            (0x3D, 0x3D, .eq), (0x21, 0x3D, .ne), (0x21, 0x7E, .notMatch), (0x3C, 0x3D, .le),
            (0x3E, 0x3D, .ge), (0x26, 0x26, .and), (0x7C, 0x7C, .or),
        ]
        for (a, b, p) in two where c == a && self.peek(1) == b {
            self.advance()
            self.advance()
            return Token(kind: .punct(p), text: p.rawValue, location: loc, length: 2)
        }
        if let p = Punct(rawValue: String(UnicodeScalar(c))), p.rawValue.utf8.count == 1 {
            self.advance()
            return Token(kind: .punct(p), text: p.rawValue, location: loc, length: 1)
        }
        // Unknown byte: report it, skip one whole UTF-8 sequence, go on.
        self.advance()
        while !self.atEnd, self.peek() & 0xC0 == 0x80 { self.advance() }
        let shown = self.text(start, self.pos)
        sink.error(
            "unexpected character '\(shown.unicodeScalars.allSatisfy { $0.value >= 0x20 && $0.value < 0x7F } ? shown : "\\u{…}")'",
            at: loc,
            length: 1,
            hint: c == UInt8(ascii: "'") ? "VCL strings use double quotes: \"...\"" : nil
        )
        return self.next(&sink)
    }

    private mutating func shortString(start: Int, loc: SourceLocation, _ sink: inout DiagnosticSink) -> Token {
        self.advance()
        let contentStart = self.pos
        while !self.atEnd, self.peek() != UInt8(ascii: "\""), self.peek() != 0x0A { self.advance() }
        let content = self.text(contentStart, self.pos)
        if self.peek() == UInt8(ascii: "\"") && !self.atEnd {
            self.advance()
        } else {
            sink.error(
                "unterminated string",
                at: loc,
                length: self.pos - start,
                hint: "a \"...\" string ends on the line it starts; use {\"...\"} for text spanning lines"
            )
        }
        return Token(kind: .string, text: content, location: loc, length: self.pos - start)
    }

    private mutating func longString(start: Int, loc: SourceLocation, _ sink: inout DiagnosticSink) -> Token {
        self.advance()
        self.advance()
        let contentStart = self.pos
        while !self.atEnd {
            if self.peek() == UInt8(ascii: "\"") && self.peek(1) == UInt8(ascii: "}") {
                let content = self.text(contentStart, self.pos)
                self.advance()
                self.advance()
                return Token(kind: .string, text: content, location: loc, length: 2)
            }
            self.advance()
        }
        sink.error("unterminated long string", at: loc, length: 2, hint: "a {\" string ends with \"}")
        return Token(kind: .string, text: self.text(contentStart, self.pos), location: loc, length: 2)
    }

    private mutating func number(start: Int, loc: SourceLocation, _ sink: inout DiagnosticSink) -> Token {
        while !self.atEnd, Lexer.isDigit(self.peek()) { self.advance() }
        var isReal = false
        if self.peek() == UInt8(ascii: "."), Lexer.isDigit(self.peek(1)) {
            isReal = true
            self.advance()
            while !self.atEnd, Lexer.isDigit(self.peek()) { self.advance() }
        }
        let numText = self.text(start, self.pos)
        var value = Lexer.parseDecimal(numText)
        if !isReal, numText.utf8.count > 15 {
            sink.error("number '\(numText)' is too large", at: loc, length: self.pos - start)
            value = 0
        }
        guard Lexer.isIdentStart(self.peek()) else {
            return Token(
                kind: isReal ? .real : .integer, text: numText, number: value, location: loc, length: self.pos - start
            )
        }
        let unitStart = self.pos
        while !self.atEnd, Lexer.isIdentChar(self.peek()) { self.advance() }
        let unit = self.text(unitStart, self.pos)
        let full = self.text(start, self.pos)
        if let factor = Lexer.durationUnits[unit] {
            return Token(kind: .duration, text: full, number: value * factor, location: loc, length: self.pos - start)
        }
        sink.error(
            "unknown duration unit '\(unit)'",
            at: SourceLocation(file: loc.file, line: loc.line, column: loc.column + (unitStart - start)),
            length: self.pos - unitStart,
            hint: "units are ms, s, m, h, d, w, y (e.g. 10s, 1.5h)"
        )
        return Token(kind: .duration, text: full, number: 0, location: loc, length: self.pos - start)
    }

    /// Parses `123` or `12.5` (digits only; the lexer has checked the shape).
    static func parseDecimal(_ s: String) -> Double {
        var intPart = 0.0
        var frac = 0.0
        var scale = 1.0
        var seenDot = false
        for b in s.utf8 {
            if b == UInt8(ascii: ".") {
                seenDot = true
            } else if isDigit(b) {
                let d = Double(b - 0x30)
                if seenDot {
                    scale /= 10
                    frac += d * scale
                } else {
                    intPart = intPart * 10 + d
                }
            }
        }
        return intPart + frac
    }
}
