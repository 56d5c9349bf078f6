import VCL

/// A query over access log records, in the spirit of varnishlog's `-q`:
/// `status >= 500`, `cache = MISS`, `url ~ ^/api and not method == GET`, `(status == 502 or
/// status == 504) and backend != b0`.
///
/// Fields: status, bytes, xid, ttfb, time (seconds taken) compare as numbers; cache, method,
/// url, client, backend, host, referer, ua, proto as text. Operators: `=`/`==`, `!=`, `<`,
/// `<=`, `>`, `>=`, `~` and `!~` (PCRE2, as VCL). `and` binds tighter than `or`; `not` and
/// parentheses as usual. Values may be quoted with `"` or `'`.
public struct AccessLogFilter: Sendable {
    indirect enum Node: Sendable {
        case all([Node])
        case any([Node])
        case not(Node)
        case compare(Field, Op, Value)
    }

    enum Field: String, Sendable, CaseIterable {
        case status, bytes, xid, ttfb, time, cache, method, url, client, backend, host, referer, ua, proto

        var isNumeric: Bool { [.status, .bytes, .xid, .ttfb, .time].contains(self) }
    }

    enum Op: String, Sendable {
        case eq = "==", ne = "!=", lt = "<", le = "<=", gt = ">", ge = ">=", match = "~", noMatch = "!~"
    }

    enum Value: @unchecked Sendable {
        case number(Double)
        case text(String)
        case regex(VCLRegex)
    }

    let root: Node
    public let text: String

    public struct ParseError: Error, CustomStringConvertible {
        public var message: String
        public var description: String { self.message }
    }

    public static func parse(_ text: String) throws(ParseError) -> AccessLogFilter {
        var parser = Parser(tokens: try Self.tokens(text))
        let root = try parser.orExpression()
        if let extra = parser.peek {
            throw ParseError(message: "unexpected '\(extra)' in the query")
        }
        return AccessLogFilter(root: root, text: text)
    }

    public func matches(_ record: AccessRecord) -> Bool {
        Self.evaluate(self.root, record)
    }

    private static func evaluate(_ node: Node, _ record: AccessRecord) -> Bool {
        switch node {
        case .all(let nodes): return nodes.allSatisfy { Self.evaluate($0, record) }
        case .any(let nodes): return nodes.contains { Self.evaluate($0, record) }
        case .not(let node): return !Self.evaluate(node, record)
        case .compare(let field, let op, let value):
            switch value {
            case .number(let number):
                guard let actual = Self.number(field, record) else { return op == .ne }
                switch op {
                case .eq: return actual == number
                case .ne: return actual != number
                case .lt: return actual < number
                case .le: return actual <= number
                case .gt: return actual > number
                case .ge: return actual >= number
                case .match, .noMatch: return false
                }
            case .text(let text):
                let actual = Self.text(field, record)
                let equal = actual?.lowercased() == text.lowercased()
                return op == .eq ? equal : !equal
            case .regex(let regex):
                let actual = Self.text(field, record) ?? ""
                let found = (try? regex.matches(actual)) ?? false
                return op == .match ? found : !found
            }
        }
    }

    private static func number(_ field: Field, _ record: AccessRecord) -> Double? {
        switch field {
        case .status: Double(record.status)
        case .bytes: Double(record.bytes)
        case .xid: record.xid.map { Double($0) }
        case .ttfb: record.timeToFirstByte < 0 ? nil : record.timeToFirstByte
        case .time: record.duration
        default: nil
        }
    }

    private static func text(_ field: Field, _ record: AccessRecord) -> String? {
        switch field {
        case .cache: record.cache
        case .method: record.method
        case .url: record.target
        case .client: record.client
        case .backend: record.backend
        case .host: record.host
        case .referer: record.referer
        case .ua: record.userAgent
        case .proto: record.proto
        case .status: String(record.status)
        case .bytes: String(record.bytes)
        case .xid: record.xid.map { String($0) }
        case .ttfb, .time: self.number(field, record).map { String($0) }
        }
    }

    // MARK: Parsing

    private enum Token: Equatable, CustomStringConvertible {
        case word(String)
        case quoted(String)
        case op(String)
        case open, close

