import CacheStore
import Testing

@Suite("VariantSlots")
struct VariantSlotsTests {
    @Test("one slot, then more, most recently added first")
    func prependKeepsRecencyOrder() {
        var slots = VariantSlots(7)
        #expect(slots.count == 1 && slots.first == 7 && slots.last == 7)
        slots.prepend(3)
        slots.prepend(5)
        #expect(slots.slots == [5, 3, 7])
        #expect(slots.first == 5 && slots.last == 7)
        #expect(slots.contains(3) && !slots.contains(4))
    }

    @Test("moveToFront reorders; an unknown slot changes nothing")
    func moveToFront() {
        var slots = VariantSlots(1)
        slots.prepend(2)
        slots.prepend(3)
        slots.moveToFront(1)
        #expect(slots.slots == [1, 3, 2])
        slots.moveToFront(9)
        #expect(slots.slots == [1, 3, 2])
        var single = VariantSlots(4)
        single.moveToFront(4)
        #expect(single.slots == [4])
    }

    @Test("remove shrinks back to one slot and reports when the list is empty")
    func remove() {
        var slots = VariantSlots(1)
        slots.prepend(2)
        slots.prepend(3)
        // `remove` is mutating, so its results are taken outside `#expect`.
        let removedMiddle = slots.remove(2)
        #expect(removedMiddle)
        #expect(slots.slots == [3, 1])
        let removedUnknown = slots.remove(8)
        #expect(removedUnknown)
        #expect(slots.slots == [3, 1])
        let removedFront = slots.remove(3)
        #expect(removedFront)
        #expect(slots == VariantSlots(1))
        let removedUnknownSingle = slots.remove(5)
        #expect(removedUnknownSingle)
        #expect(slots.slots == [1])
        let nonEmpty = slots.remove(1)
        #expect(!nonEmpty)
    }

    @Test("first(where:) searches most recently used first")
    func firstWhere() {
        var slots = VariantSlots(10)
        slots.prepend(20)
        slots.prepend(30)
        #expect(slots.first(where: { $0 >= 20 }) == 30)
        #expect(slots.first(where: { $0 < 15 }) == 10)
        #expect(slots.first(where: { $0 > 99 }) == nil)
    }
}
