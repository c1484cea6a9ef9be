import Glibc
import Testing
import Virtio

/// The virtio-blk executor (virtio 1.2 §5.2.6) on requests in fake guest
/// memory: the same code the daemon's virtqueue servers run.
@Suite struct BlkExecutorTests {
    /// 1 MiB disk.
    static let disk = BlkDisk(capacitySectors: 2048, readOnly: false, serial: BlkSerial("disk-1"))

    /// Parses a request of `type` at `sector` with `dataOut` device-readable
    /// bytes (at 0x11000) or `dataIn` device-writable ones (at 0x12000, pre-filled with 0xff).
    static func request(_ g: FakeGuest, type: UInt32, sector: UInt64 = 0, dataOut: [UInt8] = [], dataIn: Int = 0) throws -> BlkRequest {
        g.write(FakeGuest.header(type: type, sector: sector), at: 0x10000)
        g.setDesc(0, Descriptor(addr: 0x10000, len: 16, flags: NEXT, next: 1))
        var next = 1
        if !dataOut.isEmpty {
            g.write(dataOut, at: 0x11000)
            g.setDesc(next, Descriptor(addr: 0x11000, len: UInt32(dataOut.count), flags: NEXT, next: UInt16(next + 1)))
            next += 1
        }
        if dataIn > 0 {
            g.write([UInt8](repeating: 0xff, count: dataIn), at: 0x12000)
            g.setDesc(next, Descriptor(addr: 0x12000, len: UInt32(dataIn), flags: WRITE | NEXT, next: UInt16(next + 1)))
            next += 1
        }
        g.setDesc(next, Descriptor(addr: 0x13000, len: 1, flags: WRITE, next: 0))
        return try BlkRequestParser.parse(try g.walk(head: 0), iovecs: g.iovecs)
    }

    static func start(_ g: FakeGuest, _ r: BlkRequest, disk: BlkDisk = disk) -> BlkStep {
        BlkExecutor.start(r, iovecs: g.iovecs, disk: disk)
    }

    @Test func readsAndWritesBecomeOperationsInsideTheDisk() throws {
        let g = try FakeGuest()
        let read = try Self.request(g, type: 0, sector: 2047, dataIn: 512)
        #expect(Self.start(g, read) == .submit(BlkOperation(.read, offset: 2047 * 512, length: 512)))
        let write = try Self.request(g, type: 1, sector: 8, dataOut: [UInt8](repeating: 1, count: 4096))
        #expect(Self.start(g, write) == .submit(BlkOperation(.write, offset: 4096, length: 4096)))

        // Beyond the capacity, not whole sectors, read-only, empty.
        #expect(Self.start(g, try Self.request(g, type: 0, sector: 2048, dataIn: 512)) == .complete(.ioErr, usedLength: 1))
        #expect(Self.start(g, try Self.request(g, type: 0, sector: 2047, dataIn: 1024)) == .complete(.ioErr, usedLength: 1))
        #expect(Self.start(g, try Self.request(g, type: 1, sector: 0, dataOut: [1, 2, 3])) == .complete(.ioErr, usedLength: 1))
        var readOnly = Self.disk
        readOnly.readOnly = true
        #expect(Self.start(g, write, disk: readOnly) == .complete(.ioErr, usedLength: 1))
        #expect(Self.start(g, read, disk: readOnly) == .submit(BlkOperation(.read, offset: 2047 * 512, length: 512)))
        #expect(Self.start(g, try Self.request(g, type: 0, sector: 5)) == .complete(.ok, usedLength: 1))
    }

    @Test func completionsCheckTheBytesMovedAndTheCapacityNow() {
        let read = BlkOperation(.read, offset: 1024, length: 4096)
        #expect(BlkExecutor.finish(read, result: 4096, disk: Self.disk) == .complete(.ok, usedLength: 4097))
        #expect(BlkExecutor.finish(read, result: 512, disk: Self.disk) == .complete(.ioErr, usedLength: 1))
        #expect(BlkExecutor.finish(read, result: -EIO, disk: Self.disk) == .complete(.ioErr, usedLength: 1))
        // The disk shrank to 4 KiB while the read was in flight.
        let shrunk = BlkDisk(capacitySectors: 8, readOnly: false)
        #expect(BlkExecutor.finish(read, result: 4096, disk: shrunk) == .complete(.ioErr, usedLength: 1))

        let write = BlkOperation(.write, offset: 0, length: 512)
        #expect(BlkExecutor.finish(write, result: 512, disk: Self.disk) == .complete(.ok, usedLength: 1))
        var writeThrough = Self.disk
        writeThrough.syncsWrites = true
        #expect(BlkExecutor.finish(write, result: 512, disk: writeThrough) == .submit(BlkOperation(.writeSync, offset: 0, length: 512)))
        #expect(BlkExecutor.finish(write, result: -ENOSPC, disk: writeThrough) == .complete(.ioErr, usedLength: 1))
        #expect(BlkExecutor.finish(BlkOperation(.writeSync), result: 0, disk: writeThrough) == .complete(.ok, usedLength: 1))
        #expect(BlkExecutor.finish(BlkOperation(.writeSync), result: -EIO, disk: writeThrough) == .complete(.ioErr, usedLength: 1))
    }

