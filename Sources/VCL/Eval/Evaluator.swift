import CachePolicy

/// Walks compiled instructions for one request against a `VCLContext`. Generic over the context
/// so the server's concrete type is used directly (no existential box per variable access).
/// A `return` anywhere (including in a called sub) ends the built-in sub being run.
struct Evaluator<C: VCLContext> {
    static var maxCallDepth: Int { 64 }

    let program: CompiledVCL

    func run(_ body: [Instruction], _ ctx: inout C, depth: Int) throws(VCLRuntimeError) -> VCLAction? {
        for instruction in body {
            switch instruction {
            case .setHeader(let scope, let name, let value, let loc):
                let v = try self.string(value, &ctx) ?? ""
                guard Builtins.isValidHeaderValue(v) else {
                    throw VCLRuntimeError(.badHeaderValue, "value for header '\(name)' contains CR, LF or NUL", at: loc)
                }
                ctx.setHeader(scope, name, v)
            case .unsetHeader(let scope, let name):
                ctx.unsetHeader(scope, name)
            case .setString(let variable, let value, let loc):
                let v = try self.string(value, &ctx) ?? ""
                guard Builtins.isValidHeaderValue(v) else {
                    throw VCLRuntimeError(.badHeaderValue, "value for \(variable.rawValue) contains CR, LF or NUL", at: loc)
                }
                ctx.setString(variable, v)
            case .setInt(let variable, let value, let loc):
                let d = try self.number(value, &ctx)
                guard let i = Builtins.int(d) else {
                    throw VCLRuntimeError(.arithmetic, "\(variable.rawValue) cannot hold \(Builtins.formatReal(d))", at: loc)
                }
                if variable == .berespStatus || variable == .respStatus, !(100...999).contains(i) {
                    throw VCLRuntimeError(.badStatus, "status \(i) is outside 100...999", at: loc)
                }
                ctx.setInt(variable, i)
            case .setDuration(let variable, let value):
                ctx.setDuration(variable, try self.number(value, &ctx))
            case .setBool(let variable, let value):
                ctx.setBool(variable, try self.bool(value, &ctx))
            case .setBackend(let variable, let value):
                if let b = try self.backend(value, &ctx) { ctx.setBackend(variable, b) }
            case .branch(let branches, let otherwise):
                var taken: [Instruction]? = nil
                for (condition, body) in branches where try self.bool(condition, &ctx) {
                    taken = body
                    break
                }
                if let a = try self.run(taken ?? otherwise, &ctx, depth: depth) { return a }
            case .return(let action):
                return try self.action(action, &ctx)
            case .call(let index):
                guard depth < Self.maxCallDepth, index < self.program.subs.count else {
                    throw VCLRuntimeError(.callDepthExceeded, "sub calls nested too deeply",
                                          at: SourceLocation(file: "", line: 0, column: 0))
                }
                if let a = try self.run(self.program.subs[index], &ctx, depth: depth + 1) { return a }
            case .hashData(let s):
                ctx.hashData(try self.string(s, &ctx) ?? "")
            case .ban(let s):
                ctx.ban(try self.string(s, &ctx) ?? "")
            case .synthetic(let s):
                ctx.synthetic(try self.string(s, &ctx) ?? "")
            case .log(let s):
                ctx.log(try self.string(s, &ctx) ?? "")
            }
        }
        return nil
    }

    private func action(_ a: ActionNode, _ ctx: inout C) throws(VCLRuntimeError) -> VCLAction {
        switch a {
        case .fixed(let action):
            return action
        case .synth(let statusNode, let reasonNode, let loc):
            let d = try self.number(statusNode, &ctx)
            guard let status = Builtins.int(d), (100...999).contains(status) else {
                throw VCLRuntimeError(.badStatus, "synth status \(Builtins.formatReal(d)) is outside 100...999", at: loc)
            }
            let reason = try reasonNode.map { n throws(VCLRuntimeError) in try self.string(n, &ctx) ?? "" }
            if let reason, !Builtins.isValidHeaderValue(reason) {
                throw VCLRuntimeError(.badHeaderValue, "synth reason contains CR, LF or NUL", at: loc)
            }
            return .synth(status: status, reason: reason)
        }
    }

    /// nil means "not set" (an absent header); string contexts treat it as "".
    func string(_ node: StringNode, _ ctx: inout C) throws(VCLRuntimeError) -> String? {
        switch node {
        case .constant(let s): return s
        case .header(let scope, let name): return ctx.header(scope, name)
        case .variable(let v): return ctx.string(v)
        case .concat(let parts):
            var out = ""
            for p in parts { out += try self.string(p, &ctx) ?? "" }
            return out
        case .regsub(let subject, let regex, let replacement, let all, let loc):
            let s = try self.string(subject, &ctx) ?? ""
            let r = try self.string(replacement, &ctx) ?? ""
            do {
                return try regex.substitute(s, with: r, all: all)
            } catch {
                throw VCLRuntimeError(.regexFailure, "regular expression failed (PCRE2 error \(error.code))", at: loc)
            }
        case .lower(let s): return try self.string(s, &ctx).map(Builtins.lowercased)
        case .upper(let s): return try self.string(s, &ctx).map(Builtins.uppercased)
        case .querysort(let s): return try self.string(s, &ctx).map(Builtins.querysort)
        case .int(let n): return Builtins.formatInt(try self.number(n, &ctx))
        case .real(let n), .duration(let n): return Builtins.formatReal(try self.number(n, &ctx))
        case .bool(let b): return try self.bool(b, &ctx) ? "true" : "false"
        case .ip(let i): return try self.ip(i, &ctx).text
        case .backend(let b): return try self.backend(b, &ctx)?.name
        }
    }

