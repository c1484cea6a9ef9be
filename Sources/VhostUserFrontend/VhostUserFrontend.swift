import Glibc
import Posix
import VhostUser
import Virtio

/// An in-repo vhost-user front end that drives a back end the way QEMU 7.2's
/// `vhost-user-blk-pci` does (docs/PROTOCOL-NOTES.md, "Message sequence"), for integration
/// tests and benchmarks.
///
/// Control messages go through `channel` from one thread; once started, each
/// `DriverQueue` may be driven from its own thread.
public final class VhostUserFrontend: @unchecked Sendable {  // control path used from one thread at a time
    /// What to negotiate and how to lay out the device.
    public struct Options: Sendable {
        /// Virtio features to accept when offered (intersected with the offer).
        public var wantedFeatures: VirtioFeatures = [
            .sizeMax, .segMax, .geometry, .readOnly, .blockSize, .flush, .topology, .configWCE,
            .multiQueue, .discard, .writeZeroes, .version1, .indirectDesc, .eventIdx,
            .notifyOnEmpty, .protocolFeatures,
        ]
        /// Protocol features to accept when offered.
        public var wantedProtocolFeatures: VhostUserProtocolFeatures = [
            .multiQueue, .replyAck, .config, .slaveReq, .inflightSHMFD, .resetDevice,
        ]
        /// Bytes asked for in GET_CONFIG (QEMU 7.2: 57 with discard and write-zeroes).
        public var configSize: UInt32 = 57
        /// Send SET_SLAVE_REQ_FD (one end of a socketpair) when SLAVE_REQ is negotiated.
        public var useBackendChannel = true
        /// Do GET_INFLIGHT_FD + SET_INFLIGHT_FD when INFLIGHT_SHMFD is negotiated.
        public var useInflight = true
        /// Deadline for every reply.
        public var timeout: Duration = .seconds(5)

        public init() {}
    }

    public let channel: VhostUserChannel
    public let memory: FrontendMemory
    public var options: Options

    public private(set) var deviceFeatures: VirtioFeatures = []
    public private(set) var ackedFeatures: VirtioFeatures = []
    public private(set) var deviceProtocolFeatures: VhostUserProtocolFeatures = []
    public private(set) var protocolFeatures: VhostUserProtocolFeatures = []
    /// GET_QUEUE_NUM answer (1 without MQ).
    public private(set) var maxQueues: UInt64 = 1
    /// GET_MAX_MEM_SLOTS answer (with CONFIGURE_MEM_SLOTS; 0 otherwise).
    public private(set) var maxMemSlots: UInt64 = 0
    /// GET_CONFIG answer (virtio-blk config space bytes).
    public private(set) var config: [UInt8] = []
    /// Our end of the back-end request channel, if one was set up.
    public private(set) var backendChannel: VhostUserChannel?
    /// The inflight region's memfd and size, if set up.
    public private(set) var inflightFD: FileDescriptor?
    public private(set) var inflightSize: UInt64 = 0
    /// Started queues, by index.
    public private(set) var queues: [DriverQueue] = []

    /// Connects to `socketPath`. Nothing is sent yet.
    public init(socketPath: String, memory: FrontendMemory, options: Options = Options()) throws(FrontendError) {
        self.channel = try VhostUserChannel(path: socketPath, timeout: options.timeout)
        self.memory = memory
        self.options = options
    }

    /// Releases queues, channels and fds (not `memory`, which the caller owns).
    public func close() {
        for q in queues { q.close() }
        queues = []
        backendChannel?.close()
        backendChannel = nil
        inflightFD?.close()
        inflightFD = nil
        channel.close()
    }

    /// Whether REPLY_ACK was negotiated.
    public var replyAck: Bool { protocolFeatures.contains(.replyAck) }

    // MARK: Connect phase

