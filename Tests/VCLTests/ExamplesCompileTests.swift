import Foundation
import Testing
@testable import VCL

/// The repository's `vcl-like/` directory, found from this file's path.
let vclLikeDirectory = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("vcl-like")

func vclFiles() -> [String] {
    let fm = FileManager.default
    var out: [String] = []
    for dir in [vclLikeDirectory, vclLikeDirectory.appendingPathComponent("examples")] {
        let names = (try? fm.contentsOfDirectory(atPath: dir.path)) ?? []
        out += names.filter { $0.hasSuffix(".vcl") }.sorted().map { dir.appendingPathComponent($0).path }
    }
    return out
}

func loadExample(_ relativePath: String) throws -> CompiledVCL {
    let path = vclLikeDirectory.appendingPathComponent(relativePath).path
    return try VCLCompiler.compile([VCLSource(name: path, text: try String(contentsOfFile: path, encoding: .utf8))])
}

@Suite("Examples")
struct ExamplesCompileTests {
    @Test("vcl-like/ holds builtin, default and at least three examples")
    func inventory() {
        let names = vclFiles().map { URL(fileURLWithPath: $0).lastPathComponent }
        #expect(names.contains("builtin.vcl"))
        #expect(names.contains("default.vcl"))
        #expect(names.count >= 5)
    }

    @Test("every file in vcl-like/ compiles", arguments: vclFiles())
    func compiles(path: String) throws {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let isBuiltin = path.hasSuffix("/builtin.vcl")
        do {
            _ = try VCLCompiler.compile([VCLSource(name: path, text: text)], appendBuiltin: !isBuiltin)
        } catch {
            Issue.record("\(error)")
        }
    }

    @Test("BuiltinVCL.swift embeds vcl-like/builtin.vcl byte for byte")
    func builtinEmbeddedMatchesFile() throws {
        let onDisk = try String(contentsOfFile: vclLikeDirectory.appendingPathComponent("builtin.vcl").path, encoding: .utf8)
        // The generator puts the file between #""" lines, which drops only the final newline.
        #expect(BuiltinVCL.text + "\n" == onDisk)
    }

    @Test("cms.vcl: assets lose cookies and hash, logged-in users pass, PURGE needs the ACL")
    func cms() throws {
        let vcl = try loadExample("examples/cms.vcl")
        var asset = MockContext(url: "/wp-content/a.CSS?v=2", headers: ["Cookie": "wordpress_logged_in_x=1"])
        #expect(try vcl.run(.recv, context: &asset) == .hash)
        #expect(asset.headers[.req]?["cookie"] == nil)
        var loggedIn = MockContext(url: "/post/1", headers: ["Cookie": "wordpress_logged_in_x=1"])
        #expect(try vcl.run(.recv, context: &loggedIn) == .pass)
        var anonymous = MockContext(url: "/post/1", headers: ["Cookie": "_ga=GA1.2; _gid=3"])
        #expect(try vcl.run(.recv, context: &anonymous) == .hash)
        #expect(anonymous.headers[.req]?["cookie"] == nil)
        var purge = MockContext(method: "PURGE", url: "/post/1")
        purge.ips[.clientIP] = VCLIP(parsing: "10.0.0.5")!
        #expect(try vcl.run(.recv, context: &purge) == .purge)
        purge.ips[.clientIP] = VCLIP(parsing: "10.0.0.66")!
        #expect(try vcl.run(.recv, context: &purge) == .synth(status: 405, reason: "Not allowed"))
    }

    @Test("api.vcl: query strings normalised, public GET with a token cached, key ignores the token")
    func api() throws {
        let vcl = try loadExample("examples/api.vcl")
        var ctx = MockContext(url: "/v1/public/items?b=2&utm_source=x&a=1", headers: ["Authorization": "Bearer t"])
        #expect(try vcl.run(.recv, context: &ctx) == .hash)
        #expect(ctx.strings[.reqURL] == "/v1/public/items?a=1&b=2")
        #expect(try vcl.run(.hash, context: &ctx) == .lookup)
        #expect(ctx.hashed == ["/v1/public/items?a=1&b=2"])
        var me = MockContext(url: "/v1/me")
        #expect(try vcl.run(.recv, context: &me) == .pass)
        var be = MockContext()
        be.ints[.berespStatus] = 200
        _ = try vcl.run(.backendResponse, context: &be)
        #expect(be.durations[.berespGrace] == 21_600.0)
        #expect(be.durations[.berespTTL] == 30)
    }

    @Test("multi-backend.vcl: probes, backends and directors are declared; requests get a director")
    func multiBackend() throws {
        let vcl = try loadExample("examples/multi-backend.vcl")
        #expect(vcl.backends.map(\.name) == ["app1", "app2", "static1", "static2", "maintenance"])
        #expect(vcl.backends[0].probe?.url == "/healthz")
        #expect(vcl.backends[0].probe?.threshold == 3)
        #expect(vcl.backends[2].probe?.request == "HEAD /ping HTTP/1.1\r\nHost: static\r\nConnection: close\r\n\r\n")
        #expect(vcl.backends[3].maxConnections == 50)
        #expect(vcl.directors.map(\.kind) == [.roundRobin, .hash, .fallback, .random])
        #expect(vcl.director(named: "canary")?.members.map(\.weight) == [9, 1])
        var ctx = MockContext(url: "/static/logo.png")
        _ = try vcl.run(.recv, context: &ctx)
        #expect(ctx.backends[.reqBackendHint] == .director("statics", key: "/static/logo.png"))
        var app = MockContext(url: "/")
        #expect(try vcl.run(.recv, context: &app) == .hash)
        #expect(app.backends[.reqBackendHint] == .director("apps", key: nil))
    }
}
