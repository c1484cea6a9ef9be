import Glibc
import Testing
import Virtio

@Suite struct DescriptorChainTests {
    @Test func headerDataStatus() throws {
        let g = try FakeGuest()
        g.setDesc(0, Descriptor(addr: 0x10000, len: 16, flags: NEXT, next: 1))
        g.setDesc(1, Descriptor(addr: 0x11000, len: 4096, flags: NEXT | WRITE, next: 2))
        g.setDesc(2, Descriptor(addr: 0x12000, len: 1, flags: WRITE, next: 0))
        let c = try g.walk(head: 0)
        #expect(c == ChainBuffers(head: 0, readableCount: 1, writableCount: 2, readableBytes: 16, writableBytes: 4097))
        #expect(g.iov(0).base == g.host(0x10000) && g.iov(0).len == 16)
        #expect(g.iov(1).base == g.host(0x11000) && g.iov(1).len == 4096)
        #expect(g.iov(2).base == g.host(0x12000) && g.iov(2).len == 1)
    }

    @Test func queueOverloadWalksTheSameTable() throws {
        let g = try FakeGuest()
        g.setDesc(4, Descriptor(addr: 0x10000, len: 16, flags: 0, next: 0))
        let q = try g.makeQueue()
        let c = try DescriptorChainWalker.walk(queue: q, head: 4, memory: g.memory, into: g.iovecs)
        #expect(c.readableCount == 1 && c.readableBytes == 16 && c.writableCount == 0)
    }

    @Test func skipsZeroLengthAndSplitsSpanningBuffers() throws {
        let g = try FakeGuest()
        g.setDesc(0, Descriptor(addr: 0x10000, len: 16, flags: NEXT, next: 1))
        g.setDesc(1, Descriptor(addr: 0xdead_0000, len: 0, flags: NEXT, next: 2))  // unmapped, but empty
        g.setDesc(2, Descriptor(addr: 0x7f000, len: 0x2000, flags: NEXT | WRITE, next: 3))
        g.setDesc(3, Descriptor(addr: 0x12000, len: 1, flags: WRITE, next: 0))
        let c = try g.walk(head: 0)
        #expect(c.readableCount == 1 && c.writableCount == 3 && c.writableBytes == 0x2001)
        #expect(g.iov(1).base == g.host(0x7f000) && g.iov(1).len == 0x1000)
        #expect(g.iov(2).base == g.host(0x80000) && g.iov(2).len == 0x1000)
    }

    @Test func indirectTable() throws {
        let g = try FakeGuest()
        let table: UInt64 = 0x20000
        g.setDesc(table: table, 0, Descriptor(addr: 0x10000, len: 16, flags: NEXT, next: 2))
        g.setDesc(table: table, 2, Descriptor(addr: 0x11000, len: 512, flags: NEXT, next: 1))
        g.setDesc(table: table, 1, Descriptor(addr: 0x12000, len: 1, flags: WRITE, next: 0))
        g.setDesc(0, Descriptor(addr: 0x13000, len: 8, flags: NEXT, next: 1))  // direct before indirect
        g.setDesc(1, Descriptor(addr: table, len: 48, flags: INDIRECT | WRITE, next: 0))
        let c = try g.walk(head: 0)
        #expect(c == ChainBuffers(head: 0, readableCount: 3, writableCount: 1, readableBytes: 536, writableBytes: 1))
        #expect(g.iov(1).base == g.host(0x10000))
        #expect(g.iov(2).base == g.host(0x11000) && g.iov(2).len == 512)
        #expect(g.iov(3).base == g.host(0x12000))
    }

    @Test func indirectTableSpanningRegions() throws {
        let g = try FakeGuest()
        let table: UInt64 = 0x7fff0  // entry 0 in region A, entry 1 in region B
        g.setDesc(table: table, 0, Descriptor(addr: 0x10000, len: 16, flags: NEXT, next: 1))
        g.setDesc(table: table, 1, Descriptor(addr: 0x12000, len: 1, flags: WRITE, next: 0))
        g.setDesc(0, Descriptor(addr: table, len: 32, flags: INDIRECT, next: 0))
        let c = try g.walk(head: 0)
        #expect(c.readableBytes == 16 && c.writableBytes == 1)
        #expect(g.iov(1).base == g.host(0x12000))
    }

    @Test func loopIsRejected() throws {
        let g = try FakeGuest()
        g.setDesc(0, Descriptor(addr: 0x10000, len: 16, flags: NEXT, next: 1))
        g.setDesc(1, Descriptor(addr: 0x10000, len: 16, flags: NEXT, next: 0))
        #expect(throws: VirtioError.chainTooLong) { try g.walk(head: 0) }
        g.setDesc(1, Descriptor(addr: 0x10000, len: 16, flags: NEXT, next: 1))  // self-loop
        #expect(throws: VirtioError.chainTooLong) { try g.walk(head: 1) }
    }

    @Test func loopInsideIndirectIsRejected() throws {
        let g = try FakeGuest()
        let table: UInt64 = 0x20000
        g.setDesc(table: table, 0, Descriptor(addr: 0x10000, len: 16, flags: NEXT, next: 1))
        g.setDesc(table: table, 1, Descriptor(addr: 0x10000, len: 16, flags: NEXT, next: 0))
        g.setDesc(0, Descriptor(addr: table, len: 32, flags: INDIRECT, next: 0))
        #expect(throws: VirtioError.chainTooLong) { try g.walk(head: 0) }
    }

