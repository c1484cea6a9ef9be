import BlkDevice
import Glibc
import Logging
import Posix
import Reactor
import VhostUser
import Virtio

/// One frontend connection to a controller (SPDK's `spdk_vhost_session`):
/// negotiated features, the guest memory map and the queues.
///
/// Messages are decoded on the control loop; anything that touches a running
/// queue travels to that queue's reactor and completes there
/// (vhost-user spec, "Communication"; docs/PROTOCOL-NOTES.md, "vhost-user
/// with QEMU 7.2").
///
/// The control loop never waits for a queue to drain: a message that needs
/// stopped queues (GET_VRING_BASE, SET_MEM_TABLE, ...) starts stopping them
/// and is set aside, with this frontend's socket unwatched, until the
/// reactors report them stopped; then it runs again, then the messages that
/// followed it. A disk that hangs holds up its own frontend only.
final class VhostUserSession {
    /// Per-queue state as the frontend has set it up.
    struct Vring {
        var size: UInt16 = 0
        var base: UInt16 = 0
        var address: VringAddress?
        var kickFD: Int32 = -1
        var callFD: Int32 = -1
        var enabled = false
        var server: VirtqueueServer?
        /// `server` was asked to stop and has not reported yet.
        var stopping = false
    }

    /// A message that waits for queues to stop, with the queues SET_MEM_TABLE
    /// restarts once the new table is mapped.
    private struct SetAside {
        let message: VhostUserMessage
        let restart: [Int]
    }

    unowned let controller: Controller
    private let loop: EventLoop
    var token: EventLoop.Token?
    /// Called on the control loop when a message handled after a drain ended
    /// the session (the target closes it, as it does when `readable` fails).
    var onFailure: (() -> Void)?
    /// The socket: bytes and descriptors in, replies out.
    private var connection: SessionConnection
    private var logger: Logger

    private(set) var features: VirtioFeatures = []
    private(set) var protocolFeatures: VhostUserProtocolFeatures = []
    private var mapping: GuestMemoryMapping?
    private(set) var vrings: [Vring]
    private var backendChannel: FileDescriptor?
    /// The dirty-page log (SET_LOG_BASE), used while LOG_ALL is negotiated.
    private var dirtyLog: DirtyLog?
    /// The inflight-tracking region (INFLIGHT_SHMFD), once GET/SET_INFLIGHT_FD set it up.
    private var inflight: InflightRegion?
    /// Set when a message broke the protocol: the caller disconnects.
    private(set) var failure: String?
    /// The message waiting for queues to stop; no later message runs before it.
    private var setAside: SetAside?
    /// Queues asked to stop that have not reported yet.
    private var stopsInFlight = 0
    /// CLOCK_MONOTONIC milliseconds when the current drain began (for warnings).
    private var drainStarted: UInt64 = 0
    /// Set once `close` began; called when it is complete.
    private var closeWaiters: [() -> Void]?
    private var closed = false

    /// Requests whose frontend waits for a reply whatever was negotiated
    /// (docs/PROTOCOL-NOTES.md, "Replies").
    static let alwaysReplied: Set<VhostUserRequest> = [
        .getFeatures, .getProtocolFeatures, .getQueueNum, .getVringBase, .getConfig, .getInflightFD,
        .getMaxMemSlots, .getStatus,
    ]

    static let offeredProtocolFeatures: VhostUserProtocolFeatures = [
        .multiQueue, .logSHMFD, .replyAck, .config, .slaveReq, .inflightSHMFD,
    ]

    init(controller: Controller, socket: FileDescriptor, loop: EventLoop) {
        self.controller = controller
        self.loop = loop
        connection = SessionConnection(socket: socket)
        var logger = controller.logger
        logger[metadataKey: "frontend.pid"] = "\(connection.peerPID.map(String.init) ?? "?")"
        self.logger = logger
        vrings = Array(repeating: Vring(), count: controller.maxQueues)
    }

    /// The frontend's process, when the kernel told (SO_PEERCRED).
    var peerPID: Int32? { connection.peerPID }

    // MARK: Input

