/// Expressions, by precedence: `||` < `&&` < `!` < comparisons < `+ -` < `* /` < unary `-` < primary.
extension Parser {
    /// Arguments after '(' up to and including ')'.
    mutating func parseArgs() throws(Abort) -> [Expr] {
        var args: [Expr] = []
        if self.accept(.rparen) { return args }
        repeat {
            args.append(try self.parseExpr())
        } while self.accept(.comma)
        try self.expect(.rparen, "to close the argument list")
        return args
    }

    mutating func parseExpr() throws(Abort) -> Expr {
        try self.enter()
        defer { self.depth -= 1 }
        return try self.parseOr()
    }

    private mutating func binary(_ op: Punct, _ l: Expr, _ r: Expr, _ t: Token) -> Expr {
        Expr(kind: .binary(op, l, r), location: t.location, length: t.length)
    }

    private mutating func parseOr() throws(Abort) -> Expr {
        var l = try self.parseAnd()
        var chained = 0
        defer { self.depth -= chained }
        while self.current.isPunct(.or) {
            let t = self.advance()
            try self.enter()
            chained += 1
            l = self.binary(.or, l, try self.parseAnd(), t)
        }
        return l
    }

    private mutating func parseAnd() throws(Abort) -> Expr {
        var l = try self.parseNot()
        var chained = 0
        defer { self.depth -= chained }
        while self.current.isPunct(.and) {
            let t = self.advance()
            try self.enter()
            chained += 1
            l = self.binary(.and, l, try self.parseNot(), t)
        }
        return l
    }

    private mutating func parseNot() throws(Abort) -> Expr {
        if self.current.isPunct(.not) {
            let t = self.advance()
            try self.enter()
            defer { self.depth -= 1 }
            return Expr(kind: .unary(.not, try self.parseNot()), location: t.location, length: 1)
        }
        return try self.parseComparison()
    }

    private static let comparisons: [Punct] = [.eq, .ne, .match, .notMatch, .lt, .gt, .le, .ge]

    private mutating func parseComparison() throws(Abort) -> Expr {
        let l = try self.parseAdditive()
        if case .punct(let p) = self.current.kind, Parser.comparisons.contains(p) {
            let t = self.advance()
            let r = try self.parseAdditive()
            if case .punct(let q) = self.current.kind, Parser.comparisons.contains(q) {
                throw self.fail("comparisons cannot be chained", hint: "combine them with && or ||")
            }
            return self.binary(p, l, r, t)
        }
        if self.current.isPunct(.assign) {
            throw self.fail("'=' is assignment; compare with '=='")
        }
        return l
    }

    private mutating func parseAdditive() throws(Abort) -> Expr {
        var l = try self.parseMultiplicative()
        var chained = 0
        defer { self.depth -= chained }
        while self.current.isPunct(.plus) || self.current.isPunct(.minus) {
            let t = self.advance()
            try self.enter()
            chained += 1
            guard case .punct(let p) = t.kind else { break }
            l = self.binary(p, l, try self.parseMultiplicative(), t)
        }
        return l
    }

    private mutating func parseMultiplicative() throws(Abort) -> Expr {
        var l = try self.parseUnary()
        var chained = 0
        defer { self.depth -= chained }
        while self.current.isPunct(.star) || self.current.isPunct(.slash) {
            let t = self.advance()
            try self.enter()
            chained += 1
            guard case .punct(let p) = t.kind else { break }
            l = self.binary(p, l, try self.parseUnary(), t)
        }
        return l
    }

    private mutating func parseUnary() throws(Abort) -> Expr {
        if self.current.isPunct(.minus) {
            let t = self.advance()
            try self.enter()
            defer { self.depth -= 1 }
            return Expr(kind: .unary(.minus, try self.parseUnary()), location: t.location, length: 1)
        }
        return try self.parsePrimary()
    }

    mutating func parsePrimary() throws(Abort) -> Expr {
        let t = self.current
        switch t.kind {
        case .string:
            self.advance()
            return Expr(kind: .string(t.text), location: t.location, length: t.length)
        case .integer:
            self.advance()
            return Expr(kind: .integer(Int(t.number)), location: t.location, length: t.length)
        case .real:
            self.advance()
            return Expr(kind: .real(t.number), location: t.location, length: t.length)
        case .duration:
            self.advance()
            return Expr(kind: .duration(t.number), location: t.location, length: t.length)
        case .punct(.lparen):
            self.advance()
            let e = try self.parseExpr()
            try self.expect(.rparen, "to close '('")
            return e
        case .identifier:
            self.advance()
            if t.text == "true" || t.text == "false" {
                return Expr(kind: .bool(t.text == "true"), location: t.location, length: t.length)
            }
            if self.accept(.lparen) {
                let args = try self.parseArgs()
                return Expr(kind: .call(function: t.text, args: args), location: t.location, length: t.length)
            }
            return Expr(kind: .name(t.text), location: t.location, length: t.length)
        default:
            throw self.fail("expected an expression, found \(t.display)")
        }
    }
}
