import CachePolicy
import CacheStore
import NIOCore
import NIOHTTP1
import VCL

/// The steps of one client request, as a pure state machine: events in, actions out. It holds
/// no connection, no store and no clock; `RequestFlow` carries out its actions and reports what
/// happened as events. Varnish's shape (`bin/varnishd/cache/cache_req_fsm.c`): one step variable
/// and a dispatch loop (`RequestFlow.dispatch`).
///
/// ```
/// recv ─┬─ hash ─ lookup ─┬─ hit ─────────────────────────────────▶ deliver ─▶ done
///       │         │       ├─ miss ─┬─ (busy: wait, stream collapsed) ▶ deliver
///       │         │       │        └─ fetch ─ backend head ─────────▶ deliver (+ store)
///       ├─ pass ──┼───────┴──────────▶ fetch ─ backend head ─────────▶ deliver
///       ├─ hash ─ purge ─────────────────────────────────────────────▶ synth ─▶ done
///       └─ synth ────────────────────────────────────────────────────▶ done
/// ```
///
/// Two things are orthogonal to the step: whether the client is still there, and whether a
/// backend fetch is running. A client that leaves ends the request (`done`) at any step; a fill
/// it started goes on without it (no write ever reaches the connection again), so the object is
/// stored and the requests waiting on it get their answer. A pass fetch whose client left is
/// abandoned.
struct RequestStateMachine {
    enum Step: String, CaseIterable, Sendable {
        case recv, hash, lookup, hit, miss, pass, purge, fetch, deliver, synth, done
    }

    /// What a sub returned: its builtin default (not defined by the configuration), an action, or
    /// a runtime failure.
    enum SubResult: Equatable {
        case builtin
        case returned(VCLAction)
        case failed
    }

    enum Tier: Equatable { case memory, disk }

    /// What a lookup found in one tier, after bans.
    enum Found {
        case hit(StaleCopy)
        case staleHit(StaleCopy)
        case refresh(StaleCopy, fwd: CacheStatusValue.Forward)
        case miss(fwd: CacheStatusValue.Forward)

        init<C: CacheCandidate>(_ outcome: LookupOutcome<C>, copy: (C) -> StaleCopy) {
            switch outcome {
            case .hit(let c): self = .hit(copy(c))
            case .staleHit(let c): self = .staleHit(copy(c))
            case .refresh(let c, let fwd): self = .refresh(copy(c), fwd: fwd)
            case .miss(let fwd): self = .miss(fwd: fwd)
            }
        }
    }

    /// A backend fetch: a cache fill, or a pass (not stored).
    enum FetchMode {
        /// `stale`: the stored copy being replaced (and revalidated), if any.
        case fill(key: CacheKey, stale: StaleCopy?, fwd: CacheStatusValue.Forward)
        case pass(PassCause)

        var isFill: Bool { if case .fill = self { true } else { false } }
    }

    /// How a request came to pass.
    enum PassCause: Equatable {
        /// vcl_recv said pass (or pipe, carried out as pass).
        case recv(pipe: Bool)
        /// vcl_hit or vcl_miss said pass.
        case vcl
        /// The stored body is in a coding the client does not take and too large to decode.
        case coding
    }

    /// The text of a synthetic answer of our own.
    enum SynthBody: Equatable {
        case purged(count: Int)
        case notInCache
    }

    /// The coalescer's answer to a miss.
    enum Join: Equatable {
        case leader, waiter, hitForMiss
        /// A fill stored the object and let its busy state go while this request looked in the
        /// tiers (memory, then the disk tier, whose write is still queued): look again instead
        /// of fetching it a second time.
        case storedMeanwhile
    }

    /// What the driver made of the backend's response head.
    enum BackendHead {
        /// The head went to the client (if still there); body parts follow when `sendsBody`.
        case streaming(sendsBody: Bool)
        /// The head went to the client and nothing else will (a 304 to the client's own
        /// validators, a HEAD): the response ends; the fetch goes on only when `keepFetching`
        /// (it is stored).
        case answered(keepFetching: Bool)
        /// The origin confirmed our stored copy (304 to our conditional fill): at the end of the
        /// exchange the copy is updated and served.
        case notModified
        /// vcl_backend_response said retry or abandon.
        case retry
        case abandon
        /// A server error with a stored copy allowed to stand in (stale-if-error).
        case serverError(StaleCopy)
    }

