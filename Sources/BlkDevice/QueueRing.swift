import Glibc
import Virtio
import VhostUser

/// The ring a `VirtqueueServer` serves: a split virtqueue (virtio 1.2 §2.7)
/// or a packed one (§2.8), chosen when the queue starts (VIRTIO_F_RING_PACKED,
/// feature bit 34, §6). Two optional stored properties, exactly one set,
/// rather than an enum: an enum's payload is copied out and back for every
/// mutating operation, which cost the split path about 85 instructions per
/// request (docs/PERFORMANCE.md, "Instruction counts"); optional chaining
/// on a stored property mutates in place. Not a protocol existential either:
/// each call inlines.
///
/// The server counts used elements in a free-running 16-bit index for both
/// (statistics, polling depth, coalescing): the split ring's `used->idx`, or
/// for a packed ring (which has no such index) a count kept here.
package struct QueueRing {
    /// The split ring, or nil for a packed one.
    package private(set) var split: SplitQueue?
    /// The packed ring, or nil for a split one.
    package private(set) var packed: PackedRing?

    package static func split(_ queue: SplitQueue) -> QueueRing { QueueRing(split: queue, packed: nil) }
    package static func packed(_ ring: PackedRing) -> QueueRing { QueueRing(split: nil, packed: ring) }

    @inline(__always)
    var size: UInt16 { split?.size ?? packed?.queue.size ?? 0 }

    package var isPacked: Bool { packed != nil }

    /// Used elements added (published or not), free-running.
    @inline(__always)
    var usedIdx: UInt16 { split?.usedIdx ?? packed?.usedCount ?? 0 }

    /// Buffers popped, free-running (the split ring's last `avail->idx` read):
    /// less `usedIdx`, the depth the driver keeps.
    @inline(__always)
    var availIdxShadow: UInt16 { split?.availIdxShadow ?? packed?.poppedCount ?? 0 }

    /// The GET_VRING_BASE answer once nothing is in flight: the split ring's
    /// last avail index, or for a packed ring both positions in the 32-bit
    /// form of the vhost-user spec ("Vring descriptor indices for packed virtqueues").
    var base: UInt32 {
        if let q = split { return UInt32(q.lastAvailIdx) }
        guard let p = packed else { return 0 }
        return PackedRingBase.encode(avail: p.queue.nextAvail, used: p.queue.nextUsed)
    }

    /// Pops the next available buffer, or nil when there is none. A split
    /// ring's head is its own buffer ID and takes one slot. Throws when the
    /// ring is broken (the caller stops the queue).
    @inline(__always)
    mutating func pop() throws(VirtioError) -> PackedChainHead? {
        if split != nil {
            guard let pending = try split?.pendingCount(), pending > 0 else { return nil }
            return try split?.popHead().map { PackedChainHead(index: $0, id: $0, slotCount: 1) }
        }
        guard let head = try packed?.queue.popAvail() else { return nil }
        packed?.poppedCount &+= 1
        return head
    }

    /// Writes a used element for buffer `id`, which took `slotCount` ring slots.
    @inline(__always)
    mutating func addUsed(id: UInt16, length: UInt32, slotCount: UInt16) {
        if split != nil {
            split?.addUsed(id: id, length: length)
        } else {
            packed?.queue.addUsed(id: id, length: length, slotCount: slotCount)
            packed?.usedCount &+= 1
        }
    }

    /// A packed ring with inflight tracking: writes buffer `id`'s used
    /// element and makes it visible at once, journaled in `tracking` for
    /// the buffer recorded at `entry` (`PackedInflightQueue.publish`).
    mutating func addUsed(id: UInt16, length: UInt32, slotCount: UInt16, tracking: PackedInflightQueue, entry: UInt16) {
        if split != nil {
            split?.addUsed(id: id, length: length)
        } else if packed != nil {
            packed?.publish(id: id, length: length, slotCount: slotCount, tracking: tracking, entry: entry)
        }
    }

    /// Records the packed buffer `head`, just popped, in `tracking`; returns
    /// its head entry (`PackedInflightQueue.noEntry` on a split ring, or
    /// when it could not be recorded).
    func record(_ head: PackedChainHead, in tracking: PackedInflightQueue) -> UInt16 {
        guard let p = packed else { return PackedInflightQueue.noEntry }
        return tracking.record(head, ring: p.queue) ?? PackedInflightQueue.noEntry
    }

    @inline(__always)
    mutating func publishUsed() {
        if split != nil { split?.publishUsed() } else { packed?.queue.publishUsed() }
    }

    /// Whether the driver wants a signal for what was published since
    /// `oldUsedIdx`, without consuming the answer: coalescing asks first and
    /// signals later. A packed ring's answer covers the span since its last
    /// `shouldNotify()` (§2.8.10), so it is kept until `takeNotify` sends it.
    mutating func wantsNotify(oldUsedIdx: UInt16) -> Bool {
        if let q = split { return q.shouldNotify(oldUsedIdx: oldUsedIdx) }
        if packed?.queue.shouldNotify() == true { packed?.notifyOwed = true }
        return packed?.notifyOwed ?? false
    }

    /// Whether to signal now for what was published since `oldUsedIdx`; a
    /// packed ring's owed signal is consumed.
    @inline(__always)
    mutating func takeNotify(oldUsedIdx: UInt16) -> Bool {
        if let q = split { return q.shouldNotify(oldUsedIdx: oldUsedIdx) }
        let notify = packed?.queue.shouldNotify() == true || packed?.notifyOwed == true
        packed?.notifyOwed = false
        return notify
    }

    mutating func enableNotifications() {
        if split != nil { split?.enableNotifications() } else { packed?.queue.enableNotifications() }
    }

    mutating func disableNotifications() {
        if split != nil { split?.disableNotifications() } else { packed?.queue.disableNotifications() }
    }

    func hasPendingAfterEnable() -> Bool {
        split?.hasPendingAfterEnable() ?? packed?.queue.hasPendingAfterEnable() ?? false
    }

    /// Walks the buffer `head` into `iovecs`.
    @inline(__always)
    func walk(_ head: PackedChainHead, memory: GuestMemory,
              into iovecs: UnsafeMutableBufferPointer<iovec>) throws(VirtioError) -> ChainBuffers {
        if let q = split { return try DescriptorChainWalker.walk(queue: q, head: head.id, memory: memory, into: iovecs) }
        guard let p = packed else { throw .ringIndexOutOfRange(head.index) }
        return try PackedChainWalker.walk(queue: p.queue, head: head, memory: memory, into: iovecs)
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

    /// `PackedInflightQueue.publish`, counted.
    mutating func publish(id: UInt16, length: UInt32, slotCount: UInt16, tracking: PackedInflightQueue, entry: UInt16) {
        tracking.publish(entry: entry, id: id, length: length, slotCount: slotCount, queue: &queue)
        usedCount &+= 1
    }
}
