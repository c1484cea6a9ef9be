import Glibc
internal import CShims

/// fallocate(2) modes for virtio-blk DISCARD and WRITE_ZEROES (virtio 1.2 §5.2.6).
///
/// Both keep the file size. Punching a hole reads back zeroes on files and
/// on block devices that zero discarded blocks. tmpfs does not support
/// ZERO_RANGE: on -EOPNOTSUPP fall back to `punchHole` (`fallback(after:result:)`).
public enum FallocateMode {
    /// FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE.
    public static var punchHole: Int32 { vb_falloc_punch_hole() }
    /// FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE.
    public static var zeroRange: Int32 { vb_falloc_zero_range() }

    /// VIRTIO_BLK_T_DISCARD: deallocate.
    public static var discard: Int32 { punchHole }

    /// VIRTIO_BLK_T_WRITE_ZEROES: with the request's UNMAP flag the range may be
    /// deallocated (punch hole); without it, zero it in place (zero range).
    public static func writeZeroes(unmap: Bool) -> Int32 { unmap ? punchHole : zeroRange }

    /// The mode to retry with after `mode` completed with `result`, or nil:
    /// ZERO_RANGE refused with -EOPNOTSUPP (tmpfs) or -EINVAL → PUNCH_HOLE.
    public static func fallback(after mode: Int32, result: Int32) -> Int32? {
        guard mode == zeroRange, result == -EOPNOTSUPP || result == -EINVAL else { return nil }
        return punchHole
    }
}