    /// What the driver is to do.
    enum Action {
        /// Run `sub` (its builtin when the configuration does not define it); report `.sub`.
        case runSub(VCLSubroutine)
        /// Run vcl_hit on a stored copy; report `.sub(.hit, …)`.
        case runHit(StaleCopy)
        /// Run vcl_synth for `status`; report `.sub(.synth, …)`.
        case runSynth(status: Int, reason: String)
        /// Run vcl_backend_error for a failed fetch; report `.sub(.backendError, …)`.
        case runBackendError(BackendError)
        /// Run vcl_hash; report `.hashed` (or `.sub(.hash, .failed)`).
        case hash
        case lookUp(CacheKey, Tier)
        /// Remove every variant under `key` from both tiers; report `.purged`.
        case purge(CacheKey)
        /// Join the key's busy fetch; report `.joined`. `recheck`: the lookup found nothing for
        /// the request (not a copy it refreshes, nor a miss VCL asked for), so an object a fill
        /// stored since then is taken instead of leading another fetch.
        case join(CacheKey, recheck: Bool)
        /// Wait on the busy fetch just joined (subscribe, arm the wait timer).
        case wait
        /// Leave the busy fetch's waiting list (unsubscribe, disarm the timer).
        case stopWaiting
        /// Write the busy fetch's head (a collapsed hit), then its body as it arrives.
        case writeWaiterHead
        /// Write what the busy fetch has received since the last write.
        case pumpWaiter
        /// Build the backend request and run vcl_backend_fetch; report `.sub(.backendFetch, …)`.
        case prepareFetch(FetchMode)
        /// Pick a backend and send the request; report backend events.
        case startFetch
        /// Stop the fetch: close its connection (not reused), release what it leads.
        case abandonFetch
        case pauseFetch
        case resumeFetch
        /// Write a body part received from the backend.
        case writeFetchedBody(ByteBuffer)
        /// The exchange ended: store the object, release the waiters.
        case completeFetch
        /// The fill failed: release its waiters with `error` (nothing is stored).
        case failFetch(BackendError)
        /// Merge the 304 into the stored copy, store it and release the waiters; report
        /// `.revalidated`.
        case completeRevalidation
        /// Deliver a stored copy; `refresh`: start one background refresh of it first.
        case deliver(StaleCopy, XCacheStatus, detail: String?, refresh: CacheKey?)
        /// Deliver the object `completeRevalidation` made.
        case deliverRevalidated
        /// Read the next chunk of the disk body being delivered.
        case resumeDiskRead
        case closeDiskReader
        /// The client can take more of a sliced object's body: let the slice being read go on.
        case resumeSlices
        /// The client left during a sliced object's body: stop reading slices (a slice being
        /// fetched is still stored).
        case closeSlices
        /// Write a short text response of our own (no VCL).
        case writeSynthetic(status: Int, reason: String, body: SynthBody?)
        /// Write the response vcl_synth or vcl_backend_error built (`fallback`: the body when
        /// VCL set none).
        case writeVCLSynthetic(from: VCLSubroutine, fallback: SynthBody?)
        /// The response is complete.
        case finish
        /// Cut the connection: the head is out and the body cannot be completed.
        case abort
    }

    /// What happened.
    enum Event {
        case start
        /// A background refresh of `key`, leading its busy fetch (no client).
        case startRefresh(key: CacheKey, stale: StaleCopy)
        case sub(VCLSubroutine, SubResult)
        /// vcl_hash's key, and what the request said about the lookup.
        case hashed(CacheKey, alwaysMiss: Bool, ignoreBusy: Bool, onlyIfCached: Bool)
        case lookedUp(Found, Tier, now: Double)
        /// A disk body could not be read before anything was written.
        case diskReadFailed(CacheKey)
        /// The stored body is in a coding the client does not take, too large to decode here.
        case codingUnavailable
        /// The head of a stored or collapsed response went out; its body follows from `source`.
        case headWritten(Source)
        /// The purge is done. `answersZero`: a purge by surrogate key answers 200 with its count
        /// even when nothing matched (Varnish xkey's convention); a URL purge that found nothing is a 404.
        case purged(count: Int, answersZero: Bool = false)
        case purgeFailed
        case joined(Join)
        /// The busy fetch we wait on has a head; `forUs`: it is our variant, in a coding we take.
        case busyHead(forUs: Bool)
        case busyData
        case busyFinished(BusyFetch.Outcome, now: Double)
        /// The wait on a busy fetch timed out.
        case timer(now: Double)
        case backendConnected
        case backendHead(BackendHead)
        /// A body part arrived; `needed`: something besides this client wants it (stored, or
        /// requests wait on it).
        case backendBody(ByteBuffer, needed: Bool)
        case backendEnd
        /// The client has every byte of its range of the body being fetched; the fetch goes on
        /// without it.
        case clientPartSent
        /// The fetch failed; `retryable`: the error and request allow one more try on a new
        /// connection (a reused connection the origin had closed, idempotent, body replayable).
        case backendFailed(BackendError, beforeHead: Bool, retryable: Bool, now: Double)
        /// `completeRevalidation` finished: the updated object is ready, or the stored body is
        /// gone and the object must be fetched afresh.
        case revalidated(ok: Bool)
        /// vcl_deliver replaced the response with a synthetic one.
        case deliverReplaced(status: Int, reason: String)
        /// The delivery of a stored or collapsed response wrote its last byte / cannot go on.
        case delivered
        case deliveryFailed
        case clientWritable
        case clientGone
    }

