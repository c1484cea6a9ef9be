/// `struct virtio_blk_config` (virtio 1.2 §5.2.4, which gives the field offsets),
/// served little-endian to GET_CONFIG.
public struct BlkConfig: Sendable, Equatable {
    /// Bytes of the layout this type defines (through the zoned fields).
    public static let layoutSize = 96
    /// Largest config read vhost-user allows.
    public static let maxReadSize = 256
    /// Offset of `writeback`, the one field the driver writes (CONFIG_WCE).
    public static let writebackOffset = 32

    /// Capacity in 512-byte sectors (@0).
    public var capacity: UInt64 = 0
    public var sizeMax: UInt32 = 0                 // @8
    public var segMax: UInt32 = 0                  // @12
    public var cylinders: UInt16 = 0               // @16
    public var heads: UInt8 = 0                    // @18
    public var sectors: UInt8 = 0                  // @19
    public var blkSize: UInt32 = 512               // @20
    public var physicalBlockExp: UInt8 = 0         // @24
    public var alignmentOffset: UInt8 = 0          // @25
    public var minIOSize: UInt16 = 0               // @26
    public var optIOSize: UInt32 = 0               // @28
    public var writeback: UInt8 = 0                // @32
    public var numQueues: UInt16 = 1               // @34
    public var maxDiscardSectors: UInt32 = 0       // @36
    public var maxDiscardSeg: UInt32 = 0           // @40
    public var discardSectorAlignment: UInt32 = 0  // @44
    public var maxWriteZeroesSectors: UInt32 = 0   // @48
    public var maxWriteZeroesSeg: UInt32 = 0       // @52
    public var writeZeroesMayUnmap: UInt8 = 0      // @56
    public var maxSecureEraseSectors: UInt32 = 0   // @60
    public var maxSecureEraseSeg: UInt32 = 0       // @64
    public var secureEraseSectorAlignment: UInt32 = 0  // @68
    // Zoned fields (@72..<96) stay zero.

    public init() {}

    /// The full little-endian layout (`layoutSize` bytes).
    public var layout: [UInt8] {
        var out = [UInt8](repeating: 0, count: Self.layoutSize)
        out.withUnsafeMutableBytes { b in
            b.storeBytes(of: capacity.littleEndian, toByteOffset: 0, as: UInt64.self)
            b.storeBytes(of: sizeMax.littleEndian, toByteOffset: 8, as: UInt32.self)
            b.storeBytes(of: segMax.littleEndian, toByteOffset: 12, as: UInt32.self)
            b.storeBytes(of: cylinders.littleEndian, toByteOffset: 16, as: UInt16.self)
            b.storeBytes(of: heads, toByteOffset: 18, as: UInt8.self)
            b.storeBytes(of: sectors, toByteOffset: 19, as: UInt8.self)
            b.storeBytes(of: blkSize.littleEndian, toByteOffset: 20, as: UInt32.self)
            b.storeBytes(of: physicalBlockExp, toByteOffset: 24, as: UInt8.self)
            b.storeBytes(of: alignmentOffset, toByteOffset: 25, as: UInt8.self)
            b.storeBytes(of: minIOSize.littleEndian, toByteOffset: 26, as: UInt16.self)
            b.storeBytes(of: optIOSize.littleEndian, toByteOffset: 28, as: UInt32.self)
            b.storeBytes(of: writeback, toByteOffset: 32, as: UInt8.self)
            b.storeBytes(of: numQueues.littleEndian, toByteOffset: 34, as: UInt16.self)
            b.storeBytes(of: maxDiscardSectors.littleEndian, toByteOffset: 36, as: UInt32.self)
            b.storeBytes(of: maxDiscardSeg.littleEndian, toByteOffset: 40, as: UInt32.self)
            b.storeBytes(of: discardSectorAlignment.littleEndian, toByteOffset: 44, as: UInt32.self)
            b.storeBytes(of: maxWriteZeroesSectors.littleEndian, toByteOffset: 48, as: UInt32.self)
            b.storeBytes(of: maxWriteZeroesSeg.littleEndian, toByteOffset: 52, as: UInt32.self)
            b.storeBytes(of: writeZeroesMayUnmap, toByteOffset: 56, as: UInt8.self)
            b.storeBytes(of: maxSecureEraseSectors.littleEndian, toByteOffset: 60, as: UInt32.self)
            b.storeBytes(of: maxSecureEraseSeg.littleEndian, toByteOffset: 64, as: UInt32.self)
            b.storeBytes(of: secureEraseSectorAlignment.littleEndian, toByteOffset: 68, as: UInt32.self)
        }
        return out
    }

    /// Exactly `count` bytes of the layout from `offset`, zeros past it.
    /// `count` is clamped to `0...maxReadSize`; a negative offset reads zeros.
    public func bytes(offset: Int, count: Int) -> [UInt8] {
        let n = max(0, min(count, Self.maxReadSize))
        var out = [UInt8](repeating: 0, count: n)
        guard offset >= 0, offset < Self.layoutSize else { return out }
        let full = layout
        let available = min(n, Self.layoutSize - offset)
        for i in 0..<available { out[i] = full[offset + i] }
        return out
    }

    /// Applies a driver write (SET_CONFIG). Only the one-byte `writeback`
    /// field is writable; returns false (and changes nothing) for anything else.
    public mutating func applyWrite(offset: Int, bytes: [UInt8]) -> Bool {
        guard offset == Self.writebackOffset, bytes.count == 1 else { return false }
        writeback = bytes[0] == 0 ? 0 : 1
        return true
    }
}
