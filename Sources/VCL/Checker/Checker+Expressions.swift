/// Expressions: names, operators with their type rules, and built-in functions.
extension Checker {
    mutating func lowerExpr(_ e: Expr) -> Typed? {
        switch e.kind {
        case .string(let s): return .string(.constant(s))
        case .integer(let i): return .number(.constant(Double(i)), .int)
        case .real(let r): return .number(.constant(r), .real)
        case .duration(let d): return .number(.constant(d), .duration)
        case .bool(let b): return .bool(.constant(b))
        case .name(let n): return self.lowerName(n, e)
        case .call(let function, let args):
            guard let (_, value) = self.lowerBuiltinCall(function, args, e) else { return nil }
            if value == nil {
                self.sink.error("\(function)() does not return a value", at: e.location, length: e.length,
                                hint: "call it as a statement: \(function)(...);")
            }
            return value
        case .unary(.not, let inner):
            return self.lowerCondition(inner).map { .bool(.not($0)) }
        case .unary(_, let inner):
            guard let v = self.lowerExpr(inner) else { return nil }
            guard case .number(let n, let t) = v else {
                self.sink.error("'-' needs a number, found \(v.type.rawValue)", at: e.location, length: e.length)
                return nil
            }
            return .number(.negate(n), t)
        case .binary(let op, let l, let r):
            return self.lowerBinary(op, l, r, e)
        }
    }

    private mutating func lowerName(_ n: String, _ e: Expr) -> Typed? {
        if let info = Symbols.variable(n) {
            self.use(info.readable, at: e.location, length: e.length, hint: "\(n) can be read in: \(Checker.describe(info.readable))") {
                "'\(n)' is not available in \($0.rawValue)"
            }
            switch info.storage {
            case .header(let scope): return .string(.header(scope, Symbols.headerName(n)))
            case .string(let v): return .string(.variable(v))
            case .int(let v): return .number(.int(v), .int)
            case .duration(let v): return .number(.duration(v), .duration)
            case .bool(let v): return .bool(.variable(v))
            case .ip(let v): return .ip(.variable(v))
            case .backend(let v): return .backend(.variable(v))
            }
        }
        if self.backends[n] != nil { return .backend(.constant(.backend(n))) }
        if let acl = self.acls[n] { return .acl(acl) }
        if self.directors[n] != nil {
            self.sink.error("'\(n)' is a director", at: e.location, length: e.length, hint: "use \(n).backend()")
            return nil
        }
        if self.probes[n] != nil {
            self.sink.error("'\(n)' is a probe; it can only be used as a backend's .probe", at: e.location, length: e.length)
            return nil
        }
        _ = self.variable(Name(text: n, location: e.location, length: e.length))
        return nil
    }

    /// Any value in a STRING context (Varnish converts every type to a string there).
    func asString(_ v: Typed) -> StringNode {
        switch v {
        case .string(let s): return s
        case .number(let n, .int): return .int(n)
        case .number(let n, .duration): return .duration(n)
        case .number(let n, _): return .real(n)
        case .bool(let b): return .bool(b)
        case .ip(let i): return .ip(i)
        case .backend(let b): return .backend(b)
        case .acl(let a): return .constant(a.name)
        }
    }

    mutating func typeMismatch(expected: VCLType, found: VCLType, at e: Expr, for what: String, hint: String? = nil) {
        var h = hint
        if h == nil {
            switch (expected, found) {
            case (.duration, .int), (.duration, .real): h = "add a unit, e.g. 120s"
            case (.duration, .string): h = "write a duration such as 1h, or convert with std.duration(\"1h\", 0s)"
            case (.int, .string): h = "write the number without quotes, or convert with std.integer(s, 0)"
            case (.bool, .string): h = "compare it, e.g. req.http.X == \"1\""
            default: break
            }
        }
        self.sink.error("\(what) is \(expected.rawValue), but the value is \(found.rawValue)", at: e.location, length: e.length, hint: h)
    }

    mutating func expectNumber(_ v: Typed, _ type: VCLType, _ e: Expr, for what: String) -> NumberNode? {
        if case .number(let n, let t) = v, t == type || (type == .real && t == .int) { return n }
        self.typeMismatch(expected: type, found: v.type, at: e, for: what)
        return nil
    }

    /// A condition: BOOL, or a STRING/BACKEND meaning "is set".
    mutating func lowerCondition(_ e: Expr) -> BoolNode? {
        guard let v = self.lowerExpr(e) else { return nil }
        switch v {
        case .bool(let b): return b
        case .string(let s): return .isSet(s)
        case .backend(let b): return .backendIsSet(b)
        default:
            self.sink.error("expected a condition, found \(v.type.rawValue)", at: e.location, length: e.length,
                            hint: v.type.isNumeric ? "compare it, e.g. \(v.type == .duration ? "beresp.ttl > 0s" : "req.restarts > 0")" : nil)
            return nil
        }
    }

