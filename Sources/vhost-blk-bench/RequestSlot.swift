import Glibc
import VhostUserFrontend

/// One in-flight request's guest buffers (header, data, status), allocated
/// once and reused for every I/O the slot carries, with its two prebuilt
/// descriptor chains (virtio 1.2 §5.2.6: header, data, status).
struct RequestSlot {
    let header: GuestBuffer
    let data: GuestBuffer
    let status: GuestBuffer
    /// header (ro), data (device-writable), status (wo).
    let readChain: [ChainBuffer]
    /// header (ro), data (device-readable), status (wo).
    let writeChain: [ChainBuffer]
    var submittedAt: UInt64 = 0
    var isWrite = false

    init(memory: FrontendMemory, blockSize: Int, fill: UInt8) throws(FrontendError) {
        header = try memory.allocate(16, alignment: 16)
        data = try memory.allocate(blockSize, alignment: 4096)
        status = try memory.allocate(1, alignment: 1)
        memset(data.pointer, Int32(fill), data.length)
        guard let length = UInt32(exactly: blockSize) else { throw .invalidArgument("block size \(blockSize)") }
        let head = ChainBuffer(gpa: header.gpa, length: 16, writable: false)
        let tail = ChainBuffer(gpa: status.gpa, length: 1, writable: true)
        readChain = [head, ChainBuffer(gpa: data.gpa, length: length, writable: true), tail]
        writeChain = [head, ChainBuffer(gpa: data.gpa, length: length, writable: false), tail]
    }

    /// Writes the request header (`le32 type, le32 ioprio, le64 sector`) and poisons the status byte.
    func prepare(write: Bool, sector: UInt64) {
        let type = write ? BlkWire.typeOut : BlkWire.typeIn
        header.pointer.storeBytes(of: type.littleEndian, toByteOffset: 0, as: UInt32.self)
        header.pointer.storeBytes(of: UInt32(0), toByteOffset: 4, as: UInt32.self)
        header.pointer.storeBytes(of: sector.littleEndian, toByteOffset: 8, as: UInt64.self)
        status.pointer.storeBytes(of: 0xff, as: UInt8.self)
    }

    /// The status byte the device wrote (0xff if it wrote none).
    var statusByte: UInt8 { status.pointer.load(as: UInt8.self) }

    func release(to memory: FrontendMemory) {
        memory.release(header)
        memory.release(data)
        memory.release(status)
    }
}
