/// Resolves names, checks types and where each variable and action is allowed, and lowers the
/// tree into `Instruction`s (libvcc's `vcc_expr.c` type checks + `vcc_xref.c` cross-references).
///
/// Passes: (1) collect declarations and detect duplicates; (2) compile backends, probes, ACLs;
/// (3) lower every sub body, recording each variable, function and action use with the set of
/// built-in subs that allow it; (4) build the call graph, reject recursion and undefined subs,
/// and check every use against every built-in sub that reaches it.
struct Checker {
    /// A use to check once we know which built-in subs reach the sub it is in.
    struct Use {
        var allowed: SubSet
        var location: SourceLocation
        var length: Int
        var message: (VCLSubroutine) -> String
        var hint: String?
    }

    /// One `sub` definition: a built-in sub's part, or a custom sub.
    struct Unit {
        var name: Name
        var role: VCLSubroutine?
        var decl: SubDecl
        var body: [Instruction] = []
        var uses: [Use] = []
        var calls: [(callee: Int, site: Name)] = []
    }

    var sink: DiagnosticSink
    var imports: Set<String> = []
    /// One namespace for backends, probes, ACLs and directors (as in Varnish's symbol table).
    var definedAt: [String: SourceLocation] = [:]
    var backendOrder: [String] = []
    var backends: [String: VCLBackend] = [:]
    var probes: [String: VCLProbe] = [:]
    var acls: [String: VCLACL] = [:]
    /// ACLs the server provides, visible unless a source declares one of the same name.
    var predefinedACLs: [VCLACL] = []
    var directorOrder: [String] = []
    var directors: [String: VCLDirector] = [:]
    var units: [Unit] = []
    var customSubs: [String: Int] = [:]

    // Lowering state.
    var currentUnit = 0
    var atTopOfInit = false

    init(sink: DiagnosticSink) { self.sink = sink }

    mutating func check(_ program: Program) -> CompiledVCL? {
        self.collect(program)
        for decl in program.declarations {
            switch decl {
            case .probe(let p): self.compileProbeDecl(p)
            default: break
            }
        }
        for decl in program.declarations {
            switch decl {
            case .backend(let b): self.compileBackend(b)
            case .acl(let a): self.compileACL(a)
            default: break
            }
        }
        for acl in self.predefinedACLs where self.acls[acl.name] == nil && self.definedAt[acl.name] == nil {
            self.acls[acl.name] = acl
        }
        self.collectDirectors()
        for i in self.units.indices {
            self.currentUnit = i
            self.units[i].body = self.lowerBody(self.units[i].decl.body, top: self.units[i].role == .initialize)
        }
        self.checkCallGraph()
        guard self.sink.isEmpty else { return nil }
        var entries: [VCLSubroutine: [Instruction]] = [:]
        var userDefined: Set<VCLSubroutine> = []
        for u in self.units {
            if let role = u.role {
                entries[role, default: []] += u.body
                if u.name.location.file != VCLSource.builtin.name { userDefined.insert(role) }
            }
        }
        return CompiledVCL(
            backends: self.backendOrder.compactMap { self.backends[$0] },
            probes: self.probes.values.sorted { ($0.name ?? "") < ($1.name ?? "") },
            acls: self.acls.values.sorted { $0.name < $1.name },
            directors: self.directorOrder.compactMap { self.directors[$0] },
            entries: entries,
            userDefined: userDefined,
            subs: self.units.map(\.body),
            usesThrottle: self.imports.contains("vsthrottle")
        )
    }

    /// Pass 1: names of everything, so order of declaration does not matter.
    private mutating func collect(_ program: Program) {
        for decl in program.declarations {
            switch decl {
            case .import(let name, let loc):
                if name == "std" || name == "directors" || name == "vsthrottle" || name == "tls" {
                    self.imports.insert(name)
                } else {
                    self.sink.error(
                        "unknown module '\(name)'", at: loc, length: name.utf8.count,
                        hint: "Lacquer provides the modules std, directors, vsthrottle and tls"
                    )
                }
            case .backend(let b): self.define(b.name, "backend")
            case .probe(let p): if let n = p.name { self.define(n, "probe") }
            case .acl(let a): self.define(a.name, "acl")
            case .sub(let s):
                let name = s.name.text
                if let role = VCLSubroutine(rawValue: name) {
                    // Several definitions of a built-in sub are concatenated, as in Varnish.
                    self.units.append(Unit(name: s.name, role: role, decl: s))
                } else if name.hasPrefix("vcl_") {
                    self.sink.error(
                        "unknown built-in subroutine '\(name)'", at: s.name.location, length: s.name.length,
                        hint: "names starting with vcl_ are reserved; built-in subs are "
                            + VCLSubroutine.allCases.map(\.rawValue).joined(separator: ", ")
                    )
                } else if let first = self.customSubs[name] {
                    let loc = self.units[first].name.location
                    self.sink.error(
                        "subroutine '\(name)' is defined twice", at: s.name.location, length: s.name.length,
                        hint: "first defined at \(loc); only vcl_* subs may be defined more than once"
                    )
                } else {
                    self.customSubs[name] = self.units.count
                    self.units.append(Unit(name: s.name, role: nil, decl: s))
                }
            }
        }
    }

