/// A place in a packed ring: a slot index below the queue size and the wrap
/// counter of the lap it is in (virtio 1.2 §2.8.1). Both counters start at 1.
public struct PackedRingPosition: Sendable, Equatable, CustomStringConvertible {
    /// Slot index, `0..<size`.
    public var index: UInt16
    /// The lap's wrap counter; flips each time the index passes the ring's end.
    public var wrap: Bool

    public init(index: UInt16, wrap: Bool) {
        self.index = index
        self.wrap = wrap
    }

    /// Slot 0 with wrap counter 1: where driver and device start (§2.8.1).
    public static let start = PackedRingPosition(index: 0, wrap: true)

    /// The 16-bit form used by off_wrap (§2.8.14) and by each half of the vhost-user
    /// ring base of a packed ring: bits 0-14 the index, bit 15 the wrap counter.
    public var encoded: UInt16 { PackedEventSuppression.offWrap(index: index, wrap: wrap) }

    /// Decodes `encoded`; the index is not checked against a queue size here.
    public init(encoded: UInt16) {
        index = encoded & ~PackedEventSuppression.wrapBit
        wrap = encoded & PackedEventSuppression.wrapBit != 0
    }

    /// Moves `count` slots forward in a ring of `size` slots (`size > 0`),
    /// flipping the wrap counter once per end of ring passed.
    @inline(__always)
    mutating func advance(by count: UInt16, size: UInt16) {
        let ring = Int(size)
        guard ring > 0 else { return }
        let total = Int(index) + Int(count)  // < 2^17: cannot overflow
        index = UInt16(truncatingIfNeeded: total % ring)
        if (total / ring) & 1 != 0 { wrap.toggle() }
    }

    /// Moves one slot (or `count`) forward: `advance` for a driver (the
    /// in-repo frontend, tests).
    public mutating func step(by count: UInt16 = 1, size: UInt16) {
        advance(by: count, size: size)
    }

    public var description: String { "\(index)/\(wrap ? 1 : 0)" }
}

/// The `num` of SET_VRING_BASE / GET_VRING_BASE for a packed ring: bits 0-15
/// the avail position, bits 16-31 the used position, each in the 16-bit form
/// of `PackedRingPosition.encoded` (vhost-user spec, "Vring descriptor indices
/// for packed virtqueues"; QEMU's `virtio_queue_packed_set_last_avail_idx`).
/// Indices are checked against the queue size by `PackedQueue.init`.
public enum PackedRingBase {
    public static func encode(avail: PackedRingPosition, used: PackedRingPosition) -> UInt32 {
        UInt32(avail.encoded) | UInt32(used.encoded) << 16
    }

    public static func decode(_ num: UInt32) -> (avail: PackedRingPosition, used: PackedRingPosition) {
        (PackedRingPosition(encoded: UInt16(truncatingIfNeeded: num)),
         PackedRingPosition(encoded: UInt16(truncatingIfNeeded: num >> 16)))
    }
}