    /// GET_FEATURES, GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES,
    /// GET_QUEUE_NUM (with MQ), GET_MAX_MEM_SLOTS (with CONFIGURE_MEM_SLOTS), SET_SLAVE_REQ_FD (with SLAVE_REQ), SET_OWNER,
    /// GET_CONFIG (with CONFIG).
    public func connect() throws(FrontendError) {
        deviceFeatures = VirtioFeatures(rawValue: try channel.requestU64(.getFeatures))
        if deviceFeatures.contains(.protocolFeatures) {
            deviceProtocolFeatures = VhostUserProtocolFeatures(rawValue: try channel.requestU64(.getProtocolFeatures))
            protocolFeatures = deviceProtocolFeatures.intersection(options.wantedProtocolFeatures)
            try channel.send(VhostUserMessage(request: .setProtocolFeatures, payload: .u64(protocolFeatures.rawValue)))
        }
        if protocolFeatures.contains(.multiQueue) {
            maxQueues = try channel.requestU64(.getQueueNum)
        }
        if protocolFeatures.contains(.configureMemSlots) {
            maxMemSlots = try channel.requestU64(.getMaxMemSlots)
        }
        if protocolFeatures.contains(.slaveReq) && options.useBackendChannel {
            let ours: FileDescriptor, theirs: FileDescriptor
            do { (ours, theirs) = try FileDescriptor.socketPair() } catch { throw .system(error) }
            defer { theirs.close() }
            backendChannel = VhostUserChannel(socket: ours, timeout: options.timeout)
            try channel.send(VhostUserMessage(request: .setSlaveReqFD, fds: [theirs]), ack: replyAck)
        }
        try channel.send(VhostUserMessage(request: .setOwner))
        if protocolFeatures.contains(.config) {
            config = try getConfig(offset: 0, size: options.configSize)
        }
    }

    /// GET_CONFIG: returns exactly `size` bytes or throws.
    public func getConfig(offset: UInt32 = 0, size: UInt32) throws(FrontendError) -> [UInt8] {
        let payload = VhostUserPayload.config(
            offset: offset, size: size, flags: 0, payload: [UInt8](repeating: 0, count: Int(size)))
        try channel.send(VhostUserMessage(request: .getConfig, payload: payload))
        let reply = try channel.receiveReply(to: .getConfig, expectedSize: 12 + Int(size))
        reply.fds.closeAll()
        return Array(reply.body.dropFirst(12))
    }

    // MARK: Driver start / stop

    /// Starts `queueCount` queues of `queueSize` like QEMU when the guest
    /// driver loads: SET_FEATURES, inflight setup, SET_MEM_TABLE (acked with
    /// REPLY_ACK), then per queue SET_VRING_CALL/NUM/BASE/ADDR/KICK, then
    /// SET_VRING_ENABLE 1 for each.
    public func start(queueCount: Int = 1, queueSize: UInt16 = 128, features: VirtioFeatures? = nil) throws(FrontendError) {
        guard queueCount >= 1, UInt64(queueCount) <= maxQueues else {
            throw .invalidArgument("queue count \(queueCount) not in 1...\(maxQueues)")
        }
        for q in queues { q.close() }
        queues = []
        ackedFeatures = features ?? deviceFeatures.intersection(options.wantedFeatures)
        try setFeatures(ackedFeatures)
        if protocolFeatures.contains(.inflightSHMFD) && options.useInflight && inflightFD == nil {
            try setUpInflight(queueCount: queueCount, queueSize: queueSize)
        } else if let fd = inflightFD {
            try sendInflight(fd: fd, queueCount: queueCount, queueSize: queueSize)
        }
        try sendMemoryTable()
        let eventIdx = ackedFeatures.contains(.eventIdx), packed = ackedFeatures.contains(.ringPacked)
        for i in 0..<queueCount {
            queues.append(try DriverQueue(memory: memory, index: i, size: queueSize, eventIdx: eventIdx, packed: packed))
        }
        for q in queues { try setUp(q) }
        for q in queues { try setVringEnable(q.index, true) }
    }

    /// Resumes after a back-end restart as QEMU 7.2 does with `reconnect=N`:
    /// SET_FEATURES, SET_INFLIGHT_FD with the region kept from `previous`
    /// (no GET_INFLIGHT_FD), SET_MEM_TABLE, then the same rings (`previous`'s
    /// queues) with `bases` and SET_VRING_ENABLE 1. Call after `connect()`.
    /// `previous` keeps owning the queues and the region.
    public func resume(from previous: VhostUserFrontend, bases: [UInt16]) throws(FrontendError) {
        try resume(from: previous, rawBases: bases.map { UInt32($0) })
    }

