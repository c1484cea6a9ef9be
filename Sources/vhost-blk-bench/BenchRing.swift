import Glibc
import Posix
import Synchronization
import VhostUserFrontend
import Virtio

/// The driver side of one virtqueue as the benchmark's hot path sees it:
/// request slot `i`'s fixed three-descriptor chain goes in, slot numbers of
/// completed requests come out. `QueueWorker` is generic over it, so each
/// ring type gets its own specialised loop (no dynamic dispatch per request).
///
/// Driven from one thread (the queue's).
protocol BenchRing: AnyObject {
    /// Takes over driving `queue` (set up by the frontend) for `slots`, whose
    /// index is the request slot number every other method speaks.
    init(queue: DriverQueue, slots: [RequestSlot], blockSize: Int) throws(FrontendError)
    var queueIndex: Int { get }
    /// The device → driver notifier.
    var callFD: EventFD { get }
    /// Requests added and not yet completed.
    var inFlightCount: Int { get }
    /// Poll mode: ask the device for no interrupts. Interrupt mode: for the
    /// next completion (EVENT_IDX) or every one.
    func setPolling(_ poll: Bool)
    /// Queues request slot `slot`'s chain, device-readable data if `write`; not yet published.
    func add(slot: Int, write: Bool) throws(FrontendError)
    /// The slot of the next completed request, nil if the device published
    /// none; throws when the device names no request in flight.
    func popUsed() throws(FrontendError) -> Int?
    /// Publishes what was added and kicks if the device asked for it (in poll
    /// mode first moving the interrupt threshold out of reach). Returns whether it kicked.
    func publishAndKick(poll: Bool) -> Bool
    /// A full barrier, then whether a completion is waiting: the last look
    /// before sleeping on the call eventfd (virtio 1.2 §2.7.10, §2.8.10).
    func hasUsedAfterBarrier() -> Bool
}

/// A split ring (virtio 1.2 §2.7), through the frontend's `DriverQueue`: the
/// benchmark's original path, unchanged.
final class SplitBenchRing: BenchRing {
    private let queue: DriverQueue
    /// header (ro), data (device-writable), status (wo), per slot.
    private let readChains: [[ChainBuffer]]
    /// header (ro), data (device-readable), status (wo), per slot.
    private let writeChains: [[ChainBuffer]]
    /// Slot carried by each descriptor head, -1 when none.
    private var slotOfHead: [Int32]

    init(queue: DriverQueue, slots: [RequestSlot], blockSize: Int) throws(FrontendError) {
        guard !queue.packed else { throw .invalidArgument("queue \(queue.index) is packed") }
        self.queue = queue
        readChains = slots.map(\.readChain)
        writeChains = slots.map(\.writeChain)
        slotOfHead = [Int32](repeating: -1, count: Int(queue.size))
    }

    var queueIndex: Int { queue.index }
    var callFD: EventFD { queue.callFD }
    var inFlightCount: Int { queue.inFlightCount }

    func setPolling(_ poll: Bool) { queue.setNoInterrupt(poll) }

    func add(slot: Int, write: Bool) throws(FrontendError) {
        let head = try queue.addChain(write ? writeChains[slot] : readChains[slot])
        guard Int(head) < slotOfHead.count else { throw .protocolViolation("head \(head) outside the queue") }
        slotOfHead[Int(head)] = Int32(slot)
    }

    func popUsed() throws(FrontendError) -> Int? {
        guard let used = queue.popUsed() else { return nil }
        guard let head = UInt16(exactly: used.id), Int(head) < slotOfHead.count, slotOfHead[Int(head)] >= 0 else {
            throw .protocolViolation("used id \(used.id) names no request in flight")
        }
        let slot = Int(slotOfHead[Int(head)])
        slotOfHead[Int(head)] = -1
        return slot
    }

    /// In poll mode pushes `used_event` half the ring ahead so the device does not interrupt.
    func publishAndKick(poll: Bool) -> Bool {
        if poll { queue.setUsedEvent(queue.lastUsedIdx &+ 0x7fff) }
        return queue.publishAndKick()
    }

