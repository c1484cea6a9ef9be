import Synchronization

/// One split queue's area in the inflight-tracking region that the front-end
/// keeps for the back-end across reconnects (vhost-user spec, "Inflight I/O
/// tracking"; docs/PROTOCOL-NOTES.md, "Inflight tracking across restarts").
///
/// Layout: a 16-byte header `u64 features, u16 version, u16 desc_num,
/// u16 last_batch_head, u16 used_idx`, then `desc_num` 16-byte entries
/// `u8 inflight, u8 padding[5], u16 next, u64 counter`.
///
/// A head is marked in flight when popped and cleared once its used element
/// is published, so a restarted back-end knows which requests to resubmit.
/// The region outlives the process that writes it (a memfd QEMU holds), so
/// only store order matters: the release fences keep the compiler from
/// moving a clear before the `used->idx` store it follows.
///
/// `@unchecked Sendable`: the pointer is into a shared mapping the session
/// owns; once a queue runs, only its reactor touches its area.
public struct InflightQueue: @unchecked Sendable {
    public static let headerSize = 16
    public static let entrySize = 16
    public static let version: UInt16 = 1

    /// Bytes of one queue's area: header and entries, rounded up to 64.
    public static func areaSize(queueSize: UInt16) -> Int {
        (headerSize + entrySize * Int(queueSize) + 63) & ~63
    }

    private let base: UnsafeMutableRawPointer
    public let queueSize: UInt16
    /// Pop order: every marked head gets the next value, resubmission follows it.
    private var counter: UInt64 = 0

    /// A view of the area at `base` (`areaSize(queueSize:)` bytes, 8-aligned).
    public init(base: UnsafeMutableRawPointer, queueSize: UInt16) {
        self.base = base
        self.queueSize = queueSize
    }

    // MARK: Header

    public var storedVersion: UInt16 { load(UInt16.self, at: 8) }
    public var descNum: UInt16 { load(UInt16.self, at: 10) }
    public var lastBatchHead: UInt16 { load(UInt16.self, at: 12) }
    public var usedIdx: UInt16 { load(UInt16.self, at: 14) }

    /// Whether a back-end already set this area up for this queue size.
    public var isInitialized: Bool { storedVersion == Self.version && descNum == queueSize }

    /// Zeroes the area and writes the header: nothing is in flight.
    public mutating func initialize(usedIdx: UInt16) {
        base.initializeMemory(as: UInt8.self, repeating: 0, count: Self.areaSize(queueSize: queueSize))
        store(Self.version, at: 8)
        store(queueSize, at: 10)
        store(usedIdx, at: 14)
        counter = 0
    }

    // MARK: Data path

    /// `head` was popped from the avail ring (`head < queueSize`, the caller checked).
    public mutating func markInFlight(_ head: UInt16) {
        counter &+= 1
        let entry = entryOffset(head)
        store(counter, at: entry + 8)
        store(UInt8(1), at: entry)
    }

    /// `head`'s used element was written (not yet published).
    public func noteUsed(_ head: UInt16) {
        store(head, at: 12)
    }

    /// After `used->idx = usedIdx` was published: `heads` are no longer in flight.
    public func published(_ heads: UnsafeBufferPointer<UInt16>, usedIdx: UInt16) {
        atomicMemoryFence(ordering: .releasing)
        for head in heads { store(UInt8(0), at: entryOffset(head)) }
        atomicMemoryFence(ordering: .releasing)
        store(usedIdx, at: 14)
    }

    // MARK: Recovery

    /// What a restarted back-end does with a queue.
    public struct Recovery: Equatable, Sendable {
        /// Heads to serve again, oldest first.
        public var resubmit: [UInt16]
        /// The avail index after them: `used->idx` plus the heads still in flight.
        public var lastAvailIdx: UInt16
    }

    /// Reconciles the area with the used ring after a back-end restart.
    ///
    /// A batch whose `used->idx` store landed but whose clears did not is
    /// finished here: the ids of the used elements between the recorded
    /// `used_idx` and `ringUsedIdx` (`usedID(i)` reads ring slot `i`) are
    /// cleared. Every head still marked is resubmitted in pop order. Returns
    /// nil when the area is inconsistent (more than a ring of unrecorded used
    /// elements): the caller refuses the queue.
    public mutating func recover(ringUsedIdx: UInt16, usedID: (UInt16) -> UInt32) -> Recovery? {
        let unrecorded = ringUsedIdx &- usedIdx
        guard unrecorded <= queueSize else { return nil }
        var index = usedIdx
        while index != ringUsedIdx {
            let id = usedID(index & (queueSize &- 1))
            if id < UInt32(queueSize) { store(UInt8(0), at: entryOffset(UInt16(id))) }
            index &+= 1
        }
        store(ringUsedIdx, at: 14)
        var marked: [(head: UInt16, counter: UInt64)] = []
        for head in 0..<queueSize where load(UInt8.self, at: entryOffset(head)) == 1 {
            marked.append((head, load(UInt64.self, at: entryOffset(head) + 8)))
        }
        marked.sort { $0.counter < $1.counter }
        counter = marked.last?.counter ?? 0
        return Recovery(
            resubmit: marked.map(\.head),
            lastAvailIdx: ringUsedIdx &+ UInt16(truncatingIfNeeded: marked.count))
    }

    // MARK: Bytes

    private func entryOffset(_ head: UInt16) -> Int {
        Self.headerSize + Self.entrySize * Int(head & (queueSize &- 1))
    }

    private func load<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
        T(littleEndian: base.loadUnaligned(fromByteOffset: offset, as: T.self))
    }

    private func store<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        base.storeBytes(of: value.littleEndian, toByteOffset: offset, as: T.self)
    }
}
