import CacheStore
import Testing

@Suite("LRUList")
struct LRUListTests {
    /// The elements front (most recent) to back.
    private func order(_ list: LRUList<String>) -> [String] {
        list.slotsFromFront.map { list[$0] }
    }

    @Test("an empty list has no first, no last and nothing to remove")
    func emptyList() {
        var list = LRUList<String>()
        #expect(list.isEmpty)
        #expect(list.count == 0)
        #expect(list.first == nil)
        #expect(list.last == nil)
        #expect(list.removeLast() == nil)
        #expect(Array(list.slotsFromFront).isEmpty)
        #expect(list.consistencyProblem() == nil)
    }

    @Test("pushFront puts the newest element at the front and the oldest at the back")
    func pushFrontOrder() {
        var list = LRUList<String>()
        let a = list.pushFront("a")
        list.pushFront("b")
        let c = list.pushFront("c")
        #expect(self.order(list) == ["c", "b", "a"])
        #expect(list.first == c)
        #expect(list.last == a)
        #expect(list.count == 3)
        #expect(list.consistencyProblem() == nil)
    }

    @Test("pushBack puts an element at the back, next to be removed, into an empty list or a free slot")
    func pushBackOrder() {
        var list = LRUList<String>()
        let a = list.pushBack("a")
        #expect(list.first == a && list.last == a)
        list.pushFront("b")
        let c = list.pushBack("c")
        #expect(self.order(list) == ["b", "a", "c"])
        #expect(list.last == c)
        #expect(list.removeLast()?.element == "c")
        let d = list.pushBack("d")
        #expect(d == c, "the freed slot is reused")
        #expect(self.order(list) == ["b", "a", "d"])
        #expect(list.consistencyProblem() == nil)
    }

    @Test("moveToFront makes an element the most recent; moving the front changes nothing")
    func moveToFront() {
        var list = LRUList<String>()
        let a = list.pushFront("a")
        let b = list.pushFront("b")
        let c = list.pushFront("c")
        list.moveToFront(a)
        #expect(self.order(list) == ["a", "c", "b"])
        #expect(list.last == b)
        list.moveToFront(a)
        #expect(self.order(list) == ["a", "c", "b"])
        list.moveToFront(c)
        #expect(self.order(list) == ["c", "a", "b"])
        list.moveToFront(b)
        #expect(self.order(list) == ["b", "c", "a"])
        #expect(list.last == a)
        #expect(list.consistencyProblem() == nil)
    }

    @Test("removing the middle, front or back element keeps the links intact")
    func removeAnywhere() {
        var list = LRUList<String>()
        let a = list.pushFront("a")
        let b = list.pushFront("b")
        let c = list.pushFront("c")
        let d = list.pushFront("d")
        #expect(list.remove(b) == "b")
        #expect(self.order(list) == ["d", "c", "a"])
        #expect(list.remove(d) == "d")
        #expect(self.order(list) == ["c", "a"])
        #expect(list.first == c)
        #expect(list.remove(a) == "a")
        #expect(self.order(list) == ["c"])
        #expect(list.first == c && list.last == c)
        #expect(list.remove(c) == "c")
        #expect(list.isEmpty && list.first == nil && list.last == nil)
        #expect(list.consistencyProblem() == nil)
    }

    @Test("removeLast takes the least recently used element")
    func removeLastIsLeastRecent() {
        var list = LRUList<String>()
        let a = list.pushFront("a")
        list.pushFront("b")
        list.pushFront("c")
        list.moveToFront(a)
        #expect(list.removeLast()?.element == "b")
        #expect(list.removeLast()?.element == "c")
        #expect(list.removeLast()?.element == "a")
        #expect(list.removeLast() == nil)
        #expect(list.consistencyProblem() == nil)
    }

    @Test("freed slots are reused before the slot array grows")
    func freeSlotsAreReused() {
        var list = LRUList<String>()
        list.pushFront("a")
        let b = list.pushFront("b")
        list.pushFront("c")
        #expect(list.slotCount == 3)
        list.remove(b)
        #expect(list.element(at: b) == nil)
        let e = list.pushFront("e")
        #expect(e == b)
        #expect(list.slotCount == 3)
        #expect(list[e] == "e")
        #expect(self.order(list) == ["e", "c", "a"])
        let f = list.pushFront("f")
        #expect(f == 3)
        #expect(list.slotCount == 4)
        #expect(list.consistencyProblem() == nil)
    }

    @Test("element(at:) answers nil for free and out-of-range slots")
    func elementAtIsTotal() {
        var list = LRUList<String>()
        let a = list.pushFront("a")
        #expect(list.element(at: a) == "a")
        #expect(list.element(at: -1) == nil)
        #expect(list.element(at: 7) == nil)
        list.remove(a)
        #expect(list.element(at: a) == nil)
    }

    @Test("slot(after:) walks from the front to the back")
    func slotAfter() {
        var list = LRUList<String>()
        let a = list.pushFront("a")
        let b = list.pushFront("b")
        #expect(list.slot(after: b) == a)
        #expect(list.slot(after: a) == nil)
    }

    @Test("removeAll empties the list and starts slots from zero")
    func removeAll() {
        var list = LRUList<String>()
        for name in ["a", "b", "c"] {
            list.pushFront(name)
        }
        list.removeAll()
        #expect(list.isEmpty && list.slotCount == 0 && list.first == nil && list.last == nil)
        #expect(list.pushFront("d") == 0)
        #expect(list.consistencyProblem() == nil)
    }

    @Test("random operations match a simple array model")
    func matchesArrayModel() {
        var list = LRUList<Int>()
        // The model: (value, slot) pairs, most recent first.
        var model: [(value: Int, slot: Int)] = []
        var random = SplitMix64(seed: 42)
        for step in 0..<20_000 {
            switch random.next(below: 4) {
            case 0, 1:
                let slot = list.pushFront(step)
                #expect(!model.contains { $0.slot == slot }, "slot \(slot) handed out twice")
                model.insert((step, slot), at: 0)
            case 2 where !model.isEmpty:
                let index = random.next(below: model.count)
                let entry = model.remove(at: index)
                list.moveToFront(entry.slot)
                model.insert(entry, at: 0)
            case 3 where !model.isEmpty:
                let index = random.next(below: model.count)
                let entry = model.remove(at: index)
                #expect(list.remove(entry.slot) == entry.value)
            default:
                #expect(list.removeLast() == nil)
            }
            if step % 500 == 0 {
                #expect(list.consistencyProblem() == nil)
                #expect(Array(list.slotsFromFront) == model.map(\.slot))
            }
        }
        #expect(list.count == model.count)
        #expect(list.slotsFromFront.map { list[$0] } == model.map(\.value))
        #expect(list.consistencyProblem() == nil)
    }
}

/// A small deterministic generator, so that a failing random test fails the same way again.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) {
        self.state = seed
    }

    mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A value in `0..<bound`.
    mutating func next(below bound: Int) -> Int {
        Int(self.next() % UInt64(bound))
    }
}