    /// Reads what the (non-blocking) socket has and handles every complete
    /// message. Returns false when the session must end (peer closed or
    /// protocol error).
    func readable(_ events: EventLoop.Events) -> Bool {
        if setAside != nil {
            // Unwatched but for hang-ups while a message waits for a drain.
            if !events.isDisjoint(with: [.hangup, .error]) {
                logger.info("frontend disconnected while its queues drained")
                return false
            }
            return true
        }
        switch connection.receive() {
        case .bytes:
            return handleBufferedMessages()
        case .wouldBlock:
            return true
        case .endOfFile:
            logger.info("frontend disconnected")
            return false
        case .tooManyDescriptors:
            return fail("more file descriptors than any message carries")
        case .failed(let error):
            logger.info("frontend socket error: \(error)")
            return false
        }
    }

    /// Handles the complete messages the connection holds, in order, until
    /// one is set aside for a drain.
    private func handleBufferedMessages() -> Bool {
        while setAside == nil {
            let message: VhostUserMessage?
            do throws(VhostUserError) {
                message = try connection.nextMessage()
            } catch {
                return fail("bad message: \(error)")
            }
            guard let message else { return true }
            if !handle(message) { return false }
        }
        return true
    }

    /// Sets `message` aside until the queues being stopped have reported,
    /// and stops watching the socket meanwhile (the kernel holds what the
    /// frontend sends next). Returns true: the session goes on.
    private func setAsideUntilStopped(_ message: VhostUserMessage, restart: [Int] = []) -> Bool {
        setAside = SetAside(message: message, restart: restart)
        if let token { loop.modify(token, events: []) }
        return true
    }

    /// The last queue asked to stop has: runs the message set aside, then
    /// those that followed it.
    private func resumeAfterDrain() {
        guard let waiting = setAside else { return }
        setAside = nil
        if let token { loop.modify(token, events: .readable) }
        if !handle(waiting.message, restart: waiting.restart) || !handleBufferedMessages() {
            onFailure?()
        }
    }

    /// False, with the reason logged, when the frontend shrank a file it shared
    /// (guest memory, dirty log, inflight region) under the daemon: the
    /// caller then ends the session (`SharedMemoryGuard`).
    func sharedMemoryIntact() -> Bool {
        let lost = (mapping?.lostPages ?? 0) + (dirtyLog?.lostPages ?? 0) + (inflight?.mapping.lostPages ?? 0)
        guard lost > 0 else { return true }
        return fail("the frontend shrank memory it shares with the daemon: \(lost) pages were gone when touched")
    }

    private func fail(_ why: String) -> Bool {
        failure = why
        logger.error("disconnecting frontend: \(why)")
        return false
    }

    // MARK: Messages (vhost-user spec, "Front-end message types")

