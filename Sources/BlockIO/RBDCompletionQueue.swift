import Glibc
import Posix
import Synchronization

/// Where librbd's threads leave the completions of one virtqueue's RBD
/// operations for its reactor, without a lock: a lock-free stack
/// (Treiber's) of per-slot nodes that librbd threads push and the reactor
/// takes whole (`drain`), plus an eventfd the reactor reads through its
/// engine. Only a push onto an empty stack signals it, so a burst of
/// completions costs one wake-up.
///
/// Each request slot has one node, and a slot has at most one operation in
/// flight, so a node is never on the stack twice. The queue must outlive
/// every operation started on it (a virtqueue stops only once nothing is in flight).
///
/// `@unchecked Sendable`: nodes are written by one librbd thread, then
/// published by the releasing compare-exchange; the reactor reads them
/// after its acquiring exchange.
public final class RBDCompletionQueue: @unchecked Sendable {
    struct Node {
        var next: UInt = 0
        var result: Int32 = 0
        var slot: UInt32
        var queue: UnsafeMutableRawPointer?
    }

    /// Readable when completions wait for `drain`.
    public let event: EventFD
    private let head = Atomic<UInt>(0)
    private let nodes: UnsafeMutablePointer<Node>
    public let slotCount: Int
    /// The slot of the flush a stopping queue starts itself (no request's slot).
    public var stopFlushSlot: UInt32 { UInt32(truncatingIfNeeded: slotCount) }

    public init(slots: Int) throws(Errno) {
        event = try EventFD(nonBlocking: true)
        slotCount = max(1, slots)
        // One node more than slots: `stopFlushSlot`, the queue's own flush when it stops.
        nodes = .allocate(capacity: slotCount + 1)
        for i in 0...slotCount { (nodes + i).initialize(to: Node(slot: UInt32(truncatingIfNeeded: i))) }
        let me = Unmanaged.passUnretained(self).toOpaque()
        for i in 0...slotCount { nodes[i].queue = me }
    }

    deinit {
        nodes.deinitialize(count: slotCount + 1)
        nodes.deallocate()
        event.close()
    }

    /// The node of `slot`, or nil for a slot this queue does not have.
    func node(_ slot: UInt32) -> UnsafeMutablePointer<Node>? {
        Int(slot) <= slotCount ? nodes + Int(slot) : nil
    }

    /// librbd's completion callback: `argument` is a node of some queue.
    static func completed(_ argument: UnsafeMutableRawPointer, result: Int32) {
        let node = argument.assumingMemoryBound(to: Node.self)
        node.pointee.result = result
        guard let queue = node.pointee.queue else { return }
        Unmanaged<RBDCompletionQueue>.fromOpaque(queue)._withUnsafeGuaranteedRef { $0.push(node) }
    }

    private func push(_ node: UnsafeMutablePointer<Node>) {
        let address = UInt(bitPattern: node)
        var expected = head.load(ordering: .relaxed)
        while true {
            node.pointee.next = expected
            let (exchanged, current) = head.compareExchange(
                expected: expected, desired: address, successOrdering: .releasing, failureOrdering: .relaxed)
            if exchanged { break }
            expected = current
        }
        if expected == 0 { event.signal() }
    }

    /// Delivers every completion waiting, as `handler(slot, result)`
    /// (reactor thread; the handler may start the slot's next operation).
    /// Returns how many.
    @discardableResult
    public func drain(_ handler: (UInt32, Int32) -> Void) -> Int {
        var list = head.exchange(0, ordering: .acquiring)
        var delivered = 0
        while let node = UnsafeMutablePointer<Node>(bitPattern: list) {
            // Read all before the handler: it may start the slot's next operation.
            let (slot, result) = (node.pointee.slot, node.pointee.result)
            list = node.pointee.next
            delivered += 1
            handler(slot, result)
        }
        return delivered
    }
}
