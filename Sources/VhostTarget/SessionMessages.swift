import Glibc
import Posix
import VhostUser
import Virtio

/// One message, start to end (vhost-user spec, "Front-end message types").
extension VhostUserSession {
    /// What handling a message asks of the connection; the session's I/O
    /// half (`perform`) carries it out.
    enum Outcome {
        /// Send this reply: GET_* answers, and SET_LOG_BASE's with LOG_SHMFD.
        /// A reply stands in for REPLY_ACK's ack. `fd` travels with it and
        /// is closed once sent (GET_INFLIGHT_FD).
        case reply(VhostUserPayload, fd: FileDescriptor? = nil)
        /// The frontend asked for an ack (NEED_REPLY with REPLY_ACK
        /// negotiated, vhost-user spec "REPLY_ACK"): 0 on success, 1 on failure.
        case ack(Bool)
        /// The message needs queues that are still stopping: it waits, with
        /// its descriptors, and runs again once they have
        /// (`resumeAfterDrain`); `restart` is what SET_MEM_TABLE starts again.
        case setAside(restart: [Int])
        /// The frontend broke the protocol, or the session cannot go on.
        case disconnect(reason: String)
        /// Nothing to send.
        case none
    }

    /// Requests whose frontend waits for a reply whatever was negotiated
    /// (those with a reply payload in the vhost-user spec, "Front-end message types").
    static let alwaysReplied: Set<VhostUserRequest> = [
        .getFeatures, .getProtocolFeatures, .getQueueNum, .getVringBase, .getConfig, .getInflightFD,
        .getMaxMemSlots, .getStatus,
    ]

    static let offeredProtocolFeatures: VhostUserProtocolFeatures = [
        .multiQueue, .logSHMFD, .replyAck, .config, .slaveReq, .inflightSHMFD, .configureMemSlots,
    ]

    /// The checks of `SessionMessageValidator`, against the queues as they are now.
    var validator: SessionMessageValidator {
        SessionMessageValidator(
            queues: vrings.map { .init(running: $0.server != nil, address: $0.address) },
            offeredFeatures: controller.offeredFeatures)
    }

    /// Handles one message: its payload as its request defines it, the
    /// validator's checks, then the effect on the session and its queues.
    /// `restart`: the queues to start again after a SET_MEM_TABLE that was
    /// set aside while they stopped.
    ///
    /// Every descriptor the message brought and the session did not keep is
    /// closed, unless the message is set aside: it keeps them for its next run.
    func handle(_ message: VhostUserMessage, restart: [Int] = []) -> Outcome {
        logger.trace("message \(message.request)")
        var fds = message.fds
        let outcome: Outcome
        do throws(SessionRefusal) {
            outcome = try apply(message, fds: &fds, restart: restart)
        } catch {
            outcome = .disconnect(reason: error.reason)
        }
        if case .setAside = outcome { return outcome }
        fds.closeAll()
        return outcome
    }