    func hasUsedAfterBarrier() -> Bool {
        // used_event was re-armed by popUsed; a full barrier before the last
        // look at used->idx, or a completion published meanwhile would raise
        // no interrupt (virtio 1.2 §2.7.10).
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        return queue.usedIdx != queue.lastUsedIdx
    }
}

/// A packed ring (virtio 1.2 §2.8), driven directly and leanly for the
/// benchmark's fixed requests: the buffer ID is the request slot, every chain
/// takes three consecutive ring slots (header, data, status; §2.8.6, the ID
/// in each), and all state lives in arrays sized once, so a request allocates
/// nothing (the frontend's `DriverQueue` packed path keeps dictionaries and
/// builds arrays per chain: right for tests, not for a hot path).
///
/// The rings, eventfds and their vhost-user setup are the frontend's
/// `DriverQueue` (created with `packed`, rings zeroed); this type only reads
/// and writes that memory.
///
/// - Available side (§2.8.21): descriptors are written with AVAIL = the avail
///   wrap counter of their slot's lap and USED = its inverse. The first head added since the last
///   publish keeps its old flags until `publishAndKick`, which stores them
///   after a release barrier: the device reads slots in order, so it sees the
///   batch at once; later heads of the batch are stored (release) as they are
///   added, out of its reach until the first is.
/// - Used side (§2.8.1): the element at the used position is the device's when
///   AVAIL and USED both equal the used wrap counter; the position then moves
///   three slots (the chain it returns).
/// - Driver event suppression (§2.8.10, our area): poll mode DISABLE;
///   interrupt mode DESC with off_wrap = the next used position, re-armed after
///   each element (as split's `used_event`), or ENABLE without EVENT_IDX.
/// - Device event suppression (the device's area): DISABLE, no kick; DESC
///   (EVENT_IDX), a kick when the slots just published cover its off_wrap
///   (`PackedEventSuppression.needsEvent`, the form the daemon uses the other
///   way); anything else, a kick.
final class PackedBenchRing: BenchRing {
    /// Ring slots per request.
    static let chainSlots = 3

    let queueIndex: Int
    let callFD: EventFD
    private let kickFD: EventFD
    private let size: UInt16
    private let eventIdx: Bool
    private let descRing: UnsafeMutableRawPointer
    private let driverEvent: UnsafeMutableRawPointer
    private let deviceEvent: UnsafeMutableRawPointer
    private let headerGPA: [UInt64]
    private let dataGPA: [UInt64]
    private let statusGPA: [UInt64]
    private let dataLength: UInt32
    /// Whether each slot (buffer ID) is with the device.
    private var busy: [Bool]
    private(set) var inFlightCount = 0
    /// Next ring slot to fill, and the avail wrap counter.
    private var availIndex: UInt16 = 0
    private var availWrap = true
    /// Next ring slot to read a used element from, and the used wrap counter.
    private var usedIndex: UInt16 = 0
    private var usedWrap = true
    /// The first head added since the last publish and the flags it waits for.
    private var pendingHead: UInt16 = 0
    private var pendingHeadFlags: UInt16 = 0
    private var hasPendingHead = false
    /// Ring slots made available since the last kick decision.
    private var unkicked = 0
    /// Interrupt mode with EVENT_IDX: off_wrap follows the used position.
    private var armDesc = false

    init(queue: DriverQueue, slots: [RequestSlot], blockSize: Int) throws(FrontendError) {
        guard queue.packed else { throw .invalidArgument("queue \(queue.index) is not packed") }
        guard slots.count <= Int(UInt16.max), slots.count * Self.chainSlots <= Int(queue.size) else {
            throw .invalidArgument("\(slots.count) requests of \(Self.chainSlots) slots do not fit a packed ring of \(queue.size)")
        }
        guard let length = UInt32(exactly: blockSize) else { throw .invalidArgument("block size \(blockSize)") }
        guard queue.avail.length >= PackedEventSuppression.byteSize, queue.used.length >= PackedEventSuppression.byteSize,
              queue.desc.length >= PackedDescriptor.byteSize * Int(queue.size)
        else { throw .invalidArgument("queue \(queue.index): rings smaller than a packed layout") }
        queueIndex = queue.index
        callFD = queue.callFD
        kickFD = queue.kickFD
        size = queue.size
        eventIdx = queue.eventIdx
        descRing = queue.desc.pointer
        driverEvent = queue.avail.pointer
        deviceEvent = queue.used.pointer
        headerGPA = slots.map(\.header.gpa)
        dataGPA = slots.map(\.data.gpa)
        statusGPA = slots.map(\.status.gpa)
        dataLength = length
        busy = [Bool](repeating: false, count: slots.count)
    }

