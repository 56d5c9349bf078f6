import Foundation
import LacquerTesting
import Testing
import VCL

/// The compiler must never trap: any input either compiles or throws `VCLCompileErrors`,
/// and every diagnostic renders.
@Suite("Fuzz")
struct FuzzTests {
    static let vocabulary: [String] = [
        "vcl", "4.1", "4.0", ";", "sub", "vcl_recv", "vcl_hash", "vcl_deliver", "vcl_backend_response", "vcl_init", "my_sub",
        "{", "}", "(", ")", ",", ".", "=", "==", "!=", "~", "!~", "<", ">", "<=", ">=", "&&", "||", "!", "+", "-", "*", "/",
        "set", "unset", "if", "elseif", "else", "return", "call", "new", "backend", "probe", "acl", "import", "std", "directors",
        "req.url", "req.http.Cookie", "req.method", "beresp.ttl", "beresp.status", "obj.hits", "resp.http.X", "client.ip",
        "req.backend_hint", "b1", "a1", "hash", "pass", "pipe", "synth", "lookup", "deliver", "fetch", "restart",
        "regsub", "regsuball", "hash_data", "std.log", "std.integer", "rr.backend", "rr.add_backend", "directors.round_robin",
        "\"/a\"", "\"^/static\"", "\"(\"", "\"\"", "{\"long \"quoted\" string\"}", "10s", "1.5h", "100ms", "3k", "42", "0",
        "true", "false", ".host", ".port", ".probe", ".url", "\"127.0.0.1\"", "\"10.0.0.0\"", "/8", "# c\n", "// c\n", "/* c */",
        "\n", " ", "\"unterminated", "/* open",
    ]

    static func check(_ text: String) {
        do {
            let vcl = try VCLCompiler.compile(text, name: "fuzz.vcl", appendBuiltin: false)
            _ = vcl.backends.count
        } catch {
            #expect(!error.diagnostics.isEmpty)
            #expect(error.diagnostics.count <= VCLCompiler.maxErrors)
            _ = error.description
        }
    }

    /// A generator for `fallback`, or for `LACQUER_SEED` when set (printed, so a failure replays).
    static func generator(_ name: String, fallback: UInt64) -> SeededRandom {
        let seed = SeededRandom.seed(fallback: fallback)
        print("\(name) seed \(seed)")
        return SeededRandom(seed: seed)
    }

    @Test("20,000 random byte strings never crash the lexer, parser or checker")
    func randomBytes() {
        var rng = Self.generator("VCL random bytes", fallback: 0x5EED)
        for i in 0..<FuzzBudget.iterations(default: 20_000) {
            let count = Int(rng.next() % 200)
            var bytes = [UInt8](repeating: 0, count: count)
            for j in 0..<count {
                // Bias towards printable ASCII so the lexer gets past the first byte.
                let r = rng.next()
                bytes[j] = r % 4 == 0 ? UInt8(truncatingIfNeeded: r >> 8) : UInt8(32 + (r >> 8) % 95)
            }
            let prefix = i % 2 == 0 ? "vcl 4.1;\n" : ""
            Self.check(prefix + String(decoding: bytes, as: UTF8.self))
        }
    }

    @Test("20,000 token-soup inputs never crash the lexer, parser or checker")
    func tokenSoup() {
        var rng = Self.generator("VCL token soup", fallback: 0xC0FFEE)
        for _ in 0..<FuzzBudget.iterations(default: 20_000) {
            let count = 1 + Int(rng.next() % 60)
            var text = rng.next() % 4 == 0 ? "" : "vcl 4.1;\n"
            for _ in 0..<count {
                text += Self.vocabulary[Int(rng.next() % UInt64(Self.vocabulary.count))]
                if rng.next() % 3 != 0 { text += " " }
            }
            Self.check(text)
        }
    }

    @Test("mutations of the examples never crash (delete, duplicate or swap a slice)")
    func mutatedExamples() throws {
        var rng = Self.generator("VCL mutated examples", fallback: 42)
        let sources = vclFiles().compactMap { try? String(contentsOfFile: $0, encoding: .utf8) }.map { Array($0.utf8) }
        try #require(!sources.isEmpty)
        for _ in 0..<FuzzBudget.iterations(default: 2_000) {
            var bytes = sources[Int(rng.next() % UInt64(sources.count))]
            for _ in 0..<(1 + rng.next() % 4) where bytes.count > 2 {
                let a = Int(rng.next() % UInt64(bytes.count))
                let b = min(bytes.count, a + Int(rng.next() % 40))
                switch rng.next() % 3 {
                case 0: bytes.removeSubrange(a..<b)
                case 1: bytes.insert(contentsOf: bytes[a..<b], at: Int(rng.next() % UInt64(bytes.count)))
                default: bytes[a] = UInt8(truncatingIfNeeded: rng.next())
                }
            }
            Self.check(String(decoding: bytes, as: UTF8.self))
        }
    }
}
