import Glibc
import Logging
import Posix
internal import CLiburing
internal import CShims

/// An `IOEngine` on io_uring (liburing). Owns one ring: the `io_uring`
/// struct lives behind an `UnsafeMutablePointer` that this class alone
/// touches; `deinit` cancels and drains in-flight operations before
/// `io_uring_queue_exit`.
///
/// Thread confinement: one thread (the owning reactor). The ring is created
/// disabled and enabled by the first `submit`/`wait`, which binds it to that
/// thread when the kernel accepts IORING_SETUP_SINGLE_ISSUER.
/// The tag `UInt64.max` is reserved for internal operations.
public final class URingEngine: IOEngine {
    public let name = "io_uring"
    /// SQ size: the SQ never fills and the CQ (twice as large) never overflows.
    public let capacity: Int
    public private(set) var inFlight = 0
    public var freeSlots: Int { capacity - inFlight }
    /// The io_uring setup flags the kernel accepted (for logs and tests).
    public let setupFlags: UInt32
    /// Whether a kernel thread polls the submission queue (IORING_SETUP_SQPOLL).
    public var submissionPolling: Bool { setupFlags & UInt32(IORING_SETUP_SQPOLL) != 0 }

    static let reservedTag = UInt64.max

    private let ring: UnsafeMutablePointer<io_uring>
    private let cqeBatch: UnsafeMutablePointer<UnsafeMutablePointer<io_uring_cqe>?>
    private let tagBatch: UnsafeMutablePointer<UInt64>
    private let resultBatch: UnsafeMutablePointer<Int32>
    private let batchSize: Int
    private let deferTaskrun: Bool
    private var enabled: Bool
    private var closed = false
    private var delivering = false
    private var loggedSubmitError = false
    /// Cancels that found the submission queue full (`cancelRead`).
    private var pendingCancels: [UInt64] = []
    private let logger: Logger

    /// Sets up a ring of `entries` submission slots, trying
    /// SINGLE_ISSUER|DEFER_TASKRUN first, then COOP_TASKRUN, then no flags.
    /// With `polling`, SQPOLL comes first (the kernel takes none of the task-run
    /// flags with it); a kernel that refuses it gets the usual ring and a warning.
    public init(
        entries: UInt32 = 256, polling: SubmissionPolling? = nil, logger: Logger = Logger(label: "vhost-blkd.blockio")
    ) throws(Errno) {
        let ring = UnsafeMutablePointer<io_uring>.allocate(capacity: 1)
        ring.initialize(to: io_uring())
        var candidates: [UInt32] = [
            UInt32(IORING_SETUP_SINGLE_ISSUER) | UInt32(IORING_SETUP_DEFER_TASKRUN) | UInt32(IORING_SETUP_R_DISABLED),
            UInt32(IORING_SETUP_COOP_TASKRUN),
            0,
        ]
        if let polling {
            candidates.insert(UInt32(IORING_SETUP_SQPOLL) | (polling.cpu == nil ? 0 : UInt32(IORING_SETUP_SQ_AFF)), at: 0)
        }
        var accepted: UInt32?
        var lastError: Int32 = EINVAL
        for flags in candidates {
            var params = io_uring_params()
            params.flags = flags
            if let polling, flags & UInt32(IORING_SETUP_SQPOLL) != 0 {
                params.sq_thread_idle = polling.idleMilliseconds
                params.sq_thread_cpu = UInt32(clamping: polling.cpu ?? 0)
            }
            let rc = io_uring_queue_init_params(entries, ring, &params)
            if rc == 0 {
                accepted = flags
                break
            }
            lastError = -rc
            if flags & UInt32(IORING_SETUP_SQPOLL) != 0 {
                logger.warning("io_uring submission polling refused; submitting with system calls", metadata: [
                    "errno": "\(Errno(-rc))", "sqpoll.cpu": "\(polling?.cpu.map(String.init) ?? "any")",
                ])
                continue
            }
            if lastError != EINVAL { break }  // EPERM/ENOSYS/ENOMEM: other flags will not help
        }
        guard let flags = accepted else {
            ring.deinitialize(count: 1)
            ring.deallocate()
            throw Errno(lastError)
        }
        self.ring = ring
        self.setupFlags = flags
        self.deferTaskrun = flags & UInt32(IORING_SETUP_DEFER_TASKRUN) != 0
        self.enabled = flags & UInt32(IORING_SETUP_R_DISABLED) == 0
        let sqEntries = Int(ring.pointee.sq.ring_entries)
        let cqEntries = Int(ring.pointee.cq.ring_entries)
        self.capacity = min(sqEntries, cqEntries)
        self.batchSize = max(cqEntries, 1)
        self.cqeBatch = .allocate(capacity: batchSize)
        self.tagBatch = .allocate(capacity: batchSize)
        self.resultBatch = .allocate(capacity: batchSize)
        self.logger = logger
        allowAWorkerPerOperation()
        logger.debug("io_uring ready", metadata: [
            "io_uring.flags": "0x\(String(flags, radix: 16))", "io_uring.entries": "\(sqEntries)",
        ])
    }