    /// The body of `handle`: each case decodes (the pattern), validates
    /// (`try check...`), then applies. It removes from `fds` what it keeps.
    private func apply(_ message: VhostUserMessage, fds: inout [FileDescriptor], restart: [Int]) throws(SessionRefusal) -> Outcome {
        let request = message.request
        let check = validator
        var succeeded = true

        switch (request, message.payload) {
        case (.getFeatures, _):
            return .reply(.u64(controller.offeredFeatures.rawValue))
        case (.setFeatures, .u64(let value)):
            let wanted = try check.setFeatures(value)
            setFeatures(wanted)
        case (.getProtocolFeatures, _):
            return .reply(.u64(Self.offeredProtocolFeatures.rawValue))
        case (.setProtocolFeatures, .u64(let value)):
            protocolFeatures = VhostUserProtocolFeatures(rawValue: value).intersection(Self.offeredProtocolFeatures)
        case (.setOwner, _):
            break
        case (.resetOwner, _), (.resetDevice, _):
            guard stopped(Array(vrings.indices)) else { return .setAside(restart: []) }
            features = []
        case (.getQueueNum, _):
            return .reply(.u64(UInt64(controller.maxQueues)))
        case (.getMaxMemSlots, _):
            return .reply(.u64(UInt64(Self.maxMemorySlots)))

        case (.setMemTable, .memoryTable(let regions)):
            let running = vrings.indices.filter { vrings[$0].server != nil }
            guard stopped(running) else { return .setAside(restart: running) }
            let regionFDs = fds
            fds = []  // the mapper owns them now, mapped or not
            try setMemoryTable(regions, fds: regionFDs, restart: restart)

        case (.addMemReg, .singleRegion(let region)):
            try requireMemorySlots(request)
            try check.hasDescriptor(request, fdCount: fds.count)
            try addMemoryRegion(region, fd: fds.removeFirst())  // the mapper owns it now, mapped or not
        case (.remMemReg, .singleRegion(let region)):
            // Any fd (QEMU before 7.1 sent the region's) is closed with the others.
            try requireMemorySlots(request)
            try checkRemovable(region)
            let running = vrings.indices.filter { vrings[$0].server != nil }
            guard stopped(running) else { return .setAside(restart: running) }
            try removeMemoryRegion(region, restart: restart)

        case (.setVringNum, .vringState(let index, let num)):
            let i = try check.setVringNum(index: index, num: num, packed: features.contains(.ringPacked))
            vrings[i].size = UInt16(num)
        case (.setVringBase, .vringState(let index, let num)):
            let i = try check.setVringBase(index: index)
            vrings[i].base = num
        case (.setVringAddr, .vringAddress(let address)):
            let (i, running) = try check.setVringAddr(address)
            vrings[i].address = address
            if running { applyDirtyLog() }
        case (.setVringKick, .u64(let value)):
            let i = try check.setVringKick(VringFile(value), fdCount: fds.count)
            try Self.acceptEventFD(fds[0], for: request)
            guard stopped([i]) else { return .setAside(restart: []) }
            try setKick(queue: i, fd: fds.removeFirst())
        case (.setVringCall, .u64(let value)):
            let file = VringFile(value)
            let i = try check.setVringCall(file, fdCount: fds.count)
            if !file.noFD { try Self.acceptEventFD(fds[0], for: request) }
            setCall(queue: i, fd: file.noFD ? nil : fds.removeFirst())
        case (.setVringErr, .u64(let value)):
            _ = try check.queueIndex(VringFile(value).index)
            // The error eventfd is not used: closed with the others.
        case (.setVringEnable, .vringState(let index, let num)):
            let i = try check.queueIndex(index)
            if num == 0, !stopped([i]) { return .setAside(restart: []) }
            try setEnabled(queue: i, num != 0)
        case (.getVringBase, .vringState(let index, _)):
            let i = try check.queueIndex(index)
            guard stopped([i]) else { return .setAside(restart: []) }
            return .reply(.vringState(index: index, num: forgetKick(queue: i)))

        case (.getConfig, .config(let offset, let size, let flags, _)):
            try check.getConfig(offset: offset, size: size)
            let bytes = controller.config.bytes(offset: Int(offset), count: Int(size))
            return .reply(.config(offset: offset, size: size, flags: flags, payload: bytes))
        case (.setConfig, .config(let offset, let size, _, let payload)):
            succeeded = setConfig(offset: offset, size: size, payload: payload)

        case (.setLogBase, .log(let size, let offset)):
            try check.hasDescriptor(request, fdCount: fds.count)
            try setLogBase(fd: fds[0], size: size, offset: offset)  // mapped; the fd is closed with the others
            // With LOG_SHMFD QEMU waits for this reply (vhost-user spec, "SET_LOG_BASE").
            if protocolFeatures.contains(.logSHMFD) { return .reply(.u64(0)) }
        case (.setLogFD, _):
            break  // QEMU does not use it for vhost-user; the fd is closed with the others.
        case (.getInflightFD, .inflight(_, _, let numQueues, let queueSize)):
            try check.noQueueRunning(request)
            try check.inflightLayout(request, numQueues: numQueues, queueSize: queueSize)
            let (payload, fd) = try newInflightRegion(numQueues: numQueues, queueSize: queueSize)
            return .reply(payload, fd: fd)
        case (.setInflightFD, .inflight(let size, let offset, let numQueues, let queueSize)):
            try check.hasDescriptor(request, fdCount: fds.count)
            try check.noQueueRunning(request)
            try check.inflightLayout(request, numQueues: numQueues, queueSize: queueSize)
            try setInflightRegion(fd: fds[0], size: size, offset: offset, numQueues: numQueues, queueSize: queueSize)
        case (.setSlaveReqFD, _):
            try check.hasDescriptor(request, fdCount: fds.count)
            setBackendChannel(fds.removeFirst())

        default:
            return unsupported(message)
        }
        return message.needsReply && protocolFeatures.contains(.replyAck) ? .ack(succeeded) : .none
    }

    /// ADD_MEM_REG and REM_MEM_REG need CONFIGURE_MEM_SLOTS negotiated
    /// (vhost-user spec, "VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS").
    private func requireMemorySlots(_ request: VhostUserRequest) throws(SessionRefusal) {
        guard protocolFeatures.contains(.configureMemSlots) else {
            throw SessionRefusal("\(request) without CONFIGURE_MEM_SLOTS negotiated")
        }
    }

    /// A request this device does not serve: failed if the frontend asked
    /// for an ack, fatal if it waits for a reply, otherwise ignored.
    private func unsupported(_ message: VhostUserMessage) -> Outcome {
        let request = message.request
        if message.needsReply && protocolFeatures.contains(.replyAck) {
            logger.warning("unsupported request \(request): failed")
            return .ack(false)
        }
        if Self.alwaysReplied.contains(request) {
            return .disconnect(reason: "unsupported request \(request) that expects a reply")
        }
        logger.warning("unsupported request \(request) ignored")
        return .none
    }

    /// SET_FEATURES. QEMU turns LOG_ALL on and off while the queues run
    /// (vhost-user spec, "Migration"): the running queues get the log then.
    private func setFeatures(_ wanted: VirtioFeatures) {
        let wasLogging = features.contains(.logAll)
        features = wanted
        if wanted.contains(.logAll) != wasLogging {
            logger.notice("dirty logging \(wanted.contains(.logAll) ? "on" : "off")")
            applyDirtyLog()
        }
    }
}