        var description: String {
            switch self {
            case .word(let text), .quoted(let text), .op(let text): text
            case .open: "("
            case .close: ")"
            }
        }
    }

    private static func tokens(_ text: String) throws(ParseError) -> [Token] {
        var tokens: [Token] = []
        let chars = Array(text)
        var index = 0
        while index < chars.count {
            let char = chars[index]
            if char == " " || char == "\t" {
                index += 1
            } else if char == "(" {
                tokens.append(.open)
                index += 1
            } else if char == ")" {
                tokens.append(.close)
                index += 1
            } else if char == "\"" || char == "'" {
                guard let end = chars[(index + 1)...].firstIndex(of: char) else {
                    throw ParseError(message: "unterminated quote in the query")
                }
                tokens.append(.quoted(String(chars[(index + 1)..<end])))
                index = end + 1
            } else if "=!<>~".contains(char) {
                var op = String(char)
                if index + 1 < chars.count, "=~".contains(chars[index + 1]) {
                    op.append(chars[index + 1])
                }
                index += op.count
                tokens.append(.op(op == "=" ? "==" : op))
            } else {
                var word = ""
                while index < chars.count, !" \t()=!<>~\"'".contains(chars[index]) {
                    word.append(chars[index])
                    index += 1
                }
                tokens.append(.word(word))
            }
        }
        return tokens
    }

    private struct Parser {
        var tokens: [Token]
        var position = 0

        var peek: Token? { self.position < self.tokens.count ? self.tokens[self.position] : nil }

        mutating func next() -> Token? {
            defer { self.position += 1 }
            return self.peek
        }

        mutating func orExpression() throws(ParseError) -> Node {
            var terms = [try self.andExpression()]
            while case .word(let word)? = self.peek, word.lowercased() == "or" {
                self.position += 1
                terms.append(try self.andExpression())
            }
            return terms.count == 1 ? terms[0] : .any(terms)
        }

        mutating func andExpression() throws(ParseError) -> Node {
            var terms = [try self.unary()]
            while case .word(let word)? = self.peek, word.lowercased() == "and" {
                self.position += 1
                terms.append(try self.unary())
            }
            return terms.count == 1 ? terms[0] : .all(terms)
        }

        mutating func unary() throws(ParseError) -> Node {
            switch self.next() {
            case .word(let word) where word.lowercased() == "not":
                return .not(try self.unary())
            case .open:
                let inner = try self.orExpression()
                guard self.next() == .close else { throw ParseError(message: "missing ')' in the query") }
                return inner
            case .word(let name):
                guard let field = Field(rawValue: name.lowercased()) else {
                    let known = Field.allCases.map(\.rawValue).joined(separator: ", ")
                    throw ParseError(message: "unknown field '\(name)' (known: \(known))")
                }
                guard case .op(let symbol)? = self.next(), let op = Op(rawValue: symbol) else {
                    throw ParseError(message: "'\(name)' must be followed by ==, !=, <, <=, >, >=, ~ or !~")
                }
                let raw: String
                switch self.next() {
                case .word(let text)?, .quoted(let text)?: raw = text
                default: throw ParseError(message: "'\(name) \(symbol)' needs a value")
                }
                return .compare(field, op, try Self.value(raw, field: field, op: op))
            case let token?:
                throw ParseError(message: "unexpected '\(token)' in the query")
            case nil:
                throw ParseError(message: "the query is empty or ends too early")
            }
        }

        static func value(_ raw: String, field: Field, op: Op) throws(ParseError) -> Value {
            switch op {
            case .match, .noMatch:
                do {
                    return .regex(try VCLRegex(raw))
                } catch {
                    throw ParseError(message: "bad regular expression '\(raw)': \(error.message)")
                }
            case .lt, .le, .gt, .ge:
                guard field.isNumeric, let number = Double(raw) else {
                    throw ParseError(message: "'\(field.rawValue) \(op.rawValue) \(raw)' compares numbers: status, bytes, xid, ttfb or time with a number")
                }
                return .number(number)
            case .eq, .ne:
                if field.isNumeric {
                    guard let number = Double(raw) else {
                        throw ParseError(message: "'\(field.rawValue)' is a number; '\(raw)' is not")
                    }
                    return .number(number)
                }
                return .text(raw)
            }
        }
    }
}
