import Glibc

/// A virtio-blk request type (virtio 1.2 §5.2.6); unknown values are data.
/// The named values are `@inlinable` computed constants, not stored `static let`s:
/// the data path (another module) would otherwise call a lazy-global addressor
/// for every comparison.
public struct BlkRequestType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt32
    @inlinable public init(rawValue: UInt32) { self.rawValue = rawValue }

    @inlinable public static var `in`: BlkRequestType { BlkRequestType(rawValue: 0) }
    @inlinable public static var out: BlkRequestType { BlkRequestType(rawValue: 1) }
    @inlinable public static var flush: BlkRequestType { BlkRequestType(rawValue: 4) }
    @inlinable public static var getID: BlkRequestType { BlkRequestType(rawValue: 8) }
    @inlinable public static var getLifetime: BlkRequestType { BlkRequestType(rawValue: 10) }
    @inlinable public static var discard: BlkRequestType { BlkRequestType(rawValue: 11) }
    @inlinable public static var writeZeroes: BlkRequestType { BlkRequestType(rawValue: 13) }
    @inlinable public static var secureErase: BlkRequestType { BlkRequestType(rawValue: 14) }

    /// Whether the data buffers are device-writable (the device fills them).
    public var dataIsDeviceWritable: Bool { self == .in || self == .getID || self == .getLifetime }
    /// Whether the data buffers are device-readable (the driver fills them).
    public var dataIsDeviceReadable: Bool {
        self == .out || self == .discard || self == .writeZeroes || self == .secureErase
    }

    public var description: String {
        switch self {
        case .in: return "IN"
        case .out: return "OUT"
        case .flush: return "FLUSH"
        case .getID: return "GET_ID"
        case .getLifetime: return "GET_LIFETIME"
        case .discard: return "DISCARD"
        case .writeZeroes: return "WRITE_ZEROES"
        case .secureErase: return "SECURE_ERASE"
        default: return "type \(rawValue)"
        }
    }
}

/// A virtio-blk status byte (virtio 1.2 §5.2.6).
public struct BlkStatus: RawRepresentable, Hashable, Sendable {
    public var rawValue: UInt8
    @inlinable public init(rawValue: UInt8) { self.rawValue = rawValue }

    @inlinable public static var ok: BlkStatus { BlkStatus(rawValue: 0) }
    @inlinable public static var ioErr: BlkStatus { BlkStatus(rawValue: 1) }
    @inlinable public static var unsupported: BlkStatus { BlkStatus(rawValue: 2) }
}

/// A parsed virtio-blk request whose data segments live in the caller's iovec buffer.
///
/// `@unchecked Sendable`: `status` points into guest memory kept mapped by the
/// session; the request belongs to the reactor thread that popped it.
public struct BlkRequest: @unchecked Sendable {
    /// Sector size of `sector` and `capacity`, whatever the block size.
    public static let sectorSize: UInt64 = 512

    public var head: UInt16
    public var type: BlkRequestType
    public var ioprio: UInt32
    /// First 512-byte sector (IN/OUT).
    public var sector: UInt64
    /// The status byte in guest memory (already excluded from the data segments).
    public var status: UnsafeMutablePointer<UInt8>
    /// Indices into the iovec buffer of the data segments, after the header
    /// and before the status byte.
    public var dataRange: Range<Int>
    /// Total bytes of the data segments.
    public var dataLength: UInt64
    /// All device-writable bytes of the chain, status byte included (clamped
    /// to `UInt32.max`): the used length of a fully successful IN. For other
    /// types report 1 (only the status was written); for a short IN or GET_ID
    /// report the bytes actually written + 1.
    public var writableBytes: UInt32

    public init(
        head: UInt16, type: BlkRequestType, ioprio: UInt32, sector: UInt64,
        status: UnsafeMutablePointer<UInt8>, dataRange: Range<Int>, dataLength: UInt64, writableBytes: UInt32
    ) {
        self.head = head
        self.type = type
        self.ioprio = ioprio
        self.sector = sector
        self.status = status
        self.dataRange = dataRange
        self.dataLength = dataLength
        self.writableBytes = writableBytes
    }

    /// Stores `value` in the guest's status byte.
    public func setStatus(_ value: BlkStatus) {
        status.pointee = value.rawValue
    }

    /// Whether `count` sectors from `sector` fit a disk of `capacity` sectors:
    /// `sector <= capacity && count <= capacity - sector`, which cannot overflow
    /// (virtio 1.2 §5.2.6; docs/PROTOCOL-NOTES.md, "virtio-blk").
    public static func rangeFits(sector: UInt64, count: UInt64, capacity: UInt64) -> Bool {
        sector <= capacity && count <= capacity - sector
    }

