import Glibc
import Virtio

/// One request in flight on a virtqueue: its head, its status byte, the
/// operation its backend performs, and what dirty logging marks at the end.
package struct RequestSlot {
    /// The buffer ID: a split ring's head, a packed ring's ID (virtio 1.2 §2.8.6).
    package var head: UInt16 = 0
    /// Ring slots the buffer took (a packed ring's used element moves past
    /// as many, §2.8.6; always 1 on a split ring).
    package var slotCount: UInt16 = 1
    /// A packed ring's head entry in the inflight region
    /// (`PackedInflightQueue.record`), or `PackedInflightQueue.noEntry`.
    package var inflightEntry: UInt16 = 0xFFFF
    package var status: UnsafeMutablePointer<UInt8>?
    /// The executor's operation in flight (`BlkExecutor.finish` takes it back).
    package var operation = BlkOperation(.read)
    /// `VirtqueueServer`'s backend generation when the request was popped.
    package var generation: UInt32 = 0
    /// The chain's device-writable iovecs (dirty logging): the slot's iovecs
    /// `writableFirst ..< writableFirst + writableCount`.
    package var writableFirst: UInt16 = 0
    package var writableCount: UInt16 = 0
    /// The request's data segments: the slot's iovecs `dataFirst ..< dataFirst + dataCount`.
    package var dataFirst: UInt16 = 0
    package var dataCount: UInt16 = 0
    /// Bytes of a large inline copy done so far (`LargeCopies`).
    package var progress: UInt64 = 0

    package init(head: UInt16 = 0, slotCount: UInt16 = 1, generation: UInt32 = 0) {
        self.head = head
        self.slotCount = slotCount
        self.generation = generation
    }
}

/// The request slots of one queue, a stack of the free ones, and each
/// slot's iovecs: raw memory the queue owns, so the hot path has no array
/// uniqueness or bounds checks (slot numbers come from the stack, never
/// from the guest).
///
/// A queue has at most `SessionLimits.maxRequestsPerQueue` slots, fewer
/// than its ring's entries when the ring is larger: slot numbers are not
/// heads, so a queue whose slots are all taken only stops popping until
/// one frees (flow control, `VirtqueueServer.processAvail`). The iovecs
/// (4 KiB a slot) are one anonymous mapping that the kernel backs as each
/// slot is first used, and the stack hands out the slot freed last first:
/// what a queue holds resident follows the depth it reached, not its slots.
///
/// Thread confinement: the queue's reactor.
package struct RequestSlots: ~Copyable {
    /// iovecs per request: a chain's segments after splits across memory
    /// regions (seg_max in the config space is this less 4, virtio 1.2 §5.2.4).
    package static let iovecsPerSlot = 260

    package let count: Int
    private let slots: UnsafeMutablePointer<RequestSlot>
    private let free: UnsafeMutablePointer<UInt32>
    package private(set) var freeCount: Int
    private let iovecs: UnsafeMutablePointer<iovec>
    /// Bytes of the iovecs' anonymous mapping; 0 when they were allocated instead.
    private let iovecsMapped: Int

    package init(count: Int) {
        self.count = count
        slots = .allocate(capacity: count)
        slots.initialize(repeating: RequestSlot(), count: count)
        free = .allocate(capacity: count)
        for i in 0..<count { free[i] = UInt32(count - 1 - i) }
        freeCount = count
        let bytes = count * Self.iovecsPerSlot * MemoryLayout<iovec>.stride
        if let raw = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0),
           raw != MAP_FAILED {
            // Backed page by page even where transparent huge pages are "always".
            _ = madvise(raw, bytes, MADV_NOHUGEPAGE)
            iovecs = raw.bindMemory(to: iovec.self, capacity: count * Self.iovecsPerSlot)
            iovecsMapped = bytes
        } else {
            iovecs = .allocate(capacity: count * Self.iovecsPerSlot)
            iovecsMapped = 0
        }
    }

    deinit {
        slots.deinitialize(count: count)
        slots.deallocate()
        free.deallocate()
        if iovecsMapped > 0 {
            munmap(iovecs, iovecsMapped)
        } else {
            iovecs.deallocate()
        }
    }

    /// Takes a free slot for `head`, or nil when every slot is in use.
    @inline(__always)
    package mutating func take(head: UInt16, slotCount: UInt16 = 1, generation: UInt32) -> UInt32? {
        guard freeCount > 0 else { return nil }
        freeCount -= 1
        let slot = free[freeCount]
        slots[Int(slot)] = RequestSlot(head: head, slotCount: slotCount, generation: generation)
        return slot
    }

    /// Returns `slot` to the free stack.
    @inline(__always)
    package mutating func release(_ slot: UInt32) {
        guard freeCount < count else { return }
        free[freeCount] = slot
        freeCount += 1
    }

    /// Whether `slot` names a request slot (and not, say, the kick read's tag).
    @inline(__always)
    package func isSlot(_ slot: UInt32) -> Bool { Int(slot) < count }

    @inline(__always)
    package subscript(slot: UInt32) -> RequestSlot {
        get { slots[Int(slot)] }
        nonmutating set { slots[Int(slot)] = newValue }
    }

    /// The iovecs of `slot`.
    @inline(__always)
    package func iovecs(of slot: UInt32) -> UnsafeMutableBufferPointer<iovec> {
        UnsafeMutableBufferPointer(start: iovecs + Int(slot) * Self.iovecsPerSlot, count: Self.iovecsPerSlot)
    }

    /// The `index`th iovec of `slot`.
    @inline(__always)
    package func iovecPointer(_ index: Int, of slot: UInt32) -> UnsafeMutablePointer<iovec> {
        iovecs + (Int(slot) * Self.iovecsPerSlot + index)
    }
}
