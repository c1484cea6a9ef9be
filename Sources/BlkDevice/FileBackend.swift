import BlockIO
import Glibc
import Posix
import Virtio

/// Files and block devices: each executor operation is one syscall
/// (preadv, pwritev, fdatasync, fallocate), run by an engine or inline.
enum FileBackend {
    /// The syscall for `operation` on `fd`; reads and writes move the
    /// `count` iovecs at `data` (the request's data segments).
    @inline(__always)
    static func ioOperation(_ operation: BlkOperation, fd: FileDescriptor, data: UnsafePointer<iovec>, count: Int) -> IOOperation {
        switch operation.kind {
        case .read:
            return .readv(fd: fd, iovecs: data, count: Int32(truncatingIfNeeded: count), offset: operation.offset)
        case .write:
            return .writev(fd: fd, iovecs: data, count: Int32(truncatingIfNeeded: count), offset: operation.offset)
        case .flush, .writeSync:
            return .fdatasync(fd: fd)
        case .discard, .punchZeroes:
            return .fallocate(fd: fd, mode: FallocateMode.punchHole, offset: operation.offset, length: operation.length)
        case .writeZeroes:
            return .fallocate(fd: fd, mode: FallocateMode.zeroRange, offset: operation.offset, length: operation.length)
        }
    }
}
