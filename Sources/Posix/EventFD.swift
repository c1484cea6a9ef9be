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

    /// Whether `fd` is an eventfd (its /proc/self/fd link reads
    /// `anon_inode:[eventfd]`). A descriptor a peer sends as one may be
    /// anything: a pipe nobody reads would block its writer once full, a
    /// regular file would grow with every signal.
    public static func isEventFD(_ fd: Int32) -> Bool {
        var buffer = [CChar](repeating: 0, count: 64)
        let n = buffer.withUnsafeMutableBufferPointer { raw -> Int in
            guard let base = raw.baseAddress else { return -1 }
            return readlink("/proc/self/fd/\(fd)", base, raw.count - 1)
        }
        guard n > 0 else { return false }
        let target = buffer.prefix(n).map { UInt8(bitPattern: $0) }
        return String(decoding: target, as: UTF8.self) == "anon_inode:[eventfd]"
    }
}
