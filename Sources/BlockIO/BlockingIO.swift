import Glibc

extension IOOperation {
    /// Runs the operation as one blocking syscall on the calling thread
    /// (retried on EINTR); returns bytes transferred (0 for fdatasync and
    /// fallocate) or -errno. The thread pool's workers run operations this
    /// way, and so do reactors for files on a memory filesystem, where the
    /// call is a page-cache copy that never waits for a device
    /// (`FileBacking.isOnMemoryFilesystem`).
    public func performBlocking() -> Int32 {
        var result: Int
        repeat {
            switch self {
            case let .readv(fd, iovecs, count, offset):
                result = preadv(fd, iovecs, count, off_t(truncatingIfNeeded: offset))
            case let .writev(fd, iovecs, count, offset):
                result = pwritev(fd, iovecs, count, off_t(truncatingIfNeeded: offset))
            case let .fdatasync(fd):
                result = Int(Glibc.fdatasync(fd))
            case let .fallocate(fd, mode, offset, length):
                result = Int(Glibc.fallocate(fd, mode, off_t(truncatingIfNeeded: offset), off_t(truncatingIfNeeded: length)))
            case let .read(fd, buffer, length):
                result = Glibc.read(fd, buffer, length)
            }
        } while result < 0 && errno == EINTR
        return result < 0 ? -errno : Int32(clamping: result)
    }
}
