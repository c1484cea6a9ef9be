import Glibc
import Posix

extension IOOperation {
    /// Runs the operation as one blocking syscall on the calling thread
    /// (retried on EINTR, `retryingEINTR`); returns bytes transferred (0 for
    /// fdatasync and fallocate) or -errno. The thread pool's workers run
    /// operations this way, and so do reactors for files on a memory
    /// filesystem, where the call is a page-cache copy that never waits for
    /// a device (`FileBacking.isOnMemoryFilesystem`).
    public func performBlocking() -> Int32 {
        do throws(Errno) {
            switch self {
            case let .readv(fd, iovecs, count, offset):
                return Int32(clamping: try fd.preadv(iovecs, count: count, offset: offset))
            case let .writev(fd, iovecs, count, offset):
                return Int32(clamping: try fd.pwritev(iovecs, count: count, offset: offset))
            case let .fdatasync(fd):
                try fd.dataSync()
                return 0
            case let .fallocate(fd, mode, offset, length):
                try fd.allocate(mode: mode, offset: offset, length: length)
                return 0
            case let .read(fd, buffer, length):
                return Int32(clamping: try fd.read(into: buffer, length: length))
            }
        } catch {
            return -error.rawValue
        }
    }
}
