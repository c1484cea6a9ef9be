import Testing
import Virtio

/// `PackedChainWalker`: buffers, indirect tables and hostile descriptors (virtio 1.2 §2.8.6, §2.8.7).
@Suite struct PackedChainTests {
    static let table: UInt64 = 0x8000
    static let A = PackedDescriptor.flagAvail

    /// Makes `descs` available as buffer 1 and walks it.
    private func walk(_ g: FakeGuest, _ descs: [(UInt64, UInt32, UInt16)]) throws -> ChainBuffers {
        let drv = FakePackedDriver(g)
        var q = try drv.makeQueue()
        let head = try #require(try q.popAvailOrFail(drv, descs))
        return try PackedChainWalker.walk(queue: q, head: head, memory: g.memory, into: g.iovecs)
    }

    private func setTable(_ g: FakeGuest, _ entries: [PackedDescriptor], at gpa: UInt64 = table) {
        for (i, d) in entries.enumerated() { d.store(to: g.host(gpa + UInt64(16 * i))) }
    }

    @Test func indirectTable() throws {
        let g = try FakeGuest()
        // NEXT and the IDs inside a packed indirect table are ignored (§2.8.7).
        setTable(g, [
            PackedDescriptor(addr: 0x10000, len: 16, id: 77, flags: NEXT),
            PackedDescriptor(addr: 0x11000, len: 4096, id: 0, flags: WRITE),
            PackedDescriptor(addr: 0x12000, len: 1, id: 0, flags: WRITE | NEXT),
        ])
        let drv = FakePackedDriver(g)
        var q = try drv.makeQueue()
        drv.add([(Self.table, 48, INDIRECT)], id: 4)
        let head = try #require(try q.popAvail())
        #expect(head == PackedChainHead(index: 0, id: 4, slotCount: 1))
        let chain = try PackedChainWalker.walk(queue: q, head: head, memory: g.memory, into: g.iovecs)
        #expect(chain == ChainBuffers(head: 4, readableCount: 1, writableCount: 2, readableBytes: 16, writableBytes: 4097))
        #expect(g.iov(0).base == g.host(0x10000) && g.iov(2).base == g.host(0x12000) && g.iov(2).len == 1)
        q.addUsed(id: head.id, length: 4097, slotCount: head.slotCount)
        q.publishUsed()
        #expect(q.nextUsed.index == 1 && drv.takeUsed()?.id == 4)
    }

    /// A table straddling the two regions, and a buffer that does, are split correctly.
    @Test func indirectTableAndBufferAcrossRegions() throws {
        let g = try FakeGuest()
        let tableGPA = FakeGuest.regionSize - 16
        setTable(g, [
            PackedDescriptor(addr: 0x10000, len: 16, id: 0, flags: 0),
            PackedDescriptor(addr: FakeGuest.regionSize - 8, len: 24, id: 0, flags: WRITE),
        ], at: tableGPA)
        let chain = try walk(g, [(tableGPA, 32, INDIRECT)])
        #expect(chain.readableCount == 1 && chain.writableCount == 2 && chain.writableBytes == 24)
        #expect(g.iov(1).len == 8 && g.iov(2).len == 16 && g.iov(2).base == g.host(FakeGuest.regionSize))
    }

    @Test func zeroLengthDescriptorsAreSkipped() throws {
        let g = try FakeGuest()
        let chain = try walk(g, [(0x10000, 16, 0), (0xdead_0000_0000, 0, 0), (0x12000, 1, WRITE)])
        #expect(chain == ChainBuffers(head: 1, readableCount: 1, writableCount: 1, readableBytes: 16, writableBytes: 1))
    }

