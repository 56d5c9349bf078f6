import VCL

/// A dictionary-backed `VCLContext` that records side effects, for evaluator tests.
struct MockContext: VCLContext {
    var headers: [HeaderScope: [String: String]] = [:]
    var strings: [VCLStringVariable: String] = [:]
    var ints: [VCLIntVariable: Int] = [:]
    var durations: [VCLDurationVariable: Double] = [:]
    var bools: [VCLBoolVariable: Bool] = [:]
    var ips: [VCLIPVariable: VCLIP] = [:]
    var backends: [VCLBackendVariable: VCLBackendRef] = [:]
    var hashed: [String] = []
    var bans: [String] = []
    var body: String?
    var logs: [String] = []

    init(method: String = "GET", url: String = "/", headers: [String: String] = [:]) {
        self.strings[.reqMethod] = method
        self.strings[.reqURL] = url
        self.strings[.reqXid] = "1001"
        for (k, v) in headers { self.headers[.req, default: [:]][k.lowercased()] = v }
        self.ips[.clientIP] = VCLIP(parsing: "192.0.2.10")!
        self.ips[.serverIP] = VCLIP(parsing: "127.0.0.1")!
    }

    func header(_ scope: HeaderScope, _ name: String) -> String? { self.headers[scope]?[name.lowercased()] }
    mutating func setHeader(_ scope: HeaderScope, _ name: String, _ value: String) {
        self.headers[scope, default: [:]][name.lowercased()] = value
    }
    mutating func unsetHeader(_ scope: HeaderScope, _ name: String) { self.headers[scope]?[name.lowercased()] = nil }
    func string(_ variable: VCLStringVariable) -> String? { self.strings[variable] }
    mutating func setString(_ variable: VCLStringVariable, _ value: String) { self.strings[variable] = value }
    func int(_ variable: VCLIntVariable) -> Int { self.ints[variable] ?? 0 }
    mutating func setInt(_ variable: VCLIntVariable, _ value: Int) { self.ints[variable] = value }
    func duration(_ variable: VCLDurationVariable) -> Double { self.durations[variable] ?? 0 }
    mutating func setDuration(_ variable: VCLDurationVariable, _ seconds: Double) { self.durations[variable] = seconds }
    func bool(_ variable: VCLBoolVariable) -> Bool { self.bools[variable] ?? false }
    mutating func setBool(_ variable: VCLBoolVariable, _ value: Bool) { self.bools[variable] = value }
    func ip(_ variable: VCLIPVariable) -> VCLIP { self.ips[variable] ?? VCLIP(bytes: [0, 0, 0, 0], text: "0.0.0.0") }
    func backend(_ variable: VCLBackendVariable) -> VCLBackendRef? { self.backends[variable] }
    mutating func setBackend(_ variable: VCLBackendVariable, _ value: VCLBackendRef) { self.backends[variable] = value }
    mutating func hashData(_ s: String) { self.hashed.append(s) }
    mutating func ban(_ expression: String) { self.bans.append(expression) }
    mutating func synthetic(_ body: String) { self.body = body }
    mutating func log(_ s: String) { self.logs.append(s) }
}
