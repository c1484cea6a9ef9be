import Synchronization

/// A view over one split virtqueue in guest memory (virtio 1.2 §2.7).
///
/// Layout: descriptor table `16*n`; avail ring `flags, idx, ring[n], used_event`;
/// used ring `flags, idx, ring[n] of {id, len}, avail_event`; all little-endian.
/// Shared fields (`avail->idx`, `used->idx`, flags and event indices) are
/// accessed atomically, so the compiler can neither cache nor tear them;
/// ring entries and descriptors are plain loads ordered by the acquire on
/// `avail->idx`.
///
/// `@unchecked Sendable`: the pointers point into guest memory kept mapped by
/// the session; a queue is driven by exactly one thread (its reactor) at a time.
public struct SplitQueue: @unchecked Sendable {
    /// Largest split-ring size (virtio 1.2 §2.7).
    public static let maxSize: UInt16 = 32768
    /// VIRTQ_AVAIL_F_NO_INTERRUPT.
    public static let availFlagNoInterrupt: UInt16 = 1
    /// VIRTQ_USED_F_NO_NOTIFY.
    public static let usedFlagNoNotify: UInt16 = 1

    public let size: UInt16
    /// Whether VIRTIO_F_EVENT_IDX was negotiated.
    public let eventIdx: Bool
    /// Host address of the descriptor table (`16 * size` bytes).
    public let descTable: UnsafeMutableRawPointer
    private let avail: UnsafeMutableRawPointer
    private let used: UnsafeMutableRawPointer

    /// Next avail-ring slot to consume (free-running, wraps at 2^16).
    public private(set) var lastAvailIdx: UInt16
    /// Shadow of the `used->idx` this device has written (including unpublished entries).
    public private(set) var usedIdx: UInt16
    /// `avail->idx` as last read by `pendingCount()`.
    public private(set) var availIdxShadow: UInt16

    /// Bytes each ring part needs, event fields included.
    public static func layoutSizes(size: UInt16) -> (desc: Int, avail: Int, used: Int) {
        let n = Int(size)
        return (16 * n, 6 + 2 * n, 6 + 8 * n)
    }

    /// Creates the view. `lastAvailIdx` is the value from SET_VRING_BASE;
    /// `usedIdx` starts from the ring's current `used->idx`.
    ///
    /// The caller has translated the three addresses with `GuestMemory` for at
    /// least `layoutSizes(size:)` bytes each. Throws for a size that is not a
    /// power of two in `1...32768`, or rings not aligned as §2.7 requires.
    public init(
        size: UInt16, desc: UnsafeMutableRawPointer, avail: UnsafeMutableRawPointer,
        used: UnsafeMutableRawPointer, eventIdx: Bool, lastAvailIdx: UInt16 = 0
    ) throws(VirtioError) {
        guard size > 0, size <= Self.maxSize, size & (size &- 1) == 0 else { throw .badQueueSize(size) }
        guard UInt(bitPattern: desc) % 16 == 0, UInt(bitPattern: avail) % 2 == 0,
              UInt(bitPattern: used) % 4 == 0
        else { throw .misalignedRing }
        self.size = size
        self.descTable = desc
        self.avail = avail
        self.used = used
        self.eventIdx = eventIdx
        self.lastAvailIdx = lastAvailIdx
        self.availIdxShadow = lastAvailIdx
        self.usedIdx = UInt16(littleEndian: Self.atomic16(used, 2).pointee.load(ordering: .relaxed))
    }

    // MARK: Avail side

    /// Number of new heads available. Reads `avail->idx` with acquire ordering.
    /// Throws `availIndexOutOfRange` if it is more than `size` ahead.
    public mutating func pendingCount() throws(VirtioError) -> UInt16 {
        let idx = UInt16(littleEndian: Self.atomic16(avail, 2).pointee.load(ordering: .acquiring))
        let pending = idx &- lastAvailIdx
        guard pending <= size else { throw .availIndexOutOfRange(availIdx: idx, lastAvailIdx: lastAvailIdx) }
        availIdxShadow = idx
        return pending
    }

    /// Pops the next head index, or nil when the last `pendingCount()` saw no more.
    ///
    /// An out-of-range head is consumed (`lastAvailIdx` advances) and thrown as
    /// `headOutOfRange`: it cannot be completed, so treat the queue as broken.
    public mutating func popHead() throws(VirtioError) -> UInt16? {
        guard lastAvailIdx != availIdxShadow else { return nil }
        let slot = Int(lastAvailIdx & (size &- 1))
        let head = UInt16(littleEndian: avail.loadUnaligned(fromByteOffset: 4 + 2 * slot, as: UInt16.self))
        lastAvailIdx &+= 1
        guard head < size else { throw .headOutOfRange(head) }
        return head
    }

