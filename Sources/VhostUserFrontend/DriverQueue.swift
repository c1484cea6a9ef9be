import CShims
import Glibc
import Posix
import Synchronization
import Virtio

/// One buffer of a descriptor chain as the driver describes it.
public struct ChainBuffer: Sendable, Equatable {
    public var gpa: UInt64
    public var length: UInt32
    /// Device-writable (VIRTQ_DESC_F_WRITE).
    public var writable: Bool

    public init(gpa: UInt64, length: UInt32, writable: Bool) {
        self.gpa = gpa
        self.length = length
        self.writable = writable
    }

    public init(_ buffer: GuestBuffer, writable: Bool) {
        self.init(gpa: buffer.gpa, length: UInt32(truncatingIfNeeded: buffer.length), writable: writable)
    }
}

/// A used-ring element (virtio 1.2 §2.7.8).
public struct UsedElement: Sendable, Equatable {
    public var id: UInt32
    public var length: UInt32

    public init(id: UInt32, length: UInt32) {
        self.id = id
        self.length = length
    }
}

/// The driver side of one split virtqueue (virtio 1.2 §2.7), living in
/// `FrontendMemory`: writes descriptors and avail entries, publishes
/// `avail->idx`, kicks, and collects used entries. EVENT_IDX: writes
/// `used_event` after each collected entry and honours `avail_event` when
/// kicking (unless forced).
///
/// With `packed` it drives a packed virtqueue instead (virtio 1.2 §2.8,
/// §2.8.21-§2.8.23): `desc` is the descriptor ring, `avail` the driver event
/// suppression area, `used` the device's; buffer IDs are handed out from a
/// free list, the chains added since the last publish become available when
/// `publish()` stores their heads' flags, in ring order. The used side always
/// asks for every interrupt (driver flags ENABLE) unless `setNoInterrupt`.
///
/// Not thread-safe: drive each queue from one thread at a time.
public final class DriverQueue: @unchecked Sendable {  // confined to one thread at a time (see above)
    public let index: Int
    public let size: UInt16
    public let eventIdx: Bool
    /// A packed ring (VIRTIO_F_RING_PACKED) rather than a split one.
    public let packed: Bool
    public let desc: GuestBuffer
    public let avail: GuestBuffer
    public let used: GuestBuffer
    /// The driver → device notifier (SET_VRING_KICK).
    public let kickFD: EventFD
    private var closed = false
    /// The device → driver notifier (SET_VRING_CALL).
    public let callFD: EventFD

    private var freeDescriptors: [UInt16]
    /// Descriptors and buffers owned by each in-flight head, returned when its used entry arrives.
    private var inFlight: [UInt16: (descriptors: [UInt16], buffers: [GuestBuffer])] = [:]
    /// Shadow of `avail->idx` including entries not yet published.
    public private(set) var availIdx: UInt16 = 0
    /// `avail->idx` as last published.
    public private(set) var publishedAvailIdx: UInt16 = 0
    /// Next used-ring slot to read.
    public private(set) var lastUsedIdx: UInt16 = 0
    private let memory: FrontendMemory

    // Packed ring state (§2.8.1).
    /// Next slot to fill and the driver's avail wrap counter.
    public private(set) var packedAvail = PackedRingPosition.start
    /// Next slot to read a used element from and the driver's used wrap counter.
    public private(set) var packedUsed = PackedRingPosition.start
    /// Ring slots not taken by a chain in flight.
    private var freeSlots = 0
    private var freeIDs: [UInt16] = []
    /// Slots each buffer ID in flight took.
    private var slotsOfID: [UInt16: UInt16] = [:]
    /// Heads written but not yet made available: slot and flags, in ring order.
    private var unpublishedHeads: [(slot: UInt16, flags: UInt16)] = []

