import Glibc

/// A POSIX error number as a typed Swift error (after swift-system's `Errno`).
public struct Errno: Error, Equatable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int32
    public init(_ rawValue: Int32) { self.rawValue = rawValue }

    /// The calling thread's current `errno`.
    public static var current: Errno { Errno(errno) }

    /// `strerror` text, e.g. "No such file or directory".
    public var message: String { String(cString: strerror(rawValue)) }
    public var description: String { "\(message) (errno \(rawValue))" }

    public static let EAGAIN = Errno(Glibc.EAGAIN)
    public static let EINVAL = Errno(Glibc.EINVAL)
    public static let ENOENT = Errno(Glibc.ENOENT)
    public static let EEXIST = Errno(Glibc.EEXIST)
    public static let EBUSY = Errno(Glibc.EBUSY)
    public static let ENODEV = Errno(Glibc.ENODEV)
    public static let EISDIR = Errno(Glibc.EISDIR)
    public static let ENOTSUP = Errno(Glibc.EOPNOTSUPP)
    public static let EPROTO = Errno(Glibc.EPROTO)
    public static let ENOMEM = Errno(Glibc.ENOMEM)
    public static let EIO = Errno(Glibc.EIO)
    public static let ERANGE = Errno(Glibc.ERANGE)
}

/// The one syscall funnel: retries EINTR, turns -1 into a typed error.
/// `@inlinable` so that other modules' calls (the data path's preadv,
/// pwritev and eventfd writes) inline to the bare syscall and a compare,
/// not a call to an unspecialized generic with a closure context.
@inlinable @inline(__always)
public func retryingEINTR<T: FixedWidthInteger>(_ body: () -> T) throws(Errno) -> T {
    while true {
        let result = body()
        if result != -1 { return result }
        let error = errno
        if error == EINTR { continue }
        throw Errno(error)
    }
}

/// For C helpers that return `-errno` on failure (`@inlinable`, as `retryingEINTR`).
@inlinable @inline(__always)
public func checkNegErrno<T: SignedInteger & FixedWidthInteger>(_ result: T) throws(Errno) -> T {
    if result < 0 { throw Errno(Int32(truncatingIfNeeded: 0 - result)) }
    return result
}