    /// What the response towards the client has come to.
    enum Response: Equatable {
        case none
        /// The head is out; the body follows from `source`.
        case streaming(Source)
        case finished
    }

    /// Where the body of the response being written comes from: a disk body file, the slices
    /// of a sliced object (`SliceWalker`), the busy fetch we waited on (a collapsed hit), or our
    /// own backend fetch.
    enum Source: Equatable { case disk, slices, busy, backend }

    /// How long a fetch may still be retried by VCL (Varnish's max_retries) and a request
    /// restarted (max_restarts).
    static let maxRetries = 4
    static let maxRestarts = 4

    private(set) var step: Step = .recv
    private(set) var clientGone = false
    private(set) var response: Response = .none
    private(set) var restarts = 0
    /// bereq.retries.
    private(set) var retries = 0
    private(set) var fetch: FetchMode?
    /// Whether a fetch is running (from `startFetch` to its end, failure or abandonment).
    private(set) var fetching = false
    /// Whether this flow leads the key's busy fetch (others may wait on it).
    private(set) var leading = false
    private(set) var waiting = false
    /// Set once the fetch's body went to the backend as a stream: it cannot be sent again.
    var bodyStreamed = false

    private let hasDiskTier: Bool
    private let staleIfErrorDefault: Double
    private var key: CacheKey?
    private var purgeAfterHash = false
    private var purgeCount = 0
    private var purgeAnswersZero = false
    private var alwaysMiss = false
    private var ignoreBusy = false
    private var onlyIfCached = false
    private var memoryFwd: CacheStatusValue.Forward?
    private var found: Found?
    private var missFrom: MissFrom?
    /// What a miss replaces: the stale copy (if any), why the origin is asked, whether it had expired.
    typealias MissFrom = (stale: StaleCopy?, fwd: CacheStatusValue.Forward, expired: Bool)
    private var passCause: PassCause = .vcl
    private var closedRetry = false
    private var headSeen = false
    private var sendsFetchedBody = false
    private var revalidating = false
    private var lookupRetries = 0
    private var inSynth = false
    private var pendingSynth: (status: Int, reason: String, body: SynthBody?)?
    private var backendError: BackendError?
    private var pendingActions: [Action] = []
    private var nextAction = 0

    init(hasDiskTier: Bool, staleIfErrorDefault: Double) {
        self.hasDiskTier = hasDiskTier
        self.staleIfErrorDefault = staleIfErrorDefault
        self.pendingActions.reserveCapacity(4)
    }

    /// The next action the last event asked for, in order; nil when there is none left.
    mutating func nextPendingAction() -> Action? {
        guard self.nextAction < self.pendingActions.count else {
            if !self.pendingActions.isEmpty {
                self.pendingActions.removeAll(keepingCapacity: true)
                self.nextAction = 0
            }
            return nil
        }
        let action = self.pendingActions[self.nextAction]
        self.nextAction += 1
        return action
    }

    private mutating func emit(_ action: Action) {
        self.pendingActions.append(action)
    }

    // MARK: Events

