import CacheStore
import Glibc
import LacquerTesting
import Synchronization
import Testing

@Suite("ObjectMemory")
struct ObjectMemoryTests {
    /// A live allocation: where, how long, and the byte it was filled with.
    private struct Live {
        let pointer: UnsafeMutablePointer<UInt8>
        let count: Int
        let fill: UInt8
    }

    private static func fill(_ live: Live) {
        live.pointer.update(repeating: live.fill, count: live.count)
    }

    /// Whether every byte still holds the allocation's fill (another allocation overlapping it,
    /// or a free list link written into it, would change one).
    private static func intact(_ live: Live) -> Bool {
        (0..<live.count).allSatisfy { live.pointer[$0] == live.fill }
    }

    private static func rounded(_ count: Int) -> Int { (count + 15) / 16 * 16 }

    @Test("seeded allocations and frees of every size never overlap, and the counts match what is live")
    func matchesModel() {
        let seed = SeededRandom.seed(fallback: 0x0B1E_C7ED)
        print("ObjectMemoryTests.matchesModel seed \(seed)")
        var random = SeededRandom(seed: seed)
        let memory = ObjectMemory()
        var live: [Live] = []
        for step in 0..<FuzzBudget.iterations(default: 30_000) {
            if live.isEmpty || random.next() % 5 < 3 {
                // Mostly small (where objects are), sometimes up to and past the largest slot.
                let count: Int
                switch random.next() % 10 {
                case 0: count = Int(random.next() % UInt64(ObjectMemory.largestSlot + 2_000)) + 1
                case 1: count = Int(random.next() % 16) + 1
                default: count = Int(random.next() % 2_048) + 1
                }
                let allocation = Live(pointer: memory.allocate(count), count: count, fill: UInt8(truncatingIfNeeded: step | 1))
                Self.fill(allocation)
                live.append(allocation)
            } else {
                let index = Int(random.next() % UInt64(live.count))
                live.swapAt(index, live.count - 1)
                let allocation = live.removeLast()
                #expect(Self.intact(allocation), "seed \(seed), step \(step): \(allocation.count) bytes changed while live")
                memory.deallocate(allocation.pointer, count: allocation.count)
            }
        }
        for allocation in live {
            #expect(Self.intact(allocation), "seed \(seed): \(allocation.count) bytes changed while live")
        }
        let inRuns = live.filter { $0.count <= ObjectMemory.largestSlot }
        #expect(memory.stats.slots == inRuns.count)
        #expect(memory.stats.slotBytes == inRuns.reduce(0) { $0 + Self.rounded($1.count) })
        for allocation in live { memory.deallocate(allocation.pointer, count: allocation.count) }
        #expect(memory.stats.slots == 0 && memory.stats.slotBytes == 0)
    }

    @Test("runs emptied give their pages back to the kernel and serve other sizes after")
    func emptyRunsGoBack() throws {
        let memory = ObjectMemory()
        let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
        // 10,000 objects of 1,240 bytes (a 1 KiB body with its fields): about 190 runs.
        var pointers = (0..<10_000).map { _ in memory.allocate(1_240) }
        for pointer in pointers { pointer.update(repeating: 0xAB, count: 1_240) }
        let full = memory.stats
        #expect(full.slots == 10_000 && full.runs >= 10_000 * 1_248 / (64 * 1024))
        #expect(full.regions == 1)
        let probe = pointers[5_000]
        #expect(Self.resident(probe, pageSize: pageSize) == true)
        for pointer in pointers { memory.deallocate(pointer, count: 1_240) }
        pointers = []
        let emptied = memory.stats
        #expect(emptied.slots == 0)
        #expect(emptied.runs <= 1, "only the class's last run with room is kept")
        #expect(emptied.emptyRuns == full.runs - emptied.runs)
        #expect(Self.resident(probe, pageSize: pageSize) == false, "a freed run's pages are given back")
        // Another class takes the empty runs: no new address space.
        let others = (0..<5_000).map { _ in memory.allocate(2_000) }
        #expect(memory.stats.emptyRuns < emptied.emptyRuns)
        #expect(memory.stats.regions == 1)
        for pointer in others { memory.deallocate(pointer, count: 2_000) }
    }

