/// Backends, probes and ACLs: constant fields checked and turned into public values.
extension Checker {
    /// A field's constant value, or nil after reporting what was expected.
    private mutating func constant(_ field: Field, _ type: VCLType, hint: String? = nil) -> Expr.Kind? {
        guard case .expr(let e) = field.value else {
            self.sink.error("expected a \(type.rawValue) for .\(field.name.text)", at: field.name.location, length: field.name.length, hint: hint)
            return nil
        }
        switch (e.kind, type) {
        case (.string, .string), (.integer, .int), (.duration, .duration), (.real, .real): return e.kind
        case (.integer(let i), .real): return .real(Double(i))
        default:
            self.sink.error("expected a \(type.rawValue) constant for .\(field.name.text)", at: e.location, length: e.length, hint: hint)
            return nil
        }
    }

    private mutating func stringField(_ f: Field) -> String? {
        if case .string(let s)? = self.constant(f, .string) { return s }
        return nil
    }

    private mutating func intField(_ f: Field, _ range: ClosedRange<Int>) -> Int? {
        guard case .integer(let i)? = self.constant(f, .int) else { return nil }
        guard range.contains(i) else {
            self.sink.error(".\(f.name.text) must be between \(range.lowerBound) and \(range.upperBound)", at: f.name.location, length: f.name.length)
            return nil
        }
        return i
    }

    /// `true`/`false`, or 1/0 as Varnish Enterprise writes its `.ssl*` attributes.
    private mutating func boolField(_ f: Field) -> Bool? {
        if case .expr(let e) = f.value {
            if case .bool(let b) = e.kind { return b }
            if case .integer(let i) = e.kind, i == 0 || i == 1 { return i == 1 }
        }
        self.sink.error("expected true or false for .\(f.name.text)", at: f.name.location, length: f.name.length)
        return nil
    }

    private mutating func durationField(_ f: Field) -> Double? {
        if case .duration(let d)? = self.constant(f, .duration, hint: "write a duration such as 5s or 500ms") { return d }
        return nil
    }

    private mutating func unknownField(_ f: Field, _ what: String, _ known: [String]) {
        self.sink.error(
            "unknown \(what) field '.\(f.name.text)'", at: f.name.location, length: f.name.length,
            hint: "\(what) fields are " + known.map { "." + $0 }.joined(separator: ", ")
        )
    }

    mutating func compileBackend(_ decl: BackendDecl) {
        let known = [
            "host", "port", "host_header", "connect_timeout", "first_byte_timeout", "between_bytes_timeout", "max_connections", "probe",
            "ssl", "ssl_sni", "ssl_verify_peer", "ssl_verify_host", "ssl_ca_file",
        ]
        var b = VCLBackend(name: decl.name.text, host: "")
        var sawHost = false
        var sawPort = false
        for f in decl.fields {
            switch f.name.text {
            case "host":
                sawHost = true
                if let h = self.stringField(f) {
                    if h.isEmpty || h.contains(" ") {
                        self.sink.error("'\(h)' is not a host name or address", at: f.name.location, length: f.name.length)
                    }
                    b.host = h
                }
            case "port":
                sawPort = true
                if case .expr(let e) = f.value, case .string(let s) = e.kind {
                    if let p = Int(s), (1...65535).contains(p) {
                        b.port = p
                    } else {
                        self.sink.error("'\(s)' is not a port number", at: e.location, length: e.length, hint: "write .port = \"8080\";")
                    }
                } else if let p = self.intField(f, 1...65535) {
                    b.port = p
                }
            case "host_header": b.hostHeader = self.stringField(f)
            case "ssl": b.ssl = self.boolField(f) ?? b.ssl
            case "ssl_sni": b.sslServerName = self.stringField(f)
            case "ssl_verify_peer": b.sslVerifyPeer = self.boolField(f) ?? b.sslVerifyPeer
            case "ssl_verify_host": b.sslVerifyHost = self.boolField(f) ?? b.sslVerifyHost
            case "ssl_ca_file": b.sslCAFile = self.stringField(f)
            case "connect_timeout": b.connectTimeout = self.durationField(f)
            case "first_byte_timeout": b.firstByteTimeout = self.durationField(f)
            case "between_bytes_timeout": b.betweenBytesTimeout = self.durationField(f)
            case "max_connections": b.maxConnections = self.intField(f, 1...1_000_000)
            case "probe":
                switch f.value {
                case .block(let p): b.probe = self.compileProbe(p)
                case .expr(let e):
                    if case .name(let n) = e.kind, let p = self.probes[n] {
                        b.probe = p
                    } else if case .name(let n) = e.kind {
                        self.sink.error("undefined probe '\(n)'", at: e.location, length: e.length,
                                        hint: Symbols.suggestion(for: n, among: Array(self.probes.keys)) ?? "declare it with 'probe \(n) { ... }'")
                    } else {
                        self.sink.error("expected a probe name or { ... }", at: e.location, length: e.length)
                    }
                case .strings:
                    self.sink.error("expected a probe name or { ... }", at: f.name.location, length: f.name.length)
                }
            default: self.unknownField(f, "backend", known)
            }
        }
        if b.ssl && !sawPort { b.port = 443 }
        if !sawHost {
            self.sink.error("backend '\(decl.name.text)' has no .host", at: decl.name.location, length: decl.name.length,
                            hint: "add .host = \"127.0.0.1\";")
        }
        self.backends[decl.name.text] = b
        self.backendOrder.append(decl.name.text)
    }

