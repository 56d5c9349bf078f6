/// The language's fixed vocabulary: value types, which subroutines see which variables, and
/// lookups with "did you mean" suggestions (libvcc's `vcc_symb.c` + generated `vcc_obj.c`).

/// Types of VCL values.
enum VCLType: String, Sendable, Hashable {
    case string = "STRING", int = "INT", real = "REAL", duration = "DURATION", bool = "BOOL"
    case ip = "IP", backend = "BACKEND", acl = "ACL", void = "VOID"

    var isNumeric: Bool { self == .int || self == .real || self == .duration }
}

/// A set of built-in subroutines, as bits.
struct SubSet: OptionSet, Sendable, Hashable {
    let rawValue: UInt16

    init(rawValue: UInt16) { self.rawValue = rawValue }

    init(_ subs: VCLSubroutine...) {
        self.rawValue = subs.reduce(0) { $0 | SubSet.bit($1) }
    }

    static func bit(_ s: VCLSubroutine) -> UInt16 {
        UInt16(1) << UInt16(VCLSubroutine.allCases.firstIndex(of: s)!)
    }

    func contains(_ s: VCLSubroutine) -> Bool { self.rawValue & SubSet.bit(s) != 0 }

    var members: [VCLSubroutine] { VCLSubroutine.allCases.filter { self.contains($0) } }

    static let client = SubSet(.recv, .pipe, .pass, .hash, .purge, .hit, .miss, .deliver, .synth)
    static let backend = SubSet(.backendFetch, .backendResponse, .backendError)
    static let clientAndBackend = SubSet.client.union(.backend)
    static let all = SubSet(rawValue: 0xFFFF)
    static let nothing: SubSet = []
}

/// Where a variable's value lives in `VCLContext`.
enum Storage: Sendable {
    case header(HeaderScope)
    case string(VCLStringVariable)
    case int(VCLIntVariable)
    case duration(VCLDurationVariable)
    case bool(VCLBoolVariable)
    case ip(VCLIPVariable)
    case backend(VCLBackendVariable)
}

struct VariableInfo: Sendable {
    var name: String
    var type: VCLType
    var storage: Storage
    var readable: SubSet
    var writable: SubSet
    /// Where `unset` is allowed (headers only).
    var unsettable: SubSet
    /// Why setting it is refused although Varnish allows it: Lacquer does not do what it asks,
    /// and a silent no-op would mislead.
    var unsupportedWrite: String? = nil
}

enum Symbols {
    private static let clientRW = SubSet.client
    private static let beRW = SubSet(.backendResponse, .backendError)
    private static let bereqSubs = SubSet.backend.union(SubSet(.pipe))

    /// Header prefixes: `req.http.NAME` etc., with where they can be read and written.
    static let headerScopes: [(prefix: String, scope: HeaderScope, read: SubSet, write: SubSet)] = [
        ("req.http.", .req, clientRW, clientRW),
        ("bereq.http.", .bereq, bereqSubs, bereqSubs),
        ("beresp.http.", .beresp, beRW, beRW),
        ("obj.http.", .obj, SubSet(.hit), .nothing),
        ("resp.http.", .resp, SubSet(.deliver, .synth), SubSet(.deliver, .synth)),
    ]