    /// Lets io_uring's kernel workers (io-wq) grow to one per ring slot.
    /// Requests that cannot complete without blocking (an O_DIRECT write on a
    /// frozen filesystem, any I/O on a hung NFS mount) each hold a "bounded"
    /// worker, of which the kernel allows only 4 per CPU by default: a few
    /// requests stuck on one file would queue every other file's blocking
    /// requests behind them. With a worker per slot, a file that hangs holds
    /// up only its own requests. Workers exist only while requests block.
    /// Older kernels refuse it (EINVAL): the default stays.
    private func allowAWorkerPerOperation() {
        var limits: [UInt32] = [UInt32(clamping: capacity), 0]  // bounded, unbounded (0: unchanged)
        let rc = limits.withUnsafeMutableBufferPointer { io_uring_register_iowq_max_workers(ring, $0.baseAddress) }
        if rc < 0 {
            logger.debug("io_uring worker limit unchanged", metadata: ["errno": "\(Errno(-rc))"])
        }
    }

    /// Runs the kernel workers (io-wq) that take this thread's blocking
    /// requests (fallocate, buffered I/O on tmpfs) on `cpus`
    /// (IORING_REGISTER_IOWQ_AFF, io_uring_register(2)); without it they
    /// inherit the calling reactor's pinning and compete with it for its CPU.
    /// The workers belong to the submitting thread's io_uring context, which
    /// its first submission creates, so this submits a NOP first. Call on the
    /// owning thread, before other work. Returns nil, or why the kernel refused.
    public func placeWorkers(on cpus: [Int]) -> Errno? {
        guard !cpus.isEmpty else { return nil }
        guard let sqe = io_uring_get_sqe(ring) else { return Errno(EBUSY) }
        io_uring_prep_nop(sqe)
        io_uring_sqe_set_data64(sqe, Self.reservedTag)
        let submitted = flush()
        if submitted < 0 { return Errno(-submitted) }
        let numbers = cpus.map { Int32(truncatingIfNeeded: $0) }
        let rc = numbers.withUnsafeBufferPointer { vb_io_uring_register_iowq_cpus(ring.pointee.ring_fd, $0.baseAddress, Int32($0.count)) }
        return rc < 0 ? Errno(-rc) : nil
    }

    /// Whether an io_uring can be set up here: nil when it can, else the
    /// reason (EPERM or ENOSYS when disabled by `kernel.io_uring_disabled` or seccomp).
    public static func probe() -> Errno? {
        let ring = UnsafeMutablePointer<io_uring>.allocate(capacity: 1)
        ring.initialize(to: io_uring())
        defer {
            ring.deinitialize(count: 1)
            ring.deallocate()
        }
        var params = io_uring_params()
        let rc = io_uring_queue_init_params(2, ring, &params)
        if rc < 0 { return Errno(-rc) }
        io_uring_queue_exit(ring)
        return nil
    }

    /// Cancels and drains in-flight operations on the owning thread (with
    /// SINGLE_ISSUER another thread may not submit the cancellations).
    public func close() {
        guard !closed else { return }
        closed = true
        if enabled { drain() }
    }

