import Foundation
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The access log: one line per client request, to stdout or a file, and to every live tail
/// (`GET /log` on the admin port).
///
/// Requests never wait for it. The event loops only append a finished `AccessRecord` to a
/// queue (a short lock, no formatting, no I/O); a writer thread takes the queue every
/// `interval`, formats the lines and writes them in one `write(2)` per batch. A queue past
/// `maxPending` records drops new ones and counts them (`access_log_dropped`): a stalled disk
/// or pipe slows the log, never the cache. SIGUSR1 (`reopen()`) reopens the file, for logrotate.
public final class AccessLog: Sendable {
    public enum Destination: Sendable, Equatable {
        case stdout
        case file(String)
    }

    public let destination: Destination?
    public let format: AccessLogFormat
    let counters: Counters
    private let logger: Logger
    private let interval: Duration
    static let maxPending = 100_000

    /// One queue per shard, so event loops do not meet on a lock: each loop has its own
    /// (`shard` is the loop's index). The writer swaps each shard's records with an empty array that kept its capacity,
    /// so nothing is allocated while a lock is held.
    private final class Shard: Sendable {
        let records = Mutex<[AccessRecord]>([])
    }

    static let shardCount = 8
    /// The most records one shard holds before the writer takes them.
    static var maxPendingPerShard: Int { Self.maxPending / Self.shardCount }
    private let shards: [Shard] = (0..<AccessLog.shardCount).map { _ in Shard() }
    /// What the writer keeps from batch to batch (one writer at a time: the lock is never contended).
    private struct WriterState {
        /// Emptied arrays that kept their capacity, swapped into the shards.
        var spares: [[AccessRecord]] = []
        /// The bytes of a batch (kept, so a batch allocates nothing once the log is warm).
        var out: [UInt8] = []
        /// The shards' records of a batch, in the order of their request times.
        var merged: [AccessRecord] = []
        var taken: [[AccessRecord]] = []
        var clock = LogClock()
    }

    private let writer = Mutex(WriterState())
    /// Whether anyone reads the records (a destination or a live tail): when false, connections
    /// build no records at all.
    private let capturing: Atomic<Bool>
    private let reopenRequested = Atomic<Bool>(false)
    private let descriptor: Atomic<Int32>

    /// One live tail: its filter, whether it wants JSON, and where its lines go (returns false
    /// once the reader has gone).
    struct Subscriber: Sendable {
        var id: Int
        var filter: AccessLogFilter?
        var json: Bool
        var deliver: @Sendable (String) -> Bool
    }

    private struct Tails {
        var nextID = 1
        var subscribers: [Subscriber] = []
    }

    private let tails = Mutex(Tails())

    private let state = Mutex<(running: Bool, done: DispatchSemaphore?)>((false, nil))

    /// Opens the destination (a file is created if needed and appended to). Throws a plain
    /// message when the file cannot be opened.
    public convenience init(
        destination: Destination?, format: AccessLogFormat, counters: Counters, logger: Logger,
        interval: Duration = .milliseconds(50)
    ) throws(AccessLogError) {
        var fd: Int32 = -1
        switch destination {
        case .stdout: fd = 1
        case .file(let path): fd = try Self.open(path)
        case nil: break
        }
        self.init(destination: destination, descriptor: fd, format: format, counters: counters, logger: logger, interval: interval)
    }

    /// A log with no destination: only live tails read it.
    convenience init(counters: Counters, logger: Logger) {
        self.init(destination: nil, descriptor: -1, format: .combined, counters: counters, logger: logger, interval: .milliseconds(50))
    }

    private init(
        destination: Destination?, descriptor: Int32, format: AccessLogFormat, counters: Counters, logger: Logger,
        interval: Duration
    ) {
        self.destination = destination
        self.format = format
        self.counters = counters
        self.logger = logger
        self.interval = interval
        self.descriptor = Atomic(descriptor)
        self.capturing = Atomic(destination != nil)
    }

