import CacheStore
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
import Synchronization
import VCL

#if canImport(Glibc)
import Glibc
#endif

/// The Lacquer cache as a `Service`: binds the client and admin listeners, serves until
/// graceful shutdown, then closes listeners and backend connections.
///
/// Tests start it directly on port 0 and read the bound addresses back; the `lacquer`
/// executable runs it in a `ServiceGroup` that turns SIGTERM/SIGINT into graceful shutdown.
public final class LacquerServer: Service, Sendable {
    public let configuration: ServerConfiguration
    public let counters: Counters
    public let memory: MemoryTier
    private let logger: Logger
    private let clock: @Sendable () -> Double
    private let startedAt: Double
    private let state = Mutex<RunState>(RunState())
    /// How many times a stop was asked for (`requestStop`).
    private let stopRequests = Atomic<Int>(0)
    private let stopSignal = AsyncStream<Void>.makeStream()

    private struct RunState {
        var group: MultiThreadedEventLoopGroup?
        var channels: [any Channel] = []
        /// The client listeners (closed first when draining).
        var clientListeners: [any Channel] = []
        var listening: [SocketAddress] = []
        var admin: SocketAddress?
        var context: ServerContext?
        var disk: DiskStorage?
        var maintenance: RepeatedTask?
        var lurking: RepeatedTask?
        var accessLog: AccessLog?
        var tls: TLSCertificates?
    }

    public init(
        configuration: ServerConfiguration,
        logger: Logger = Logger(label: "lacquer"),
        clock: @escaping @Sendable () -> Double = LacquerServer.wallClock
    ) {
        self.configuration = configuration
        self.logger = logger
        self.clock = clock
        self.counters = Counters()
        self.memory = MemoryTier(
            capacityBytes: configuration.memoryBytes, maxObjectBytes: configuration.memoryMaxObjectBytes,
            surrogateKeyFields: configuration.surrogateKeyFields)
        self.startedAt = clock()
    }

    /// Seconds since the Unix epoch from the system's real-time clock.
    @Sendable public static func wallClock() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// The addresses the client listeners are bound to (after `start()`).
    public var listeningAddresses: [SocketAddress] { self.state.withLock { $0.listening } }
    /// The admin listener's address (after `start()`), if enabled.
    public var adminAddress: SocketAddress? { self.state.withLock { $0.admin } }

    /// What a reload did: the configuration in use afterwards is the new one only when `ok`.
    public struct ReloadResult: Sendable {
        public var ok: Bool
        public var message: String
    }

    /// Reloads the TLS certificates and `--config` (SIGHUP, `POST /reload`). Each is read and
    /// checked; on any error what is running stays and the error is returned. Requests in
    /// flight finish with the configuration they started with, and connections open keep the
    /// certificate they got; new ones get the new ones. No connection is touched.
    public func reload() -> ReloadResult {
        let tls = self.state.withLock { $0.tls }
        var tlsResult: ReloadResult?
        if let tls {
            do {
                let changed = try tls.reload()
                self.counters.increment(.tlsReloads)
                self.logger.notice("certificates reloaded", metadata: ["changed": "\(changed)"])
                tlsResult = ReloadResult(ok: true, message: "certificates reloaded (\(changed) changed)")
            } catch {
                self.counters.increment(.tlsReloadFailures)
                self.logger.error("certificate reload failed; the certificates in use stay", metadata: ["error": "\(error.description)"])
                tlsResult = ReloadResult(ok: false, message: "certificate reload failed; the certificates in use stay: \(error.description)")
            }
        }
        guard self.configuration.vclPath != nil else {
            if let tlsResult { return tlsResult }
            let message = "nothing to reload: Lacquer was started without --config"
            self.logger.warning("\(message)")
            return ReloadResult(ok: false, message: message)
        }
        let result = self.reloadConfiguration()
        guard let tlsResult else { return result }
        return ReloadResult(ok: result.ok && tlsResult.ok, message: tlsResult.message + "\n" + result.message)
    }

