import BlockIO
import Dispatch
import Glibc
import Logging
import Posix
import Synchronization

/// A pinned thread serving virtqueues: one wait point per reactor, where guest
/// kicks (eventfd reads), disk completions and cross-thread messages all
/// arrive through the same engine (docs/ARCHITECTURE.md, "The data path").
///
/// Thread confinement: every member except `post`, `postAndWait`, `load`,
/// `stop`, the atomics and the immutable `index`/`cpu` is used only on the
/// reactor thread; debug builds check it (`preconditionOnReactor`).
public final class Reactor: @unchecked Sendable {  // the reactor thread, but for the calls named above
    public let index: Int
    public let cpu: Int
    public let logger: Logger
    /// The engine that waits: io_uring, or the thread pool when io_uring is unavailable.
    let primary: IOEngine
    /// The thread pool for thread-pool bdevs; it is the primary engine when io_uring is off.
    private var pool: ThreadPoolEngine?
    private let primaryIsPool: Bool

    private let inbox = Mutex<[@Sendable () -> Void]>([])
    private let inboxEvent: EventFD
    /// 8-byte landing zones for the eventfd reads (owned; freed in deinit).
    private let inboxBuffer = UnsafeMutableRawPointer.allocate(byteCount: 8, alignment: 8)
    private let poolBuffer = UnsafeMutableRawPointer.allocate(byteCount: 8, alignment: 8)
    private var poolArmed = false

    private var tasks: [ReactorTask?] = [nil, nil]  // ids 0 and 1 are the reactor's own
    private var freeIDs: [UInt32] = []
    /// Tasks to flush at the end of this iteration, by id, with a flag per id
    /// so marking twice costs a load and a compare (no hashing on the data path).
    private var dirty: [UInt32] = []
    private var flushing: [UInt32] = []
    private var isDirty: [Bool] = [false, false]
    /// Tasks waiting for engine slots (flushed after any completion).
    private var waiting: [UInt32] = []
    private var isWaiting: [Bool] = [false, false]
    private var running = true
    private var thread: pthread_t?
    private let stopped = Atomic<Bool>(false)

    /// Controllers placed here; the control plane reads it to pick the least loaded reactor.
    public let load = Atomic<Int>(0)
    /// Kernel thread id, once running.
    public let threadID = Atomic<Int32>(0)
    /// The reactor thread's `pthread_self()`, once running: what
    /// `isOnReactor` compares with (no system call, unlike `threadID`).
    @usableFromInline let owner = Atomic<pthread_t>(0)
    /// CPU time accounting for framework_get_reactors: ticks spent busy vs waiting.
    public let busyNanoseconds = Atomic<UInt64>(0)
    public let idleNanoseconds = Atomic<UInt64>(0)
    /// CLOCK_MONOTONIC nanoseconds when this iteration's wait returned.
    /// Per-request latency stamps use it, so the data path reads no clock of
    /// its own: the error is at most one iteration's busy time. An atomic only
    /// to avoid a class property's exclusivity check: written and read
    /// (relaxed, a plain load) on the reactor thread.
    public let loopTime = Atomic<UInt64>(0)

    static let inboxTaskID: UInt32 = 0
    static let poolTaskID: UInt32 = 1

    /// Creates the reactor's engine; `useURing` false forces the thread pool.
    /// Adaptive polling (`PollWindow`: QEMU's aio_poll rule, with hysteresis):
    /// after a wake-up that came within `pollMaxNanoseconds`, the next wait
    /// first spins for the window (4 µs, doubling up to the maximum) looking at
    /// pollable tasks and the engine; four wake-ups in a row later than the
    /// maximum stop polling, and a stopped window is probed at the maximum
    /// now and then (1 ms after the stop, doubling to 64 ms). An
    /// idle reactor therefore sleeps, and a busy one skips the sleep and
    /// wake-up (and, for virtqueues, the guest's kicks).
    public let pollMaxNanoseconds: UInt64
    private var pollWindow: PollWindow
    /// True during a polling phase (tasks skip re-arming notifications).
    public private(set) var isPolling = false
    private var pollable: [UInt32] = []
    private var isPollable: [Bool] = [false, false]
    /// Tasks to poll at the next iteration (a queue that used up its batch:
    /// the others on this reactor get their turn first). While any wait, the
    /// engine wait does not block.
    private var pollNext: [UInt32] = []
    private var polling: [UInt32] = []
    private var isPollNext: [Bool] = [false, false]
    /// Time spent spinning (part of busy time): for framework_get_reactors.
    public let pollNanosecondsSpent = Atomic<UInt64>(0)
    /// The loop's own counters (sleeps, polling rounds, window changes):
    /// reactor thread only, read through `countersSnapshot`.
    private var counters = ReactorCounters()

