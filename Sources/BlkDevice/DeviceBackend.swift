import BlockIO
import Posix
import Reactor
import Virtio

/// What a virtqueue needs to do I/O on a bdev, captured when the queue starts
/// (and again at each resize, attach or detach) so the data path never
/// touches the control plane's objects.
///
/// `@unchecked Sendable`: built on the control loop, then owned by the
/// queue's reactor; the backings are immutable handles (sizes atomic, the
/// QoS limiter under its mutex).
package struct DeviceBackend: @unchecked Sendable {  // control loop, then the queue's reactor
    /// Where the data lives. Each case is served by one file of this module
    /// (FileBackend, MemoryBackend, NullBackend, RBDBackend), and `VirtqueueServer.perform`
    /// is the one switch over them: a new backend is a new case, a new file
    /// and a line there.
    package enum Storage {
        /// A file or block device.
        case file(fd: FileDescriptor, engine: FileEngine, isBlockDevice: Bool)
        /// RAM: served synchronously on the reactor.
        case memory(MemoryBacking)
        /// Reads and writes complete at once and touch nothing.
        case null
        /// A Ceph RBD image: librbd's asynchronous API, completions through
        /// the queue's `RBDCompletionQueue`.
        case rbd(RBDImage)
        /// No bdev attached: every operation fails (the guest sees IOERR).
        case none
    }

    /// How a file-backed queue does its I/O.
    package enum FileEngine {
        /// Asynchronously, through one of the reactor's engines.
        case async(EngineChoice)
        /// As blocking syscalls on the reactor (`IOOperation.performBlocking`):
        /// files on tmpfs, where each is a page-cache copy that io_uring would
        /// hand to a worker thread (`FileBacking.isOnMemoryFilesystem`).
        case inline
    }

    package var storage: Storage
    /// Capacity in 512-byte sectors (virtio-blk's unit, virtio 1.2 §5.2.4).
    package var capacitySectors: UInt64
    package var readOnly: Bool
    package var blockSize: UInt32
    /// GET_ID answer: at most 20 bytes (virtio 1.2 §5.2.6).
    package var serial: [UInt8]
    /// Write-through (CONFIG_WCE off): a write completes once fdatasync made it durable.
    package var writeThrough = false
    /// The bdev's rate limiter on this reactor, when it has limits (QoSLimiter.swift).
    package var qos: QoSLimiter?
    /// The bdev's error policy and failure count (IOErrorPolicy.swift); nil without a bdev.
    package var errors: BdevErrorState?

    package init(storage: Storage, capacitySectors: UInt64, readOnly: Bool, blockSize: UInt32, serial: [UInt8]) {
        self.storage = storage
        self.capacitySectors = capacitySectors
        self.readOnly = readOnly
        self.blockSize = blockSize
        self.serial = serial
    }

    /// The disk as the virtio-blk executor sees it. Only files have a cache
    /// to write through, and only regular files zero by punching holes.
    package var disk: BlkDisk {
        var syncs = false, punches = false
        if case .file(_, _, let isBlockDevice) = storage {
            syncs = writeThrough
            punches = !isBlockDevice
        }
        return BlkDisk(capacitySectors: capacitySectors, readOnly: readOnly, syncsWrites: syncs,
                       punchesForZeroes: punches, serial: BlkSerial(serial), limits: DeviceLimits.blk)
    }

    /// The engine this backend's operations go through, if any (flow control).
    package var asyncEngine: EngineChoice? {
        if case .file(_, .async(let engine), _) = storage { return engine }
        return nil
    }
}
