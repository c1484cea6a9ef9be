import Synchronization
import Virtio

/// One packed queue's area in the inflight-tracking region (vhost-user spec,
/// "Inflight I/O tracking", the packed layout; docs/PROTOCOL-NOTES.md,
/// "Inflight tracking across restarts").
///
/// Layout, the spec's: a 32-byte header `u64 features, u16 version, u16
/// desc_num, u16 free_head, u16 old_free_head, u16 used_idx, u16
/// old_used_idx, u8 used_wrap_counter, u8 old_used_wrap_counter, u8
/// padding[7]`, then `desc_num` 32-byte entries `u8 inflight, u8 padding,
/// u16 next, u16 last, u16 num, u64 counter, u16 id, u16 flags, u32 len,
/// u64 addr`.
///
/// A packed ring needs more than the split layout's in-flight bits: the
/// device writes used elements over the slots of buffers still in flight
/// (virtio 1.2 §2.8.6), and QEMU keeps its old ring positions after a crash
/// (`virtio_queue_packed_restore_last_avail_idx` does nothing). So each
/// popped buffer's ring descriptors are copied into entries, linked by
/// `next` from a head entry that holds `num`, `last`, the pop `counter` and
/// the buffer `id`; and the device's used position lives in the header.
/// The spec leaves the procedure to the back-end (only the back-end reads
/// the region); this one keeps two commit points, each a single store:
///
/// - **Pop**: the descriptors are copied, then the head's `inflight` byte
///   is set. Before that store the buffer is still available in the ring
///   and is popped again; after it, it is resubmitted from the copies.
///   The avail position is never stored: it is the used position plus the
///   slots of the buffers in flight (§2.8.6: each used element moves the
///   used position by its buffer's slot count).
/// - **Used element** at position P for head entry E: its id and length go
///   into the ring slot; one 8-byte store records `used_idx`/wrap = the
///   next position, `old_used_idx`/wrap = P and E (in the header's padding);
///   E's `inflight` byte is cleared; the slot's flags make the element
///   visible; a second 8-byte store sets `old` equal to `used`. A restart
///   that finds them different finishes the element: it stores the flags
///   if the slot still shows the driver's available flags
///   (`PackedQueue.finishUsedElement`), and clears E.
///
/// The free list and the chain links a request frees by are kept in
/// process memory (`free_head` is not used): the region is shared with the
/// front-end, so what it holds is validated once, at recovery, and never
/// trusted on the data path.
///
/// `@unchecked Sendable`: a view into a shared mapping the session owns;
/// once a queue runs, only its reactor uses it.
public final class PackedInflightQueue: @unchecked Sendable {
    public static let headerSize = 32
    public static let entrySize = 32
    public static let version: UInt16 = 1
    /// No entry: the header's pending entry when no used element is being written.
    public static let noEntry: UInt16 = 0xFFFF

    /// Bytes of one queue's area: header and entries, rounded up to 64.
    public static func areaSize(queueSize: UInt16) -> Int {
        (headerSize + entrySize * Int(queueSize) + 63) & ~63
    }

    private enum Header {
        static let version = 8
        static let descNum = 10
        /// `used_idx`, `old_used_idx`, the two wrap counters and the pending
        /// entry (first two padding bytes): one aligned 8-byte word.
        static let journal = 16
    }

    private enum Entry {
        static let inflight = 0
        static let next = 2
        static let last = 4
        static let num = 6
        static let counter = 8
        static let id = 16
        static let flags = 18
        static let len = 20
        static let addr = 24
    }

    private let base: UnsafeMutableRawPointer
    public let queueSize: UInt16
    /// Pop order: every recorded buffer gets the next value; resubmission follows it.
    private var counter: UInt64 = 0
    /// Entries not holding a descriptor of a buffer in flight (a stack).
    private let free: UnsafeMutablePointer<UInt16>
    private var freeCount: Int
    /// Each entry's successor in its buffer, and each head entry's slot count.
    private let link: UnsafeMutablePointer<UInt16>
    private let length: UnsafeMutablePointer<UInt16>

