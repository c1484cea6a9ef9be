import BlkDevice
import Posix
import VhostUser
import Virtio

/// Memory the frontend shares with the daemon: the guest memory map
/// (vhost-user spec, "Memory access"), the dirty-page log ("Migration")
/// and the inflight region ("Inflight I/O tracking").
extension VhostUserSession {
    // MARK: Guest memory

    /// The session's limits (`SessionBudget`).
    var budget: SessionBudget { SessionBudget(limits: controller.limits) }

    /// SET_MEM_TABLE (its queues are stopped): maps the new table, then
    /// starts `restart` again. Takes ownership of `fds`, mapped or not. A
    /// table over the session's memory limit is refused before anything is
    /// mapped, so it cannot take address space another session needs.
    func setMemoryTable(_ regions: [MemoryRegionDescriptor], fds: [FileDescriptor], restart: [Int]) throws(SessionRefusal) {
        let newMapping: GuestMemoryMapping
        let limit = budget.memoryLimit(withLog: dirtyLog?.sizeBytes ?? 0)
        do throws(VhostUserError) {
            newMapping = try GuestMemoryMapping.map(regions, fds: fds, maxMappedBytes: limit)
        } catch .memoryOverLimit(let mapped, let limit) {
            throw budget.memoryRefusal(mappedBytes: mapped, regions: regions.count, limit: limit)
        } catch {
            throw SessionRefusal("SET_MEM_TABLE refused: \(error)")
        }
        mapping?.unmapAll()
        mapping = newMapping
        logger.debug("memory table set", metadata: ["regions": "\(regions.count)", "mapped.bytes": "\(newMapping.mappedBytes)"])
        for i in restart { try startQueue(i) }
    }

    /// Memory slots offered in GET_MAX_MEM_SLOTS: as many regions as any
    /// QEMU's vhost-user front end uses (`GuestMemory.maxRegions`).
    static var maxMemorySlots: Int { GuestMemory.maxRegions }

    /// ADD_MEM_REG (vhost-user spec, "VHOST_USER_ADD_MEM_REG"), queues
    /// running or not: maps the region (takes ownership of `fd`), then hands
    /// the larger table to every running queue and waits until each uses it,
    /// so that a buffer in the new region is served from the ack on. The
    /// regions already mapped keep their mappings: requests in flight on the
    /// previous table stay valid. Refused, with nothing mapped: a table at
    /// `maxMemorySlots`, an overlap, a zero or overflowing size, a region
    /// past its file's end, or the session's memory limit.
    func addMemoryRegion(_ region: MemoryRegionDescriptor, fd: FileDescriptor) throws(SessionRefusal) {
        var grown = mapping ?? GuestMemoryMapping()
        let limit = budget.memoryLimit(withLog: dirtyLog?.sizeBytes ?? 0)
        do throws(VhostUserError) {
            try grown.add(region, fd: fd, maxMappedBytes: limit, maxRegions: Self.maxMemorySlots)
        } catch .memoryOverLimit(let mapped, let limit) {
            throw budget.memoryRefusal(mappedBytes: mapped, regions: grown.regions.count + 1, limit: limit, request: "ADD_MEM_REG")
        } catch {
            throw SessionRefusal("ADD_MEM_REG refused: \(error) (\(Self.describe(region)))")
        }
        mapping = grown
        if let log = dirtyLog, features.contains(.logAll),
           log.sizeBytes < DirtyLog.bytesCovering(guestPhysicalEnd: grown.guestPhysicalEnd) {
            logger.warning("ADD_MEM_REG: the dirty log (\(log.sizeBytes) bytes) does not cover the new region; pages above it are not logged")
        }
        postMemoryTable()
        logger.info("memory region added", metadata: [
            "region": "\(Self.describe(region))", "regions": "\(grown.regions.count)", "mapped.bytes": "\(grown.mappedBytes)",
        ])
    }

    /// REM_MEM_REG, first half: the region must be one the table holds (the
    /// same guest address, user address and size; vhost-user spec,
    /// "VHOST_USER_REM_MEM_REG"), checked before any queue is stopped.
    func checkRemovable(_ region: MemoryRegionDescriptor) throws(SessionRefusal) {
        let known = mapping?.regions.contains {
            $0.descriptor.guestPhysAddr == region.guestPhysAddr && $0.descriptor.userAddr == region.userAddr
                && $0.descriptor.size == region.size
        } ?? false
        guard known else { throw SessionRefusal("REM_MEM_REG refused: no such region is mapped (\(Self.describe(region)))") }
    }

