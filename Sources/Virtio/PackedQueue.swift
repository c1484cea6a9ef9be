import Synchronization

/// Where one available buffer lies in a packed ring: what the device needs to
/// walk it (`PackedChainWalker`) and to complete it (`PackedQueue.addUsed`).
public struct PackedChainHead: Sendable, Equatable {
    /// Ring slot of the chain's first descriptor.
    public var index: UInt16
    /// Buffer ID, from the chain's last descriptor (virtio 1.2 §2.8.6).
    public var id: UInt16
    /// Ring slots the chain takes: 1 for an indirect buffer (§2.8.7).
    public var slotCount: UInt16

    public init(index: UInt16, id: UInt16, slotCount: UInt16) {
        self.index = index
        self.id = id
        self.slotCount = slotCount
    }
}

/// A view over one packed virtqueue in guest memory, device side (virtio 1.2 §2.8).
///
/// Layout: a descriptor ring of `size` 16-byte `PackedDescriptor`s; the driver
/// event suppression area (written by the driver) and the device event
/// suppression area (written by the device), each `le16 off_wrap, le16 flags`
/// (§2.8.10). A slot's `flags` hands it over: the device reads a head's flags
/// with acquire ordering and the rest of its chain with plain loads, and
/// publishes a used element with a release store of its flags.
///
/// The device keeps two positions (§2.8.1): the next slot to look at for
/// available buffers and the next slot to write a used element to. Used
/// elements go in completion order, each advancing by the slot count of the
/// buffer it completes (§2.8.6, §2.8.12), so buffers may complete out of order.
///
/// `@unchecked Sendable`: the pointers point into guest memory kept mapped by
/// the session; a queue is driven by exactly one thread (its reactor) at a time.
public struct PackedQueue: @unchecked Sendable {
    /// Largest packed-ring size (§2.8); any size in `1...maxSize` is allowed.
    public static let maxSize: UInt16 = 32768

    public let size: UInt16
    /// Whether VIRTIO_F_RING_EVENT_IDX was negotiated (enables RING_EVENT_FLAGS_DESC).
    public let eventIdx: Bool
    /// Host address of the descriptor ring (`16 * size` bytes).
    public let descRing: UnsafeMutableRawPointer
    private let driverEvent: UnsafeMutableRawPointer
    private let deviceEvent: UnsafeMutableRawPointer

    /// Next slot to check for an available buffer, with the device's avail wrap counter.
    public private(set) var nextAvail: PackedRingPosition
    /// Next slot to write a used element to, with the device's used wrap counter
    /// (including elements added but not yet published).
    public private(set) var nextUsed: PackedRingPosition

    /// Slots popped and not yet completed: at most `size` (QEMU's `inuse` check).
    public private(set) var slotsInFlight: Int

    /// The first element of the unpublished batch: its slot and the flags to store.
    private var batchHead: (index: UInt16, flags: UInt16)?
    /// Slots added since the last `publishUsed()`.
    private var unpublished = 0
    /// Slots published since the last `shouldNotify()`.
    private var unsignalled = 0

    /// Bytes each part needs: the descriptor ring and each event suppression area.
    public static func layoutSizes(size: UInt16) -> (desc: Int, driverEvent: Int, deviceEvent: Int) {
        (PackedDescriptor.byteSize * Int(size), PackedEventSuppression.byteSize, PackedEventSuppression.byteSize)
    }

