/// Statements: set, unset, if, return, call, new, and calls used as statements.
extension Checker {
    mutating func lowerBody(_ body: [Stmt], top: Bool = false) -> [Instruction] {
        var out: [Instruction] = []
        for stmt in body {
            let saved = self.atTopOfInit
            self.atTopOfInit = top
            if let i = self.lowerStatement(stmt) { out.append(i) }
            self.atTopOfInit = saved
        }
        return out
    }

    private mutating func lowerStatement(_ stmt: Stmt) -> Instruction? {
        switch stmt.kind {
        case .set(let target, let value):
            return self.lowerSet(target, value)
        case .unset(let target):
            guard let info = self.variable(target) else { return nil }
            guard case .header(let scope) = info.storage else {
                self.sink.error("cannot unset '\(target.text)'", at: target.location, length: target.length,
                                hint: "only header variables (req.http.NAME, …) can be unset; set it instead")
                return nil
            }
            self.use(info.unsettable, at: target.location, length: target.length,
                     hint: "\(target.text) can be unset in: \(Checker.describe(info.unsettable))") {
                "'\(target.text)' cannot be unset in \($0.rawValue)"
            }
            return .unsetHeader(scope, Symbols.headerName(target.text))
        case .if(let branches, let elseBody):
            var lowered: [(BoolNode, [Instruction])] = []
            for (cond, body) in branches {
                let c = self.lowerCondition(cond)
                let b = self.lowerBody(body)
                if let c { lowered.append((c, b)) }
            }
            let otherwise = elseBody.map { self.lowerBody($0) } ?? []
            return .branch(lowered, otherwise: otherwise)
        case .return(let action, let args):
            return self.lowerReturn(action, args)
        case .call(let sub):
            if VCLSubroutine(rawValue: sub.text) != nil {
                self.sink.error("cannot call the built-in subroutine '\(sub.text)'", at: sub.location, length: sub.length,
                                hint: "move the shared code into a sub of your own and call that")
                return nil
            }
            guard let callee = self.customSubs[sub.text] else {
                self.sink.error("undefined subroutine '\(sub.text)'", at: sub.location, length: sub.length,
                                hint: Symbols.suggestion(for: sub.text, among: Array(self.customSubs.keys)).map { $0 }
                                    ?? "define it with 'sub \(sub.text) { ... }'")
                return nil
            }
            self.units[self.currentUnit].calls.append((callee, sub))
            return .call(callee)
        case .new(let name, _, _):
            if self.unitRole != .initialize || !self.atTopOfInit {
                self.sink.error("'new' is only allowed at the top level of vcl_init", at: name.location, length: name.length)
            }
            return nil
        case .expr(let e):
            return self.lowerCallStatement(e)
        }
    }

    /// A variable by name, or nil after reporting it unknown.
    mutating func variable(_ name: Name) -> VariableInfo? {
        if let info = Symbols.variable(name.text) { return info }
        var hint = Symbols.suggestion(for: name.text, among: Array(self.definedAt.keys))
        if hint == nil, ["req", "bereq", "beresp", "obj", "resp"].contains(name.text) {
            hint = "name a field, e.g. \(name.text).http.NAME"
        }
        self.sink.error("unknown variable '\(name.text)'", at: name.location, length: name.length, hint: hint)
        return nil
    }

    private mutating func lowerSet(_ target: Name, _ value: Expr) -> Instruction? {
        guard let info = self.variable(target) else { return nil }
        if info.writable.isEmpty {
            self.sink.error("'\(target.text)' is read-only", at: target.location, length: target.length,
                            hint: "it can be read in: \(Checker.describe(info.readable))")
            return nil
        }
        if let reason = info.unsupportedWrite {
            self.sink.error("'\(target.text)' cannot be set in Lacquer", at: target.location, length: target.length,
                            hint: reason)
            return nil
        }
        self.use(info.writable, at: target.location, length: target.length,
                 hint: "\(target.text) can be set in: \(Checker.describe(info.writable))") {
            "'\(target.text)' cannot be set in \($0.rawValue)"
        }
        guard let v = self.lowerExpr(value) else { return nil }
        switch info.storage {
        case .header(let scope):
            return .setHeader(scope, Symbols.headerName(target.text), self.asString(v), target.location)
        case .string(let s):
            return .setString(s, self.asString(v), target.location)
        case .int(let i):
            guard let n = self.expectNumber(v, .int, value, for: target.text) else { return nil }
            return .setInt(i, n, target.location)
        case .duration(let d):
            guard let n = self.expectNumber(v, .duration, value, for: target.text) else { return nil }
            return .setDuration(d, n)
        case .bool(let b):
            guard case .bool(let node) = v else {
                self.typeMismatch(expected: .bool, found: v.type, at: value, for: target.text)
                return nil
            }
            return .setBool(b, node)
        case .backend(let b):
            guard case .backend(let node) = v else {
                self.typeMismatch(expected: .backend, found: v.type, at: value, for: target.text,
                                  hint: "name a backend, or a director's .backend()")
                return nil
            }
            return .setBackend(b, node)
        case .ip:
            return nil
        }
    }