    /// REM_MEM_REG, second half, once its queues stopped: every request that
    /// could use the region has completed, so the region is unmapped at once
    /// (which also drops its SIGBUS guard range), then `restart` starts again
    /// on the smaller table. A queue whose rings lay in the region cannot
    /// start again: the frontend is disconnected with that reason.
    func removeMemoryRegion(_ region: MemoryRegionDescriptor, restart: [Int]) throws(SessionRefusal) {
        guard var shrunk = mapping else { throw SessionRefusal("REM_MEM_REG refused: no memory table") }
        let retired: SharedMapping
        do throws(VhostUserError) {
            retired = try shrunk.remove(region)
        } catch {
            throw SessionRefusal("REM_MEM_REG refused: \(error) (\(Self.describe(region)))")
        }
        mapping = shrunk
        retired.unmap()
        logger.info("memory region removed", metadata: [
            "region": "\(Self.describe(region))", "regions": "\(shrunk.regions.count)", "mapped.bytes": "\(shrunk.mappedBytes)",
        ])
        for i in restart { try startQueue(i) }
    }

    /// Hands the current table to every running queue, and waits until each uses it.
    private func postMemoryTable() {
        guard let memory = mapping?.memory else { return }
        for i in vrings.indices {
            guard let server = vrings[i].server else { continue }
            server.reactor.postAndWait { server.updateMemory(memory) }
        }
    }

    /// A region as log lines show it.
    static func describe(_ r: MemoryRegionDescriptor) -> String {
        "gpa 0x\(String(r.guestPhysAddr, radix: 16)) size 0x\(String(r.size, radix: 16)) "
            + "uaddr 0x\(String(r.userAddr, radix: 16)) offset 0x\(String(r.mmapOffset, radix: 16))"
    }

    /// False, with the reason logged, when the frontend shrank a file it shared
    /// (guest memory, dirty log, inflight region) under the daemon: the
    /// caller then ends the session (`SharedMemoryGuard`).
    func sharedMemoryIntact() -> Bool {
        let lost = (mapping?.lostPages ?? 0) + (dirtyLog?.lostPages ?? 0) + (inflight?.mapping.lostPages ?? 0)
        guard lost > 0 else { return true }
        return fail("the frontend shrank memory it shares with the daemon: \(lost) pages were gone when touched")
    }

    // MARK: Dirty logging (live migration)

    /// SET_LOG_BASE: maps the log (the caller closes `fd`) and hands it to
    /// the running queues. A log larger than the memory table can need, or
    /// one that takes the session over its limit, is refused unmapped
    /// (`SessionBudget.checkLog`).
    func setLogBase(fd: FileDescriptor, size: UInt64, offset: UInt64) throws(SessionRefusal) {
        try budget.checkLog(
            size: size, guestPhysicalEnd: mapping?.guestPhysicalEnd ?? 0, mappedMemory: mapping?.mappedBytes ?? 0)
        do {
            dirtyLog = try DirtyLog(fd: fd, size: size, offset: offset)
        } catch {
            throw SessionRefusal("SET_LOG_BASE refused: \(error)")
        }
        logger.info("dirty log set", metadata: ["log.bytes": "\(size)"])
        applyDirtyLog()
    }

    /// The log a queue writes to: only while LOG_ALL is negotiated and a log is set.
    var activeDirtyLog: DirtyLog? { features.contains(.logAll) ? dirtyLog : nil }

    /// The used ring's guest-physical address when SET_VRING_ADDR asked for its logging.
    func usedRingGPA(_ i: Int) -> UInt64? {
        guard let address = vrings[i].address, address.flags & VringAddress.flagLog != 0 else { return nil }
        return address.log
    }

    /// Hands every running queue the current log, and waits until they use
    /// it: from the reply on, every write the device makes is logged.
    func applyDirtyLog() {
        let log = activeDirtyLog
        for i in vrings.indices {
            guard let server = vrings[i].server else { continue }
            let gpa = usedRingGPA(i)
            server.reactor.postAndWait { server.setDirtyLog(log, usedRingGPA: gpa) }
        }
    }

    // MARK: Inflight tracking

    /// GET_INFLIGHT_FD (no queue runs): a new zeroed region, kept; returns
    /// the reply and the region's fd to send with it.
    func newInflightRegion(numQueues: UInt16, queueSize: UInt16) throws(SessionRefusal) -> (VhostUserPayload, FileDescriptor) {
        let region: InflightRegion, fd: FileDescriptor
        do {
            (region, fd) = try InflightRegion.create(numQueues: numQueues, queueSize: queueSize, packed: features.contains(.ringPacked))
        } catch {
            throw SessionRefusal("GET_INFLIGHT_FD refused: \(error)")
        }
        inflight?.unmap()
        inflight = region
        let payload = VhostUserPayload.inflight(
            mmapSize: UInt64(region.mapping.length), mmapOffset: 0, numQueues: numQueues, queueSize: queueSize)
        return (payload, fd)
    }