    /// Creates the view at the given positions (SET_VRING_BASE; a fresh ring
    /// starts both at `.start`). `used` defaults to `avail`: no buffer in flight.
    ///
    /// The caller has translated the three addresses with `GuestMemory` for at
    /// least `layoutSizes(size:)` bytes each. Throws for a size outside
    /// `1...32768`, areas not aligned as §2.8.10 requires (16, 4, 4), a
    /// position whose index is not below `size`, or `used` more than a ring
    /// behind `avail` or ahead of it (`ringOverrun`). The slots between them
    /// count as in flight.
    public init(
        size: UInt16, desc: UnsafeMutableRawPointer, driverEvent: UnsafeMutableRawPointer,
        deviceEvent: UnsafeMutableRawPointer, eventIdx: Bool,
        avail: PackedRingPosition = .start, used: PackedRingPosition? = nil
    ) throws(VirtioError) {
        guard size > 0, size <= Self.maxSize else { throw .badQueueSize(size) }
        guard UInt(bitPattern: desc) % 16 == 0, UInt(bitPattern: driverEvent) % 4 == 0,
              UInt(bitPattern: deviceEvent) % 4 == 0
        else { throw .misalignedRing }
        let used = used ?? avail
        guard avail.index < size else { throw .ringIndexOutOfRange(avail.index) }
        guard used.index < size else { throw .ringIndexOutOfRange(used.index) }
        let apart = Int(avail.index) - Int(used.index) + (avail.wrap == used.wrap ? 0 : Int(size))
        guard apart >= 0, apart <= Int(size) else { throw .ringOverrun(inFlight: apart, size: size) }
        self.slotsInFlight = apart
        self.size = size
        self.descRing = desc
        self.driverEvent = driverEvent
        self.deviceEvent = deviceEvent
        self.eventIdx = eventIdx
        self.nextAvail = avail
        self.nextUsed = used
    }

    // MARK: Available buffers

    /// Whether the slot at `nextAvail` holds an available buffer (acquire).
    public func hasAvailable() -> Bool {
        PackedDescriptor.isAvailable(flags: acquireFlags(at: nextAvail.index), wrap: nextAvail.wrap)
    }

    /// Takes the next available buffer, or nil when the slot at `nextAvail` is
    /// not available (§2.8.1), and moves `nextAvail` past its slots.
    ///
    /// Follows NEXT across consecutive slots, wrapping at the ring's end
    /// (§2.8.6); the buffer ID is the last descriptor's. Only the head's
    /// AVAIL/USED bits are checked: the driver makes the head available after
    /// the rest (§2.8.6), and QEMU reads the rest the same way. A chain
    /// longer than the ring (NEXT on every slot) throws `chainTooLong` and
    /// leaves the queue as it was: nothing can complete it, so treat the queue
    /// as broken. So does a buffer that would put more than `size` slots in
    /// flight (`ringOverrun`): a driver that reuses slots the device still
    /// holds. Addresses and lengths are checked by `PackedChainWalker`.
    public mutating func popAvail() throws(VirtioError) -> PackedChainHead? {
        let head = nextAvail.index
        var flags = acquireFlags(at: head)
        guard PackedDescriptor.isAvailable(flags: flags, wrap: nextAvail.wrap) else { return nil }
        var index = head
        var count: UInt16 = 1
        while flags & PackedDescriptor.flagNext != 0 {
            guard count < size else { throw .chainTooLong }
            index = index &+ 1 == size ? 0 : index &+ 1
            count &+= 1
            flags = UInt16(littleEndian: descRing.loadUnaligned(
                fromByteOffset: slotOffset(index) + PackedDescriptor.flagsOffset, as: UInt16.self))
        }
        guard slotsInFlight + Int(count) <= Int(size) else {
            throw .ringOverrun(inFlight: slotsInFlight + Int(count), size: size)
        }
        let id = UInt16(littleEndian: descRing.loadUnaligned(fromByteOffset: slotOffset(index) + 12, as: UInt16.self))
        nextAvail.advance(by: count, size: size)
        slotsInFlight += Int(count)
        return PackedChainHead(index: head, id: id, slotCount: count)
    }

    /// Reads the descriptor in ring slot `index` (masked into the ring, never out of bounds).
    public func descriptor(at index: UInt16) -> PackedDescriptor {
        PackedDescriptor(loadingFrom: descRing + slotOffset(index))
    }

    // MARK: Used buffers