    /// Handles one message. `restart`: the queues to start again after a
    /// SET_MEM_TABLE that was set aside while they stopped.
    private func handle(_ message: VhostUserMessage, restart: [Int] = []) -> Bool {
        let request = message.header.request
        logger.trace("message \(request)")
        var fds = message.fds
        defer {
            // Every fd not kept is closed, unless the message was set aside: it keeps them.
            if setAside == nil { for fd in fds { Glibc.close(fd) } }
        }
        var ok = true

        switch (request, message.payload) {
        case (.getFeatures, _):
            return reply(request, .u64(controller.offeredFeatures.rawValue))
        case (.setFeatures, .u64(let value)):
            let wanted = VirtioFeatures(rawValue: value)
            guard controller.offeredFeatures.isSuperset(of: wanted) else {
                return fail("SET_FEATURES asks for features not offered: \(VirtioFeatures(rawValue: value & ~controller.offeredFeatures.rawValue).names)")
            }
            let wasLogging = features.contains(.logAll)
            features = wanted
            // QEMU turns LOG_ALL on and off while the queues run (live migration).
            if wanted.contains(.logAll) != wasLogging {
                logger.notice("dirty logging \(wanted.contains(.logAll) ? "on" : "off")")
                applyDirtyLog()
            }
        case (.getProtocolFeatures, _):
            return reply(request, .u64(Self.offeredProtocolFeatures.rawValue))
        case (.setProtocolFeatures, .u64(let value)):
            protocolFeatures = VhostUserProtocolFeatures(rawValue: value).intersection(Self.offeredProtocolFeatures)
        case (.setOwner, _):
            break
        case (.resetOwner, _), (.resetDevice, _):
            guard stopped(Array(vrings.indices)) else { return setAsideUntilStopped(message) }
            features = []
        case (.getQueueNum, _):
            return reply(request, .u64(UInt64(controller.maxQueues)))
        case (.getMaxMemSlots, _):
            return reply(request, .u64(UInt64(VhostUserPayload.maxMemTableRegions)))
        case (.setMemTable, .memoryTable(let regions)):
            let running = vrings.indices.filter { vrings[$0].server != nil }
            guard stopped(running) else { return setAsideUntilStopped(message, restart: running) }
            ok = setMemoryTable(regions, fds: fds, restart: restart)
            fds = []  // the mapper owns them now
        case (.setVringNum, .vringState(let index, let num)):
            guard let i = queueIndex(index) else { return false }
            guard num > 0, num <= 32768, num & (num - 1) == 0 else { return fail("SET_VRING_NUM \(num) for queue \(index) is not a power of two up to 32768") }
            guard vrings[i].server == nil else { return fail("SET_VRING_NUM on running queue \(index)") }
            vrings[i].size = UInt16(num)
        case (.setVringBase, .vringState(let index, let num)):
            guard let i = queueIndex(index) else { return false }
            guard vrings[i].server == nil else { return fail("SET_VRING_BASE on running queue \(index)") }
            vrings[i].base = UInt16(truncatingIfNeeded: num)
        case (.setVringAddr, .vringAddress(let address)):
            guard let i = queueIndex(address.index) else { return false }
            if vrings[i].server != nil {
                // Only the log flag and address may change while running (QEMU at migration start).
                guard let current = vrings[i].address, current.desc == address.desc, current.avail == address.avail,
                      current.used == address.used else {
                    return fail("SET_VRING_ADDR moves the rings of running queue \(address.index)")
                }
                vrings[i].address = address
                applyDirtyLog()
            } else {
                vrings[i].address = address
            }
        case (.setVringKick, .u64(let value)):
            let file = VringFile(value)
            guard let i = queueIndex(file.index) else { return false }
            if file.noFD { return fail("polling mode (NOFD kick) is not supported") }
            guard !fds.isEmpty else { return fail("SET_VRING_KICK without a descriptor") }
            guard EventFD.isEventFD(fds[0]) else { return fail("SET_VRING_KICK: the descriptor is not an eventfd") }
            guard Self.makeNonBlocking(fds[0]) else { return fail("SET_VRING_KICK: cannot make the eventfd non-blocking") }
            guard stopped([i]) else { return setAsideUntilStopped(message) }
            let fd = fds.removeFirst()
            if vrings[i].kickFD >= 0 { Glibc.close(vrings[i].kickFD) }
            vrings[i].kickFD = fd
            if !protocolFeatures.isEmpty || features.contains(.protocolFeatures) {
                // Rings start disabled until SET_VRING_ENABLE (vhost-user spec, "Ring states").
                if vrings[i].enabled { ok = startQueue(i) }
            } else {
                vrings[i].enabled = true
                ok = startQueue(i)
            }
        case (.setVringCall, .u64(let value)):
            let file = VringFile(value)
            guard let i = queueIndex(file.index) else { return false }
            let fd: Int32 = file.noFD ? -1 : (fds.first ?? -1)
            if !file.noFD {
                guard !fds.isEmpty else { return fail("SET_VRING_CALL without a descriptor") }
                guard EventFD.isEventFD(fds[0]) else { return fail("SET_VRING_CALL: the descriptor is not an eventfd") }
                guard Self.makeNonBlocking(fds[0]) else { return fail("SET_VRING_CALL: cannot make the eventfd non-blocking") }
                fds.removeFirst()
            }
            let old: Int32
            if let server = vrings[i].server {
                old = server.reactor.postAndWait { server.replaceCallFD(fd) }
            } else {
                old = vrings[i].callFD
            }
            if old >= 0 { Glibc.close(old) }
            vrings[i].callFD = fd
        case (.setVringErr, .u64(let value)):
            guard queueIndex(VringFile(value).index) != nil else { return false }
            // The error eventfd is not used: closed by the defer.
        case (.setVringEnable, .vringState(let index, let num)):
            guard let i = queueIndex(index) else { return false }
            if num == 0, !stopped([i]) { return setAsideUntilStopped(message) }
            vrings[i].enabled = num != 0
            if num != 0, vrings[i].server == nil, vrings[i].kickFD >= 0 {
                ok = startQueue(i)
            }
        case (.getVringBase, .vringState(let index, _)):
            guard let i = queueIndex(index) else { return false }
            guard stopped([i]) else { return setAsideUntilStopped(message) }
            if vrings[i].kickFD >= 0 {
                Glibc.close(vrings[i].kickFD)
                vrings[i].kickFD = -1
            }
            vrings[i].enabled = false
            return reply(request, .vringState(index: index, num: UInt32(vrings[i].base)))
        case (.getConfig, .config(let offset, let size, let flags, _)):
            guard size <= UInt32(VhostUserPayload.maxConfigSize), offset <= 256 else { return fail("GET_CONFIG beyond the config space") }
            let bytes = controller.config.bytes(offset: Int(offset), count: Int(size))
            return reply(request, .config(offset: offset, size: size, flags: flags, payload: bytes))
        case (.setConfig, .config(let offset, let size, _, let payload)):
            // Only `writeback` is writable (CONFIG_WCE, virtio 1.2 §5.2.5.1): 0 = write-through.
            var config = controller.config
            guard features.contains(.configWCE), config.applyWrite(offset: Int(offset), bytes: payload) else {
                logger.warning("SET_CONFIG offset \(offset) size \(size) refused: only the writeback byte is writable")
                ok = false
                break
            }
            let writeThrough = config.writeback == 0
            if writeThrough != controller.writeThrough {
                controller.writeThrough = writeThrough
                logger.notice("guest switched the write cache to \(writeThrough ? "write-through" : "write-back")")
                backendChanged(waitForPreviousRequests: false, notifyFrontend: false)
                controller.guestChangedSavedState?()
            }
        case (.setLogBase, .log(let size, let offset)):
            guard let fd = fds.first else { return fail("SET_LOG_BASE without a descriptor") }
            do {
                dirtyLog = try DirtyLog(fd: FileDescriptor(fd), size: size, offset: offset)
            } catch {
                return fail("SET_LOG_BASE refused: \(error)")
            }
            logger.info("dirty log set", metadata: ["log.bytes": "\(size)"])
            applyDirtyLog()
            // With LOG_SHMFD QEMU waits for this reply (vhost-user spec, "SET_LOG_BASE").
            if protocolFeatures.contains(.logSHMFD) { return reply(request, .u64(0)) }
        case (.setLogFD, _):
            break  // QEMU does not use it for vhost-user; the fd is closed by the defer.
        case (.getInflightFD, .inflight(_, _, let numQueues, let queueSize)):
            return sendNewInflightRegion(numQueues: numQueues, queueSize: queueSize)
        case (.setInflightFD, .inflight(let size, let offset, let numQueues, let queueSize)):
            guard let fd = fds.first else { return fail("SET_INFLIGHT_FD without a descriptor") }
            guard !vrings.contains(where: { $0.server != nil }) else { return fail("SET_INFLIGHT_FD while queues run") }
            do {
                let region = try InflightRegion.map(
                    fd: FileDescriptor(fd), size: size, offset: offset, numQueues: numQueues, queueSize: queueSize)
                inflight?.unmap()
                inflight = region
                logger.debug("inflight region set", metadata: ["queues": "\(numQueues)", "queue.size": "\(queueSize)"])
            } catch {
                return fail("SET_INFLIGHT_FD refused: \(error)")
            }
        case (.setSlaveReqFD, _):
            guard let fd = fds.first else { return fail("SET_SLAVE_REQ_FD without a descriptor") }
            fds.removeFirst()
            backendChannel?.close()
            let channel = FileDescriptor(fd)
            // Never block the control loop on a front-end that does not read.
            try? channel.setNonBlocking()
            backendChannel = channel
        default:
            if message.header.needsReply && protocolFeatures.contains(.replyAck) {
                logger.warning("unsupported request \(request): failed")
                return ack(request, success: false)
            }
            if Self.alwaysReplied.contains(request) {
                return fail("unsupported request \(request) that expects a reply")
            }
            logger.warning("unsupported request \(request) ignored")
            return true
        }
        if failure != nil { return false }
        if message.header.needsReply && protocolFeatures.contains(.replyAck) {
            return ack(request, success: ok)
        }
        return ok || failure == nil
    }