    /// IN/OUT checks: data length a multiple of 512 and the range inside `capacity`.
    /// Returns `.ok` or `.ioErr`.
    public func checkReadWrite(capacity: UInt64) -> BlkStatus {
        guard dataLength % Self.sectorSize == 0,
              Self.rangeFits(sector: sector, count: dataLength / Self.sectorSize, capacity: capacity)
        else { return .ioErr }
        return .ok
    }
}

/// Splits a walked chain into a virtio-blk request (virtio 1.2 §5.2.6).
public enum BlkRequestParser {
    /// Size of `struct virtio_blk_req`'s header: `le32 type, le32 ioprio, le64 sector`.
    public static let headerSize = 16

    /// Parses `chain`, whose segments are `iovecs[0..<chain.segmentCount]`.
    ///
    /// Copies the 16-byte header out of the leading readable segments (it may
    /// span several), takes the status as the last byte of the last writable
    /// segment, and trims `iovecs` in place so `dataRange` covers exactly the
    /// data bytes. IN/GET_ID/GET_LIFETIME data must be device-writable;
    /// OUT/DISCARD/WRITE_ZEROES/SECURE_ERASE data device-readable.
    ///
    /// Throws `missingStatus` when there is no writable byte (complete the
    /// chain with used length 0). For any other error `iovecs` is unchanged
    /// and `statusPointer(_:iovecs:)` gives the byte to set to IOERR.
    public static func parse(
        _ chain: ChainBuffers, iovecs: UnsafeMutableBufferPointer<iovec>
    ) throws(VirtioError) -> BlkRequest {
        guard chain.writableBytes >= 1, let status = statusPointer(chain, iovecs: iovecs) else {
            throw .missingStatus
        }
        guard chain.readableBytes >= UInt64(headerSize) else { throw .headerTooShort(chain.readableBytes) }

        let type: BlkRequestType, ioprio: UInt32, sector: UInt64
        if chain.readableCount > 0, iovecs[0].iov_len >= headerSize, let first = iovecs[0].iov_base {
            // The usual layout: the whole header in the first segment.
            (type, ioprio, sector) = Self.loadHeader(UnsafeRawPointer(first))
        } else {
            var header: (UInt64, UInt64) = (0, 0)
            let copied = withUnsafeMutableBytes(of: &header) { buffer in
                var cursor = IOVecCursor(iovecs, range: 0..<chain.readableCount)
                return cursor.copyOut(into: buffer)
            }
            guard copied == headerSize else { throw .headerTooShort(UInt64(copied)) }
            (type, ioprio, sector) = withUnsafeBytes(of: &header) { raw in
                // `raw` is 16 bytes of a local tuple: never empty.
                guard let base = raw.baseAddress else { return (BlkRequestType(rawValue: UInt32.max), 0, 0) }
                return Self.loadHeader(base)
            }
        }

        let readableData = chain.readableBytes - UInt64(headerSize)
        let writableData = chain.writableBytes - 1
        if type.dataIsDeviceWritable && readableData != 0 { throw .dataDirectionMismatch(type: type.rawValue) }
        if type.dataIsDeviceReadable && writableData != 0 { throw .dataDirectionMismatch(type: type.rawValue) }

        // Find where the header ends: segment `start`, `skip` bytes in.
        var start = 0
        var skip = headerSize
        while start < chain.readableCount && skip >= iovecs[start].iov_len {
            skip -= iovecs[start].iov_len
            start += 1
        }
        if skip > 0, let base = iovecs[start].iov_base {
            iovecs[start] = iovec(iov_base: base + skip, iov_len: iovecs[start].iov_len - skip)
        }
        // Drop the status byte from the last writable segment.
        let last = chain.segmentCount - 1
        iovecs[last].iov_len -= 1
        let end = iovecs[last].iov_len == 0 ? last : last + 1

        return BlkRequest(
            head: chain.head, type: type, ioprio: ioprio, sector: sector, status: status,
            dataRange: start..<end, dataLength: readableData &+ writableData,
            writableBytes: UInt32(clamping: chain.writableBytes))
    }

    /// `le32 type, le32 ioprio, le64 sector` at `raw` (any alignment).
    @inline(__always)
    static func loadHeader(_ raw: UnsafeRawPointer) -> (BlkRequestType, UInt32, UInt64) {
        (BlkRequestType(rawValue: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 0, as: UInt32.self))),
         UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4, as: UInt32.self)),
         UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self)))
    }

    /// The status byte of a walked, not yet parsed chain: the last byte of its
    /// last writable segment, or nil if it has none.
    public static func statusPointer(
        _ chain: ChainBuffers, iovecs: UnsafeMutableBufferPointer<iovec>
    ) -> UnsafeMutablePointer<UInt8>? {
        let last = chain.segmentCount - 1
        guard chain.writableCount > 0, chain.readableCount >= 0, last < iovecs.count,
              iovecs[last].iov_len > 0, let base = iovecs[last].iov_base
        else { return nil }
        return (base + (iovecs[last].iov_len - 1)).assumingMemoryBound(to: UInt8.self)
    }
}