    private func reloadConfiguration() -> ReloadResult {
        guard let path = self.configuration.vclPath else {
            return ReloadResult(ok: false, message: "nothing to reload: Lacquer was started without --config")
        }
        guard let context = self.state.withLock({ $0.context }) else {
            return ReloadResult(ok: false, message: "not running")
        }
        let compiled: CompiledVCL
        do {
            compiled = try VCLLoader.load(path: path, purgeACL: self.configuration.purgeACL)
        } catch {
            self.counters.increment(.vclReloadFailures)
            self.logger.error("reload failed; the running configuration stays", metadata: ["error": "\(error.description)"])
            return ReloadResult(ok: false, message: "reload failed; the running configuration stays:\n\(error.description)")
        }
        let running = context.vcl
        var change = ServerContext.BackendChange(added: [], removed: [], changed: [])
        if !running.backends.isEmpty || !compiled.backends.isEmpty {
            let new = VCLLoader.backendConfigurations(compiled).map { backend in
                var backend = backend
                // What the command line set for every backend (passive health, a default probe) stays.
                backend.passiveHealth = self.configuration.backends.first?.passiveHealth ?? backend.passiveHealth
                if backend.probe == nil, let defaultProbe = self.configuration.defaultProbe { backend.probe = defaultProbe }
                return backend
            }
            if new.isEmpty {
                self.counters.increment(.vclReloadFailures)
                let message = "reload refused; the running configuration stays: \(path) declares no backend any more"
                self.logger.error("\(message)")
                return ReloadResult(ok: false, message: message)
            }
            for backend in new {
                if let tls = backend.tls {
                    do {
                        _ = try BackendTLSContexts.context(for: tls)
                    } catch {
                        self.counters.increment(.vclReloadFailures)
                        let message = "reload failed; the running configuration stays: backend \(backend.name): \(error.description)"
                        self.logger.error("\(message)")
                        return ReloadResult(ok: false, message: message)
                    }
                }
                do {
                    try backend.probe?.validate()
                } catch {
                    self.counters.increment(.vclReloadFailures)
                    let message = "reload failed; the running configuration stays: backend \(backend.name): \(error.description)"
                    self.logger.error("\(message)")
                    return ReloadResult(ok: false, message: message)
                }
            }
            // The new pools are in place on every loop before a request can name them.
            change = context.replaceBackends(new)
        }
        context.replaceVCL(compiled)
        self.counters.increment(.vclReloads)
        var metadata: Logger.Metadata = ["file": "\(path)"]
        var message = "reloaded \(path)"
        if !change.isEmpty {
            metadata["backends_added"] = "\(change.added.joined(separator: ","))"
            metadata["backends_removed"] = "\(change.removed.joined(separator: ","))"
            metadata["backends_changed"] = "\(change.changed.joined(separator: ","))"
            for (label, names) in [("added", change.added), ("removed", change.removed), ("changed", change.changed)] where !names.isEmpty {
                message += "; backends \(label): \(names.joined(separator: ", "))"
            }
        }
        self.logger.notice("configuration reloaded", metadata: metadata)
        return ReloadResult(ok: true, message: message)
    }

    /// Adds a ban (`POST /ban`); returns why the expression was refused, or nil. With a disk
    /// tier the ban is recorded there, committed, before this returns: it outlives a restart or
    /// a crash, as the objects it covers may. Called off the event loops.
    public func ban(_ expression: String) -> String? {
        guard let (context, disk) = self.state.withLock({ state in state.context.map { ($0, state.disk) } }) else {
            return "not running"
        }
        do {
            let ban = try VCLBan.parse(expression)
            let time = self.clock()
            if let disk {
                do {
                    try disk.tier.addBan(time: time, expression: ban.text)
                } catch {
                    self.counters.increment(.diskWriteErrors)
                    self.logger.error("ban could not be recorded in the disk tier", metadata: ["error": "\(error)"])
                    return "the ban could not be recorded in the disk tier; it was not added"
                }
            }
            guard context.bans.add(ban, now: time) != nil else {
                self.counters.increment(.bansRefused)
                return "too many bans (\(context.bans.limit))"
            }
            self.counters.increment(.bansAdded)
            self.logger.notice("ban added", metadata: ["expression": "\(ban.text)", "source": "admin"])
            return nil
        } catch {
            self.counters.increment(.bansRefused)
            return error.description
        }
    }