    /// Allocates the rings (desc 16-, avail 2-, used 4-byte aligned; we use
    /// 4096 to keep each in one page-aligned block) and two eventfds.
    public init(memory: FrontendMemory, index: Int, size: UInt16, eventIdx: Bool, packed: Bool = false) throws(FrontendError) {
        if packed {
            guard size > 0, size <= PackedQueue.maxSize else { throw .invalidArgument("packed queue size \(size) not in 1...32768") }
        } else {
            guard size > 0, size <= SplitQueue.maxSize, size & (size - 1) == 0 else {
                throw .invalidArgument("queue size \(size) is not a power of two in 1...32768")
            }
        }
        let sizes = packed
            ? { let p = PackedQueue.layoutSizes(size: size); return (p.desc, p.driverEvent, p.deviceEvent) }()
            : SplitQueue.layoutSizes(size: size)
        self.memory = memory
        self.index = index
        self.size = size
        self.eventIdx = eventIdx
        self.packed = packed
        desc = try memory.allocate(sizes.0, alignment: 4096)
        avail = try memory.allocate(sizes.1, alignment: 4096)
        used = try memory.allocate(sizes.2, alignment: 4096)
        if packed {
            // The rings may hold an earlier user's bytes: a stale flags word could read as available.
            memset(desc.pointer, 0, desc.length)
            memset(avail.pointer, 0, avail.length)
            memset(used.pointer, 0, used.length)
            freeSlots = Int(size)
            freeIDs = (0..<size).reversed().map { $0 }
        }
        do {
            kickFD = try EventFD()
            callFD = try EventFD()
        } catch {
            throw .system(error)
        }
        freeDescriptors = (0..<size).reversed().map { $0 }
    }

    /// Frees the rings and closes the eventfds (after the back end stopped the
    /// queue). Once: a second call does nothing.
    public func close() {
        guard !closed else { return }
        closed = true
        kickFD.close()
        callFD.close()
        for (_, entry) in inFlight { entry.buffers.forEach(memory.release) }
        unpublishedHeads = []
        inFlight = [:]
        memory.release(desc)
        memory.release(avail)
        memory.release(used)
    }

    /// Descriptors (packed: ring slots) not owned by an in-flight chain.
    public var freeDescriptorCount: Int { packed ? freeSlots : freeDescriptors.count }
    /// Chains added and not yet collected.
    public var inFlightCount: Int { inFlight.count }

    // MARK: Adding chains

    /// Writes `buffers` as a direct chain and queues its head in the avail ring
    /// (not yet published). `owned` buffers are released when the head is used.
    @discardableResult
    public func addChain(_ buffers: [ChainBuffer], owning owned: [GuestBuffer] = []) throws(FrontendError) -> UInt16 {
        guard !buffers.isEmpty else { throw .invalidArgument("empty chain") }
        if packed {
            return try addPacked(buffers.map { b in
                (b.gpa, b.length, b.writable ? PackedDescriptor.flagWrite : 0)
            }, owning: owned)
        }
        guard buffers.count <= freeDescriptors.count else { throw .queueFull }
        let indices = (0..<buffers.count).compactMap { _ in freeDescriptors.popLast() }
        for (i, b) in buffers.enumerated() {
            let last = i == buffers.count - 1
            let flags = (last ? 0 : Descriptor.flagNext) | (b.writable ? Descriptor.flagWrite : 0)
            writeDescriptor(
                Descriptor(addr: b.gpa, len: b.length, flags: flags, next: last ? 0 : indices[i + 1]),
                at: indices[i])
        }
        inFlight[indices[0]] = (indices, owned)
        pushAvail(head: indices[0])
        return indices[0]
    }

    /// Writes `buffers` into a freshly allocated indirect table and queues one
    /// INDIRECT descriptor pointing at it.
    @discardableResult
    public func addIndirectChain(_ buffers: [ChainBuffer], owning owned: [GuestBuffer] = []) throws(FrontendError) -> UInt16 {
        guard !buffers.isEmpty else { throw .invalidArgument("empty chain") }
        let table = try memory.allocate(buffers.count * Descriptor.byteSize, alignment: 16)
        if packed {
            for (i, b) in buffers.enumerated() {
                PackedDescriptor(addr: b.gpa, len: b.length, id: 0, flags: b.writable ? PackedDescriptor.flagWrite : 0)
                    .store(to: table.pointer + i * PackedDescriptor.byteSize)
            }
            do {
                return try addPacked([(table.gpa, UInt32(table.length), PackedDescriptor.flagIndirect)], owning: owned + [table])
            } catch {
                memory.release(table)
                throw error
            }
        }
        for (i, b) in buffers.enumerated() {
            let last = i == buffers.count - 1
            let flags = (last ? 0 : Descriptor.flagNext) | (b.writable ? Descriptor.flagWrite : 0)
            Descriptor(addr: b.gpa, len: b.length, flags: flags, next: last ? 0 : UInt16(i + 1))
                .store(to: table.pointer + i * Descriptor.byteSize)
        }
        guard let head = freeDescriptors.popLast() else {
            memory.release(table)
            throw .queueFull
        }
        writeDescriptor(
            Descriptor(addr: table.gpa, len: UInt32(table.length), flags: Descriptor.flagIndirect, next: 0), at: head)
        inFlight[head] = ([head], owned + [table])
        pushAvail(head: head)
        return head
    }