    @Test func fullLengthChainIsAccepted() throws {
        let g = try FakeGuest()
        for i in 0..<8 {
            g.setDesc(i, Descriptor(addr: 0x10000, len: 1, flags: i < 7 ? NEXT : 0, next: UInt16(i + 1)))
        }
        #expect(try g.walk(head: 0).readableCount == 8)
    }

    @Test func indexesOutOfRange() throws {
        let g = try FakeGuest()
        #expect(throws: VirtioError.headOutOfRange(8)) { try g.walk(head: 8) }
        g.setDesc(0, Descriptor(addr: 0x10000, len: 16, flags: NEXT, next: 8))
        #expect(throws: VirtioError.nextOutOfRange(8)) { try g.walk(head: 0) }
        // Inside an indirect table, next is bounded by the table, not the queue.
        g.setDesc(table: 0x20000, 0, Descriptor(addr: 0x10000, len: 16, flags: NEXT, next: 2))
        g.setDesc(1, Descriptor(addr: 0x20000, len: 32, flags: INDIRECT, next: 0))
        #expect(throws: VirtioError.nextOutOfRange(2)) { try g.walk(head: 1) }
    }

    @Test func badIndirectTables() throws {
        let g = try FakeGuest()
        g.setDesc(table: 0x20000, 0, Descriptor(addr: 0x21000, len: 16, flags: INDIRECT, next: 0))
        g.setDesc(0, Descriptor(addr: 0x20000, len: 16, flags: INDIRECT, next: 0))
        #expect(throws: VirtioError.indirectNested) { try g.walk(head: 0) }

        g.setDesc(0, Descriptor(addr: 0x20000, len: 24, flags: INDIRECT, next: 0))
        #expect(throws: VirtioError.indirectBadLength(24)) { try g.walk(head: 0) }

        g.setDesc(0, Descriptor(addr: 0x20000, len: 0, flags: INDIRECT, next: 0))
        #expect(throws: VirtioError.indirectEmpty) { try g.walk(head: 0) }

        g.setDesc(0, Descriptor(addr: 0x20000, len: 1025 * 16, flags: INDIRECT, next: 0))
        #expect(throws: VirtioError.indirectTooLong(1025 * 16)) { try g.walk(head: 0) }

        g.setDesc(0, Descriptor(addr: 0x20000, len: 32, flags: INDIRECT | NEXT, next: 1))
        #expect(throws: VirtioError.indirectWithNext) { try g.walk(head: 0) }

        g.setDesc(0, Descriptor(addr: 0xfffe0, len: 64, flags: INDIRECT, next: 0))
        #expect(throws: VirtioError.addressUnmapped(addr: 0xfffe0, length: 64)) { try g.walk(head: 0) }

        g.setDesc(0, Descriptor(addr: UInt64.max - 15, len: 32, flags: INDIRECT, next: 0))
        #expect(throws: VirtioError.addressOverflow(addr: UInt64.max - 15, length: 32)) { try g.walk(head: 0) }
    }

    @Test func badBuffers() throws {
        let g = try FakeGuest()
        g.setDesc(0, Descriptor(addr: 0x200000, len: 16, flags: 0, next: 0))
        #expect(throws: VirtioError.addressUnmapped(addr: 0x200000, length: 16)) { try g.walk(head: 0) }

        g.setDesc(0, Descriptor(addr: 0xffff8, len: 16, flags: 0, next: 0))  // runs off region B
        #expect(throws: VirtioError.addressUnmapped(addr: 0xffff8, length: 16)) { try g.walk(head: 0) }

        g.setDesc(0, Descriptor(addr: UInt64.max - 5, len: 16, flags: WRITE, next: 0))
        #expect(throws: VirtioError.addressOverflow(addr: UInt64.max - 5, length: 16)) { try g.walk(head: 0) }

        g.setDesc(0, Descriptor(addr: 0x11000, len: 16, flags: WRITE | NEXT, next: 1))
        g.setDesc(1, Descriptor(addr: 0x10000, len: 16, flags: 0, next: 0))
        #expect(throws: VirtioError.readableAfterWritable) { try g.walk(head: 0) }
    }

    @Test func tooManySegments() throws {
        let g = try FakeGuest(iovecCapacity: 2)
        g.setDesc(0, Descriptor(addr: 0x10000, len: 16, flags: NEXT, next: 1))
        g.setDesc(1, Descriptor(addr: 0x11000, len: 16, flags: NEXT | WRITE, next: 2))
        g.setDesc(2, Descriptor(addr: 0x12000, len: 1, flags: WRITE, next: 0))
        #expect(throws: VirtioError.tooManySegments(limit: 2)) { try g.walk(head: 0) }
        // A buffer split across regions also counts twice.
        g.setDesc(0, Descriptor(addr: 0x10000, len: 16, flags: NEXT, next: 1))
        g.setDesc(1, Descriptor(addr: 0x7fff0, len: 32, flags: WRITE, next: 0))
        #expect(throws: VirtioError.tooManySegments(limit: 2)) { try g.walk(head: 0) }
    }
}
