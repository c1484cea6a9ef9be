import Glibc
import Logging
import Posix
internal import CShims

/// An `IOEngine` that runs blocking syscalls (preadv, pwritev, fdatasync,
/// fallocate) on worker threads: the fallback when io_uring is unavailable,
/// and the engine of `bdev_aio_*` bdevs.
///
/// It starts `threads` workers, and at most that many run one file's jobs
/// at once (`PoolJobQueue`); when other files' jobs find no idle worker, it
/// starts more, up to `maxThreads`. A file whose requests hang therefore
/// never holds up the others.
///
/// Thread confinement: every method except `shutdown()`/`deinit` is called
/// from ONE thread, the owning reactor. Workers share only `PoolShared`.
///
/// As a SECONDARY engine next to a `URingEngine`: arm a `.read` of 8 bytes on
/// `completionEventFD` in the primary engine; when it completes, call
/// `submit()`/`reapCompletions(_:)` here and re-arm the read. `.read`
/// operations complete only in `wait`, so a secondary pool takes disk I/O only.
public final class ThreadPoolEngine: IOEngine {
    public let name = "thread-pool"
    public let capacity: Int
    public private(set) var inFlight = 0
    public var freeSlots: Int { capacity - inFlight }
    /// Becomes readable when worker completions are waiting for `reapCompletions`.
    public var completionEventFD: FileDescriptor { shared.completionEvent.fd }

    /// The most workers it grows to.
    public let maxThreads: Int
    /// Where workers run (empty: wherever the thread that starts them may).
    public let workerCPUs: [Int]
    private let shared: PoolShared
    private var workers: [pthread_t] = []
    private let logger: Logger
    private let epoll: Epoll
    private var unsubmitted: [PoolJob] = []
    private var reaped: [PoolCompletion] = []
    /// Completions decided on the engine thread (e.g. a `.read` whose fd epoll refuses).
    private var immediate: [PoolCompletion] = []
    private var reads = ReadWaiters()
    private var delivering = false
    private var isShutDown = false
    private let eventMasks: UnsafeMutablePointer<UInt32>
    private let eventDatas: UnsafeMutablePointer<UInt64>
    private static let maxEvents: Int32 = 64
    private static let completionKey = UInt64.max

    /// Starts `threads` workers (at least 1), also each file's limit;
    /// `capacity` bounds queued plus in-flight operations. Workers run on
    /// `workerCPUs` whichever thread starts them (the reactor starts those it
    /// adds, and they would inherit its pinning to one CPU).
    public init(
        threads: Int = 4, maxThreads: Int = 64, capacity: Int = 256, workerCPUs: [Int] = [],
        logger: Logger = Logger(label: "vhost-blkd.blockio")
    ) throws(Errno) {
        self.capacity = max(capacity, 1)
        self.maxThreads = max(maxThreads, threads, 1)
        self.workerCPUs = workerCPUs
        self.logger = logger
        let shared = try PoolShared(perFileLimit: max(threads, 1))
        let epoll: Epoll
        do {
            epoll = try Epoll()
        } catch {
            shared.close()
            throw error
        }
        do {
            try epoll.add(shared.completionEvent.fd, events: EPOLLIN.rawValue, data: Self.completionKey)
        } catch {
            epoll.close()
            shared.close()
            throw error
        }
        self.shared = shared
        self.epoll = epoll
        self.eventMasks = .allocate(capacity: Int(Self.maxEvents))
        self.eventDatas = .allocate(capacity: Int(Self.maxEvents))
        for _ in 0..<max(threads, 1) {
            do {
                try startWorker()
            } catch {
                logger.error("thread-pool worker failed to start", metadata: ["errno": "\(error)"])
                if workers.isEmpty {
                    shutdown()
                    throw error
                }
                break
            }
        }
    }

    /// Workers running now.
    public var threadCount: Int { workers.count }

    private func startWorker() throws(Errno) {
        let shared = self.shared
        workers.append(try PosixThread.start(name: "vb-pool-\(workers.count)", cpus: workerCPUs) { shared.workerLoop() })
    }

