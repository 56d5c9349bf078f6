import ArgumentParser
import LacquerServer
import Logging
import NIOCore
import VCL
import UnixSignals

#if canImport(Glibc)
import Glibc
#endif

/// `lacquer`: a caching HTTP accelerator in front of a slow origin.
@main
struct Lacquer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lacquer",
        abstract: "A caching HTTP accelerator (reverse proxy cache) in front of a slow origin.",
        discussion: """
            Every response carries X-Cache-Status (HIT, MISS, EXPIRED, STALE, UPDATING, REVALIDATED, BYPASS)
            and an RFC 9211 Cache-Status. PURGE /path from an address in --purge-acl removes the object.
            Sizes accept bytes or units: 512KiB, 64MB (decimal), 1GiB, 256M (binary).
            Signals: SIGTERM or SIGINT drains (a second one stops at once), SIGHUP reloads --config,
            SIGUSR1 reopens the access log file.
            """,
        version: LacquerVersion.string,
        subcommands: [Stat.self, Log.self, Admin.self]
    )

    @Option(name: .customLong("listen"), help: ArgumentHelp("Address to serve clients on (repeatable; port 0 = any free port; default 127.0.0.1:6081 when neither --listen nor --listen-tls is given). With ',proxy', its connections start with a PROXY protocol v1/v2 header naming the client; with ',h2c', a connection that starts with the HTTP/2 preface speaks HTTP/2 (prior knowledge).", valueName: "HOST:PORT[,proxy][,h2c]"))
    var listen: [String] = []

    @Option(name: .customLong("listen-tls"), help: ArgumentHelp("Address to serve clients on over TLS 1.2/1.3 (repeatable): HTTP/2 or HTTP/1.1 by ALPN. Needs --tls-cert and --tls-key. With ',proxy', the PROXY header comes before the TLS handshake.", valueName: "HOST:PORT[,proxy]"))
    var listenTLS: [String] = []

    @Option(name: .customLong("tls-cert"), help: ArgumentHelp("PEM certificate file for the TLS listeners, leaf first then its chain (repeatable, paired in order with --tls-key; chosen by SNI from the certificate's DNS names, the first is the default). Reloaded on SIGHUP.", valueName: "FILE"))
    var tlsCert: [String] = []

    @Option(name: .customLong("tls-key"), help: ArgumentHelp("PEM private key (RSA or ECDSA, unencrypted) of the --tls-cert in the same position.", valueName: "FILE"))
    var tlsKey: [String] = []

    @Option(name: .customLong("backend"), help: ArgumentHelp("Origin server URL, http://HOST[:PORT] or https://HOST[:PORT] (repeatable: round-robin). HTTPS sends SNI and verifies the certificate against the system trust store or --backend-ca. Not with a --config that declares backends.", valueName: "URL"))
    var backend: [String] = []

    @Option(name: .customLong("backend-ca"), help: ArgumentHelp("PEM file of the CAs that HTTPS backends' certificates must chain to, instead of the system trust store.", valueName: "FILE"))
    var backendCA: String?

    @Flag(name: .customLong("backend-no-verify"), help: "Do not verify HTTPS backends' certificates (neither chain nor name). Only for origins you reach over a network you trust.")
    var backendNoVerify = false

    @Option(name: .customLong("config"), help: ArgumentHelp("VCL-like configuration file (see vcl-like/README.md); builtin.vcl is appended. Reloaded on SIGHUP or POST /reload.", valueName: "FILE"))
    var config: String?

    @Option(name: .customLong("check-config"), help: ArgumentHelp("Check a configuration file, print its errors (file:line:col) and exit: 0 when it is valid.", valueName: "FILE"))
    var checkConfig: String?

    @Option(name: .customLong("memory"), help: ArgumentHelp("Memory tier size.", valueName: "SIZE"))
    var memory: String = "256MiB"

    @Option(name: .customLong("storage-dir"), help: ArgumentHelp("Disk tier folder.", valueName: "DIR"))
    var storageDir: String = "./lacquer-cache"

    @Option(name: .customLong("max-request-body"), help: ArgumentHelp("Largest request body accepted (413 above it); bodies stream to the origin.", valueName: "SIZE"))
    var maxRequestBody: String = "10MiB"

    @Option(name: .customLong("disk-size"), help: ArgumentHelp("Disk tier size (0 = memory only).", valueName: "SIZE"))
    var diskSize: String = "1GiB"

    @Option(name: .customLong("admin"), help: ArgumentHelp("Admin listener for /health, /stats, /metrics, /log, /bans, /backends, POST /ban, POST /purge and POST /reload ('off' disables it).", valueName: "HOST:PORT"))
    var admin: String = "127.0.0.1:6082"

    @Option(name: .customLong("admin-secret"), help: ArgumentHelp("File whose contents (trimmed) the admin's endpoints other than /health, /stats and /metrics want as 'Authorization: Bearer <secret>' (as varnishd -S). Default: no secret.", valueName: "FILE"))
    var adminSecret: String?

    @Option(name: .customLong("access-log"), help: ArgumentHelp("Where the access log goes: a file (appended; reopened on SIGUSR1), '-' for stdout, or 'off'.", valueName: "PATH|-|off"))
    var accessLog: String = "-"

    @Option(name: .customLong("access-log-format"), help: ArgumentHelp("Access log line format in varnishncsa -F codes, or 'json' for JSON lines. Default: NCSA combined + cache status, time to first byte, total time, backend and xid.", valueName: "FORMAT"))
    var accessLogFormat: String?

    @Option(name: .customLong("drain-timeout"), help: ArgumentHelp("Seconds SIGTERM lets responses and fills in flight finish before the rest is closed.", valueName: "SECONDS"))
    var drainTimeout: Double = 30

    @Option(name: .customLong("max-object-size"), help: ArgumentHelp("Largest object the memory tier keeps (larger ones go to the disk tier). Default: 1MiB with a disk tier, 1/32 of --memory without one.", valueName: "SIZE"))
    var maxObjectSize: String?

    @Option(name: .customLong("user"), help: ArgumentHelp("Drop root privileges to this user once the listeners are bound (the storage directory is handed to it). Default: keep the current user.", valueName: "USER"))
    var user: String?

    @Option(name: .customLong("purge-acl"), help: ArgumentHelp("Address or prefix allowed to PURGE (repeatable; default 127.0.0.1 and ::1).", valueName: "ADDR[/BITS]"))
    var purgeACL: [String] = []

    @Option(name: .customLong("surrogate-key-header"), help: ArgumentHelp("Response field that lists an object's surrogate keys (cache tags), space- or comma-separated, for PURGE with xkey-purge and POST /purge?key= (repeatable; replaces the default xkey, Surrogate-Key and Cache-Tag).", valueName: "NAME"))
    var surrogateKeyHeader: [String] = []

    @Option(name: .customLong("vary-normalise"), help: ArgumentHelp("Request field read as a weighted list when a response varies on it: case, order among equal weights, q-value spelling and repeats do not make another variant (repeatable; replaces the default Accept-Language; 'none' for exact values). Accept-Encoding always keys on gzip or identity.", valueName: "NAME"))
    var varyNormalise: [String] = []

    @Option(name: .customLong("slice-threshold"), help: ArgumentHelp("Objects larger than this (a 200 with Content-Length, Accept-Ranges: bytes and an ETag or Last-Modified) are stored as slices and served from the slices present, fetching only missing ones with Range; 'off' stores no slices.", valueName: "SIZE"))
    var sliceThreshold: String = "8MiB"

    @Option(name: .customLong("slice-size"), help: ArgumentHelp("Size of one slice of a large object (64KiB to 64MiB).", valueName: "SIZE"))
    var sliceSize: String = "1MiB"

    @Flag(name: .customLong("ignore-request-cache-control"), help: "Answer requests as if they carried no Cache-Control or Pragma, as Varnish and nginx do by default: a client's reload (no-cache, max-age=0) is served from the cache instead of revalidating at the origin.")
    var ignoreRequestCacheControl = false

    @Flag(name: .customLong("show-surrogate-keys"), help: "Send the surrogate key fields on to clients (by default they are removed from responses, as Fastly does).")
    var showSurrogateKeys = false

    @Option(name: .customLong("soft-purge-grace"), help: ArgumentHelp("Seconds a soft-purged object is at least served stale (UPDATING) while one fetch refreshes it.", valueName: "SECONDS"))
    var softPurgeGrace: Double = 10

    @Option(name: .customLong("grace"), help: ArgumentHelp("Seconds an expired object may be served (UPDATING) while one background fetch refreshes it, when the origin sends no stale-while-revalidate.", valueName: "SECONDS"))
    var grace: Double = 0

    @Option(name: .customLong("hit-for-miss"), help: ArgumentHelp("Seconds an uncacheable answer is remembered, so later requests for it go to the origin in parallel instead of waiting on each other (Varnish's hit-for-miss).", valueName: "SECONDS"))
    var hitForMiss: Double = 120

    @Option(name: .customLong("stale-if-error"), help: ArgumentHelp("Seconds past expiry an object may be served (STALE) when the origin fails, when the origin sends no stale-if-error.", valueName: "SECONDS"))
    var staleIfError: Double = 0

    @Option(name: .customLong("threads"), help: ArgumentHelp("Event loop threads (0 = one per core).", valueName: "N"))
    var threads: Int = 0

    @Option(name: .customLong("log-level"), help: ArgumentHelp("trace, debug, info, notice, warning, error or critical.", valueName: "LEVEL"))
    var logLevel: String = "info"

    @Flag(name: .customLong("gzip-on-store"), help: "Gzip compressible uncompressed responses once when storing them; clients that do not accept gzip get them gunzipped.")
    var gzipOnStore = false

    @Flag(name: .customLong("no-sendfile"), help: "Copy large stored bodies (64 KiB and more) from memory into the socket instead of sending them from their disk tier file with sendfile (nginx's 'sendfile off').")
    var noSendfile = false

    @Flag(name: .customLong("demo"), help: "Start in front of a built-in slow demo origin and print curl commands to try.")
    var demo = false

    @OptionGroup(title: "Health probes")
    var probe: ProbeOptions

    @Option(name: .customLong("passive-failures"), help: ArgumentHelp("Failed fetches in a row (connect errors, timeouts, malformed answers) after which a backend gets no traffic for --passive-cooldown; then one trial fetch decides. 0 turns passive health off.", valueName: "N"))
    var passiveFailures = 5

    @Option(name: .customLong("passive-cooldown"), help: ArgumentHelp("Seconds a backend gets no traffic once passive health finds it failing.", valueName: "SECONDS"))
    var passiveCooldown = 10.0

    @Flag(name: .customLong("passive-5xx"), help: "Count 5xx answers as failed fetches for passive health.")
    var passive5xx = false

    @Option(name: .customLong("rate-limit"), help: ArgumentHelp("Requests a second each client address may send on average (off by default); over it, 429 with Retry-After.", valueName: "PER_SECOND"))
    var rateLimit: Double?

    @Option(name: .customLong("max-client-connections"), help: ArgumentHelp("Connections one client address may hold open at once (off by default); more are closed at once.", valueName: "N"))
    var maxClientConnections: Int?

    @Option(name: .customLong("keepalive-requests"), help: ArgumentHelp("Requests one HTTP/1.1 connection may make before it is closed after its response (nginx's keepalive_requests).", valueName: "N"))
    var keepaliveRequests: Int = 1000

    @Option(name: .customLong("rate-burst"), help: ArgumentHelp("Requests a client may send at once above --rate-limit (default: the rate, at least 1).", valueName: "N"))
    var rateBurst: Double?

    func validate() throws {
        for value in self.listen where HostAndPort.parseListener(value) == nil {
            throw ValidationError("--listen '\(value)' is not HOST:PORT[,proxy][,h2c] (e.g. 127.0.0.1:6081, [::1]:6081, :6081, :6086,proxy)")
        }
        for value in self.listenTLS where HostAndPort.parseListener(value, tls: true) == nil {
            throw ValidationError("--listen-tls '\(value)' is not HOST:PORT[,proxy] (e.g. 127.0.0.1:6443, :443)")
        }
        if self.tlsCert.count != self.tlsKey.count {
            throw ValidationError("--tls-cert and --tls-key come in pairs: \(self.tlsCert.count) certificate(s), \(self.tlsKey.count) key(s)")
        }
        if !self.listenTLS.isEmpty && self.tlsCert.isEmpty {
            throw ValidationError("--listen-tls needs a certificate: give --tls-cert FILE --tls-key FILE")
        }
        for (index, value) in self.backend.enumerated() where BackendConfiguration.parse(url: value, name: "b\(index)") == nil {
            throw ValidationError("--backend '\(value)' is not an http://HOST[:PORT] or https://HOST[:PORT] URL (no path)")
        }
        if self.keepaliveRequests < 1 {
            throw ValidationError("--keepalive-requests '\(self.keepaliveRequests)' must be 1 or more")
        }
        if let count = self.maxClientConnections, count < 1 {
            throw ValidationError("--max-client-connections '\(count)' must be 1 or more")
        }
        if let rate = self.rateLimit, !(rate > 0 && rate.isFinite) {
            throw ValidationError("--rate-limit '\(rate)' must be a number of requests a second above 0")
        }
        if let burst = self.rateBurst, !(burst >= 1 && burst.isFinite) {
            throw ValidationError("--rate-burst '\(burst)' must be 1 or more")
        }
        if self.passiveFailures < 0 {
            throw ValidationError("--passive-failures '\(self.passiveFailures)' must be 0 (off) or more")
        }
        if !(self.passiveCooldown >= 0 && self.passiveCooldown.isFinite) {
            throw ValidationError("--passive-cooldown '\(self.passiveCooldown)' must be a number of seconds, 0 or more")
        }
        if ByteSize.parse(self.maxRequestBody) == nil {
            throw ValidationError("--max-request-body '\(self.maxRequestBody)' is not a size (e.g. 10MiB, 1GiB)")
        }
        if ByteSize.parse(self.memory) == nil {
            throw ValidationError("--memory '\(self.memory)' is not a size (e.g. 268435456, 512KiB, 64MB, 1GiB)")
        }
        if ByteSize.parse(self.diskSize) == nil {
            throw ValidationError("--disk-size '\(self.diskSize)' is not a size (e.g. 0, 512MiB, 10GB, 1GiB)")
        }
        if self.admin != "off" && HostAndPort.parse(self.admin) == nil {
            throw ValidationError("--admin '\(self.admin)' is not HOST:PORT or 'off'")
        }
        for value in self.purgeACL {
            do {
                _ = try ACL.parseEntry(value)
            } catch {
                throw ValidationError("--purge-acl: \(error.description)")
            }
        }
        if !(self.grace >= 0 && self.grace.isFinite) {
            throw ValidationError("--grace must be a number of seconds >= 0")
        }
        if !(self.hitForMiss >= 0 && self.hitForMiss.isFinite) {
            throw ValidationError("--hit-for-miss must be a number of seconds >= 0")
        }
        if !(self.staleIfError >= 0 && self.staleIfError.isFinite) {
            throw ValidationError("--stale-if-error must be a number of seconds >= 0")
        }
        if self.threads < 0 || self.threads > 1024 {
            throw ValidationError("--threads must be between 0 and 1024")
        }
        if Logger.Level(rawValue: self.logLevel) == nil {
            throw ValidationError("--log-level '\(self.logLevel)' is not one of trace, debug, info, notice, warning, error, critical")
        }
        if let format = self.accessLogFormat {
            do {
                _ = try AccessLogFormat.parse(format)
            } catch {
                throw ValidationError("--access-log-format: \(error.description)")
            }
        }
        if self.accessLog.isEmpty {
            throw ValidationError("--access-log needs a file, '-' (stdout) or 'off'")
        }
        if !(self.drainTimeout >= 0 && self.drainTimeout.isFinite) {
            throw ValidationError("--drain-timeout '\(self.drainTimeout)' must be a number of seconds, 0 or more")
        }
        if !(self.softPurgeGrace >= 0 && self.softPurgeGrace.isFinite) {
            throw ValidationError("--soft-purge-grace '\(self.softPurgeGrace)' must be a number of seconds, 0 or more")
        }
        for name in self.varyNormalise where name != "none" && (name.isEmpty || !name.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: ":") })) {
            throw ValidationError("--vary-normalise '\(name)' is not a header field name")
        }
        for name in self.surrogateKeyHeader where name.isEmpty || !name.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: ":") }) {
            throw ValidationError("--surrogate-key-header '\(name)' is not a header field name")
        }
        if self.sliceThreshold != "off", ByteSize.parse(self.sliceThreshold) == nil {
            throw ValidationError("--slice-threshold '\(self.sliceThreshold)' is not a size (e.g. 8MiB) or 'off'")
        }
        guard let sliceSize = ByteSize.parse(self.sliceSize), (64 << 10)...(64 << 20) ~= sliceSize else {
            throw ValidationError("--slice-size '\(self.sliceSize)' must be a size from 64KiB to 64MiB")
        }
        if let size = self.maxObjectSize, ByteSize.parse(size) == nil {
            throw ValidationError("--max-object-size '\(size)' is not a size (e.g. 1MiB, 64MiB)")
        }
        if let user = self.user, PrivilegeDrop.lookUp(user) == nil {
            throw ValidationError("--user '\(user)': no such user")
        }
        if !self.storageDir.isEmpty, self.storageDir.contains("\0") {
            throw ValidationError("--storage-dir is not a valid path")
        }
    }

    func purgeACLValue() -> ACL {
        self.purgeACL.isEmpty ? .loopback : ACL(entries: self.purgeACL.compactMap { try? ACL.parseEntry($0) })
    }

    func run() async throws {
        // Checked here, not in validate(): the client subcommands (stat, log, admin) need no backend.
        if self.backend.isEmpty && !self.demo && self.config == nil && self.checkConfig == nil {
            throw ValidationError("no backend: pass --backend http://HOST:PORT, or --demo to try a built-in demo origin")
        }
        if let path = self.checkConfig {
            do {
                let vcl = try VCLLoader.load(path: path, purgeACL: self.purgeACLValue())
                let subs = vcl.userDefined.map(\.rawValue).sorted().joined(separator: ", ")
                print("\(path): OK (\(vcl.backends.count) backend(s), \(vcl.directors.count) director(s), subs: \(subs.isEmpty ? "builtin only" : subs))")
                return
            } catch {
                printError(error.description)
                throw ExitCode(1)
            }
        }
        var adminSecret: String?
        if let path = self.adminSecret {
            do {
                adminSecret = try AdminSecret.read(path: path)
            } catch {
                printError("lacquer: --admin-secret: \(error.description)")
                throw ExitCode(1)
            }
        }
        let level = Logger.Level(rawValue: self.logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "lacquer")

        var configuration = ServerConfiguration()
        if !self.listen.isEmpty || !self.listenTLS.isEmpty {
            configuration.listen =
                self.listen.compactMap { HostAndPort.parseListener($0) } + self.listenTLS.compactMap { HostAndPort.parseListener($0, tls: true) }
        }
        if !self.tlsCert.isEmpty {
            configuration.tls = TLSSettings(
                certificates: zip(self.tlsCert, self.tlsKey).map { TLSCertificatePair(certificatePath: $0, keyPath: $1) })
        }
        configuration.backends = self.backend.enumerated().compactMap { BackendConfiguration.parse(url: $0.element, name: "b\($0.offset)") }
            .map { backend in
                var backend = backend
                backend.tls?.caFile = self.backendCA
                if self.backendNoVerify { backend.tls?.verifyPeer = false }
                return backend
            }
        configuration.memoryBytes = ByteSize.parse(self.memory) ?? configuration.memoryBytes
        configuration.limits.requestBodyBytes = ByteSize.parse(self.maxRequestBody) ?? configuration.limits.requestBodyBytes
        configuration.storageDirectory = self.storageDir
        configuration.diskBytes = Int64(ByteSize.parse(self.diskSize) ?? 0)
        if let size = self.maxObjectSize.flatMap(ByteSize.parse) {
            configuration.memoryMaxObjectBytes = size
        } else if configuration.diskBytes == 0 {
            configuration.memoryMaxObjectBytes = max(configuration.memoryMaxObjectBytes, configuration.memoryBytes / 32)
        }
        configuration.adminSecret = adminSecret
        configuration.drainTimeout = self.drainTimeout
        if !self.surrogateKeyHeader.isEmpty {
            configuration.surrogateKeyHeaders = self.surrogateKeyHeader
        }
        configuration.showSurrogateKeys = self.showSurrogateKeys
        configuration.ignoreRequestCacheControl = self.ignoreRequestCacheControl
        configuration.sliceThreshold = self.sliceThreshold == "off" ? 0 : ByteSize.parse(self.sliceThreshold) ?? configuration.sliceThreshold
        configuration.sliceSize = ByteSize.parse(self.sliceSize) ?? configuration.sliceSize
        if !self.varyNormalise.isEmpty {
            configuration.varyListFields = Set(self.varyNormalise.filter { $0 != "none" }.map { $0.lowercased() })
        }
        configuration.softPurgeGrace = self.softPurgeGrace
        switch self.accessLog {
        case "off": configuration.accessLog = nil
        case "-": configuration.accessLog = .stdout
        default: configuration.accessLog = .file(self.accessLog)
        }
        if let format = self.accessLogFormat, let parsed = try? AccessLogFormat.parse(format) {
            configuration.accessLogFormat = parsed
        }
        configuration.admin = self.admin == "off" ? nil : HostAndPort.parse(self.admin)
        if !self.purgeACL.isEmpty {
            configuration.purgeACL = ACL(entries: self.purgeACL.compactMap { try? ACL.parseEntry($0) })
        }
        configuration.defaultGrace = self.grace
        configuration.defaultStaleIfError = self.staleIfError
        configuration.hitForMissTTL = self.hitForMiss
        configuration.gzipOnStore = self.gzipOnStore
        configuration.sendfile = !self.noSendfile
        configuration.threads = self.threads
        if let path = self.config {
            let vcl: CompiledVCL
            do {
                vcl = try VCLLoader.load(path: path, purgeACL: configuration.purgeACL)
            } catch {
                printError(error.description)
                throw ExitCode(1)
            }
            configuration.vcl = vcl
            configuration.vclPath = path
            if !vcl.backends.isEmpty {
                guard self.backend.isEmpty else {
                    printError("lacquer: \(path) declares backends; do not also pass --backend")
                    throw ExitCode(64)
                }
                configuration.backends = VCLLoader.backendConfigurations(vcl)
            } else if configuration.backends.isEmpty && !self.demo {
                printError("lacquer: no backend: \(path) declares none and no --backend was given")
                throw ExitCode(64)
            }
        }

        var demoOrigin: DemoOrigin?
        if self.demo {
            let origin = try await DemoOrigin.start()
            demoOrigin = origin
            if configuration.backends.isEmpty {
                configuration.backends = [BackendConfiguration(name: "demo", host: "127.0.0.1", port: origin.port)]
            }
        }

        configuration.limits.connectionsPerClient = self.maxClientConnections
        configuration.limits.requestsPerConnection = self.keepaliveRequests
        if let rate = self.rateLimit {
            configuration.rateLimit = RateLimitConfiguration(rate: rate, burst: self.rateBurst ?? max(1, rate))
        }
        var passive: PassiveHealthConfiguration?
        if self.passiveFailures > 0 {
            var settings = PassiveHealthConfiguration()
            settings.failureThreshold = self.passiveFailures
            settings.cooldown = self.passiveCooldown
            settings.serverErrorsCount = self.passive5xx
            passive = settings
        }
        for index in configuration.backends.indices {
            configuration.backends[index].passiveHealth = passive
        }
        if let probe = self.probe.configuration {
            configuration.defaultProbe = probe
            for index in configuration.backends.indices where configuration.backends[index].probe == nil {
                configuration.backends[index].probe = probe
            }
        }
        if let user = self.user, let account = PrivilegeDrop.lookUp(user), configuration.diskBytes > 0 {
            // The disk tier writes as the user it runs as: hand it its directory first.
            do {
                try PrivilegeDrop.handOver(directory: configuration.storageDirectory, to: account)
            } catch {
                printError("lacquer: --user \(user): \(error.description)")
                throw ExitCode(1)
            }
        }
        let server = LacquerServer(configuration: configuration, logger: logger)
        // Trapped before start, so a signal during start-up is not lost (the default would kill).
        let signals = await UnixSignalsSequence(trapping: .sigterm, .sigint, .sighup, .sigusr1)
        do {
            try await server.start()
        } catch let error as LacquerServerError {
            try? await demoOrigin?.shutdown()
            printError("lacquer: \(error.description)")
            throw ExitCode(1)
        }
        if let user = self.user, let account = PrivilegeDrop.lookUp(user) {
            do {
                if configuration.diskBytes > 0 {
                    // What start-up created as root (the index, its WAL and lock files) goes to the user too.
                    try PrivilegeDrop.handOver(directory: configuration.storageDirectory, to: account)
                }
                try PrivilegeDrop.become(account)
                logger.notice("running as \(user)")
            } catch {
                printError("lacquer: --user \(user): \(error.description)")
                try? await server.shutdown()
                throw ExitCode(1)
            }
        }
        logger.notice("Lacquer \(LacquerVersion.string) started")
        if self.demo, let address = server.listeningAddresses.first, let port = address.port {
            let host = address.ipAddress.map { $0.contains(":") ? "[\($0)]" : $0 } ?? "127.0.0.1"
            let url = "http://\(host):\(port)/delay/1000/hello?cc=max-age%3D60&body=Hello+from+the+slow+demo+origin"
            print("""
                Lacquer demo: a cache on \(host):\(port) in front of a demo origin that takes 1 s per answer.
                Run this twice; the first is a MISS (slow), the second a HIT (instant):

                  curl -s -o /dev/null -D - '\(url)' | grep -iE 'x-cache-status|^age'
                  curl -s -o /dev/null -D - '\(url)' | grep -iE 'x-cache-status|^age'

                Purge it with:  curl -X PURGE '\(url)'
                Press Ctrl-C to stop.
                """)
            fflush(nil)  // shown at once also when stdout is a pipe or a file
        }
        // SIGTERM/SIGINT drain (a second stops at once), SIGHUP reloads, SIGUSR1 reopens the log.
        let signalTask = Task {
            for await signal in signals {
                switch signal {
                case .sighup:
                    _ = server.reload()  // the server logs the outcome
                case .sigusr1:
                    server.reopenLogs()
                default:
                    logger.notice("received \(signal)")
                    server.requestStop()
                }
            }
        }
        defer { signalTask.cancel() }
        try await server.runUntilStopped()
        try? await demoOrigin?.shutdown()
    }
}

func printError(_ message: String) {
    var line = message + "\n"
    line.withUTF8 { buffer in
        _ = write(2, buffer.baseAddress, buffer.count)
    }
}
