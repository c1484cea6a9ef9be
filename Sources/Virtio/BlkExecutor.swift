import Glibc

/// One operation the device asks its backend to perform for a virtio-blk
/// request (virtio 1.2 §5.2.6), in bytes on the disk. Reads and writes move
/// the request's data segments; the others carry no data.
public struct BlkOperation: Equatable, Sendable {
    public enum Kind: UInt8, Sendable {
        case read, write, flush, discard, writeZeroes
        /// The write-zeroes fallback where the backend has no zeroing
        /// (tmpfs has no FALLOC_FL_ZERO_RANGE): punch a hole, which reads back as zeroes.
        case punchZeroes
        /// The flush that follows a write in write-through mode (CONFIG_WCE off, §5.2.5.1).
        case writeSync
    }

    public var kind: Kind
    public var offset: UInt64
    public var length: UInt64

    /// A read or write: it moves the request's data segments.
    @inlinable
    public var movesData: Bool { kind == .read || kind == .write }
    /// DISCARD, WRITE_ZEROES or the hole punched for it: a range made zero, no data moved.
    public var clearsRange: Bool { kind == .discard || kind == .writeZeroes || kind == .punchZeroes }

    @inlinable
    public init(_ kind: Kind, offset: UInt64 = 0, length: UInt64 = 0) {
        self.kind = kind
        self.offset = offset
        self.length = length
    }
}

/// The next step of a request: finish it, or have the backend perform an
/// operation and hand its result to `BlkExecutor.finish`.
public enum BlkStep: Equatable, Sendable {
    /// Write `status` to the status byte and put the head in the used ring
    /// with `usedLength` (device-written bytes, status included).
    case complete(BlkStatus, usedLength: UInt32)
    case submit(BlkOperation)
}

/// What the executor knows of the disk behind a queue, as of the request's
/// step (the control plane may resize or detach it between steps).
public struct BlkDisk: Equatable, Sendable {
    /// Capacity in 512-byte sectors (virtio 1.2 §5.2.4).
    public var capacitySectors: UInt64
    public var readOnly: Bool
    /// Write-through on a backend with a volatile cache: each write is
    /// followed by a `.writeSync` before it completes.
    public var syncsWrites: Bool
    /// The backend may answer write-zeroes with EOPNOTSUPP or EINVAL and
    /// punching a hole zeroes instead (a regular file; never a block device,
    /// where a punched range need not read back as zeroes).
    public var punchesForZeroes: Bool
    /// The GET_ID answer.
    public var serial: BlkSerial
    /// What the device advertises (virtio 1.2 §5.2.4); larger requests
    /// complete with IOERR, so no guest makes a reactor copy more at once.
    public var limits: BlkLimits

    public init(capacitySectors: UInt64, readOnly: Bool, syncsWrites: Bool = false,
                punchesForZeroes: Bool = false, serial: BlkSerial = BlkSerial(), limits: BlkLimits = .unlimited) {
        self.capacitySectors = capacitySectors
        self.readOnly = readOnly
        self.syncsWrites = syncsWrites
        self.punchesForZeroes = punchesForZeroes
        self.serial = serial
        self.limits = limits
    }

    /// Whether `offset ..< offset + length` (bytes) lies on the disk now.
    @inlinable
    public func contains(offset: UInt64, length: UInt64) -> Bool {
        let (end, overflow) = offset.addingReportingOverflow(length)
        return !overflow && end <= capacitySectors &* BlkRequest.sectorSize
    }
}

/// The largest requests a device takes (virtio 1.2 §5.2.4, the config
/// space's size_max, seg_max, max_discard_sectors and max_write_zeroes_sectors).
public struct BlkLimits: Equatable, Sendable {
    /// Data bytes of one read or write: size_max * seg_max. Not checked per
    /// segment: SeaBIOS sends its whole transfer, up to that product, in one
    /// descriptor, and Linux keeps within both.
    public var maxTransferBytes: UInt64
    /// Sectors in one DISCARD or WRITE_ZEROES segment.
    public var maxDiscardSectors: UInt32
    public var maxWriteZeroesSectors: UInt32

    public init(maxTransferBytes: UInt64, maxDiscardSectors: UInt32, maxWriteZeroesSectors: UInt32) {
        self.maxTransferBytes = maxTransferBytes
        self.maxDiscardSectors = maxDiscardSectors
        self.maxWriteZeroesSectors = maxWriteZeroesSectors
    }

    /// No limit but the disk's capacity (unit tests of other rules).
    public static let unlimited = BlkLimits(maxTransferBytes: .max, maxDiscardSectors: .max, maxWriteZeroesSectors: .max)
}

/// The virtio-blk device as a pure step function (virtio 1.2 §5.2.6): a
/// parsed request becomes "complete with this status" or "perform this
/// operation"; an operation's result becomes "complete" or "perform a
/// follow-up" (the flush of a write-through write, the hole that stands in
/// for write-zeroes). It touches guest memory only through the request's
/// iovecs (GET_ID's serial, DISCARD's segment) and holds no state: the
/// caller keeps the operation in flight with the request.
///
/// The daemon's virtqueue servers, the unit tests and the fuzz targets all
/// drive this one implementation.
public enum BlkExecutor {
    /// Segments a DISCARD or WRITE_ZEROES may carry (`max_discard_seg` and
    /// `max_write_zeroes_seg` in the config space, virtio 1.2 §5.2.4).
    public static let maxRangeSegments = 1