    deinit {
        shutdown()
        eventMasks.deallocate()
        eventDatas.deallocate()
    }

    /// Stops and joins the workers (operations already submitted still run);
    /// undelivered completions are dropped. Idempotent.
    public func close() { shutdown() }

    public func shutdown() {
        guard !isShutDown else { return }
        isShutDown = true
        shared.stop(workers: workers.count)
        for thread in workers { PosixThread.join(thread) }
        workers.removeAll()
        epoll.close()
        shared.close()
    }

    public func enqueue(_ op: IOOperation, tag: UInt64) -> Bool {
        guard !isShutDown, inFlight < capacity else { return false }
        inFlight += 1
        if case let .read(fd, buffer, length) = op {
            reads.append(PendingRead(tag: tag, buffer: buffer, length: length), fd: fd)
            let rc = reads.arm(fd, epoll: epoll)
            if rc < 0 { failReads(fd: fd, error: rc) }
        } else {
            unsubmitted.append(PoolJob(op: op, tag: tag))
        }
        return true
    }

    public func submit() {
        guard !unsubmitted.isEmpty, !isShutDown else { return }
        let wanted = shared.push(unsubmitted, workers: workers.count)
        unsubmitted.removeAll(keepingCapacity: true)
        let adding = min(wanted, maxThreads - workers.count)
        guard adding > 0 else { return }
        do {
            for _ in 0..<adding { try startWorker() }
        } catch {
            logger.error("thread-pool worker failed to start", metadata: ["errno": "\(error)"])
        }
        if workers.count == maxThreads {
            logger.warning("thread-pool engine reached \(maxThreads) workers: requests on several files are slow or hang")
        }
    }

    /// Delivers worker completions without blocking (reads the eventfd counter
    /// first, then the queue, so a completion is never left unsignalled).
    public func reapCompletions(_ handler: (UInt64, Int32) -> Void) -> Int {
        guard !delivering, !isShutDown else { return 0 }
        delivering = true
        defer { delivering = false }
        return deliverCompletions(handler)
    }

    private func deliverCompletions(_ handler: (UInt64, Int32) -> Void) -> Int {
        shared.completionEvent.drain()
        shared.takeCompletions(into: &reaped)
        reaped.append(contentsOf: immediate)
        immediate.removeAll(keepingCapacity: true)
        inFlight -= reaped.count
        for completion in reaped { handler(completion.tag, completion.result) }
        let count = reaped.count
        reaped.removeAll(keepingCapacity: true)
        return count
    }

    public func wait(timeoutNanoseconds: Int64?, _ handler: (UInt64, Int32) -> Void) -> Int {
        guard !delivering, !isShutDown else { return 0 }
        delivering = true
        defer { delivering = false }
        submit()
        var delivered = 0
        if !immediate.isEmpty { delivered += deliverCompletions(handler) }
        let deadline = timeoutNanoseconds.map { MonotonicClock.deadline(after: $0) }
        while true {
            let timeoutMs: Int32
            if delivered > 0 {
                timeoutMs = 0
            } else if let deadline {
                timeoutMs = MonotonicClock.millisecondsUntil(deadline)
            } else {
                timeoutMs = -1
            }
            let count: Int
            do {
                count = try epoll.wait(masks: eventMasks, datas: eventDatas, capacity: Self.maxEvents, timeoutMilliseconds: timeoutMs)
            } catch {
                return delivered
            }
            if count > 0 {
                for index in 0..<count {
                    let key = eventDatas[index]
                    if key == Self.completionKey {
                        delivered += deliverCompletions(handler)
                    } else {
                        delivered += serviceRead(fd: FileDescriptor(Int32(truncatingIfNeeded: key)), handler)
                    }
                }
            }
            if delivered > 0 || timeoutMs == 0 { return delivered }
        }
    }

    // MARK: - Reads

