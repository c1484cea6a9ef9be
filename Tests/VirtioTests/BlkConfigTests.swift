import Testing
import Virtio

@Suite struct BlkConfigTests {
    func sample() -> BlkConfig {
        var c = BlkConfig()
        c.capacity = 0x0102_0304_0506_0708
        c.sizeMax = 65536
        c.segMax = 126
        c.cylinders = 0x1234
        c.heads = 16
        c.sectors = 63
        c.blkSize = 4096
        c.physicalBlockExp = 3
        c.alignmentOffset = 1
        c.minIOSize = 8
        c.optIOSize = 256
        c.writeback = 1
        c.numQueues = 0x0a0b
        c.maxDiscardSectors = 0xaabb_ccdd
        c.maxDiscardSeg = 1
        c.discardSectorAlignment = 8
        c.maxWriteZeroesSectors = 0x1111_2222
        c.maxWriteZeroesSeg = 2
        c.writeZeroesMayUnmap = 1
        return c
    }

    @Test func layoutOffsets() {
        let b = sample().layout
        #expect(b.count == 96)
        #expect(Array(b[0..<8]) == [8, 7, 6, 5, 4, 3, 2, 1])
        #expect(Array(b[8..<12]) == [0, 0, 1, 0])
        #expect(Array(b[12..<16]) == [126, 0, 0, 0])
        #expect(Array(b[16..<20]) == [0x34, 0x12, 16, 63])
        #expect(Array(b[20..<24]) == [0, 0x10, 0, 0])
        #expect(b[24] == 3 && b[25] == 1)
        #expect(Array(b[26..<28]) == [8, 0])
        #expect(Array(b[28..<32]) == [0, 1, 0, 0])
        #expect(b[32] == 1 && b[33] == 0)
        #expect(Array(b[34..<36]) == [0x0b, 0x0a])
        #expect(Array(b[36..<40]) == [0xdd, 0xcc, 0xbb, 0xaa])
        #expect(Array(b[40..<44]) == [1, 0, 0, 0])
        #expect(Array(b[44..<48]) == [8, 0, 0, 0])
        #expect(Array(b[48..<52]) == [0x22, 0x22, 0x11, 0x11])
        #expect(Array(b[52..<56]) == [2, 0, 0, 0])
        #expect(b[56] == 1)
        #expect(b[57...].allSatisfy { $0 == 0 })
    }

    @Test func partialReads() {
        let c = sample()
        let full = c.layout
        #expect(c.bytes(offset: 0, count: 57) == Array(full[0..<57]))
        #expect(c.bytes(offset: 20, count: 4) == [0, 0x10, 0, 0])
        #expect(c.bytes(offset: 90, count: 10) == Array(full[90..<96]) + [0, 0, 0, 0])
        #expect(c.bytes(offset: 200, count: 56) == [UInt8](repeating: 0, count: 56))
        #expect(c.bytes(offset: 0, count: 256).count == 256)
        #expect(c.bytes(offset: -4, count: 4) == [0, 0, 0, 0])
        #expect(c.bytes(offset: 0, count: -1).isEmpty)
        #expect(c.bytes(offset: Int.max, count: 3) == [0, 0, 0])
    }

    @Test func onlyWritebackIsWritable() {
        var c = sample()
        let accepted = c.applyWrite(offset: 32, bytes: [0])
        #expect(accepted && c.writeback == 0)
        let wide = c.applyWrite(offset: 0, bytes: [1, 2, 3, 4, 5, 6, 7, 8])
        let long = c.applyWrite(offset: 32, bytes: [1, 1])
        #expect(!wide && !long && c.writeback == 0)
        #expect(c.capacity == 0x0102_0304_0506_0708)
    }
}