    static let fixed: [String: VariableInfo] = {
        var t: [String: VariableInfo] = [:]
        func add(_ name: String, _ type: VCLType, _ storage: Storage, read: SubSet, write: SubSet = .nothing) {
            t[name] = VariableInfo(name: name, type: type, storage: storage, readable: read, writable: write, unsettable: .nothing)
        }
        let respSubs = SubSet(.deliver, .synth)
        add("req.method", .string, .string(.reqMethod), read: clientRW, write: clientRW)
        add("req.url", .string, .string(.reqURL), read: clientRW, write: clientRW)
        add("req.proto", .string, .string(.reqProto), read: clientRW, write: clientRW)
        add("req.xid", .string, .string(.reqXid), read: clientRW)
        add("req.restarts", .int, .int(.reqRestarts), read: clientRW)
        add("req.ttl", .duration, .duration(.reqTTL), read: clientRW, write: clientRW)
        add("req.backend_hint", .backend, .backend(.reqBackendHint), read: clientRW, write: clientRW)
        add("req.hash_always_miss", .bool, .bool(.reqHashAlwaysMiss), read: SubSet(.recv), write: SubSet(.recv))
        add("req.hash_ignore_busy", .bool, .bool(.reqHashIgnoreBusy), read: SubSet(.recv), write: SubSet(.recv))
        add("req.can_gzip", .bool, .bool(.reqCanGzip), read: clientRW)
        add("bereq.method", .string, .string(.bereqMethod), read: bereqSubs, write: bereqSubs)
        add("bereq.url", .string, .string(.bereqURL), read: bereqSubs, write: bereqSubs)
        add("bereq.proto", .string, .string(.bereqProto), read: bereqSubs, write: bereqSubs)
        add("bereq.xid", .string, .string(.bereqXid), read: SubSet.backend)
        add("bereq.retries", .int, .int(.bereqRetries), read: SubSet.backend)
        add("bereq.backend", .backend, .backend(.bereqBackend), read: bereqSubs, write: bereqSubs)
        add("bereq.uncacheable", .bool, .bool(.bereqUncacheable), read: SubSet.backend)
        add("bereq.connect_timeout", .duration, .duration(.bereqConnectTimeout), read: bereqSubs, write: bereqSubs)
        add("bereq.first_byte_timeout", .duration, .duration(.bereqFirstByteTimeout), read: SubSet.backend, write: SubSet.backend)
        add("bereq.between_bytes_timeout", .duration, .duration(.bereqBetweenBytesTimeout), read: SubSet.backend, write: SubSet.backend)
        add("beresp.status", .int, .int(.berespStatus), read: beRW, write: beRW)
        add("beresp.reason", .string, .string(.berespReason), read: beRW, write: beRW)
        add("beresp.proto", .string, .string(.berespProto), read: beRW, write: beRW)
        add("beresp.ttl", .duration, .duration(.berespTTL), read: beRW, write: beRW)
        add("beresp.grace", .duration, .duration(.berespGrace), read: beRW, write: beRW)
        add("beresp.keep", .duration, .duration(.berespKeep), read: beRW, write: beRW)
        add("beresp.age", .duration, .duration(.berespAge), read: beRW)
        add("beresp.uncacheable", .bool, .bool(.berespUncacheable), read: beRW, write: beRW)
        add("beresp.do_gzip", .bool, .bool(.berespDoGzip), read: beRW, write: beRW)
        add("beresp.do_gunzip", .bool, .bool(.berespDoGunzip), read: beRW, write: beRW)
        add("beresp.do_stream", .bool, .bool(.berespDoStream), read: beRW, write: beRW)
        t["beresp.do_stream"]?.unsupportedWrite =
            "Lacquer always streams a response to its client as it arrives; remove the line"
        add("beresp.do_esi", .bool, .bool(.berespDoESI), read: beRW, write: beRW)
        t["beresp.do_esi"]?.unsupportedWrite = "Lacquer does not process Edge Side Includes"
        add("beresp.backend", .backend, .backend(.berespBackend), read: beRW)
        add("obj.status", .int, .int(.objStatus), read: SubSet(.hit))
        add("obj.reason", .string, .string(.objReason), read: SubSet(.hit))
        add("obj.proto", .string, .string(.objProto), read: SubSet(.hit))
        add("obj.hits", .int, .int(.objHits), read: SubSet(.hit, .deliver))
        add("obj.ttl", .duration, .duration(.objTTL), read: SubSet(.hit, .deliver))
        add("obj.grace", .duration, .duration(.objGrace), read: SubSet(.hit, .deliver))
        add("obj.keep", .duration, .duration(.objKeep), read: SubSet(.hit, .deliver))
        add("obj.age", .duration, .duration(.objAge), read: SubSet(.hit, .deliver))
        add("resp.status", .int, .int(.respStatus), read: respSubs, write: respSubs)
        add("resp.reason", .string, .string(.respReason), read: respSubs, write: respSubs)
        add("resp.proto", .string, .string(.respProto), read: respSubs, write: respSubs)
        add("client.ip", .ip, .ip(.clientIP), read: SubSet.clientAndBackend)
        add("server.ip", .ip, .ip(.serverIP), read: SubSet.clientAndBackend)
        add("local.ip", .ip, .ip(.localIP), read: SubSet.clientAndBackend)
        add("remote.ip", .ip, .ip(.remoteIP), read: SubSet.clientAndBackend)
        add("client.identity", .string, .string(.clientIdentity), read: SubSet.clientAndBackend, write: clientRW)
        add("server.hostname", .string, .string(.serverHostname), read: .all)
        add("server.identity", .string, .string(.serverIdentity), read: .all)
        return t
    }()

    /// Looks a variable up; `req.http.X-Foo` resolves to a header variable.
    static func variable(_ name: String) -> VariableInfo? {
        if let v = self.fixed[name] { return v }
        for h in self.headerScopes where name.hasPrefix(h.prefix) && name.utf8.count > h.prefix.utf8.count {
            return VariableInfo(
                name: name, type: .string, storage: .header(h.scope), readable: h.read, writable: h.write, unsettable: h.write
            )
        }
        return nil
    }

    /// The header name part of `req.http.NAME`.
    static func headerName(_ name: String) -> String {
        for h in self.headerScopes where name.hasPrefix(h.prefix) {
            return String(name.dropFirst(h.prefix.count))
        }
        return name
    }

    /// A hint for an unknown name: the closest known spelling, or how headers are written.
    static func suggestion(for name: String, among extra: [String] = []) -> String? {
        let parts = name.split(separator: ".", maxSplits: 1)
        if parts.count == 2, ["req", "bereq", "beresp", "obj", "resp"].contains(String(parts[0])) {
            let rest = String(parts[1])
            if rest.hasPrefix("header.") || rest.hasPrefix("hdr.") || rest.hasPrefix("headers.") {
                let h = rest.split(separator: ".", maxSplits: 1).dropFirst().first.map(String.init) ?? "NAME"
                return "headers are written '\(parts[0]).http.\(h)'"
            }
        }
        var candidates = Array(self.fixed.keys) + extra
        candidates += self.headerScopes.map { String($0.prefix.dropLast()) }
        var best: (String, Int)?
        for c in candidates {
            let d = editDistance(name, c)
            if d <= max(2, name.count / 4), d < (best?.1 ?? Int.max) { best = (c, d) }
        }
        if let best { return "did you mean '\(best.0)'?" }
        if parts.count == 2, ["req", "bereq", "beresp", "obj", "resp"].contains(String(parts[0])) {
            return "\(parts[0]).* variables are: " + self.fixed.keys.filter { $0.hasPrefix(parts[0] + ".") }.sorted().joined(separator: ", ")
                + ", \(parts[0]).http.NAME"
        }
        return nil
    }

    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a.utf8.prefix(64))
        let b = Array(b.utf8.prefix(64))
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var prev = Array(0...b.count)
        var cur = [Int](repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            cur[0] = i
            for j in 1...b.count {
                cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            swap(&prev, &cur)
        }
        return prev[b.count]
    }
}
