/// A ban: a condition on stored objects, as Varnish's `ban()` takes it
/// (`req.url ~ ^/news && obj.http.Content-Type ~ html`). Objects stored before the ban that
/// match it are not served again; the cache checks bans at lookup time, so adding one costs
/// nothing up front, however many objects it covers.
///
/// Grammar: `condition ("&&" condition)*`, where a condition is `field op argument`;
/// fields are `req.url`, `req.http.NAME`, `obj.status`, `obj.http.NAME`; operators `==`,
/// `!=`, `~`, `!~` (regular expressions in PCRE syntax); an argument is a word or a
/// double-quoted string.
public struct VCLBan: Sendable, CustomStringConvertible {
    public enum Field: Sendable, Hashable {
        case reqURL
        case reqHeader(String)
        case objStatus
        case objHeader(String)
    }

    public enum Operator: String, Sendable, Hashable {
        case equal = "==", notEqual = "!=", match = "~", noMatch = "!~"
    }

    struct Condition: Sendable {
        var field: Field
        var op: Operator
        var argument: String
        var regex: VCLRegex?
    }

    /// Why a ban expression was refused, with the byte offset it refers to.
    public struct ParseError: Error, Sendable, CustomStringConvertible {
        public var message: String
        public var offset: Int
        public var description: String { "ban expression, at character \(self.offset + 1): \(self.message)" }
    }

    public let text: String
    let conditions: [Condition]

    /// What a ban is matched against: the stored object and the request that stored it.
    public struct Subject {
        public var url: String
        public var requestHeader: (String) -> String?
        public var status: Int
        public var objectHeader: (String) -> String?

        public init(url: String, requestHeader: @escaping (String) -> String?, status: Int, objectHeader: @escaping (String) -> String?) {
            self.url = url
            self.requestHeader = requestHeader
            self.status = status
            self.objectHeader = objectHeader
        }
    }

    public var description: String { self.text }

    /// Whether the ban only reads `obj.*` (Varnish's "lurker-friendly" bans); such a ban can be
    /// tested against an object without the request that stored it.
    public var usesOnlyObjectFields: Bool {
        self.conditions.allSatisfy {
            switch $0.field {
            case .objStatus, .objHeader: true
            default: false
            }
        }
    }

    /// Whether the ban reads a request header: only a lookup, with the request in hand, can
    /// test it (the ban lurker cannot).
    public var readsRequestHeaders: Bool {
        self.conditions.contains { if case .reqHeader = $0.field { true } else { false } }
    }

    /// Whether the ban reads `req.url`, which the lurker knows from the cache key only when
    /// the key is the default one (URL and host).
    public var readsURL: Bool {
        self.conditions.contains { $0.field == .reqURL }
    }

    public static func parse(_ text: String) throws(ParseError) -> VCLBan {
        var scanner = Scanner(bytes: Array(text.utf8))
        var conditions: [Condition] = []
        repeat {
            scanner.skipSpaces()
            let fieldStart = scanner.position
            let fieldName = scanner.word()
            guard !fieldName.isEmpty else { throw ParseError(message: "expected a field such as req.url", offset: fieldStart) }
            let field: Field
            let lowered = fieldName.lowercased()
            if lowered == "req.url" {
                field = .reqURL
            } else if lowered == "obj.status" {
                field = .objStatus
            } else if lowered.hasPrefix("req.http."), lowered.count > 9 {
                field = .reqHeader(String(lowered.dropFirst(9)))
            } else if lowered.hasPrefix("obj.http."), lowered.count > 9 {
                field = .objHeader(String(lowered.dropFirst(9)))
            } else {
                throw ParseError(
                    message: "unknown field '\(fieldName)' (use req.url, req.http.NAME, obj.status or obj.http.NAME)",
                    offset: fieldStart)
            }
            scanner.skipSpaces()
            let opStart = scanner.position
            let opText = scanner.operatorToken()
            guard let op = Operator(rawValue: opText) else {
                throw ParseError(message: "expected ==, !=, ~ or !~", offset: opStart)
            }
            scanner.skipSpaces()
            let argStart = scanner.position
            guard let argument = try scanner.argument() else {
                throw ParseError(message: "expected a value after \(opText)", offset: argStart)
            }
            var regex: VCLRegex?
            if op == .match || op == .noMatch {
                do {
                    regex = try VCLRegex(argument)
                } catch {
                    throw ParseError(message: "bad regular expression: \(error.message)", offset: argStart)
                }
            } else if field == .objStatus, Int(argument) == nil {
                throw ParseError(message: "obj.status compares with a number", offset: argStart)
            }
            conditions.append(Condition(field: field, op: op, argument: argument, regex: regex))
            scanner.skipSpaces()
            if scanner.atEnd { break }
            let joinStart = scanner.position
            guard scanner.consume("&&") else { throw ParseError(message: "expected && or the end", offset: joinStart) }
        } while true
        return VCLBan(text: text, conditions: conditions)
    }

    /// Whether the object is covered by the ban (every condition holds).
    public func matches(_ subject: Subject) -> Bool {
        for condition in self.conditions {
            let value: String?
            switch condition.field {
            case .reqURL: value = subject.url
            case .reqHeader(let name): value = subject.requestHeader(name)
            case .objStatus: value = String(subject.status)
            case .objHeader(let name): value = subject.objectHeader(name)
            }
            let holds: Bool
            switch condition.op {
            case .equal: holds = value == condition.argument
            case .notEqual: holds = value != condition.argument
            case .match, .noMatch:
                let matched = value.map { (try? condition.regex?.matches($0)) == true } ?? false
                holds = condition.op == .match ? matched : !matched
            }
            if !holds { return false }
        }
        return true
    }

    private struct Scanner {
        let bytes: [UInt8]
        var position = 0

        var atEnd: Bool { self.position >= self.bytes.count }

        mutating func skipSpaces() {
            while !self.atEnd, self.bytes[self.position] == 0x20 || self.bytes[self.position] == 0x09 { self.position += 1 }
        }

        mutating func word() -> String {
            let start = self.position
            while !self.atEnd {
                let b = self.bytes[self.position]
                if b == 0x20 || b == 0x09 || b == UInt8(ascii: "=") || b == UInt8(ascii: "!") || b == UInt8(ascii: "~") { break }
                self.position += 1
            }
            return String(decoding: self.bytes[start..<self.position], as: UTF8.self)
        }

        mutating func operatorToken() -> String {
            for op in ["==", "!=", "!~", "~"] where self.consume(op) { return op }
            return ""
        }

        mutating func consume(_ token: String) -> Bool {
            let t = Array(token.utf8)
            guard self.position + t.count <= self.bytes.count, Array(self.bytes[self.position..<(self.position + t.count)]) == t else {
                return false
            }
            self.position += t.count
            return true
        }

        mutating func argument() throws(ParseError) -> String? {
            guard !self.atEnd else { return nil }
            if self.bytes[self.position] == UInt8(ascii: "\"") {
                let open = self.position
                self.position += 1
                let start = self.position
                while !self.atEnd, self.bytes[self.position] != UInt8(ascii: "\"") { self.position += 1 }
                guard !self.atEnd else { throw ParseError(message: "unterminated string", offset: open) }
                let value = String(decoding: self.bytes[start..<self.position], as: UTF8.self)
                self.position += 1
                return value
            }
            let start = self.position
            while !self.atEnd, self.bytes[self.position] != 0x20, self.bytes[self.position] != 0x09 { self.position += 1 }
            return start == self.position ? nil : String(decoding: self.bytes[start..<self.position], as: UTF8.self)
        }
    }
}