    @Test func hostileDescriptors() throws {
        let g = try FakeGuest()
        let e = VirtioError.self
        // Unmapped and overflowing buffers.
        #expect(throws: e.addressUnmapped(addr: 0x100000, length: 1)) { try walk(g, [(0x100000, 1, 0)]) }
        #expect(throws: e.addressUnmapped(addr: 0xff000, length: 0x2000)) { try walk(g, [(0xff000, 0x2000, WRITE)]) }
        #expect(throws: e.addressOverflow(addr: UInt64.max - 3, length: 16)) { try walk(g, [(UInt64.max - 3, 16, 0)]) }
        // Device-readable after device-writable.
        #expect(throws: e.readableAfterWritable) { try walk(g, [(0x10000, 1, WRITE), (0x11000, 16, 0)]) }
        // More segments than iovecs.
        let small = try FakeGuest(iovecCapacity: 2)
        #expect(throws: e.tooManySegments(limit: 2)) {
            try walk(small, [(0x10000, 1, 0), (0x11000, 1, 0), (0x12000, 1, WRITE)])
        }
        // Indirect: together with NEXT, inside a longer chain, nested, empty, bad sizes, unmapped.
        setTable(g, [PackedDescriptor(addr: 0x10000, len: 16, id: 0, flags: 0)])
        #expect(throws: e.indirectWithNext) { try walk(g, [(Self.table, 16, INDIRECT), (0x12000, 1, WRITE)]) }
        #expect(throws: e.indirectInChain) { try walk(g, [(0x10000, 16, 0), (Self.table, 16, INDIRECT)]) }
        setTable(g, [PackedDescriptor(addr: 0x10000, len: 16, id: 0, flags: 0),
                     PackedDescriptor(addr: Self.table, len: 32, id: 0, flags: INDIRECT)])
        #expect(throws: e.indirectNested) { try walk(g, [(Self.table, 32, INDIRECT)]) }
        #expect(throws: e.indirectEmpty) { try walk(g, [(Self.table, 0, INDIRECT)]) }
        #expect(throws: e.indirectBadLength(20)) { try walk(g, [(Self.table, 20, INDIRECT)]) }
        #expect(throws: e.indirectTooLong(16 * 1025)) { try walk(g, [(Self.table, 16 * 1025, INDIRECT)]) }
        #expect(throws: e.addressUnmapped(addr: 0xffff0, length: 32)) { try walk(g, [(0xffff0, 32, INDIRECT)]) }
        #expect(throws: e.addressOverflow(addr: UInt64.max - 15, length: 32)) { try walk(g, [(UInt64.max - 15, 32, INDIRECT)]) }
        // A table entry pointing outside memory.
        setTable(g, [PackedDescriptor(addr: 0x200000, len: 8, id: 0, flags: WRITE)])
        #expect(throws: e.addressUnmapped(addr: 0x200000, length: 8)) { try walk(g, [(Self.table, 16, INDIRECT)]) }
    }

    /// The walker reads exactly the slots `popAvail` measured, even if the guest
    /// rewrites NEXT flags in between, and refuses a head it did not produce.
    @Test func walksTheMeasuredSlotsOnly() throws {
        let g = try FakeGuest(queueSize: 4)
        let drv = FakePackedDriver(g)
        var q = try drv.makeQueue()
        drv.add([(0x10000, 16, 0), (0x12000, 1, WRITE)], id: 2)
        let head = try #require(try q.popAvail())
        // The guest now claims every slot continues.
        for slot: UInt16 in 0..<4 {
            var d = drv.desc(slot); d.flags |= NEXT; drv.setDesc(slot, d)
        }
        drv.setDesc(2, PackedDescriptor(addr: 0x13000, len: 7, id: 2, flags: WRITE | NEXT | Self.A))
        let chain = try PackedChainWalker.walk(queue: q, head: head, memory: g.memory, into: g.iovecs)
        #expect(chain.segmentCount == 2 && chain.writableBytes == 1)
        let ring = UnsafeRawPointer(q.descRing)
        #expect(throws: VirtioError.ringIndexOutOfRange(4)) {
            try PackedChainWalker.walk(ring: ring, size: 4, head: PackedChainHead(index: 4, id: 0, slotCount: 1),
                                       memory: g.memory, into: g.iovecs)
        }
        for bad: UInt16 in [0, 5] {
            #expect(throws: VirtioError.chainTooLong) {
                try PackedChainWalker.walk(ring: ring, size: 4, head: PackedChainHead(index: 0, id: 0, slotCount: bad),
                                           memory: g.memory, into: g.iovecs)
            }
        }
        // A chain measured across the end reads slots 3 and 0, in that order.
        drv.setDesc(3, PackedDescriptor(addr: 0x14000, len: 4, id: 0, flags: 0))
        let across = try PackedChainWalker.walk(
            ring: ring, size: 4, head: PackedChainHead(index: 3, id: 0, slotCount: 2), memory: g.memory, into: g.iovecs)
        #expect(across.segmentCount == 2 && g.iov(0).base == g.host(0x14000) && g.iov(1).base == g.host(0x10000))
    }
}

extension PackedQueue {
    /// Test helper: makes `descs` available through `drv` and pops them.
    fileprivate mutating func popAvailOrFail(_ drv: FakePackedDriver, _ descs: [(UInt64, UInt32, UInt16)]) throws -> PackedChainHead? {
        drv.add(descs, id: 1)
        return try popAvail()
    }
}
