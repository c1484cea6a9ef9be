import Glibc
import Posix

/// What a backing can do for virtio-blk DISCARD and WRITE_ZEROES (virtio 1.2
/// §5.2.3 VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_WRITE_ZEROES; §5.2.4 limits), as
/// the backends perform them: fallocate(2) PUNCH_HOLE for a discard and
/// ZERO_RANGE (falling back to PUNCH_HOLE) for write-zeroes.
public struct DiscardSupport: Sendable, Equatable {
    /// Largest discard one request may ask for, in bytes; 0: no discard.
    public var maxDiscardBytes: UInt64
    /// The discard granularity in bytes (0: any block).
    public var discardGranularity: UInt32
    /// Whether write-zeroes works (with or without unmap).
    public var writeZeroes: Bool

    public init(maxDiscardBytes: UInt64, discardGranularity: UInt32 = 0, writeZeroes: Bool) {
        self.maxDiscardBytes = maxDiscardBytes
        self.discardGranularity = discardGranularity
        self.writeZeroes = writeZeroes
    }

    /// RAM and null bdevs, and backings that could not be probed: everything.
    public static let full = DiscardSupport(maxDiscardBytes: .max, writeZeroes: true)

    public var discard: Bool { maxDiscardBytes > 0 }

    /// A regular file: punches and zeroes a range past its end (KEEP_SIZE, so
    /// nothing changes) to learn what its filesystem supports. Only
    /// EOPNOTSUPP says no: a descriptor opened read-only (EBADF) cannot
    /// tell, and keeps everything offered, as before.
    static func probe(file fd: FileDescriptor, sizeBytes: UInt64, blockSize: UInt32) -> DiscardSupport {
        let block = UInt64(blockSize)
        let (past, overflow) = sizeBytes.addingReportingOverflow(block)
        guard !overflow else { return .full }
        func supported(_ mode: Int32) -> Bool {
            do throws(Errno) {
                try fd.allocate(mode: mode, offset: past, length: block)
                return true
            } catch {
                return error.rawValue != EOPNOTSUPP
            }
        }
        let punch = supported(FallocateMode.punchHole)
        let zero = supported(FallocateMode.zeroRange)
        return DiscardSupport(maxDiscardBytes: punch ? .max : 0, writeZeroes: zero || punch)
    }

    /// A block device: its queue limits in sysfs (Linux
    /// Documentation/ABI/stable/sysfs-block, `discard_max_bytes`,
    /// `discard_granularity`, `write_zeroes_max_bytes`). A discard is a
    /// PUNCH_HOLE, which the kernel performs as a write-zeroes with unmap
    /// and no fallback (block/fops.c, `blkdev_fallocate`): it needs both
    /// limits. ZERO_RANGE falls back to writing zeroes, so write-zeroes always works.
    static func probe(blockDevice rdev: dev_t) -> DiscardSupport {
        let major = ((UInt64(rdev) >> 8) & 0xfff) | ((UInt64(rdev) >> 32) & ~0xfff)
        let minor = (UInt64(rdev) & 0xff) | ((UInt64(rdev) >> 12) & ~0xff)
        let base = "/sys/dev/block/\(major):\(minor)"
        // A partition has no queue directory of its own: its disk's is one up.
        func limit(_ name: String) -> UInt64? {
            readNumber(base + "/queue/" + name) ?? readNumber(base + "/../queue/" + name)
        }
        guard let discardMax = limit("discard_max_bytes"), let zeroesMax = limit("write_zeroes_max_bytes") else { return .full }
        let granularity = UInt32(clamping: limit("discard_granularity") ?? 0)
        return DiscardSupport(
            maxDiscardBytes: zeroesMax > 0 ? discardMax : 0, discardGranularity: granularity, writeZeroes: true)
    }

    /// A small decimal file (sysfs), or nil.
    private static func readNumber(_ path: String) -> UInt64? {
        guard let fd = try? FileDescriptor.open(path, flags: O_RDONLY | O_CLOEXEC) else { return nil }
        defer { fd.close() }
        var bytes = [UInt8](repeating: 0, count: 32)
        let count = bytes.withUnsafeMutableBytes { (try? fd.read(into: $0)) ?? 0 }
        let text = String(decoding: bytes.prefix(max(0, count)), as: UTF8.self)
        return UInt64(text.filter { $0.isNumber })
    }
}
