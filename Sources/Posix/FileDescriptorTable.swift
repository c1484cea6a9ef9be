import Glibc

/// The process's descriptor table, sized once at start.
///
/// Linux grows the table by doubling (at 256, 512, 1024 ... descriptors), and
/// in a multi-threaded process each growth waits for an RCU grace period:
/// 10-20 ms in the middle of whatever RPC opened that descriptor. A daemon
/// that holds one listening socket per controller therefore raises its soft
/// limit and grows the table while it still has one thread.
public enum FileDescriptorTable {
    /// Raises the soft RLIMIT_NOFILE toward `limit` (at most the hard limit)
    /// and grows the table to `reserve` slots (at most the new soft limit).
    /// Returns the soft limit now in force.
    @discardableResult
    public static func prepare(limit: UInt64 = 65536, reserve: Int32 = 4096) -> UInt64 {
        var rl = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &rl) == 0 else { return 0 }
        let wanted = min(rlim_t(limit), rl.rlim_max)
        if rl.rlim_cur < wanted {
            var raised = rl
            raised.rlim_cur = wanted
            if setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &raised) == 0 { rl = raised }
        }
        let highest = Int32(clamping: min(UInt64(reserve), UInt64(rl.rlim_cur))) - 1
        if highest > 2 {
            // A descriptor at the top forces the table to its final size now.
            let fd = fcntl(0, F_DUPFD_CLOEXEC, highest)
            if fd >= 0 { close(fd) }
        }
        return UInt64(rl.rlim_cur)
    }
}