    mutating func handle(_ event: Event) {
        switch event {
        case .start:
            self.enterRecv()
        case .startRefresh(let key, let stale):
            self.clientGone = true  // nobody to answer
            self.leading = true
            self.key = key
            self.enterFetch(.fill(key: key, stale: stale, fwd: .stale))
        case .sub(let sub, let result):
            self.subReturned(sub, result)
        case .hashed(let key, let alwaysMiss, let ignoreBusy, let onlyIfCached):
            self.hashed(key, alwaysMiss: alwaysMiss, ignoreBusy: ignoreBusy, onlyIfCached: onlyIfCached)
        case .lookedUp(let found, let tier, let now):
            self.lookedUp(found, tier: tier, now: now)
        case .diskReadFailed(let key):
            guard self.step == .deliver, self.response == .none, !self.clientGone else { return }
            self.enterMiss(key: key, stale: nil, fwd: .miss, expired: false)
        case .codingUnavailable:
            guard self.step == .deliver, self.response == .none, !self.clientGone else { return }
            self.enterFetch(.pass(.coding))
        case .headWritten(let source):
            guard !self.clientGone, self.response == .none else { return }
            self.response = .streaming(source)
        case .purged(let count, let answersZero):
            guard self.step == .purge else { return }
            self.purgeCount = count
            self.purgeAnswersZero = answersZero
            if self.clientGone { return self.end() }
            self.emit(.runSub(.purge))
        case .purgeFailed:
            guard self.step == .purge else { return }
            self.enterSynth(503, "Purge could not be committed to the disk tier")
        case .joined(let join):
            self.joined(join)
        case .busyHead(let forUs):
            guard self.waiting, forUs, self.response == .none, !self.clientGone else { return }
            self.step = .deliver
            self.response = .streaming(.busy)
            self.emit(.writeWaiterHead)
        case .busyData:
            if self.waiting, self.response == .streaming(.busy), !self.clientGone { self.emit(.pumpWaiter) }
        case .busyFinished(let outcome, let now):
            self.busyFinished(outcome, now: now)
        case .timer(let now):
            guard self.waiting, self.response == .none else { return }
            self.stopWaiting()
            self.failWaiter(.firstByteTimeout, now: now)
        case .backendConnected:
            if !self.fetching {
                self.emit(.abandonFetch)  // the fetch ended while its connection was being made
            } else if self.clientGone, !(self.fetch?.isFill ?? false) {
                self.fetching = false
                self.emit(.abandonFetch)  // nobody will read a pass response
            }
        case .backendHead(let head):
            self.backendHead(head)
        case .backendBody(let part, let needed):
            guard self.fetching else { return }
            if self.response == .streaming(.backend), self.sendsFetchedBody, !self.clientGone {
                self.emit(.writeFetchedBody(part))
            } else if self.clientGone || self.response == .finished, !needed {
                // Nobody reads, nobody waits and nothing is stored: stop the transfer.
                self.fetching = false
                self.leading = false
                self.emit(.abandonFetch)
                self.emit(.failFetch(.closedMidBody))
            }
        case .backendEnd:
            self.backendEnd()
        case .clientPartSent:
            guard self.response == .streaming(.backend), !self.clientGone else { return }
            if self.fetching { self.emit(.resumeFetch) }  // no longer paced by this client
            self.finishResponse()
        case .backendFailed(let error, let beforeHead, let retryable, let now):
            self.backendFailed(error, beforeHead: beforeHead, retryable: retryable, now: now)
        case .revalidated(let ok):
            guard self.revalidating else { return }
            self.revalidating = false
            if ok {
                self.leading = false  // the waiters were told to look again
                if self.clientGone { return self.end() }
                self.step = .deliver
                self.emit(.deliverRevalidated)
            } else if !self.clientGone || self.leading, case .fill(let key, _, let fwd) = self.fetch {
                self.enterFetch(.fill(key: key, stale: nil, fwd: fwd))
            } else {
                self.end()
            }
        case .deliverReplaced(let status, let reason):
            guard self.response == .none, !self.clientGone else { return }
            self.enterSynth(status, reason)
        case .delivered:
            guard self.step == .deliver else { return }
            self.finishResponse()
        case .deliveryFailed:
            self.abortResponse()
        case .clientWritable:
            guard !self.clientGone, case .streaming(let source) = self.response else { return }
            switch source {
            case .disk: self.emit(.resumeDiskRead)
            case .slices: self.emit(.resumeSlices)
            case .busy: self.emit(.pumpWaiter)
            case .backend: if self.fetching { self.emit(.resumeFetch) }
            }
        case .clientGone:
            self.clientLeft()
        }
    }

    // MARK: Steps

    private mutating func enterRecv() {
        self.step = .recv
        self.emit(.runSub(.recv))
    }

    /// When the lookup found what it found (the grace decision of builtin vcl_hit uses it).
    private var foundAt: Double = 0

    private mutating func restart() {
        self.restarts += 1
        self.inSynth = false
        guard self.restarts <= Self.maxRestarts else {
            return self.enterSynth(503, "Too many restarts")
        }
        self.enterRecv()
    }