    /// One read attempt on a readable fd (one per readiness: a blocking fd must not block).
    private func serviceRead(fd: FileDescriptor, _ handler: (UInt64, Int32) -> Void) -> Int {
        reads.disarmed(fd)
        guard let pending = reads.first(fd) else { return 0 }
        let result: Int32
        do throws(Errno) {
            result = Int32(clamping: try fd.read(into: pending.buffer, length: pending.length))
        } catch where error.rawValue == EAGAIN || error.rawValue == EWOULDBLOCK {
            let rc = reads.arm(fd, epoll: epoll)
            if rc < 0 { failReads(fd: fd, error: rc) }
            return 0
        } catch {
            result = -error.rawValue
        }
        reads.removeFirst(fd)
        if reads.first(fd) != nil {
            let rc = reads.arm(fd, epoll: epoll)
            if rc < 0 { failReads(fd: fd, error: rc) }
        }
        inFlight -= 1
        handler(pending.tag, result)
        return 1
    }

    /// Completes the pending read with `tag` with -ECANCELED on the next
    /// reap. An fd left with no reader leaves the epoll set: once closed, its
    /// number may come back as another file.
    public func cancelRead(tag: UInt64) {
        guard let (read, fd) = reads.remove(tag: tag) else { return }
        immediate.append(PoolCompletion(tag: read.tag, result: -ECANCELED))
        if reads.first(fd) == nil { reads.unregister(fd, epoll: epoll) }
    }

    /// Completes every pending read on `fd` with `error` (-errno), on the next reap.
    private func failReads(fd: FileDescriptor, error: Int32) {
        for read in reads.removeAll(fd) { immediate.append(PoolCompletion(tag: read.tag, result: error)) }
    }
}

/// A `.read` waiting for its fd to become readable. The buffer stays valid
/// until its completion is delivered (`IOOperation`'s contract).
struct PendingRead {
    let tag: UInt64
    let buffer: UnsafeMutableRawPointer
    let length: Int
}

/// Pending reads per fd and their EPOLLONESHOT registrations (engine thread only).
struct ReadWaiters {
    private var byFD: [FileDescriptor: [PendingRead]] = [:]
    private var registered: Set<FileDescriptor> = []
    private var armed: Set<FileDescriptor> = []

    mutating func append(_ read: PendingRead, fd: FileDescriptor) { byFD[fd, default: []].append(read) }
    func first(_ fd: FileDescriptor) -> PendingRead? { byFD[fd]?.first }
    mutating func removeFirst(_ fd: FileDescriptor) {
        guard var list = byFD[fd], !list.isEmpty else { return }
        list.removeFirst()
        byFD[fd] = list.isEmpty ? nil : list
    }
    mutating func removeAll(_ fd: FileDescriptor) -> [PendingRead] { byFD.removeValue(forKey: fd) ?? [] }
    /// Takes the read with `tag` out, wherever it waits; returns it and its fd.
    mutating func remove(tag: UInt64) -> (PendingRead, FileDescriptor)? {
        for (fd, list) in byFD {
            guard let index = list.firstIndex(where: { $0.tag == tag }) else { continue }
            var rest = list
            let read = rest.remove(at: index)
            byFD[fd] = rest.isEmpty ? nil : rest
            return (read, fd)
        }
        return nil
    }

    /// Takes `fd` out of the epoll set (an fd no read waits on any more).
    mutating func unregister(_ fd: FileDescriptor, epoll: Epoll) {
        guard registered.remove(fd) != nil else { return }
        armed.remove(fd)
        _ = try? epoll.remove(fd)
    }
    /// EPOLLONESHOT fired: the registration is disabled until re-armed.
    mutating func disarmed(_ fd: FileDescriptor) { armed.remove(fd) }

    /// Arms `fd` for one EPOLLIN report; returns 0 or -errno. A registration
    /// whose fd was closed meanwhile (the kernel dropped it) is re-added.
    mutating func arm(_ fd: FileDescriptor, epoll: Epoll) -> Int32 {
        if armed.contains(fd) { return 0 }
        let events = EPOLLIN.rawValue | EPOLLONESHOT.rawValue
        let key = UInt64(UInt32(bitPattern: fd.rawValue))
        do throws(Errno) {
            if registered.contains(fd) {
                do throws(Errno) {
                    try epoll.modify(fd, events: events, data: key)
                } catch where error.rawValue == ENOENT {
                    try epoll.add(fd, events: events, data: key)
                }
            } else {
                do throws(Errno) {
                    try epoll.add(fd, events: events, data: key)
                } catch where error.rawValue == EEXIST {
                    try epoll.modify(fd, events: events, data: key)
                }
            }
        } catch {
            registered.remove(fd)
            return -error.rawValue
        }
        registered.insert(fd)
        armed.insert(fd)
        return 0
    }
}