    // MARK: Packed ring (virtio 1.2 §2.8.21)

    /// Writes a packed chain of `(addr, len, flags)` in consecutive slots
    /// under a free buffer ID (NEXT on all but the last; the AVAIL/USED bits
    /// of the current lap). The head's flags wait for `publish()`. Returns the ID.
    public func addPacked(_ descs: [(UInt64, UInt32, UInt16)], owning owned: [GuestBuffer] = []) throws(FrontendError) -> UInt16 {
        guard packed else { throw .invalidArgument("not a packed queue") }
        guard !descs.isEmpty else { throw .invalidArgument("empty chain") }
        guard descs.count <= freeSlots, let id = freeIDs.popLast() else { throw .queueFull }
        let head = packedAvail.index
        var headFlags: UInt16 = 0
        for (k, d) in descs.enumerated() {
            let flags = d.2 | (k < descs.count - 1 ? PackedDescriptor.flagNext : 0) | Self.availBits(wrap: packedAvail.wrap)
            let at = desc.pointer + PackedDescriptor.byteSize * Int(packedAvail.index)
            let old = UInt16(littleEndian: at.load(fromByteOffset: PackedDescriptor.flagsOffset, as: UInt16.self))
            PackedDescriptor(addr: d.0, len: d.1, id: id, flags: k == 0 ? old : flags).store(to: at)
            if k == 0 { headFlags = flags }
            packedAvail.step(size: size)
        }
        unpublishedHeads.append((head, headFlags))
        freeSlots -= descs.count
        slotsOfID[id] = UInt16(descs.count)
        inFlight[id] = ([], owned)
        return id
    }

    /// Writes `descs` as given (addresses, lengths, buffer IDs, NEXT and the
    /// other flags) in the next consecutive slots, for hostile-ring tests:
    /// each slot's AVAIL/USED bits are the lap's unless `exactFlags`, in which
    /// case the flags are stored exactly as given. The head's flags wait for
    /// `publish()`. The used element is expected under the last descriptor's
    /// ID (the buffer ID, virtio 1.2 §2.8.6), which may be any value, even one
    /// not below the queue size; `owned` buffers are released when it arrives.
    public func addPackedRaw(_ descs: [PackedDescriptor], exactFlags: Bool = false, owning owned: [GuestBuffer] = []) throws(FrontendError) {
        guard packed else { throw .invalidArgument("not a packed queue") }
        guard let last = descs.last else { throw .invalidArgument("empty chain") }
        guard descs.count <= freeSlots else { throw .queueFull }
        let head = packedAvail.index
        var headFlags: UInt16 = 0
        for (k, d) in descs.enumerated() {
            let flags = exactFlags ? d.flags : d.flags & ~(PackedDescriptor.flagAvail | PackedDescriptor.flagUsed) | Self.availBits(wrap: packedAvail.wrap)
            let at = desc.pointer + PackedDescriptor.byteSize * Int(packedAvail.index)
            let old = UInt16(littleEndian: at.load(fromByteOffset: PackedDescriptor.flagsOffset, as: UInt16.self))
            PackedDescriptor(addr: d.addr, len: d.len, id: d.id, flags: k == 0 ? old : flags).store(to: at)
            if k == 0 { headFlags = flags }
            packedAvail.step(size: size)
        }
        unpublishedHeads.append((head, headFlags))
        freeSlots -= descs.count
        freeIDs.removeAll { $0 == last.id }
        slotsOfID[last.id] = UInt16(descs.count)
        inFlight[last.id] = ([], owned)
    }

    /// Writes any packed descriptor at ring slot `slot` (hostile-ring tests), as is.
    public func writePackedDescriptor(_ d: PackedDescriptor, at slot: UInt16) {
        d.store(to: desc.pointer + PackedDescriptor.byteSize * (Int(slot) % Int(size)))
    }

    /// AVAIL = wrap, USED = !wrap: how the driver marks a slot available (§2.8.1).
    public static func availBits(wrap: Bool) -> UInt16 {
        wrap ? PackedDescriptor.flagAvail : PackedDescriptor.flagUsed
    }