    func number(_ node: NumberNode, _ ctx: inout C) throws(VCLRuntimeError) -> Double {
        switch node {
        case .constant(let d): return d
        case .int(let v): return Double(ctx.int(v))
        case .duration(let v): return ctx.duration(v)
        case .add(let a, let b): return try self.number(a, &ctx) + self.number(b, &ctx)
        case .subtract(let a, let b): return try self.number(a, &ctx) - self.number(b, &ctx)
        case .multiply(let a, let b): return try self.number(a, &ctx) * self.number(b, &ctx)
        case .divide(let a, let b, let integer):
            let x = try self.number(a, &ctx)
            let y = try self.number(b, &ctx)
            guard y != 0 else {
                throw VCLRuntimeError(.arithmetic, "division by zero", at: SourceLocation(file: "", line: 0, column: 0))
            }
            return integer ? (x / y).rounded(.towardZero) : x / y
        case .negate(let a): return -(try self.number(a, &ctx))
        case .parse(let s, let fallback, let type):
            if let v = Builtins.parse(try self.string(s, &ctx), as: type) { return v }
            return try self.number(fallback, &ctx)
        }
    }

    func bool(_ node: BoolNode, _ ctx: inout C) throws(VCLRuntimeError) -> Bool {
        switch node {
        case .constant(let b): return b
        case .variable(let v): return ctx.bool(v)
        case .not(let b): return !(try self.bool(b, &ctx))
        case .and(let a, let b):
            guard try self.bool(a, &ctx) else { return false }
            return try self.bool(b, &ctx)
        case .or(let a, let b):
            if try self.bool(a, &ctx) { return true }
            return try self.bool(b, &ctx)
        case .isSet(let s): return try self.string(s, &ctx) != nil
        case .backendIsSet(let b): return try self.backend(b, &ctx) != nil
        case .stringEquals(let a, let b, let negated):
            return (try self.string(a, &ctx) ?? "" == self.string(b, &ctx) ?? "") != negated
        case .compare(let a, let op, let b):
            let x = try self.number(a, &ctx)
            let y = try self.number(b, &ctx)
            switch op {
            case .eq: return x == y
            case .ne: return x != y
            case .lt: return x < y
            case .gt: return x > y
            case .le: return x <= y
            default: return x >= y
            }
        case .boolEquals(let a, let b, let negated): return (try self.bool(a, &ctx) == self.bool(b, &ctx)) != negated
        case .ipEquals(let a, let b, let negated): return (try self.ip(a, &ctx).bytes == self.ip(b, &ctx).bytes) != negated
        case .backendEquals(let a, let b, let negated): return (try self.backend(a, &ctx) == self.backend(b, &ctx)) != negated
        case .match(let s, let regex, let negated, let loc):
            // An unset header does not match (so `!~` is true), as in Varnish.
            guard let subject = try self.string(s, &ctx) else { return negated }
            do {
                return try regex.matches(subject) != negated
            } catch {
                throw VCLRuntimeError(.regexFailure, "regular expression failed (PCRE2 error \(error.code))", at: loc)
            }
        case .acl(let ip, let acl, let negated):
            return acl.matches(ipBytes: try self.ip(ip, &ctx).bytes) != negated
        case .throttled(let key, let limit, let period):
            let name = try self.string(key, &ctx) ?? ""
            let count = try self.number(limit, &ctx)
            let seconds = try self.number(period, &ctx)
            guard count.isFinite, count >= 0, count < Double(Int.max) else { return true }
            return ctx.isDenied(key: name, limit: Int(count), period: seconds)
        }
    }

    func ip(_ node: IPNode, _ ctx: inout C) throws(VCLRuntimeError) -> VCLIP {
        switch node {
        case .constant(let ip): return ip
        case .variable(let v): return ctx.ip(v)
        case .parse(let s, let fallback):
            if let text = try self.string(s, &ctx), let ip = VCLIP(parsing: String(text.trimmingOWS())) { return ip }
            return try self.ip(fallback, &ctx)
        }
    }

    func backend(_ node: BackendNode, _ ctx: inout C) throws(VCLRuntimeError) -> VCLBackendRef? {
        switch node {
        case .constant(let b): return b
        case .variable(let v): return ctx.backend(v)
        case .director(let name, let key):
            return .director(name, key: try key.map { k throws(VCLRuntimeError) in try self.string(k, &ctx) ?? "" })
        }
    }
}
