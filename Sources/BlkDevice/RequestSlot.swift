import Glibc
import Virtio

/// One request in flight on a virtqueue: where its status byte is, what to
/// report as used length, and how to finish it when the engine answers.
package struct RequestSlot {
    package enum Kind: UInt8 {
        case read, write, flush, discard, writeZeroes, writeZeroesPunch
        /// The fdatasync that follows a write in write-through mode.
        case writeSync
    }
    package var head: UInt16 = 0
    package var kind: Kind = .read
    package var status: UnsafeMutablePointer<UInt8>?
    /// Bytes the device moves for reads/writes; checked against the engine's result.
    package var expectedBytes: UInt64 = 0
    /// Byte range on the disk: checked at completion against a capacity that
    /// shrank meanwhile, and reused by the write-zeroes fallback.
    package var offset: UInt64 = 0
    package var length: UInt64 = 0
    /// `VirtqueueServer.backendGeneration` when the request was dispatched.
    package var generation: UInt32 = 0
    /// The chain's device-writable iovecs (dirty logging): the slot's iovecs
    /// `writableFirst ..< writableFirst + writableCount`.
    package var writableFirst: UInt16 = 0
    package var writableCount: UInt16 = 0
}
