import Glibc
import VhostUser
import Virtio

/// virtio-blk request types and status values (virtio 1.2 §5.2.6), kept
/// local so the front end encodes requests independently of the daemon.
public enum BlkWire {
    public static let typeIn: UInt32 = 0
    public static let typeOut: UInt32 = 1
    public static let typeFlush: UInt32 = 4
    public static let typeGetID: UInt32 = 8
    public static let typeDiscard: UInt32 = 11
    public static let typeWriteZeroes: UInt32 = 13
    public static let statusOK: UInt8 = 0
    public static let statusIOErr: UInt8 = 1
    public static let statusUnsupported: UInt8 = 2
    public static let sectorSize = 512
    /// GET_ID returns up to 20 bytes.
    public static let idLength = 20

    /// The 16-byte request header: `le32 type, le32 ioprio, le64 sector`.
    public static func header(type: UInt32, sector: UInt64, ioprio: UInt32 = 0) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 16)
        b.withUnsafeMutableBytes { raw in
            raw.storeBytes(of: type.littleEndian, toByteOffset: 0, as: UInt32.self)
            raw.storeBytes(of: ioprio.littleEndian, toByteOffset: 4, as: UInt32.self)
            raw.storeBytes(of: sector.littleEndian, toByteOffset: 8, as: UInt64.self)
        }
        return b
    }
}

/// One discard / write-zeroes segment: `le64 sector, le32 num_sectors, le32 flags` (bit 0 unmap).
public struct BlkSegment: Sendable, Equatable {
    public var sector: UInt64
    public var sectors: UInt32
    public var flags: UInt32

    public init(sector: UInt64, sectors: UInt32, unmap: Bool = false) {
        self.sector = sector
        self.sectors = sectors
        self.flags = unmap ? 1 : 0
    }

    public init(sector: UInt64, sectors: UInt32, flags: UInt32) {
        self.sector = sector
        self.sectors = sectors
        self.flags = flags
    }

    /// The 16 bytes on the wire (virtio 1.2 §5.2.6: sector, num_sectors, flags, little-endian).
    public var bytes: [UInt8] {
        var b = [UInt8](repeating: 0, count: 16)
        b.withUnsafeMutableBytes { raw in
            raw.storeBytes(of: sector.littleEndian, toByteOffset: 0, as: UInt64.self)
            raw.storeBytes(of: sectors.littleEndian, toByteOffset: 8, as: UInt32.self)
            raw.storeBytes(of: flags.littleEndian, toByteOffset: 12, as: UInt32.self)
        }
        return b
    }
}

/// The outcome of one request: status byte, used length, and the bytes the
/// device wrote into the data-in buffer.
public struct BlkCompletion: Sendable, Equatable {
    public var status: UInt8
    public var usedLength: UInt32
    public var data: [UInt8]
    public var head: UInt16
}

/// How to lay a request out in descriptors.
public struct BlkLayout: Sendable {
    /// Use one INDIRECT descriptor.
    public var indirect = false
    /// Split each data buffer into pieces of at most this many bytes (more segments).
    public var maxSegmentBytes: Int? = nil
    /// Put the data buffer across the two memory regions (needs split, contiguous memory).
    public var straddleRegions = false
    /// Merge the status byte into the end of the data-in buffer (one writable descriptor).
    public var statusInDataBuffer = false
    public var timeout: Duration = .seconds(5)
    public var busyPoll = false

    public init(
        indirect: Bool = false, maxSegmentBytes: Int? = nil, straddleRegions: Bool = false,
        statusInDataBuffer: Bool = false, timeout: Duration = .seconds(5), busyPoll: Bool = false
    ) {
        self.indirect = indirect
        self.maxSegmentBytes = maxSegmentBytes
        self.straddleRegions = straddleRegions
        self.statusInDataBuffer = statusInDataBuffer
        self.timeout = timeout
        self.busyPoll = busyPoll
    }
}

extension VhostUserFrontend {
    /// Reads `count` sectors at `sector`.
    public func read(queue: Int = 0, sector: UInt64, count: Int, layout: BlkLayout = BlkLayout()) throws(FrontendError) -> BlkCompletion {
        try request(queue: queue, type: BlkWire.typeIn, sector: sector, dataOut: [], dataInLength: count * BlkWire.sectorSize, layout: layout)
    }

    /// Writes `data` (a multiple of 512 bytes) at `sector`.
    public func write(queue: Int = 0, sector: UInt64, data: [UInt8], layout: BlkLayout = BlkLayout()) throws(FrontendError) -> BlkCompletion {
        try request(queue: queue, type: BlkWire.typeOut, sector: sector, dataOut: data, dataInLength: 0, layout: layout)
    }

    public func flush(queue: Int = 0, layout: BlkLayout = BlkLayout()) throws(FrontendError) -> BlkCompletion {
        try request(queue: queue, type: BlkWire.typeFlush, sector: 0, dataOut: [], dataInLength: 0, layout: layout)
    }

    /// GET_ID: the 20-byte serial in `data`.
    public func getID(queue: Int = 0, layout: BlkLayout = BlkLayout()) throws(FrontendError) -> BlkCompletion {
        try request(queue: queue, type: BlkWire.typeGetID, sector: 0, dataOut: [], dataInLength: BlkWire.idLength, layout: layout)
    }