    @Test func flushAndUnknownTypes() throws {
        let g = try FakeGuest()
        #expect(Self.start(g, try Self.request(g, type: 4)) == .submit(BlkOperation(.flush)))
        #expect(BlkExecutor.finish(BlkOperation(.flush), result: 0, disk: Self.disk) == .complete(.ok, usedLength: 1))
        #expect(BlkExecutor.finish(BlkOperation(.flush), result: -EIO, disk: Self.disk) == .complete(.ioErr, usedLength: 1))
        #expect(Self.start(g, try Self.request(g, type: 99)) == .complete(.unsupported, usedLength: 1))
        #expect(Self.start(g, try Self.request(g, type: 14, dataOut: DiscardSegment(sector: 0, numSectors: 1, flags: 0).bytes))
            == .complete(.unsupported, usedLength: 1))  // SECURE_ERASE is not offered
    }

    @Test func getIDWritesTheZeroPaddedField() throws {
        let g = try FakeGuest()
        g.write([UInt8](repeating: 0xff, count: 32), at: 0x12000)
        #expect(Self.start(g, try Self.request(g, type: 8, dataIn: 20)) == .complete(.ok, usedLength: 21))
        #expect((0..<21).map { g.byte(at: 0x12000 + UInt64($0)) } == Array("disk-1".utf8) + [UInt8](repeating: 0, count: 14) + [0xff])
        // A shorter buffer gets what fits, counted.
        #expect(Self.start(g, try Self.request(g, type: 8, dataIn: 4)) == .complete(.ok, usedLength: 5))
    }

    @Test func discardAndWriteZeroesTakeOneSegmentInsideTheDisk() throws {
        let g = try FakeGuest()
        func range(_ type: UInt32, _ segments: [DiscardSegment]) throws -> BlkStep {
            Self.start(g, try Self.request(g, type: type, dataOut: segments.flatMap(\.bytes)))
        }
        #expect(try range(11, [DiscardSegment(sector: 8, numSectors: 16, flags: 0)]) == .submit(BlkOperation(.discard, offset: 4096, length: 8192)))
        #expect(try range(13, [DiscardSegment(sector: 0, numSectors: 2048, flags: 0)]) == .submit(BlkOperation(.writeZeroes, offset: 0, length: 1 << 20)))
        #expect(try range(13, [DiscardSegment(sector: 0, numSectors: 1, flags: DiscardSegment.flagUnmap)]) == .submit(BlkOperation(.writeZeroes, offset: 0, length: 512)))
        // UNMAP on a discard and unknown flags: UNSUPP; two segments: UNSUPP; off the disk: IOERR; no sectors: OK.
        #expect(try range(11, [DiscardSegment(sector: 0, numSectors: 1, flags: DiscardSegment.flagUnmap)]) == .complete(.unsupported, usedLength: 1))
        #expect(try range(13, [DiscardSegment(sector: 0, numSectors: 1, flags: 2)]) == .complete(.unsupported, usedLength: 1))
        let two = [DiscardSegment(sector: 0, numSectors: 1, flags: 0), DiscardSegment(sector: 1, numSectors: 1, flags: 0)]
        #expect(try range(11, two) == .complete(.unsupported, usedLength: 1))
        #expect(try range(11, [DiscardSegment(sector: 2040, numSectors: 9, flags: 0)]) == .complete(.ioErr, usedLength: 1))
        #expect(try range(11, [DiscardSegment(sector: UInt64.max, numSectors: 2, flags: 0)]) == .complete(.ioErr, usedLength: 1))
        #expect(try range(13, [DiscardSegment(sector: 4, numSectors: 0, flags: 0)]) == .complete(.ok, usedLength: 1))
        #expect(Self.start(g, try Self.request(g, type: 11)) == .complete(.ioErr, usedLength: 1))  // no segment at all
        #expect(Self.start(g, try Self.request(g, type: 11, dataOut: [1, 2, 3])) == .complete(.unsupported, usedLength: 1))
        var readOnly = Self.disk
        readOnly.readOnly = true
        #expect(Self.start(g, try Self.request(g, type: 11, dataOut: DiscardSegment(sector: 0, numSectors: 1, flags: 0).bytes), disk: readOnly)
            == .complete(.ioErr, usedLength: 1))
    }

    @Test func requestsOverTheAdvertisedLimitsFail() throws {
        let g = try FakeGuest()
        var disk = Self.disk
        disk.limits = BlkLimits(maxTransferBytes: 4096, maxDiscardSectors: 8, maxWriteZeroesSectors: 16)
        #expect(Self.start(g, try Self.request(g, type: 0, sector: 0, dataIn: 4096), disk: disk)
            == .submit(BlkOperation(.read, offset: 0, length: 4096)))
        #expect(Self.start(g, try Self.request(g, type: 0, sector: 0, dataIn: 4608), disk: disk) == .complete(.ioErr, usedLength: 1))
        #expect(Self.start(g, try Self.request(g, type: 1, sector: 0, dataOut: [UInt8](repeating: 7, count: 8192)), disk: disk)
            == .complete(.ioErr, usedLength: 1))
        func range(_ type: UInt32, sectors: UInt32) throws -> BlkStep {
            Self.start(g, try Self.request(g, type: type, dataOut: DiscardSegment(sector: 0, numSectors: sectors, flags: 0).bytes), disk: disk)
        }
        #expect(try range(11, sectors: 8) == .submit(BlkOperation(.discard, offset: 0, length: 4096)))
        #expect(try range(11, sectors: 9) == .complete(.ioErr, usedLength: 1))
        #expect(try range(13, sectors: 16) == .submit(BlkOperation(.writeZeroes, offset: 0, length: 8192)))
        #expect(try range(13, sectors: 17) == .complete(.ioErr, usedLength: 1))
    }

    @Test func rangeCompletionsAndTheWriteZeroesFallback() {
        let discard = BlkOperation(.discard, offset: 0, length: 4096)
        #expect(BlkExecutor.finish(discard, result: 0, disk: Self.disk) == .complete(.ok, usedLength: 1))
        #expect(BlkExecutor.finish(discard, result: -EOPNOTSUPP, disk: Self.disk) == .complete(.ok, usedLength: 1))  // a hint
        #expect(BlkExecutor.finish(discard, result: -EIO, disk: Self.disk) == .complete(.ioErr, usedLength: 1))

        let zeroes = BlkOperation(.writeZeroes, offset: 512, length: 4096)
        var file = Self.disk
        file.punchesForZeroes = true
        #expect(BlkExecutor.finish(zeroes, result: -EOPNOTSUPP, disk: file) == .submit(BlkOperation(.punchZeroes, offset: 512, length: 4096)))
        #expect(BlkExecutor.finish(zeroes, result: -EINVAL, disk: file) == .submit(BlkOperation(.punchZeroes, offset: 512, length: 4096)))
        #expect(BlkExecutor.finish(zeroes, result: -EOPNOTSUPP, disk: Self.disk) == .complete(.ioErr, usedLength: 1))  // a block device
        #expect(BlkExecutor.finish(zeroes, result: 0, disk: file) == .complete(.ok, usedLength: 1))
        #expect(BlkExecutor.finish(BlkOperation(.punchZeroes), result: 0, disk: file) == .complete(.ok, usedLength: 1))
        #expect(BlkExecutor.finish(BlkOperation(.punchZeroes), result: -EIO, disk: file) == .complete(.ioErr, usedLength: 1))
    }

    @Test func serialIsTwentyBytesZeroPadded() {
        var bytes: [UInt8] = []
        BlkSerial("abc").withUnsafeBytes { bytes = Array($0) }
        #expect(bytes == Array("abc".utf8) + [UInt8](repeating: 0, count: 17))
        BlkSerial(String(repeating: "y", count: 25)).withUnsafeBytes { bytes = Array($0) }
        #expect(bytes == [UInt8](repeating: UInt8(ascii: "y"), count: 20))
        #expect(BlkSerial("a") != BlkSerial("b") && BlkSerial([97]) == BlkSerial("a"))
    }
}