    mutating func compileProbeDecl(_ decl: ProbeDecl) {
        let p = self.compileProbe(decl)
        if let n = decl.name { self.probes[n.text] = p }
    }

    mutating func compileProbe(_ decl: ProbeDecl) -> VCLProbe {
        let known = ["url", "request", "expected_response", "interval", "timeout", "window", "threshold", "initial"]
        var p = VCLProbe(name: decl.name?.text)
        var sawURL: Field?
        for f in decl.fields {
            switch f.name.text {
            case "url":
                sawURL = f
                if let u = self.stringField(f) {
                    if !u.hasPrefix("/") { self.sink.error(".url must start with '/'", at: f.name.location, length: f.name.length) }
                    p.url = u
                }
            case "request":
                if case .strings(let lines) = f.value {
                    p.request = lines.joined(separator: "\r\n") + "\r\n\r\n"
                } else if let s = self.stringField(f) {
                    p.request = s + "\r\n\r\n"
                }
                if let u = sawURL {
                    self.sink.error("a probe has either .url or .request, not both", at: u.name.location, length: u.name.length)
                }
            case "expected_response": p.expectedResponse = self.intField(f, 100...999) ?? p.expectedResponse
            case "interval": p.interval = self.durationField(f) ?? p.interval
            case "timeout": p.timeout = self.durationField(f) ?? p.timeout
            case "window": p.window = self.intField(f, 1...64) ?? p.window
            case "threshold": p.threshold = self.intField(f, 1...64) ?? p.threshold
            case "initial": p.initial = self.intField(f, 0...64)
            default: self.unknownField(f, "probe", known)
            }
        }
        if p.threshold > p.window {
            self.sink.error(
                ".threshold (\(p.threshold)) is larger than .window (\(p.window))", at: decl.name?.location ?? decl.location,
                length: decl.name?.length ?? 1, hint: "a backend is healthy when .threshold of the last .window probes succeeded"
            )
        }
        return p
    }

    mutating func compileACL(_ decl: ACLDecl) {
        var entries: [VCLACL.Entry] = []
        for e in decl.entries {
            var addresses: [[UInt8]]
            if e.address == "localhost" {
                addresses = [[127, 0, 0, 1], [UInt8](repeating: 0, count: 15) + [1]]
            } else if let bytes = IPAddressParser.parse(e.address) {
                addresses = [bytes]
            } else {
                self.sink.error(
                    "'\(e.address)' is not an IP address", at: e.location, length: e.length,
                    hint: "ACLs are compiled without DNS lookups: write an IPv4 or IPv6 address, optionally with /bits"
                )
                continue
            }
            for a in addresses {
                let maxBits = a.count * 8
                let bits = e.prefixLength ?? maxBits
                if bits > maxBits {
                    self.sink.error("prefix length /\(bits) is too long for '\(e.address)' (at most /\(maxBits))", at: e.location, length: e.length)
                    continue
                }
                entries.append(VCLACL.Entry(network: VCLACL.mask(a, bits: bits), prefixLength: bits, negated: e.negated))
            }
        }
        self.acls[decl.name.text] = VCLACL(name: decl.name.text, entries: entries)
    }
}