    /// Why an admin purge failed, in plain words.
    public struct PurgeError: Error, Sendable {
        public var reason: String
    }

    /// Purges (or, `soft`, marks stale) every object tagged with any of `keys` (`POST /purge?key=`);
    /// returns how many once the disk tier has committed it. Called off the event loops.
    public func purge(surrogateKeys keys: [String], soft: Bool) -> Result<Int, PurgeError> {
        guard let (context, group) = self.state.withLock({ state in state.context.flatMap { c in state.group.map { (c, $0) } } })
        else {
            return .failure(PurgeError(reason: "not running"))
        }
        let loop = group.next()
        do {
            let count = try context.purge(surrogateKeys: keys, soft: soft, on: loop).wait()
            self.counters.increment(count > 0 ? .purgeOK : .purgeMiss)
            self.logger.notice(
                "purge", metadata: ["keys": "\(keys.joined(separator: " "))", "soft": "\(soft)", "objects": "\(count)", "source": "admin"])
            return .success(count)
        } catch {
            self.logger.error("purge could not be committed to the disk tier", metadata: ["error": "\(error)"])
            return .failure(PurgeError(reason: "the purge could not be committed to the disk tier"))
        }
    }

    /// Invalidates every object stored until now (`POST /purge?all=1`): in O(1), a ban every
    /// object meets, recorded in the disk tier first; the ban lurker then removes the objects
    /// in the background. Returns why it failed, or nil.
    public func purgeAll() -> String? {
        self.ban(Self.everythingBan)
    }

    /// The ban that covers every object (Varnish's idiom for "purge everything").
    public static let everythingBan = "obj.status != 0"

    /// Puts the bans the disk tier kept back on the ban list, with their times, so objects
    /// stored before them stay hidden after a restart.
    private func restoreBans(from disk: DiskStorage, into bans: BanList) {
        do {
            // A ban older than every stored object covers nothing any more (memory is empty at
            // start): it is dropped rather than kept testing every lookup.
            let dropped = try disk.tier.removeBansCoveringNothing()
            if dropped > 0 {
                self.logger.info("bans that cover no stored object dropped", metadata: ["bans": "\(dropped)"])
            }
            var restored = 0
            for stored in try disk.tier.storedBans() {
                guard let ban = try? VCLBan.parse(stored.expression) else {
                    self.logger.warning("a kept ban no longer parses; skipped", metadata: ["expression": "\(stored.expression)"])
                    continue
                }
                if bans.add(ban, now: stored.time) != nil { restored += 1 }
            }
            if restored > 0 {
                self.logger.notice("bans restored from the disk tier", metadata: ["bans": "\(restored)"])
            }
        } catch {
            self.logger.error("the disk tier's bans could not be read", metadata: ["error": "\(error)"])
        }
    }

    /// `GET /bans`: one line per active ban, oldest first: its id, time (RFC 3339), the stored
    /// copies it removed so far (an object in memory and on disk counts twice) and its expression.
    public func banListing() -> String {
        guard let context = self.state.withLock({ $0.context }) else { return "" }
        let entries = context.bans.snapshot()
        var out = "\(entries.count) active ban(s)\n"
        for entry in entries {
            out += "\(entry.sequence)  \(LogText.isoTime(entry.time))  removed=\(entry.removed)  \(entry.ban.text)\n"
        }
        return out
    }

    /// `GET /backends`: one line per backend: name, address, health, requests, failures.
    public func backendListing() -> String {
        var out = ""
        for backend in self.backendSnapshots {
            let failures = backend.failures.reduce(0) { $0 + $1.value }
            var line = "\(backend.name)  \(backend.address)  \(backend.healthy ? "healthy" : "sick")"
            if let probe = backend.probe {
                line += "  probe \(probe.good)/\(probe.window)"
            }
            line += "  requests=\(backend.requests) failures=\(failures) open=\(backend.openConnections) idle=\(backend.idleConnections)"
            out += line + "\n"
        }
        return out
    }

