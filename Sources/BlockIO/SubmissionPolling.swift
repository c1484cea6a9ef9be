/// io_uring's submission-queue polling (IORING_SETUP_SQPOLL, io_uring_setup(2)):
/// a kernel thread per ring picks up new submissions, so submitting costs no
/// system call while that thread is awake. It spins on the ring for
/// `idleMilliseconds` after the last submission, then sleeps until the next
/// submit wakes it (one `io_uring_enter`). The thread's CPU time counts as the
/// daemon's: worth it only with spare CPUs.
public struct SubmissionPolling: Sendable, Equatable {
    /// How long the kernel thread spins without work before it sleeps (`sq_thread_idle`).
    public var idleMilliseconds: UInt32
    /// The CPU the kernel thread is bound to (IORING_SETUP_SQ_AFF); nil: any CPU the daemon may use.
    public var cpu: Int?

    public init(idleMilliseconds: UInt32, cpu: Int? = nil) {
        self.idleMilliseconds = idleMilliseconds
        self.cpu = cpu
    }
}
