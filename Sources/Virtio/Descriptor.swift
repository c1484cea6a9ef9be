/// One split-ring descriptor (virtio 1.2 §2.7.5): `le64 addr, le32 len, le16 flags, le16 next`.
public struct Descriptor: Sendable, Equatable {
    /// Size of a descriptor in a table.
    public static let byteSize = 16
    /// VIRTQ_DESC_F_NEXT.
    public static let flagNext: UInt16 = 1
    /// VIRTQ_DESC_F_WRITE (device-writable).
    public static let flagWrite: UInt16 = 2
    /// VIRTQ_DESC_F_INDIRECT.
    public static let flagIndirect: UInt16 = 4

    public var addr: UInt64
    public var len: UInt32
    public var flags: UInt16
    public var next: UInt16

    public init(addr: UInt64, len: UInt32, flags: UInt16, next: UInt16) {
        self.addr = addr
        self.len = len
        self.flags = flags
        self.next = next
    }

    /// Reads the little-endian descriptor at `pointer` (any alignment).
    @inline(__always)
    public init(loadingFrom pointer: UnsafeRawPointer) {
        addr = UInt64(littleEndian: pointer.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
        len = UInt32(littleEndian: pointer.loadUnaligned(fromByteOffset: 8, as: UInt32.self))
        flags = UInt16(littleEndian: pointer.loadUnaligned(fromByteOffset: 12, as: UInt16.self))
        next = UInt16(littleEndian: pointer.loadUnaligned(fromByteOffset: 14, as: UInt16.self))
    }

    /// Writes this descriptor little-endian at `pointer` (tests and frontends).
    public func store(to pointer: UnsafeMutableRawPointer) {
        pointer.storeBytes(of: addr.littleEndian, toByteOffset: 0, as: UInt64.self)
        pointer.storeBytes(of: len.littleEndian, toByteOffset: 8, as: UInt32.self)
        pointer.storeBytes(of: flags.littleEndian, toByteOffset: 12, as: UInt16.self)
        pointer.storeBytes(of: next.littleEndian, toByteOffset: 14, as: UInt16.self)
    }

    public var hasNext: Bool { flags & Self.flagNext != 0 }
    public var isWrite: Bool { flags & Self.flagWrite != 0 }
    public var isIndirect: Bool { flags & Self.flagIndirect != 0 }
}
