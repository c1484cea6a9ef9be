import VhostUser
import Virtio

/// Why the session refuses a frontend's message and disconnects it; the
/// reason is logged after "disconnecting frontend: ".
struct SessionRefusal: Error, Equatable, CustomStringConvertible {
    let reason: String
    init(_ reason: String) { self.reason = reason }
    var description: String { reason }
}

/// The checks a front-end message passes before it changes anything: pure
/// functions of the message and of what the session has set up, each
/// failure a `SessionRefusal`. No sockets, no descriptors (whether an fd
/// is an eventfd is the session's check: it needs a syscall).
///
/// The limits are the vhost-user spec's ("Front-end message types") and
/// virtio 1.2's (§2.7 "Split Virtqueues": a queue size is a power of two up
/// to 32768).
struct SessionMessageValidator {
    /// What the checks need of one queue.
    struct Queue: Equatable {
        /// A server runs the queue: its size, base and ring addresses are fixed.
        var running = false
        /// The rings as SET_VRING_ADDR last set them.
        var address: VringAddress?
    }

    /// The controller's queues (GET_QUEUE_NUM).
    var queues: [Queue]
    /// The features GET_FEATURES offered.
    var offeredFeatures: VirtioFeatures

    /// Largest queue size (virtio 1.2 §2.7).
    static let maxQueueSize: UInt32 = 32768

    /// `index` as a queue of this controller.
    func queueIndex(_ index: UInt32) throws(SessionRefusal) -> Int {
        guard index < UInt32(queues.count) else {
            throw SessionRefusal("queue index \(index) beyond the controller's \(queues.count) queues")
        }
        return Int(index)
    }

    /// SET_FEATURES: only features offered may be accepted (virtio 1.2 §2.2.1).
    func setFeatures(_ value: UInt64) throws(SessionRefusal) -> VirtioFeatures {
        let wanted = VirtioFeatures(rawValue: value)
        guard offeredFeatures.isSuperset(of: wanted) else {
            let extra = VirtioFeatures(rawValue: value & ~offeredFeatures.rawValue)
            throw SessionRefusal("SET_FEATURES asks for features not offered: \(extra.names)")
        }
        return wanted
    }

    /// SET_VRING_NUM: a power of two up to 32768 on a split ring (virtio
    /// 1.2 §2.7), any size up to 32768 on a packed one (§2.8: `packed`,
    /// VIRTIO_F_RING_PACKED negotiated), on a stopped queue.
    func setVringNum(index: UInt32, num: UInt32, packed: Bool = false) throws(SessionRefusal) -> Int {
        let i = try queueIndex(index)
        if packed {
            guard num > 0, num <= Self.maxQueueSize else {
                throw SessionRefusal("SET_VRING_NUM \(num) for packed queue \(index) is not in 1...32768")
            }
        } else {
            guard num > 0, num <= Self.maxQueueSize, num & (num - 1) == 0 else {
                throw SessionRefusal("SET_VRING_NUM \(num) for queue \(index) is not a power of two up to 32768")
            }
        }
        guard !queues[i].running else { throw SessionRefusal("SET_VRING_NUM on running queue \(index)") }
        return i
    }

    /// SET_VRING_BASE: on a stopped queue.
    func setVringBase(index: UInt32) throws(SessionRefusal) -> Int {
        let i = try queueIndex(index)
        guard !queues[i].running else { throw SessionRefusal("SET_VRING_BASE on running queue \(index)") }
        return i
    }

    /// SET_VRING_ADDR: any rings on a stopped queue; on a running one only
    /// the log flag and log address may change (QEMU sends it when
    /// migration starts: vhost-user spec, "Migration"). `running` says
    /// which, so the session hands the queue its new log settings.
    func setVringAddr(_ address: VringAddress) throws(SessionRefusal) -> (queue: Int, running: Bool) {
        let i = try queueIndex(address.index)
        guard queues[i].running else { return (i, false) }
        guard let current = queues[i].address, current.desc == address.desc, current.avail == address.avail,
              current.used == address.used else {
            throw SessionRefusal("SET_VRING_ADDR moves the rings of running queue \(address.index)")
        }
        return (i, true)
    }

    /// SET_VRING_KICK: an eventfd is required; polling (the NOFD flag) is
    /// not supported.
    func setVringKick(_ file: VringFile, fdCount: Int) throws(SessionRefusal) -> Int {
        let i = try queueIndex(file.index)
        if file.noFD { throw SessionRefusal("polling mode (NOFD kick) is not supported") }
        guard fdCount > 0 else { throw SessionRefusal("SET_VRING_KICK without a descriptor") }
        return i
    }

    /// SET_VRING_CALL: an eventfd, or the NOFD flag (the guest is never
    /// signalled).
    func setVringCall(_ file: VringFile, fdCount: Int) throws(SessionRefusal) -> Int {
        let i = try queueIndex(file.index)
        guard file.noFD || fdCount > 0 else { throw SessionRefusal("SET_VRING_CALL without a descriptor") }
        return i
    }

    /// GET_CONFIG: within the 256-byte config space the spec allows.
    func getConfig(offset: UInt32, size: UInt32) throws(SessionRefusal) {
        guard size <= UInt32(VhostUserPayload.maxConfigSize), offset <= 256 else {
            throw SessionRefusal("GET_CONFIG beyond the config space")
        }
    }

    /// A message whose descriptor carries its meaning (SET_LOG_BASE,
    /// SET_INFLIGHT_FD, SET_SLAVE_REQ_FD) came with one.
    func hasDescriptor(_ request: VhostUserRequest, fdCount: Int) throws(SessionRefusal) {
        guard fdCount > 0 else { throw SessionRefusal("\(request) without a descriptor") }
    }

    /// GET/SET_INFLIGHT_FD: a region for at most the controller's queues,
    /// each a ring size virtio allows (vhost-user spec, "Inflight I/O
    /// tracking"), so its size follows from what GET_QUEUE_NUM answered,
    /// never from what the frontend claims.
    func inflightLayout(_ request: VhostUserRequest, numQueues: UInt16, queueSize: UInt16) throws(SessionRefusal) {
        guard numQueues >= 1, Int(numQueues) <= queues.count else {
            throw SessionRefusal("\(request) for \(numQueues) queues; the controller has \(queues.count)")
        }
        guard queueSize >= 1, UInt32(queueSize) <= Self.maxQueueSize, queueSize & (queueSize &- 1) == 0 else {
            throw SessionRefusal("\(request) for queues of \(queueSize) entries, not a power of two up to 32768")
        }
    }

    /// GET/SET_INFLIGHT_FD: only while every queue is stopped (the region
    /// describes the rings as a queue starts; vhost-user spec, "Inflight
    /// I/O tracking").
    func noQueueRunning(_ request: VhostUserRequest) throws(SessionRefusal) {
        guard !queues.contains(where: \.running) else { throw SessionRefusal("\(request) while queues run") }
    }
}