    public func discard(queue: Int = 0, segments: [BlkSegment], layout: BlkLayout = BlkLayout()) throws(FrontendError) -> BlkCompletion {
        try request(queue: queue, type: BlkWire.typeDiscard, sector: 0, dataOut: segments.flatMap(\.bytes), dataInLength: 0, layout: layout)
    }

    /// WRITE_ZEROES; `unmap` sets flag bit 0 on every segment.
    public func writeZeroes(queue: Int = 0, segments: [BlkSegment], unmap: Bool = false, layout: BlkLayout = BlkLayout()) throws(FrontendError) -> BlkCompletion {
        let segs = segments.map { s in
            BlkSegment(sector: s.sector, sectors: s.sectors, flags: unmap ? s.flags | 1 : s.flags)
        }
        return try request(queue: queue, type: BlkWire.typeWriteZeroes, sector: 0, dataOut: segs.flatMap(\.bytes), dataInLength: 0, layout: layout)
    }

    /// Any request: header, `dataOut` (device-readable), `dataInLength`
    /// device-writable bytes, then the status byte. Waits for its used entry.
    public func request(
        queue: Int, type: UInt32, sector: UInt64, dataOut: [UInt8], dataInLength: Int, layout: BlkLayout = BlkLayout()
    ) throws(FrontendError) -> BlkCompletion {
        let q = try driverQueue(queue)
        var owned: [GuestBuffer] = []
        var chain: [ChainBuffer] = []
        // Buffers go back to the allocator only once the device returned them.
        var submitted = false
        defer { if !submitted { owned.forEach(memory.release) } }

        let header = try memory.allocate(16, alignment: 16)
        owned.append(header)
        header.write(BlkWire.header(type: type, sector: sector))
        chain.append(ChainBuffer(header, writable: false))

        if !dataOut.isEmpty {
            let buf = try dataBuffer(dataOut.count, layout: layout)
            owned.append(buf)
            buf.write(dataOut)
            chain += split(buf, writable: false, layout: layout)
        }
        var dataIn: GuestBuffer?
        let inLength = dataInLength + (layout.statusInDataBuffer ? 1 : 0)
        if inLength > 0 {
            let buf = try dataBuffer(inLength, layout: layout)
            owned.append(buf)
            dataIn = buf
            chain += split(buf, writable: true, layout: layout)
        }
        let status: GuestBuffer
        if layout.statusInDataBuffer, let buf = dataIn {
            status = GuestBuffer(gpa: buf.gpa + UInt64(dataInLength), pointer: buf.pointer + dataInLength, length: 1, offset: buf.offset + dataInLength)
        } else {
            status = try memory.allocate(1, alignment: 1)
            owned.append(status)
            chain.append(ChainBuffer(status, writable: true))
        }
        status.pointer.storeBytes(of: 0xff, as: UInt8.self)

        let head = layout.indirect
            ? try q.addIndirectChain(chain, owning: [])
            : try q.addChain(chain, owning: [])
        submitted = true
        q.publishAndKick()
        let used = try q.waitUsed(timeout: layout.timeout, busyPoll: layout.busyPoll)
        guard used.id == UInt32(head) else {
            throw .protocolViolation("used id \(used.id), expected head \(head)")
        }
        let result = BlkCompletion(
            status: status.pointer.load(as: UInt8.self), usedLength: used.length,
            data: dataIn?.read(count: dataInLength) ?? [], head: head)
        owned.forEach(memory.release)
        return result
    }

    /// Submits a hand-built chain of `buffers` (direct or indirect), kicks,
    /// and waits for its used entry. For malformed-request tests.
    public func submitChain(
        queue: Int, _ buffers: [ChainBuffer], indirect: Bool = false, timeout: Duration = .seconds(5)
    ) throws(FrontendError) -> UsedElement {
        let q = try driverQueue(queue)
        let head = indirect ? try q.addIndirectChain(buffers) : try q.addChain(buffers)
        q.publishAndKick()
        let used = try q.waitUsed(timeout: timeout)
        guard used.id == UInt32(head) else { throw .protocolViolation("used id \(used.id), expected head \(head)") }
        return used
    }

    /// The started queue `index`.
    public func driverQueue(_ index: Int) throws(FrontendError) -> DriverQueue {
        guard index >= 0, index < queues.count else { throw .invalidArgument("queue \(index) not started") }
        return queues[index]
    }

    private func dataBuffer(_ length: Int, layout: BlkLayout) throws(FrontendError) -> GuestBuffer {
        layout.straddleRegions ? try memory.allocateStraddlingSplit(length) : try memory.allocate(length, alignment: 512)
    }

    private func split(_ buf: GuestBuffer, writable: Bool, layout: BlkLayout) -> [ChainBuffer] {
        let piece = max(1, layout.maxSegmentBytes ?? buf.length)
        return stride(from: 0, to: buf.length, by: piece).map { off in
            ChainBuffer(gpa: buf.gpa + UInt64(off), length: UInt32(min(piece, buf.length - off)), writable: writable)
        }
    }
}
