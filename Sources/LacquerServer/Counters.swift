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
    case synth502, synth503, synth504
    case clientGoneMidResponse, clientGoneMidUpload
    case gunzipped, gzippedOnStore, gzipCorrupt
    case coalescedWaiters, backgroundRefreshes, staleServed, updatingServed, waiterTimeouts
    case diskHit, diskPromotions, diskStored, diskWriteDropped, diskWriteErrors, diskReadErrors
    case vclFailures, restarts, vclReloads, vclReloadFailures
    case bansAdded, bansRefused, bannedObjects
    case accessLogDropped

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
        case .diskWriteDropped: "disk_write_dropped"
        case .diskWriteErrors: "disk_write_errors"
        case .diskReadErrors: "disk_read_errors"
        case .vclFailures: "vcl_fail"
        case .restarts: "req_restarts"
        case .vclReloads: "vcl_reloads"
        case .vclReloadFailures: "vcl_reload_failures"
        case .bansAdded: "bans_added"
        case .bansRefused: "bans_refused"
        case .bannedObjects: "bans_obj_killed"
        case .accessLogDropped: "access_log_dropped"
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
