import Synchronization

/// A named event counter, Varnish style (`client_req_400`, `fetch_failed`, `sess_dropped`).
/// Every rejection and fault class has one, so tests assert counts as well as responses.
public enum Counter: Int, CaseIterable, Sendable {
    case sessConn, sessDropped, sessDroppedClient, sessClosedIdle, sessClosedTimeout
    case clientReq, clientReq400, clientReq411, clientReq413, clientReq414, clientReq429, clientReq431, clientReq501
    case clientReqAbsoluteForm
    case clientReqBadFraming
    case cacheHit, cacheHitFast, cacheMiss, cacheExpired, cacheBypass, cacheHitForMiss, cacheRevalidated
    case purgeOK, purgeMiss, purgeDenied
    case invalidations
    case backendReq, backendConn, backendReuse, backendRetry, backendClose, backendUnhealthy, backendCircuitOpened
    case fetchFailed, fetchConnectFailed, fetchTimeout, fetchFramingError, fetchTooLargeHeaders
    case objectsStored, objectsNotStoredUncacheable, objectsNotStoredTooLarge, objectsNotStoredPurged
    case slicesStored, slicesChanged
    case synth502, synth503, synth504
    case clientGoneMidResponse, clientGoneMidUpload
    case gunzipped, gzippedOnStore, gzipCorrupt
    case coalescedWaiters, backgroundRefreshes, staleServed, updatingServed, waiterTimeouts
    case diskHit, diskPromotions, diskStored, diskWriteDropped, diskWriteErrors, diskReadErrors, fillsWaitedForDisk
    case bodySentFromFile, bodyFileNotCached
    case vclFailures, restarts, vclReloads, vclReloadFailures
    case bansAdded, bansRefused, bannedObjects, bansExpired, proxyHeaderRefused
    case tlsHandshakes, tlsHandshakeFailures, tlsHandshakeTimeouts, tlsReloads, tlsReloadFailures, http2Connections, http2Streams, http2ConnectionErrors
    case accessLogDropped
    case clientBytesReceived, clientBytesSent, backendBytesReceived

    /// The counter of client requests answered with `status` by a refusal, if it has one.
    public static func clientRequest(status: Int) -> Counter? {
        switch status {
        case 400: .clientReq400
        case 411: .clientReq411
        case 413: .clientReq413
        case 414: .clientReq414
        case 429: .clientReq429
        case 431: .clientReq431
        case 501: .clientReq501
        default: nil
        }
    }

