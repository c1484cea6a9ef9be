/// SET_VRING_ADDR payload (40 bytes): ring addresses in the front-end's
/// virtual address space (translate through each region's `userAddr`).
public struct VringAddress: Hashable, Sendable {
    /// Bit 0: VHOST_VRING_F_LOG (dirty logging of the used ring).
    public static let flagLog: UInt32 = 1
    public var index: UInt32
    public var flags: UInt32
    public var desc: UInt64
    public var used: UInt64
    public var avail: UInt64
    public var log: UInt64

    public init(index: UInt32, flags: UInt32 = 0, desc: UInt64, used: UInt64, avail: UInt64, log: UInt64 = 0) {
        self.index = index
        self.flags = flags
        self.desc = desc
        self.used = used
        self.avail = avail
        self.log = log
    }
}

/// One memory table entry (32 bytes): `u64 guest_phys_addr, memory_size,
/// userspace_addr, mmap_offset`.
public struct MemoryRegionDescriptor: Hashable, Sendable {
    public static let byteSize = 32
    public var guestPhysAddr: UInt64
    public var size: UInt64
    public var userAddr: UInt64
    public var mmapOffset: UInt64

    public init(guestPhysAddr: UInt64, size: UInt64, userAddr: UInt64, mmapOffset: UInt64) {
        self.guestPhysAddr = guestPhysAddr
        self.size = size
        self.userAddr = userAddr
        self.mmapOffset = mmapOffset
    }
}

/// A decoded vhost-user payload (vhost-user spec, "Payload"; docs/PROTOCOL-NOTES.md, "Payloads").
public enum VhostUserPayload: Hashable, Sendable {
    /// No payload.
    case none
    /// A u64: features, counts, status, acks; for SET_VRING_KICK/CALL/ERR see `VringFile`.
    case u64(UInt64)
    /// `u32 index, u32 num`.
    case vringState(index: UInt32, num: UInt32)
    case vringAddress(VringAddress)
    /// SET_MEM_TABLE: `u32 nregions, u32 padding`, then the regions.
    case memoryTable([MemoryRegionDescriptor])
    /// ADD_MEM_REG / REM_MEM_REG: `u64 padding` + one region.
    case singleRegion(MemoryRegionDescriptor)
    /// GET/SET_CONFIG: `u32 offset, u32 size, u32 flags`, then `size` bytes (size ≤ 256).
    case config(offset: UInt32, size: UInt32, flags: UInt32, payload: [UInt8])
    /// GET/SET_INFLIGHT_FD: `u64 mmap_size, u64 mmap_offset, u16 num_queues, u16 queue_size`, 4 pad bytes.
    case inflight(mmapSize: UInt64, mmapOffset: UInt64, numQueues: UInt16, queueSize: UInt16)
    /// SET_LOG_BASE: `u64 mmap_size, u64 mmap_offset`.
    case log(size: UInt64, offset: UInt64)
    /// A known request whose payload this codec does not model (IOTLB, crypto): raw bytes.
    case raw([UInt8])

    /// Largest config payload (VHOST_USER_MAX_CONFIG_SIZE).
    public static let maxConfigSize = 256
    /// Most regions in one SET_MEM_TABLE (VHOST_MEMORY_BASELINE_NREGIONS).
    public static let maxMemTableRegions = 8

    /// The wire bytes of this payload.
    public var encoded: [UInt8] {
        var w = ByteWriter()
        switch self {
        case .none:
            break
        case .u64(let v):
            w.u64(v)
        case .vringState(let index, let num):
            w.u32(index)
            w.u32(num)
        case .vringAddress(let a):
            w.u32(a.index)
            w.u32(a.flags)
            w.u64(a.desc)
            w.u64(a.used)
            w.u64(a.avail)
            w.u64(a.log)
        case .memoryTable(let regions):
            w.u32(UInt32(truncatingIfNeeded: regions.count))
            w.u32(0)
            for r in regions { Self.write(r, to: &w) }
        case .singleRegion(let r):
            w.u64(0)
            Self.write(r, to: &w)
        case .config(let offset, let size, let flags, let payload):
            w.u32(offset)
            w.u32(size)
            w.u32(flags)
            w.append(payload)
        case .inflight(let mmapSize, let mmapOffset, let numQueues, let queueSize):
            w.u64(mmapSize)
            w.u64(mmapOffset)
            w.u16(numQueues)
            w.u16(queueSize)
            w.zeros(4)
        case .log(let size, let offset):
            w.u64(size)
            w.u64(offset)
        case .raw(let bytes):
            w.append(bytes)
        }
        return w.bytes
    }

    private static func write(_ r: MemoryRegionDescriptor, to w: inout ByteWriter) {
        w.u64(r.guestPhysAddr)
        w.u64(r.size)
        w.u64(r.userAddr)
        w.u64(r.mmapOffset)
    }

    static func readRegion(_ reader: inout ByteReader) -> MemoryRegionDescriptor {
        MemoryRegionDescriptor(
            guestPhysAddr: reader.u64(), size: reader.u64(), userAddr: reader.u64(), mmapOffset: reader.u64())
    }
}

/// The u64 of SET_VRING_KICK/CALL/ERR: bits 0-7 queue index, bit 8 NOFD.
public struct VringFile: Hashable, Sendable {
    public static let indexMask: UInt64 = 0xff
    public static let noFDFlag: UInt64 = 0x100
    public var index: UInt32
    /// No fd attached: the back end polls (kick) or never signals (call/err).
    public var noFD: Bool

    public init(index: UInt32, noFD: Bool) {
        self.index = index
        self.noFD = noFD
    }

    public init(_ value: UInt64) {
        index = UInt32(value & Self.indexMask)
        noFD = value & Self.noFDFlag != 0
    }

    public var rawValue: UInt64 { UInt64(index & 0xff) | (noFD ? Self.noFDFlag : 0) }
}
