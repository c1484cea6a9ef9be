import CShims
import Glibc

/// The calls the block layer makes on a file, a block device or an eventfd,
/// each through `retryingEINTR` (or `checkNegErrno` for the C shims that
/// return -errno). The ones a request runs are `@inlinable`: after
/// inlining they are the bare syscall plus one compare against -1, as
/// before, with no allocation and no existential (`Errno` is a trivial
/// struct, thrown as a typed error).
extension FileDescriptor {
    // MARK: Data (per request)

    /// preadv(2): scatter read of `count` iovecs at `offset`; returns bytes read.
    @inlinable
    public func preadv(_ iovecs: UnsafePointer<iovec>, count: Int32, offset: UInt64) throws(Errno) -> Int {
        try retryingEINTR { Glibc.preadv(rawValue, iovecs, count, off_t(truncatingIfNeeded: offset)) }
    }

    /// pwritev(2): gather write of `count` iovecs at `offset`; returns bytes written.
    @inlinable
    public func pwritev(_ iovecs: UnsafePointer<iovec>, count: Int32, offset: UInt64) throws(Errno) -> Int {
        try retryingEINTR { Glibc.pwritev(rawValue, iovecs, count, off_t(truncatingIfNeeded: offset)) }
    }

    /// pread(2) of `length` bytes at `offset` into `buffer`; returns bytes read.
    @inlinable
    public func pread(into buffer: UnsafeMutableRawPointer, length: Int, offset: UInt64) throws(Errno) -> Int {
        try retryingEINTR { Glibc.pread(rawValue, buffer, length, off_t(truncatingIfNeeded: offset)) }
    }

    /// read(2) of at most `length` bytes into `buffer` (an eventfd, a timerfd,
    /// a pipe); returns bytes read. A non-blocking descriptor with nothing
    /// to read throws `Errno.EAGAIN`.
    @inlinable
    public func read(into buffer: UnsafeMutableRawPointer, length: Int) throws(Errno) -> Int {
        try retryingEINTR { Glibc.read(rawValue, buffer, length) }
    }

    /// fdatasync(2): the virtio-blk FLUSH (virtio 1.2 §5.2.6.1).
    @inlinable
    public func dataSync() throws(Errno) {
        _ = try retryingEINTR { Glibc.fdatasync(rawValue) }
    }

    /// fallocate(2) with `mode` (FALLOC_FL_* flags) over `length` bytes at `offset`.
    @inlinable
    public func allocate(mode: Int32, offset: UInt64, length: UInt64) throws(Errno) {
        _ = try retryingEINTR {
            Glibc.fallocate(rawValue, mode, off_t(truncatingIfNeeded: offset), off_t(truncatingIfNeeded: length))
        }
    }

    // MARK: eventfd counters (eventfd(2))

    /// Adds `value` to an eventfd's counter (an 8-byte write(2)). On a
    /// non-blocking eventfd it never blocks: EAGAIN means the counter is
    /// at its maximum, so the eventfd is readable already.
    @inlinable
    public func addToCounter(_ value: UInt64) throws(Errno) {
        var value = value
        _ = try retryingEINTR { withUnsafeBytes(of: &value) { Glibc.write(rawValue, $0.baseAddress, 8) } }
    }

    /// Reads and resets an eventfd's counter (an 8-byte read(2)); in
    /// EFD_SEMAPHORE mode takes one. A non-blocking eventfd at zero throws
    /// `Errno.EAGAIN`; a blocking one waits.
    @inlinable
    public func takeCounter() throws(Errno) -> UInt64 {
        var value: UInt64 = 0
        _ = try retryingEINTR { withUnsafeMutableBytes(of: &value) { Glibc.read(rawValue, $0.baseAddress, 8) } }
        return value
    }

    // MARK: Setup and control (not per request)

    /// ftruncate(2): sets a regular file's length.
    public func truncate(to length: off_t) throws(Errno) {
        _ = try retryingEINTR { Glibc.ftruncate(rawValue, length) }
    }

    /// fstatfs(2): the filesystem the descriptor is on.
    public func fileSystemStatus() throws(Errno) -> statfs {
        var fs = statfs()
        _ = try retryingEINTR { fstatfs(rawValue, &fs) }
        return fs
    }

    /// The file status flags (fcntl(2) F_GETFL).
    public func statusFlags() throws(Errno) -> Int32 {
        try retryingEINTR { Glibc.fcntl(rawValue, F_GETFL) }
    }

    /// Sets the file status flags (fcntl(2) F_SETFL).
    public func setStatusFlags(_ flags: Int32) throws(Errno) {
        _ = try retryingEINTR { Glibc.fcntl(rawValue, F_SETFL, flags) }
    }

    /// Clears O_NONBLOCK (fcntl(2) F_GETFL, then F_SETFL).
    public func setBlocking() throws(Errno) {
        let flags = try statusFlags()
        try setStatusFlags(flags & ~O_NONBLOCK)
    }

    /// A block device's size in bytes (ioctl(2) BLKGETSIZE64).
    public func blockDeviceSize() throws(Errno) -> UInt64 {
        var bytes: UInt64 = 0
        _ = try checkNegErrno(retryingNegEINTR { vb_blkgetsize64(rawValue, &bytes) })
        return bytes
    }

    /// A block device's logical block size (ioctl(2) BLKSSZGET).
    public func logicalBlockSize() throws(Errno) -> Int32 {
        var size: Int32 = 0
        _ = try checkNegErrno(retryingNegEINTR { vb_blksszget(rawValue, &size) })
        return size
    }
}

/// For the C shims that return -errno: calls `body` again while it returns -EINTR.
private func retryingNegEINTR(_ body: () -> Int32) -> Int32 {
    while true {
        let result = body()
        if result != -EINTR { return result }
    }
}