    /// The device event suppression area's flags (§2.8.10).
    public var deviceEventFlags: UInt16 {
        UInt16(littleEndian: Self.atomic16(used.pointer, 2).pointee.load(ordering: .acquiring))
    }

    // MARK: Raw access (malformed-chain tests)

    /// Takes `count` descriptor indices off the free list for hand-built chains;
    /// pass them to `track(head:descriptors:owning:)` so they come back on completion.
    public func takeDescriptors(_ count: Int) throws(FrontendError) -> [UInt16] {
        guard count <= freeDescriptors.count else { throw .queueFull }
        return (0..<count).compactMap { _ in freeDescriptors.popLast() }
    }

    /// Records that `head`'s used entry returns `descriptors` and `owned` buffers.
    public func track(head: UInt16, descriptors: [UInt16], owning owned: [GuestBuffer] = []) {
        inFlight[head] = (descriptors, owned)
    }

    /// Writes any descriptor at table slot `index` (masked to the table).
    public func writeDescriptor(_ d: Descriptor, at index: UInt16) {
        d.store(to: desc.pointer + Descriptor.byteSize * Int(index & (size - 1)))
    }

    /// Writes `head` (any value, even out of range) into the next avail slot; not yet published.
    public func pushAvail(head: UInt16) {
        let slot = Int(availIdx & (size - 1))
        avail.pointer.storeBytes(of: head.littleEndian, toByteOffset: 4 + 2 * slot, as: UInt16.self)
        availIdx &+= 1
    }

    /// Publishes an arbitrary `avail->idx` (e.g. far ahead, to test rejection).
    public func setAvailIdx(_ idx: UInt16) {
        atomicMemoryFence(ordering: .releasing)
        Self.atomic16(avail.pointer, 2).pointee.store(idx.littleEndian, ordering: .releasing)
        publishedAvailIdx = idx
        availIdx = idx
    }

    /// Sets or clears VIRTQ_AVAIL_F_NO_INTERRUPT.
    public func setNoInterrupt(_ on: Bool) {
        if packed {
            Self.atomic16(avail.pointer, 2).pointee.store(
                (on ? PackedEventSuppression.flagDisable : PackedEventSuppression.flagEnable).littleEndian, ordering: .relaxed)
            return
        }
        Self.atomic16(avail.pointer, 0).pointee.store((on ? SplitQueue.availFlagNoInterrupt : 0).littleEndian, ordering: .relaxed)
    }

    /// Writes `avail->used_event` (EVENT_IDX).
    public func setUsedEvent(_ value: UInt16) {
        Self.atomic16(avail.pointer, 4 + 2 * Int(size)).pointee.store(value.littleEndian, ordering: .relaxed)
    }

    /// `used->avail_event` as the device last wrote it.
    public var availEvent: UInt16 {
        UInt16(littleEndian: Self.atomic16(used.pointer, 4 + 8 * Int(size)).pointee.load(ordering: .relaxed))
    }

    /// `used->flags` (NO_NOTIFY in bit 0).
    public var usedFlags: UInt16 {
        UInt16(littleEndian: Self.atomic16(used.pointer, 0).pointee.load(ordering: .relaxed))
    }

    /// `used->idx` with acquire ordering.
    public var usedIdx: UInt16 {
        UInt16(littleEndian: Self.atomic16(used.pointer, 2).pointee.load(ordering: .acquiring))
    }

    // MARK: Publish and notify

    /// Release barrier, then `avail->idx = availIdx`.
    public func publish() {
        if packed {
            for head in unpublishedHeads {
                Self.atomic16(desc.pointer, PackedDescriptor.byteSize * Int(head.slot) + PackedDescriptor.flagsOffset)
                    .pointee.store(head.flags.littleEndian, ordering: .releasing)
            }
            unpublishedHeads = []
            return
        }
        atomicMemoryFence(ordering: .releasing)
        Self.atomic16(avail.pointer, 2).pointee.store(availIdx.littleEndian, ordering: .releasing)
        publishedAvailIdx = availIdx
    }

    /// Publishes and kicks when the device asked for it (EVENT_IDX
    /// `avail_event`, or `used->flags` without NO_NOTIFY), or always if `force`.
    /// Returns whether it kicked.
    @discardableResult
    public func publishAndKick(force: Bool = false) -> Bool {
        let old = publishedAvailIdx
        publish()
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        let kick: Bool
        if force {
            kick = true
        } else if packed {
            // DISABLE: no kick; ENABLE, or DESC (a kick it may not need is harmless).
            kick = deviceEventFlags & PackedEventSuppression.flagsMask != PackedEventSuppression.flagDisable
        } else if eventIdx {
            kick = SplitQueue.needsEvent(eventIdx: availEvent, new: availIdx, old: old)
        } else {
            kick = usedFlags & SplitQueue.usedFlagNoNotify == 0
        }
        if kick { kickFD.signal() }
        return kick
    }

