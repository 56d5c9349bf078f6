import CacheStore
import LacquerTesting
import Testing

@Suite("SlotIndex")
struct SlotIndexTests {
    /// The slots under `digest` whose digest is `digest` (others sharing the bucket skipped), in chain order.
    private func slots(_ index: SlotIndex, _ digest: UInt64, digests: [Int: UInt64]) -> [Int] {
        var found: [Int] = []
        index.forEach(digest: digest) { slot in
            if digests[slot] == digest { found.append(slot) }
        }
        return found
    }

    @Test("a digest's slots come most recently inserted first; moveToFront reorders; remove unlinks")
    func recencyOrder() {
        var index = SlotIndex()
        var digests: [Int: UInt64] = [:]
        for (slot, digest) in [(0, UInt64(7)), (1, 9), (2, 7), (3, 7)] {
            digests[slot] = digest
            index.insert(slot, digest: digest) { digests[$0]! }
        }
        #expect(self.slots(index, 7, digests: digests) == [3, 2, 0])
        #expect(self.slots(index, 9, digests: digests) == [1])
        index.moveToFront(0, digest: 7)
        #expect(self.slots(index, 7, digests: digests) == [0, 3, 2])
        let removed = index.remove(3, digest: 7)
        let again = index.remove(3, digest: 7)
        #expect(removed && !again)
        #expect(self.slots(index, 7, digests: digests) == [0, 2])
        #expect(index.first(digest: 7, where: { $0 == 2 }) == 2)
        #expect(index.first(digest: 7, where: { $0 == 3 }) == nil)
        #expect(index.count == 3)
        #expect(index.consistencyProblem(isIndexed: { [0, 1, 2].contains($0) }, digestOf: { digests[$0]! }) == nil)
    }

    @Test("growing the table keeps every slot findable and each digest's order")
    func growthKeepsOrder() {
        var index = SlotIndex()
        var digests: [Int: UInt64] = [:]
        // 5,000 slots over 1,000 digests (5 variants each), so the table doubles many times.
        for slot in 0..<5_000 {
            let digest = UInt64(slot % 1_000) &* 0x1234_5678_9ABC_DEF1
            digests[slot] = digest
            index.insert(slot, digest: digest) { digests[$0]! }
        }
        for d in 0..<1_000 {
            let digest = UInt64(d) &* 0x1234_5678_9ABC_DEF1
            #expect(self.slots(index, digest, digests: digests) == [4_000 + d, 3_000 + d, 2_000 + d, 1_000 + d, d])
        }
        #expect(index.consistencyProblem(isIndexed: { $0 < 5_000 }, digestOf: { digests[$0]! }) == nil)
    }

    @Test("seeded random inserts, moves and removals match a model of per-digest lists")
    func matchesModel() {
        let seed = SeededRandom.seed(fallback: 0x510_71DE)
        print("SlotIndexTests.matchesModel seed \(seed)")
        var random = SeededRandom(seed: seed)
        var index = SlotIndex()
        var digests: [Int: UInt64] = [:]
        var model: [UInt64: [Int]] = [:]
        var free = Array((0..<600).reversed())
        for _ in 0..<20_000 {
            let choice = random.next() % 3
            if choice == 0, let slot = free.popLast() {
                // Few digests (and all of them sharing buckets early on): long, mixed chains.
                let digest = random.next() % 40
                digests[slot] = digest
                index.insert(slot, digest: digest) { digests[$0]! }
                model[digest, default: []].insert(slot, at: 0)
            } else if !digests.isEmpty {
                let slot = digests.keys.sorted()[Int(random.next() % UInt64(digests.count))]
                let digest = digests[slot]!
                if choice == 1 {
                    index.moveToFront(slot, digest: digest)
                    model[digest]!.removeAll { $0 == slot }
                    model[digest]!.insert(slot, at: 0)
                } else {
                    let removed = index.remove(slot, digest: digest)
                    #expect(removed, "seed \(seed)")
                    model[digest]!.removeAll { $0 == slot }
                    digests[slot] = nil
                    free.append(slot)
                }
            }
        }
        for (digest, expected) in model {
            #expect(self.slots(index, digest, digests: digests) == expected, "seed \(seed)")
        }
        #expect(index.count == digests.count)
        #expect(index.consistencyProblem(isIndexed: { digests[$0] != nil }, digestOf: { digests[$0]! }) == nil, "seed \(seed)")
    }
}