    /// Writes a used element for buffer `id` at `nextUsed` and moves it on by
    /// `slotCount` (the buffer's `PackedChainHead.slotCount`; 0 counts as 1).
    ///
    /// The device writes `id` and `len` into the slot, then its flags with
    /// AVAIL and USED equal to the used wrap counter (§2.8.1, §2.8.6). The
    /// first element of a batch stays invisible until `publishUsed()` stores
    /// its flags, so the driver sees the batch at once (as §2.8.9 does for
    /// multi-buffer requests); later ones are stored
    /// at once (release), which the driver cannot see past the first.
    public mutating func addUsed(id: UInt16, length: UInt32, slotCount: UInt16) {
        let at = writeUsedElement(id: id, length: length, slotCount: slotCount)
        if batchHead == nil {
            batchHead = (at.index, PackedDescriptor.usedFlags(wrap: at.wrap))
        } else {
            storeUsedFlags(at: at)
        }
    }

    /// Writes buffer `id`'s used element at `nextUsed` without its flags,
    /// moves `nextUsed` on as `addUsed` does, and returns where the element
    /// went: the driver sees it only after `storeUsedFlags(at:)`. For a
    /// device that journals each element before making it visible (packed
    /// inflight tracking); `publishUsed()` then only counts them.
    @inline(__always)
    public mutating func writeUsedElement(id: UInt16, length: UInt32, slotCount: UInt16) -> PackedRingPosition {
        let at = nextUsed
        let offset = slotOffset(at.index)
        descRing.storeBytes(of: length.littleEndian, toByteOffset: offset + 8, as: UInt32.self)
        descRing.storeBytes(of: id.littleEndian, toByteOffset: offset + 12, as: UInt16.self)
        let slots = max(1, min(slotCount, size))
        nextUsed.advance(by: slots, size: size)
        unpublished += Int(slots)
        slotsInFlight = max(0, slotsInFlight - Int(slots))
        return at
    }

    /// Makes the element `writeUsedElement` put at `position` visible: a
    /// release store of its flags, AVAIL and USED equal to the position's
    /// wrap counter (§2.8.1).
    @inline(__always)
    public func storeUsedFlags(at position: PackedRingPosition) {
        Self.atomic16(descRing, slotOffset(position.index) + PackedDescriptor.flagsOffset).pointee
            .store(PackedDescriptor.usedFlags(wrap: position.wrap).littleEndian, ordering: .releasing)
    }

    /// Crash recovery: finishes a used element whose id and length were
    /// written at `position` but whose flags may not have been. The slot
    /// still shows the driver's available flags for that lap (AVAIL equal
    /// to the wrap counter, USED not) exactly when they were not: once the
    /// flags are stored the driver owns the slot, and it can make it
    /// available again only in the next lap (AVAIL not equal to the
    /// counter). Returns whether it stored them.
    @discardableResult
    public func finishUsedElement(at position: PackedRingPosition) -> Bool {
        guard position.index < size,
              PackedDescriptor.isAvailable(flags: acquireFlags(at: position.index), wrap: position.wrap) else { return false }
        storeUsedFlags(at: position)
        return true
    }

    /// Release barrier, then stores the flags of the batch's first element;
    /// the slots added since the last call now count towards `shouldNotify()`.
    public mutating func publishUsed() {
        if let head = batchHead {
            atomicMemoryFence(ordering: .releasing)
            Self.atomic16(descRing, slotOffset(head.index) + PackedDescriptor.flagsOffset).pointee
                .store(head.flags.littleEndian, ordering: .releasing)
            batchHead = nil
        }
        unsignalled += unpublished
        unpublished = 0
    }

    /// The buffer ID of the used element in ring slot `index` (masked into the ring).
    public func usedElementID(slot index: UInt16) -> UInt16 {
        UInt16(littleEndian: descRing.loadUnaligned(fromByteOffset: slotOffset(index) + 12, as: UInt16.self))
    }