    func setPolling(_ poll: Bool) {
        armDesc = !poll && eventIdx
        if armDesc {
            storeRelaxed(driverEvent, PackedEventSuppression.offWrapOffset, usedOffWrap)
            storeReleasing(driverEvent, PackedEventSuppression.flagsOffset, PackedEventSuppression.flagDesc)
        } else {
            let flags = poll ? PackedEventSuppression.flagDisable : PackedEventSuppression.flagEnable
            storeReleasing(driverEvent, PackedEventSuppression.flagsOffset, flags)
        }
    }

    func add(slot: Int, write: Bool) throws(FrontendError) {
        guard slot >= 0, slot < busy.count, !busy[slot] else { throw .invalidArgument("request slot \(slot) is busy or unknown") }
        guard (inFlightCount + 1) * Self.chainSlots <= Int(size) else { throw .queueFull }
        let id = UInt16(truncatingIfNeeded: slot)  // < slots.count <= UInt16.max (init)
        // The head: address, length and ID now; its flags last (below or at publish).
        let head = availIndex
        let headFlags = PackedDescriptor.flagNext | availBits
        let headAt = descRing + PackedDescriptor.byteSize * Int(head)
        headAt.storeBytes(of: headerGPA[slot].littleEndian, toByteOffset: 0, as: UInt64.self)
        headAt.storeBytes(of: UInt32(16).littleEndian, toByteOffset: 8, as: UInt32.self)
        headAt.storeBytes(of: id.littleEndian, toByteOffset: 12, as: UInt16.self)
        advanceAvail()
        // Each descriptor carries the wrap counter of the lap its slot is in,
        // also past the ring's end inside a chain: a slot keeping an older
        // lap's AVAIL bit would read as available two laps on, when it is the
        // unpublished head of a batch.
        let dataFlags = (write ? 0 : PackedDescriptor.flagWrite) | PackedDescriptor.flagNext | availBits
        storeDescriptor(at: availIndex, addr: dataGPA[slot], len: dataLength, id: id, flags: dataFlags)
        advanceAvail()
        storeDescriptor(at: availIndex, addr: statusGPA[slot], len: 1, id: id, flags: PackedDescriptor.flagWrite | availBits)
        advanceAvail()
        if hasPendingHead {
            // Out of the device's reach until the batch's first head is published.
            storeReleasing(headAt, PackedDescriptor.flagsOffset, headFlags)
        } else {
            pendingHead = head
            pendingHeadFlags = headFlags
            hasPendingHead = true
        }
        busy[slot] = true
        inFlightCount += 1
        unkicked += Self.chainSlots
    }

    func popUsed() throws(FrontendError) -> Int? {
        let at = descRing + PackedDescriptor.byteSize * Int(usedIndex)
        let flags = loadAcquiring(at, PackedDescriptor.flagsOffset)
        guard (flags & PackedDescriptor.flagAvail != 0) == usedWrap, (flags & PackedDescriptor.flagUsed != 0) == usedWrap else {
            return nil
        }
        let id = Int(UInt16(littleEndian: at.loadUnaligned(fromByteOffset: 12, as: UInt16.self)))
        guard id < busy.count, busy[id] else {
            throw .protocolViolation("packed used element at slot \(usedIndex) names buffer id \(id), not in flight")
        }
        busy[id] = false
        inFlightCount -= 1
        for _ in 0..<Self.chainSlots { advanceUsed() }
        if armDesc { storeRelaxed(driverEvent, PackedEventSuppression.offWrapOffset, usedOffWrap) }
        return id
    }

