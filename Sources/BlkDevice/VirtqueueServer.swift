import BlockIO
import Glibc
import Logging
import Posix
import Reactor
import VhostUser
import Virtio

/// Serves one virtio-blk virtqueue on its reactor (virtio 1.2 §2.7, §5.2.6).
///
/// A kick wakes it; it drains the avail ring while the engine has room (flow
/// control), hands each chain to the virtio-blk executor (`BlkExecutor`),
/// has the backend perform what the executor asks (iovecs point straight
/// into guest memory), and on completion writes the status byte and a used
/// element. Every popped head gets a used element, errors included.
///
/// The work is split by concern: this file holds the state, the lifecycle
/// and the reactor's callbacks; `+Avail` pops the ring and polls;
/// `+Requests` runs each request through the executor and the backend;
/// `+Publish` publishes used elements, signals the guest and logs dirty pages.
///
/// Thread confinement: after `start()` posts it, everything runs on `reactor` (checked in debug builds).
package final class VirtqueueServer: ReactorTask, QoSWaiter, @unchecked Sendable {  // confined to `reactor` once started
    /// The tag of the kick eventfd's read in the engine (request slots are below the queue size).
    static let kickSlot = UInt32.max
    /// The tag of the RBD completion eventfd's read (RBDBackend.swift).
    static let rbdSlot = UInt32.max - 1

    package let queueIndex: Int
    package let reactor: Reactor
    var ring: QueueRing
    /// The guest memory table requests are translated through; ADD_MEM_REG grows it (`updateMemory`).
    private(set) var memory: GuestMemory
    let kickFD: FileDescriptor
    var call: CallSignal
    var backend: DeviceBackend
    /// `backend.disk`, kept with it: what the executor checks each request against.
    var disk: BlkDisk
    /// The RAM of a `.memory` backend, unretained: `backend` holds the
    /// reference. Binding it from `backend.storage` per request cost a
    /// retain and a release, and the release's atomic waited for the 4K
    /// copy into guest memory to drain (17 % of the reactor's cycles at
    /// 3.3M IOPS).
    var memoryBacking: Unmanaged<MemoryBacking>?
    /// Bumped by every `updateBackend`; slots remember the one they used.
    var backendGeneration: UInt32 = 0
    /// Requests dispatched before the latest `updateBackend` still in flight.
    var previousBackendInFlight = 0
    private var onPreviousBackendDrained: [() -> Void] = []
    /// Backends replaced while requests dispatched on them were in flight,
    /// with their generation, kept until those complete (a large copy goes
    /// on with the backend it began on).
    private var retiredBackends: [(generation: UInt32, backend: DeviceBackend)] = []
    /// Large reads and writes on inline backends under way (`LargeCopies`).
    var largeCopies = LargeCopies()
    let logger: Logger
    /// Trace logging, decided once: asking the log handler per request costs
    /// an existential copy of it.
    let tracing: Bool

    var taskID: UInt32 = 0
    var slots: RequestSlots
    private let kickBuffer = UnsafeMutableRawPointer.allocate(byteCount: 8, alignment: 8)
    private var kickArmed = false
    var inFlight = 0
    /// Flow control: the engine or the slots ran out; popping resumes at the next flush.
    var blocked = false
    var stopping = false
    private var onStopped: ((UInt32) -> Void)?
    /// The used index at the last publish.
    var lastCheckedUsed: UInt16
    var malformedLogged = 0
    /// Counters for bdev_get_iostat and vhost_get_controllers (QueueStats.swift); reactor thread only.
    package let stats: QueueStatsBlock
    /// Dirty-page logging during live migration (LOG_ALL with a log base):
    /// nil when off, so the data path pays one branch.
    var dirtyLog: DirtyLog?
    /// The used ring's guest-physical address (SET_VRING_ADDR's `log`), logged with it.
    var usedRingGPA: UInt64?
    /// Inflight tracking (INFLIGHT_SHMFD) of a split ring, when the front-end set it up.
    var inflight: InflightQueue?
    /// Inflight tracking of a packed ring.
    let packedInflight: PackedInflightQueue?
    /// What a restarted daemon serves again before popping the ring
    /// (reversed: taken from the end): a split ring's heads, or a packed
    /// ring's head entries in `packedInflight`.
    var resubmit: [UInt16]
    /// Heads whose used elements await the next publish (inflight tracking only).
    let unpublishedHeads: UnsafeMutablePointer<UInt16>
    var unpublishedCount = 0
    var polling = HybridPolling()
    /// Completions of RBD operations, made when the queue first has an RBD
    /// backend and kept until it stops (RBDBackend.swift).
    var rbdCompletions: RBDCompletionQueue?
    /// Whether the read of `rbdCompletions`' eventfd is in the engine.
    var rbdArmed = false
    /// The image flush a stopping RBD queue does before its GET_VRING_BASE
    /// answer, when it wrote (RBDBackend.swift, `startStopFlush`).
    var stopFlush = RBDStopFlush.idle
    let rbdBuffer = UnsafeMutableRawPointer.allocate(byteCount: 8, alignment: 8)
    /// Whether this queue takes part in the reactor's polling now.
    var pollsGuest = true
    /// Interrupt coalescing (`VirtqueueServer+Coalescing.swift`); off unless the controller sets it.
    var coalescing = InterruptCoalescing()
    /// A signal coalescing held back: the used index it covers from (nil: none pending).
    var pendingSignalFrom: UInt16?
    /// Sends a held-back signal at its time; made when coalescing is first turned on.
    var signalTimer: ReactorTimer?

    /// When requests completed, for their latency (virtio-blk has no clock
    /// of its own): read at the first completion after a pop batch or a
    /// reactor iteration began, and shared by the completions until the next
    /// one, so a batch of requests served inline (RAM, null, tmpfs) costs one
    /// clock read and still reports the time their work took. Pops are
    /// stamped with the reactor's `loopTime`, read once per iteration.
    var completionClock: UInt64 = 0
    var completionClockStale = true

    /// A popped request its bdev's QoS limit holds back (QoSLimiter.swift):
    /// nothing more is popped until the limiter resumes this queue.
    var qosHeld: (request: BlkRequest, slot: UInt32)?

    /// Writes held by the `pause` error policy (VirtqueueServer+Errors.swift),
    /// oldest first: their slots stay taken until `resumeIO` performs them
    /// again or the queue stops and fails them.
    var heldWrites: [UInt32] = []
    /// Held writes wait for `bdev_resume_io`: nothing is popped meanwhile.
    var ioPaused = false
    /// `ioPaused`, or held writes not yet performed again: popping checks this one flag.
    var errorHold = false
    /// The bdev state the pause was counted on (the backend may change meanwhile).
    var pausedOn: BdevErrorState?
    /// Failed operations logged by this queue (`logIOError`'s rate limit).
    var ioErrorsSeen: UInt64 = 0

    /// `inflight` and `resubmit` come from inflight recovery (vhost-user
    /// spec, "Inflight I/O tracking"): `resubmit` heads, oldest first, are
    /// served before the avail ring. At most `maxRequests` requests are in
    /// flight (`RequestSlots`), whatever the ring's size.
    package convenience init(queueIndex: Int, ring: SplitQueue, memory: GuestMemory, kickFD: FileDescriptor, callFD: FileDescriptor?,
                             backend: DeviceBackend, reactor: Reactor, logger: Logger,
                             inflight: InflightQueue? = nil, resubmit: [UInt16] = [], maxRequests: Int = 1024) {
        self.init(queueIndex: queueIndex, ring: .split(ring), memory: memory, kickFD: kickFD, callFD: callFD,
                  backend: backend, reactor: reactor, logger: logger,
                  inflight: inflight, resubmit: resubmit, maxRequests: maxRequests)
    }

    /// A split ring is tracked by `inflight`, a packed one by `packedInflight`
    /// (vhost-user spec, "Inflight I/O tracking"); `resubmit` is in the
    /// form of the one given.
    package init(queueIndex: Int, ring: QueueRing, memory: GuestMemory, kickFD: FileDescriptor, callFD: FileDescriptor?,
                 backend: DeviceBackend, reactor: Reactor, logger: Logger,
                 inflight: InflightQueue? = nil, packedInflight: PackedInflightQueue? = nil,
                 resubmit: [UInt16] = [], maxRequests: Int = 1024) {
        self.queueIndex = queueIndex
        self.ring = ring
        self.memory = memory
        self.kickFD = kickFD
        self.call = CallSignal(fd: callFD)
        self.backend = backend
        self.disk = backend.disk
        self.reactor = reactor
        var logger = logger
        logger[metadataKey: "vq.index"] = "\(queueIndex)"
        self.logger = logger
        tracing = logger.logLevel <= .trace
        let count = Int(ring.size)
        slots = RequestSlots(count: max(1, min(count, maxRequests)))
        stats = QueueStatsBlock(slotCount: slots.count)
        lastCheckedUsed = ring.usedIdx
        self.inflight = inflight
        self.packedInflight = ring.isPacked ? packedInflight : nil
        self.resubmit = resubmit.reversed()
        unpublishedHeads = .allocate(capacity: inflight == nil ? 1 : count)
    }

    deinit {
        unpublishedHeads.deallocate()
        kickBuffer.deallocate()
        rbdBuffer.deallocate()
    }

    /// A copy of the counters with the current in-flight count (reactor thread).
    package func statsSnapshot() -> QueueStats {
        reactor.preconditionOnReactor()
        var copy = stats.snapshot()
        copy.inFlight = inFlight
        copy.size = ring.size
        return copy
    }

    // MARK: Lifecycle (reactor thread)

    /// Registers with the reactor, arms the kick and serves what is already
    /// pending. The guest is signalled once whatever the ring says: a
    /// daemon that died between publishing used elements and signalling
    /// them left a guest that waits for an interrupt (a spurious one is
    /// harmless, a lost one hangs it).
    package func start() {
        reactor.preconditionOnReactor()
        taskID = reactor.register(self)
        adoptBackendTraits()
        reactor.setPollable(taskID, true)
        armKick()
        call.signal()
        processAvail()
        reactor.markDirty(taskID)
    }

    /// Replaces the call eventfd (SET_VRING_CALL while running) and signals
    /// the new one: used elements published while the frontend had none, or
    /// signalled on the old one it no longer watches, are not lost. Returns
    /// the old eventfd for the caller to close (nil: none, or none before).
    package func replaceCallFD(_ fd: FileDescriptor?) -> FileDescriptor? {
        reactor.preconditionOnReactor()
        let old = call.replace(with: fd)
        call.signal()
        return old
    }

    /// ADD_MEM_REG while the queue runs: chains popped from now on are
    /// translated through `newMemory`. Only a table that keeps every region of
    /// the current one at the same host address may come here (a removal
    /// stops the queue first), so the rings and the requests in flight stay valid.
    package func updateMemory(_ newMemory: GuestMemory) {
        reactor.preconditionOnReactor()
        memory = newMemory
    }

    /// Switches to `newBackend` (resize, attach, detach): requests popped from
    /// now on use it; those in flight finish on the old one, but a read or
    /// write that ends beyond the new capacity completes with IOERR. `drained`
    /// runs once no request dispatched on an earlier backend is in flight.
    package func updateBackend(_ newBackend: DeviceBackend, drained: (() -> Void)? = nil) {
        reactor.preconditionOnReactor()
        if errorHold && (drained != nil || newBackend.errors !== backend.errors) {
            // A detach or a shrink waits for what was dispatched before it: held writes cannot wait with it.
            failHeldWrites(reason: "the bdev changed")
        }
        if inFlight > 0 { retiredBackends.append((backendGeneration, backend)) }
        backend = newBackend
        adoptBackendTraits()
        backendGeneration &+= 1
        previousBackendInFlight = inFlight
        if let drained { onPreviousBackendDrained.append(drained) }
        reportPreviousBackendDrainedIfIdle()
        if blocked && !stopping {
            // A queue blocked on a full engine of the old backend re-checks now.
            reactor.markDirty(taskID)
        }
    }

    /// The backend requests of `generation` were dispatched on.
    func backend(of generation: UInt32) -> DeviceBackend? {
        if generation == backendGeneration { return backend }
        return retiredBackends.first { $0.generation == generation }?.backend
    }

    func reportPreviousBackendDrainedIfIdle() {
        guard previousBackendInFlight == 0 else { return }
        retiredBackends.removeAll()
        guard !onPreviousBackendDrained.isEmpty else { return }
        let waiters = onPreviousBackendDrained
        onPreviousBackendDrained = []
        for waiter in waiters { waiter() }
    }

    /// What the queue keeps of its backend for the hot path.
    private func adoptBackendTraits() {
        disk = backend.disk
        polling.adopt(engineBacked: backend.asyncEngine != nil)
        if case .memory(let backing) = backend.storage {
            memoryBacking = Unmanaged.passUnretained(backing)
        } else {
            memoryBacking = nil
        }
        if case .rbd = backend.storage { adoptRBD() }
    }

    /// Stops popping, lets every in-flight request complete, publishes, then calls
    /// `done` with the ring's base (the GET_VRING_BASE answer: the split
    /// ring's last avail index, or a packed ring's two positions, `PackedRingBase`).
    package func stop(_ done: @escaping (UInt32) -> Void) {
        reactor.preconditionOnReactor()
        stopping = true
        onStopped = done
        if errorHold { failHeldWrites(reason: "the queue stops") }
        if qosHeld != nil {
            backend.qos?.forget(self)
            qosResume()  // a stopping queue does not wait for its QoS budget
        }
        if kickArmed {
            // Complete the pending kick read so nothing stays in the engine.
            // Cancelled, not signalled: the frontend may read its own kick
            // eventfd and take a signal away, and the queue would never stop.
            reactor.cancelRead(task: taskID, slot: Self.kickSlot)
        }
        finishStopIfIdle()
    }

    func finishStopIfIdle() {
        guard stopping, inFlight == 0, !kickArmed, let done = onStopped else { return }
        if startStopFlush() { return }  // finishes when the flush comes back
        if rbdArmed {
            // The last RBD completion came in: take the eventfd's read out of the engine first.
            reactor.cancelRead(task: taskID, slot: Self.rbdSlot)
            return
        }
        onStopped = nil
        publishAndNotify()
        closeCoalescing()
        reactor.unregister(taskID)
        done(ring.base)
    }

    /// Called on the reactor when the avail ring breaks; the session
    /// disconnects the frontend. Set before `start()`.
    package var onRingBroken: (@Sendable (VirtioError) -> Void)?

    /// A broken avail ring: nothing more is popped from it, and the session
    /// learns why (`onRingBroken`).
    func ringBroke(_ error: VirtioError) {
        logger.error("guest ring is broken, queue stopped: \(error)")
        stopping = true
        onRingBroken?(error)
    }

    private func armKick() {
        kickArmed = reactor.enqueue(.read(fd: kickFD, buffer: kickBuffer, length: 8), task: taskID, slot: Self.kickSlot)
        if !kickArmed {
            // Never expected (slots are reserved for kick reads); retried at the next flush.
            logger.error("cannot arm the kick eventfd read: engine full; retrying")
            reactor.markDirty(taskID)
        }
    }

    // MARK: ReactorTask

    package func complete(slot: UInt32, result: Int32) {
        reactor.preconditionOnReactor()
        if slot == Self.kickSlot {
            kickArmed = false
            if stopping {
                finishStopIfIdle()
                return
            }
            if result < 0 && result != -EAGAIN && result != -ECANCELED { logger.warning("kick read failed: \(Errno(-result))") }
            stats.countKick()
            armKick()
            processAvail()
            return
        }
        if slot == Self.rbdSlot {
            rbdCompletionsReady(result)
            return
        }
        guard slots.isSlot(slot) else { return }
        operationFinished(slot: slot, result: result)
    }

    package func flush() {
        reactor.preconditionOnReactor()
        completionClockStale = true
        if !kickArmed && !stopping { armKick() }
        if !rbdArmed && rbdCompletions != nil && (!stopping || inFlight > 0 || stopFlush.isPending) { armRBD() }
        publishAndNotify()
        if blocked && !stopping {
            blocked = false
            processAvail()
            publishAndNotify()
        }
        if polling.wantsPolling != pollsGuest { applyPollingChoice() }
        finishStopIfIdle()
    }

    // MARK: QoSWaiter

    /// Where `qosResume` runs.
    package var qosReactor: Reactor { reactor }

    /// The limiter let the held request go: dispatch it, pop on.
    package func qosResume() {
        reactor.preconditionOnReactor()
        guard let held = qosHeld else { return }
        qosHeld = nil
        dispatch(held.request, slot: held.slot)
        processAvail()
        reactor.markDirty(taskID)
    }
}