    // MARK: Used-buffer notifications (interrupts)

    /// Whether to signal the driver for the elements published since the last
    /// call (§2.8.10, §2.8.14); each call starts a new span.
    ///
    /// Full barrier first, then the driver event suppression area (the 2-bit
    /// flags field; the reserved bits above are ignored): DISABLE
    /// never signals; DESC with RING_EVENT_IDX signals when the published slots
    /// cover off_wrap (`PackedEventSuppression.needsEvent`); ENABLE, and any
    /// other value (DESC without RING_EVENT_IDX, reserved 3), always signals:
    /// a spurious interrupt is harmless, a missing one hangs the guest.
    public mutating func shouldNotify() -> Bool {
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        let published = unsignalled
        unsignalled = 0
        guard published > 0 else { return false }
        let flags = UInt16(littleEndian: Self.atomic16(driverEvent, PackedEventSuppression.flagsOffset)
            .pointee.load(ordering: .acquiring)) & PackedEventSuppression.flagsMask
        switch flags {
        case PackedEventSuppression.flagDisable:
            return false
        case PackedEventSuppression.flagDesc where eventIdx:
            let offWrap = UInt16(littleEndian: Self.atomic16(driverEvent, PackedEventSuppression.offWrapOffset)
                .pointee.load(ordering: .relaxed))
            return PackedEventSuppression.needsEvent(
                offWrap: offWrap, size: size, new: nextUsed.index, wrap: nextUsed.wrap, published: published)
        default:
            return true
        }
    }

    // MARK: Available-buffer notifications (kicks)

    /// Asks the driver to kick: with RING_EVENT_IDX, off_wrap = `nextAvail`
    /// then flags = DESC (the driver kicks once it makes that slot available);
    /// otherwise flags = ENABLE (§2.8.10, §2.8.14). Follow with `hasPendingAfterEnable()`.
    public mutating func enableNotifications() {
        if eventIdx {
            Self.atomic16(deviceEvent, PackedEventSuppression.offWrapOffset).pointee
                .store(nextAvail.encoded.littleEndian, ordering: .relaxed)
            setDeviceFlags(PackedEventSuppression.flagDesc)
        } else {
            setDeviceFlags(PackedEventSuppression.flagEnable)
        }
    }

    /// Tells the driver kicks are not needed: flags = DISABLE (with or without
    /// RING_EVENT_IDX, as QEMU does for packed rings).
    public mutating func disableNotifications() {
        setDeviceFlags(PackedEventSuppression.flagDisable)
    }

    /// After `enableNotifications()`: full barrier, then whether the slot at
    /// `nextAvail` became available meanwhile (work that will bring no kick).
    public func hasPendingAfterEnable() -> Bool {
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        return hasAvailable()
    }

    // MARK: Helpers

    /// Release store: a DESC request must not be seen before its off_wrap.
    private func setDeviceFlags(_ value: UInt16) {
        Self.atomic16(deviceEvent, PackedEventSuppression.flagsOffset).pointee
            .store(value.littleEndian, ordering: .releasing)
    }

    /// Byte offset of ring slot `index`, masked into the ring by remainder.
    @inline(__always)
    private func slotOffset(_ index: UInt16) -> Int {
        PackedDescriptor.byteSize * (Int(index) % Int(size))
    }

    @inline(__always)
    private func acquireFlags(at index: UInt16) -> UInt16 {
        UInt16(littleEndian: Self.atomic16(descRing, slotOffset(index) + PackedDescriptor.flagsOffset)
            .pointee.load(ordering: .acquiring))
    }

    /// A 16-bit shared field; alignment was checked in `init`.
    @inline(__always)
    private static func atomic16(_ base: UnsafeMutableRawPointer, _ offset: Int) -> UnsafeMutablePointer<Atomic<UInt16>> {
        (base + offset).assumingMemoryBound(to: Atomic<UInt16>.self)
    }
}
