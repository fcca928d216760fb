/// A first-in, first-out queue over an array with a moving head: taking from the front is O(1) amortised. The plugin
/// pools keep their waiting calls in one, under their own lock.
struct CallQueue<Element> {
    private var storage: [Element] = []
    private var head = 0

    var isEmpty: Bool { head == storage.count }
    var count: Int { storage.count - head }
    /// The waiting elements, oldest first.
    var elements: ArraySlice<Element> { storage[head...] }

    mutating func append(_ element: Element) { storage.append(element) }

    /// Puts `elements` back at the front, in their order.
    mutating func prepend(_ elements: some Collection<Element>) {
        storage = Array(elements) + storage[head...]
        head = 0
    }

    /// The oldest element, removed.
    mutating func popFirst() -> Element? {
        guard head < storage.count else { return nil }
        let element = storage[head]
        head += 1
        // The space before the head is reclaimed once it is most of the array.
        if head > 1024, head * 2 > storage.count {
            storage.removeFirst(head)
            head = 0
        }
        return element
    }

    /// Every waiting element, removed.
    mutating func removeAll() -> [Element] {
        defer {
            storage = []
            head = 0
        }
        return Array(storage[head...])
    }
}
