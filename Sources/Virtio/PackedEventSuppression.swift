/// The packed ring's event suppression structure (virtio 1.2 §2.8.10, §2.8.14):
/// `le16 desc` (off_wrap: bits 0-14 a ring offset, bit 15 a wrap counter),
/// `le16 flags`. The driver area holds the driver's wishes about used-buffer
/// notifications (interrupts); the device area the device's about available-buffer
/// notifications (kicks).
public enum PackedEventSuppression {
    /// Bytes of one area; each is 4-byte aligned.
    public static let byteSize = 4
    /// Byte offset of `desc` (off_wrap).
    public static let offWrapOffset = 0
    /// Byte offset of `flags`.
    public static let flagsOffset = 2

    /// RING_EVENT_FLAGS_ENABLE: notify on every event.
    public static let flagEnable: UInt16 = 0
    /// RING_EVENT_FLAGS_DISABLE: do not notify.
    public static let flagDisable: UInt16 = 1
    /// RING_EVENT_FLAGS_DESC: notify when the slot named by off_wrap is passed
    /// (only with VIRTIO_F_RING_EVENT_IDX).
    public static let flagDesc: UInt16 = 2

    /// The flags field's defined bits; the other 14 are reserved.
    public static let flagsMask: UInt16 = 3

    /// Bit 15 of off_wrap: the wrap counter the offset belongs to.
    public static let wrapBit: UInt16 = 1 << 15

    /// off_wrap for ring offset `index` (below 2^15) in the lap of wrap counter `wrap`.
    @inline(__always)
    public static func offWrap(index: UInt16, wrap: Bool) -> UInt16 {
        (index & ~wrapBit) | (wrap ? wrapBit : 0)
    }

    /// The packed form of `vring_need_event`: whether the used elements just
    /// published, the `published` ring slots ending before `new` (now in the lap
    /// of wrap counter `wrap`), cover the slot that `offWrap` names.
    ///
    /// An offset whose wrap bit differs from `wrap` belongs to the previous lap
    /// and is moved back by `size`, so old, new and the event compare in one
    /// 16-bit index space (as Linux's `virtqueue_kick_prepare_packed` and QEMU's
    /// `vring_packed_need_event` do). `published >= size` always notifies.
    /// Any `offWrap` is accepted: it comes from the guest.
    @inline(__always)
    public static func needsEvent(offWrap: UInt16, size: UInt16, new: UInt16, wrap: Bool, published: Int) -> Bool {
        guard published > 0 else { return false }
        guard published < Int(size) else { return true }
        var event = offWrap & ~wrapBit
        if (offWrap & wrapBit != 0) != wrap { event = event &- size }
        let old = new &- UInt16(truncatingIfNeeded: published)
        return SplitQueue.needsEvent(eventIdx: event, new: new, old: old)
    }
}