    /// SET_INFLIGHT_FD (no queue runs): maps the frontend's region (the
    /// caller closes `fd`); the queues recover from it as they start.
    func setInflightRegion(fd: FileDescriptor, size: UInt64, offset: UInt64, numQueues: UInt16, queueSize: UInt16) throws(SessionRefusal) {
        do {
            let region = try InflightRegion.map(
                fd: fd, size: size, offset: offset, numQueues: numQueues, queueSize: queueSize,
                packed: features.contains(.ringPacked))
            inflight?.unmap()
            inflight = region
            logger.debug("inflight region set", metadata: ["queues": "\(numQueues)", "queue.size": "\(queueSize)"])
        } catch {
            throw SessionRefusal("SET_INFLIGHT_FD refused: \(error)")
        }
    }

    /// Inflight tracking for queue `i` (vhost-user spec, "Inflight I/O
    /// tracking"): the area to keep up to date, the heads a restarted
    /// daemon serves again (requests the last one popped but never
    /// completed), and the avail index to start from: the used ring's index
    /// plus those heads, as libvhost-user does, since QEMU's base after a
    /// crash is its own guess.
    func inflightState(queue i: Int, ring: SplitQueue, base: UInt16) -> (area: InflightQueue?, resubmit: [UInt16], lastAvailIdx: UInt16) {
        guard let region = inflight else { return (nil, [], base) }
        guard var area = region.queue(i, queueSize: ring.size) else {
            logger.warning("queue \(i) of size \(ring.size) has no area in the inflight region (\(region.numQueues) queues of \(region.queueSize)): not tracked")
            return (nil, [], base)
        }
        guard area.isInitialized else {
            area.initialize(usedIdx: ring.usedIdx)
            return (area, [], base)
        }
        guard let recovery = area.recover(ringUsedIdx: ring.usedIdx, usedID: { ring.usedElementID(slot: $0) }) else {
            // Not the ring the region describes (new rings without a new region): nothing is in flight.
            logger.info("queue \(i): the inflight region does not match the ring; starting it afresh")
            area.initialize(usedIdx: ring.usedIdx)
            return (area, [], base)
        }
        if recovery.lastAvailIdx != base || !recovery.resubmit.isEmpty {
            logger.notice("queue \(i) recovered from the inflight region", metadata: [
                "resubmit": "\(recovery.resubmit.count)", "last_avail": "\(recovery.lastAvailIdx)", "frontend_base": "\(base)",
            ])
        }
        return (area, recovery.resubmit, recovery.lastAvailIdx)
    }

    /// Inflight tracking for packed queue `i` (vhost-user spec, "Inflight
    /// I/O tracking", packed layout; `PackedInflightQueue`): the area, the
    /// head entries a restarted daemon serves again, and where the ring
    /// stands when the region says so (nil: SET_VRING_BASE's `base`). After
    /// a crash QEMU's base for a packed ring is stale
    /// (`virtio_queue_packed_restore_last_avail_idx` does nothing), so an
    /// area set up by an earlier back-end is believed over it. `finish`
    /// completes a used element the crash interrupted. A region in the
    /// split layout leaves the queue untracked, with a warning; an area no
    /// back-end could have written refuses the queue.
    func packedInflightState(queue i: Int, size: UInt16, base: (avail: PackedRingPosition, used: PackedRingPosition),
                             finish: (PackedRingPosition) -> Bool) throws(SessionRefusal)
        -> (area: PackedInflightQueue?, resubmit: [UInt16], start: (avail: PackedRingPosition, used: PackedRingPosition)?) {
        guard let region = inflight else { return (nil, [], nil) }
        guard let area = region.packedQueue(i, queueSize: size) else {
            logger.warning("queue \(i) (packed, size \(size)) has no area in the inflight region (\(region.numQueues) queues of \(region.queueSize), \(region.packed ? "packed" : "split") layout): not tracked")
            return (nil, [], nil)
        }
        guard area.isInitialized else {
            area.initialize(used: base.used)
            return (area, [], nil)
        }
        let recovery: PackedInflightQueue.Recovery
        do {
            recovery = try area.recover(finish: finish)
        } catch {
            throw SessionRefusal("queue \(i): the inflight region is inconsistent: \(error)")
        }
        if recovery.avail != base.avail || recovery.used != base.used || !recovery.resubmit.isEmpty || recovery.finishedElement {
            logger.notice("queue \(i) recovered from the inflight region", metadata: [
                "resubmit": "\(recovery.resubmit.count)", "avail": "\(recovery.avail)", "used": "\(recovery.used)",
                "frontend_base": "\(base.avail) \(base.used)", "finished_element": "\(recovery.finishedElement)",
            ])
        }
        return (area, recovery.resubmit, (recovery.avail, recovery.used))
    }
}
