import Glibc

/// One DISCARD / WRITE_ZEROES / SECURE_ERASE range (virtio 1.2 §5.2.6):
/// `le64 sector, le32 num_sectors, le32 flags`.
public struct DiscardSegment: Sendable, Equatable {
    public static let byteSize = 16
    /// VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP.
    public static let flagUnmap: UInt32 = 1

    public var sector: UInt64
    public var numSectors: UInt32
    public var flags: UInt32

    public init(sector: UInt64, numSectors: UInt32, flags: UInt32) {
        self.sector = sector
        self.numSectors = numSectors
        self.flags = flags
    }

    public var unmap: Bool { flags & Self.flagUnmap != 0 }
    /// Flags other than UNMAP are set (answer UNSUPP).
    public var hasUnknownFlags: Bool { flags & ~Self.flagUnmap != 0 }

    /// Decodes the segments of `request` (copying them out of guest memory).
    ///
    /// Throws `badDataLength` if the data is empty, not a multiple of 16
    /// bytes, or holds more than `maxSegments` segments.
    public static func decode(
        _ request: BlkRequest, iovecs: UnsafeMutableBufferPointer<iovec>, maxSegments: Int
    ) throws(VirtioError) -> [DiscardSegment] {
        let length = request.dataLength
        guard length > 0, length % UInt64(byteSize) == 0, length / UInt64(byteSize) <= UInt64(max(0, maxSegments))
        else { throw .badDataLength(length) }
        let n = Int(length / UInt64(byteSize))
        var cursor = IOVecCursor(iovecs, range: request.dataRange)
        var result: [DiscardSegment] = []
        result.reserveCapacity(n)
        for _ in 0..<n {
            var raw: (UInt64, UInt64) = (0, 0)
            let got = withUnsafeMutableBytes(of: &raw) { cursor.copyOut(into: $0) }
            guard got == byteSize else { throw .badDataLength(length) }
            let segment = withUnsafeBytes(of: &raw) { b in
                DiscardSegment(
                    sector: UInt64(littleEndian: b.loadUnaligned(fromByteOffset: 0, as: UInt64.self)),
                    numSectors: UInt32(littleEndian: b.loadUnaligned(fromByteOffset: 8, as: UInt32.self)),
                    flags: UInt32(littleEndian: b.loadUnaligned(fromByteOffset: 12, as: UInt32.self)))
            }
            result.append(segment)
        }
        return result
    }

    /// The 16 little-endian bytes of this segment (tests and frontends).
    public var bytes: [UInt8] {
        var out = [UInt8](repeating: 0, count: Self.byteSize)
        out.withUnsafeMutableBytes { b in
            b.storeBytes(of: sector.littleEndian, toByteOffset: 0, as: UInt64.self)
            b.storeBytes(of: numSectors.littleEndian, toByteOffset: 8, as: UInt32.self)
            b.storeBytes(of: flags.littleEndian, toByteOffset: 12, as: UInt32.self)
        }
        return out
    }
}
