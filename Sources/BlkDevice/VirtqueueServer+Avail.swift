import Reactor
import Virtio

/// Popping the avail ring (virtio 1.2 §2.7.6), flow control and adaptive polling.
extension VirtqueueServer {
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
    static let batchCap = 4

    @discardableResult
    func processAvail() -> Bool {
        guard !stopping else { return false }
        completionClockStale = true
        var popped = false
        var count = 0
        while true {
            if count == Self.batchCap {
                reactor.pollNextIteration(taskID)
                break
            }
            if qosHeld != nil { break }  // throttled: the QoS timer resumes popping
            if errorHold && !releaseHeldWrites() { break }  // paused on a full disk (+Errors)
            guard slots.freeCount > 0, engineHasRoom() else {
                // Flow control: resume when any operation on this reactor completes.
                blocked = true
                reactor.waitForSlots(taskID)
                break
            }
            if let head = resubmit.popLast() {
                popped = true
                if let tracking = packedInflight {
                    handleRecovered(entry: head, tracking: tracking)
                } else {
                    handle(head: PackedChainHead(index: head, id: head, slotCount: 1))
                }
                continue
            }
            let next: PackedChainHead?
            do {
                next = try ring.pop()
            } catch {
                ringBroke(error)
                break
            }
            guard let head = next else {
                // While the reactor polls this queue, the guest need not kick: the
                // phase finds the work itself and re-enables notifications when it
                // ends. A queue outside the phase (hybrid polling) must not skip this.
                if reactor.isPolling && pollsGuest { break }
                ring.enableNotifications()
                if dirtyLog != nil { logUsedRing() }  // avail_event / the device event area
                if ring.hasPendingAfterEnable() { continue }
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

    func engineHasRoom() -> Bool {
        if case .rbd = backend.storage { return inFlight < RBDBackend.maxInFlight }
        guard let engine = backend.asyncEngine else { return true }
        return reactor.freeSlots(engine) > 0
    }

    // MARK: Adaptive polling (Reactor.pollPhase)

    package func beginPoll() {
        reactor.preconditionOnReactor()
        ring.disableNotifications()  // NO_NOTIFY without EVENT_IDX; with it, avail_event just stays behind
    }

    package func poll() -> Bool {
        reactor.preconditionOnReactor()
        // A large copy goes on while the queue stops: the stop waits for it.
        let copied = continueLargeCopy()
        guard !stopping, !blocked else { return copied }
        return processAvail() || copied
    }

    package func endPoll() {
        reactor.preconditionOnReactor()
        guard !stopping else { return }
        ring.enableNotifications()
        if dirtyLog != nil { logUsedRing() }
        if ring.hasPendingAfterEnable() { processAvail() }
    }

    /// Joins or leaves the reactor's polling (`HybridPolling`), between
    /// polling phases only (a phase ends by re-enabling notifications on
    /// the queues it polled).
    func applyPollingChoice() {
        guard !reactor.isPolling, !stopping else { return }
        pollsGuest = polling.wantsPolling
        reactor.setPollable(taskID, pollsGuest)
    }
}
