import CFaultGuard

/// Keeps the daemon alive when a frontend shrinks memory it shared (guest
/// RAM, the dirty log, the inflight region): an access past a file's new end
/// raises SIGBUS, whose default action would end every controller. Once
/// `install` ran, a fault inside a `SharedMapping` gets a private zero page
/// in place of the missing one (`lostPages` counts them) and `notify` is
/// signalled, so the control loop can disconnect that frontend
/// (Sources/CFaultGuard; a SIGBUS anywhere else still ends the process).
public enum SharedMemoryGuard {
    /// Installs the process-wide SIGBUS handler; `notify` is signalled once
    /// per replaced page. Calling it again only changes `notify`.
    public static func install(notify: EventFD) throws(Errno) {
        let rc = vb_fault_guard_install(notify.fd.rawValue)
        if rc < 0 { throw Errno(-rc) }
    }

    /// Registers a mapping; -1 when the guard is off (a test frontend) or full.
    static func register(_ base: UnsafeMutableRawPointer, length: Int) -> Int32 {
        Int32(vb_fault_guard_register(base, length))
    }

    static func unregister(_ slot: Int32) { vb_fault_guard_unregister(slot) }

    static func lostPages(_ slot: Int32) -> Int { Int(vb_fault_guard_faults(slot)) }
}
