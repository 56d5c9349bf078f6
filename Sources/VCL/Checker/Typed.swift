/// A lowered expression together with its VCL type.
enum Typed: Sendable {
    case string(StringNode)
    case number(NumberNode, VCLType)
    case bool(BoolNode)
    case ip(IPNode)
    case backend(BackendNode)
    case acl(VCLACL)

    var type: VCLType {
        switch self {
        case .string: return .string
        case .number(_, let t): return t
        case .bool: return .bool
        case .ip: return .ip
        case .backend: return .backend
        case .acl: return .acl
        }
    }
}