    deinit {
        if enabled && !closed { drain() }
        io_uring_queue_exit(ring)
        ring.deinitialize(count: 1)
        ring.deallocate()
        cqeBatch.deallocate()
        tagBatch.deallocate()
        resultBatch.deallocate()
    }

    /// The SQE helpers take the descriptor number: the one place an
    /// operation's `FileDescriptor` is unwrapped (the kernel runs the call,
    /// and reports EINTR, if ever, as a completion result).
    public func enqueue(_ op: IOOperation, tag: UInt64) -> Bool {
        guard inFlight < capacity, let sqe = io_uring_get_sqe(ring) else { return false }
        switch op {
        case let .readv(fd, iovecs, count, offset):
            io_uring_prep_readv(sqe, fd.rawValue, iovecs, UInt32(bitPattern: count), offset)
        case let .writev(fd, iovecs, count, offset):
            io_uring_prep_writev(sqe, fd.rawValue, iovecs, UInt32(bitPattern: count), offset)
        case let .fdatasync(fd):
            io_uring_prep_fsync(sqe, fd.rawValue, UInt32(IORING_FSYNC_DATASYNC))
        case let .fallocate(fd, mode, offset, length):
            io_uring_prep_fallocate(sqe, fd.rawValue, mode, off_t(truncatingIfNeeded: offset), off_t(truncatingIfNeeded: length))
        case let .read(fd, buffer, length):
            // Offset -1: the file position (eventfds, pipes, sockets).
            io_uring_prep_read(sqe, fd.rawValue, buffer, UInt32(clamping: max(length, 0)), UInt64.max)
        }
        io_uring_sqe_set_data64(sqe, tag)
        inFlight += 1
        return true
    }

    public func submit() { _ = flush() }

    /// `io_uring_submit` calls that submitted anything, and the entries they
    /// carried (owning thread only; read with `submitCounts`).
    private var submitCalls: UInt64 = 0
    private var submittedOperations: UInt64 = 0
    public var submitCounts: (calls: UInt64, operations: UInt64) { (submitCalls, submittedOperations) }

    /// An IORING_OP_ASYNC_CANCEL by user data; its own completion carries the
    /// reserved tag and is not delivered. A read waiting on poll (an eventfd
    /// with nothing to read) is always cancellable. With the submission queue
    /// full (of entries not yet submitted, or not yet taken by the SQPOLL
    /// thread) the cancel waits in `pendingCancels` and goes with the next
    /// submission that finds room: it is never dropped.
    public func cancelRead(tag: UInt64) {
        pendingCancels.append(tag)
        _ = flush()
    }

    /// Puts waiting cancels into free submission entries; returns whether all went.
    private func queuePendingCancels() -> Bool {
        while let tag = pendingCancels.first {
            guard let sqe = io_uring_get_sqe(ring) else { return false }
            io_uring_prep_cancel64(sqe, tag, 0)
            io_uring_sqe_set_data64(sqe, Self.reservedTag)
            pendingCancels.removeFirst()
        }
        return true
    }

    public func wait(timeoutNanoseconds: Int64?, _ handler: (UInt64, Int32) -> Void) -> Int {
        guard !delivering else { return 0 }
        _ = flush()
        var delivered = reap(handler)
        if delivered > 0 { return delivered }
        if deferTaskrun && inFlight > 0 && enabled {
            // Deferred completions are posted only when this thread enters the kernel.
            _ = io_uring_get_events(ring)
            delivered = reap(handler)
            if delivered > 0 { return delivered }
        }
        var timeout = timeoutNanoseconds.map { max($0, 0) }
        if timeout == 0 { return 0 }
        if (!submissionPolling && io_uring_sq_ready(ring) > 0) || !pendingCancels.isEmpty {
            // The kernel pushed back (EAGAIN/EBUSY), or a cancel waits for a
            // free submission entry: retry soon.
            timeout = min(timeout ?? 1_000_000, 1_000_000)
        }
        _ = blockingWait(timeout)
        return reap(handler)
    }

    // MARK: - Internals

