/// An intrusive doubly linked list kept in one array of slots, ordered from most recently used
/// (the front) to least recently used (the back).
///
/// Why not a class per node: a cache holds hundreds of thousands of objects, and a node object
/// each would mean one allocation per insert, reference counting on every link update and
/// pointer chasing across the heap. Here a node is an element of `nodes`; links are slot
/// indices; a removed node's slot goes onto a free list (threaded through `next`) and is reused
/// by the next insert, so a list in a steady state allocates nothing. The array only grows (to
/// the largest number of elements ever held at once; the memory tier's byte budget bounds it),
/// by a quarter at a time.
///
/// A slot index stays valid from `pushFront(_:)` until `remove(_:)` returns; after that it may
/// be handed out again. Callers keep indices (the memory tier's key map does) and must forget
/// an index when they remove it. Using a stale index is a programming error and traps.
///
/// Lifecycle of a slot: free (on the free list, or never used) → occupied at the front
/// (`pushFront`) → moved to the front on use (`moveToFront`) → drifts to the back as others are
/// used → removed (`remove`, `removeLast`) → free again.
///
/// Not thread-safe: a value type, guarded by whoever owns it (one memory-tier shard's lock).
package struct LRUList<Element> {
    /// "No slot": the end of a chain.
    private static var none: Int { -1 }

    /// Links are kept as 32-bit slot numbers: a node of the memory tier is 24 bytes, not 32,
    /// and the list is bounded by `maxSlots` (far more objects than any memory tier holds).
    fileprivate struct Node {
        /// `nil` exactly when the slot is free.
        var element: Element?
        private var previousSlot: Int32
        private var nextSlot: Int32

        init(element: Element?, previous: Int, next: Int) {
            self.element = element
            self.previousSlot = Int32(truncatingIfNeeded: previous)
            self.nextSlot = Int32(truncatingIfNeeded: next)
        }

        /// Towards the front (more recently used); `none` at the front. Unused when free.
        var previous: Int {
            get { Int(self.previousSlot) }
            set { self.previousSlot = Int32(truncatingIfNeeded: newValue) }
        }

        /// Towards the back (less recently used); `none` at the back. When free: the next free slot.
        var next: Int {
            get { Int(self.nextSlot) }
            set { self.nextSlot = Int32(truncatingIfNeeded: newValue) }
        }
    }

    /// The most slots a list has (slot numbers fit in 32 bits).
    package static var maxSlots: Int { Int(Int32.max) }

    private var nodes: [Node] = []
    private var head: Int = LRUList.none
    private var tail: Int = LRUList.none
    private var freeHead: Int = LRUList.none
    /// The number of elements in the list.
    package private(set) var count: Int = 0

    package init() {}

    /// Creates an empty list with room for `capacity` elements before the slot array grows.
    package init(minimumCapacity capacity: Int) {
        self.nodes.reserveCapacity(capacity)
    }

    package var isEmpty: Bool { self.count == 0 }

    /// The number of slots ever allocated (occupied or free). Slot indices are below this.
    package var slotCount: Int { self.nodes.count }

    /// The slot of the most recently used element, or `nil` when empty.
    package var first: Int? { self.head == LRUList.none ? nil : self.head }

    /// The slot of the least recently used element, or `nil` when empty.
    package var last: Int? { self.tail == LRUList.none ? nil : self.tail }

    /// The element in an occupied slot. Traps on a free or out-of-range slot.
    package subscript(slot: Int) -> Element {
        guard let element = self.nodes[slot].element else {
            preconditionFailure("LRUList: slot \(slot) is free")
        }
        return element
    }

    /// Replaces the element in an occupied slot, keeping its place in the order.
    package mutating func replace(_ slot: Int, with element: Element) {
        precondition(self.nodes[slot].element != nil, "LRUList: slot \(slot) is free")
        self.nodes[slot].element = element
    }

    /// The element in `slot` if that slot exists and is occupied, else `nil`. Never traps, so
    /// a walk over `0..<slotCount` may use it while the list changes between steps.
    package func element(at slot: Int) -> Element? {
        guard slot >= 0, slot < self.nodes.count else {
            return nil
        }
        return self.nodes[slot].element
    }

    /// The slot after `slot` towards the back (less recently used), or `nil` at the back.
    package func slot(after slot: Int) -> Int? {
        let next = self.nodes[slot].next
        return next == LRUList.none ? nil : next
    }

    /// Inserts `element` at the front and returns its slot, reusing a free slot if there is one.
    @discardableResult
    package mutating func pushFront(_ element: Element) -> Int {
        let slot = self.place(Node(element: element, previous: LRUList.none, next: self.head))
        if self.head != LRUList.none {
            self.nodes[self.head].previous = slot
        } else {
            self.tail = slot
        }
        self.head = slot
        return slot
    }

    /// Inserts `element` at the back (the next to be evicted) and returns its slot.
    @discardableResult
    package mutating func pushBack(_ element: Element) -> Int {
        let slot = self.place(Node(element: element, previous: self.tail, next: LRUList.none))
        if self.tail != LRUList.none {
            self.nodes[self.tail].next = slot
        } else {
            self.head = slot
        }
        self.tail = slot
        return slot
    }

    /// Stores `node` in a free slot (or a new one) and counts it; the caller links it in.
    private mutating func place(_ node: Node) -> Int {
        let slot: Int
        if self.freeHead != LRUList.none {
            slot = self.freeHead
            self.freeHead = self.nodes[slot].next
            self.nodes[slot] = node
        } else {
            slot = self.nodes.count
            precondition(slot < Self.maxSlots, "LRUList: more than \(Self.maxSlots) slots")
            if slot == self.nodes.capacity {
                // A quarter more, not twice as many: the array stays within a fifth of the
                // slots in use (it is most of a shard's bookkeeping), at the price of more,
                // smaller copies (each element is copied about four times over the growth).
                self.nodes.reserveCapacity(Swift.max(16, slot + slot / 4))
            }
            self.nodes.append(node)
        }
        self.count += 1
        return slot
    }

    /// Makes the element in `slot` the most recently used.
    package mutating func moveToFront(_ slot: Int) {
        precondition(self.nodes[slot].element != nil, "LRUList: slot \(slot) is free")
        guard slot != self.head else {
            return
        }
        self.unlink(slot)
        self.nodes[slot].previous = LRUList.none
        self.nodes[slot].next = self.head
        self.nodes[self.head].previous = slot
        self.head = slot
    }

    /// Removes the element in `slot`, frees the slot and returns the element.
    @discardableResult
    package mutating func remove(_ slot: Int) -> Element {
        guard let element = self.nodes[slot].element else {
            preconditionFailure("LRUList: slot \(slot) is free")
        }
        self.unlink(slot)
        self.nodes[slot].element = nil
        self.nodes[slot].previous = LRUList.none
        self.nodes[slot].next = self.freeHead
        self.freeHead = slot
        self.count -= 1
        return element
    }

    /// Removes the least recently used element; `nil` when empty.
    package mutating func removeLast() -> (slot: Int, element: Element)? {
        guard let slot = self.last else {
            return nil
        }
        return (slot, self.remove(slot))
    }

    /// Removes every element, keeping the slot array's capacity.
    package mutating func removeAll() {
        self.nodes.removeAll(keepingCapacity: true)
        self.head = LRUList.none
        self.tail = LRUList.none
        self.freeHead = LRUList.none
        self.count = 0
    }

    /// Detaches an occupied slot from its neighbours, fixing `head` and `tail`.
    private mutating func unlink(_ slot: Int) {
        let previous = self.nodes[slot].previous
        let next = self.nodes[slot].next
        if previous != LRUList.none {
            self.nodes[previous].next = next
        } else {
            self.head = next
        }
        if next != LRUList.none {
            self.nodes[next].previous = previous
        } else {
            self.tail = previous
        }
    }
}

