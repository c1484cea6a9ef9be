import BlkDevice
import Glibc
import Posix
import VhostUser
import Virtio

/// Queue lifecycle: the kick, call and enable messages that start a queue,
/// starting it on its reactor, and stopping it without waiting (vhost-user
/// spec, "Ring states": a ring is started once it has a kick and is
/// enabled, and stopped by GET_VRING_BASE).
extension VhostUserSession {
    // MARK: Kick, call, enable

    /// SET_VRING_KICK on stopped queue `i`: keeps `fd` as its kick and
    /// starts it if it may run. Without protocol features rings start
    /// enabled; with them, only after SET_VRING_ENABLE (vhost-user spec, "Ring states").
    func setKick(queue i: Int, fd: FileDescriptor) throws(SessionRefusal) {
        vrings[i].kickFD?.close()
        vrings[i].kickFD = fd
        if !protocolFeatures.isEmpty || features.contains(.protocolFeatures) {
            if vrings[i].enabled { try startQueue(i) }
        } else {
            vrings[i].enabled = true
            try startQueue(i)
        }
    }

    /// SET_VRING_CALL: `fd` (nil: never signal) replaces queue `i`'s call
    /// eventfd; a running queue switches on its reactor before the old one
    /// closes. The session owns the call eventfd (the server was handed the
    /// same one), so it closes its own copy of the old one.
    func setCall(queue i: Int, fd: FileDescriptor?) {
        if let server = vrings[i].server {
            _ = server.reactor.postAndWait { server.replaceCallFD(fd) }
        }
        vrings[i].callFD?.close()
        vrings[i].callFD = fd
    }

    /// SET_VRING_ENABLE (queue `i` is stopped when `enabled` is false): a
    /// queue that has its kick starts.
    func setEnabled(queue i: Int, _ enabled: Bool) throws(SessionRefusal) {
        vrings[i].enabled = enabled
        if enabled, vrings[i].server == nil, vrings[i].kickFD != nil {
            try startQueue(i)
        }
    }

    /// GET_VRING_BASE on stopped queue `i`: forgets its kick, disables it,
    /// and returns the base to reply with (the next avail index to serve).
    func forgetKick(queue i: Int) -> UInt32 {
        vrings[i].kickFD?.close()
        vrings[i].kickFD = nil
        vrings[i].enabled = false
        return vrings[i].base
    }

    /// Refuses a kick or call `fd` that is not an eventfd, and makes it
    /// non-blocking, so that a frontend cannot hold a reactor in read(2)
    /// or write(2): one that reads its own kick eventfd between the thread
    /// pool's wake-up and its read, or one whose call eventfd's counter is
    /// full. The flag is the open file's, shared with the frontend; QEMU
    /// creates these eventfds with EFD_NONBLOCK already
    /// (`event_notifier_init`), so its end sees no change. Why a failed
    /// signal loses nothing: `CallSignal`.
    static func acceptEventFD(_ fd: FileDescriptor, for request: VhostUserRequest) throws(SessionRefusal) {
        guard EventFD.isEventFD(fd) else { throw SessionRefusal("\(request): the descriptor is not an eventfd") }
        do {
            let flags = try fd.statusFlags()
            if flags & O_NONBLOCK == 0 { try fd.setStatusFlags(flags | O_NONBLOCK) }
        } catch {
            throw SessionRefusal("\(request): cannot make the eventfd non-blocking")
        }
    }

    /// SPDK's `max_queues`: one past the highest running queue (0: none runs).
    var startedQueueCount: Int {
        (vrings.lastIndex { $0.server != nil }).map { $0 + 1 } ?? 0
    }

    // MARK: Start

