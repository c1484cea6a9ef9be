import BlockIO
import Glibc
import Virtio

/// RAM (`bdev_malloc_create`): every operation is a copy or a clear on the
/// reactor, finished before it returns.
enum MemoryBackend {
    /// Performs `operation`; returns bytes moved, 0, or -errno, as a syscall would.
    @inline(__always)
    static func perform(_ operation: BlkOperation, on backing: MemoryBacking, data: UnsafePointer<iovec>, count: Int) -> Int32 {
        switch operation.kind {
        case .read:
            return backing.read(into: data, count: count, offset: operation.offset)
        case .write:
            return backing.write(from: data, count: count, offset: operation.offset)
        case .flush, .writeSync:
            return 0  // nothing volatile to make durable
        case .discard, .writeZeroes, .punchZeroes:
            // Discarded RAM reads back as zeroes: both requests are a clear.
            return backing.discard(offset: operation.offset, length: operation.length)
        }
    }
}