    /// A view of the area at `base` (`areaSize(queueSize:)` bytes, 8-aligned).
    public init(base: UnsafeMutableRawPointer, queueSize: UInt16) {
        self.base = base
        self.queueSize = queueSize
        let count = Int(queueSize)
        free = .allocate(capacity: max(1, count))
        link = .allocate(capacity: max(1, count))
        length = .allocate(capacity: max(1, count))
        link.initialize(repeating: Self.noEntry, count: max(1, count))
        length.initialize(repeating: 0, count: max(1, count))
        freeCount = 0
        resetFreeList(keeping: [])
    }

    deinit {
        free.deallocate()
        link.deallocate()
        length.deallocate()
    }

    // MARK: Header

    public var storedVersion: UInt16 { load(UInt16.self, at: Header.version) }
    public var descNum: UInt16 { load(UInt16.self, at: Header.descNum) }

    /// Whether a back-end already set this area up for this queue size.
    public var isInitialized: Bool { storedVersion == Self.version && descNum == queueSize }

    /// The used positions and the pending entry the header records.
    public struct Journal: Equatable, Sendable {
        public var used: PackedRingPosition
        public var old: PackedRingPosition
        public var pending: UInt16

        public init(used: PackedRingPosition, old: PackedRingPosition, pending: UInt16) {
            self.used = used
            self.old = old
            self.pending = pending
        }
    }

    public var journal: Journal {
        let word = atomicJournal.pointee.load(ordering: .acquiring)
        return Journal(
            used: PackedRingPosition(index: UInt16(truncatingIfNeeded: word), wrap: (word >> 32) & 0xFF != 0),
            old: PackedRingPosition(index: UInt16(truncatingIfNeeded: word >> 16), wrap: (word >> 40) & 0xFF != 0),
            pending: UInt16(truncatingIfNeeded: word >> 48))
    }

    /// Zeroes the area and writes the header: nothing is in flight and the
    /// device's next used element goes at `used`.
    public func initialize(used: PackedRingPosition) {
        base.initializeMemory(as: UInt8.self, repeating: 0, count: Self.areaSize(queueSize: queueSize))
        store(Self.version, at: Header.version)
        store(queueSize, at: Header.descNum)
        storeJournal(Journal(used: used, old: used, pending: Self.noEntry))
        counter = 0
        resetFreeList(keeping: [])
    }

    // MARK: Data path

    /// Records the buffer `head` popped from `ring` as in flight: copies its
    /// ring descriptors into free entries, then sets the head entry's
    /// `inflight` byte (the commit point). Returns the head entry, or nil
    /// when too few entries are free, which `PackedQueue.popAvail`'s limit
    /// of `size` slots in flight rules out.
    public func record(_ head: PackedChainHead, ring: PackedQueue) -> UInt16? {
        let count = Int(head.slotCount)
        guard count >= 1, count <= freeCount, ring.size == queueSize else { return nil }
        var first = Self.noEntry, previous = Self.noEntry
        for k in 0..<count {
            freeCount -= 1
            let entry = free[freeCount]
            let slot = UInt16(truncatingIfNeeded: (Int(head.index) + k) % Int(queueSize))
            let desc = ring.descriptor(at: slot)
            let at = entryOffset(entry)
            store(UInt8(0), at: at + Entry.inflight)
            store(Self.noEntry, at: at + Entry.next)
            store(desc.id, at: at + Entry.id)
            store(desc.flags, at: at + Entry.flags)
            store(desc.len, at: at + Entry.len)
            store(desc.addr, at: at + Entry.addr)
            link[Int(entry)] = Self.noEntry
            if previous == Self.noEntry {
                first = entry
            } else {
                store(entry, at: entryOffset(previous) + Entry.next)
                link[Int(previous)] = entry
            }
            previous = entry
        }
        counter &+= 1
        let at = entryOffset(first)
        store(previous, at: at + Entry.last)
        store(head.slotCount, at: at + Entry.num)
        store(counter, at: at + Entry.counter)
        store(head.id, at: at + Entry.id)
        length[Int(first)] = head.slotCount
        atomicMemoryFence(ordering: .releasing)
        store(UInt8(1), at: at + Entry.inflight)
        return first
    }

