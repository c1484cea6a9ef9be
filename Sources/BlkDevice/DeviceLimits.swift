import Virtio

/// The request limits every controller advertises in its config space
/// (virtio 1.2 §5.2.4) and its queues enforce (`BlkExecutor`).
package enum DeviceLimits {
    /// Largest data segment (size_max). SeaBIOS 1.16, QEMU 7.2's BIOS,
    /// computes its largest request as size_max * seg_max / 512 in 16 bits:
    /// a product of 32 MiB or more wraps to zero-length reads that it
    /// retries forever, so keep 64 KiB * 256 = 16 MiB.
    package static let sizeMax: UInt32 = 64 << 10
    /// Most data segments per request (seg_max): what a request slot's
    /// iovecs hold, less the header, the status byte and splits across regions.
    package static let segMax = UInt32(RequestSlots.iovecsPerSlot - 4)
    /// Sectors per DISCARD / WRITE_ZEROES segment (2 GiB).
    package static let maxDiscardSectors: UInt32 = 1 << 22
    package static let maxWriteZeroesSectors: UInt32 = 1 << 22

    package static let blk = BlkLimits(
        maxTransferBytes: UInt64(sizeMax) * UInt64(segMax),
        maxDiscardSectors: maxDiscardSectors, maxWriteZeroesSectors: maxWriteZeroesSectors)
}