    /// GET_INFLIGHT_FD: a new zeroed region, its fd sent with the reply.
    private func sendNewInflightRegion(numQueues: UInt16, queueSize: UInt16) -> Bool {
        let region: InflightRegion, fd: FileDescriptor
        do {
            (region, fd) = try InflightRegion.create(numQueues: numQueues, queueSize: queueSize)
        } catch {
            return fail("GET_INFLIGHT_FD refused: \(error)")
        }
        defer { fd.close() }
        guard !vrings.contains(where: { $0.server != nil }) else {
            region.unmap()
            return fail("GET_INFLIGHT_FD while queues run")
        }
        let payload = VhostUserPayload.inflight(
            mmapSize: UInt64(region.mapping.length), mmapOffset: 0, numQueues: numQueues, queueSize: queueSize)
        do {
            try connection.reply(to: .getInflightFD, payload, fd: fd)
        } catch {
            region.unmap()
            return fail("cannot reply to GET_INFLIGHT_FD: \(error)")
        }
        inflight?.unmap()
        inflight = region
        return true
    }

    /// Kick and call eventfds are made non-blocking, so that a frontend
    /// cannot hold a reactor in read(2) or write(2): one that reads its own
    /// kick eventfd between the thread pool's wake-up and its read, or one
    /// whose call eventfd's counter is full. The flag is the open file's,
    /// shared with the frontend; QEMU creates these eventfds with
    /// EFD_NONBLOCK already (`event_notifier_init`), so its end sees no
    /// change. Why a failed signal loses nothing: `CallSignal`.
    private static func makeNonBlocking(_ fd: Int32) -> Bool {
        let flags = fcntl(fd, F_GETFL)
        return flags >= 0 && (flags & O_NONBLOCK != 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0)
    }

