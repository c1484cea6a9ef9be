import CFaultGuard

/// Keeps the daemon alive when a frontend shrinks memory it shared (guest
/// RAM, the dirty log, the inflight region): an access past a file's new end
/// raises SIGBUS, whose default action would end every controller. Once
/// `install` ran, a fault inside a `SharedMapping` gets a private zero page
/// in place of the missing one (`lostPages` counts them) and `notify` is
/// signalled, so the control loop can disconnect that frontend
/// (Sources/CFaultGuard). Every mapping made after `install` is guarded or
/// refused (`SharedMappingError.unguarded`), never left unguarded. A SIGBUS
/// sent by a process (`kill -BUS`) is ignored and counted (`ignoredSignals`);
/// any other SIGBUS still ends the process.
public enum SharedMemoryGuard {
    /// Installs the process-wide SIGBUS handler; `notify` is signalled once
    /// per replaced page and once per ignored signal. Calling it again only
    /// changes `notify`.
    public static func install(notify: EventFD) throws(Errno) {
        let rc = vb_fault_guard_install(notify.fd.rawValue)
        if rc < 0 { throw Errno(-rc) }
    }

    /// Registers a mapping: its slot, or -1 when the guard is not installed
    /// (a process that never asked for it, such as a test frontend). Throws
    /// when the range cannot be guarded (the table could not grow).
    static func register(_ base: UnsafeMutableRawPointer, length: Int) throws(Errno) -> Int32 {
        var slot: Int32 = -1
        let rc = vb_fault_guard_register(base, length, &slot)
        if rc < 0 { throw Errno(-rc) }
        return slot
    }

    static func unregister(_ slot: Int32) { vb_fault_guard_unregister(slot) }

    static func lostPages(_ slot: Int32) -> Int { Int(vb_fault_guard_faults(slot)) }

    /// Ranges guarded now.
    public static var rangeCount: Int { vb_fault_guard_ranges() }

    /// SIGBUS signals a process sent (kill(2), sigqueue(3), tgkill(2)) that
    /// the guard ignored so far, and the last sender (pid 0 when the kernel
    /// did not say).
    public static var ignoredSignals: (count: Int, lastPID: Int32, lastUID: UInt32) {
        var pid: Int32 = 0
        var uid: UInt32 = 0
        let count = vb_fault_guard_ignored(&pid, &uid)
        return (Int(count), pid, uid)
    }
}

/// Why a `SharedMapping` could not be made.
public enum SharedMappingError: Error, Equatable, Sendable, CustomStringConvertible {
    /// mmap(2) failed.
    case mmap(Errno)
    /// The memory was mapped but `SharedMemoryGuard` could not guard it (its
    /// range table could not grow), so it was unmapped again: a shrink of
    /// the file would have killed the process.
    case unguarded(Errno)

    public var errno: Errno {
        switch self {
        case .mmap(let e), .unguarded(let e): return e
        }
    }

    public var description: String {
        switch self {
        case .mmap(let e): return "mmap failed: \(e)"
        case .unguarded(let e): return "the SIGBUS guard cannot take another range (\(e)), so the mapping is refused"
        }
    }
}