    /// The first step of `request`, whose data segments are `iovecs[request.dataRange]`.
    @inlinable @inline(__always)
    public static func start(_ request: BlkRequest, iovecs: UnsafeMutableBufferPointer<iovec>, disk: BlkDisk) -> BlkStep {
        switch request.type {
        case .in, .out:
            guard request.checkReadWrite(capacity: disk.capacitySectors) == .ok,
                  request.dataLength <= disk.limits.maxTransferBytes else { return .complete(.ioErr, usedLength: 1) }
            let isWrite = request.type == .out
            if isWrite && disk.readOnly { return .complete(.ioErr, usedLength: 1) }
            if request.dataLength == 0 { return .complete(.ok, usedLength: 1) }
            return .submit(BlkOperation(isWrite ? .write : .read, offset: request.sector &* BlkRequest.sectorSize,
                                        length: request.dataLength))
        case .flush:
            return .submit(BlkOperation(.flush))
        case .getID:
            let written = BlkGetID.fill(serial: disk.serial, request: request, iovecs: iovecs)
            return .complete(.ok, usedLength: UInt32(written) + 1)
        case .discard, .writeZeroes:
            return startRange(request, iovecs: iovecs, disk: disk)
        default:
            return .complete(.unsupported, usedLength: 1)
        }
    }

    /// DISCARD and WRITE_ZEROES (virtio 1.2 §5.2.6.2): one segment; no data
    /// is IOERR, more segments or a partial one UNSUPP; unknown flags, and
    /// UNMAP on a discard, UNSUPP; a range off the disk or over the
    /// advertised maximum IOERR.
    @usableFromInline
    static func startRange(_ request: BlkRequest, iovecs: UnsafeMutableBufferPointer<iovec>, disk: BlkDisk) -> BlkStep {
        let segment: DiscardSegment
        do {
            guard let first = try DiscardSegment.decode(request, iovecs: iovecs, maxSegments: maxRangeSegments).first else {
                return .complete(.ioErr, usedLength: 1)
            }
            segment = first
        } catch {
            return .complete(request.dataLength == 0 ? .ioErr : .unsupported, usedLength: 1)
        }
        let isDiscard = request.type == .discard
        if segment.hasUnknownFlags || (isDiscard && segment.flags != 0) { return .complete(.unsupported, usedLength: 1) }
        let sectors = UInt64(segment.numSectors)
        let most = isDiscard ? disk.limits.maxDiscardSectors : disk.limits.maxWriteZeroesSectors
        guard BlkRequest.rangeFits(sector: segment.sector, count: sectors, capacity: disk.capacitySectors),
              segment.numSectors <= most else {
            return .complete(.ioErr, usedLength: 1)
        }
        if disk.readOnly { return .complete(.ioErr, usedLength: 1) }
        if sectors == 0 { return .complete(.ok, usedLength: 1) }
        return .submit(BlkOperation(isDiscard ? .discard : .writeZeroes, offset: segment.sector &* BlkRequest.sectorSize,
                                    length: sectors &* BlkRequest.sectorSize))
    }

    /// The step after `operation` finished with `result` (bytes moved, or
    /// 0, or -errno). A read or write must have moved every byte and still
    /// lie on the disk, which may have shrunk while it was in flight.
    @inlinable @inline(__always)
    public static func finish(_ operation: BlkOperation, result: Int32, disk: BlkDisk) -> BlkStep {
        switch operation.kind {
        case .read:
            guard moved(result, operation, disk) else { return .complete(.ioErr, usedLength: 1) }
            return .complete(.ok, usedLength: UInt32(clamping: operation.length &+ 1))
        case .write:
            guard moved(result, operation, disk) else { return .complete(.ioErr, usedLength: 1) }
            if disk.syncsWrites { return .submit(BlkOperation(.writeSync, offset: operation.offset, length: operation.length)) }
            return .complete(.ok, usedLength: 1)
        case .discard:
            // A hint: a backend that cannot punch holes still succeeds.
            return .complete(result == 0 || result == -EOPNOTSUPP ? .ok : .ioErr, usedLength: 1)
        case .writeZeroes:
            if (result == -EOPNOTSUPP || result == -EINVAL) && disk.punchesForZeroes {
                return .submit(BlkOperation(.punchZeroes, offset: operation.offset, length: operation.length))
            }
            return .complete(result == 0 ? .ok : .ioErr, usedLength: 1)
        case .flush, .writeSync, .punchZeroes:
            return .complete(result == 0 ? .ok : .ioErr, usedLength: 1)
        }
    }

    @inlinable @inline(__always)
    static func moved(_ result: Int32, _ operation: BlkOperation, _ disk: BlkDisk) -> Bool {
        result >= 0 && UInt64(result) == operation.length && disk.contains(offset: operation.offset, length: operation.length)
    }
}