    @discardableResult
    mutating func define(_ name: Name, _ what: String) -> Bool {
        if let first = self.definedAt[name.text] {
            self.sink.error(
                "'\(name.text)' is already defined", at: name.location, length: name.length,
                hint: "first defined at \(first); backends, probes, ACLs and directors share one namespace"
            )
            return false
        }
        if Symbols.variable(name.text) != nil || name.text.contains(".") {
            self.sink.error("'\(name.text)' cannot be used as a \(what) name", at: name.location, length: name.length)
            return false
        }
        self.definedAt[name.text] = name.location
        return true
    }

    /// Directors are declared by `new` at the top of vcl_init; they are known before any sub is
    /// lowered so vcl_recv can use `d.backend()` wherever vcl_init is written.
    private mutating func collectDirectors() {
        for u in self.units where u.role == .initialize {
            for stmt in u.decl.body {
                guard case .new(let name, let ctor, let args) = stmt.kind else { continue }
                let kinds = VCLDirector.Kind.allCases.map { "directors." + $0.rawValue }
                guard ctor.text.hasPrefix("directors."),
                    let kind = VCLDirector.Kind(rawValue: String(ctor.text.dropFirst("directors.".count)))
                else {
                    self.sink.error(
                        "unknown constructor '\(ctor.text)'", at: ctor.location, length: ctor.length,
                        hint: "available: " + kinds.joined(separator: ", ") + " (shard: use directors.hash)"
                    )
                    continue
                }
                if !self.imports.contains("directors") {
                    self.sink.error("'\(ctor.text)' needs 'import directors;'", at: ctor.location, length: ctor.length,
                                    hint: "add 'import directors;' after 'vcl 4.1;'")
                }
                if !args.isEmpty, let a = args.first {
                    self.sink.error("\(ctor.text)() takes no arguments", at: a.location, length: a.length)
                }
                if self.define(name, "director") {
                    self.directorOrder.append(name.text)
                    self.directors[name.text] = VCLDirector(name: name.text, kind: kind, members: [])
                }
            }
        }
    }

    /// Pass 4: which built-in subs reach each unit; recursion; then every recorded use.
    private mutating func checkCallGraph() {
        var contexts = [SubSet](repeating: .nothing, count: self.units.count)
        var via = [String?](repeating: nil, count: self.units.count)
        for (i, u) in self.units.enumerated() {
            guard let role = u.role else { continue }
            var stack = [i]
            var seen: Set<Int> = [i]
            contexts[i].insert(SubSet(role))
            while let top = stack.popLast() {
                for (callee, _) in self.units[top].calls where !seen.contains(callee) {
                    seen.insert(callee)
                    contexts[callee].insert(SubSet(role))
                    if via[callee] == nil { via[callee] = self.units[top].name.text }
                    stack.append(callee)
                }
            }
        }
        self.findRecursion()
        for (i, u) in self.units.enumerated() {
            for use in u.uses {
                guard let bad = contexts[i].subtracting(use.allowed).members.first else { continue }
                var message = use.message(bad)
                if u.role == nil {
                    message += " (sub '\(u.name.text)' is called from \(bad.rawValue))"
                }
                self.sink.error(message, at: use.location, length: use.length, hint: use.hint)
            }
        }
    }

    /// Depth-first search with an explicit stack (hostile input may chain thousands of subs).
    private mutating func findRecursion() {
        // 0 = unvisited, 1 = on the current path, 2 = done.
        var state = [Int](repeating: 0, count: self.units.count)
        for root in self.units.indices where state[root] == 0 {
            var path: [(unit: Int, nextCall: Int)] = [(root, 0)]
            state[root] = 1
            while let (u, next) = path.last {
                let calls = self.units[u].calls
                guard next < calls.count else {
                    state[u] = 2
                    path.removeLast()
                    continue
                }
                path[path.count - 1].nextCall += 1
                let (callee, site) = calls[next]
                if state[callee] == 1 {
                    let start = path.firstIndex { $0.unit == callee } ?? 0
                    let names = path[start...].map { self.units[$0.unit].name.text } + [site.text]
                    self.sink.error(
                        "recursive call to '\(site.text)'", at: site.location, length: site.length,
                        hint: "subs may not call themselves, directly or indirectly: " + names.joined(separator: " → ")
                    )
                } else if state[callee] == 0 {
                    state[callee] = 1
                    path.append((callee, 0))
                }
            }
        }
    }

    // MARK: recording uses

    var unitRole: VCLSubroutine? { self.units[self.currentUnit].role }

    mutating func use(
        _ allowed: SubSet, at location: SourceLocation, length: Int, hint: String? = nil,
        _ message: @escaping (VCLSubroutine) -> String
    ) {
        self.units[self.currentUnit].uses.append(
            Use(allowed: allowed, location: location, length: length, message: message, hint: hint)
        )
    }

    static func describe(_ subs: SubSet) -> String {
        let m = subs.members.map(\.rawValue)
        return m.isEmpty ? "nowhere" : m.joined(separator: ", ")
    }
}
