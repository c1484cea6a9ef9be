import CShims
import Glibc

/// An epoll instance (epoll(7)), close-on-exec, for an engine that waits
/// on descriptors' readiness. Ownership is explicit, as for
/// `FileDescriptor`: the creator calls `close()` once.
///
/// epoll_ctl(2) never fails with EINTR; epoll_wait(2) can (SA_RESTART
/// does not restart it), and `vb_epoll_wait` (CShims) retries it there.
public struct Epoll: Sendable {
    public let fd: FileDescriptor

    public init() throws(Errno) {
        fd = FileDescriptor(try retryingEINTR { epoll_create1(Int32(EPOLL_CLOEXEC)) })
    }

    /// EPOLL_CTL_ADD: reports `events` (EPOLLIN, EPOLLONESHOT, ...) on `target` with `data`.
    @inlinable
    public func add(_ target: FileDescriptor, events: UInt32, data: UInt64) throws(Errno) {
        _ = try checkNegErrno(vb_epoll_ctl(fd.rawValue, EPOLL_CTL_ADD, target.rawValue, events, data))
    }

    /// EPOLL_CTL_MOD: changes `target`'s events and data (re-arms an EPOLLONESHOT one).
    @inlinable
    public func modify(_ target: FileDescriptor, events: UInt32, data: UInt64) throws(Errno) {
        _ = try checkNegErrno(vb_epoll_ctl(fd.rawValue, EPOLL_CTL_MOD, target.rawValue, events, data))
    }

    /// EPOLL_CTL_DEL: stops watching `target`.
    @inlinable
    public func remove(_ target: FileDescriptor) throws(Errno) {
        _ = try checkNegErrno(vb_epoll_ctl(fd.rawValue, EPOLL_CTL_DEL, target.rawValue, 0, 0))
    }

    /// Waits up to `timeoutMilliseconds` (-1: forever, 0: don't block) for
    /// at most `capacity` ready descriptors; stores each one's events and
    /// data at the same index of `masks` and `datas`; returns how many (0: timeout).
    @inlinable
    public func wait(
        masks: UnsafeMutablePointer<UInt32>, datas: UnsafeMutablePointer<UInt64>, capacity: Int32,
        timeoutMilliseconds: Int32
    ) throws(Errno) -> Int {
        Int(try checkNegErrno(vb_epoll_wait(fd.rawValue, masks, datas, capacity, timeoutMilliseconds)))
    }

    public func close() { fd.close() }
}

extension EventFD {
    /// A blocking eventfd in EFD_SEMAPHORE mode (eventfd(2)): each read
    /// takes one from the counter, waiting while it is zero.
    public static func semaphore() throws(Errno) -> EventFD {
        let fd = try retryingEINTR { eventfd(0, Int32(EFD_CLOEXEC) | Int32(EFD_SEMAPHORE)) }
        return EventFD(adopting: FileDescriptor(fd))
    }
}