    /// The metric's HELP text.
    public var help: String {
        switch self {
        case .sessConn: "Client connections accepted."
        case .sessDropped: "Client connections closed at once because the connection limit was reached."
        case .sessDroppedClient: "Client connections closed at once because their address held too many."
        case .sessClosedIdle: "Client connections closed by the keep-alive idle timeout."
        case .sessClosedTimeout: "Client connections closed by a header, body or send timeout."
        case .clientReq: "Client requests received."
        case .clientReq400: "Client requests answered 400 (malformed)."
        case .clientReq411: "Client requests answered 411 (length required)."
        case .clientReq413: "Client requests answered 413 (body too large)."
        case .clientReq414: "Client requests answered 414 (target too long)."
        case .clientReq429: "Client requests answered 429 (rate limit)."
        case .clientReq431: "Client requests answered 431 (header fields too large)."
        case .clientReq501: "Client requests answered 501 (unknown method or transfer coding)."
        case .clientReqAbsoluteForm: "Client requests with an absolute-form target."
        case .clientReqBadFraming: "Client requests refused for ambiguous or malformed message framing."
        case .cacheHit: "Requests answered from a stored object."
        case .cacheHitFast: "Hits answered by the fast lane without a request flow."
        case .cacheMiss: "Requests that found nothing stored."
        case .cacheExpired: "Requests that found only an expired object."
        case .cacheBypass: "Requests passed to the origin without the cache."
        case .cacheHitForMiss: "Requests that found a hit-for-miss mark."
        case .cacheRevalidated: "Stored objects refreshed by a 304 from the origin."
        case .purgeOK: "PURGE requests that removed an object."
        case .purgeMiss: "PURGE requests that found nothing to remove."
        case .purgeDenied: "PURGE requests refused by the purge ACL."
        case .invalidations: "Objects invalidated by unsafe requests."
        case .backendReq: "Requests sent to backends."
        case .backendConn: "Backend connections opened."
        case .backendReuse: "Backend requests sent on a reused connection."
        case .backendRetry: "Backend requests sent again after a reused connection closed."
        case .backendClose: "Backend connections closed."
        case .backendUnhealthy: "Fetches not sent because no healthy backend was left."
        case .backendCircuitOpened: "Times passive health took a backend out of rotation."
        case .fetchFailed: "Backend fetches that failed."
        case .fetchConnectFailed: "Backend fetches that could not connect."
        case .fetchTimeout: "Backend fetches that timed out."
        case .fetchFramingError: "Backend responses with malformed framing."
        case .fetchTooLargeHeaders: "Backend responses whose header section was too large."
        case .objectsStored: "Objects stored."
        case .objectsNotStoredUncacheable: "Responses not stored because they were not cacheable."
        case .objectsNotStoredTooLarge: "Responses not stored because they were too large."
        case .objectsNotStoredPurged: "Responses not stored because their key was purged while fetching."
        case .slicesStored: "Slices of large objects stored."
        case .slicesChanged: "Sliced objects dropped because a slice showed the origin's object had changed."
        case .synth502: "Synthetic 502 answers (bad gateway)."
        case .synth503: "Synthetic 503 answers (no backend available)."
        case .synth504: "Synthetic 504 answers (backend timeout)."
        case .clientGoneMidResponse: "Responses cut short because the client left."
        case .clientGoneMidUpload: "Request bodies cut short because the client left."
        case .gunzipped: "Stored gzip bodies decompressed for a client that does not accept gzip."
        case .gzippedOnStore: "Bodies compressed when stored."
        case .gzipCorrupt: "Stored gzip bodies that could not be decompressed."
        case .coalescedWaiters: "Requests that waited on another request's fetch."
        case .backgroundRefreshes: "Background fetches refreshing a stale object."
        case .staleServed: "Stale objects served because the origin failed."
        case .updatingServed: "Stale objects served while a background fetch refreshed them."
        case .waiterTimeouts: "Waiting requests that gave up on a slow fetch."
        case .diskHit: "Hits served from the disk tier."
        case .diskPromotions: "Disk tier objects copied into the memory tier."
        case .diskStored: "Objects written to the disk tier."
        case .fillsWaitedForDisk: "Fills that waited for the disk tier's write queue to come under its high mark before asking the origin."
        case .diskWriteDropped: "Disk tier writes dropped because the write queue was full."
        case .diskWriteErrors: "Disk tier writes that failed."
        case .diskReadErrors: "Disk tier reads that failed."
        case .bodySentFromFile: "Large bodies sent from their disk tier file with sendfile instead of copied from memory."
        case .bodyFileNotCached: "Large bodies copied from memory because their disk tier file was not all in the page cache."
        case .vclFailures: "VCL runs that failed."
        case .restarts: "Request restarts asked for by VCL."
        case .vclReloads: "Configuration reloads."
        case .vclReloadFailures: "Configuration reloads refused."
        case .bansAdded: "Bans added."
        case .bansRefused: "Bans refused."
        case .bannedObjects: "Objects removed by bans."
        case .bansExpired: "Bans dropped by the ban lurker once no stored object could meet them."
        case .proxyHeaderRefused: "Connections on a PROXY protocol listener closed for a missing or malformed header."
        case .tlsHandshakes: "TLS handshakes completed (full or resumed)."
        case .tlsHandshakeFailures: "TLS handshakes that failed (no shared version or cipher, bad client hello)."
        case .tlsHandshakeTimeouts: "TLS connections closed because the handshake did not finish within the header timeout."
        case .tlsReloads: "Certificate reloads (SIGHUP, POST /reload)."
        case .tlsReloadFailures: "Certificate reloads refused (a file missing or bad); the certificates in use stayed."
        case .http2Connections: "Client connections that speak HTTP/2."
        case .http2Streams: "HTTP/2 streams clients opened."
        case .http2ConnectionErrors: "HTTP/2 connections closed for a protocol error or a flood (rapid reset, CONTINUATION), after GOAWAY."
        case .accessLogDropped: "Access log records dropped because the writer fell behind."
        case .clientBytesReceived: "Bytes received from clients."
        case .clientBytesSent: "Bytes sent to clients."
        case .backendBytesReceived: "Bytes received from backends."
        }
    }