    func publishAndKick(poll: Bool) -> Bool {
        guard unkicked > 0 else { return false }
        if hasPendingHead {
            atomicMemoryFence(ordering: .releasing)
            storeReleasing(descRing + PackedDescriptor.byteSize * Int(pendingHead), PackedDescriptor.flagsOffset, pendingHeadFlags)
            hasPendingHead = false
        }
        let published = unkicked
        unkicked = 0
        // Published before reading the device's wish (§2.8.21.3.1).
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        let flags = loadAcquiring(deviceEvent, PackedEventSuppression.flagsOffset) & PackedEventSuppression.flagsMask
        let kick: Bool
        switch flags {
        case PackedEventSuppression.flagDisable:
            kick = false
        case PackedEventSuppression.flagDesc where eventIdx:
            let offWrap = loadRelaxed(deviceEvent, PackedEventSuppression.offWrapOffset)
            kick = PackedEventSuppression.needsEvent(
                offWrap: offWrap, size: size, new: availIndex, wrap: availWrap, published: published)
        default:
            kick = true
        }
        if kick { kickFD.signal() }
        return kick
    }

    func hasUsedAfterBarrier() -> Bool {
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        let flags = loadAcquiring(descRing + PackedDescriptor.byteSize * Int(usedIndex), PackedDescriptor.flagsOffset)
        return (flags & PackedDescriptor.flagAvail != 0) == usedWrap && (flags & PackedDescriptor.flagUsed != 0) == usedWrap
    }

    // MARK: Helpers

    /// AVAIL = the avail wrap counter, USED = its inverse: available in this lap (§2.8.1).
    private var availBits: UInt16 { availWrap ? PackedDescriptor.flagAvail : PackedDescriptor.flagUsed }

    private var usedOffWrap: UInt16 { PackedEventSuppression.offWrap(index: usedIndex, wrap: usedWrap) }

    @inline(__always)
    private func advanceAvail() {
        availIndex &+= 1
        if availIndex == size {
            availIndex = 0
            availWrap.toggle()
        }
    }

    @inline(__always)
    private func advanceUsed() {
        usedIndex &+= 1
        if usedIndex == size {
            usedIndex = 0
            usedWrap.toggle()
        }
    }

    /// A whole non-head descriptor, plain stores (the head's release store orders them).
    @inline(__always)
    private func storeDescriptor(at index: UInt16, addr: UInt64, len: UInt32, id: UInt16, flags: UInt16) {
        let at = descRing + PackedDescriptor.byteSize * Int(index)
        at.storeBytes(of: addr.littleEndian, toByteOffset: 0, as: UInt64.self)
        at.storeBytes(of: len.littleEndian, toByteOffset: 8, as: UInt32.self)
        at.storeBytes(of: id.littleEndian, toByteOffset: 12, as: UInt16.self)
        at.storeBytes(of: flags.littleEndian, toByteOffset: 14, as: UInt16.self)
    }

    @inline(__always)
    private static func atomic16(_ base: UnsafeMutableRawPointer, _ offset: Int) -> UnsafeMutablePointer<Atomic<UInt16>> {
        (base + offset).assumingMemoryBound(to: Atomic<UInt16>.self)
    }

    @inline(__always)
    private func storeRelaxed(_ base: UnsafeMutableRawPointer, _ offset: Int, _ value: UInt16) {
        Self.atomic16(base, offset).pointee.store(value.littleEndian, ordering: .relaxed)
    }

    @inline(__always)
    private func storeReleasing(_ base: UnsafeMutableRawPointer, _ offset: Int, _ value: UInt16) {
        Self.atomic16(base, offset).pointee.store(value.littleEndian, ordering: .releasing)
    }

    @inline(__always)
    private func loadRelaxed(_ base: UnsafeMutableRawPointer, _ offset: Int) -> UInt16 {
        UInt16(littleEndian: Self.atomic16(base, offset).pointee.load(ordering: .relaxed))
    }

    @inline(__always)
    private func loadAcquiring(_ base: UnsafeMutableRawPointer, _ offset: Int) -> UInt16 {
        UInt16(littleEndian: Self.atomic16(base, offset).pointee.load(ordering: .acquiring))
    }
}