    /// Reopens the access log file (SIGUSR1, for logrotate).
    public func reopenLogs() {
        self.state.withLock { $0.accessLog }?.reopen()
    }

    /// Binds every listener. Throws `LacquerServerError.bindFailed` naming the address.
    public func start() async throws {
        guard !self.configuration.backends.isEmpty else { throw LacquerServerError.noBackend }
        guard self.state.withLock({ $0.group == nil }) else { throw LacquerServerError.alreadyStarted }
        for backend in self.configuration.backends {
            do {
                try backend.probe?.validate()
            } catch {
                throw LacquerServerError.invalidProbe(backend: backend.name, reason: error.description)
            }
            if let tls = backend.tls {
                do {
                    _ = try BackendTLSContexts.context(for: tls)
                } catch {
                    throw LacquerServerError.tls("backend \(backend.name): \(error.description)")
                }
            }
        }
        let accessLog: AccessLog
        do {
            accessLog = try AccessLog(
                destination: self.configuration.accessLog, format: self.configuration.accessLogFormat,
                counters: self.counters, logger: self.logger)
        } catch {
            throw LacquerServerError.accessLog(error.description)
        }
        var tls: TLSCertificates?
        if self.configuration.listen.contains(where: \.tls) {
            guard let settings = self.configuration.tls else {
                throw LacquerServerError.tls("a TLS listener needs a certificate: give --tls-cert FILE --tls-key FILE")
            }
            do {
                tls = try TLSCertificates(settings)
            } catch {
                throw LacquerServerError.tls(error.description)
            }
        }
        let disk = try self.openDiskTier()
        let threads = self.configuration.threads > 0 ? self.configuration.threads : System.coreCount
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        let loops = Array(group.makeIterator())
        let context = ServerContext(
            configuration: self.configuration, memory: self.memory, disk: disk, counters: self.counters,
            logger: self.logger, clock: self.clock, eventLoops: loops, accessLog: accessLog)
        accessLog.start()
        let memory = self.memory
        let clock = self.clock
        let interval = TimeAmount.milliseconds(Int64(max(0.05, self.configuration.maintenanceInterval) * 1000))
        let maintenance = group.next().scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
            let now = clock()
            memory.removeExpired(now: now)
            disk?.maintain(now: now)
        }
        let lurkerInterval = TimeAmount.milliseconds(Int64(max(0.01, self.configuration.banLurkerInterval) * 1000))
        let lurking = group.next().scheduleRepeatedTask(initialDelay: lurkerInterval, delay: lurkerInterval) { _ in
            context.lurker.kick()
        }
        if let disk {
            // Crash debris is swept in the background, never on the start-up path.
            group.next().scheduleTask(in: .seconds(5)) { disk.sweepOrphans() }
        }
        self.state.withLock { state in
            state.group = group
            state.context = context
            state.disk = disk
            state.maintenance = maintenance
            state.lurking = lurking
            state.accessLog = accessLog
            state.tls = tls
        }
        if let disk {
            self.restoreBans(from: disk, into: context.bans)
            do {
                let resumed = try disk.resumeTagPurges()
                if resumed > 0 {
                    self.logger.notice("purges by surrogate key resumed from the disk tier", metadata: ["purges": "\(resumed)"])
                }
            } catch {
                self.logger.error("the disk tier's pending purges could not be read", metadata: ["error": "\(error)"])
            }
        }
        context.startProbes()
        do {
            for address in self.configuration.listen {
                let channel = try await self.bindClientListener(address, group: group, context: context, tls: tls)
                self.state.withLock {
                    $0.channels.append(channel)
                    $0.clientListeners.append(channel)
                    if let local = channel.localAddress { $0.listening.append(local) }
                }
                self.logger.info("listening on \(LacquerServer.describe(channel.localAddress))")
            }
            if let admin = self.configuration.admin {
                let channel = try await self.bindAdminListener(admin, group: group)
                self.state.withLock {
                    $0.channels.append(channel)
                    $0.admin = channel.localAddress
                }
                self.logger.info("admin listening on \(LacquerServer.describe(channel.localAddress))")
            }
        } catch {
            try? await self.shutdown()
            throw error
        }
    }

    /// `127.0.0.1:6081` / `[::1]:6081`.
    static func describe(_ address: SocketAddress?) -> String {
        guard let address, let ip = address.ipAddress, let port = address.port else { return "?" }
        return ip.contains(":") ? "[\(ip)]:\(port)" : "\(ip):\(port)"
    }

    /// Runs until graceful shutdown (SIGTERM in a `ServiceGroup`) or cancellation, then drains.
    public func run() async throws {
        if self.state.withLock({ $0.group == nil }) {
            try await self.start()
        }
        try? await gracefulShutdown()
        await self.drain()
        try await self.shutdown()
    }

    /// Asks the server to stop (SIGTERM, SIGINT): the first request starts a drain
    /// (`runUntilStopped`), a second one ends the drain at once.
    public func requestStop() {
        let count = self.stopRequests.wrappingAdd(1, ordering: .relaxed).newValue
        if count == 1 {
            self.stopSignal.continuation.yield()
        } else {
            self.logger.notice("stop asked again: closing the connections still open now")
        }
    }

    /// Serves until `requestStop()`, then drains and shuts down.
    public func runUntilStopped() async throws {
        for await _ in self.stopSignal.stream { break }
        await self.drain()
        try await self.shutdown()
    }

    /// Drains, as nginx's graceful `quit`: the client listeners close (no new connections),
    /// idle keep-alive connections close, and responses and fills in flight get up to
    /// `drainTimeout` to finish (each connection closes after its current response). Returns
    /// when nothing is left, at the timeout, or when a second stop is asked for; `shutdown()`
    /// then closes what remains and flushes the disk tier. The admin listener stays open.
    public func drain() async {
        let (listeners, context) = self.state.withLock { state in
            let listeners = state.clientListeners
            state.clientListeners = []
            state.channels.removeAll { channel in listeners.contains { $0 === channel } }
            return (listeners, state.context)
        }
        guard let context else { return }
        let timeout = self.configuration.drainTimeout
        let startOpen = context.openConnections.load(ordering: .relaxed)
        self.logger.notice(
            "draining: no new connections; responses in flight may finish",
            metadata: ["connections": "\(startOpen)", "timeout_seconds": "\(timeout)"])
        for listener in listeners {
            try? await listener.close()
        }
        context.drainConnections()
        let clock = ContinuousClock()
        let deadline = clock.now + .milliseconds(Int64(max(0, timeout) * 1000))
        var open = 0
        var fills = 0
        while true {
            open = context.openConnections.load(ordering: .relaxed)
            fills = context.coalescer.figures(now: self.clock()).busy
            if open == 0 && fills == 0 { break }
            if clock.now >= deadline || self.stopRequests.load(ordering: .relaxed) >= 2 { break }
            try? await Task.sleep(for: .milliseconds(20))
        }
        if open == 0 && fills == 0 {
            self.logger.notice("drained: every response finished")
        } else {
            self.logger.warning(
                "drain ended with work left; closing it",
                metadata: ["connections": "\(open)", "fills": "\(fills)"])
        }
    }

    /// Closes the listeners and backend pools, lets queued disk writes finish (bounded), closes
    /// the disk tier (releasing its directory lock) and stops the event loops.
    public func shutdown() async throws {
        let (channels, group, context, disk, maintenance, accessLog) = self.state.withLock { state in
            state.lurking?.cancel()
            state.lurking = nil
            let result = (state.channels, state.group, state.context, state.disk, state.maintenance, state.accessLog)
            state.accessLog = nil
            state.channels = []
            state.group = nil
            state.context = nil
            state.disk = nil
            state.maintenance = nil
            return result
        }
        maintenance?.cancel()
        for channel in channels {
            try? await channel.close()
        }
        await context?.stopProbes()
        context?.shutdownPools()
        await context?.lurker.shutdown()
        await disk?.shutdown()
        try await group?.shutdownGracefully()
        if group != nil {
            self.logger.notice("stopped")
        }
        accessLog?.stop()
    }

    /// Opens the disk tier. A directory another Lacquer holds, or one that cannot be used (a
    /// file, unwritable, …), stops start-up with the reason: the disk tier was asked for, and a
    /// cache that silently runs without it would lose what an operator expects to keep. Memory-only
    /// is asked for with a disk size of 0.
    private func openDiskTier() throws -> DiskStorage? {
        guard self.configuration.diskBytes > 0, !self.configuration.storageDirectory.isEmpty else { return nil }
        var tierConfiguration = DiskTier.Configuration(
            directory: self.configuration.storageDirectory,
            capacityBytes: self.configuration.diskBytes)
        tierConfiguration.surrogateKeyFields = self.configuration.surrogateKeyFields
        // One read connection that never waits per event loop (see `DiskTier.lookupWithoutWaiting`).
        tierConfiguration.nowaitReaders = self.configuration.threads > 0 ? self.configuration.threads : System.coreCount
        do {
            let tier = try DiskTier(configuration: tierConfiguration)
            for warning in tier.startupWarnings {
                self.logger.warning("disk tier: \(warning)")
            }
            self.logger.info(
                "disk tier open",
                metadata: ["directory": "\(tier.directory)", "objects": "\(tier.stats.objects)", "bytes": "\(tier.stats.bytes)"])
            return DiskStorage(
                tier: tier, counters: self.counters, logger: self.logger,
                maxQueuedBytes: self.configuration.diskMaxQueuedBytes, clock: self.clock)
        } catch let error as CacheStoreError {
            if case .directoryLocked = error {
                throw LacquerServerError.storageLocked(error.description)
            }
            throw LacquerServerError.storageUnusable(
                "--storage-dir \(self.configuration.storageDirectory) cannot hold the disk tier: \(error.description) (--disk-size 0 runs memory-only)")
        }
    }

    /// The disk tier's driver, while running with one (tests).
    var diskStorage: DiskStorage? { self.state.withLock { $0.disk } }

    /// The disk tier's figures, when it is enabled.
    public var diskStats: DiskTierStats? {
        self.state.withLock { $0.disk?.tier.stats }
    }

    /// Each backend's health, connections and failures (empty before `start()` and after shutdown).
    public var backendSnapshots: [BackendSnapshot] {
        guard let context = self.state.withLock({ $0.context }) else { return [] }
        let now = context.clock()
        return context.backendStats.map { $0.snapshot(now: now) }
    }

    /// Counters, connections and memory-tier figures, as `/stats` shows them.
    /// Coalescing and invalidation state: fetches in flight, hit-for-miss keys, active bans.
    private var fetchFigures: [(name: String, value: Int)] {
        guard let context = self.state.withLock({ $0.context }) else { return [] }
        let figures = context.coalescer.figures(now: self.clock())
        return [("in_flight", figures.busy), ("hit_for_miss_objects", figures.hitForMiss), ("bans", context.bans.total)]
    }

    public var stats: StatsSnapshot {
        let memory = self.memory.stats
        let connections = self.state.withLock { $0.context?.openConnections.load(ordering: .relaxed) ?? 0 }
        var diskFigures: [(name: String, value: Int)] = []
        if let disk = self.diskStats {
            diskFigures = [
                ("objects", Int(disk.objects)), ("bytes", Int(disk.bytes)), ("capacity_bytes", Int(disk.capacityBytes)),
                ("inserts", disk.inserts), ("hits", disk.hits), ("misses", disk.misses), ("evictions", disk.evictions),
                ("expired", disk.expired), ("purged", disk.purged), ("checksum_failures", disk.checksumFailures),
                ("missing_bodies", disk.missingBodies), ("write_errors", disk.writeErrors), ("refused", disk.refused),
                ("disk_full", disk.diskFull ? 1 : 0), ("lookups_without_wait", disk.lookupsWithoutWait),
                ("lookups_handed_off", disk.lookupsHandedOff), ("lookups_from_kept_rows", disk.lookupsFromKeptRows),
                ("verified_files_open", disk.verifiedFilesOpen),
            ]
        }
        var counters = self.counters.snapshot
        if let context = self.state.withLock({ $0.context }) {
            // Client bytes are counted per loop (see `LoopTraffic`).
            let (received, sent) = context.trafficTotals
            for index in counters.indices {
                if counters[index].name == Counter.clientBytesReceived.name { counters[index].value = received }
                if counters[index].name == Counter.clientBytesSent.name { counters[index].value = sent }
            }
        }
        let objectMemory = ObjectMemory.shared.stats
        return StatsSnapshot(
            uptimeSeconds: self.clock() - self.startedAt,
            counters: counters,
            memory: [
                ("objects", memory.objects), ("bytes", memory.bytes), ("capacity_bytes", memory.capacityBytes),
                ("inserts", memory.inserts), ("evictions", memory.evictions), ("hits", memory.hits),
                ("misses", memory.misses), ("rejected_too_large", memory.rejectedTooLarge),
                // Where objects' bytes live (`ObjectMemory`): slots in use, and the runs holding them.
                ("slot_bytes", objectMemory.slotBytes), ("run_bytes", objectMemory.runs * ObjectMemory.runBytes),
            ],
            disk: diskFigures,
            fetches: self.fetchFigures,
            connections: connections,
            backends: self.backendSnapshots,
            requestDurations: self.state.withLock { $0.context?.requestDurations })
    }

    private func bindClientListener(
        _ address: HostAndPort, group: MultiThreadedEventLoopGroup, context: ServerContext, tls: TLSCertificates?
    ) async throws -> any Channel {
        let limits = self.configuration.limits
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            // Accept a burst of connections per wake-up, not NIO's default handful.
            .serverChannelOption(.maxMessagesPerRead, value: 256)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            // The first read of a connection into 1 KiB, nginx's client_header_buffer_size (NIO's
            // default is 2 KiB): the buffer is kept for the next read, so an idle keep-alive
            // connection holds this much. A longer head fills it, and the next read is twice as large.
            .childChannelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 1024, maximum: 65536))
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let open = context.openConnections.wrappingAdd(1, ordering: .relaxed).newValue
                    channel.closeFuture.whenComplete { _ in
                        context.openConnections.wrappingSubtract(1, ordering: .relaxed)
                    }
                    if open > limits.maxConnections {
                        context.counters.increment(.sessDropped)
                        channel.close(promise: nil)
                        return
                    }
                    if let perClient = limits.connectionsPerClient {
                        // One address may not take every connection (HARDENING.md §4: accept and close).
                        let client = channel.remoteAddress?.ipAddress ?? ""
                        guard context.clientConnections.open(client, limit: perClient) else {
                            context.counters.increment(.sessDroppedClient)
                            channel.close(promise: nil)
                            return
                        }
                        channel.closeFuture.whenComplete { _ in context.clientConnections.close(client) }
                    }
                    try ClientPipeline.configure(channel, listener: address, context: context, tls: tls)
                }
            }
        do {
            return try await bootstrap.bind(host: address.host, port: address.port).get()
        } catch {
            throw LacquerServerError.bindFailed(address: address.description, reason: BackendPool.describe(error))
        }
    }

    private func bindAdminListener(_ address: HostAndPort, group: MultiThreadedEventLoopGroup) async throws -> any Channel {
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline(withErrorHandling: true).flatMapThrowing {
                    try channel.pipeline.syncOperations.addHandler(
                        AdminHandler(
                            actions: AdminHandler.Actions(
                                stats: { [self] in self.stats },
                                reload: { [self] in self.reload() },
                                ban: { [self] in self.ban($0) },
                                bans: { [self] in self.banListing() },
                                purgeKeys: { [self] keys, soft in
                                    self.purge(surrogateKeys: keys, soft: soft).mapError { AdminHandler.PurgeFailure(reason: $0.reason) }
                                },
                                purgeAll: { [self] in self.purgeAll() },
                                backends: { [self] in self.backendListing() },
                                accessLog: self.state.withLock { $0.context?.accessLog }),
                            secret: self.configuration.adminSecret))
                }
            }
        do {
            return try await bootstrap.bind(host: address.host, port: address.port).get()
        } catch {
            throw LacquerServerError.bindFailed(address: "admin " + address.description, reason: BackendPool.describe(error))
        }
    }
}