    /// `submissionPolling` asks for an SQPOLL ring (`SubmissionPolling`).
    /// Thread-pool workers run on `poolCPUs` (the daemon's control CPUs, or
    /// its reactors' when it has none apart), not only on the reactor's: they
    /// block in system calls and need not share its CPU. io_uring's kernel
    /// workers run on `ioWorkerCPUs` when given (empty: where the kernel puts
    /// them; Linux 6.x has them inherit the reactor's pinning).
    public init(
        index: Int, cpu: Int, useURing: Bool, pollMaxMicroseconds: UInt64 = 32,
        submissionPolling: SubmissionPolling? = nil, poolCPUs: [Int] = [], ioWorkerCPUs: [Int] = [], logger: Logger
    ) throws(Errno) {
        self.index = index
        self.cpu = cpu
        self.poolCPUs = poolCPUs.isEmpty ? [cpu] : poolCPUs
        self.ioWorkerCPUs = ioWorkerCPUs
        pollMaxNanoseconds = pollMaxMicroseconds &* 1000
        pollWindow = PollWindow(maximumNanoseconds: pollMaxNanoseconds)
        var logger = logger
        logger[metadataKey: "reactor"] = "\(index)"
        self.logger = logger
        inboxEvent = try EventFD()
        if useURing {
            primary = try URingEngine(entries: 512, polling: submissionPolling, logger: logger)
            primaryIsPool = false
        } else {
            let pool = try ThreadPoolEngine(threads: 4, capacity: 512, workerCPUs: poolCPUs, logger: logger)
            primary = pool
            self.pool = pool
            primaryIsPool = true
        }
    }

    deinit {
        inboxBuffer.deallocate()
        poolBuffer.deallocate()
        inboxEvent.close()
    }

    public var engineName: String { primary.name }
    /// Where this reactor's thread-pool workers run.
    public let poolCPUs: [Int]
    /// Where io_uring's kernel workers for this reactor run (empty: not placed).
    public let ioWorkerCPUs: [Int]
    /// Whether a kernel thread polls this reactor's io_uring submission queue.
    public var submissionPolling: Bool { (primary as? URingEngine)?.submissionPolling ?? false }

    /// Starts the reactor thread, pinned to `cpu` and named `reactor_<index>`.
    public func start() throws(Errno) {
        thread = try PosixThread.start(name: "reactor_\(index)", cpu: cpu) { [self] in run() }
    }

    /// Stops the loop and joins the thread (call from a non-reactor thread).
    public func stop() {
        post { [self] in running = false }
        if let thread { PosixThread.join(thread) }
        thread = nil
    }

    // MARK: Thread confinement

    /// Whether the caller runs on this reactor's thread.
    @inlinable public var isOnReactor: Bool { owner.load(ordering: .relaxed) == pthread_self() }

    /// Debug builds stop here unless the caller runs on this reactor's
    /// thread (SwiftNIO's `preconditionInEventLoop`); release builds compile
    /// it out. Reactor-confined objects call it at their entry points.
    @inlinable
    public func preconditionOnReactor(file: StaticString = #fileID, line: UInt = #line) {
        assert(isOnReactor, "reactor-confined state touched off reactor_\(index)'s thread", file: file, line: line)
    }

    // MARK: Cross-thread messages

    /// Runs `work` on the reactor thread soon (any thread).
    public func post(_ work: @escaping @Sendable () -> Void) {
        inbox.withLock { $0.append(work) }
        inboxEvent.signal()
    }

    /// Runs `work` on the reactor thread and waits for it to return (never call from the reactor itself).
    public func postAndWait<T: Sendable>(_ work: @escaping @Sendable () -> T) -> T {
        let done = DispatchSemaphore(value: 0)
        let box = ResultBox<T>()
        post {
            box.value.withLock { $0 = work() }
            done.signal()
        }
        done.wait()
        return box.take()
    }

    // MARK: Tasks and operations (reactor thread only)