    private mutating func lowerBinary(_ op: Punct, _ l: Expr, _ r: Expr, _ e: Expr) -> Typed? {
        switch op {
        case .and, .or:
            let a = self.lowerCondition(l)
            let b = self.lowerCondition(r)
            guard let a, let b else { return nil }
            return .bool(op == .and ? .and(a, b) : .or(a, b))
        case .match, .notMatch:
            return self.lowerMatch(op == .notMatch, l, r, e)
        default: break
        }
        let a = self.lowerExpr(l)
        let b = self.lowerExpr(r)
        guard let a, let b else { return nil }
        let mismatch = "cannot apply '\(op.rawValue)' to \(a.type.rawValue) and \(b.type.rawValue)"
        switch op {
        case .plus where a.type == .string || b.type == .string:
            var parts: [StringNode] = []
            for side in [self.asString(a), self.asString(b)] {
                if case .concat(let inner) = side { parts += inner } else { parts.append(side) }
            }
            return .string(.concat(parts))
        case .plus, .minus, .star, .slash:
            guard case .number(let x, let tx) = a, case .number(let y, let ty) = b, let t = Checker.arithmetic(op, tx, ty) else {
                self.sink.error(mismatch, at: e.location, length: e.length,
                                hint: tx(a, b) ? "add a unit to the number, e.g. 10s" : nil)
                return nil
            }
            switch op {
            case .plus: return .number(.add(x, y), t)
            case .minus: return .number(.subtract(x, y), t)
            case .star: return .number(.multiply(x, y), t)
            default: return .number(.divide(x, y, integer: t == .int), t)
            }
        case .eq, .ne:
            let neg = op == .ne
            switch (a, b) {
            case (.string(let x), .string(let y)): return .bool(.stringEquals(x, y, negated: neg))
            case (.number(let x, let tx), .number(let y, let ty)) where (tx == .duration) == (ty == .duration):
                return .bool(.compare(x, op, y))
            case (.bool(let x), .bool(let y)): return .bool(.boolEquals(x, y, negated: neg))
            case (.ip(let x), .ip(let y)): return .bool(.ipEquals(x, y, negated: neg))
            case (.ip, .string), (.string, .ip):
                return .bool(.stringEquals(self.asString(a), self.asString(b), negated: neg))
            case (.backend(let x), .backend(let y)): return .bool(.backendEquals(x, y, negated: neg))
            default:
                var hint: String?
                if a.type.isNumeric && b.type == .string { hint = "write the number without quotes" }
                self.sink.error("cannot compare \(a.type.rawValue) with \(b.type.rawValue)", at: e.location, length: e.length, hint: hint)
                return nil
            }
        case .lt, .gt, .le, .ge:
            guard case .number(let x, let tx) = a, case .number(let y, let ty) = b, (tx == .duration) == (ty == .duration) else {
                self.sink.error(mismatch, at: e.location, length: e.length,
                                hint: a.type == .duration || b.type == .duration ? "compare durations with durations, e.g. beresp.ttl > 0s" : nil)
                return nil
            }
            return .bool(.compare(x, op, y))
        default:
            self.sink.error("unexpected operator '\(op.rawValue)'", at: e.location, length: e.length)
            return nil
        }
    }

    /// True when one side is a DURATION and the other a plain number (the usual "forgot the unit").
    private func tx(_ a: Typed, _ b: Typed) -> Bool {
        (a.type == .duration && (b.type == .int || b.type == .real)) || (b.type == .duration && (a.type == .int || a.type == .real))
    }

    static func arithmetic(_ op: Punct, _ a: VCLType, _ b: VCLType) -> VCLType? {
        switch (op, a, b) {
        case (.plus, .int, .int), (.minus, .int, .int), (.star, .int, .int), (.slash, .int, .int): return .int
        case (.plus, .duration, .duration), (.minus, .duration, .duration): return .duration
        case (.slash, .duration, .duration): return .real
        case (.star, .duration, .int), (.star, .duration, .real), (.star, .int, .duration), (.star, .real, .duration),
            (.slash, .duration, .int), (.slash, .duration, .real):
            return .duration
        case (_, .int, .real), (_, .real, .int), (_, .real, .real): return .real
        default: return nil
        }
    }

    private mutating func lowerMatch(_ negated: Bool, _ l: Expr, _ r: Expr, _ e: Expr) -> Typed? {
        guard let a = self.lowerExpr(l) else { return nil }
        if case .ip(let ip) = a {
            guard case .name(let n) = r.kind, let acl = self.acls[n] else {
                let hint = r.kind.nameText.flatMap { Symbols.suggestion(for: $0, among: Array(self.acls.keys)) }
                self.sink.error("the right side of '~' on an IP must be an ACL name", at: r.location, length: r.length,
                                hint: hint ?? "declare one with acl NAME { \"10.0.0.0\"/8; }")
                return nil
            }
            return .bool(.acl(ip, acl, negated: negated))
        }
        guard case .string(let s) = a else {
            self.sink.error("'~' needs a STRING or an IP on the left, found \(a.type.rawValue)", at: l.location, length: l.length)
            return nil
        }
        guard let regex = self.regex(r) else { return nil }
        return .bool(.match(s, regex, negated: negated, e.location))
    }

    /// A regular expression literal, compiled now.
    mutating func regex(_ e: Expr) -> VCLRegex? {
        guard case .string(let pattern) = e.kind else {
            self.sink.error("expected a regular expression in double quotes", at: e.location, length: e.length,
                            hint: "regular expressions are literals, compiled when the VCL loads")
            return nil
        }
        do {
            return try VCLRegex(pattern)
        } catch {
            self.sink.error("invalid regular expression: \(error.message) (at offset \(error.offset))",
                            at: e.location, length: e.length)
            return nil
        }
    }
}
