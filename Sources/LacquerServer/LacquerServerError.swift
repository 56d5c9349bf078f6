/// Errors that stop Lacquer from starting or running, with a message an operator can act on.
public enum LacquerServerError: Error, CustomStringConvertible, Equatable {
    case bindFailed(address: String, reason: String)
    case noBackend
    case alreadyStarted
    case storageLocked(String)
    /// A backend's probe settings are out of range.
    case invalidProbe(backend: String, reason: String)
    /// The access log file cannot be opened.
    case accessLog(String)
    /// The disk tier's folder cannot be used (a file, unwritable, …).
    case storageUnusable(String)
    /// A TLS certificate or key cannot be used (the message names the file).
    case tls(String)

    public var description: String {
        switch self {
        case .bindFailed(let address, let reason):
            "cannot listen on \(address): \(reason)"
                + (reason.lowercased().contains("in use") ? " (is another Lacquer or server already using this port?)" : "")
        case .noBackend:
            "no backend configured: pass --backend http://HOST:PORT (or --demo to try the built-in demo origin)"
        case .alreadyStarted:
            "the server was already started"
        case .storageLocked(let message):
            message
        case .invalidProbe(let backend, let reason):
            "backend \(backend): \(reason)"
        case .accessLog(let message), .storageUnusable(let message), .tls(let message):
            message
        }
    }
}