    private func queueIndex(_ index: UInt32) -> Int? {
        guard index < UInt32(vrings.count) else {
            _ = fail("queue index \(index) beyond the controller's \(vrings.count) queues")
            return nil
        }
        return Int(index)
    }

    private func reply(_ request: VhostUserRequest, _ payload: VhostUserPayload) -> Bool {
        do {
            try connection.reply(to: request, payload)
            return true
        } catch {
            return fail("cannot reply to \(request): \(error)")
        }
    }

    private func ack(_ request: VhostUserRequest, success: Bool) -> Bool {
        reply(request, .u64(success ? 0 : 1))
    }

    // MARK: Memory

    /// Maps the new table (its queues are stopped), then starts `restart` again.
    private func setMemoryTable(_ regions: [MemoryRegionDescriptor], fds: [Int32], restart: [Int]) -> Bool {
        let newMapping: GuestMemoryMapping
        do {
            newMapping = try GuestMemoryMapping.map(regions, fds: fds)
        } catch {
            return fail("SET_MEM_TABLE refused: \(error)")
        }
        mapping?.unmapAll()
        mapping = newMapping
        logger.debug("memory table set", metadata: ["regions": "\(regions.count)"])
        for i in restart where !startQueue(i) { return false }
        return true
    }

    // MARK: Queues