    /// `resume` with SET_VRING_BASE's full values (a packed ring's two positions, `PackedRingBase`).
    public func resume(from previous: VhostUserFrontend, rawBases bases: [UInt32]) throws(FrontendError) {
        guard bases.count == previous.queues.count else { throw .invalidArgument("\(bases.count) bases for \(previous.queues.count) queues") }
        ackedFeatures = previous.ackedFeatures
        try setFeatures(ackedFeatures)
        if let fd = previous.inflightFD, protocolFeatures.contains(.inflightSHMFD) {
            inflightSize = previous.inflightSize
            try sendInflight(
                fd: fd, queueCount: previous.queues.count,
                queueSize: previous.queues.first?.size ?? 128)
        }
        try sendMemoryTable()
        for (q, base) in zip(previous.queues, bases) { try setUp(q, rawBase: base) }
        for q in previous.queues { try setVringEnable(q.index, true) }
    }

    /// SET_FEATURES.
    public func setFeatures(_ features: VirtioFeatures) throws(FrontendError) {
        try channel.send(VhostUserMessage(request: .setFeatures, payload: .u64(features.rawValue)))
    }

    /// The memory table as QEMU sends it at driver start: one ADD_MEM_REG per
    /// region with CONFIGURE_MEM_SLOTS negotiated, SET_MEM_TABLE otherwise.
    public func sendMemoryTable() throws(FrontendError) {
        guard protocolFeatures.contains(.configureMemSlots) else { return try setMemTable() }
        for region in memory.regions { try addMemRegion(region, fd: memory.fd) }
    }

    /// ADD_MEM_REG (vhost-user spec, "VHOST_USER_ADD_MEM_REG"): one region and
    /// its fd (not closed here), acked when REPLY_ACK is on, as QEMU sends it.
    public func addMemRegion(_ region: MemoryRegionDescriptor, fd: FileDescriptor) throws(FrontendError) {
        try channel.send(VhostUserMessage(request: .addMemReg, payload: .singleRegion(region), fds: [fd]), ack: replyAck)
    }

    /// REM_MEM_REG (vhost-user spec, "VHOST_USER_REM_MEM_REG"): the region as
    /// added, without an fd (QEMU since 7.1), acked when REPLY_ACK is on.
    public func removeMemRegion(_ region: MemoryRegionDescriptor) throws(FrontendError) {
        try channel.send(VhostUserMessage(request: .remMemReg, payload: .singleRegion(region)), ack: replyAck)
    }

    /// SET_MEM_TABLE with this memory's regions (one fd per region), acked when REPLY_ACK is on.
    public func setMemTable() throws(FrontendError) {
        let fds = [FileDescriptor](repeating: memory.fd, count: memory.regions.count)
        try channel.send(
            VhostUserMessage(request: .setMemTable, payload: .memoryTable(memory.regions), fds: fds), ack: replyAck)
    }

    /// SET_VRING_CALL, NUM, BASE (0 or `base`), ADDR, KICK for `q`.
    public func setUp(_ q: DriverQueue, base: UInt16 = 0) throws(FrontendError) {
        try setUp(q, rawBase: UInt32(base))
    }

    /// `setUp` with SET_VRING_BASE's full 32-bit value: a packed ring's two
    /// positions (`PackedRingBase`; vhost-user spec, "Vring descriptor
    /// indices for packed virtqueues"). A packed queue that starts fresh
    /// sends both positions at slot 0 with wrap counter 1.
    public func setUp(_ q: DriverQueue, rawBase: UInt32) throws(FrontendError) {
        let base = q.packed && rawBase == 0 ? PackedRingBase.encode(avail: .start, used: .start) : rawBase
        let index = UInt32(q.index)
        try channel.send(VhostUserMessage(
            request: .setVringCall, payload: .u64(UInt64(index)), fds: [q.callFD.fd]))
        try channel.send(VhostUserMessage(request: .setVringNum, payload: .vringState(index: index, num: UInt32(q.size))))
        try channel.send(VhostUserMessage(request: .setVringBase, payload: .vringState(index: index, num: base)))
        let address = VringAddress(
            index: index, desc: memory.userAddr(of: q.desc.pointer), used: memory.userAddr(of: q.used.pointer),
            avail: memory.userAddr(of: q.avail.pointer))
        try channel.send(VhostUserMessage(request: .setVringAddr, payload: .vringAddress(address)))
        try channel.send(VhostUserMessage(
            request: .setVringKick, payload: .u64(UInt64(index)), fds: [q.kickFD.fd]))
    }