    /// The metric name, e.g. `client_req_400`.
    public var name: String {
        switch self {
        case .sessConn: "sess_conn"
        case .sessDropped: "sess_dropped"
        case .sessDroppedClient: "sess_dropped_client"
        case .sessClosedIdle: "sess_closed_idle"
        case .sessClosedTimeout: "sess_closed_timeout"
        case .clientReq: "client_req"
        case .clientReq400: "client_req_400"
        case .clientReq411: "client_req_411"
        case .clientReq413: "client_req_413"
        case .clientReq414: "client_req_414"
        case .clientReq429: "client_req_429"
        case .clientReq431: "client_req_431"
        case .clientReq501: "client_req_501"
        case .clientReqAbsoluteForm: "client_req_absolute_form"
        case .clientReqBadFraming: "client_req_bad_framing"
        case .cacheHit: "cache_hit"
        case .cacheHitFast: "cache_hit_fast"
        case .cacheMiss: "cache_miss"
        case .cacheExpired: "cache_expired"
        case .cacheBypass: "cache_bypass"
        case .cacheHitForMiss: "cache_hitmiss"
        case .cacheRevalidated: "cache_revalidated"
        case .purgeOK: "purge_ok"
        case .purgeMiss: "purge_miss"
        case .purgeDenied: "purge_denied"
        case .invalidations: "invalidations"
        case .backendReq: "backend_req"
        case .backendConn: "backend_conn"
        case .backendReuse: "backend_reuse"
        case .backendRetry: "backend_retry"
        case .backendClose: "backend_close"
        case .backendUnhealthy: "backend_unhealthy"
        case .backendCircuitOpened: "backend_circuit_opened"
        case .fetchFailed: "fetch_failed"
        case .fetchConnectFailed: "fetch_connect_failed"
        case .fetchTimeout: "fetch_timeout"
        case .fetchFramingError: "fetch_framing_error"
        case .fetchTooLargeHeaders: "fetch_too_large_headers"
        case .objectsStored: "objects_stored"
        case .objectsNotStoredUncacheable: "objects_not_stored_uncacheable"
        case .objectsNotStoredTooLarge: "objects_not_stored_too_large"
        case .objectsNotStoredPurged: "objects_not_stored_purged"
        case .slicesStored: "slices_stored"
        case .slicesChanged: "slices_changed"
        case .synth502: "synth_502"
        case .synth503: "synth_503"
        case .synth504: "synth_504"
        case .clientGoneMidResponse: "client_gone_mid_response"
        case .clientGoneMidUpload: "client_gone_mid_upload"
        case .coalescedWaiters: "coalesced_waiters"
        case .backgroundRefreshes: "background_refreshes"
        case .staleServed: "stale_served"
        case .updatingServed: "updating_served"
        case .waiterTimeouts: "waiter_timeouts"
        case .gunzipped: "gunzipped"
        case .gzippedOnStore: "gzipped_on_store"
        case .gzipCorrupt: "gzip_corrupt"
        case .diskHit: "disk_hit"
        case .diskPromotions: "disk_promotions"
        case .diskStored: "disk_stored"
        case .fillsWaitedForDisk: "fills_waited_for_disk"
        case .diskWriteDropped: "disk_write_dropped"
        case .diskWriteErrors: "disk_write_errors"
        case .diskReadErrors: "disk_read_errors"
        case .bodySentFromFile: "body_sent_from_file"
        case .bodyFileNotCached: "body_file_not_cached"
        case .vclFailures: "vcl_fail"
        case .restarts: "req_restarts"
        case .vclReloads: "vcl_reloads"
        case .vclReloadFailures: "vcl_reload_failures"
        case .bansAdded: "bans_added"
        case .bansRefused: "bans_refused"
        case .bannedObjects: "bans_obj_killed"
        case .bansExpired: "bans_deleted"
        case .proxyHeaderRefused: "sess_proxy_refused"
        case .tlsHandshakes: "tls_handshakes"
        case .tlsHandshakeFailures: "tls_handshake_failures"
        case .tlsHandshakeTimeouts: "tls_handshake_timeouts"
        case .tlsReloads: "tls_reloads"
        case .tlsReloadFailures: "tls_reload_failures"
        case .http2Connections: "http2_connections"
        case .http2Streams: "http2_streams"
        case .http2ConnectionErrors: "http2_connection_errors"
        case .accessLogDropped: "access_log_dropped"
        case .clientBytesReceived: "client_bytes_received"
        case .clientBytesSent: "client_bytes_sent"
        case .backendBytesReceived: "backend_bytes_received"
        }
    }
}

/// Lock-free process-wide counters (relaxed atomics: counts, not synchronisation).
public final class Counters: Sendable {
    private let storage: InlineArray<96, Atomic<Int>>

    public init() {
        precondition(Counter.allCases.count <= 96)
        self.storage = InlineArray { _ in Atomic<Int>(0) }
    }

    @inlinable
    public func increment(_ counter: Counter, by amount: Int = 1) {
        self.add(counter.rawValue, amount)
    }

    @usableFromInline
    func add(_ index: Int, _ amount: Int) {
        self.storage[index].wrappingAdd(amount, ordering: .relaxed)
    }

    public subscript(_ counter: Counter) -> Int {
        self.storage[counter.rawValue].load(ordering: .relaxed)
    }

    /// Every counter with its name, in declaration order.
    public var snapshot: [(name: String, value: Int)] {
        Counter.allCases.map { ($0.name, self[$0]) }
    }
}
