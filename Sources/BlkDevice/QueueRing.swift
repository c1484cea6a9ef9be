import Glibc
import Virtio
import VhostUser

/// The ring a `VirtqueueServer` serves: a split virtqueue (virtio 1.2 §2.7)
/// or a packed one (§2.8), chosen when the queue starts (VIRTIO_F_RING_PACKED,
/// feature bit 34, §6). An enum and not a protocol existential: the hot path
/// pays one switch per ring operation, and each case's calls inline.
///
/// The server counts used elements in a free-running 16-bit index for both
/// (statistics, polling depth, coalescing): the split ring's `used->idx`, or
/// for a packed ring (which has no such index) a count kept here.
package enum QueueRing {
    case split(SplitQueue)
    case packed(PackedRing)

    @inline(__always)
    var size: UInt16 {
        switch self {
        case .split(let q): return q.size
        case .packed(let p): return p.queue.size
        }
    }

    package var isPacked: Bool {
        if case .packed = self { return true }
        return false
    }

    /// Used elements added (published or not), free-running.
    @inline(__always)
    var usedIdx: UInt16 {
        switch self {
        case .split(let q): return q.usedIdx
        case .packed(let p): return p.usedCount
        }
    }

    /// Buffers popped, free-running (the split ring's last `avail->idx` read):
    /// less `usedIdx`, the depth the driver keeps.
    @inline(__always)
    var availIdxShadow: UInt16 {
        switch self {
        case .split(let q): return q.availIdxShadow
        case .packed(let p): return p.poppedCount
        }
    }

    /// The GET_VRING_BASE answer once nothing is in flight: the split ring's
    /// last avail index, or for a packed ring both positions in the 32-bit
    /// form of the vhost-user spec ("Vring descriptor indices for packed virtqueues").
    var base: UInt32 {
        switch self {
        case .split(let q): return UInt32(q.lastAvailIdx)
        case .packed(let p): return PackedRingBase.encode(avail: p.queue.nextAvail, used: p.queue.nextUsed)
        }
    }

    /// Pops the next available buffer, or nil when there is none. A split
    /// ring's head is its own buffer ID and takes one slot. Throws when the
    /// ring is broken (the caller stops the queue).
    @inline(__always)
    mutating func pop() throws(VirtioError) -> PackedChainHead? {
        switch self {
        case .split(var q):
            let pending = try q.pendingCount()
            guard pending > 0 else {
                self = .split(q)
                return nil
            }
            let head = try q.popHead()
            self = .split(q)
            return head.map { PackedChainHead(index: $0, id: $0, slotCount: 1) }
        case .packed(var p):
            let head = try p.queue.popAvail()
            if head != nil { p.poppedCount &+= 1 }
            self = .packed(p)
            return head
        }
    }

    /// Writes a used element for buffer `id`, which took `slotCount` ring slots.
    @inline(__always)
    mutating func addUsed(id: UInt16, length: UInt32, slotCount: UInt16) {
        switch self {
        case .split(var q):
            q.addUsed(id: id, length: length)
            self = .split(q)
        case .packed(var p):
            p.queue.addUsed(id: id, length: length, slotCount: slotCount)
            p.usedCount &+= 1
            self = .packed(p)
        }
    }

    /// A packed ring with inflight tracking: writes buffer `id`'s used
    /// element and makes it visible at once, journaled in `tracking` for
    /// the buffer recorded at `entry` (`PackedInflightQueue.publish`).
    mutating func addUsed(id: UInt16, length: UInt32, slotCount: UInt16, tracking: PackedInflightQueue, entry: UInt16) {
        switch self {
        case .split(var q):
            q.addUsed(id: id, length: length)
            self = .split(q)
        case .packed(var p):
            tracking.publish(entry: entry, id: id, length: length, slotCount: slotCount, queue: &p.queue)
            p.usedCount &+= 1
            self = .packed(p)
        }
    }

    /// Records the packed buffer `head`, just popped, in `tracking`; returns
    /// its head entry (`PackedInflightQueue.noEntry` on a split ring, or
    /// when it could not be recorded).
    func record(_ head: PackedChainHead, in tracking: PackedInflightQueue) -> UInt16 {
        guard case .packed(let p) = self else { return PackedInflightQueue.noEntry }
        return tracking.record(head, ring: p.queue) ?? PackedInflightQueue.noEntry
    }

    @inline(__always)
    mutating func publishUsed() {
        switch self {
        case .split(var q):
            q.publishUsed()
            self = .split(q)
        case .packed(var p):
            p.queue.publishUsed()
            self = .packed(p)
        }
    }

    /// Whether the driver wants a signal for what was published since
    /// `oldUsedIdx`, without consuming the answer: coalescing asks first and
    /// signals later. A packed ring's answer covers the span since its last
    /// `shouldNotify()` (§2.8.10), so it is kept until `takeNotify` sends it.
    mutating func wantsNotify(oldUsedIdx: UInt16) -> Bool {
        switch self {
        case .split(let q):
            return q.shouldNotify(oldUsedIdx: oldUsedIdx)
        case .packed(var p):
            if p.queue.shouldNotify() { p.notifyOwed = true }
            self = .packed(p)
            return p.notifyOwed
        }
    }

    /// Whether to signal now for what was published since `oldUsedIdx`; a
    /// packed ring's owed signal is consumed.
    @inline(__always)
    mutating func takeNotify(oldUsedIdx: UInt16) -> Bool {
        switch self {
        case .split(let q):
            return q.shouldNotify(oldUsedIdx: oldUsedIdx)
        case .packed(var p):
            let notify = p.queue.shouldNotify() || p.notifyOwed
            p.notifyOwed = false
            self = .packed(p)
            return notify
        }
    }

    mutating func enableNotifications() {
        switch self {
        case .split(var q):
            q.enableNotifications()
            self = .split(q)
        case .packed(var p):
            p.queue.enableNotifications()
            self = .packed(p)
        }
    }

    mutating func disableNotifications() {
        switch self {
        case .split(var q):
            q.disableNotifications()
            self = .split(q)
        case .packed(var p):
            p.queue.disableNotifications()
            self = .packed(p)
        }
    }

    func hasPendingAfterEnable() -> Bool {
        switch self {
        case .split(let q): return q.hasPendingAfterEnable()
        case .packed(let p): return p.queue.hasPendingAfterEnable()
        }
    }

    /// Walks the buffer `head` into `iovecs`.
    @inline(__always)
    func walk(_ head: PackedChainHead, memory: GuestMemory,
              into iovecs: UnsafeMutableBufferPointer<iovec>) throws(VirtioError) -> ChainBuffers {
        switch self {
        case .split(let q): return try DescriptorChainWalker.walk(queue: q, head: head.id, memory: memory, into: iovecs)
        case .packed(let p): return try PackedChainWalker.walk(queue: p.queue, head: head, memory: memory, into: iovecs)
        }
    }
}

/// A packed ring and what the server counts on it.
package struct PackedRing {
    package var queue: PackedQueue
    /// Buffers popped, free-running.
    var poppedCount: UInt16 = 0
    /// Used elements added, free-running.
    var usedCount: UInt16 = 0
    /// A signal `wantsNotify` found wanted and `takeNotify` has not sent.
    var notifyOwed = false

    /// `popped`: buffers already in flight when the ring starts (inflight
    /// recovery resubmits them), so the used count can catch up with them.
    package init(_ queue: PackedQueue, popped: Int = 0) {
        self.queue = queue
        poppedCount = UInt16(truncatingIfNeeded: popped)
    }
}