    /// Starts serving queue `i` on its reactor (`Controller.reactor(forQueue:)`).
    private func startQueue(_ i: Int) -> Bool {
        let vring = vrings[i]
        guard vring.server == nil else { return true }
        guard let address = vring.address, vring.size > 0, vring.kickFD >= 0 else {
            return fail("queue \(i) started before SET_VRING_NUM/ADDR/KICK")
        }
        guard let memory = mapping?.memory else { return fail("queue \(i) started before SET_MEM_TABLE") }
        let sizes = SplitQueue.layoutSizes(size: vring.size)
        guard let desc = memory.hostPointer(userAddr: address.desc, length: UInt64(sizes.desc)),
              let avail = memory.hostPointer(userAddr: address.avail, length: UInt64(sizes.avail)),
              let used = memory.hostPointer(userAddr: address.used, length: UInt64(sizes.used)) else {
            return fail("queue \(i) rings are outside guest memory")
        }
        var ring: SplitQueue
        do {
            ring = try SplitQueue(size: vring.size, desc: desc, avail: avail, used: used,
                                  eventIdx: features.contains(.eventIdx), lastAvailIdx: vring.base)
        } catch {
            return fail("queue \(i) refused: \(error)")
        }
        let tracking = inflightState(queue: i, ring: ring, base: vring.base)
        if tracking.lastAvailIdx != vring.base {
            do {
                ring = try SplitQueue(size: vring.size, desc: desc, avail: avail, used: used,
                                      eventIdx: features.contains(.eventIdx), lastAvailIdx: tracking.lastAvailIdx)
            } catch {
                return fail("queue \(i) refused: \(error)")
            }
        }
        let server = VirtqueueServer(
            queueIndex: i, ring: ring, memory: memory, kickFD: vring.kickFD, callFD: vring.callFD,
            backend: controller.deviceBackend(), reactor: controller.reactor(forQueue: i), logger: logger,
            inflight: tracking.area, resubmit: tracking.resubmit)
        vrings[i].server = server
        let log = activeDirtyLog, gpa = usedRingGPA(i)
        server.reactor.post {
            if log != nil { server.setDirtyLog(log, usedRingGPA: gpa) }
            server.start()
        }
        logger.debug("queue started", metadata: ["vq.index": "\(i)", "vq.size": "\(vring.size)"])
        return true
    }