extension LRUList: Sendable where Element: Sendable {}
extension LRUList.Node: Sendable where Element: Sendable {}

extension LRUList {
    /// The occupied slots from most to least recently used.
    package var slotsFromFront: SlotSequence { SlotSequence(list: self) }

    /// Walks the slots front to back. Iterate a copy, not a list that is being changed.
    package struct SlotSequence: Sequence {
        let list: LRUList

        package func makeIterator() -> Iterator {
            Iterator(list: self.list, current: self.list.head)
        }

        package struct Iterator: IteratorProtocol {
            let list: LRUList
            var current: Int

            package mutating func next() -> Int? {
                guard self.current != LRUList.none else {
                    return nil
                }
                let slot = self.current
                self.current = self.list.nodes[slot].next
                return slot
            }
        }
    }

    /// Checks every link, the free list and the count; returns a description of the first
    /// problem found, or `nil` when the list is consistent. For tests; O(slots).
    package func consistencyProblem() -> String? {
        var seen = [Bool](repeating: false, count: self.nodes.count)
        var forward = 0
        var previous = LRUList.none
        var slot = self.head
        while slot != LRUList.none {
            guard slot >= 0, slot < self.nodes.count else {
                return "link to out-of-range slot \(slot)"
            }
            guard !seen[slot] else {
                return "cycle at slot \(slot)"
            }
            seen[slot] = true
            guard self.nodes[slot].element != nil else {
                return "free slot \(slot) linked into the list"
            }
            guard self.nodes[slot].previous == previous else {
                return "slot \(slot) has previous \(self.nodes[slot].previous), expected \(previous)"
            }
            forward += 1
            previous = slot
            slot = self.nodes[slot].next
        }
        guard previous == self.tail else {
            return "tail is \(self.tail), but the walk ended at \(previous)"
        }
        guard forward == self.count else {
            return "count is \(self.count), but \(forward) slots are linked"
        }
        var free = 0
        slot = self.freeHead
        while slot != LRUList.none {
            guard slot >= 0, slot < self.nodes.count, !seen[slot] else {
                return "free list reaches slot \(slot) twice or out of range"
            }
            seen[slot] = true
            guard self.nodes[slot].element == nil else {
                return "occupied slot \(slot) on the free list"
            }
            free += 1
            slot = self.nodes[slot].next
        }
        guard forward + free == self.nodes.count else {
            return "\(self.nodes.count - forward - free) slots are neither linked nor free"
        }
        return nil
    }
}
