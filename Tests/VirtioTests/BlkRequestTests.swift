import Glibc
import Testing
import Virtio

@Suite struct BlkRequestTests {
    @Test func readWithSeparateDescriptors() throws {
        let g = try FakeGuest()
        g.write(FakeGuest.header(type: 0, sector: 42, ioprio: 7), at: 0x10000)
        g.setDesc(0, Descriptor(addr: 0x10000, len: 16, flags: NEXT, next: 1))
        g.setDesc(1, Descriptor(addr: 0x11000, len: 4096, flags: NEXT | WRITE, next: 2))
        g.setDesc(2, Descriptor(addr: 0x12000, len: 1, flags: WRITE, next: 0))
        let r = try BlkRequestParser.parse(try g.walk(head: 0), iovecs: g.iovecs)
        #expect(r.type == .in && r.sector == 42 && r.ioprio == 7 && r.head == 0)
        #expect(r.dataRange == 1..<2 && r.dataLength == 4096 && r.writableBytes == 4097)
        #expect(UnsafeMutableRawPointer(r.status) == g.host(0x12000))
        r.setStatus(.unsupported)
        #expect(g.byte(at: 0x12000) == 2)
        #expect(r.checkReadWrite(capacity: 50) == .ok)
        #expect(r.checkReadWrite(capacity: 49) == .ioErr)
    }

    @Test func writeWithHeaderAndDataInOneDescriptor() throws {
        let g = try FakeGuest()
        g.write(FakeGuest.header(type: 1, sector: 9), at: 0x10000)
        g.setDesc(0, Descriptor(addr: 0x10000, len: 16 + 1024, flags: NEXT, next: 1))
        g.setDesc(1, Descriptor(addr: 0x12000, len: 1, flags: WRITE, next: 0))
        let r = try BlkRequestParser.parse(try g.walk(head: 0), iovecs: g.iovecs)
        #expect(r.type == .out && r.sector == 9)
        #expect(r.dataRange == 0..<1 && r.dataLength == 1024 && r.writableBytes == 1)
        #expect(g.iov(0).base == g.host(0x10010) && g.iov(0).len == 1024)
    }

    @Test func statusSharesLastWritableBuffer() throws {
        let g = try FakeGuest()
        g.write(FakeGuest.header(type: 0, sector: 0), at: 0x10000)
        g.setDesc(0, Descriptor(addr: 0x10000, len: 16, flags: NEXT, next: 1))
        g.setDesc(1, Descriptor(addr: 0x11000, len: 513, flags: WRITE, next: 0))
        let r = try BlkRequestParser.parse(try g.walk(head: 0), iovecs: g.iovecs)
        #expect(r.dataRange == 1..<2 && r.dataLength == 512 && r.writableBytes == 513)
        #expect(g.iov(1).len == 512)
        #expect(UnsafeMutableRawPointer(r.status) == g.host(0x11000 + 512))
    }

    @Test func headerSpansSegments() throws {
        let g = try FakeGuest()
        let h = FakeGuest.header(type: 1, sector: 0x1122_3344_5566_7788)
        g.write(Array(h[0..<5]), at: 0x10000)
        g.write(Array(h[5...]), at: 0x10800)
        g.setDesc(0, Descriptor(addr: 0x10000, len: 5, flags: NEXT, next: 1))
        g.setDesc(1, Descriptor(addr: 0x10800, len: 11 + 512, flags: NEXT, next: 2))
        g.setDesc(2, Descriptor(addr: 0x12000, len: 1, flags: WRITE, next: 0))
        let r = try BlkRequestParser.parse(try g.walk(head: 0), iovecs: g.iovecs)
        #expect(r.type == .out && r.sector == 0x1122_3344_5566_7788)
        #expect(r.dataRange == 1..<2 && r.dataLength == 512)
        #expect(g.iov(1).base == g.host(0x10800 + 11) && g.iov(1).len == 512)
    }

