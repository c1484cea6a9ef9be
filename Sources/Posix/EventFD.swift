import CShims
import Glibc

/// An eventfd used as a wake-up signal between threads (or to/from a frontend).
public struct EventFD: Sendable {
    public let fd: FileDescriptor

    public init(nonBlocking: Bool = true) throws(Errno) {
        let flags = Int32(EFD_CLOEXEC) | (nonBlocking ? Int32(EFD_NONBLOCK) : 0)
        fd = FileDescriptor(try retryingEINTR { eventfd(0, flags) })
    }

    public init(adopting fd: FileDescriptor) { self.fd = fd }

    /// Adds one to the counter; never blocks on a non-blocking eventfd (EAGAIN means it is already signalled).
    public func signal() {
        var one: UInt64 = 1
        _ = withUnsafeBytes(of: &one) { Glibc.write(fd.rawValue, $0.baseAddress, 8) }
    }

    /// Reads and resets the counter; returns 0 when nothing was pending.
    @discardableResult
    public func drain() -> UInt64 {
        var value: UInt64 = 0
        let n = withUnsafeMutableBytes(of: &value) { Glibc.read(fd.rawValue, $0.baseAddress, 8) }
        return n == 8 ? value : 0
    }

    public func close() { fd.close() }
}
