import BlkDevice
import BlockIO
import Glibc
import Logging
import Posix
import Reactor
import Virtio

/// A vhost-blk controller (SPDK's `spdk_vhost_dev`): the device that RPC
/// manages. It owns its listening socket and outlives frontend connections;
/// at most one session (frontend connection) is active at a time.
///
/// Thread confinement: the control loop's thread; debug builds check the
/// mutators (`EventLoop.preconditionInLoop`).
final class Controller {
    let name: String
    let socketPath: String
    let cpumask: CPUSet
    let readOnly: Bool
    /// The home reactor: chosen least loaded within `cpumask`; it serves
    /// queue 0 and the QoS timer.
    let reactor: Reactor
    /// The reactors of `cpumask`, starting at the home one: queue `i` runs on
    /// `queueReactors[i % count]`, so a multi-queue guest's queues spread
    /// over the controller's CPUs (a one-CPU cpumask keeps them together).
    let queueReactors: [Reactor]
    /// Most queues a frontend may use (GET_QUEUE_NUM).
    let maxQueues: Int
    /// What a session of this controller may make the daemon hold.
    let limits: SessionLimits
    /// GET_ID answer (virtio 1.2 §5.2.6): the controller name, cut to 20 bytes.
    let serial: [UInt8]
    /// The backing device; nil while empty or detached (capacity 0, I/O fails).
    var bdev: Bdev? {
        didSet {
            loop.preconditionInLoop()
            if let bdev { lastBlockSize = bdev.blockSize }
        }
    }
    /// The block size of the last bdev attached (512 before any): what a
    /// connected guest keeps using after a detach.
    private var lastBlockSize: UInt32 = 512
    var session: VhostUserSession? {
        didSet { loop.preconditionInLoop() }
    }
    /// The guest turned the write cache off (CONFIG_WCE `writeback` = 0):
    /// every write is made durable before it completes.
    /// SPDK's `packed_ring`: VIRTIO_F_RING_PACKED (bit 34) is offered, and
    /// the driver chooses packed or split queues (virtio 1.2 §2.8, §6).
    var packedRing = false

    var writeThrough = false {
        didSet { loop.preconditionInLoop() }
    }
    /// Called on the control loop when a frontend changed state the saved
    /// config keeps (the write cache): the target rewrites `--persist` files.
    var guestChangedSavedState: (() -> Void)?
    let listener: FileDescriptor
    var listenToken: EventLoop.Token?
    /// The control loop: the only thread that touches the controller.
    let loop: EventLoop
    let logger: Logger
    /// `socket_mode`/`socket_group` as requested, kept for `framework_get_config`.
    var socketPermissions = SocketPermissions()
    /// Enforces the bdev's QoS limits on `reactor` (QoSMethods.swift); nil until it has any.
    var qosLimiter: QoSLimiter?
    /// Interrupt coalescing for every queue (CoalescingMethods.swift); off by default, as in SPDK.
    var coalescing = CoalescingSettings.off {
        didSet { loop.preconditionInLoop() }
    }
    /// Frontend connections accepted so far: the next session's SPDK `id`.
    var sessionsAccepted: UInt32 = 0

    init(name: String, socketPath: String, cpumask: CPUSet, readOnly: Bool, reactor: Reactor, queueReactors: [Reactor],
         maxQueues: Int, limits: SessionLimits = SessionLimits(), bdev: Bdev?, listener: FileDescriptor, loop: EventLoop,
         logger: Logger) {
        self.name = name
        self.socketPath = socketPath
        self.cpumask = cpumask
        self.readOnly = readOnly
        self.reactor = reactor
        self.queueReactors = queueReactors.isEmpty ? [reactor] : queueReactors
        self.maxQueues = maxQueues
        self.limits = limits
        self.serial = Array(name.utf8.prefix(BlkGetID.serialLength))
        self.bdev = bdev
        lastBlockSize = bdev?.blockSize ?? 512  // didSet does not run in init
        self.listener = listener
        self.loop = loop
        var logger = logger
        logger[metadataKey: "controller.name"] = "\(name)"
        self.logger = logger
    }

    /// The reactor serving queue `index`.
    func reactor(forQueue index: Int) -> Reactor {
        queueReactors[index % queueReactors.count]
    }

    /// Block size the guest sees; while detached, the last bdev's (a guest
    /// reads it once, at probe: a bdev attached later must match it).
    var blockSize: UInt32 { bdev?.blockSize ?? lastBlockSize }

    /// What the queues use for I/O.
    func deviceBackend() -> DeviceBackend {
        loop.preconditionInLoop()
        guard let bdev else {
            return DeviceBackend(storage: .none, capacitySectors: 0, readOnly: readOnly, blockSize: 512, serial: serial)
        }
        var backend = bdev.deviceBackend(readOnly: readOnly, serial: serial)
        backend.writeThrough = writeThrough
        backend.qos = qosLimiter(for: bdev)
        return backend
    }

    /// Virtio features offered to the frontend (virtio 1.2 §5.2.3 and §6;
    /// docs/PROTOCOL-NOTES.md, "What a vhost-user-blk back end offers").
    /// DISCARD and WRITE_ZEROES only when the bdev can do them (`Bdev.discardSupport`;
    /// an empty controller offers both, for the bdev a later attach brings).
    var offeredFeatures: VirtioFeatures {
        var f: VirtioFeatures = [
            .version1, .indirectDesc, .eventIdx, .sizeMax, .segMax, .blockSize, .topology,
            .flush, .configWCE, .multiQueue, .protocolFeatures,
            .logAll,  // live migration: dirty logging (vhost-user spec, "Migration")
        ]
        let support = bdev?.discardSupport ?? .full
        if support.discard { f.insert(.discard) }
        if support.writeZeroes { f.insert(.writeZeroes) }
        if readOnly || (bdev?.readOnly ?? false) { f.insert(.readOnly) }
        if packedRing { f.insert(.ringPacked) }
        return f
    }

    /// The virtio-blk configuration space (virtio 1.2 §5.2.4).
    var config: BlkConfig {
        var c = BlkConfig()
        let blockSize = self.blockSize
        c.capacity = (bdev?.sizeBytes ?? 0) / 512
        c.sizeMax = DeviceLimits.sizeMax
        c.segMax = DeviceLimits.segMax
        c.blkSize = blockSize
        c.physicalBlockExp = 0
        c.minIOSize = 1
        c.optIOSize = 0
        c.numQueues = UInt16(clamping: maxQueues)
        c.writeback = writeThrough ? 0 : 1
        // Discard and write-zeroes limits: what one request may ask of the
        // bdev (0 where the feature is not offered, virtio 1.2 §5.2.4).
        let support = bdev?.discardSupport ?? .full
        if support.discard {
            let deviceMax = UInt32(clamping: support.maxDiscardBytes / 512)
            c.maxDiscardSectors = max(1, min(DeviceLimits.maxDiscardSectors, deviceMax))
            c.maxDiscardSeg = 1
            c.discardSectorAlignment = max(max(1, blockSize / 512), support.discardGranularity / 512)
        }
        if support.writeZeroes {
            c.maxWriteZeroesSectors = DeviceLimits.maxWriteZeroesSectors
            c.maxWriteZeroesSeg = 1
            c.writeZeroesMayUnmap = support.discard ? 1 : 0
        }
        return c
    }
}