    /// Reads descriptor `index` of the main table; `index < size` is the caller's duty
    /// (it is masked, so an out-of-range index reads a wrong slot, never out of bounds).
    public func descriptor(at index: UInt16) -> Descriptor {
        Descriptor(loadingFrom: descTable + Descriptor.byteSize * Int(index & (size &- 1)))
    }

    // MARK: Used side

    /// Writes a used element at `usedIdx` and advances it; not visible until `publishUsed()`.
    public mutating func addUsed(id: UInt16, length: UInt32) {
        let slot = Int(usedIdx & (size &- 1))
        let offset = 4 + 8 * slot
        used.storeBytes(of: UInt32(id).littleEndian, toByteOffset: offset, as: UInt32.self)
        used.storeBytes(of: length.littleEndian, toByteOffset: offset + 4, as: UInt32.self)
        usedIdx &+= 1
    }

    /// The id of the used element in ring slot `slot` (masked to the ring):
    /// what inflight recovery reads to finish a half-recorded batch.
    public func usedElementID(slot: UInt16) -> UInt32 {
        let offset = 4 + 8 * Int(slot & (size &- 1))
        return UInt32(littleEndian: used.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }

    /// Release barrier, then stores `used->idx = usedIdx`.
    public mutating func publishUsed() {
        atomicMemoryFence(ordering: .releasing)
        Self.atomic16(used, 2).pointee.store(usedIdx.littleEndian, ordering: .releasing)
    }

    /// Whether to signal the driver after publishing, given `usedIdx` at the previous signal.
    ///
    /// Full barrier first. EVENT_IDX: `(u16)(new - used_event - 1) < (u16)(new - old)`
    /// (virtio 1.2 §2.7.10); otherwise signal unless `avail->flags` has NO_INTERRUPT.
    /// Returns false when nothing was published since `oldUsedIdx`.
    public func shouldNotify(oldUsedIdx: UInt16) -> Bool {
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        let new = usedIdx
        guard new != oldUsedIdx else { return false }
        if eventIdx {
            let usedEvent = UInt16(
                littleEndian: Self.atomic16(avail, 4 + 2 * Int(size)).pointee.load(ordering: .relaxed))
            return Self.needsEvent(eventIdx: usedEvent, new: new, old: oldUsedIdx)
        }
        let flags = UInt16(littleEndian: Self.atomic16(avail, 0).pointee.load(ordering: .relaxed))
        return flags & Self.availFlagNoInterrupt == 0
    }

    /// `vring_need_event`: whether moving an index from `old` to `new` crosses `eventIdx`.
    @inline(__always)
    public static func needsEvent(eventIdx: UInt16, new: UInt16, old: UInt16) -> Bool {
        (new &- eventIdx &- 1) < (new &- old)
    }

    // MARK: Driver notifications (kicks)

    /// Asks the driver to kick: EVENT_IDX writes `avail_event = lastAvailIdx`;
    /// otherwise clears `used->flags` NO_NOTIFY. Follow with `hasPendingAfterEnable()`.
    public mutating func enableNotifications() {
        if eventIdx {
            Self.atomic16(used, 4 + 8 * Int(size)).pointee.store(lastAvailIdx.littleEndian, ordering: .relaxed)
        } else {
            setUsedFlags(noNotify: false)
        }
    }

    /// Tells the driver kicks are not needed (no-op with EVENT_IDX, as in QEMU).
    public mutating func disableNotifications() {
        if !eventIdx { setUsedFlags(noNotify: true) }
    }

    /// After `enableNotifications()`: full barrier, then whether `avail->idx`
    /// moved past `lastAvailIdx` meanwhile (work that will bring no kick).
    public func hasPendingAfterEnable() -> Bool {
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        let idx = UInt16(littleEndian: Self.atomic16(avail, 2).pointee.load(ordering: .relaxed))
        return idx != lastAvailIdx
    }

    private func setUsedFlags(noNotify: Bool) {
        let flags = Self.atomic16(used, 0)
        var value = UInt16(littleEndian: flags.pointee.load(ordering: .relaxed))
        if noNotify { value |= Self.usedFlagNoNotify } else { value &= ~Self.usedFlagNoNotify }
        flags.pointee.store(value.littleEndian, ordering: .relaxed)
    }

    /// A 16-bit shared field; alignment was checked in `init`.
    @inline(__always)
    private static func atomic16(_ base: UnsafeMutableRawPointer, _ offset: Int) -> UnsafeMutablePointer<Atomic<UInt16>> {
        (base + offset).assumingMemoryBound(to: Atomic<UInt16>.self)
    }
}