    private mutating func subReturned(_ sub: VCLSubroutine, _ result: SubResult) {
        if self.clientGone && sub != .backendFetch {
            return self.end()
        }
        if result == .failed {
            return self.vclFailed(in: sub)
        }
        switch sub {
        case .recv: self.recvReturned(result)
        case .hash: break  // reported as `.hashed`
        case .hit: self.hitReturned(result)
        case .miss: self.missReturned(result)
        case .pass: self.passReturned(result)
        case .purge: self.purgeReturned(result)
        case .synth: self.synthReturned(result)
        case .backendFetch: self.backendFetchReturned(result)
        case .backendError: self.backendErrorReturned(result)
        default: break
        }
    }

    /// As in Varnish: a runtime failure ends the request in vcl_synth with a 503 (natively when
    /// the failure was in vcl_synth itself; a failed vcl_backend_response abandons the fetch).
    private mutating func vclFailed(in sub: VCLSubroutine) {
        switch sub {
        case .synth:
            self.emit(.writeSynthetic(status: 503, reason: "VCL failure in \(sub.rawValue)", body: nil))
            self.finishResponse()
        case .backendFetch:
            self.releaseFetch(.noBackend)
            self.enterSynth(503, "VCL failure in \(sub.rawValue)")
        default:
            self.enterSynth(503, "VCL failure in \(sub.rawValue)")
        }
    }

    private mutating func recvReturned(_ result: SubResult) {
        switch result {
        case .builtin, .returned(.hash), .returned(.lookup):
            self.enterHash(thenPurge: false)
        case .returned(.pass):
            self.enterPass(.recv(pipe: false))
        case .returned(.pipe):
            // pipe is carried out as pass: the request and its answer go through unstored.
            self.enterPass(.recv(pipe: true))
        case .returned(.purge):
            self.enterHash(thenPurge: true)
        default:
            self.takeCommonReturn(result, of: .recv)
        }
    }

    /// What every client-side sub may return besides its own actions: synth, restart, and
    /// anything it may not return there (a 503, as Varnish answers it).
    private mutating func takeCommonReturn(_ result: SubResult, of sub: VCLSubroutine) {
        switch result {
        case .returned(.synth(let status, let reason)):
            self.enterSynth(status, reason ?? Self.standardReason(status))
        case .returned(.restart):
            self.restart()
        case .returned(let other):
            self.enterSynth(503, "\(sub.rawValue) returned \(other)")
        case .builtin, .failed:
            break
        }
    }

    private mutating func enterHash(thenPurge: Bool) {
        self.step = .hash
        self.purgeAfterHash = thenPurge
        self.emit(.hash)
    }

    private mutating func hashed(_ key: CacheKey, alwaysMiss: Bool, ignoreBusy: Bool, onlyIfCached: Bool) {
        guard self.step == .hash else { return }
        if self.clientGone { return self.end() }
        self.key = key
        self.alwaysMiss = alwaysMiss
        self.ignoreBusy = ignoreBusy
        self.onlyIfCached = onlyIfCached
        if self.purgeAfterHash {
            self.step = .purge
            return self.emit(.purge(key))
        }
        if alwaysMiss {
            return self.enterMiss(key: key, stale: nil, fwd: .miss, expired: false)
        }
        self.step = .lookup
        self.memoryFwd = nil
        self.emit(.lookUp(key, .memory))
    }

    private mutating func lookedUp(_ found: Found, tier: Tier, now: Double) {
        guard self.step == .lookup, let key = self.key else { return }
        if self.clientGone { return self.end() }
        switch found {
        case .miss(let fwd):
            if tier == .memory && self.hasDiskTier {
                self.memoryFwd = fwd
                return self.emit(.lookUp(key, .disk))
            }
            // What memory found but could not use for this request (another variant, a copy
            // the request may not take) says more than the disk tier's miss.
            var reported = fwd
            if let inMemory = self.memoryFwd, inMemory == .varyMiss || inMemory == .request { reported = inMemory }
            self.enterMiss(key: key, stale: nil, fwd: reported, expired: false)
        case .hit(let copy), .staleHit(let copy), .refresh(let copy, _):
            self.step = .hit
            self.found = found
            self.foundAt = now
            self.emit(.runHit(copy))
        }
    }

    private mutating func hitReturned(_ result: SubResult) {
        guard self.step == .hit, let found = self.found, let key = self.key else { return }
        self.found = nil
        switch result {
        case .builtin:
            self.proceedWithLookup(found, key: key)
        case .returned(.deliver), .returned(.none):
            if case .refresh(let copy, _) = found {
                // vcl_hit delivers what the lookup would refetch: serve it, refresh behind.
                return self.enterDeliver(copy, .updating, detail: "vcl", refresh: key)
            }
            self.proceedWithLookup(found, key: key)
        case .returned(.miss):
            self.enterMiss(key: key, stale: found.copy, fwd: .miss, expired: false)
        case .returned(.pass):
            self.enterPass(.vcl)
        default:
            self.takeCommonReturn(result, of: .hit)
        }
    }

