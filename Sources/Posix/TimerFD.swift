import CShims
import Glibc

/// A CLOCK_MONOTONIC timerfd (timerfd_create(2)), close-on-exec.
/// Ownership is explicit, as for `FileDescriptor`: the creator calls `close()` once.
public struct TimerFD: Sendable {
    public let fd: FileDescriptor

    /// A blocking timerfd unless `nonBlocking`: its read waits for the expiry.
    public init(nonBlocking: Bool = false) throws(Errno) {
        let flags = Int32(TFD_CLOEXEC) | (nonBlocking ? Int32(TFD_NONBLOCK) : 0)
        fd = FileDescriptor(try retryingEINTR { timerfd_create(CLOCK_MONOTONIC, flags) })
    }

    /// Arms a one-shot expiry `nanoseconds` from now, replacing an earlier
    /// one (timerfd_settime(2), relative); 0 disarms it.
    public func arm(afterNanoseconds nanoseconds: UInt64) throws(Errno) {
        var spec = itimerspec()
        spec.it_value.tv_sec = Int(truncatingIfNeeded: nanoseconds / 1_000_000_000)
        spec.it_value.tv_nsec = Int(truncatingIfNeeded: nanoseconds % 1_000_000_000)
        _ = try retryingEINTR { timerfd_settime(fd.rawValue, 0, &spec, nil) }
    }

    public func close() { fd.close() }
}