    static func open(_ path: String) throws(AccessLogError) -> Int32 {
        let fd = Glibc.open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw AccessLogError(path: path, reason: String(cString: strerror(errno)).lowercased())
        }
        return fd
    }

    /// Whether connections should build records now.
    @inline(__always)
    var isCapturing: Bool { self.capturing.load(ordering: .relaxed) }

    /// Queues a finished request (called on an event loop: a lock and an append).
    func record(_ record: AccessRecord, shard index: Int) {
        let shard = self.shards[index & (Self.shardCount - 1)]
        let accepted = shard.records.withLock { records -> Bool in
            guard records.count < Self.maxPendingPerShard else { return false }
            records.append(record)
            return true
        }
        if !accepted { self.counters.increment(.accessLogDropped) }
    }


    /// Asks the writer to reopen the file before its next batch (SIGUSR1).
    public func reopen() {
        self.reopenRequested.store(true, ordering: .relaxed)
    }

    /// Adds a live tail; returns its id for `unsubscribe`.
    func subscribe(filter: AccessLogFilter?, json: Bool, deliver: @escaping @Sendable (String) -> Bool) -> Int {
        let id = self.tails.withLock { tails in
            let id = tails.nextID
            tails.nextID += 1
            tails.subscribers.append(Subscriber(id: id, filter: filter, json: json, deliver: deliver))
            return id
        }
        self.capturing.store(true, ordering: .relaxed)
        return id
    }

    func unsubscribe(_ id: Int) {
        let remaining = self.tails.withLock { tails in
            tails.subscribers.removeAll { $0.id == id }
            return tails.subscribers.count
        }
        if remaining == 0 && self.destination == nil {
            self.capturing.store(false, ordering: .relaxed)
        }
    }

    /// The number of live tails.
    var tailCount: Int { self.tails.withLock { $0.subscribers.count } }

    /// Starts the writer thread.
    public func start() {
        let done = DispatchSemaphore(value: 0)
        let alreadyRunning = self.state.withLock { state -> Bool in
            if state.running { return true }
            state = (true, done)
            return false
        }
        guard !alreadyRunning else { return }
        let thread = Thread { [self] in
            while self.state.withLock({ $0.running }) {
                self.writeBatch()
                Thread.sleep(forTimeInterval: Double(self.interval.components.attoseconds) / 1e18 + Double(self.interval.components.seconds))
            }
            self.writeBatch()  // what was queued before the stop
            done.signal()
        }
        thread.name = "lacquer-access-log"
        thread.start()
    }

    /// Writes what is queued, stops the writer thread and closes the file (stdout stays open).
    public func stop() {
        let done = self.state.withLock { state -> DispatchSemaphore? in
            guard state.running else { return nil }
            state.running = false
            return state.done
        }
        // Bounded: a writer stuck on a reader that takes nothing (a full pipe) must not hold up a stop.
        _ = done?.wait(timeout: .now() + .seconds(3))
        if case .file = self.destination {
            let fd = self.descriptor.exchange(-1, ordering: .relaxed)
            if fd >= 0 { close(fd) }
        }
    }

    /// One batch: reopen if asked, take the queue, format, write, feed the tails.
    func writeBatch() {
        if self.reopenRequested.exchange(false, ordering: .relaxed), case .file(let path) = self.destination {
            do {
                let fd = try Self.open(path)
                let old = self.descriptor.exchange(fd, ordering: .relaxed)
                if old >= 0 { close(old) }
                self.logger.notice("access log reopened", metadata: ["file": "\(path)"])
            } catch {
                self.logger.error("access log could not be reopened; still writing to the old file", metadata: ["error": "\(error)"])
            }
        }
        let subscribers = self.tails.withLock { $0.subscribers }
        var tailText = [String](repeating: "", count: subscribers.count)
        self.writer.withLock { state in
            state.out.removeAll(keepingCapacity: true)
            state.taken.removeAll(keepingCapacity: true)
            for shard in self.shards {
                var taken = state.spares.popLast() ?? []
                shard.records.withLock { queued in
                    if !queued.isEmpty { swap(&taken, &queued) }
                }
                if taken.isEmpty {
                    state.spares.append(taken)
                } else {
                    state.taken.append(taken)
                }
            }
            // Each loop's records are in the order they finished; across loops, lines go out in
            // the order of their request times.
            if state.taken.count > 1 {
                Self.merge(state.taken, into: &state.merged)
                self.emit(state.merged, to: &state, subscribers: subscribers, tailText: &tailText)
                state.merged.removeAll(keepingCapacity: true)
            } else if let only = state.taken.first {
                self.emit(only, to: &state, subscribers: subscribers, tailText: &tailText)
            }
            while var taken = state.taken.popLast() {  // moved out, so its storage is kept, not copied
                taken.removeAll(keepingCapacity: true)
                state.spares.append(taken)
            }
            if !state.out.isEmpty { self.write(state.out) }
        }
        for (index, subscriber) in subscribers.enumerated() where !tailText[index].isEmpty {
            if !subscriber.deliver(tailText[index]) {
                self.unsubscribe(subscriber.id)
            }
        }
    }

    /// Merges arrays each in (roughly) time order into one by request time: each record is
    /// copied once, and the few arrays (one per loop) are compared head to head.
    static func merge(_ lists: [[AccessRecord]], into merged: inout [AccessRecord]) {
        var positions = [Int](repeating: 0, count: lists.count)
        let total = lists.reduce(0) { $0 + $1.count }
        merged.reserveCapacity(total)
        while merged.count < total {
            var best = -1
            for index in lists.indices where positions[index] < lists[index].count {
                if best < 0 || lists[index][positions[index]].time < lists[best][positions[best]].time {
                    best = index
                }
            }
            merged.append(lists[best][positions[best]])
            positions[best] += 1
        }
    }

    /// Formats `records` into the batch's bytes and the tails' texts.
    private func emit(_ records: [AccessRecord], to state: inout WriterState, subscribers: [Subscriber], tailText: inout [String]) {
        if self.destination != nil {
            for record in records { self.format.append(record, to: &state.out, clock: &state.clock) }
        }
        for (index, subscriber) in subscribers.enumerated() {
            let format = subscriber.json ? AccessLogFormat.json : self.format
            for record in records where subscriber.filter?.matches(record) ?? true {
                tailText[index] += format.line(record)
            }
        }
    }

    private func write(_ bytes: [UInt8]) {
        let fd = self.descriptor.load(ordering: .relaxed)
        guard fd >= 0 else { return }
        bytes.withUnsafeBufferPointer { bytes in
            guard let base = bytes.baseAddress else { return }
            // To a pipe or a terminal, at most PIPE_BUF bytes a call: once poll says writable,
            // such a write never blocks (POSIX), so a reader that stops reading cannot hang it.
            var info = stat()
            let chunk = fstat(fd, &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG ? bytes.count : Int(PIPE_BUF)
            var offset = 0
            while offset < bytes.count {
                // A reader that takes nothing for a second (a full pipe nobody reads) loses the
                // batch, counted, rather than stopping the writer.
                var ready = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                let polled = poll(&ready, 1, 1000)
                if polled < 0 && errno == EINTR { continue }
                guard polled > 0 else {
                    self.counters.increment(.accessLogDropped)
                    return
                }
                let written = Glibc.write(fd, base + offset, min(chunk, bytes.count - offset))
                if written < 0 {
                    if errno == EINTR { continue }
                    self.counters.increment(.accessLogDropped)
                    return
                }
                offset += written
            }
        }
    }
}

/// The access log file could not be opened.
public struct AccessLogError: Error, CustomStringConvertible {
    public var path: String
    public var reason: String
    public var description: String { "cannot open access log \(self.path): \(self.reason)" }
}