    /// builtin vcl_hit: deliver while fresh or in grace, else fetch.
    private mutating func proceedWithLookup(_ found: Found, key: CacheKey) {
        switch found {
        case .hit(let copy):
            self.enterDeliver(copy, .hit, detail: nil, refresh: nil)
        case .staleHit(let copy):
            self.enterDeliver(copy, .stale, detail: "max-stale", refresh: nil)
        case .refresh(let copy, let fwd):
            if fwd == .stale, copy.usableWhileRevalidating(at: self.foundAt) {
                // Grace / stale-while-revalidate: answer now, refresh once in the background.
                return self.enterDeliver(copy, .updating, detail: "stale-while-revalidate", refresh: key)
            }
            self.enterMiss(key: key, stale: copy, fwd: fwd, expired: true)
        case .miss:
            break
        }
    }

    private mutating func enterDeliver(_ copy: StaleCopy, _ status: XCacheStatus, detail: String?, refresh: CacheKey?) {
        self.step = .deliver
        self.emit(.deliver(copy, status, detail: detail, refresh: refresh))
    }

    private mutating func enterMiss(key: CacheKey, stale: StaleCopy?, fwd: CacheStatusValue.Forward, expired: Bool) {
        if self.onlyIfCached {
            return self.enterSynth(
                504, expired ? "only-if-cached and no fresh stored response" : "only-if-cached and nothing stored")
        }
        self.step = .miss
        self.missFrom = (stale, fwd, expired)
        self.emit(.runSub(.miss))
    }

    /// Whether the miss being fetched refreshes an expired copy (for the counters).
    var missIsRefresh: Bool { self.missFrom?.expired ?? false }

    private mutating func missReturned(_ result: SubResult) {
        guard self.step == .miss, let key = self.key, let from = self.missFrom else { return }
        switch result {
        case .builtin, .returned(.fetch), .returned(.none):
            if self.ignoreBusy {
                // req.hash_ignore_busy: fetch (and store) our own, as Varnish's lookup does.
                return self.enterFetch(.fill(key: key, stale: from.stale, fwd: from.fwd))
            }
            self.emit(.join(key, recheck: from.fwd == .uriMiss || from.fwd == .varyMiss))
        case .returned(.pass):
            self.enterPass(.vcl)
        default:
            self.takeCommonReturn(result, of: .miss)
        }
    }

    private mutating func joined(_ join: Join) {
        guard self.step == .miss, let key = self.key, let from = self.missFrom else { return }
        if self.clientGone { return self.end() }
        switch join {
        case .leader:
            self.leading = true
            self.enterFetch(.fill(key: key, stale: from.stale, fwd: from.fwd))
        case .hitForMiss:
            self.enterFetch(.fill(key: key, stale: from.stale, fwd: from.fwd))
        case .waiter:
            // Varnish's waiting list: the request is parked until the busy object has a head.
            self.step = .lookup
            self.waiting = true
            self.emit(.wait)
        case .storedMeanwhile:
            self.lookAgain(key: key, from: from)
        }
    }

    /// Another lookup after a fill this request did not lead (at most 3, then it fetches its own:
    /// the object keeps not matching it, e.g. another variant).
    private mutating func lookAgain(key: CacheKey, from: MissFrom) {
        self.lookupRetries += 1
        guard self.lookupRetries <= 3 else {
            return self.enterFetch(.fill(key: key, stale: from.stale, fwd: from.fwd))
        }
        self.enterHash(thenPurge: false)
    }

    private mutating func stopWaiting() {
        guard self.waiting else { return }
        self.waiting = false
        self.emit(.stopWaiting)
    }

    private mutating func busyFinished(_ outcome: BusyFetch.Outcome, now: Double) {
        guard self.waiting, !self.clientGone else { return }
        if self.response == .streaming(.busy) {
            // The pump sees the outcome once it has written every byte before it.
            if case .failed = outcome {
                self.stopWaiting()
                return self.abortResponse()
            }
            return self.emit(.pumpWaiter)
        }
        self.stopWaiting()
        guard let key = self.key, let from = self.missFrom else { return self.end() }
        switch outcome {
        case .complete, .retryLookup:
            self.lookAgain(key: key, from: from)
        case .uncacheable:
            // Released at once to fetch on our own, in parallel with the others: Varnish's
            // hit-for-miss, met while waiting.
            self.enterFetch(.fill(key: key, stale: from.stale, fwd: from.fwd))
        case .failed(let error):
            self.failWaiter(error, now: now)
        }
    }

