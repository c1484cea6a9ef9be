import Glibc
import Posix

/// One asynchronous operation for an `IOEngine`.
///
/// Every pointer stays valid until the operation's completion has been
/// delivered (the engine and the kernel may read or write through it until then).
public enum IOOperation {
    /// `preadv(2)`: scatter read at `offset`.
    case readv(fd: FileDescriptor, iovecs: UnsafePointer<iovec>, count: Int32, offset: UInt64)
    /// `pwritev(2)`: gather write at `offset`.
    case writev(fd: FileDescriptor, iovecs: UnsafePointer<iovec>, count: Int32, offset: UInt64)
    /// `fdatasync(2)`: the virtio-blk FLUSH request (virtio 1.2 §5.2.6.1).
    case fdatasync(fd: FileDescriptor)
    /// `fallocate(2)`: discard / write-zeroes (see `FallocateMode`).
    case fallocate(fd: FileDescriptor, mode: Int32, offset: UInt64, length: UInt64)
    /// `read(2)` that completes once `fd` is readable (an eventfd: guest kick,
    /// cross-thread message, a secondary engine's completions). This puts the
    /// reactor's single wait point in the same engine as the disk I/O.
    /// The fd should be non-blocking.
    case read(fd: FileDescriptor, buffer: UnsafeMutableRawPointer, length: Int)
}

/// An asynchronous I/O engine (cloud-hypervisor's `AsyncIo`): queue, submit
/// in batches, reap completions.
///
/// Thread confinement: every method is called from ONE thread, the reactor
/// that owns the engine. `URingEngine` binds to the first thread that
/// enqueues or waits (IORING_SETUP_SINGLE_ISSUER); calls from any other
/// thread fail. Handlers passed to `wait` may call `enqueue`/`submit` but
/// must not call `wait` (a nested `wait` returns 0).
public protocol IOEngine: AnyObject {
    /// "io_uring" or "thread-pool".
    var name: String { get }
    /// The most operations that may be queued plus in flight at once.
    var capacity: Int { get }
    /// Queued plus submitted operations whose completion has not been delivered.
    var inFlight: Int { get }
    /// `capacity - inFlight`.
    var freeSlots: Int { get }
    /// Queues an operation; returns false (and queues nothing) when full:
    /// the caller stops popping guest rings and resumes on a completion
    /// (flow control, not failure).
    func enqueue(_ op: IOOperation, tag: UInt64) -> Bool
    /// Submits everything queued since the last call: one syscall per batch for io_uring.
    func submit()
    /// Submits anything queued, then waits until at least one completion is
    /// available or the timeout expires (nil: forever, 0: don't block), and
    /// delivers every available completion as `handler(tag, result)` where
    /// `result` is bytes transferred or -errno. Returns the number delivered.
    func wait(timeoutNanoseconds: Int64?, _ handler: (UInt64, Int32) -> Void) -> Int
    /// Asks that the pending `.read` with `tag` complete now, with -ECANCELED,
    /// unless it already completed. Its completion is still delivered by
    /// `wait`, exactly once (with the bytes read, if the read won the race).
    /// Nothing happens for a tag that is not a pending `.read`.
    func cancelRead(tag: UInt64)
    /// Cancels and drains what is in flight and stops the engine; call on the
    /// owning thread before releasing it (a later deinit then does nothing more).
    func close()
    /// Submissions to the kernel that carried anything, and the operations
    /// they carried, since the engine started (owning thread only).
    var submitCounts: (calls: UInt64, operations: UInt64) { get }
}

extension IOEngine {
    /// Engines that make no submission system calls count none.
    public var submitCounts: (calls: UInt64, operations: UInt64) { (0, 0) }
}