    /// Registers a task; the id goes into the tag of every operation it queues.
    public func register(_ task: ReactorTask) -> UInt32 {
        preconditionOnReactor()
        if let id = freeIDs.popLast() {
            tasks[Int(id)] = task
            return id
        }
        tasks.append(task)
        isDirty.append(false)
        isWaiting.append(false)
        isPollable.append(false)
        isPollNext.append(false)
        return UInt32(tasks.count - 1)
    }

    /// Forgets a task; the task must have nothing in flight.
    public func unregister(_ id: UInt32) {
        preconditionOnReactor()
        guard Int(id) < tasks.count, id > Self.poolTaskID else { return }
        if isWaiting[Int(id)] {
            isWaiting[Int(id)] = false
            waiting.removeAll { $0 == id }
        }
        setPollable(id, false)
        tasks[Int(id)] = nil  // a pending flush of this id finds nothing
        freeIDs.append(id)
    }

    /// Free slots for disk I/O in the engine that serves `choice`. On the
    /// primary engine one slot per registered task (its kick read) and two
    /// for the reactor's own reads stay reserved, so I/O can never fill the
    /// engine so far that a queue cannot re-arm its kick and stalls.
    public func freeSlots(_ choice: EngineChoice) -> Int {
        switch choice {
        case .primary: return max(0, primary.freeSlots - (tasks.count - freeIDs.count))
        case .threadPool: return ensurePool()?.freeSlots ?? 0
        }
    }

    /// Queues `op` for task `id` with `slot`; false when that engine is full.
    public func enqueue(_ op: IOOperation, task id: UInt32, slot: UInt32, on choice: EngineChoice = .primary) -> Bool {
        preconditionOnReactor()
        let tag = UInt64(id) << 32 | UInt64(slot)
        switch choice {
        case .primary:
            return primary.enqueue(op, tag: tag)
        case .threadPool:
            guard let pool = ensurePool() else { return false }
            if !primaryIsPool && !poolArmed { armPool() }
            return pool.enqueue(op, tag: tag)
        }
    }

    /// Cancels `task`'s pending `.read` in `slot` on the primary engine: it
    /// completes (once, through `complete`) with -ECANCELED unless it already
    /// read. Writing the fd instead would race with whoever else reads it.
    public func cancelRead(task id: UInt32, slot: UInt32) {
        preconditionOnReactor()
        primary.cancelRead(tag: UInt64(id) << 32 | UInt64(slot))
    }

    /// Asks for `task.flush()` after the next iteration that completes anything:
    /// for a task that stopped popping because an engine was full, while the
    /// slots are held by other tasks' operations.
    public func waitForSlots(_ id: UInt32) {
        guard Int(id) < isWaiting.count, !isWaiting[Int(id)] else { return }
        isWaiting[Int(id)] = true
        waiting.append(id)
    }

    /// Asks for `ReactorTask.poll()` of task `id` at the next iteration, after
    /// the engine's completions: round-robin between busy tasks.
    public func pollNextIteration(_ id: UInt32) {
        guard Int(id) < isPollNext.count, !isPollNext[Int(id)] else { return }
        isPollNext[Int(id)] = true
        pollNext.append(id)
    }

    /// Polls the tasks that asked for the next iteration; true if any did.
    private func pollDeferred() -> Bool {
        guard !pollNext.isEmpty else { return false }
        swap(&pollNext, &polling)
        for id in polling { isPollNext[Int(id)] = false }
        for id in polling { _ = tasks[Int(id)]?.poll() }
        polling.removeAll(keepingCapacity: true)
        return true
    }

    /// Includes task `id` in polling phases (`ReactorTask.poll`), or not.
    public func setPollable(_ id: UInt32, _ on: Bool) {
        preconditionOnReactor()
        guard Int(id) < isPollable.count, isPollable[Int(id)] != on else { return }
        isPollable[Int(id)] = on
        if on { pollable.append(id) } else { pollable.removeAll { $0 == id } }
    }

    /// Asks for the flush of task `id` (its `register` answer) at the end of this iteration.
    @inline(__always)
    public func markDirty(_ id: UInt32) {
        guard Int(id) < isDirty.count, !isDirty[Int(id)] else { return }
        isDirty[Int(id)] = true
        dirty.append(id)
    }

    private func ensurePool() -> ThreadPoolEngine? {
        if let pool { return pool }
        do {
            let created = try ThreadPoolEngine(threads: 4, capacity: 256, workerCPUs: poolCPUs, logger: logger)
            pool = created
            logger.info("thread-pool engine started for thread-pool bdevs")
            return created
        } catch {
            logger.error("cannot start the thread-pool engine: \(error)")
            return nil
        }
    }