    private mutating func failWaiter(_ error: BackendError, now: Double) {
        if let stale = self.missFrom?.stale, stale.usableOnError(at: now, defaultWindow: self.staleIfErrorDefault) {
            return self.enterDeliver(stale, .stale, detail: "stale-if-error", refresh: nil)
        }
        self.enterSynth(error.status, error.description, detail: error.token)
    }

    private mutating func enterPass(_ cause: PassCause) {
        self.step = .pass
        self.passCause = cause
        self.emit(.runSub(.pass))
    }

    private mutating func passReturned(_ result: SubResult) {
        guard self.step == .pass else { return }
        switch result {
        case .builtin, .returned(.fetch), .returned(.none):
            self.enterFetch(.pass(self.passCause))
        default:
            self.takeCommonReturn(result, of: .pass)
        }
    }

    private mutating func purgeReturned(_ result: SubResult) {
        guard self.step == .purge else { return }
        switch result {
        case .returned(.synth(let status, let reason)):
            self.enterSynth(status, reason ?? Self.standardReason(status))
        case .returned(.restart):
            self.restart()
        default:
            if self.purgeCount == 0 && !self.purgeAnswersZero {
                self.enterSynth(404, "Not in cache", body: .notInCache)
            } else {
                self.enterSynth(200, "Purged", body: .purged(count: self.purgeCount))
            }
        }
    }

    // MARK: Fetch

    private mutating func enterFetch(_ mode: FetchMode) {
        self.step = .fetch
        self.fetch = mode
        self.headSeen = false
        self.emit(.prepareFetch(mode))
    }

    private mutating func backendFetchReturned(_ result: SubResult) {
        guard self.step == .fetch || self.clientGone, !self.fetching else { return }
        switch result {
        case .builtin, .returned(.fetch), .returned(.none):
            if self.clientGone && !self.leading {
                return self.end()  // nobody to answer and nobody waiting
            }
            self.fetching = true
            self.emit(.startFetch)
        default:
            self.releaseFetch(.noBackend)
            self.enterSynth(503, "Backend fetch abandoned by VCL")
        }
    }

    /// Ends the fetch this flow runs or leads without a response: its waiters get `error`.
    private mutating func releaseFetch(_ error: BackendError) {
        self.fetching = false
        if self.leading {
            self.leading = false
            self.emit(.failFetch(error))
        }
    }

    private mutating func backendHead(_ head: BackendHead) {
        guard self.fetching else { return }
        self.headSeen = true
        switch head {
        case .streaming(let sendsBody):
            guard !self.clientGone, self.step == .fetch, self.response == .none else { return }
            self.step = .deliver
            self.response = .streaming(.backend)
            self.sendsFetchedBody = sendsBody
        case .answered(let keepFetching):
            if !keepFetching {
                self.fetching = false
                self.emit(.abandonFetch)
            }
            guard !self.clientGone, self.step == .fetch, self.response == .none else { return }
            self.step = .deliver
            self.finishResponse()
        case .notModified:
            self.revalidating = true
        case .retry, .abandon:
            self.fetching = false
            self.headSeen = false
            self.emit(.abandonFetch)
            if case .retry = head, self.retries < Self.maxRetries, !self.bodyStreamed, let mode = self.fetch {
                self.retries += 1
                return self.enterFetch(mode)
            }
            self.releaseFetch(.framing("abandoned by VCL"))
            self.enterSynth(503, "Backend response abandoned by VCL")
        case .serverError(let stale):
            self.fetching = false
            self.emit(.abandonFetch)
            self.releaseFetch(.framing("origin answered a server error"))
            if self.clientGone { return self.end() }
            self.enterDeliver(stale, .stale, detail: "stale-if-error", refresh: nil)
        }
    }

    private mutating func backendEnd() {
        guard self.fetching else { return }
        self.fetching = false
        if self.revalidating {
            // A 304 to our conditional fill: update the stored copy, then serve it.
            return self.emit(.completeRevalidation)
        }
        self.leading = false
        self.emit(.completeFetch)
        if self.response == .streaming(.backend) {
            self.finishResponse()
        } else if self.clientGone {
            self.end()
        }
    }

