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
/// Not thread-safe: drive each queue from one thread at a time.
public final class DriverQueue: @unchecked Sendable {  // confined to one thread at a time (see above)
    public let index: Int
    public let size: UInt16
    public let eventIdx: Bool
    public let desc: GuestBuffer
    public let avail: GuestBuffer
    public let used: GuestBuffer
    /// The driver → device notifier (SET_VRING_KICK).
    public let kickFD: EventFD
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

    /// Allocates the rings (desc 16-, avail 2-, used 4-byte aligned; we use
    /// 4096 to keep each in one page-aligned block) and two eventfds.
    public init(memory: FrontendMemory, index: Int, size: UInt16, eventIdx: Bool) throws(FrontendError) {
        guard size > 0, size <= SplitQueue.maxSize, size & (size - 1) == 0 else {
            throw .invalidArgument("queue size \(size) is not a power of two in 1...32768")
        }
        let sizes = SplitQueue.layoutSizes(size: size)
        self.memory = memory
        self.index = index
        self.size = size
        self.eventIdx = eventIdx
        desc = try memory.allocate(sizes.desc, alignment: 4096)
        avail = try memory.allocate(sizes.avail, alignment: 4096)
        used = try memory.allocate(sizes.used, alignment: 4096)
        do {
            kickFD = try EventFD()
            callFD = try EventFD()
        } catch {
            throw .system(error)
        }
        freeDescriptors = (0..<size).reversed().map { $0 }
    }

    /// Frees the rings and closes the eventfds (after the back end stopped the queue).
    public func close() {
        kickFD.close()
        callFD.close()
        for (_, entry) in inFlight { entry.buffers.forEach(memory.release) }
        inFlight = [:]
        memory.release(desc)
        memory.release(avail)
        memory.release(used)
    }

    /// Descriptors not owned by an in-flight chain.
    public var freeDescriptorCount: Int { freeDescriptors.count }
    /// Chains added and not yet collected.
    public var inFlightCount: Int { inFlight.count }

    // MARK: Adding chains

    /// Writes `buffers` as a direct chain and queues its head in the avail ring
    /// (not yet published). `owned` buffers are released when the head is used.
    @discardableResult
    public func addChain(_ buffers: [ChainBuffer], owning owned: [GuestBuffer] = []) throws(FrontendError) -> UInt16 {
        guard !buffers.isEmpty else { throw .invalidArgument("empty chain") }
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
        guard usedIdx != lastUsedIdx else { return nil }
        let slot = Int(lastUsedIdx & (size - 1))
        return UInt32(littleEndian: used.pointer.loadUnaligned(fromByteOffset: 4 + 8 * slot, as: UInt32.self))
    }

    /// The next used element if the device published one; releases the
    /// descriptors and buffers of its chain and (EVENT_IDX) asks for the next interrupt.
    public func popUsed() -> UsedElement? {
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

    private static func atomic16(_ base: UnsafeMutableRawPointer, _ offset: Int) -> UnsafeMutablePointer<Atomic<UInt16>> {
        (base + offset).assumingMemoryBound(to: Atomic<UInt16>.self)
    }
}