    private func armPool() {
        guard let pool else { return }
        let fd = pool.completionEventFD
        poolArmed = primary.enqueue(.read(fd: fd, buffer: poolBuffer, length: 8), tag: UInt64(Self.poolTaskID) << 32)
    }

    // MARK: Counters

    /// The loop's counters as they are now, read on the reactor thread (any
    /// other thread; never from the reactor itself: it waits for the reactor).
    public func countersSnapshot() -> ReactorCounters {
        postAndWait { [self] in currentCounters() }
    }

    private func currentCounters() -> ReactorCounters {
        var c = counters
        c.pollWindowNanoseconds = pollWindow.nanoseconds
        let submits = primary.submitCounts
        c.engineSubmits = submits.calls
        c.engineSubmitted = submits.operations
        c.busyNanoseconds = busyNanoseconds.load(ordering: .relaxed)
        c.idleNanoseconds = idleNanoseconds.load(ordering: .relaxed)
        c.pollNanoseconds = pollNanosecondsSpent.load(ordering: .relaxed)
        return c
    }

    // MARK: The loop

    private func run() {
        owner.store(pthread_self(), ordering: .relaxed)
        threadID.store(PosixThread.currentTID, ordering: .relaxed)
        logger.info("reactor started", metadata: [
            "cpu": "\(cpu)", "engine": "\(primary.name)\(submissionPolling ? " (sqpoll)" : "")",
        ])
        if let uring = primary as? URingEngine, let error = uring.placeWorkers(on: ioWorkerCPUs) {
            logger.warning("io_uring's kernel workers stay where the kernel puts them", metadata: [
                "errno": "\(error)", "cpus": "\(CPUSet(ioWorkerCPUs).list)",
            ])
        }
        armInbox()
        primary.submit()
        loopTime.store(Self.now(), ordering: .relaxed)
        while running {
            if pollWindow.nanoseconds > 0 && !pollable.isEmpty { pollPhase() }
            guard running else { break }
            let before = Self.now()
            var woke: UInt64 = 0
            if pollNext.isEmpty { counters.sleeps &+= 1 }
            let handled = primary.wait(timeoutNanoseconds: pollNext.isEmpty ? nil : 0) { tag, result in
                // Completions are handled inside the wait: stamp the wake-up before the first one.
                if woke == 0 {
                    woke = Self.now()
                    loopTime.store(woke, ordering: .relaxed)
                }
                dispatch(tag: tag, result: result)
            }
            if woke == 0 {
                woke = Self.now()
                loopTime.store(woke, ordering: .relaxed)
            }
            let resumed = pollDeferred()
            if handled > 0 || resumed {
                runDirty()
                if !primaryIsPool { pool?.submit() }
                primary.submit()
            }
            let after = Self.now()
            idleNanoseconds.add(woke &- before, ordering: .relaxed)
            busyNanoseconds.add(after &- woke, ordering: .relaxed)
            adaptPolling(blocked: woke &- before, at: woke)
        }
        // Cancel what is still armed (kick reads) from this thread: the ring is single-issuer.
        if !primaryIsPool { pool?.close() }
        primary.close()
        logger.info("reactor stopped")
        owner.store(0, ordering: .relaxed)  // a later thread may get the same pthread_t
    }

    /// Adapts the polling window to how long the last wait slept (`PollWindow`).
    private func adaptPolling(blocked: UInt64, at now: UInt64) {
        switch pollWindow.wokeUp(afterSleeping: blocked, at: now) {
        case .unchanged: break
        case .grew: counters.pollWindowGrows &+= 1
        case .stopped: counters.pollWindowOffs &+= 1
        case .probed: counters.pollWindowProbes &+= 1
        }
    }

