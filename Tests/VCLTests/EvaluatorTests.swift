import Testing
import VCL

/// Compiles `text` (with builtin.vcl appended) or fails the test with the rendered errors.
func compileOrFail(_ text: String, appendBuiltin: Bool = true, sourceLocation: Testing.SourceLocation = #_sourceLocation) -> CompiledVCL? {
    do {
        return try VCLCompiler.compile(text, name: "test.vcl", appendBuiltin: appendBuiltin)
    } catch {
        Issue.record("compile failed:\n\(error)", sourceLocation: sourceLocation)
        return nil
    }
}

@Suite("Evaluator")
struct EvaluatorTests {
    let builtin = compileOrFail("vcl 4.1;")!

    @Test("builtin vcl_recv hashes a plain GET")
    func builtinHashesGET() throws {
        var ctx = MockContext()
        #expect(try self.builtin.run(.recv, context: &ctx) == .hash)
    }

    @Test("builtin vcl_recv passes a request with a Cookie; one with Authorization is looked up (RFC 9111 §3.5 decides)")
    func builtinPassesCookie() throws {
        var ctx = MockContext(headers: ["Cookie": "a=b"])
        #expect(try self.builtin.run(.recv, context: &ctx) == .pass)
        var auth = MockContext(headers: ["Authorization": "Basic x"])
        #expect(try self.builtin.run(.recv, context: &auth) == .hash)
    }

    @Test("builtin vcl_recv passes the methods it knows and POST, answers extension methods 501, refuses PRI, CONNECT and TRACE", arguments: [
        ("BREW", VCLAction.synth(status: 501, reason: "Method not implemented")), ("PROPFIND", .pass), ("M-SEARCH", .pass),
        ("QUERY", .pass), ("CONNECT", .synth(status: 405, reason: "CONNECT is not supported")),
        ("TRACE", .synth(status: 405, reason: "TRACE is not supported")), ("POST", .pass), ("DELETE", .pass),
        ("HEAD", .hash), ("PRI", .synth(status: 405, reason: nil)),
    ])
    func builtinMethods(method: String, expected: VCLAction) throws {
        var ctx = MockContext(method: method)
        #expect(try self.builtin.run(.recv, context: &ctx) == expected)
    }

    @Test("builtin vcl_hash hashes the URL and Host, or the server IP")
    func builtinHash() throws {
        var ctx = MockContext(url: "/a", headers: ["Host": "example.com"])
        #expect(try self.builtin.run(.hash, context: &ctx) == .lookup)
        #expect(ctx.hashed == ["/a", "example.com"])
        var noHost = MockContext(url: "/b")
        _ = try self.builtin.run(.hash, context: &noHost)
        #expect(noHost.hashed == ["/b", "127.0.0.1"])
    }

    @Test("builtin vcl_hit delivers fresh and graced objects, misses expired ones")
    func builtinHit() throws {
        var ctx = MockContext()
        ctx.durations[.objTTL] = 10
        #expect(try self.builtin.run(.hit, context: &ctx) == .deliver)
        ctx.durations[.objTTL] = -5
        ctx.durations[.objGrace] = 10
        #expect(try self.builtin.run(.hit, context: &ctx) == .deliver)
        ctx.durations[.objGrace] = 1
        #expect(try self.builtin.run(.hit, context: &ctx) == .miss)
    }

    @Test("builtin vcl_recv lets PURGE through only from purge_acl (loopback unless replaced)")
    func builtinPurgeACL() throws {
        var outside = MockContext(method: "PURGE")
        #expect(try self.builtin.run(.recv, context: &outside) == .synth(status: 403, reason: "PURGE is not allowed from this address"))
        var local = MockContext(method: "PURGE")
        local.ips[.clientIP] = VCLIP(parsing: "127.0.0.1")!
        #expect(try self.builtin.run(.recv, context: &local) == .purge)
        let own = try #require(compileOrFail("vcl 4.1;\nacl purge_acl { \"192.0.2.0\"/24; }"))
        #expect(try own.run(.recv, context: &outside) == .purge)
    }

    @Test("builtin vcl_backend_response leaves the RFC verdict (TTL, uncacheable) as it is")
    func builtinBackendResponse() throws {
        var ctx = MockContext()
        ctx.durations[.berespTTL] = 300
        ctx.headers[.beresp] = ["set-cookie": "a=b"]
        #expect(try self.builtin.run(.backendResponse, context: &ctx) == .deliver)
        #expect(ctx.durations[.berespTTL] == 300)
        #expect(ctx.bools[.berespUncacheable] == nil)
    }

    @Test("builtin vcl_synth writes a short text body from status and reason")
    func builtinSynth() throws {
        var ctx = MockContext()
        ctx.ints[.respStatus] = 503
        ctx.strings[.respReason] = "Service Unavailable"
        #expect(try self.builtin.run(.synth, context: &ctx) == .deliver)
        #expect(ctx.body == "503 Service Unavailable\n")
        #expect(ctx.headers[.resp]?["content-type"] == "text/plain; charset=utf-8")
    }