/// A queued disk operation for a worker. `@unchecked Sendable`: its pointers
/// stay valid until the completion is delivered (`IOOperation`'s contract),
/// and only one worker touches them.
struct PoolJob: @unchecked Sendable {
    let op: IOOperation
    let tag: UInt64

    /// Runs the blocking syscall; returns bytes transferred or -errno.
    func execute() -> Int32 { op.performBlocking() }
}

struct PoolCompletion: Sendable {
    let tag: UInt64
    let result: Int32
}

/// State shared by the engine thread and the workers, guarded by two
/// locks; `jobTokens` is a semaphore eventfd (one token per job, one per
/// worker at shutdown) that idle workers block on.
final class PoolShared: Sendable {
    let jobs: Locked<PoolJobQueue>
    let completions = Locked([PoolCompletion]())
    let jobTokens: EventFD
    let completionEvent: EventFD

    init(perFileLimit: Int) throws(Errno) {
        jobs = Locked(PoolJobQueue(perFileLimit: perFileLimit))
        jobTokens = try EventFD.semaphore()
        do {
            completionEvent = try EventFD(nonBlocking: true)
        } catch {
            jobTokens.close()
            throw error
        }
    }

    /// Queues `batch` with a token per job; returns how many workers to add
    /// to the `workers` there are.
    func push(_ batch: [PoolJob], workers: Int) -> Int {
        let wanted = jobs.withLock { queue in
            queue.append(batch)
            return queue.workersWanted(workers: workers)
        }
        post(UInt64(batch.count))
        return wanted
    }

    func stop(workers: Int) {
        jobs.withLock { $0.stopping = true }
        post(UInt64(max(workers, 0)))
    }

    func takeCompletions(into buffer: inout [PoolCompletion]) {
        completions.withLock { queue in swap(&queue, &buffer) }
    }

    func close() {
        jobTokens.close()
        completionEvent.close()
    }

    private func post(_ count: UInt64) {
        guard count > 0 else { return }
        _ = try? jobTokens.fd.addToCounter(count)
    }

    /// A worker: take a token, run a job, queue its completion, signal; then
    /// any job an owed token left for it.
    func workerLoop() {
        while true {
            do throws(Errno) {
                _ = try jobTokens.fd.takeCounter()
            } catch where error.rawValue != EAGAIN {
                return  // fd closed: give up
            } catch {}
            let (taken, stopping) = jobs.withLock { queue in (queue.take(), queue.stopping) }
            guard var job = taken else {
                if stopping { return }
                continue
            }
            while true {
                let result = job.execute()
                completions.withLock { $0.append(PoolCompletion(tag: job.tag, result: result)) }
                completionEvent.signal()
                guard let next = jobs.withLock({ $0.finish(job) }) else { break }
                job = next
            }
        }
    }
}

/// CLOCK_MONOTONIC in nanoseconds.
enum MonotonicClock {
    static var now: Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec) &* 1_000_000_000 &+ Int64(ts.tv_nsec)
    }

    /// `now + nanoseconds`, saturating (negative counts as 0).
    static func deadline(after nanoseconds: Int64) -> Int64 {
        let (sum, overflow) = now.addingReportingOverflow(max(nanoseconds, 0))
        return overflow ? Int64.max : sum
    }

    /// Milliseconds until `deadline`, rounded up, clamped to 0...Int32.max.
    static func millisecondsUntil(_ deadline: Int64) -> Int32 {
        let remaining = deadline &- now
        if remaining <= 0 { return 0 }
        return Int32(clamping: (remaining &+ 999_999) / 1_000_000)
    }
}