    /// Writes the used element of the buffer recorded at `entry` into
    /// `queue` and makes it visible, journaled so that a restart finishes
    /// it (see the type's comment). `entry` is `noEntry` for a buffer not
    /// recorded: its element is written and made visible all the same.
    public func publish(entry: UInt16, id: UInt16, length usedLength: UInt32, slotCount: UInt16, queue: inout PackedQueue) {
        let at = queue.writeUsedElement(id: id, length: usedLength, slotCount: slotCount)
        let next = queue.nextUsed
        guard entry < queueSize else {
            queue.storeUsedFlags(at: at)
            storeJournal(Journal(used: next, old: next, pending: Self.noEntry))
            return
        }
        storeJournal(Journal(used: next, old: at, pending: entry))
        atomicMemoryFence(ordering: .releasing)  // the journal before the clear
        store(UInt8(0), at: entryOffset(entry) + Entry.inflight)
        queue.storeUsedFlags(at: at)
        storeJournal(Journal(used: next, old: next, pending: Self.noEntry))
        release(entry)
    }

    /// Returns the entries of the buffer at head `entry` to the free list.
    private func release(_ entry: UInt16) {
        var e = entry
        for _ in 0..<Int(length[Int(entry)]) {
            guard e < queueSize, freeCount < Int(queueSize) else { break }
            free[freeCount] = e
            freeCount += 1
            e = link[Int(e)]
        }
        length[Int(entry)] = 0
    }

    // MARK: Recovery

    /// What a restarted back-end does with a queue.
    public struct Recovery: Equatable, Sendable {
        /// Where the device writes its next used element.
        public var used: PackedRingPosition
        /// Where it looks for the next available buffer: `used` plus the
        /// slots of the buffers still in flight.
        public var avail: PackedRingPosition
        /// Head entries of the buffers to serve again, oldest first.
        public var resubmit: [UInt16]
        /// Whether a used element interrupted by the crash was finished.
        public var finishedElement: Bool
    }

    /// Why an area cannot be recovered: the front-end's copy of it is not
    /// one this back-end could have written.
    public struct Inconsistency: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    /// Reconciles the area with the ring after a back-end restart.
    ///
    /// Validates everything first (positions inside the ring, each buffer's
    /// chain of distinct entries inside the area, at most a ring of slots in
    /// flight) and writes nothing when that fails. Then finishes the used
    /// element the journal names, if any: `finish` is called with its
    /// position before the header is brought up to date, so a crash during
    /// recovery repeats it. The in-flight buffers are resubmitted in pop order.
    public func recover(finish: (PackedRingPosition) -> Bool) throws(Inconsistency) -> Recovery {
        let j = journal
        guard j.used.index < queueSize, j.old.index < queueSize else {
            throw Inconsistency(description: "used position \(j.used) or \(j.old) outside a ring of \(queueSize)")
        }
        let pending: UInt16? = j.used == j.old ? nil : j.pending
        if let pending, pending >= queueSize {
            throw Inconsistency(description: "the used element in progress names entry \(pending)")
        }
        var taken = [Bool](repeating: false, count: Int(queueSize))
        var buffers: [(head: UInt16, counter: UInt64, chain: [UInt16])] = []
        var slots = 0
        for head in 0..<queueSize where head != pending && load(UInt8.self, at: entryOffset(head) + Entry.inflight) != 0 {
            let at = entryOffset(head)
            let num = load(UInt16.self, at: at + Entry.num)
            guard num >= 1, num <= queueSize else {
                throw Inconsistency(description: "entry \(head) holds a buffer of \(num) slots")
            }
            var chain: [UInt16] = []
            var e = head
            for k in 0..<Int(num) {
                guard e < queueSize, !taken[Int(e)] else {
                    throw Inconsistency(description: "the buffer at entry \(head) links to entry \(e) twice or out of range")
                }
                taken[Int(e)] = true
                chain.append(e)
                if k + 1 < Int(num) { e = load(UInt16.self, at: entryOffset(e) + Entry.next) }
            }
            slots += Int(num)
            guard slots <= Int(queueSize) else {
                throw Inconsistency(description: "more than \(queueSize) slots in flight")
            }
            buffers.append((head, load(UInt64.self, at: at + Entry.counter), chain))
        }
        var finished = false
        if let pending {
            finished = finish(j.old)
            atomicMemoryFence(ordering: .releasing)
            store(UInt8(0), at: entryOffset(pending) + Entry.inflight)
            storeJournal(Journal(used: j.used, old: j.used, pending: Self.noEntry))
        }
        buffers.sort { $0.counter < $1.counter }
        counter = buffers.last?.counter ?? 0
        link.update(repeating: Self.noEntry, count: Int(queueSize))
        length.update(repeating: 0, count: Int(queueSize))
        for buffer in buffers {
            for (k, e) in buffer.chain.enumerated() where k + 1 < buffer.chain.count {
                link[Int(e)] = buffer.chain[k + 1]
            }
            length[Int(buffer.head)] = UInt16(truncatingIfNeeded: buffer.chain.count)
        }
        resetFreeList(keeping: taken)
        var avail = j.used
        avail.step(by: UInt16(truncatingIfNeeded: slots), size: queueSize)
        return Recovery(used: j.used, avail: avail, resubmit: buffers.map(\.head), finishedElement: finished)
    }