    @Test("user code runs first and falls through into builtin")
    func userThenBuiltin() throws {
        let vcl = try #require(compileOrFail("""
            vcl 4.1;
            sub vcl_recv {
                if (req.url ~ "\\.(css|js|png)$") { unset req.http.Cookie; }
            }
            """))
        var ctx = MockContext(url: "/app.css", headers: ["Cookie": "s=1"])
        #expect(try vcl.run(.recv, context: &ctx) == .hash)
        #expect(ctx.headers[.req]?["cookie"] == nil)
        var page = MockContext(url: "/page", headers: ["Cookie": "s=1"])
        #expect(try vcl.run(.recv, context: &page) == .pass)
    }

    @Test("regsub replaces the first match, regsuball every match, with \\1 groups")
    func regsub() throws {
        let vcl = try #require(compileOrFail("""
            vcl 4.1;
            sub vcl_recv {
                set req.http.A = regsub(req.url, "^/([a-z]+)/(\\d+)", "/\\2/\\1");
                set req.http.B = regsuball(req.http.Cookie, "(^|; *)(_ga|utm_[a-z]+)=[^;]*", "");
                set req.http.C = regsuball("aaa", "a", "bb");
                set req.http.D = regsub("abc", "x", "y");
                return (hash);
            }
            """))
        var ctx = MockContext(url: "/item/42?x", headers: ["Cookie": "_ga=1; sid=abc; utm_source=x"])
        _ = try vcl.run(.recv, context: &ctx)
        #expect(ctx.headers[.req]?["a"] == "/42/item?x")
        #expect(ctx.headers[.req]?["b"] == "; sid=abc")
        #expect(ctx.headers[.req]?["c"] == "bbbbbb")
        #expect(ctx.headers[.req]?["d"] == "abc")
    }

    @Test("client.ip ~ acl uses the most specific entry, ! entries exclude")
    func aclMatch() throws {
        let vcl = try #require(compileOrFail("""
            vcl 4.1;
            acl purgers { "127.0.0.1"; "10.0.0.0"/8; ! "10.1.2.3"; "2001:db8::"/32; }
            sub vcl_recv {
                if (client.ip ~ purgers) { return (purge); }
                if (client.ip !~ purgers) { return (synth(403, "Forbidden")); }
            }
            """))
        for (ip, allowed) in [("127.0.0.1", true), ("10.9.9.9", true), ("10.1.2.3", false), ("192.0.2.1", false),
                              ("2001:db8::1", true), ("::ffff:10.0.0.1", true), ("::1", false)] {
            var ctx = MockContext()
            ctx.ips[.clientIP] = VCLIP(parsing: ip)!
            let expected: VCLAction = allowed ? .purge : .synth(status: 403, reason: "Forbidden")
            #expect(try vcl.run(.recv, context: &ctx) == expected, "\(ip)")
        }
        #expect(vcl.acl(named: "purgers")?.matches(ipBytes: [10, 0, 0, 1]) == true)
    }

    @Test("+ concatenates strings and numbers; durations go into beresp.ttl in seconds")
    func concatenationAndDurations() throws {
        let vcl = try #require(compileOrFail("""
            vcl 4.1;
            sub vcl_backend_response {
                set beresp.ttl = 1h + 30m;
                set beresp.grace = 2d;
                set beresp.keep = 1500ms;
                set beresp.http.X-Info = "status=" + beresp.status + " ttl=" + beresp.ttl + " " + true;
                set beresp.status = beresp.status + 1;
                return (deliver);
            }
            """))
        var ctx = MockContext()
        ctx.ints[.berespStatus] = 200
        _ = try vcl.run(.backendResponse, context: &ctx)
        #expect(ctx.durations[.berespTTL] == 5400)
        #expect(ctx.durations[.berespGrace] == 172_800)
        #expect(ctx.durations[.berespKeep] == 1.5)
        #expect(ctx.headers[.beresp]?["x-info"] == "status=200 ttl=5400.000 true")
        #expect(ctx.ints[.berespStatus] == 201)
    }

    @Test("custom subs run inline and their return ends the calling sub")
    func callCustomSub() throws {
        let vcl = try #require(compileOrFail("""
            vcl 4.1;
            sub normalize { set req.http.Host = std.tolower(req.http.Host); }
            sub block { if (req.url ~ "^/admin") { return (synth(403)); } }
            import std;
            sub vcl_recv { call normalize; call block; set req.http.X-After = "yes"; }
            """))
        var ctx = MockContext(url: "/admin/x", headers: ["Host": "EXAMPLE.com"])
        #expect(try vcl.run(.recv, context: &ctx) == .synth(status: 403, reason: nil))
        #expect(ctx.headers[.req]?["host"] == "example.com")
        #expect(ctx.headers[.req]?["x-after"] == nil)
    }

    @Test("std functions: integer, duration, querysort, toupper, ip, log")
    func stdFunctions() throws {
        let vcl = try #require(compileOrFail("""
            vcl 4.1;
            import std;
            sub vcl_recv {
                set req.url = std.querysort(req.url);
                set req.http.N = std.integer(req.http.N, 0) + 1;
                set req.ttl = std.duration(req.http.T, 5s);
                set req.http.U = std.toupper("abc");
                if (std.ip(req.http.X-Forwarded-For, "0.0.0.0") == std.ip("10.0.0.1", client.ip)) { std.log("xff"); }
                return (hash);
            }
            """))
        var ctx = MockContext(url: "/s?b=2&a=1&&c=3", headers: ["N": "41", "T": "2m", "X-Forwarded-For": "10.0.0.1"])
        _ = try vcl.run(.recv, context: &ctx)
        #expect(ctx.strings[.reqURL] == "/s?a=1&b=2&c=3")
        #expect(ctx.headers[.req]?["n"] == "42")
        #expect(ctx.durations[.reqTTL] == 120)
        #expect(ctx.headers[.req]?["u"] == "ABC")
        #expect(ctx.logs == ["xff"])
        var bad = MockContext(headers: ["N": "x", "T": "soon"])
        _ = try vcl.run(.recv, context: &bad)
        #expect(bad.headers[.req]?["n"] == "1")
        #expect(bad.durations[.reqTTL] == 5)
    }

    @Test("a header value with CR/LF is a runtime error (the server answers 503)")
    func badHeaderValue() throws {
        let vcl = try #require(compileOrFail("""
            vcl 4.1;
            sub vcl_recv { set req.http.X = regsub(req.url, "^/(.*)", "\\1"); }
            """))
        var ctx = MockContext(url: "/a\r\nInjected: yes")
        #expect(throws: VCLRuntimeError.self) { try vcl.run(.recv, context: &ctx) }
        do {
            _ = try vcl.run(.recv, context: &ctx)
        } catch {
            #expect(error.code == .badHeaderValue)
            #expect(error.location.line == 2)
        }
    }

    @Test("elseif chains pick the first true branch")
    func elseifChain() throws {
        let vcl = try #require(compileOrFail("""
            vcl 4.1;
            sub vcl_recv {
                if (req.url == "/a") { set req.http.R = "a"; }
                elseif (req.url == "/b") { set req.http.R = "b"; }
                else if (req.url == "/c") { set req.http.R = "c"; }
                elsif (req.url == "/d") { set req.http.R = "d"; }
                else { set req.http.R = "other"; }
                return (hash);
            }
            """))
        for (url, r) in [("/a", "a"), ("/b", "b"), ("/c", "c"), ("/d", "d"), ("/e", "other")] {
            var ctx = MockContext(url: url)
            _ = try vcl.run(.recv, context: &ctx)
            #expect(ctx.headers[.req]?["r"] == r)
        }
    }

    @Test("directors: backend_hint gets a director reference the server resolves")
    func directors() throws {
        let vcl = try #require(compileOrFail("""
            vcl 4.1;
            import directors;
            backend a { .host = "10.0.0.1"; .port = "8080"; }
            backend b { .host = "10.0.0.2"; }
            sub vcl_init {
                new rr = directors.round_robin();
                rr.add_backend(a);
                rr.add_backend(b);
                new h = directors.hash();
                h.add_backend(a, 1.0);
                h.add_backend(b, 2);
            }
            sub vcl_recv {
                if (req.url ~ "^/static") { set req.backend_hint = h.backend(req.url); }
                else { set req.backend_hint = rr.backend(); }
            }
            """))
        #expect(vcl.directors.map(\.name) == ["rr", "h"])
        #expect(vcl.director(named: "h")?.members.map(\.weight) == [1, 2])
        #expect(vcl.defaultBackend?.name == "a")
        #expect(vcl.defaultBackend?.port == 8080)
        var ctx = MockContext(url: "/static/x")
        _ = try vcl.run(.recv, context: &ctx)
        #expect(ctx.backends[.reqBackendHint] == .director("h", key: "/static/x"))
        var init0 = MockContext()
        #expect(try vcl.run(.initialize, context: &init0) == .ok)
    }

    @Test("without builtin, a sub that ends without return gives .none")
    func fallThroughWithoutBuiltin() throws {
        let vcl = try #require(compileOrFail("vcl 4.1;\nsub vcl_recv { set req.http.X = \"1\"; }", appendBuiltin: false))
        var ctx = MockContext()
        #expect(try vcl.run(.recv, context: &ctx) == VCLAction.none)
        #expect(try vcl.run(.deliver, context: &ctx) == VCLAction.none)
        #expect(!vcl.defines(.deliver))
    }
}
