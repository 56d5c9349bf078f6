/// The compiled form of VCL: typed trees with every name resolved (variables to enum keys, subs
/// to indexes, ACLs to values) and every regular expression compiled. Built once by the checker,
/// walked by `Evaluator` per request; nothing is looked up by string or re-parsed at run time.

indirect enum StringNode: Sendable {
    case constant(String)
    case header(HeaderScope, String)
    case variable(VCLStringVariable)
    case concat([StringNode])
    case regsub(StringNode, VCLRegex, StringNode, all: Bool, SourceLocation)
    case lower(StringNode)
    case upper(StringNode)
    case querysort(StringNode)
    case int(NumberNode)
    case real(NumberNode)
    case duration(NumberNode)
    case bool(BoolNode)
    case ip(IPNode)
    case backend(BackendNode)
}

/// INT, REAL and DURATION values, computed as Double (exact for integers below 2^53).
indirect enum NumberNode: Sendable {
    case constant(Double)
    case int(VCLIntVariable)
    case duration(VCLDurationVariable)
    case add(NumberNode, NumberNode)
    case subtract(NumberNode, NumberNode)
    case multiply(NumberNode, NumberNode)
    case divide(NumberNode, NumberNode, integer: Bool)
    case negate(NumberNode)
    /// std.integer / std.real / std.duration: parse a string, or the fallback.
    case parse(StringNode, fallback: NumberNode, VCLType)
}

indirect enum BoolNode: Sendable {
    case constant(Bool)
    case variable(VCLBoolVariable)
    case not(BoolNode)
    case and(BoolNode, BoolNode)
    case or(BoolNode, BoolNode)
    /// A STRING in a condition: true when it is set (e.g. `if (req.http.Cookie)`).
    case isSet(StringNode)
    case backendIsSet(BackendNode)
    case stringEquals(StringNode, StringNode, negated: Bool)
    case compare(NumberNode, Punct, NumberNode)
    case boolEquals(BoolNode, BoolNode, negated: Bool)
    case ipEquals(IPNode, IPNode, negated: Bool)
    case backendEquals(BackendNode, BackendNode, negated: Bool)
    case match(StringNode, VCLRegex, negated: Bool, SourceLocation)
    case acl(IPNode, VCLACL, negated: Bool)
    /// `vsthrottle.is_denied(key, limit, period)`.
    case throttled(StringNode, limit: NumberNode, period: NumberNode)
}

indirect enum IPNode: Sendable {
    case constant(VCLIP)
    case variable(VCLIPVariable)
    case parse(StringNode, fallback: IPNode)
}

indirect enum BackendNode: Sendable {
    case constant(VCLBackendRef)
    case variable(VCLBackendVariable)
    /// `d.backend()` or `d.backend(key)` for a hash director.
    case director(String, key: StringNode?)
}

enum ActionNode: Sendable {
    case fixed(VCLAction)
    case synth(status: NumberNode, reason: StringNode?, SourceLocation)
}

indirect enum Instruction: Sendable {
    case setHeader(HeaderScope, String, StringNode, SourceLocation)
    case unsetHeader(HeaderScope, String)
    case setString(VCLStringVariable, StringNode, SourceLocation)
    case setInt(VCLIntVariable, NumberNode, SourceLocation)
    case setDuration(VCLDurationVariable, NumberNode)
    case setBool(VCLBoolVariable, BoolNode)
    case setBackend(VCLBackendVariable, BackendNode)
    case branch([(BoolNode, [Instruction])], otherwise: [Instruction])
    case `return`(ActionNode)
    case call(Int)
    case hashData(StringNode)
    case ban(StringNode)
    case synthetic(StringNode)
    case log(StringNode)
}
