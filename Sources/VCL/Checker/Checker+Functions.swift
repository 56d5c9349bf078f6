/// Built-in functions (regsub, hash_data, ban, synthetic), vmod_std and director methods.
extension Checker {
    static let functions = [
        "regsub", "regsuball", "hash_data", "ban", "synthetic", "std.log", "std.tolower", "std.toupper",
        "std.querysort", "std.integer", "std.real", "std.duration", "std.ip", "vsthrottle.is_denied",
        "tls.is_tls", "tls.version", "tls.authority", "tls.alpn",
    ]

    /// Lowers a call. Returns nil after an error; otherwise the statement it makes (for VOID
    /// functions) or its value.
    mutating func lowerBuiltinCall(_ function: String, _ args: [Expr], _ e: Expr) -> (Instruction?, Typed?)? {
        if let dot = function.lastIndex(of: "."), self.directors[String(function[..<dot])] != nil {
            return self.directorMethod(String(function[..<dot]), String(function[function.index(after: dot)...]), args, e)
        }
        if function.hasPrefix("std.") && !self.imports.contains("std") {
            self.sink.error("\(function)() needs 'import std;'", at: e.location, length: e.length,
                            hint: "add 'import std;' after 'vcl 4.1;'")
            return nil
        }
        if function.hasPrefix("vsthrottle.") && !self.imports.contains("vsthrottle") {
            self.sink.error("\(function)() needs 'import vsthrottle;'", at: e.location, length: e.length,
                            hint: "add 'import vsthrottle;' after 'vcl 4.1;'")
            return nil
        }
        if function.hasPrefix("tls.") && !self.imports.contains("tls") {
            self.sink.error("\(function)() needs 'import tls;'", at: e.location, length: e.length,
                            hint: "add 'import tls;' after 'vcl 4.1;'")
            return nil
        }
        func arity(_ n: Int, _ checker: inout Checker) -> Bool {
            guard args.count == n else {
                checker.sink.error("\(function)() takes \(n) argument\(n == 1 ? "" : "s"), found \(args.count)",
                                   at: e.location, length: e.length)
                return false
            }
            return true
        }
        func str(_ i: Int, _ checker: inout Checker) -> StringNode? {
            checker.lowerExpr(args[i]).map { checker.asString($0) }
        }
        switch function {
        case "regsub", "regsuball":
            guard arity(3, &self) else { return nil }
            let subject = str(0, &self)
            let regex = self.regex(args[1])
            let replacement = str(2, &self)
            guard let subject, let regex, let replacement else { return nil }
            return (nil, .string(.regsub(subject, regex, replacement, all: function == "regsuball", e.location)))
        case "hash_data", "ban", "synthetic", "std.log":
            guard arity(1, &self), let s = str(0, &self) else { return nil }
            switch function {
            case "hash_data":
                self.use(SubSet(.hash), at: e.location, length: e.length, hint: "hash_data() feeds the cache key in vcl_hash") {
                    "hash_data() cannot be used in \($0.rawValue)"
                }
                return (.hashData(s), nil)
            case "ban":
                self.use(SubSet.clientAndBackend, at: e.location, length: e.length) { "ban() cannot be used in \($0.rawValue)" }
                return (.ban(s), nil)
            case "synthetic":
                self.use(SubSet(.synth, .backendError), at: e.location, length: e.length,
                         hint: "synthetic() sets the body in vcl_synth or vcl_backend_error; return (synth(...)) to get there") {
                    "synthetic() cannot be used in \($0.rawValue)"
                }
                return (.synthetic(s), nil)
            default:
                return (.log(s), nil)
            }
        case "std.tolower", "std.toupper", "std.querysort":
            guard arity(1, &self), let s = str(0, &self) else { return nil }
            let node: StringNode = function == "std.tolower" ? .lower(s) : function == "std.toupper" ? .upper(s) : .querysort(s)
            return (nil, .string(node))
        case "std.integer", "std.real", "std.duration":
            guard arity(2, &self), let s = str(0, &self), let fb = self.lowerExpr(args[1]) else { return nil }
            let type: VCLType = function == "std.integer" ? .int : function == "std.real" ? .real : .duration
            guard let fallback = self.expectNumber(fb, type, args[1], for: "the fallback of \(function)()") else { return nil }
            return (nil, .number(.parse(s, fallback: fallback, type), type))
        case "vsthrottle.is_denied":
            // vmod_vsthrottle: is_denied(STRING key, INT limit, DURATION period): true once `key`
            // went over `limit` calls within `period` (a token bucket of `limit`, refilled over `period`).
            guard arity(3, &self), let key = str(0, &self), let limitValue = self.lowerExpr(args[1]),
                let periodValue = self.lowerExpr(args[2]),
                let limit = self.expectNumber(limitValue, .int, args[1], for: "the limit of vsthrottle.is_denied()"),
                let period = self.expectNumber(periodValue, .duration, args[2], for: "the period of vsthrottle.is_denied()")
            else { return nil }
            return (nil, .bool(.throttled(key, limit: limit, period: period)))
        case "tls.is_tls", "tls.version", "tls.authority", "tls.alpn":
            // vmod tls: facts of the client's TLS connection, in the client subs.
            guard arity(0, &self) else { return nil }
            self.use(SubSet.client, at: e.location, length: e.length, hint: "the tls functions describe the client connection") {
                "\(function)() cannot be used in \($0.rawValue)"
            }
            switch function {
            case "tls.is_tls": return (nil, .bool(.variable(.tlsIsTLS)))
            case "tls.version": return (nil, .string(.variable(.tlsVersion)))
            case "tls.authority": return (nil, .string(.variable(.tlsAuthority)))
            default: return (nil, .string(.variable(.tlsALPN)))
            }
        case "std.ip":
            guard arity(2, &self), let s = str(0, &self), let fb = self.lowerExpr(args[1]) else { return nil }
            if case .ip(let fallback) = fb { return (nil, .ip(.parse(s, fallback: fallback))) }
            if case .string(.constant(let text)) = fb, let ip = VCLIP(parsing: text) {
                return (nil, .ip(.parse(s, fallback: .constant(ip))))
            }
            self.typeMismatch(expected: .ip, found: fb.type, at: args[1], for: "the fallback of std.ip()",
                              hint: "give an IP variable or an address in quotes, e.g. \"0.0.0.0\"")
            return nil
        default:
            let hint = Symbols.suggestion(for: function, among: Checker.functions)
            if function.hasSuffix(".backend") || function.hasSuffix(".add_backend") {
                self.sink.error("undefined director '\(function.split(separator: ".").first.map(String.init) ?? function)'",
                                at: e.location, length: e.length,
                                hint: "declare it in vcl_init: new NAME = directors.round_robin();")
            } else {
                self.sink.error("unknown function '\(function)'", at: e.location, length: e.length,
                                hint: hint ?? "functions are " + Checker.functions.joined(separator: ", "))
            }
            return nil
        }
    }

    private mutating func directorMethod(_ name: String, _ method: String, _ args: [Expr], _ e: Expr) -> (Instruction?, Typed?)? {
        guard let d = self.directors[name] else { return nil }
        switch method {
        case "backend":
            if d.kind == .hash {
                guard args.count == 1, let k = self.lowerExpr(args[0]) else {
                    if args.count != 1 {
                        self.sink.error("\(name).backend() takes a key, e.g. \(name).backend(req.url)", at: e.location, length: e.length)
                    }
                    return nil
                }
                return (nil, .backend(.director(name, key: self.asString(k))))
            }
            guard args.isEmpty else {
                self.sink.error("\(name).backend() takes no arguments", at: e.location, length: e.length)
                return nil
            }
            return (nil, .backend(.director(name, key: nil)))
        case "add_backend":
            self.sink.error("add_backend() is only allowed at the top level of vcl_init", at: e.location, length: e.length)
            return nil
        default:
            self.sink.error("a \(d.kind.rawValue) director has no method '\(method)'", at: e.location, length: e.length,
                            hint: "methods are .add_backend() (in vcl_init) and .backend()")
            return nil
        }
    }
}