    /// Inflight tracking for queue `i` (vhost-user spec, "Inflight I/O
    /// tracking"; docs/PROTOCOL-NOTES.md, "Inflight tracking across restarts"):
    /// the area to keep up to date, the heads a restarted daemon serves again
    /// (requests the last one popped but never completed), and the avail
    /// index to start from: the used ring's index plus those heads, as
    /// libvhost-user does, since QEMU's base after a crash is its own guess.
    private func inflightState(queue i: Int, ring: SplitQueue, base: UInt16) -> (area: InflightQueue?, resubmit: [UInt16], lastAvailIdx: UInt16) {
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

    /// True when none of `queues` runs; otherwise asks those still running
    /// to stop (each completes what it has in flight, publishes, and reports
    /// its last avail index for GET_VRING_BASE) and returns false: the
    /// caller waits for `queueStopped`.
    private func stopped(_ queues: [Int]) -> Bool {
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

    /// Queue `i` stopped with `lastAvail` (control loop).
    private func queueStopped(_ i: Int, server: VirtqueueServer, lastAvail: UInt16) {
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

    /// Logs every 5 s while queues are still draining (a disk that hangs).
    /// Logs every 5 s while queues drain, with the time since the drain began.
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

    // MARK: Dirty logging (live migration)

    /// The log a queue writes to: only while LOG_ALL is negotiated and a log is set.
    private var activeDirtyLog: DirtyLog? { features.contains(.logAll) ? dirtyLog : nil }

    /// The used ring's guest-physical address when SET_VRING_ADDR asked for its logging.
    private func usedRingGPA(_ i: Int) -> UInt64? {
        guard let address = vrings[i].address, address.flags & VringAddress.flagLog != 0 else { return nil }
        return address.log
    }

    /// Hands every running queue the current log, and waits until they use
    /// it: from the reply on, every write the device makes is logged.
    private func applyDirtyLog() {
        let log = activeDirtyLog
        for i in vrings.indices {
            guard let server = vrings[i].server else { continue }
            let gpa = usedRingGPA(i)
            server.reactor.postAndWait { server.setDirtyLog(log, usedRingGPA: gpa) }
        }
    }

    // MARK: Backend changes (resize, attach, detach)

    /// Hands every running queue the controller's current backend and tells
    /// the front-end its config changed. With `waitForPreviousRequests`,
    /// `done` runs (on the control loop) once no request dispatched on the
    /// old backend is in flight (detach, shrink), so the old backend may be
    /// released or cut; the loop serves everything else meanwhile.
    func backendChanged(waitForPreviousRequests: Bool, notifyFrontend: Bool = true, then done: @escaping () -> Void = {}) {
        let backend = controller.deviceBackend()
        let servers = vrings.compactMap(\.server)
        guard waitForPreviousRequests, !servers.isEmpty else {
            // Applied before the RPC answers: a request the client sends after the
            // answer must see the new backend, even if the reactor polls the ring
            // before it reads its inbox.
            for server in servers { server.reactor.postAndWait { server.updateBackend(backend) } }
            if notifyFrontend { notifyConfigChanged() }
            done()
            return
        }
        let drain = BackendDrain(servers: servers.count, logger: logger) { [weak self] in
            if notifyFrontend { self?.notifyConfigChanged() }
            done()
        }
        drain.warnWhileWaiting(on: loop)
        let pending = LoopBound(drain), loop = self.loop
        for server in servers {
            server.reactor.post {
                server.updateBackend(backend) { loop.execute { pending.object.serverDrained() } }
            }
        }
    }

    /// Sends CONFIG_CHANGE_MSG on the backend channel (docs/PROTOCOL-NOTES.md,
    /// "Live resize") without asking for a reply: QEMU answers it only after a
    /// GET_CONFIG on the main socket, which this same thread serves.
    func notifyConfigChanged() {
        guard protocolFeatures.contains(.config), protocolFeatures.contains(.slaveReq), let channel = backendChannel else {
            logger.info("config changed; the front-end reads it on its next GET_CONFIG (no backend channel)")
            return
        }
        do {
            try UnixSocket.sendAll(channel, VhostUserBackendMessage.configChange())
            logger.info("config change sent to the front-end", metadata: ["capacity": "\(controller.config.capacity)"])
        } catch {
            logger.warning("cannot send the config change to the front-end: \(error)")
        }
    }

    /// True once `close` began: the session serves no more messages.
    var isClosing: Bool { closeWaiters != nil || closed }

    /// Whether the frontend has closed its end (`SessionConnection.hasHungUp`).
    func hasHungUp() -> Bool { connection.hasHungUp() }

    /// Ends the session: stops the queues (letting what is in flight
    /// complete), then unmaps memory and closes every descriptor; `done`
    /// runs on the control loop when that is complete. Calling it again adds
    /// a waiter.
    func close(then done: @escaping () -> Void) {
        if closed {
            done()
            return
        }
        if closeWaiters != nil {
            closeWaiters?.append(done)
            return
        }
        closeWaiters = [done]
        if let waiting = setAside {
            for fd in waiting.message.fds { Glibc.close(fd) }
            setAside = nil
        }
        if stopped(Array(vrings.indices)) { finishClose() }
    }

    private func finishClose() {
        for i in vrings.indices {
            if vrings[i].kickFD >= 0 { Glibc.close(vrings[i].kickFD) }
            if vrings[i].callFD >= 0 { Glibc.close(vrings[i].callFD) }
            vrings[i] = Vring()
        }
        mapping?.unmapAll()
        mapping = nil
        backendChannel?.close()
        backendChannel = nil
        inflight?.unmap()
        inflight = nil
        dirtyLog = nil
        connection.close()
        closed = true
        let waiters = closeWaiters ?? []
        closeWaiters = nil
        for waiter in waiters { waiter() }
    }
}
