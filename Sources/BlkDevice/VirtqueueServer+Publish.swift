import Reactor
import VhostUser
import Virtio

/// Publishing used elements, signalling the guest (virtio 1.2 §2.7.7-8),
/// inflight tracking, and dirty-page logging for live migration.
extension VirtqueueServer {
    /// Makes the used elements added since the last publish visible, records
    /// them in the inflight region, and signals the call eventfd unless
    /// EVENT_IDX says the driver does not want it, or interrupt coalescing
    /// delays the signal (`VirtqueueServer+Coalescing.swift`).
    func publishAndNotify() {
        guard ring.usedIdx != lastCheckedUsed else { return }
        ring.publishUsed()
        if dirtyLog != nil { logUsedRing() }
        if let inflight, unpublishedCount > 0 {
            inflight.published(UnsafeBufferPointer(start: unpublishedHeads, count: unpublishedCount), usedIdx: ring.usedIdx)
            unpublishedCount = 0
        }
        // A delayed signal covers everything used since the last one.
        let signalFrom = pendingSignalFrom ?? lastCheckedUsed
        let published = ring.usedIdx &- lastCheckedUsed
        polling.noteDepth(ring.availIdxShadow &- lastCheckedUsed)
        lastCheckedUsed = ring.usedIdx
        if coalescing.isEnabled, delaySignal(published: published, from: signalFrom) { return }
        signalGuest(from: signalFrom)
    }

    /// Signals the call eventfd for the used elements after `from`, unless
    /// EVENT_IDX or NO_INTERRUPT says the driver does not want it.
    func signalGuest(from: UInt16) {
        pendingSignalFrom = nil
        let notify = ring.takeNotify(oldUsedIdx: from)
        if tracing { logger.trace("published used \(ring.usedIdx) notify \(notify) call \(call.fd?.rawValue ?? -1)") }
        stats.countNotification(sent: notify && call.isSet)
        guard notify else { return }
        call.signal()
        if coalescing.isEnabled { coalescing.signalled(now: Reactor.now()) }
    }

    /// Inflight tracking (vhost-user spec, "Inflight I/O tracking"): `head`
    /// is used; the region learns it at the next publish.
    func noteUsedForInflight(head: UInt16) {
        inflight?.noteUsed(head)
        // A driver that reuses heads it has not got back could exceed a ring.
        if unpublishedCount == Int(ring.size) { publishAndNotify() }
        unpublishedHeads[unpublishedCount] = head
        unpublishedCount += 1
    }

    // MARK: Dirty logging (vhost-user spec, "Migration")

    /// Starts or stops dirty logging: with a log, every guest page the
    /// device writes from now on is marked: data read into device-writable
    /// buffers, status bytes and the used ring.
    package func setDirtyLog(_ log: DirtyLog?, usedRingGPA: UInt64?) {
        reactor.preconditionOnReactor()
        dirtyLog = log
        self.usedRingGPA = usedRingGPA
        logUsedRing()
    }

    /// Marks the writable buffers of `slot`'s chain (data in), and its
    /// status byte, which the parser trimmed off its iovec.
    func logWrites(slot: UInt32, statusByte: UnsafeMutablePointer<UInt8>?, log: DirtyLog) {
        let s = slots[slot]
        for i in Int(s.writableFirst)..<(Int(s.writableFirst) + Int(s.writableCount)) {
            let vec = slots.iovecPointer(i, of: slot).pointee
            guard vec.iov_len > 0, let base = vec.iov_base, let gpa = memory.guestPhysAddr(ofHost: base) else { continue }
            log.mark(gpa: gpa, length: UInt64(vec.iov_len))
        }
        if let statusByte, let gpa = memory.guestPhysAddr(ofHost: statusByte) { log.mark(gpa: gpa, length: 1) }
    }

    /// Marks the whole used ring (elements, index, avail_event): a page or
    /// two. A packed ring's device writes its used elements into the
    /// descriptor ring and its kick suppression into the device event area
    /// (virtio 1.2 §2.8.6, §2.8.10): both are marked.
    func logUsedRing() {
        guard let log = dirtyLog else { return }
        if let q = ring.split {
            guard let gpa = usedRingGPA else { return }
            log.mark(gpa: gpa, length: UInt64(SplitQueue.layoutSizes(size: q.size).used))
        } else if let p = ring.packed {
            let sizes = PackedQueue.layoutSizes(size: p.queue.size)
            if let gpa = memory.guestPhysAddr(ofHost: p.queue.descRing) { log.mark(gpa: gpa, length: UInt64(sizes.desc)) }
            if let gpa = usedRingGPA { log.mark(gpa: gpa, length: UInt64(sizes.deviceEvent)) }
        }
    }
}
