import BlockIO
import CShims
import Glibc
import Logging
import Posix
import Reactor
import VhostUser
import Virtio

/// Serves one virtio-blk virtqueue on its reactor (virtio 1.2 §2.7, §5.2.6).
///
/// A kick wakes it; it drains the avail ring while the engine has room (flow
/// control), turns each chain into one engine operation whose iovecs point
/// into guest memory, and on completion writes the status byte and a used
/// element. Every popped head gets a used element, errors included.
///
/// Thread confinement: after `start()` posts it, everything runs on `reactor`.
package final class VirtqueueServer: ReactorTask, QoSWaiter, @unchecked Sendable {  // confined to `reactor` once started
    package static let iovecsPerSlot = 260
    package static let kickSlot = UInt32.max

    package let queueIndex: Int
    package let reactor: Reactor
    private var ring: SplitQueue
    private let memory: GuestMemory
    private let kickFD: Int32
    private var callFD: Int32
    private var backend: DeviceBackend
    /// Bumped by every `updateBackend`; slots remember the one they used.
    private var backendGeneration: UInt32 = 0
    /// Requests dispatched before the latest `updateBackend` still in flight.
    private var previousBackendInFlight = 0
    private var onPreviousBackendDrained: [() -> Void] = []
    private var logger: Logger
    /// Trace logging, decided once: asking the log handler per request costs
    /// an existential copy of it.
    private let tracing: Bool

    private var taskID: UInt32 = 0
    /// One per descriptor-table entry, and a stack of the free ones: raw
    /// memory the server owns, so the hot path has no array uniqueness or
    /// bounds checks (slot numbers come from the stack, never from the guest).
    private let slots: UnsafeMutablePointer<RequestSlot>
    private let slotCount: Int
    private let freeSlots: UnsafeMutablePointer<UInt32>
    private var freeSlotCount: Int
    private let iovecs: UnsafeMutablePointer<iovec>
    private let kickBuffer = UnsafeMutableRawPointer.allocate(byteCount: 8, alignment: 8)
    private var kickArmed = false
    private var inFlight = 0
    private var blocked = false
    private var stopping = false
    private var onStopped: ((UInt16) -> Void)?
    private var lastCheckedUsed: UInt16
    private var malformedLogged = 0
    /// Counters for bdev_get_iostat and vhost_get_controllers (QueueStats.swift); reactor thread only.
    package let stats: QueueStatsBlock
    /// Dirty-page logging during live migration (LOG_ALL with a log base):
    /// nil when off, so the data path pays one branch.
    private var dirtyLog: DirtyLog?
    /// The used ring's guest-physical address (SET_VRING_ADDR's `log`), logged with it.
    private var usedRingGPA: UInt64?
    /// Inflight tracking (INFLIGHT_SHMFD), when the front-end set it up.
    private var inflight: InflightQueue?
    /// Heads a restarted daemon serves again before popping the ring (reversed: popped from the end).
    private var resubmit: [UInt16]
    /// Heads whose used elements await the next publish (inflight tracking only).
    private let unpublishedHeads: UnsafeMutablePointer<UInt16>
    private var unpublishedCount = 0
    /// Hybrid polling for queues whose file I/O goes through an engine: the reactor polls this ring
    /// for the guest's next requests only while the guest keeps few in
    /// flight. At depth, a batch of file I/O keeps the reactor busy and the
    /// guest's refill arrives with its kick anyway, so spinning for it only
    /// costs CPU (a tmpfs file at QD32: a third more CPU per I/O for the same
    /// IOPS); at depth 1 polling cuts latency (2.6x the IOPS). RAM, null and
    /// inline file queues always poll: there the wake-up chain is most of the cycle.
    /// `depthAverage` is the guest's requests outstanding at each publish
    /// (avail index seen less the previous used index), a moving average in
    /// sixteenths; polling goes off above 8 and back on below 4.
    private var isFileBacked = false  // through an engine
    /// The RAM of a `.memory` backend, unretained: `backend` holds the
    /// reference. Binding it from `backend.storage` per request cost a
    /// retain and a release, and the release's atomic waited for the 4K
    /// copy into guest memory to drain (17 % of the reactor's cycles at
    /// 3.3M IOPS).
    private var memoryBacking: Unmanaged<MemoryBacking>?
    private var depthAverage: UInt32 = 0
    private var wantsPolling = true
    private var pollsGuest = true
    package static let pollOffDepth: UInt32 = 8 * 16
    package static let pollOnDepth: UInt32 = 4 * 16

    /// A popped request its bdev's QoS limit holds back (QoSLimiter.swift):
    /// nothing more is popped until the limiter resumes this queue.
    private var qosHeld: (request: BlkRequest, slot: UInt32)?

    /// `inflight` and `resubmit` come from inflight recovery (PROTOCOL.md §1):
    /// `resubmit` heads, oldest first, are served before the avail ring.
    package init(queueIndex: Int, ring: SplitQueue, memory: GuestMemory, kickFD: Int32, callFD: Int32,
         backend: DeviceBackend, reactor: Reactor, logger: Logger,
         inflight: InflightQueue? = nil, resubmit: [UInt16] = []) {
        self.queueIndex = queueIndex
        self.ring = ring
        self.memory = memory
        self.kickFD = kickFD
        self.callFD = callFD
        self.backend = backend
        self.reactor = reactor
        var logger = logger
        logger[metadataKey: "vq.index"] = "\(queueIndex)"
        self.logger = logger
        tracing = logger.logLevel <= .trace
        let count = Int(ring.size)
        slotCount = count
        slots = .allocate(capacity: count)
        slots.initialize(repeating: RequestSlot(), count: count)
        stats = QueueStatsBlock(slotCount: count)
        freeSlots = .allocate(capacity: count)
        for i in 0..<count { freeSlots[i] = UInt32(count - 1 - i) }
        freeSlotCount = count
        iovecs = .allocate(capacity: count * Self.iovecsPerSlot)
        lastCheckedUsed = ring.usedIdx
        self.inflight = inflight
        self.resubmit = resubmit.reversed()
        unpublishedHeads = .allocate(capacity: inflight == nil ? 1 : count)
    }

    deinit {
        slots.deinitialize(count: slotCount)
        slots.deallocate()
        freeSlots.deallocate()
        unpublishedHeads.deallocate()
        iovecs.deallocate()
        kickBuffer.deallocate()
    }

    /// A copy of the counters with the current in-flight count (reactor thread).
    package func statsSnapshot() -> QueueStats {
        var copy = stats.snapshot()
        copy.inFlight = inFlight
        copy.size = ring.size
        return copy
    }

    // MARK: Lifecycle (reactor thread)

    /// Registers with the reactor, arms the kick and serves what is already pending.
    package func start() {
        taskID = reactor.register(self)
        adoptBackendTraits()
        reactor.setPollable(taskID, true)
        armKick()
        processAvail()
        reactor.markDirty(taskID)
    }

    /// Replaces the call eventfd (SET_VRING_CALL while running). Returns the old one for the caller to close.
    package func replaceCallFD(_ fd: Int32) -> Int32 {
        let old = callFD
        callFD = fd
        return old
    }

    /// Starts or stops dirty logging (vhost-user spec, "Migration"): with a
    /// log, every guest page the device writes from now on is marked: data
    /// read into device-writable buffers, status bytes and the used ring.
    package func setDirtyLog(_ log: DirtyLog?, usedRingGPA: UInt64?) {
        dirtyLog = log
        self.usedRingGPA = usedRingGPA
        logUsedRing()
    }

    /// Marks the writable buffers of `slot`'s chain (data in, status byte).
    private func logWrites(slot: UInt32, log: DirtyLog) {
        let s = slots[Int(slot)]
        let first = Int(slot) * Self.iovecsPerSlot + Int(s.writableFirst)
        for i in first..<(first + Int(s.writableCount)) {
            let vec = iovecs[i]
            guard vec.iov_len > 0, let base = vec.iov_base, let gpa = memory.guestPhysAddr(ofHost: base) else { continue }
            log.mark(gpa: gpa, length: UInt64(vec.iov_len))
        }
    }

    /// Marks the whole used ring (elements, index, avail_event): a page or two.
    private func logUsedRing() {
        guard let log = dirtyLog, let gpa = usedRingGPA else { return }
        log.mark(gpa: gpa, length: UInt64(SplitQueue.layoutSizes(size: ring.size).used))
    }

    /// Switches to `newBackend` (resize, attach, detach): requests popped from
    /// now on use it; those in flight finish on the old one, but a read or
    /// write that ends beyond the new capacity completes with IOERR. `drained`
    /// runs once no request dispatched on an earlier backend is in flight.
    package func updateBackend(_ newBackend: DeviceBackend, drained: (() -> Void)? = nil) {
        backend = newBackend
        adoptBackendTraits()
        if !isFileBacked { wantsPolling = true }
        backendGeneration &+= 1
        previousBackendInFlight = inFlight
        if let drained { onPreviousBackendDrained.append(drained) }
        reportPreviousBackendDrainedIfIdle()
        if blocked && !stopping {
            // A queue blocked on a full engine of the old backend re-checks now.
            reactor.markDirty(taskID)
        }
    }

    private func reportPreviousBackendDrainedIfIdle() {
        guard previousBackendInFlight == 0, !onPreviousBackendDrained.isEmpty else { return }
        let waiters = onPreviousBackendDrained
        onPreviousBackendDrained = []
        for waiter in waiters { waiter() }
    }

    /// Stops popping, lets every in-flight request complete, publishes, then calls
    /// `done` with the last avail index (the GET_VRING_BASE answer).
    package func stop(_ done: @escaping (UInt16) -> Void) {
        stopping = true
        onStopped = done
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

    private func finishStopIfIdle() {
        guard stopping, inFlight == 0, !kickArmed, let done = onStopped else { return }
        onStopped = nil
        publishAndNotify()
        reactor.unregister(taskID)
        done(ring.lastAvailIdx)
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
        guard Int(slot) < slotCount else { return }
        finishIO(slot: slot, result: result)
    }

    package func flush() {
        if !kickArmed && !stopping { armKick() }
        publishAndNotify()
        if blocked && !stopping {
            blocked = false
            processAvail()
            publishAndNotify()
        }
        if wantsPolling != pollsGuest { applyPollingChoice() }
        finishStopIfIdle()
    }

    /// File I/O through an engine takes part in hybrid polling; RAM, null
    /// and inline file I/O (a copy on the reactor) always poll.
    private func adoptBackendTraits() {
        if case .file(_, .async, _) = backend.storage {
            isFileBacked = true
        } else {
            isFileBacked = false
        }
        if case .memory(let backing) = backend.storage {
            memoryBacking = Unmanaged.passUnretained(backing)
        } else {
            memoryBacking = nil
        }
    }

    /// Samples the guest's depth at a publish (hybrid polling, file-backed queues only).
    @inline(__always)
    private func noteDepth(_ outstanding: UInt16) {
        guard isFileBacked else { return }
        depthAverage = depthAverage &- depthAverage / 8 &+ UInt32(outstanding) &* 2  // weight 1/8, in sixteenths
        if wantsPolling {
            if depthAverage > Self.pollOffDepth { wantsPolling = false }
        } else if depthAverage < Self.pollOnDepth {
            wantsPolling = true
        }
    }

    /// Joins or leaves the reactor's polling, between polling phases only
    /// (a phase ends by re-enabling notifications on the queues it polled).
    private func applyPollingChoice() {
        guard !reactor.isPolling, !stopping else { return }
        pollsGuest = wantsPolling
        reactor.setPollable(taskID, pollsGuest)
    }

    // MARK: Avail ring

    /// Pops and dispatches requests until the ring is empty, the engine is
    /// full or `batchCap` heads are popped; the queue then goes on at the
    /// reactor's next iteration, after the others on it had their turn and
    /// what they popped went to the kernel in one submit.
    ///
    /// A small cap keeps both ends busy. RAM, null and inline file I/O
    /// complete while they are popped: the used ring is published every few
    /// requests, so the guest refills on its CPU while the reactor serves
    /// the rest, instead of the two taking turns. With an engine, the disk
    /// starts on the first requests while the rest are popped. 4K randread
    /// QD32 (scripts/ab-run.sh, 3 s runs, interleaved), cap 64 -> 4:
    /// RAM, polling client 2.71-2.80M -> 3.49-3.72M IOPS; tmpfs inline,
    /// interrupt client 0.52M -> 0.88M (cap 8: 0.76M, cap 1: 0.66M);
    /// O_DIRECT file on this machine's virtual disk 63-66k -> 75-78k at
    /// 3.6 -> 3.85 us CPU per I/O (cap 1: 76-81k at 4.8-5.3 us).
    package static let batchCap = 4

    @discardableResult
    private func processAvail() -> Bool {
        guard !stopping else { return false }
        var popped = false
        var count = 0
        while true {
            if count == Self.batchCap {
                reactor.pollNextIteration(taskID)
                break
            }
            if qosHeld != nil { break }  // throttled: the QoS timer resumes popping
            guard freeSlotCount > 0, engineHasRoom() else {
                // Flow control: resume when any operation on this reactor completes.
                blocked = true
                reactor.waitForSlots(taskID)
                break
            }
            if let head = resubmit.popLast() {
                popped = true
                handle(head: head)
                continue
            }
            let pending: UInt16
            do {
                pending = try ring.pendingCount()
            } catch {
                logger.error("guest ring is broken, queue stopped: \(error)")
                stopping = true  // the session is marked broken; nothing more is popped
                break
            }
            if pending == 0 {
                // While the reactor polls this queue, the guest need not kick: the
                // phase finds the work itself and re-enables notifications when it
                // ends. A queue outside the phase (hybrid polling) must not skip this.
                if reactor.isPolling && pollsGuest { break }
                ring.enableNotifications()
                if dirtyLog != nil { logUsedRing() }  // avail_event lives in the used ring
                if ring.hasPendingAfterEnable() { continue }
                break
            }
            let head: UInt16
            do {
                guard let popped = try ring.popHead() else { break }
                head = popped
            } catch {
                logger.error("guest ring is broken, queue stopped: \(error)")
                stopping = true
                break
            }
            popped = true
            count += 1
            handle(head: head)
        }
        if popped {
            stats.countBatch()
            reactor.markDirty(taskID)
        }
        return popped
    }

    // MARK: Adaptive polling (Reactor.pollPhase)

    package func beginPoll() {
        ring.disableNotifications()  // NO_NOTIFY without EVENT_IDX; with it, avail_event just stays behind
    }

    package func poll() -> Bool {
        guard !stopping, !blocked else { return false }
        return processAvail()
    }

    package func endPoll() {
        guard !stopping else { return }
        ring.enableNotifications()
        if dirtyLog != nil { logUsedRing() }
        if ring.hasPendingAfterEnable() { processAvail() }
    }

    private func engineHasRoom() -> Bool {
        if case .file(_, .async(let engine), _) = backend.storage { return reactor.freeSlots(engine) > 0 }
        return true
    }

    private func handle(head: UInt16) {
        guard freeSlotCount > 0 else { return }
        freeSlotCount -= 1
        let slot = freeSlots[freeSlotCount]
        let iov = UnsafeMutableBufferPointer(start: iovecs + Int(slot) * Self.iovecsPerSlot, count: Self.iovecsPerSlot)
        slots[Int(slot)] = RequestSlot(head: head, generation: backendGeneration)
        inFlight += 1
        inflight?.markInFlight(head)

        let chain: ChainBuffers
        do {
            chain = try DescriptorChainWalker.walk(queue: ring, head: head, memory: memory, into: iov)
            slots[Int(slot)].writableFirst = UInt16(truncatingIfNeeded: chain.readableCount)
            slots[Int(slot)].writableCount = UInt16(truncatingIfNeeded: chain.writableCount)
        } catch {
            logMalformed("malformed descriptor chain at head \(head): \(error)")
            finish(slot: slot, statusByte: nil, status: .ioErr, usedLength: 0)
            return
        }
        let request: BlkRequest
        do {
            request = try BlkRequestParser.parse(chain, iovecs: iov)
        } catch {
            logMalformed("malformed virtio-blk request at head \(head): \(error)")
            finish(slot: slot, statusByte: lastWritableByte(chain, iov), status: .ioErr, usedLength: 1)
            return
        }
        slots[Int(slot)].status = request.status
        stats.begin(slot, request.type, bytes: request.dataLength, at: reactor.loopTime.load(ordering: .relaxed))
        if tracing { logger.trace("request \(request.type) sector \(request.sector) bytes \(request.dataLength) segments \(request.dataRange)") }
        if let qos = backend.qos, !qos.admit(QoSCost(request), waiter: self) {
            qosHeld = (request, slot)
            return
        }
        dispatch(request, slot: slot)
    }

    /// QoSWaiter: where `qosResume` runs.
    package var qosReactor: Reactor { reactor }

    /// QoSWaiter: the limiter let the held request go: dispatch it, pop on.
    package func qosResume() {
        guard let held = qosHeld else { return }
        qosHeld = nil
        dispatch(held.request, slot: held.slot)
        processAvail()
        reactor.markDirty(taskID)
    }

    private func lastWritableByte(_ chain: ChainBuffers, _ iov: UnsafeMutableBufferPointer<iovec>) -> UnsafeMutablePointer<UInt8>? {
        guard chain.writableCount > 0 else { return nil }
        let last = iov[chain.readableCount + chain.writableCount - 1]
        guard last.iov_len > 0, let base = last.iov_base else { return nil }
        return base.assumingMemoryBound(to: UInt8.self) + (last.iov_len - 1)
    }

    private func dispatch(_ request: BlkRequest, slot: UInt32) {
        let data = UnsafePointer(iovecs + Int(slot) * Self.iovecsPerSlot + request.dataRange.lowerBound)
        let dataCount = request.dataRange.count
        switch request.type {
        case .in, .out:
            let isWrite = request.type == .out
            guard request.dataLength % 512 == 0,
                  request.sector <= backend.capacitySectors,
                  request.dataLength / 512 <= backend.capacitySectors - request.sector else {
                return complete(slot, .ioErr, usedLength: 1)
            }
            if isWrite && backend.readOnly { return complete(slot, .ioErr, usedLength: 1) }
            if request.dataLength == 0 { return complete(slot, .ok, usedLength: 1) }
            let offset = request.sector &* 512
            slots[Int(slot)].kind = isWrite ? .write : .read
            slots[Int(slot)].expectedBytes = request.dataLength
            slots[Int(slot)].offset = offset
            switch backend.storage {
            case .file(let fd, let engine, _):
                let op: IOOperation = isWrite
                    ? .writev(fd: fd, iovecs: data, count: Int32(dataCount), offset: offset)
                    : .readv(fd: fd, iovecs: data, count: Int32(dataCount), offset: offset)
                submit(op, slot: slot, engine: engine)
            case .memory:
                let result = memoryBacking?._withUnsafeGuaranteedRef { backing in
                    isWrite
                        ? backing.write(from: data, count: dataCount, offset: offset)
                        : backing.read(into: data, count: dataCount, offset: offset)
                } ?? -ENXIO
                finishIO(slot: slot, result: result)
            case .null:
                finishIO(slot: slot, result: Int32(clamping: request.dataLength))
            case .none:
                complete(slot, .ioErr, usedLength: 1)
            }
        case .flush:
            slots[Int(slot)].kind = .flush
            if case .file(let fd, let engine, _) = backend.storage {
                submit(.fdatasync(fd: fd), slot: slot, engine: engine)
            } else if case .none = backend.storage {
                complete(slot, .ioErr, usedLength: 1)
            } else {
                complete(slot, .ok, usedLength: 1)
            }
        case .getID:
            let written = copyIn(backend.serial, to: data, count: dataCount)
            complete(slot, .ok, usedLength: UInt32(written) + 1)
        case .discard, .writeZeroes:
            dispatchRange(request, slot: slot, data: data, dataCount: dataCount)
        default:
            complete(slot, .unsupported, usedLength: 1)
        }
    }

    /// DISCARD and WRITE_ZEROES with one segment (max_discard_seg = max_write_zeroes_seg = 1).
    private func dispatchRange(_ request: BlkRequest, slot: UInt32, data: UnsafePointer<iovec>, dataCount: Int) {
        let isDiscard = request.type == .discard
        var raw = [UInt8](repeating: 0, count: 16)
        guard request.dataLength == 16, copyOut(from: data, count: dataCount, into: &raw) == 16 else {
            return complete(slot, request.dataLength == 0 ? .ioErr : .unsupported, usedLength: 1)
        }
        let sector = raw.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: 0, as: UInt64.self)) }
        let sectors = raw.withUnsafeBytes { UInt64(UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: 8, as: UInt32.self))) }
        let flags = raw.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: 12, as: UInt32.self)) }
        // virtio 1.2 §5.2.6.2: unknown flags, and unmap on discard, are unsupported.
        if flags & ~UInt32(1) != 0 || (isDiscard && flags != 0) { return complete(slot, .unsupported, usedLength: 1) }
        guard sector <= backend.capacitySectors, sectors <= backend.capacitySectors - sector else {
            return complete(slot, .ioErr, usedLength: 1)
        }
        if backend.readOnly { return complete(slot, .ioErr, usedLength: 1) }
        let offset = sector &* 512, length = sectors &* 512
        if length == 0 { return complete(slot, .ok, usedLength: 1) }
        slots[Int(slot)].kind = isDiscard ? .discard : .writeZeroes
        slots[Int(slot)].offset = offset
        slots[Int(slot)].length = length
        stats.setBytes(slot, length)
        switch backend.storage {
        case .file(let fd, let engine, _):
            let mode = isDiscard ? vb_falloc_punch_hole() : vb_falloc_zero_range()
            submit(.fallocate(fd: fd, mode: mode, offset: offset, length: length), slot: slot, engine: engine)
        case .memory(let backing):
            complete(slot, backing.discard(offset: offset, length: length) == 0 ? .ok : .ioErr, usedLength: 1)
        case .null:
            complete(slot, .ok, usedLength: 1)
        case .none:
            complete(slot, .ioErr, usedLength: 1)
        }
    }

    private func submit(_ op: IOOperation, slot: UInt32, engine: DeviceBackend.FileEngine) {
        guard case .async(let engine) = engine else {
            return finishIO(slot: slot, result: op.performBlocking())
        }
        if !reactor.enqueue(op, task: taskID, slot: slot, on: engine) {
            // engineHasRoom() said yes a moment ago; fail this one rather than leak it.
            logger.error("engine refused an operation after reporting room")
            complete(slot, .ioErr, usedLength: 1)
        }
    }

    // MARK: Completion

    private func finishIO(slot: UInt32, result: Int32) {
        let s = slots[Int(slot)]
        switch s.kind {
        case .read:
            if result >= 0 && UInt64(result) == s.expectedBytes && withinCapacity(s) {
                complete(slot, .ok, usedLength: UInt32(clamping: s.expectedBytes &+ 1))
            } else {
                complete(slot, .ioErr, usedLength: 1)
            }
        case .write:
            let written = result >= 0 && UInt64(result) == s.expectedBytes && withinCapacity(s)
            if written, backend.writeThrough, case .file(let fd, let engine, _) = backend.storage {
                slots[Int(slot)].kind = .writeSync
                submit(.fdatasync(fd: fd), slot: slot, engine: engine)
                return
            }
            complete(slot, written ? .ok : .ioErr, usedLength: 1)
        case .writeSync:
            complete(slot, result == 0 ? .ok : .ioErr, usedLength: 1)
        case .flush:
            complete(slot, result == 0 ? .ok : .ioErr, usedLength: 1)
        case .discard:
            // Discard is a hint: a backend that cannot punch holes still succeeds.
            complete(slot, result == 0 || result == -EOPNOTSUPP ? .ok : .ioErr, usedLength: 1)
        case .writeZeroes:
            if result == -EOPNOTSUPP || result == -EINVAL, case .file(let fd, let engine, false) = backend.storage {
                // tmpfs has no ZERO_RANGE; a punched hole in a regular file reads back as zeroes.
                slots[Int(slot)].kind = .writeZeroesPunch
                submit(.fallocate(fd: fd, mode: vb_falloc_punch_hole(), offset: s.offset, length: s.length), slot: slot, engine: engine)
                return
            }
            complete(slot, result == 0 ? .ok : .ioErr, usedLength: 1)
        case .writeZeroesPunch:
            complete(slot, result == 0 ? .ok : .ioErr, usedLength: 1)
        }
    }

    /// A read or write still inside the disk: the capacity may have shrunk
    /// while it was in flight (`bdev_resize` with `allow_shrink`).
    private func withinCapacity(_ s: RequestSlot) -> Bool {
        let (end, overflow) = s.offset.addingReportingOverflow(s.expectedBytes)
        return !overflow && end <= backend.capacitySectors &* 512
    }

    private func complete(_ slot: UInt32, _ status: BlkStatus, usedLength: UInt32) {
        finish(slot: slot, statusByte: slots[Int(slot)].status, status: status, usedLength: usedLength)
    }

    /// Writes the status (when the chain has a status byte) and the used element, and frees the slot.
    private func finish(slot: UInt32, statusByte: UnsafeMutablePointer<UInt8>?, status: BlkStatus, usedLength: UInt32) {
        if tracing { logger.trace("completed head \(slots[Int(slot)].head) status \(status.rawValue) used \(usedLength)") }
        if let statusByte { statusByte.pointee = UInt8(truncatingIfNeeded: status.rawValue) }
        ring.addUsed(id: slots[Int(slot)].head, length: statusByte == nil ? 0 : usedLength)
        if let log = dirtyLog {
            logWrites(slot: slot, log: log)
            // The parser trims the status byte off its iovec: mark it on its own.
            if let statusByte, let gpa = memory.guestPhysAddr(ofHost: statusByte) { log.mark(gpa: gpa, length: 1) }
        }
        stats.complete(slot, status, at: reactor.loopTime.load(ordering: .relaxed))
        if inflight != nil {
            let head = slots[Int(slot)].head
            inflight?.noteUsed(head)
            // A driver that reuses heads it has not got back could exceed a ring.
            if unpublishedCount == Int(ring.size) { publishAndNotify() }
            unpublishedHeads[unpublishedCount] = head
            unpublishedCount += 1
        }
        if freeSlotCount < slotCount {
            freeSlots[freeSlotCount] = slot
            freeSlotCount += 1
        }
        inFlight -= 1
        if slots[Int(slot)].generation != backendGeneration {
            previousBackendInFlight -= 1
            reportPreviousBackendDrainedIfIdle()
        }
        reactor.markDirty(taskID)
    }

    private func publishAndNotify() {
        guard ring.usedIdx != lastCheckedUsed else { return }
        ring.publishUsed()
        if dirtyLog != nil { logUsedRing() }
        if let inflight, unpublishedCount > 0 {
            inflight.published(UnsafeBufferPointer(start: unpublishedHeads, count: unpublishedCount), usedIdx: ring.usedIdx)
            unpublishedCount = 0
        }
        let notify = ring.shouldNotify(oldUsedIdx: lastCheckedUsed)
        noteDepth(ring.availIdxShadow &- lastCheckedUsed)
        lastCheckedUsed = ring.usedIdx
        if tracing { logger.trace("published used \(ring.usedIdx) notify \(notify) call \(callFD)") }
        stats.countNotification(sent: notify && callFD >= 0)
        if notify && callFD >= 0 {
            var one: UInt64 = 1
            _ = withUnsafeBytes(of: &one) { Glibc.write(callFD, $0.baseAddress, 8) }
        }
    }

    private func logMalformed(_ message: String) {
        malformedLogged &+= 1
        if malformedLogged <= 10 || malformedLogged % 1000 == 0 {
            logger.warning("\(message) (completed with an error; \(malformedLogged) so far)")
        }
    }

    // MARK: Copies between guest buffers and local bytes

    private func copyIn(_ bytes: [UInt8], to iov: UnsafePointer<iovec>, count: Int) -> Int {
        var done = 0
        for i in 0..<count where done < bytes.count {
            guard let base = iov[i].iov_base else { continue }
            let n = min(iov[i].iov_len, bytes.count - done)
            bytes.withUnsafeBytes { source in
                guard let start = source.baseAddress else { return }
                base.copyMemory(from: start + done, byteCount: n)
            }
            done += n
        }
        return done
    }

    private func copyOut(from iov: UnsafePointer<iovec>, count: Int, into bytes: inout [UInt8]) -> Int {
        var done = 0
        for i in 0..<count where done < bytes.count {
            guard let base = iov[i].iov_base else { continue }
            let n = min(iov[i].iov_len, bytes.count - done)
            bytes.withUnsafeMutableBytes { target in
                target.baseAddress?.advanced(by: done).copyMemory(from: base, byteCount: n)
            }
            done += n
        }
        return done
    }
}
