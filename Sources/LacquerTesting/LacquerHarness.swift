import FixtureOrigin
import Foundation
import LacquerServer
import Logging
import NIOCore

/// A fresh, empty folder under the system's temporary directory.
public func makeTemporaryDirectory(_ prefix: String = "lacquer-test") throws -> String {
    let path = FileManager.default.temporaryDirectory
        .appendingPathComponent("\(prefix)-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// Starts a fixture origin and a Lacquer in front of it on 127.0.0.1 port 0 (with its disk tier
/// in a fresh temporary folder unless `configure` picks one), runs `body`, then shuts both down
/// (also when `body` throws) and removes the temporary folder.
public func withLacquer<T>(
    configure: (inout ServerConfiguration) -> Void = { _ in },
    clock: (@Sendable () -> Double)? = nil,
    _ body: (_ lacquer: LacquerServer, _ port: Int, _ origin: FixtureOrigin) async throws -> T
) async throws -> T {
    let origin = try await FixtureOrigin.start(host: "127.0.0.1", port: 0)
    var configuration = ServerConfiguration()
    configuration.listen = [HostAndPort(host: "127.0.0.1", port: 0)]
    configuration.admin = HostAndPort(host: "127.0.0.1", port: 0)
    configuration.threads = 2
    configuration.backends = [BackendConfiguration(name: "origin", host: "127.0.0.1", port: origin.port)]
    let storage = try makeTemporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: storage) }
    configuration.storageDirectory = storage
    configure(&configuration)
    var logger = Logger(label: "lacquer-test")
    logger.logLevel = .critical
    let server =
        if let clock {
            LacquerServer(configuration: configuration, logger: logger, clock: clock)
        } else {
            LacquerServer(configuration: configuration, logger: logger)
        }
    do {
        try await server.start()
    } catch {
        try? await origin.shutdown()
        throw error
    }
    let port = server.listeningAddresses.first?.port ?? 0
    do {
        let result = try await body(server, port, origin)
        try? await server.shutdown()
        try? await origin.shutdown()
        return result
    } catch {
        try? await server.shutdown()
        try? await origin.shutdown()
        throw error
    }
}

/// Waits (at most 5 s) until the disk tier has stored `count` objects; false if it did not.
@discardableResult
public func waitForDiskWrites(_ lacquer: LacquerServer, count: Int) async throws -> Bool {
    for _ in 0..<500 where lacquer.counters[.diskStored] < count {
        try await Task.sleep(for: .milliseconds(10))
    }
    return lacquer.counters[.diskStored] >= count
}

/// Polls `condition` every 10 ms for at most `seconds`; returns whether it came true.
public func eventually(within seconds: Double = 5, _ condition: () throws -> Bool) async throws -> Bool {
    let deadline = ContinuousClock.now.advanced(by: .milliseconds(Int(seconds * 1000)))
    while ContinuousClock.now < deadline {
        if try condition() { return true }
        try await Task.sleep(for: .milliseconds(10))
    }
    return try condition()
}

/// Polls a running binary's admin `/stats` until its disk tier has stored at least `count`
/// objects or `seconds` pass; returns the last figure read.
public func waitForDiskStored(admin: Int, count: Int, within seconds: Double = 10) async throws -> Int {
    var stored = 0
    let deadline = ContinuousClock.now.advanced(by: .milliseconds(Int(seconds * 1000)))
    while stored < count && ContinuousClock.now < deadline {
        try await Task.sleep(for: .milliseconds(20))
        let stats = (try? httpGet(port: admin, "/stats").bodyString) ?? ""
        if let range = stats.range(of: "\"disk_stored\":") {
            stored = Int(stats[range.upperBound...].prefix(while: { $0.isNumber })) ?? 0
        }
    }
    return stored
}