    @Test func flushHasNoData() throws {
        let g = try FakeGuest()
        g.write(FakeGuest.header(type: 4, sector: 0), at: 0x10000)
        g.setDesc(0, Descriptor(addr: 0x10000, len: 16, flags: NEXT, next: 1))
        g.setDesc(1, Descriptor(addr: 0x12000, len: 1, flags: WRITE, next: 0))
        let r = try BlkRequestParser.parse(try g.walk(head: 0), iovecs: g.iovecs)
        #expect(r.type == .flush && r.dataRange.isEmpty && r.dataLength == 0 && r.writableBytes == 1)
    }

    @Test func malformedRequests() throws {
        let g = try FakeGuest()
        g.write(FakeGuest.header(type: 0, sector: 0), at: 0x10000)
        // No writable byte at all.
        g.setDesc(0, Descriptor(addr: 0x10000, len: 16, flags: 0, next: 0))
        #expect(throws: VirtioError.missingStatus) { try BlkRequestParser.parse(try g.walk(head: 0), iovecs: g.iovecs) }

        // Header too short; iovecs untouched and the status byte still reachable.
        g.setDesc(0, Descriptor(addr: 0x10000, len: 8, flags: NEXT, next: 1))
        g.setDesc(1, Descriptor(addr: 0x12000, len: 1, flags: WRITE, next: 0))
        let short = try g.walk(head: 0)
        #expect(throws: VirtioError.headerTooShort(8)) { try BlkRequestParser.parse(short, iovecs: g.iovecs) }
        #expect(BlkRequestParser.statusPointer(short, iovecs: g.iovecs).map(UnsafeMutableRawPointer.init) == g.host(0x12000))
        #expect(g.iov(1).len == 1)

        // IN whose data is device-readable.
        g.setDesc(0, Descriptor(addr: 0x10000, len: 16 + 512, flags: NEXT, next: 1))
        #expect(throws: VirtioError.dataDirectionMismatch(type: 0)) {
            try BlkRequestParser.parse(try g.walk(head: 0), iovecs: g.iovecs)
        }
        // OUT whose data is device-writable.
        g.write(FakeGuest.header(type: 1, sector: 0), at: 0x10000)
        g.setDesc(0, Descriptor(addr: 0x10000, len: 16, flags: NEXT, next: 1))
        g.setDesc(1, Descriptor(addr: 0x11000, len: 513, flags: WRITE, next: 0))
        #expect(throws: VirtioError.dataDirectionMismatch(type: 1)) {
            try BlkRequestParser.parse(try g.walk(head: 0), iovecs: g.iovecs)
        }
    }

    @Test func rangeChecks() {
        #expect(BlkRequest.rangeFits(sector: 0, count: 100, capacity: 100))
        #expect(BlkRequest.rangeFits(sector: 100, count: 0, capacity: 100))
        #expect(!BlkRequest.rangeFits(sector: 101, count: 0, capacity: 100))
        #expect(!BlkRequest.rangeFits(sector: 1, count: 100, capacity: 100))
        #expect(!BlkRequest.rangeFits(sector: 2, count: UInt64.max, capacity: 100))
        #expect(!BlkRequest.rangeFits(sector: UInt64.max, count: 2, capacity: 100))
        let p = UnsafeMutablePointer<UInt8>.allocate(capacity: 1)
        defer { p.deallocate() }
        let r = BlkRequest(head: 0, type: .in, ioprio: 0, sector: 0, status: p, dataRange: 0..<1, dataLength: 513, writableBytes: 514)
        #expect(r.checkReadWrite(capacity: 1000) == .ioErr)  // not a multiple of 512
    }

    @Test func discardSegments() throws {
        let g = try FakeGuest()
        g.write(FakeGuest.header(type: 11, sector: 0), at: 0x10000)
        let s1 = DiscardSegment(sector: 8, numSectors: 16, flags: 0)
        let s2 = DiscardSegment(sector: 1 << 40, numSectors: 1, flags: DiscardSegment.flagUnmap | 2)
        g.write(s1.bytes, at: 0x7fff8)  // straddles the two regions
        g.write(s2.bytes, at: 0x80008)
        g.setDesc(0, Descriptor(addr: 0x10000, len: 16, flags: NEXT, next: 1))
        g.setDesc(1, Descriptor(addr: 0x7fff8, len: 32, flags: NEXT, next: 2))
        g.setDesc(2, Descriptor(addr: 0x12000, len: 1, flags: WRITE, next: 0))
        let r = try BlkRequestParser.parse(try g.walk(head: 0), iovecs: g.iovecs)
        let segs = try DiscardSegment.decode(r, iovecs: g.iovecs, maxSegments: 4)
        #expect(segs == [s1, s2])
        #expect(!segs[0].unmap && segs[1].unmap && segs[1].hasUnknownFlags)
        #expect(throws: VirtioError.badDataLength(32)) { try DiscardSegment.decode(r, iovecs: g.iovecs, maxSegments: 1) }

        g.setDesc(1, Descriptor(addr: 0x7fff8, len: 20, flags: NEXT, next: 2))
        let bad = try BlkRequestParser.parse(try g.walk(head: 0), iovecs: g.iovecs)
        #expect(throws: VirtioError.badDataLength(20)) { try DiscardSegment.decode(bad, iovecs: g.iovecs, maxSegments: 4) }
    }

    @Test func getIDFillsSerial() throws {
        let g = try FakeGuest()
        g.write(FakeGuest.header(type: 8, sector: 0), at: 0x10000)
        g.write([UInt8](repeating: 0xff, count: 32), at: 0x11000)
        g.setDesc(0, Descriptor(addr: 0x10000, len: 16, flags: NEXT, next: 1))
        g.setDesc(1, Descriptor(addr: 0x11000, len: 21, flags: WRITE, next: 0))
        let r = try BlkRequestParser.parse(try g.walk(head: 0), iovecs: g.iovecs)
        #expect(r.type == .getID && r.dataLength == 20)
        #expect(BlkGetID.fill(serial: "vm1-disk", request: r, iovecs: g.iovecs) == 20)
        let written = (0..<20).map { g.byte(at: 0x11000 + UInt64($0)) }
        #expect(written == Array("vm1-disk".utf8) + [UInt8](repeating: 0, count: 12))

        // A longer serial is truncated; a shorter buffer takes what fits.
        let long = String(repeating: "x", count: 30)
        #expect(BlkGetID.fill(serial: long, request: r, iovecs: g.iovecs) == 20)
        #expect(g.byte(at: 0x11000 + 19) == UInt8(ascii: "x") && g.byte(at: 0x11000 + 20) == 0xff)
        g.setDesc(1, Descriptor(addr: 0x11000, len: 9, flags: WRITE, next: 0))
        let small = try BlkRequestParser.parse(try g.walk(head: 0), iovecs: g.iovecs)
        #expect(BlkGetID.fill(serial: "abc", request: small, iovecs: g.iovecs) == 8)
    }

    @Test func iovecCursorBounds() throws {
        let g = try FakeGuest()
        g.write([1, 2, 3, 4, 5, 6], at: 0x7fffd)
        var count = 0
        #expect(g.memory.appendIOVecs(gpa: 0x7fffd, length: 6, to: g.iovecs, count: &count))
        var cursor = IOVecCursor(g.iovecs, range: 0..<count)
        #expect(cursor.remaining == 6)
        #expect(cursor.skip(1) == 1)
        var out = [UInt8](repeating: 0, count: 10)
        #expect(out.withUnsafeMutableBytes { cursor.copyOut(into: $0) } == 5)
        #expect(Array(out[0..<5]) == [2, 3, 4, 5, 6])
        #expect(cursor.remaining == 0)
        var clamped = IOVecCursor(g.iovecs, range: 0..<1000)
        #expect(clamped.zero(count: 3) == 3)
        #expect(g.byte(at: 0x7ffff) == 0 && g.byte(at: 0x80000) == 4)
    }
}