    /// Starts serving queue `i` on its reactor (`Controller.reactor(forQueue:)`).
    func startQueue(_ i: Int) throws(SessionRefusal) {
        let vring = vrings[i]
        guard vring.server == nil else { return }
        guard let address = vring.address, vring.size > 0, let kickFD = vring.kickFD else {
            throw SessionRefusal("queue \(i) started before SET_VRING_NUM/ADDR/KICK")
        }
        guard let memory = mapping?.memory else { throw SessionRefusal("queue \(i) started before SET_MEM_TABLE") }
        let ring: QueueRing
        let tracking: (area: InflightQueue?, packedArea: PackedInflightQueue?, resubmit: [UInt16])
        if features.contains(.ringPacked) {
            let packed = try packedRing(i, vring: vring, address: address, memory: memory)
            ring = .packed(packed.ring)
            tracking = (nil, packed.inflight, packed.resubmit)
        } else {
            let split = try splitRing(i, vring: vring, address: address, memory: memory)
            ring = .split(split.queue)
            tracking = (split.inflight, nil, split.resubmit)
        }
        let server = VirtqueueServer(
            queueIndex: i, ring: ring, memory: memory, kickFD: kickFD, callFD: vring.callFD,
            backend: controller.deviceBackend(), reactor: controller.reactor(forQueue: i), logger: logger,
            inflight: tracking.area, packedInflight: tracking.packedArea, resubmit: tracking.resubmit,
            maxRequests: controller.limits.maxRequestsPerQueue)
        vrings[i].server = server
        let session = LoopBound(self), loop = self.loop
        // The server keeps this closure, so it names the server by identity: a
        // strong capture would leak every queue, and a weak one would give the
        // server a side table that slows each retain and release on the hot path.
        let id = ObjectIdentifier(server)
        server.onRingBroken = { error in
            loop.execute { session.object.ringBroke(queue: i, server: id, error) }
        }
        let log = activeDirtyLog, gpa = usedRingGPA(i), coalescing = controller.coalescing
        server.reactor.post {
            if log != nil { server.setDirtyLog(log, usedRingGPA: gpa) }
            server.start()
            if coalescing.isEnabled { server.setCoalescing(coalescing) }
        }
        logger.debug("queue started", metadata: [
            "vq.index": "\(i)", "vq.size": "\(vring.size)", "vq.frontend_base": "0x\(String(vring.base, radix: 16))",
        ])
    }

    /// Queue `i`'s split ring (virtio 1.2 §2.7) at the base SET_VRING_BASE
    /// set, or where inflight recovery says to resume, with its tracking.
    private func splitRing(_ i: Int, vring: Vring, address: VringAddress, memory: GuestMemory) throws(SessionRefusal)
        -> (queue: SplitQueue, inflight: InflightQueue?, resubmit: [UInt16]) {
        let sizes = SplitQueue.layoutSizes(size: vring.size)
        let (desc, avail, used) = try ringAreas(i, address: address, lengths: sizes, memory: memory)
        let eventIdx = features.contains(.eventIdx)
        func ring(lastAvailIdx: UInt16) throws(SessionRefusal) -> SplitQueue {
            try refusing(queue: i) {
                try SplitQueue(size: vring.size, desc: desc, avail: avail, used: used, eventIdx: eventIdx, lastAvailIdx: lastAvailIdx)
            }
        }
        let base = UInt16(truncatingIfNeeded: vring.base)
        var queue = try ring(lastAvailIdx: base)
        let tracking = inflightState(queue: i, ring: queue, base: base)
        if tracking.lastAvailIdx != base { queue = try ring(lastAvailIdx: tracking.lastAvailIdx) }
        return (queue, tracking.area, tracking.resubmit)
    }

    /// Queue `i`'s packed ring (virtio 1.2 §2.8): SET_VRING_ADDR's three
    /// addresses are the descriptor ring, the driver event suppression area
    /// and the device's (vhost-user spec, "Vring address description"), and
    /// SET_VRING_BASE's value holds both positions (`PackedRingBase`),
    /// unless the inflight region says where the ring stands
    /// (`packedInflightState`).
    private func packedRing(_ i: Int, vring: Vring, address: VringAddress, memory: GuestMemory) throws(SessionRefusal)
        -> (ring: PackedRing, inflight: PackedInflightQueue?, resubmit: [UInt16]) {
        let sizes = PackedQueue.layoutSizes(size: vring.size)
        let (desc, driverEvent, deviceEvent) = try ringAreas(i, address: address, lengths: sizes, memory: memory)
        let eventIdx = features.contains(.eventIdx)
        func ring(avail: PackedRingPosition, used: PackedRingPosition) throws(SessionRefusal) -> PackedQueue {
            try refusing(queue: i) {
                try PackedQueue(size: vring.size, desc: desc, driverEvent: driverEvent, deviceEvent: deviceEvent,
                                eventIdx: eventIdx, avail: avail, used: used)
            }
        }
        let base = PackedRingBase.decode(vring.base)
        let slots = try ring(avail: .start, used: .start)  // finishes a used element recovery finds half written
        let tracking = try packedInflightState(queue: i, size: vring.size, base: base) { slots.finishUsedElement(at: $0) }
        let start = tracking.start ?? base
        let queue = try ring(avail: start.avail, used: start.used)
        return (PackedRing(queue, popped: tracking.resubmit.count), tracking.area, tracking.resubmit)
    }

