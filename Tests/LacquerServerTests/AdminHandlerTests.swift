import LacquerTesting
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization
import Testing

@testable import LacquerServer

/// The admin listener runs what may block (reading and compiling a configuration, gathering
/// figures from the disk tier) on a thread pool, never on an event loop that also serves clients.
@Suite("Admin handler", .timeLimit(.minutes(1)))
struct AdminHandlerTests {
    @Test("POST /reload, /stats and /metrics run off the event loop; /ban and /health answer at once")
    func slowEndpointsOffTheLoop() async throws {
        let onLoop = Mutex<[String: Bool]>([:])
        let actions = AdminHandler.Actions(
            stats: {
                onLoop.withLock { $0["stats", default: false] = $0["stats", default: false] || MultiThreadedEventLoopGroup.currentEventLoop != nil }
                return StatsSnapshot(uptimeSeconds: 1, counters: [("client_req", 3)], memory: [], disk: [], connections: 0)
            },
            reload: {
                onLoop.withLock { $0["reload"] = MultiThreadedEventLoopGroup.currentEventLoop != nil }
                return LacquerServer.ReloadResult(ok: false, message: "reload failed; the running configuration stays")
            },
            ban: { _ in nil })
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let channel = try await ServerBootstrap(group: group)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline(withErrorHandling: true).flatMapThrowing {
                    try channel.pipeline.syncOperations.addHandler(AdminHandler(actions: actions))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let port = try #require(channel.localAddress?.port)
        let reload = try await runBlocking { try httpGet(port: port, "/reload", method: "POST") }
        #expect(reload.status == 422)
        #expect(reload.bodyString.hasPrefix("reload failed"))
        let stats = try await runBlocking { try httpGet(port: port, "/stats") }
        #expect(stats.status == 200 && stats.bodyString.contains("\"client_req\":3"))
        let metrics = try await runBlocking { try httpGet(port: port, "/metrics") }
        #expect(metrics.status == 200)
        let ban = try await runBlocking { try httpGet(port: port, "/ban", method: "POST", body: "req.url ~ ^/x") }
        #expect(ban.status == 200)
        #expect(onLoop.withLock { $0 } == ["reload": false, "stats": false])
        try await channel.close().get()
        try await group.shutdownGracefully()
    }
}
