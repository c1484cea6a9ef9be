import BlkDevice
import BlockIO
import CShims
import Glibc
import JSONRPC
import Reactor

/// A backing device (SPDK's bdev): a file or block device, RAM, or null.
/// Owned by the control plane; queues see it only through `DeviceBackend`.
final class Bdev {
    enum Driver: String {
        case uring, aio, malloc, null, rbd

        /// SPDK's `product_name` for `bdev_get_bdevs`.
        var productName: String {
            switch self {
            case .uring: return "URING bdev"
            case .aio: return "AIO disk"
            case .malloc: return "Malloc disk"
            case .null: return "Null disk"
            case .rbd: return "Ceph Rbd Disk"
            }
        }
    }

    enum Backing {
        case file(FileBacking)
        case memory(MemoryBacking)
        case null
        case rbd(RBDVolume)
    }

    let name: String
    let driver: Driver
    let uuid: String
    let blockSize: UInt32
    /// Changed by rescan and resize (`BdevResizeMethods.swift`).
    var numBlocks: UInt64
    /// A resize or rescan under way ("being shrunk"): a shrink waits for
    /// requests in flight at the old size, and a file's new size is set or
    /// read off the control loop. Other resizes, rescans and deleting the
    /// bdev are refused until it has answered.
    var operation: String?
    let backing: Backing
    let readOnly: Bool
    /// The controller that uses this bdev, if any (SPDK's claim): the object,
    /// not its name, which a new controller may take while a force-deleted
    /// one still drains.
    weak var claimedBy: Controller?
    /// I/O counted by queues that have stopped since (StatsCollection.swift).
    var retiredStats = IOStats()
    /// `bdev_set_qos_limit`'s limits (QoSMethods.swift).
    var qosLimits = QoSLimits()
    /// `bdev_set_error_policy`'s policy, the failure count and who is paused,
    /// shared with the queues (ErrorPolicyMethods.swift).
    let errorState: BdevErrorState
    /// Queues do this file's I/O as syscalls on their reactor instead of
    /// through an engine (`DeviceBackend.FileEngine.inline`): a `uring`
    /// bdev on tmpfs, unless `--tmpfs-io engine`.
    var inlineIO = false

    init(name: String, driver: Driver, uuid: String?, blockSize: UInt32, numBlocks: UInt64, backing: Backing, readOnly: Bool = false) {
        self.name = name
        self.driver = driver
        self.uuid = uuid ?? Bdev.randomUUID()
        self.blockSize = blockSize
        self.numBlocks = numBlocks
        self.backing = backing
        self.readOnly = readOnly
        errorState = BdevErrorState(bdevName: name)
    }

    var sizeBytes: UInt64 { numBlocks &* UInt64(blockSize) }

    /// What DISCARD and WRITE_ZEROES can do on this bdev: a file's or block
    /// device's as probed at open; RAM and null bdevs do both.
    var discardSupport: DiscardSupport {
        if case .file(let file) = backing { return file.discardSupport }
        return .full
    }

    /// The snapshot a virtqueue uses for I/O.
    func deviceBackend(readOnly controllerReadOnly: Bool, serial: [UInt8]) -> DeviceBackend {
        let storage: DeviceBackend.Storage
        switch backing {
        case .file(let file):
            let engine: DeviceBackend.FileEngine = inlineIO ? .inline : .async(driver == .aio ? .threadPool : .primary)
            storage = .file(fd: file.fd, engine: engine, isBlockDevice: file.isBlockDevice)
        case .memory(let memory):
            storage = .memory(memory)
        case .null:
            storage = .null
        case .rbd(let volume):
            storage = .rbd(volume.image)
        }
        var backend = DeviceBackend(
            storage: storage, capacitySectors: sizeBytes / 512, readOnly: readOnly || controllerReadOnly,
            blockSize: blockSize, serial: serial)
        backend.errors = errorState
        return backend
    }

    /// Releases the file descriptor or memory.
    func close() {
        switch backing {
        case .file(let file): file.close()
        case .memory(let memory): memory.release()
        case .null: break
        case .rbd(let volume): volume.close()
        }
    }

    /// A random (version 4) UUID in its canonical text form.
    static func randomUUID() -> String {
        var bytes = [UInt8](repeating: 0, count: 16)
        let got = bytes.withUnsafeMutableBytes { getrandom($0.baseAddress, 16, 0) }
        if got != 16 {
            for i in bytes.indices { bytes[i] = UInt8.random(in: 0...255) }
        }
        bytes[6] = (bytes[6] & 0x0F) | 0x40
        bytes[8] = (bytes[8] & 0x3F) | 0x80
        let hex = bytes.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }
        return [hex[0..<4], hex[4..<6], hex[6..<8], hex[8..<10], hex[10..<16]].map { $0.joined() }.joined(separator: "-")
    }
}

extension RPCError {
    /// A bdev's file or memory could not be opened or resized: its errno and message.
    init(opening error: BdevOpenError) {
        self.init(code: -Int(error.errno), message: error.message)
    }
}
