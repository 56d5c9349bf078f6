import Testing
import VCL

/// Each class of load-time error: exact message, position, caret and hint.
@Suite("Checker errors")
struct CheckerErrorTests {
    /// Compiles `body` and returns the diagnostics (empty if it compiled).
    func errors(_ text: String) -> [VCLDiagnostic] {
        do {
            _ = try VCLCompiler.compile(text, name: "site.vcl")
            return []
        } catch {
            return error.diagnostics
        }
    }

    func single(_ text: String, sourceLocation: Testing.SourceLocation = #_sourceLocation) -> VCLDiagnostic? {
        let e = self.errors(text)
        #expect(e.count == 1, "expected one error, got:\n\(e.map(\.description).joined(separator: "\n"))", sourceLocation: sourceLocation)
        return e.first
    }

    @Test("rendering: file:line:col, the source line, a caret under the token, a hint")
    func rendering() throws {
        let d = try #require(self.single("vcl 4.1;\nsub vcl_recv {\n    set req.hdr.Cookie = \"\";\n}\n"))
        #expect(d.description == """
            site.vcl:3:9: error: unknown variable 'req.hdr.Cookie'
                set req.hdr.Cookie = "";
                    ^~~~~~~~~~~~~~
              hint: headers are written 'req.http.Cookie'
            """)
    }

    @Test("unknown variable, with a did-you-mean hint")
    func unknownVariable() throws {
        let d = try #require(self.single("vcl 4.1;\nsub vcl_recv { if (req.ulr == \"/\") { return (pass); } }"))
        #expect(d.message == "unknown variable 'req.ulr'")
        #expect(d.location == SourceLocation(file: "site.vcl", line: 2, column: 20))
        #expect(d.hint == "did you mean 'req.url'?")
    }

    @Test("wrong type: a string into a DURATION, an INT compared to a STRING")
    func wrongType() throws {
        let d = try #require(self.single("vcl 4.1;\nsub vcl_backend_response {\n  set beresp.ttl = \"1h\";\n}"))
        #expect(d.message == "beresp.ttl is DURATION, but the value is STRING")
        #expect(d.location.line == 3 && d.location.column == 20)
        #expect(d.hint == "write a duration such as 1h, or convert with std.duration(\"1h\", 0s)")
        let unitless = try #require(self.single("vcl 4.1;\nsub vcl_backend_response { set beresp.ttl = 10; }"))
        #expect(unitless.hint == "add a unit, e.g. 120s")
        let cmp = try #require(self.single("vcl 4.1;\nsub vcl_recv { if (req.restarts == \"0\") { return (pass); } }"))
        #expect(cmp.message == "cannot compare INT with STRING")
        #expect(cmp.location.column == 33)
        #expect(cmp.description.contains("\n" + String(repeating: " ", count: 32) + "^~\n"))
    }

    @Test("read-only variable")
    func readOnly() throws {
        let d = try #require(self.single("vcl 4.1;\nsub vcl_hit { set obj.hits = 1; }"))
        #expect(d.message == "'obj.hits' is read-only")
        #expect(d.location.column == 19)
        #expect(d.hint == "it can be read in: vcl_hit, vcl_deliver")
    }

    @Test("variable not available in this sub, directly and through call")
    func notAvailable() throws {
        let d = try #require(self.single("vcl 4.1;\nsub vcl_recv {\n  set beresp.ttl = 1s;\n}"))
        #expect(d.message == "'beresp.ttl' cannot be set in vcl_recv")
        #expect(d.location == SourceLocation(file: "site.vcl", line: 3, column: 7))
        #expect(d.hint == "beresp.ttl can be set in: vcl_backend_response, vcl_backend_error")
        let viaCall = try #require(self.single("""
            vcl 4.1;
            sub tweak { if (beresp.http.X) { std.log("x"); } }
            import std;
            sub vcl_backend_response { call tweak; }
            sub vcl_recv { call tweak; }
            """))
        #expect(viaCall.message == "'beresp.http.X' is not available in vcl_recv (sub 'tweak' is called from vcl_recv)")
        #expect(viaCall.location.line == 2)
        let hash = try #require(self.single("vcl 4.1;\nsub vcl_recv { hash_data(req.url); }"))
        #expect(hash.message == "hash_data() cannot be used in vcl_recv")
    }

    @Test("an action the sub cannot return")
    func badReturn() throws {
        let d = try #require(self.single("vcl 4.1;\nsub vcl_hash { return (pass); }"))
        #expect(d.message == "'pass' is not a valid action in vcl_hash")
        #expect(d.location.column == 24)
        #expect(d.hint == "vcl_hash can return: lookup")
        let lookup = try #require(self.single("vcl 4.1;\nsub vcl_recv { return (lookup); }"))
        #expect(lookup.hint == "in VCL 4.x vcl_recv returns (hash) to look the object up; lookup is vcl_hash's action")
        let unknown = try #require(self.single("vcl 4.1;\nsub vcl_miss { return (fetchh); }"))
        #expect(unknown.message == "unknown action 'fetchh'")
        #expect(unknown.hint == "vcl_miss can return: pass, synth, fetch, restart")
        let viaCall = try #require(self.single("vcl 4.1;\nsub p { return (pass); }\nsub vcl_hash { call p; }"))
        #expect(viaCall.message == "'pass' is not a valid action in vcl_hash (sub 'p' is called from vcl_hash)")
    }

    @Test("undefined acl, backend, sub")
    func undefined() throws {
        let acl = try #require(self.single("vcl 4.1;\nacl purge { \"127.0.0.1\"; }\nsub vcl_recv { if (client.ip ~ purgers) { return (purge); } }"))
        #expect(acl.message == "the right side of '~' on an IP must be an ACL name")
        #expect(acl.hint == "did you mean 'purge'?")
        let backend = try #require(self.single("vcl 4.1;\nbackend web { .host = \"127.0.0.1\"; }\nsub vcl_recv { set req.backend_hint = webb; }"))
        #expect(backend.message == "unknown variable 'webb'")
        #expect(backend.hint == "did you mean 'web'?")
        let sub = try #require(self.single("vcl 4.1;\nsub clean {}\nsub vcl_recv { call claen; }"))
        #expect(sub.message == "undefined subroutine 'claen'")
        #expect(sub.location.column == 21)
        #expect(sub.hint == "did you mean 'clean'?")
    }

    @Test("duplicate definitions")
    func duplicates() throws {
        let d = try #require(self.single("vcl 4.1;\nbackend a { .host = \"h\"; }\nbackend a { .host = \"i\"; }"))
        #expect(d.message == "'a' is already defined")
        #expect(d.location.line == 3)
        #expect(d.hint == "first defined at site.vcl:2:9; backends, probes, ACLs and directors share one namespace")
        let sub = try #require(self.single("vcl 4.1;\nsub s {}\nsub s {}\nsub vcl_recv { call s; }"))
        #expect(sub.message == "subroutine 's' is defined twice")
        // Built-in subs may be defined several times: the bodies are concatenated.
        #expect(self.errors("vcl 4.1;\nsub vcl_recv {}\nsub vcl_recv {}").isEmpty)
    }

    @Test("recursion through call")
    func recursion() throws {
        let d = try #require(self.single("vcl 4.1;\nsub a { call b; }\nsub b { call a; }\nsub vcl_recv { call a; }"))
        #expect(d.message == "recursive call to 'a'")
        #expect(d.location == SourceLocation(file: "site.vcl", line: 3, column: 14))
        #expect(d.hint == "subs may not call themselves, directly or indirectly: a → b → a")
    }

    @Test("declaration errors: bad field, missing host, bad ACL entry, unknown function, missing import")
    func declarationErrors() throws {
        #expect(self.single("vcl 4.1;\nbackend b { .host = \"h\"; .prot = \"80\"; }")?.message == "unknown backend field '.prot'")
        #expect(self.single("vcl 4.1;\nbackend b { .port = \"80\"; }")?.message == "backend 'b' has no .host")
        #expect(self.single("vcl 4.1;\nacl a { \"example.com\"; }")?.message == "'example.com' is not an IP address")
        #expect(self.single("vcl 4.1;\nacl a { \"10.0.0.0\"/33; }")?.message == "prefix length /33 is too long for '10.0.0.0' (at most /32)")
        #expect(self.single("vcl 4.1;\nsub vcl_recv { set req.url = regsubb(req.url, \"a\", \"b\"); }")?.hint == "did you mean 'regsub'?")
        #expect(self.single("vcl 4.1;\nsub vcl_recv { std.log(\"x\"); }")?.message == "std.log() needs 'import std;'")
        #expect(self.single("vcl 4.1;\nsub vcl_recv { if (req.url ~ \"(\") { return (pass); } }")?.message
            .hasPrefix("invalid regular expression: ") == true)
        #expect(self.single("vcl 4.1;\nbackend b { .host = \"h\"; .probe = nope; }")?.message == "undefined probe 'nope'")
        #expect(self.single("vcl 4.1;\nsub vcl_bogus {}")?.message == "unknown built-in subroutine 'vcl_bogus'")
    }

    @Test("many errors are reported at once, in source order")
    func manyErrors() {
        let e = self.errors("vcl 4.1;\nsub vcl_recv {\n set req.a = 1;\n set req.b = 2;\n set req.c = 3;\n}")
        #expect(e.map(\.location.line) == [3, 4, 5])
        let flood = "vcl 4.1;\nsub vcl_recv {\n" + String(repeating: " set x = 1;\n", count: 100) + "}"
        #expect(self.errors(flood).count == VCLCompiler.maxErrors)
    }
}