    private mutating func lowerReturn(_ action: Name, _ args: [Expr]) -> Instruction? {
        guard let name = VCLAction.Name(rawValue: action.text) else {
            self.sink.error("unknown action '\(action.text)'", at: action.location, length: action.length,
                            hint: self.unitRole.map { "\($0.rawValue) can return: " + Checker.actions($0) })
            return nil
        }
        let allowed = SubSet(rawValue: VCLSubroutine.allCases.filter { $0.allowedActions.contains(name) }
            .reduce(0) { $0 | SubSet.bit($1) })
        let hint: (VCLSubroutine) -> String = { sub in
            if sub == .recv && name == .lookup {
                return "in VCL 4.x vcl_recv returns (hash) to look the object up; lookup is vcl_hash's action"
            }
            return "\(sub.rawValue) can return: " + Checker.actions(sub)
        }
        if let role = self.unitRole, !role.allowedActions.contains(name) {
            self.sink.error("'\(action.text)' is not a valid action in \(role.rawValue)", at: action.location,
                            length: action.length, hint: hint(role))
            return nil
        }
        if self.unitRole == nil {
            self.use(allowed, at: action.location, length: action.length) { "'\(action.text)' is not a valid action in \($0.rawValue)" }
        }
        if name == .synth {
            guard (1...2).contains(args.count) else {
                self.sink.error("synth takes a status and an optional reason", at: action.location, length: action.length,
                                hint: "write return (synth(404, \"Not Found\"));")
                return nil
            }
            guard let s = self.lowerExpr(args[0]), let status = self.expectNumber(s, .int, args[0], for: "the status") else {
                return nil
            }
            var reason: StringNode?
            if args.count == 2, let r = self.lowerExpr(args[1]) { reason = self.asString(r) }
            return .return(.synth(status: status, reason: reason, action.location))
        }
        if let first = args.first {
            self.sink.error("'\(action.text)' takes no arguments", at: first.location, length: first.length)
            return nil
        }
        guard let simple = VCLAction(simple: name) else { return nil }
        return .return(.fixed(simple))
    }

    static func actions(_ sub: VCLSubroutine) -> String {
        VCLAction.Name.allCases.filter { sub.allowedActions.contains($0) }.map(\.rawValue).joined(separator: ", ")
    }

    private mutating func lowerCallStatement(_ e: Expr) -> Instruction? {
        guard case .call(let function, let args) = e.kind else {
            self.sink.error("expected a statement", at: e.location, length: e.length)
            return nil
        }
        if function.hasSuffix(".add_backend") {
            self.addBackend(String(function.dropLast(".add_backend".count)), args, e)
            return nil
        }
        guard let (instruction, value) = self.lowerBuiltinCall(function, args, e) else { return nil }
        if let instruction { return instruction }
        if value != nil {
            self.sink.error("the value of \(function)() is not used", at: e.location, length: e.length,
                            hint: "assign it, e.g. set req.url = \(function)(...);")
        }
        return nil
    }

    private mutating func addBackend(_ director: String, _ args: [Expr], _ e: Expr) {
        guard var d = self.directors[director] else {
            self.sink.error("undefined director '\(director)'", at: e.location, length: e.length,
                            hint: "declare it in vcl_init: new \(director) = directors.round_robin();")
            return
        }
        if self.unitRole != .initialize || !self.atTopOfInit {
            self.sink.error("add_backend() is only allowed at the top level of vcl_init", at: e.location, length: e.length)
            return
        }
        let weighted = d.kind == .random || d.kind == .hash
        guard args.count == (weighted ? 2 : 1) else {
            self.sink.error(
                "\(director).add_backend() takes \(weighted ? "a backend and a weight" : "one backend")", at: e.location,
                length: e.length, hint: weighted ? "write \(director).add_backend(b1, 1.0);" : "write \(director).add_backend(b1);"
            )
            return
        }
        guard case .name(let b) = args[0].kind, self.backends[b] != nil else {
            self.sink.error("expected a backend name", at: args[0].location, length: args[0].length,
                            hint: (args[0].kind.nameText).flatMap { Symbols.suggestion(for: $0, among: self.backendOrder) })
            return
        }
        var weight = 1.0
        if weighted {
            switch args[1].kind {
            case .real(let w): weight = w
            case .integer(let w): weight = Double(w)
            default:
                self.sink.error("expected a constant weight", at: args[1].location, length: args[1].length)
                return
            }
        }
        d.members.append(VCLDirector.Member(backend: b, weight: weight))
        self.directors[director] = d
    }
}

extension Expr.Kind {
    var nameText: String? {
        if case .name(let n) = self { return n }
        return nil
    }
}