    private mutating func backendFailed(_ error: BackendError, beforeHead: Bool, retryable: Bool, now: Double) {
        let retry = self.retriesClosedConnection(beforeHead: beforeHead, retryable: retryable)
        guard self.fetching else { return }
        self.fetching = false
        if retry, let mode = self.fetch {
            // A reused keep-alive connection the origin had closed: retry once on another.
            self.closedRetry = true
            return self.enterFetch(mode)
        }
        self.releaseFetch(error)
        let noHead = beforeHead || !self.headSeen
        if noHead, case .fill(_, let stale?, _) = self.fetch,
            stale.usableOnError(at: now, defaultWindow: self.staleIfErrorDefault)
        {
            if self.clientGone { return self.end() }
            return self.enterDeliver(stale, .stale, detail: "stale-if-error", refresh: nil)
        }
        if self.clientGone { return self.end() }
        if noHead && self.response == .none {
            self.backendError = error
            return self.emit(.runBackendError(error))
        }
        // The head is out: the only honest signal left is to cut the connection.
        self.abortResponse()
    }

    private mutating func backendErrorReturned(_ result: SubResult) {
        guard let error = self.backendError else { return }
        switch result {
        case .builtin:
            self.enterSynth(error.status, error.description, detail: error.token)
        case .returned(.retry) where self.retries < Self.maxRetries && !self.bodyStreamed:
            self.backendError = nil
            self.retries += 1
            if let mode = self.fetch { self.enterFetch(mode) }
        case .returned(.abandon), .returned(.retry):
            self.step = .synth
            self.synthDetail = error.token
            self.emit(.writeSynthetic(status: 503, reason: error.description, body: nil))
            self.finishResponse()
        default:
            self.step = .synth
            self.emit(.writeVCLSynthetic(from: .backendError, fallback: nil))
            self.finishResponse()
        }
    }

    // MARK: Synth and the end

    /// The Cache-Status detail of the synthetic answer being made for a backend error (a short
    /// token such as `connection-refused`; nil for other answers).
    private(set) var synthDetail: String?

    private mutating func enterSynth(_ status: Int, _ reason: String, body: SynthBody? = nil, detail: String? = nil) {
        if self.clientGone || self.response != .none { return self.end() }
        self.step = .synth
        self.synthDetail = detail
        let text = body
        if self.inSynth {
            self.emit(.writeSynthetic(status: status, reason: reason, body: text))
            return self.finishResponse()
        }
        self.inSynth = true
        self.pendingSynth = (status, reason, text)
        self.emit(.runSynth(status: status, reason: reason))
    }

    private mutating func synthReturned(_ result: SubResult) {
        guard self.step == .synth, let synth = self.pendingSynth else { return }
        switch result {
        case .builtin:
            self.emit(.writeSynthetic(status: synth.status, reason: synth.reason, body: synth.body))
        case .returned(.restart) where self.restarts < Self.maxRestarts:
            self.pendingSynth = nil
            return self.restart()
        default:
            self.emit(.writeVCLSynthetic(from: .synth, fallback: synth.body))
        }
        self.pendingSynth = nil
        self.finishResponse()
    }

    private mutating func finishResponse() {
        self.stopWaiting()
        guard self.response != .finished else { return }
        if !self.clientGone { self.emit(.finish) }
        self.response = .finished
        self.end()
    }

    private mutating func abortResponse() {
        self.stopWaiting()
        guard self.response != .finished else { return }
        if !self.clientGone { self.emit(.abort) }
        self.response = .finished
        self.end()
    }

    /// The request is over for its client (the fetch, if one runs, goes on by itself).
    private mutating func end() {
        self.step = .done
    }

    private mutating func clientLeft() {
        guard !self.clientGone else { return }
        self.clientGone = true
        if self.waiting { self.stopWaiting() }
        if self.response == .streaming(.disk) { self.emit(.closeDiskReader) }
        if self.response == .streaming(.slices) { self.emit(.closeSlices) }
        if self.fetching {
            if self.fetch?.isFill ?? false {
                // A fill goes on so the object gets stored and its waiters get it.
                self.emit(.resumeFetch)
            } else {
                self.fetching = false
                self.emit(.abandonFetch)
            }
        }
        self.response = .finished
        self.end()
    }

    /// Whether a fetch failure is met by the one retry on a fresh connection (a reused keep-alive
    /// connection the origin had closed), the rule `backendFailed` applies.
    func retriesClosedConnection(beforeHead: Bool, retryable: Bool) -> Bool {
        self.fetching && beforeHead && retryable && !self.closedRetry
    }

    static func standardReason(_ status: Int) -> String {
        HTTPResponseStatus(statusCode: status).reasonPhrase
    }
}

extension RequestStateMachine.Found {
    var copy: StaleCopy? {
        switch self {
        case .hit(let c), .staleHit(let c), .refresh(let c, _): c
        case .miss: nil
        }
    }
}
