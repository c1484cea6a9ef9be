/// One packed-ring descriptor (virtio 1.2 §2.8.13): `le64 addr, le32 len, le16 id, le16 flags`.
///
/// The same layout is used in the descriptor ring and in indirect tables (§2.8.7).
public struct PackedDescriptor: Sendable, Equatable {
    /// Size of a descriptor in the ring or an indirect table.
    public static let byteSize = 16
    /// Byte offset of `flags`, the field that hands a slot between driver and device.
    public static let flagsOffset = 14
    /// VIRTQ_DESC_F_NEXT: the buffer continues in the next ring slot (§2.8.6).
    public static let flagNext: UInt16 = 1
    /// VIRTQ_DESC_F_WRITE (device-writable).
    public static let flagWrite: UInt16 = 2
    /// VIRTQ_DESC_F_INDIRECT (§2.8.7).
    public static let flagIndirect: UInt16 = 4
    /// VIRTQ_DESC_F_AVAIL, bit 7 (§2.8.1).
    public static let flagAvail: UInt16 = 1 << 7
    /// VIRTQ_DESC_F_USED, bit 15 (§2.8.1).
    public static let flagUsed: UInt16 = 1 << 15

    public var addr: UInt64
    public var len: UInt32
    public var id: UInt16
    public var flags: UInt16

    public init(addr: UInt64, len: UInt32, id: UInt16, flags: UInt16) {
        self.addr = addr
        self.len = len
        self.id = id
        self.flags = flags
    }

    /// Reads the little-endian descriptor at `pointer` (any alignment).
    @inline(__always)
    public init(loadingFrom pointer: UnsafeRawPointer) {
        addr = UInt64(littleEndian: pointer.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
        len = UInt32(littleEndian: pointer.loadUnaligned(fromByteOffset: 8, as: UInt32.self))
        id = UInt16(littleEndian: pointer.loadUnaligned(fromByteOffset: 12, as: UInt16.self))
        flags = UInt16(littleEndian: pointer.loadUnaligned(fromByteOffset: 14, as: UInt16.self))
    }

    /// Writes this descriptor little-endian at `pointer` (tests and frontends).
    public func store(to pointer: UnsafeMutableRawPointer) {
        pointer.storeBytes(of: addr.littleEndian, toByteOffset: 0, as: UInt64.self)
        pointer.storeBytes(of: len.littleEndian, toByteOffset: 8, as: UInt32.self)
        pointer.storeBytes(of: id.littleEndian, toByteOffset: 12, as: UInt16.self)
        pointer.storeBytes(of: flags.littleEndian, toByteOffset: 14, as: UInt16.self)
    }

    public var hasNext: Bool { flags & Self.flagNext != 0 }
    public var isWrite: Bool { flags & Self.flagWrite != 0 }
    public var isIndirect: Bool { flags & Self.flagIndirect != 0 }

    /// Whether `flags` marks a slot available to the device whose avail wrap
    /// counter is `wrap`: AVAIL equals the counter and USED differs (§2.8.1).
    @inline(__always)
    public static func isAvailable(flags: UInt16, wrap: Bool) -> Bool {
        (flags & flagAvail != 0) == wrap && (flags & flagUsed != 0) != wrap
    }

    /// The flags of a used element written with used wrap counter `wrap`:
    /// AVAIL and USED both equal to it (§2.8.1).
    @inline(__always)
    public static func usedFlags(wrap: Bool) -> UInt16 {
        wrap ? flagAvail | flagUsed : 0
    }
}
