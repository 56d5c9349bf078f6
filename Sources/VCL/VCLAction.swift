/// The built-in subroutines: the steps of Varnish's request and fetch state machines at which
/// VCL decides something.
public enum VCLSubroutine: String, Sendable, Hashable, CaseIterable {
    case recv = "vcl_recv", pipe = "vcl_pipe", pass = "vcl_pass", hash = "vcl_hash", purge = "vcl_purge"
    case hit = "vcl_hit", miss = "vcl_miss", deliver = "vcl_deliver", synth = "vcl_synth"
    case backendFetch = "vcl_backend_fetch", backendResponse = "vcl_backend_response"
    case backendError = "vcl_backend_error", initialize = "vcl_init", finalize = "vcl_fini"

    /// The actions `return (...)` may name in this subroutine (Varnish 4.1).
    public var allowedActions: Set<VCLAction.Name> {
        switch self {
        case .recv: return [.hash, .pass, .pipe, .purge, .synth, .restart]
        case .pipe: return [.pipe, .synth]
        case .pass: return [.fetch, .synth, .restart]
        case .hash: return [.lookup]
        case .purge: return [.synth, .restart]
        case .hit: return [.deliver, .miss, .pass, .synth, .restart]
        case .miss: return [.fetch, .pass, .synth, .restart]
        case .deliver: return [.deliver, .restart, .synth]
        case .synth: return [.deliver, .restart]
        case .backendFetch: return [.fetch, .abandon]
        case .backendResponse: return [.deliver, .retry, .abandon]
        case .backendError: return [.deliver, .retry, .abandon]
        case .initialize, .finalize: return [.ok, .fail]
        }
    }

    /// Client-side steps (req.* is available), backend-side steps (bereq.*/beresp.*).
    var isClientSide: Bool {
        switch self {
        case .recv, .pipe, .pass, .hash, .purge, .hit, .miss, .deliver, .synth: return true
        default: return false
        }
    }
}

/// What a subroutine decided: the action of its `return (...)`, or `.none` when it ran to the
/// end without one (only possible with `appendBuiltin: false` or a sub nobody defined).
public enum VCLAction: Sendable, Hashable, CustomStringConvertible {
    case lookup, pass, pipe, purge, hash, deliver, fetch, restart, retry, abandon, miss, ok, fail
    /// `return (synth(status, "reason"))`; a nil reason means "the standard phrase for status".
    case synth(status: Int, reason: String?)
    case none

    /// Action names as written in `return (...)`.
    public enum Name: String, Sendable, Hashable, CaseIterable {
        case lookup, pass, pipe, purge, hash, synth, deliver, fetch, restart, retry, abandon, miss, ok, fail
    }

    public var name: Name? {
        switch self {
        case .lookup: return .lookup
        case .pass: return .pass
        case .pipe: return .pipe
        case .purge: return .purge
        case .hash: return .hash
        case .deliver: return .deliver
        case .fetch: return .fetch
        case .restart: return .restart
        case .retry: return .retry
        case .abandon: return .abandon
        case .miss: return .miss
        case .ok: return .ok
        case .fail: return .fail
        case .synth: return .synth
        case .none: return nil
        }
    }

    public var description: String {
        switch self {
        case .synth(let status, let reason):
            return reason.map { "synth(\(status), \"\($0)\")" } ?? "synth(\(status))"
        case .none: return "none"
        default: return self.name?.rawValue ?? "none"
        }
    }

    /// The action for a name that takes no arguments.
    init?(simple name: Name) {
        switch name {
        case .lookup: self = .lookup
        case .pass: self = .pass
        case .pipe: self = .pipe
        case .purge: self = .purge
        case .hash: self = .hash
        case .deliver: self = .deliver
        case .fetch: self = .fetch
        case .restart: self = .restart
        case .retry: self = .retry
        case .abandon: self = .abandon
        case .miss: self = .miss
        case .ok: self = .ok
        case .fail: self = .fail
        case .synth: return nil
        }
    }
}