    /// Enables a ring created with IORING_SETUP_R_DISABLED on the calling (owning) thread.
    private func enableIfNeeded() {
        guard !enabled else { return }
        let rc = vb_io_uring_enable_rings(ring.pointee.ring_fd)
        if rc < 0 {
            logger.error("io_uring_enable_rings failed", metadata: ["errno": "\(Errno(-rc))"])
            return
        }
        enabled = true
    }

    /// Submits everything in the SQ, with the cancels that waited for room;
    /// returns 0 or -errno. EAGAIN/EBUSY leave the entries in the SQ for the
    /// next call (flow control).
    private func flush() -> Int32 {
        enableIfNeeded()
        var rc: Int32 = 0
        for _ in 0..<2 {
            let cancelsQueued = pendingCancels.isEmpty || queuePendingCancels()
            guard io_uring_sq_ready(ring) > 0 else { return 0 }
            rc = submitQueued()
            if rc < 0 || cancelsQueued { return rc }
            // That submission made room: the cancels that waited go now.
        }
        return rc
    }

    private func submitQueued() -> Int32 {
        while true {
            let rc = io_uring_submit(ring)
            if rc > 0 {
                submitCalls &+= 1
                submittedOperations &+= UInt64(rc)
            }
            if rc >= 0 { return 0 }
            if rc == -EINTR { continue }
            if rc != -EAGAIN && rc != -EBUSY && !loggedSubmitError {
                loggedSubmitError = true
                logger.error("io_uring_submit failed", metadata: ["errno": "\(Errno(-rc))"])
            }
            return rc
        }
    }

    /// Waits for one CQE without consuming it; returns 0 or -errno (-ETIME on timeout).
    private func blockingWait(_ timeoutNanoseconds: Int64?) -> Int32 {
        var cqe: UnsafeMutablePointer<io_uring_cqe>?
        guard let ns = timeoutNanoseconds else { return io_uring_wait_cqe(ring, &cqe) }
        var ts = __kernel_timespec(tv_sec: ns / 1_000_000_000, tv_nsec: ns % 1_000_000_000)
        return io_uring_wait_cqe_timeout(ring, &cqe, &ts)
    }

    /// Copies out every available CQE, advances the CQ once per batch, then
    /// delivers (so a handler's `enqueue` already sees the freed slots).
    private func reap(_ handler: (UInt64, Int32) -> Void) -> Int {
        delivering = true
        defer { delivering = false }
        var total = 0
        while true {
            let got = Int(io_uring_peek_batch_cqe(ring, cqeBatch, UInt32(batchSize)))
            if got == 0 { break }
            var kept = 0
            for index in 0..<got {
                guard let cqe = cqeBatch[index] else { continue }
                let tag = cqe.pointee.user_data
                if tag == Self.reservedTag { continue }
                tagBatch[kept] = tag
                resultBatch[kept] = cqe.pointee.res
                kept += 1
            }
            io_uring_cq_advance(ring, UInt32(got))
            inFlight -= kept
            for index in 0..<kept { handler(tagBatch[index], resultBatch[index]) }
            total += kept
            if got < batchSize { break }
        }
        return total
    }

    /// Cancels what can be cancelled (poll-driven reads) and waits, bounded,
    /// for every in-flight operation so the kernel no longer touches caller memory.
    private func drain() {
        if flush() < 0 { return }
        guard inFlight > 0 else { return }
        var cancelled = false
        var rounds = 0
        while inFlight > 0 && rounds < 50 {  // at most ~5 s
            rounds += 1
            if !cancelled, let sqe = io_uring_get_sqe(ring) {
                // Retried each round: a full SQPOLL queue makes room once its thread took the entries.
                io_uring_prep_cancel64(sqe, 0, Int32(IORING_ASYNC_CANCEL_ANY))
                io_uring_sqe_set_data64(sqe, Self.reservedTag)
                cancelled = true
            }
            if flush() < 0 { return }
            let rc = blockingWait(100_000_000)
            if rc < 0 && rc != -ETIME && rc != -EINTR { return }  // e.g. EEXIST: not the owning thread
            _ = reap { _, _ in }
        }
        if inFlight > 0 {
            logger.warning("io_uring closed with operations in flight", metadata: ["io_uring.inflight": "\(inFlight)"])
        }
    }
}