    /// The buffer recorded at head `entry`, as resubmission walks it: its
    /// ID and its ring descriptors, in order (from the copies; recovery
    /// checked the chain).
    public func buffer(at entry: UInt16) -> (id: UInt16, descriptors: [PackedDescriptor]) {
        guard entry < queueSize else { return (0, []) }
        var descriptors: [PackedDescriptor] = []
        var e = entry
        for _ in 0..<Int(length[Int(entry)]) {
            guard e < queueSize else { break }
            let at = entryOffset(e)
            descriptors.append(PackedDescriptor(
                addr: load(UInt64.self, at: at + Entry.addr), len: load(UInt32.self, at: at + Entry.len),
                id: load(UInt16.self, at: at + Entry.id), flags: load(UInt16.self, at: at + Entry.flags)))
            e = link[Int(e)]
        }
        return (load(UInt16.self, at: entryOffset(entry) + Entry.id), descriptors)
    }

    // MARK: Bytes

    /// Every entry not marked in `keeping` is free, lowest first out.
    private func resetFreeList(keeping: [Bool]) {
        freeCount = 0
        for e in stride(from: Int(queueSize) - 1, through: 0, by: -1) where e >= keeping.count || !keeping[e] {
            free[freeCount] = UInt16(truncatingIfNeeded: e)
            freeCount += 1
        }
    }

    private var atomicJournal: UnsafeMutablePointer<Atomic<UInt64>> {
        (base + Header.journal).assumingMemoryBound(to: Atomic<UInt64>.self)
    }

    private func storeJournal(_ j: Journal) {
        var word = UInt64(j.used.index) | UInt64(j.old.index) << 16
        word |= UInt64(j.used.wrap ? 1 : 0) << 32 | UInt64(j.old.wrap ? 1 : 0) << 40
        word |= UInt64(j.pending) << 48
        atomicJournal.pointee.store(word, ordering: .releasing)
    }

    @inline(__always)
    private func entryOffset(_ entry: UInt16) -> Int {
        Self.headerSize + Self.entrySize * (Int(entry) % Int(queueSize))
    }

    private func load<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
        T(littleEndian: base.loadUnaligned(fromByteOffset: offset, as: T.self))
    }

    private func store<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        base.storeBytes(of: value.littleEndian, toByteOffset: offset, as: T.self)
    }
}