    // MARK: Collecting

    /// The id of the next used element, left uncollected; nil if none.
    public func peekUsedID() -> UInt32? {
        if packed { return packedUsedElement().map { UInt32($0.id) } }
        guard usedIdx != lastUsedIdx else { return nil }
        let slot = Int(lastUsedIdx & (size - 1))
        return UInt32(littleEndian: used.pointer.loadUnaligned(fromByteOffset: 4 + 8 * slot, as: UInt32.self))
    }

    /// The next used element if the device published one; releases the
    /// descriptors and buffers of its chain and (EVENT_IDX) asks for the next interrupt.
    public func popUsed() -> UsedElement? {
        if packed {
            guard let element = packedUsedElement() else { return nil }
            let slots = slotsOfID.removeValue(forKey: element.id) ?? 1
            packedUsed.step(by: slots, size: size)
            freeSlots += Int(slots)
            if let entry = inFlight.removeValue(forKey: element.id) {
                entry.buffers.forEach(memory.release)
                if element.id < size { freeIDs.append(element.id) }  // `addPackedRaw` may use any ID
            }
            return UsedElement(id: UInt32(element.id), length: element.len)
        }
        guard let id = peekUsedID() else { return nil }
        let slot = Int(lastUsedIdx & (size - 1))
        let len = UInt32(littleEndian: used.pointer.loadUnaligned(fromByteOffset: 8 + 8 * slot, as: UInt32.self))
        lastUsedIdx &+= 1
        if eventIdx { setUsedEvent(lastUsedIdx) }
        if let head = UInt16(exactly: id), let entry = inFlight.removeValue(forKey: head) {
            freeDescriptors.append(contentsOf: entry.descriptors)
            entry.buffers.forEach(memory.release)
        }
        return UsedElement(id: id, length: len)
    }

    /// Waits for the next used element: sleeps on the call eventfd (or spins if
    /// `busyPoll`) until `timeout`. Normally the used ring is re-checked every
    /// 50 ms as well; with `strictInterrupts` an entry counts only once the
    /// call eventfd has fired during this wait, so a back end that forgets to
    /// interrupt times out.
    public func waitUsed(
        timeout: Duration = .seconds(5), busyPoll: Bool = false, strictInterrupts: Bool = false
    ) throws(FrontendError) -> UsedElement {
        let deadline = Deadline(timeout)
        var interrupted = false
        while true {
            if !strictInterrupts || interrupted, let e = popUsed() { return e }
            if deadline.expired {
                throw .timeout(strictInterrupts ? "an interrupt and used entry on queue \(index)" : "a used entry on queue \(index)")
            }
            if busyPoll && !strictInterrupts { continue }
            let wait = strictInterrupts ? deadline.remainingMilliseconds : min(deadline.remainingMilliseconds, 50)
            if let ready = try? callFD.fd.poll(Int16(POLLIN), timeoutMilliseconds: wait), ready != 0, callFD.drain() > 0 {
                interrupted = true
            }
        }
    }

    /// The used element at `packedUsed`, if the device wrote one there
    /// (AVAIL and USED both equal to the used wrap counter, §2.8.1).
    private func packedUsedElement() -> (id: UInt16, len: UInt32)? {
        let at = desc.pointer + PackedDescriptor.byteSize * Int(packedUsed.index)
        let flags = UInt16(littleEndian: Self.atomic16(at, PackedDescriptor.flagsOffset).pointee.load(ordering: .acquiring))
        let a = flags & PackedDescriptor.flagAvail != 0, u = flags & PackedDescriptor.flagUsed != 0
        guard a == packedUsed.wrap, u == packedUsed.wrap else { return nil }
        let d = PackedDescriptor(loadingFrom: at)
        return (d.id, d.len)
    }

    private static func atomic16(_ base: UnsafeMutableRawPointer, _ offset: Int) -> UnsafeMutablePointer<Atomic<UInt16>> {
        (base + offset).assumingMemoryBound(to: Atomic<UInt16>.self)
    }
}
