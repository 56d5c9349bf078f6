/// Parses literal IPv4 (`10.0.0.1`) and IPv6 (`::1`, `fe80::1`, `::ffff:10.0.0.1`) addresses into
/// network-order bytes. No name resolution: VCL is compiled without I/O.
enum IPAddressParser {
    static func parse(_ text: String) -> [UInt8]? {
        if text.utf8.contains(UInt8(ascii: ":")) { return self.parseIPv6(Substring(text)) }
        return self.parseIPv4(Substring(text))
    }

    static func parseIPv4(_ text: Substring) -> [UInt8]? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var out: [UInt8] = []
        for p in parts {
            guard !p.isEmpty, p.utf8.count <= 3, p.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
                let v = Int(p), v <= 255
            else { return nil }
            out.append(UInt8(v))
        }
        return out
    }

    static func parseIPv6(_ text: Substring) -> [UInt8]? {
        guard text.utf8.count <= 45 else { return nil }
        let halves = text.components()
        guard halves.count <= 2 else { return nil }
        func groups(_ s: Substring, allowIPv4Tail: Bool) -> [UInt8]? {
            if s.isEmpty { return [] }
            var out: [UInt8] = []
            let parts = s.split(separator: ":", omittingEmptySubsequences: false)
            for (i, p) in parts.enumerated() {
                if allowIPv4Tail, i == parts.count - 1, p.contains(".") {
                    guard let v4 = parseIPv4(p) else { return nil }
                    out += v4
                    continue
                }
                guard !p.isEmpty, p.utf8.count <= 4, let v = UInt16(p, radix: 16) else { return nil }
                out.append(UInt8(v >> 8))
                out.append(UInt8(v & 0xFF))
            }
            return out
        }
        if halves.count == 1 {
            guard let all = groups(halves[0], allowIPv4Tail: true), all.count == 16 else { return nil }
            return all
        }
        guard let head = groups(halves[0], allowIPv4Tail: false), let tail = groups(halves[1], allowIPv4Tail: true),
            head.count + tail.count <= 14
        else { return nil }
        return head + [UInt8](repeating: 0, count: 16 - head.count - tail.count) + tail
    }
}

extension Substring {
    /// Splits at "::" (at most one is valid; more yields more than two parts).
    fileprivate func components() -> [Substring] {
        var parts: [Substring] = []
        var start = self.startIndex
        var i = self.startIndex
        while i < self.endIndex {
            let next = self.index(after: i)
            if self[i] == ":", next < self.endIndex, self[next] == ":" {
                parts.append(self[start..<i])
                i = self.index(after: next)
                start = i
            } else {
                i = next
            }
        }
        parts.append(self[start..<self.endIndex])
        return parts
    }
}
