import Glibc
import Virtio

/// A fake guest: 1 MiB of RAM as two regions whose host mappings are NOT
/// adjacent (so a buffer spanning them must be split), plus one split ring.
///
/// Region A: gpa 0x00000..<0x80000, host base+0,       user 0x7f00_0000_0000
/// Region B: gpa 0x80000..<0x100000, host base+0x90000, user 0x7f00_1000_0000
final class FakeGuest {
    static let regionSize: UInt64 = 0x80000
    static let userA: UInt64 = 0x7f00_0000_0000
    static let userB: UInt64 = 0x7f00_1000_0000
    static let descGPA: UInt64 = 0x1000
    static let availGPA: UInt64 = 0x2000
    static let usedGPA: UInt64 = 0x3000

    let base: UnsafeMutableRawPointer
    let memory: GuestMemory
    let queueSize: UInt16
    let iovecs: UnsafeMutableBufferPointer<iovec>

    init(queueSize: UInt16 = 8, iovecCapacity: Int = 16) throws {
        let total = 0x110000
        base = UnsafeMutableRawPointer.allocate(byteCount: total, alignment: 4096)
        memset(base, 0, total)
        memory = try GuestMemory(regions: [
            GuestMemoryRegion(guestPhysAddr: Self.regionSize, size: Self.regionSize, userAddr: Self.userB, host: base + 0x90000),
            GuestMemoryRegion(guestPhysAddr: 0, size: Self.regionSize, userAddr: Self.userA, host: base),
        ])
        self.queueSize = queueSize
        iovecs = .allocate(capacity: iovecCapacity)
        iovecs.initialize(repeating: iovec())
    }

    deinit {
        base.deallocate()
        iovecs.deallocate()
    }

    /// Host address of `gpa` (test-controlled, always mapped).
    func host(_ gpa: UInt64) -> UnsafeMutableRawPointer {
        gpa < Self.regionSize ? base + Int(gpa) : base + 0x90000 + Int(gpa - Self.regionSize)
    }

    func write(_ bytes: [UInt8], at gpa: UInt64) {
        for (i, b) in bytes.enumerated() { host(gpa + UInt64(i)).storeBytes(of: b, as: UInt8.self) }
    }

    func byte(at gpa: UInt64) -> UInt8 { host(gpa).load(as: UInt8.self) }

    /// Writes a descriptor into the main table.
    func setDesc(_ index: Int, _ d: Descriptor) {
        d.store(to: host(Self.descGPA + UInt64(16 * index)))
    }

    /// Writes a descriptor into a table at `tableGPA`.
    func setDesc(table tableGPA: UInt64, _ index: Int, _ d: Descriptor) {
        d.store(to: host(tableGPA + UInt64(16 * index)))
    }

    func makeQueue(eventIdx: Bool = false, lastAvailIdx: UInt16 = 0) throws -> SplitQueue {
        try SplitQueue(
            size: queueSize, desc: host(Self.descGPA), avail: host(Self.availGPA),
            used: host(Self.usedGPA), eventIdx: eventIdx, lastAvailIdx: lastAvailIdx)
    }

    // Avail ring fields.
    var availIdx: UInt16 {
        get { host(Self.availGPA + 2).load(as: UInt16.self) }
        set { host(Self.availGPA + 2).storeBytes(of: newValue, as: UInt16.self) }
    }
    var availFlags: UInt16 {
        get { host(Self.availGPA).load(as: UInt16.self) }
        set { host(Self.availGPA).storeBytes(of: newValue, as: UInt16.self) }
    }
    var usedEvent: UInt16 {
        get { host(Self.availGPA + 4 + 2 * UInt64(queueSize)).load(as: UInt16.self) }
        set { host(Self.availGPA + 4 + 2 * UInt64(queueSize)).storeBytes(of: newValue, as: UInt16.self) }
    }
    func setAvailRing(slot: Int, head: UInt16) {
        host(Self.availGPA + 4 + UInt64(2 * slot)).storeBytes(of: head, as: UInt16.self)
    }
    /// Appends `head` to the avail ring and bumps avail->idx.
    func pushAvail(_ head: UInt16) {
        setAvailRing(slot: Int(availIdx % queueSize), head: head)
        availIdx &+= 1
    }

    // Used ring fields.
    var usedIdx: UInt16 {
        get { host(Self.usedGPA + 2).load(as: UInt16.self) }
        set { host(Self.usedGPA + 2).storeBytes(of: newValue, as: UInt16.self) }
    }
    var usedFlags: UInt16 { host(Self.usedGPA).load(as: UInt16.self) }
    var availEvent: UInt16 { host(Self.usedGPA + 4 + 8 * UInt64(queueSize)).load(as: UInt16.self) }
    func usedElement(_ slot: Int) -> (id: UInt32, len: UInt32) {
        let p = host(Self.usedGPA + 4 + UInt64(8 * slot))
        return (p.load(as: UInt32.self), p.load(fromByteOffset: 4, as: UInt32.self))
    }

    func walk(head: UInt16) throws(VirtioError) -> ChainBuffers {
        try DescriptorChainWalker.walk(
            descTable: UnsafeRawPointer(host(Self.descGPA)), size: queueSize, head: head,
            memory: memory, into: iovecs)
    }

    /// Host address of iovec `i` as a gpa-comparable pointer.
    func iov(_ i: Int) -> (base: UnsafeMutableRawPointer?, len: Int) {
        (iovecs[i].iov_base, iovecs[i].iov_len)
    }

    /// A 16-byte virtio-blk header.
    static func header(type: UInt32, sector: UInt64, ioprio: UInt32 = 0) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 16)
        out.withUnsafeMutableBytes { b in
            b.storeBytes(of: type.littleEndian, toByteOffset: 0, as: UInt32.self)
            b.storeBytes(of: ioprio.littleEndian, toByteOffset: 4, as: UInt32.self)
            b.storeBytes(of: sector.littleEndian, toByteOffset: 8, as: UInt64.self)
        }
        return out
    }
}

let NEXT = Descriptor.flagNext
let WRITE = Descriptor.flagWrite
let INDIRECT = Descriptor.flagIndirect