    /// A polling phase: spins over the pollable tasks and, every few rounds,
    /// the engine (a syscall with DEFER_TASKRUN), handling what it finds,
    /// until the window passes without work. Then tasks ask for wake-ups
    /// again and the loop goes to sleep.
    private func pollPhase() {
        let start = Self.now()
        let window = pollWindow.nanoseconds
        var deadline = start &+ window
        isPolling = true
        counters.pollPhases &+= 1
        for id in pollable { tasks[Int(id)]?.beginPoll() }
        var round = 0
        // Rounds and time not yet added to the counters: a phase that keeps
        // finding work can last seconds, so they are added every millisecond
        // too, not only at its end (framework_get_reactors reads them meanwhile).
        var pending = PendingPollCounts(since: start)
        while running {
            // One clock read per round: it stamps the round (stats) and ends the
            // phase. Stamp first: what endPoll pops after the last round uses it.
            let now = Self.now()
            loopTime.store(now, ordering: .relaxed)
            if now >= deadline { break }
            var found = false
            if pollDeferred() { found = true }
            for id in pollable where tasks[Int(id)]?.poll() == true { found = true }
            // The engine every fourth round, busy or not: with DEFER_TASKRUN each
            // look is a syscall, and while guests keep the rings full it found
            // nothing most rounds (8 % of the reactor's cycles, RAM at 3.4M IOPS).
            if round & 3 == 3 {
                if primary.wait(timeoutNanoseconds: 0, { tag, result in dispatch(tag: tag, result: result) }) > 0 { found = true }
            }
            round &+= 1
            pending.rounds &+= 1
            if found {
                runDirty()
                if !primaryIsPool { pool?.submit() }
                primary.submit()
                deadline = now &+ window
                if now &- pending.since >= 1_000_000 { addPollCounts(&pending, upTo: now) }
            } else {
                pending.emptyRounds &+= 1
            }
        }
        isPolling = false
        for id in pollable { tasks[Int(id)]?.endPoll() }
        runDirty()
        // endPoll and the flushes may have queued work on either engine; the
        // loop's next wait submits only the primary one.
        if !primaryIsPool { pool?.submit() }
        primary.submit()
        addPollCounts(&pending, upTo: Self.now())
    }

    /// A polling phase's rounds and time since they were last added.
    private struct PendingPollCounts {
        var since: UInt64
        var rounds: UInt64 = 0
        var emptyRounds: UInt64 = 0
    }

    private func addPollCounts(_ pending: inout PendingPollCounts, upTo now: UInt64) {
        counters.pollRounds &+= pending.rounds
        counters.emptyPollRounds &+= pending.emptyRounds
        let spent = now &- pending.since
        busyNanoseconds.add(spent, ordering: .relaxed)
        pollNanosecondsSpent.add(spent, ordering: .relaxed)
        pending = PendingPollCounts(since: now)
    }

    private func armInbox() {
        let fd = inboxEvent.fd
        _ = primary.enqueue(.read(fd: fd, buffer: inboxBuffer, length: 8), tag: UInt64(Self.inboxTaskID) << 32)
    }

    private func dispatch(tag: UInt64, result: Int32) {
        let id = UInt32(truncatingIfNeeded: tag >> 32)
        let slot = UInt32(truncatingIfNeeded: tag)
        switch id {
        case Self.inboxTaskID:
            let work = inbox.withLock { queue -> [@Sendable () -> Void] in
                let taken = queue
                queue.removeAll(keepingCapacity: true)
                return taken
            }
            for item in work { item() }
            if running { armInbox() }
        case Self.poolTaskID:
            poolArmed = false
            _ = pool?.reapCompletions { tag, result in dispatch(tag: tag, result: result) }
            if running { armPool() }
        default:
            guard Int(id) < tasks.count, let task = tasks[Int(id)] else {
                logger.warning("completion for an unknown task", metadata: ["task": "\(id)", "slot": "\(slot)"])
                return
            }
            task.complete(slot: slot, result: result)
        }
    }

    private func runDirty() {
        if !waiting.isEmpty {
            for id in waiting {
                isWaiting[Int(id)] = false
                markDirty(id)
            }
            waiting.removeAll(keepingCapacity: true)
        }
        while !dirty.isEmpty {
            swap(&dirty, &flushing)
            for id in flushing { isDirty[Int(id)] = false }  // a flush may mark itself again
            for id in flushing { tasks[Int(id)]?.flush() }
            flushing.removeAll(keepingCapacity: true)
        }
    }

    /// CLOCK_MONOTONIC in nanoseconds (the unit of `loopTime` and of the queues' latency stamps).
    public static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }
}

/// Carries a value from the reactor back to the thread waiting in `postAndWait`.
private final class ResultBox<T: Sendable>: Sendable {
    let value = Mutex<T?>(nil)
    func take() -> T {
        guard let v = value.withLock({ $0 }) else { preconditionFailure("postAndWait: work did not run") }
        return v
    }
}