    /// SET_VRING_ENABLE.
    public func setVringEnable(_ index: Int, _ enabled: Bool) throws(FrontendError) {
        try channel.send(VhostUserMessage(
            request: .setVringEnable, payload: .vringState(index: UInt32(index), num: enabled ? 1 : 0)))
    }

    /// GET_VRING_BASE: the back end stops the queue and answers its last avail index.
    public func getVringBase(_ index: Int) throws(FrontendError) -> UInt16 {
        let num = try getVringBaseRaw(index)
        guard let base = UInt16(exactly: num) else { throw .protocolViolation("GET_VRING_BASE value \(num)") }
        return base
    }

    /// GET_VRING_BASE's full 32-bit answer (a packed ring's two positions, `PackedRingBase`).
    public func getVringBaseRaw(_ index: Int) throws(FrontendError) -> UInt32 {
        try channel.send(VhostUserMessage(request: .getVringBase, payload: .vringState(index: UInt32(index), num: 0)))
        let reply = try channel.receiveReply(to: .getVringBase, expectedSize: 8)
        reply.fds.closeAll()
        let (qi, num) = reply.body.withUnsafeBytes {
            (UInt32(littleEndian: $0.loadUnaligned(as: UInt32.self)),
             UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: 4, as: UInt32.self)))
        }
        guard qi == UInt32(index) else { throw .protocolViolation("GET_VRING_BASE reply for queue \(qi), asked \(index)") }
        return num
    }

    /// Guest reset as QEMU 7.2 does it: SET_VRING_ENABLE 0 for every queue,
    /// then GET_VRING_BASE per queue. Returns the bases; keeps the queues'
    /// memory (call `close()` or `start` again later).
    @discardableResult
    public func stop() throws(FrontendError) -> [UInt16] {
        for q in queues { try setVringEnable(q.index, false) }
        var bases: [UInt16] = []
        for q in queues { bases.append(try getVringBase(q.index)) }
        return bases
    }

    // MARK: Inflight

    private func setUpInflight(queueCount: Int, queueSize: UInt16) throws(FrontendError) {
        let payload = VhostUserPayload.inflight(
            mmapSize: 0, mmapOffset: 0, numQueues: UInt16(truncatingIfNeeded: queueCount), queueSize: queueSize)
        try channel.send(VhostUserMessage(request: .getInflightFD, payload: payload))
        let reply = try channel.receiveReply(to: .getInflightFD, expectedSize: 24)
        guard reply.fds.count == 1, let fd = reply.fds.first else {
            reply.fds.closeAll()
            throw .protocolViolation("GET_INFLIGHT_FD reply carried \(reply.fds.count) fds")
        }
        inflightFD = fd
        inflightSize = reply.body.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        try sendInflight(fd: fd, queueCount: queueCount, queueSize: queueSize)
    }

    private func sendInflight(fd: FileDescriptor, queueCount: Int, queueSize: UInt16) throws(FrontendError) {
        let payload = VhostUserPayload.inflight(
            mmapSize: inflightSize, mmapOffset: 0, numQueues: UInt16(truncatingIfNeeded: queueCount), queueSize: queueSize)
        try channel.send(VhostUserMessage(request: .setInflightFD, payload: payload, fds: [fd]))
    }

    // MARK: Back-end channel

    /// Reads one back-end request (e.g. CONFIG_CHANGE_MSG = 2) from the
    /// SET_SLAVE_REQ_FD channel and, if it asks for a reply, acks it with `ack`.
    public func receiveBackendRequest(timeout: Duration = .seconds(5), ack: UInt64 = 0) throws(FrontendError) -> VhostUserHeader {
        guard let side = backendChannel else { throw .invalidArgument("no back-end channel") }
        let message = try side.receiveAny(timeout: timeout)
        message.fds.closeAll()
        if message.header.needsReply {
            try side.sendRaw(VhostUserReply.u64(message.header.request, ack))
        }
        return message.header
    }
}