    @Test("one object stored and dropped over and over keeps its run instead of mapping one each time")
    func lastRunKept() {
        let memory = ObjectMemory()
        for _ in 0..<1_000 {
            let pointer = memory.allocate(100)
            pointer.update(repeating: 1, count: 100)
            memory.deallocate(pointer, count: 100)
        }
        #expect(memory.stats.runs == 1 && memory.stats.emptyRuns == 0 && memory.stats.slots == 0)
    }

    @Test("past the address space it may reserve, requests go to malloc and are freed there")
    func fallsBackToMalloc() {
        // One region of 2 runs of 1,008-byte slots (1,000 rounded up): 64 a run after the header.
        let memory = ObjectMemory(regionRuns: 2, maxRegions: 1)
        let capacity = 2 * ((64 * 1024 - 64) / 1_008)
        var live = (0..<400).map { index in
            Live(pointer: memory.allocate(1_000), count: 1_000, fill: UInt8(truncatingIfNeeded: index | 1))
        }
        for allocation in live { Self.fill(allocation) }
        #expect(memory.stats.slots == capacity)
        #expect(memory.stats.fallbacks == 400 - capacity)
        // Free every other one (both kinds), allocate again, and check nothing overlaps.
        for index in stride(from: 0, to: live.count, by: 2) {
            memory.deallocate(live[index].pointer, count: 1_000)
        }
        live = stride(from: 1, to: live.count, by: 2).map { live[$0] }
        for index in 0..<200 {
            let allocation = Live(pointer: memory.allocate(1_000), count: 1_000, fill: UInt8(truncatingIfNeeded: index * 2))
            Self.fill(allocation)
            live.append(allocation)
        }
        // The freed slots were taken again before malloc was asked.
        #expect(memory.stats.slots == capacity)
        #expect(memory.stats.fallbacks == 400 - capacity + 200 - capacity / 2)
        #expect(live.allSatisfy(Self.intact))
        for allocation in live { memory.deallocate(allocation.pointer, count: allocation.count) }
        #expect(memory.stats.slots == 0)
        // Larger than a slot: malloc's, not counted as a fallback.
        let large = memory.allocate(ObjectMemory.largestSlot + 1)
        memory.deallocate(large, count: ObjectMemory.largestSlot + 1)
        #expect(memory.stats.fallbacks == 600 - capacity - capacity / 2)
    }

    @Test("threads allocating and freeing at once never share a slot")
    func concurrent() async {
        let seed = SeededRandom.seed(fallback: 0xC0_C0)
        print("ObjectMemoryTests.concurrent seed \(seed)")
        let memory = ObjectMemory()
        let damaged = DamageCount()
        await withTaskGroup(of: Void.self) { group in
            for worker in 0..<4 {
                group.addTask {
                    var random = SeededRandom(seed: seed &+ UInt64(worker))
                    var live: [Live] = []
                    for step in 0..<20_000 {
                        if live.isEmpty || random.next() % 2 == 0 {
                            let count = Int(random.next() % 3_000) + 1
                            let allocation = Live(
                                pointer: memory.allocate(count), count: count, fill: UInt8(truncatingIfNeeded: worker * 64 + step % 64))
                            Self.fill(allocation)
                            live.append(allocation)
                        } else {
                            let allocation = live.removeFirst()
                            if !Self.intact(allocation) { damaged.count.add(1, ordering: .relaxed) }
                            memory.deallocate(allocation.pointer, count: allocation.count)
                        }
                    }
                    for allocation in live {
                        if !Self.intact(allocation) { damaged.count.add(1, ordering: .relaxed) }
                        memory.deallocate(allocation.pointer, count: allocation.count)
                    }
                }
            }
        }
        #expect(damaged.count.load(ordering: .relaxed) == 0, "seed \(seed)")
        #expect(memory.stats.slots == 0)
    }

    private final class DamageCount: Sendable {
        let count = Atomic<Int>(0)
    }

    /// Whether the page holding `pointer` is resident (`mincore(2)`).
    private static func resident(_ pointer: UnsafeMutablePointer<UInt8>, pageSize: Int) -> Bool? {
        let page = UInt(bitPattern: pointer) & ~UInt(pageSize - 1)
        var vector: UInt8 = 0
        guard mincore(UnsafeMutableRawPointer(bitPattern: page), pageSize, &vector) == 0 else { return nil }
        return vector & 1 == 1
    }
}