    /// The host addresses of queue `i`'s three ring areas (SET_VRING_ADDR's
    /// `desc`, `avail` and `used`, whatever the layout calls them), `lengths`
    /// bytes each; refused when one is outside guest memory.
    private func ringAreas(_ i: Int, address: VringAddress, lengths: (Int, Int, Int), memory: GuestMemory)
        throws(SessionRefusal) -> (UnsafeMutableRawPointer, UnsafeMutableRawPointer, UnsafeMutableRawPointer) {
        guard let first = memory.hostPointer(userAddr: address.desc, length: UInt64(lengths.0)),
              let second = memory.hostPointer(userAddr: address.avail, length: UInt64(lengths.1)),
              let third = memory.hostPointer(userAddr: address.used, length: UInt64(lengths.2)) else {
            throw SessionRefusal("queue \(i) rings are outside guest memory")
        }
        return (first, second, third)
    }

    /// `make()`'s ring, or queue `i` refused with its error.
    private func refusing<Ring>(queue i: Int, _ make: () throws -> Ring) throws(SessionRefusal) -> Ring {
        do {
            return try make()
        } catch {
            throw SessionRefusal("queue \(i) refused: \(error)")
        }
    }

    /// Queue `i`'s avail ring broke (virtio 1.2 §2.7.6: an index or head
    /// out of range): the guest, or a frontend writing its memory, broke the
    /// protocol, so the frontend is disconnected with the reason (control loop).
    private func ringBroke(queue i: Int, server: ObjectIdentifier, _ error: VirtioError) {
        guard let current = vrings[i].server, ObjectIdentifier(current) == server, !isClosing else { return }
        _ = fail("queue \(i): the guest's ring is broken: \(error)")
        onFailure?()
    }

    // MARK: Stop, set aside, resume

    /// True when none of `queues` runs; otherwise asks those still running
    /// to stop (each completes what it has in flight, publishes, and reports
    /// its last avail index for GET_VRING_BASE) and returns false: the
    /// message that asked is set aside until `queueStopped`.
    func stopped(_ queues: [Int]) -> Bool {
        var allStopped = true
        for i in queues {
            guard let server = vrings[i].server else { continue }
            allStopped = false
            guard !vrings[i].stopping else { continue }
            vrings[i].stopping = true
            if stopsInFlight == 0 {
                drainStarted = EventLoop.nowMilliseconds()
                warnWhileDraining()
            }
            stopsInFlight += 1
            let session = LoopBound(self), loop = self.loop
            server.reactor.post {
                server.stop { last in
                    loop.execute { session.object.queueStopped(i, server: server, lastAvail: last) }
                }
            }
        }
        return allStopped
    }

    /// Queue `i` stopped with `lastAvail` (control loop). The last queue
    /// to stop finishes a close, or runs the message set aside.
    private func queueStopped(_ i: Int, server: VirtqueueServer, lastAvail: UInt32) {
        guard vrings[i].server === server else { return }
        vrings[i].base = lastAvail
        vrings[i].server = nil
        vrings[i].stopping = false
        controller.retireStats(of: server)
        stopsInFlight -= 1
        guard stopsInFlight == 0 else { return }
        if closeWaiters != nil {
            finishClose()
        } else {
            resumeAfterDrain()
        }
    }

    /// Sets `message` aside until the queues being stopped have reported,
    /// and stops watching the socket meanwhile (the kernel holds what the
    /// frontend sends next; `readable` still sees a hang-up).
    func setAsideUntilStopped(_ message: VhostUserMessage, restart: [Int]) {
        setAside = SetAside(message: message, restart: restart)
        if let token { loop.modify(token, events: []) }
    }

    /// The last queue asked to stop has: runs the message set aside, then
    /// those that followed it.
    private func resumeAfterDrain() {
        guard let waiting = setAside else { return }
        setAside = nil
        if let token { loop.modify(token, events: .readable) }
        if !process(waiting.message, restart: waiting.restart) || !handleBufferedMessages() {
            onFailure?()
        }
    }

    /// Logs every 5 s while queues drain (a disk that hangs), with the time
    /// since the drain began.
    private func warnWhileDraining() {
        let started = drainStarted
        loop.after(milliseconds: 5000) { [weak self] in
            guard let self, !closed, stopsInFlight > 0, drainStarted == started else { return }
            let queues = vrings.indices.filter { vrings[$0].stopping }.map(String.init).joined(separator: ", ")
            let seconds = (EventLoop.nowMilliseconds() &- started) / 1000
            logger.warning("queue \(queues) still draining after \(seconds) s; this frontend waits, the others are served")
            warnWhileDraining()
        }
    }
}
