/// A VCL program compiled once at load: declarations as plain values plus instruction trees for
/// each built-in sub (the user's definitions first, then builtin.vcl's, concatenated as Varnish
/// does). Immutable and `Sendable`: share one instance across event loops; reload = compile a new
/// one and swap it.
public struct CompiledVCL: Sendable {
    /// Backends in declaration order; the first is the default, as in Varnish.
    public let backends: [VCLBackend]
    /// Named probes (inline probes are only on their backend).
    public let probes: [VCLProbe]
    public let acls: [VCLACL]
    /// Directors declared in vcl_init, in declaration order.
    public let directors: [VCLDirector]

    private let entries: [[Instruction]?]
    let subs: [[Instruction]]
    /// Built-in subs that a source other than builtin.vcl defines (the rest run builtin.vcl's
    /// code alone, whose effect the server may apply without evaluating it).
    public let userDefined: Set<VCLSubroutine>
    /// Whether the program imports vmod_vsthrottle (the server then gives requests its table).
    public let usesThrottle: Bool

    init(
        backends: [VCLBackend], probes: [VCLProbe], acls: [VCLACL], directors: [VCLDirector],
        entries: [VCLSubroutine: [Instruction]], userDefined: Set<VCLSubroutine>, subs: [[Instruction]],
        usesThrottle: Bool = false
    ) {
        self.userDefined = userDefined
        self.usesThrottle = usesThrottle
        self.backends = backends
        self.probes = probes
        self.acls = acls
        self.directors = directors
        self.entries = VCLSubroutine.allCases.map { entries[$0] }
        self.subs = subs
    }

    /// The backend requests go to unless VCL sets `req.backend_hint`: the first one declared.
    public var defaultBackend: VCLBackend? { self.backends.first }

    public func backend(named name: String) -> VCLBackend? { self.backends.first { $0.name == name } }
    public func acl(named name: String) -> VCLACL? { self.acls.first { $0.name == name } }
    public func director(named name: String) -> VCLDirector? { self.directors.first { $0.name == name } }

    /// Whether any source defines `sub` (builtin.vcl defines them all when appended).
    public func defines(_ sub: VCLSubroutine) -> Bool { self.entries[sub.index] != nil }

    /// Runs one built-in sub for one request. Returns the action of the first `return (...)`
    /// reached, or `.none` if the code ran to its end. A thrown `VCLRuntimeError` means: answer
    /// this request through vcl_synth with status 503.
    public func run<Context: VCLContext>(
        _ sub: VCLSubroutine,
        context: inout Context
    ) throws(VCLRuntimeError) -> VCLAction {
        guard let body = self.entries[sub.index] else { return .none }
        return try Evaluator<Context>(program: self).run(body, &context, depth: 0) ?? .none
    }
}

extension VCLSubroutine {
    var index: Int {
        switch self {
        case .recv: return 0
        case .pipe: return 1
        case .pass: return 2
        case .hash: return 3
        case .purge: return 4
        case .hit: return 5
        case .miss: return 6
        case .deliver: return 7
        case .synth: return 8
        case .backendFetch: return 9
        case .backendResponse: return 10
        case .backendError: return 11
        case .initialize: return 12
        case .finalize: return 13
        }
    }
}
