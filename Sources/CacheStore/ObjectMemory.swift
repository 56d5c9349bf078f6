import Glibc
import Synchronization

/// Where stored objects keep their header field and body bytes (`StoredObject`'s one
/// allocation): runs of 64 KiB, each cut into slots of one size, apart from the memory that
/// requests use and free.
///
/// Why not malloc: a cached object lives for hours, the memory a request allocates (its flow,
/// buffers, header lists) for milliseconds. glibc's malloc cuts an object out of the smallest
/// free chunk that holds it, and on a loop serving misses that is usually the hole a finished
/// request's flow left behind (about 2.2 KiB): a 1 KiB object's 1.25 KiB took it and left a
/// 1 KiB remainder that nothing long-lived fits. Measured on `Benchmarks/run.sh`'s memory
/// scenario (10,000 objects of 1 KiB), those remainders were about 90 bytes per object. Here an
/// object's bytes come from a run that holds only objects of its size class, so freed request
/// memory is left for the next request, and objects pack one after the other (jemalloc's
/// slabs of one size class each work the same way).
///
/// - Size classes: every multiple of 16 bytes up to `largestSlot` (a request is rounded up to
///   the next one, as malloc rounds it up to its 16-byte chunks). Larger requests, and any
///   request while no run can be mapped, go to malloc.
/// - A run is 64 KiB, aligned to 64 KiB, inside a region reserved with `mmap` (256 MiB of
///   address space; pages become resident only when a slot on them is first used). A run's
///   first 64 bytes hold its header: its class, the slots in use, its free list (threaded
///   through the free slots' first 4 bytes) and where its never-used slots start.
/// - A run with a free slot is on its class's list; new slots come from the first run there.
/// - A run whose last slot is freed gives its pages back to the kernel (`MADV_DONTNEED`) and
///   waits, empty, for any class to need a run; except when it is the only run of its class
///   with room, which is kept so that one object stored and dropped over and over does not
///   map and unmap a run each time.
///
/// Thread-safe: one lock around all of it. Objects are allocated when a response is stored
/// and freed when one is dropped, thousands of times a second at most; hits touch neither.
package final class ObjectMemory: Sendable {
    /// The instance `StoredObject` uses.
    package static let shared = ObjectMemory()

    /// The largest request served from a run (larger ones go to malloc).
    package static let largestSlot = 16 * 1024
    static let granule = 16
    package static let runBytes = 64 * 1024
    /// Where a run's first slot starts (its header comes before).
    static let headerBytes = 64
    /// The address space a region reserves (256 MiB by default).
    private let regionBytes: Int
    /// The most regions reserved; past it, requests go to malloc.
    private let maxRegions: Int

    /// What is allocated, for `/stats` and tests.
    package struct Stats: Equatable, Sendable {
        /// Slots in use.
        package var slots = 0
        /// Bytes of those slots (requests rounded up to their class).
        package var slotBytes = 0
        /// Runs holding at least one slot, or kept for their class.
        package var runs = 0
        /// Runs whose pages were given back, waiting for a class.
        package var emptyRuns = 0
        /// Requests served by malloc because no run could be mapped.
        package var fallbacks = 0
        /// Regions reserved.
        package var regions = 0
    }

    private struct RunHeader {
        var slotClass: Int32
        var used: Int32
        /// Offset of the first free slot in the run, 0 when none (free slots hold the next one's offset).
        var freeSlot: Int32
        /// Offset of the first slot never handed out.
        var fresh: Int32
        var onList: Bool
        var previous: UnsafeMutableRawPointer?
        var next: UnsafeMutableRawPointer?
    }

    private struct State: ~Copyable {
        /// Per class: the first run with a free slot (linked through the runs' headers).
        var withRoom: [UnsafeMutableRawPointer?]
        var emptyRuns: [UnsafeMutableRawPointer] = []
        /// Every region reserved: where it starts.
        var regions: [UnsafeMutableRawPointer] = []
        /// Where the next never-used run of the newest region starts (its end: nothing left there).
        var nextRun: UnsafeMutableRawPointer?
        /// Slots, slot bytes, runs and fallbacks; the empty runs and regions are counted from the
        /// arrays when read.
        var stats = Stats()
    }

    private let state: Mutex<State>

    /// - Parameters:
    ///   - regionRuns: runs of 64 KiB per reserved region (4,096: 256 MiB).
    ///   - maxRegions: regions reserved at most (address space only; pages are resident as used).
    package init(regionRuns: Int = 4_096, maxRegions: Int = 1 << 16) {
        self.regionBytes = max(1, regionRuns) * Self.runBytes
        self.maxRegions = max(0, maxRegions)
        let classes = ObjectMemory.largestSlot / ObjectMemory.granule
        self.state = Mutex(State(withRoom: Array(repeating: nil, count: classes + 1)))
    }

    deinit {
        self.state.withLock { state in
            for region in state.regions {
                munmap(region, self.regionBytes)
            }
        }
    }

    /// `count` bytes (uninitialised), to be given back with `deallocate(_:count:)` and the same count.
    package func allocate(_ count: Int) -> UnsafeMutablePointer<UInt8> {
        guard count > 0, count <= Self.largestSlot else { return .allocate(capacity: max(count, 1)) }
        let slotClass = (count + Self.granule - 1) / Self.granule
        let slot: UnsafeMutableRawPointer? = self.state.withLock { state in
            guard let run = state.withRoom[slotClass] ?? self.newRun(&state, slotClass: slotClass) else {
                state.stats.fallbacks += 1
                return nil
            }
            let header = run.assumingMemoryBound(to: RunHeader.self)
            let slotBytes = slotClass * Self.granule
            let slot: UnsafeMutableRawPointer
            if header.pointee.freeSlot != 0 {
                slot = run + Int(header.pointee.freeSlot)
                header.pointee.freeSlot = slot.load(as: Int32.self)
            } else {
                slot = run + Int(header.pointee.fresh)
                header.pointee.fresh += Int32(slotBytes)
            }
            header.pointee.used += 1
            if header.pointee.freeSlot == 0, Int(header.pointee.fresh) + slotBytes > Self.runBytes {
                Self.unlink(&state, run: run)
            }
            state.stats.slots += 1
            state.stats.slotBytes += slotBytes
            return slot
        }
        guard let slot else { return .allocate(capacity: count) }
        return slot.bindMemory(to: UInt8.self, capacity: count)
    }

    /// Gives back what `allocate(count)` returned.
    package func deallocate(_ pointer: UnsafeMutablePointer<UInt8>, count: Int) {
        guard count > 0, count <= Self.largestSlot else {
            pointer.deallocate()
            return
        }
        let slotClass = (count + Self.granule - 1) / Self.granule
        // An address (Sendable) into the lock; the pointer is made again there.
        let address = UInt(bitPattern: pointer)
        let fromMalloc: Bool = self.state.withLock { state in
            let slot = UnsafeMutableRawPointer(bitPattern: address)!
            // After a fallback, frees must tell run slots from malloc's.
            if state.stats.fallbacks > 0, !state.regions.contains(where: { slot >= $0 && slot < $0 + self.regionBytes }) {
                return true
            }
            let run = UnsafeMutableRawPointer(bitPattern: address & ~UInt(Self.runBytes - 1))!
            let header = run.assumingMemoryBound(to: RunHeader.self)
            precondition(Int(header.pointee.slotClass) == slotClass, "ObjectMemory: a slot freed with another size than it was allocated with")
            slot.storeBytes(of: header.pointee.freeSlot, as: Int32.self)
            header.pointee.freeSlot = Int32(run.distance(to: slot))
            header.pointee.used -= 1
            state.stats.slots -= 1
            state.stats.slotBytes -= slotClass * Self.granule
            if header.pointee.used == 0, !(header.pointee.onList && state.withRoom[slotClass] == run && header.pointee.next == nil) {
                // Empty, and its class has another run with room: the pages go back to the kernel.
                if header.pointee.onList { Self.unlink(&state, run: run) }
                madvise(run, Self.runBytes, MADV_DONTNEED)
                state.emptyRuns.append(run)
                state.stats.runs -= 1
            } else if !header.pointee.onList {
                Self.link(&state, run: run, slotClass: slotClass)
            }
            return false
        }
        if fromMalloc { pointer.deallocate() }
    }

    /// What is allocated now.
    package var stats: Stats {
        self.state.withLock { state in
            var stats = state.stats
            stats.emptyRuns = state.emptyRuns.count
            stats.regions = state.regions.count
            return stats
        }
    }

    /// A run for `slotClass`, put first on its class's list: an empty one if any, else the next
    /// of the newest region (reserving a region when none has room). Nil when no region can be mapped.
    private func newRun(_ state: inout State, slotClass: Int) -> UnsafeMutableRawPointer? {
        let run: UnsafeMutableRawPointer
        if let empty = state.emptyRuns.popLast() {
            run = empty
        } else {
            if state.nextRun == nil || state.nextRun == state.regions.last.map({ $0 + self.regionBytes }) {
                guard state.regions.count < self.maxRegions, let region = self.reserveRegion() else { return nil }
                state.regions.append(region)
                state.nextRun = region
            }
            guard let next = state.nextRun else { return nil }
            run = next
            state.nextRun = next + Self.runBytes
        }
        run.initializeMemory(
            as: RunHeader.self,
            repeating: RunHeader(
                slotClass: Int32(slotClass), used: 0, freeSlot: 0, fresh: Int32(Self.headerBytes), onList: false,
                previous: nil, next: nil),
            count: 1)
        state.stats.runs += 1
        Self.link(&state, run: run, slotClass: slotClass)
        return run
    }

    /// `regionBytes` of address space aligned to a run, or nil when mmap refuses.
    private func reserveRegion() -> UnsafeMutableRawPointer? {
        let length = self.regionBytes + Self.runBytes
        guard let mapped = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0),
            mapped != UnsafeMutableRawPointer(bitPattern: -1)
        else { return nil }
        let address = UInt(bitPattern: mapped)
        let aligned = (address + UInt(Self.runBytes - 1)) & ~UInt(Self.runBytes - 1)
        // The unaligned head and the tail past the region go back at once.
        let head = Int(aligned - address)
        if head > 0 { munmap(mapped, head) }
        let tail = Self.runBytes - head
        if tail > 0 { munmap(UnsafeMutableRawPointer(bitPattern: aligned + UInt(self.regionBytes)), tail) }
        return UnsafeMutableRawPointer(bitPattern: aligned)
    }

    private static func link(_ state: inout State, run: UnsafeMutableRawPointer, slotClass: Int) {
        let header = run.assumingMemoryBound(to: RunHeader.self)
        let first = state.withRoom[slotClass]
        header.pointee.previous = nil
        header.pointee.next = first
        header.pointee.onList = true
        if let first { first.assumingMemoryBound(to: RunHeader.self).pointee.previous = run }
        state.withRoom[slotClass] = run
    }

    private static func unlink(_ state: inout State, run: UnsafeMutableRawPointer) {
        let header = run.assumingMemoryBound(to: RunHeader.self)
        let previous = header.pointee.previous
        let next = header.pointee.next
        if let previous {
            previous.assumingMemoryBound(to: RunHeader.self).pointee.next = next
        } else {
            state.withRoom[Int(header.pointee.slotClass)] = next
        }
        if let next { next.assumingMemoryBound(to: RunHeader.self).pointee.previous = previous }
        header.pointee.previous = nil
        header.pointee.next = nil
        header.pointee.onList = false
    }
}
