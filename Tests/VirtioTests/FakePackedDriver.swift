import Glibc
import Virtio

/// The driver's side of a packed ring in a `FakeGuest` (virtio 1.2 §2.8.21-§2.8.23):
/// the descriptor ring at `FakeGuest.descGPA`, the driver event suppression
/// area at `availGPA`, the device's at `usedGPA`.
final class FakePackedDriver {
    let guest: FakeGuest
    let size: UInt16
    /// Next slot the driver fills, with its avail wrap counter.
    var avail = PackedRingPosition.start
    /// Next slot the driver expects a used element in, with its used wrap counter.
    var used = PackedRingPosition.start
    /// Slots each outstanding buffer ID took, as the driver remembers them.
    var slotsOf: [UInt16: UInt16] = [:]

    init(_ guest: FakeGuest) {
        self.guest = guest
        size = guest.queueSize
    }

    func makeQueue(eventIdx: Bool = false, avail: PackedRingPosition = .start, used: PackedRingPosition? = nil) throws -> PackedQueue {
        try PackedQueue(
            size: size, desc: guest.host(FakeGuest.descGPA), driverEvent: guest.host(FakeGuest.availGPA),
            deviceEvent: guest.host(FakeGuest.usedGPA), eventIdx: eventIdx, avail: avail, used: used)
    }

    /// AVAIL = wrap, USED = !wrap: how the driver marks a slot available.
    static func availBits(wrap: Bool) -> UInt16 {
        wrap ? PackedDescriptor.flagAvail : PackedDescriptor.flagUsed
    }

    func step(_ p: inout PackedRingPosition) {
        p.index += 1
        if p.index == size { p.index = 0; p.wrap.toggle() }
    }

    func slotGPA(_ slot: UInt16) -> UInt64 { FakeGuest.descGPA + 16 * UInt64(slot) }

    /// Writes ring slot `slot` as is.
    func setDesc(_ slot: UInt16, _ d: PackedDescriptor) { d.store(to: guest.host(slotGPA(slot))) }
    func desc(_ slot: UInt16) -> PackedDescriptor { PackedDescriptor(loadingFrom: guest.host(slotGPA(slot))) }

    /// Makes a buffer available under `id`: one descriptor per `(addr, len, flags)`
    /// in consecutive slots (NEXT added on all but the last), every descriptor
    /// carrying `id`, the head's flags stored last. Returns the head slot.
    @discardableResult
    func add(_ descs: [(UInt64, UInt32, UInt16)], id: UInt16) -> UInt16 {
        let head = avail
        var pos = avail
        var headFlags: UInt16 = 0
        for (k, d) in descs.enumerated() {
            let flags = d.2 | (k < descs.count - 1 ? NEXT : 0) | Self.availBits(wrap: pos.wrap)
            if k == 0 {
                headFlags = flags
                let old = desc(pos.index).flags
                setDesc(pos.index, PackedDescriptor(addr: d.0, len: d.1, id: id, flags: old))
            } else {
                setDesc(pos.index, PackedDescriptor(addr: d.0, len: d.1, id: id, flags: flags))
            }
            step(&pos)
        }
        guest.host(slotGPA(head.index) + 14).storeBytes(of: headFlags, as: UInt16.self)
        avail = pos
        slotsOf[id] = UInt16(descs.count)
        return head.index
    }

    /// The next used element, if the device published one there (AVAIL and
    /// USED both equal the driver's used wrap counter); moves past the slots
    /// the driver remembers for its ID.
    func takeUsed() -> (id: UInt16, len: UInt32)? {
        let d = desc(used.index)
        let a = d.flags & PackedDescriptor.flagAvail != 0, u = d.flags & PackedDescriptor.flagUsed != 0
        guard a == used.wrap, u == used.wrap else { return nil }
        for _ in 0..<(slotsOf[d.id] ?? 1) { step(&used) }
        slotsOf[d.id] = nil
        return (d.id, d.len)
    }

    // Event suppression areas (§2.8.10): driver's (written here), device's (read here).
    var driverOffWrap: UInt16 {
        get { guest.host(FakeGuest.availGPA).load(as: UInt16.self) }
        set { guest.host(FakeGuest.availGPA).storeBytes(of: newValue, as: UInt16.self) }
    }
    var driverFlags: UInt16 {
        get { guest.host(FakeGuest.availGPA + 2).load(as: UInt16.self) }
        set { guest.host(FakeGuest.availGPA + 2).storeBytes(of: newValue, as: UInt16.self) }
    }
    var deviceOffWrap: UInt16 { guest.host(FakeGuest.usedGPA).load(as: UInt16.self) }
    var deviceFlags: UInt16 { guest.host(FakeGuest.usedGPA + 2).load(as: UInt16.self) }
}
