/// Why a guest- or frontend-supplied virtio structure was rejected.
///
/// Every case describes malformed input; none is a programming error. Callers
/// turn these into a status byte, a broken-queue state, or a disconnect.
public enum VirtioError: Error, Equatable, Sendable, CustomStringConvertible {
    // MARK: Guest memory table
    /// A memory region has size 0, or `gpa + size` / `userAddr + size` overflows,
    /// or its size does not fit in `Int`.
    case badRegion(index: Int)
    /// Two regions cover the same guest-physical bytes.
    case overlappingRegions(first: Int, second: Int)
    /// More regions than `GuestMemory.maxRegions`.
    case tooManyRegions(count: Int)

    // MARK: Ring setup
    /// Queue size is 0, above 32768, or (split rings) not a power of two (virtio 1.2 §2.7, §2.8).
    case badQueueSize(UInt16)
    /// A ring address breaks the alignment of virtio 1.2 §2.7 (desc 16, avail 2, used 4)
    /// or §2.8.10 (descriptor ring 16, event suppression areas 4).
    case misalignedRing

    // MARK: Avail ring (virtio 1.2 §2.7.6)
    /// `avail->idx - last_avail_idx` exceeds the queue size.
    case availIndexOutOfRange(availIdx: UInt16, lastAvailIdx: UInt16)
    /// A head index in the avail ring is not below the queue size.
    case headOutOfRange(UInt16)

    // MARK: Packed rings (virtio 1.2 §2.8)
    /// A packed-ring index (ring base, chain head) is not below the queue size.
    case ringIndexOutOfRange(UInt16)
    /// An INDIRECT descriptor in a packed chain of more than one ring slot (§2.8.7).
    case indirectInChain
    /// The driver made available slots the device still holds: more than the
    /// ring's size would be in flight (or a ring base puts used ahead of avail).
    case ringOverrun(inFlight: Int, size: UInt16)

    // MARK: Descriptor chains (virtio 1.2 §2.7.5)
    /// A `next` index is not below the size of its table.
    case nextOutOfRange(UInt16)
    /// The chain visits more descriptors than its table holds (a loop).
    case chainTooLong
    /// An indirect table contains an INDIRECT descriptor.
    case indirectNested
    /// An indirect table's length is not a multiple of 16.
    case indirectBadLength(UInt32)
    /// An indirect table has more than `DescriptorChainWalker.maxIndirectEntries` entries.
    case indirectTooLong(UInt32)
    /// An indirect table has length 0.
    case indirectEmpty
    /// A descriptor carries both INDIRECT and NEXT.
    case indirectWithNext
    /// `addr + len` overflows 64 bits.
    case addressOverflow(addr: UInt64, length: UInt32)
    /// Some byte of `[addr, addr + len)` is not in any memory region.
    case addressUnmapped(addr: UInt64, length: UInt64)
    /// A device-readable descriptor follows a device-writable one.
    case readableAfterWritable
    /// The chain needs more segments than the caller's iovec buffer holds.
    case tooManySegments(limit: Int)

    // MARK: virtio-blk requests (virtio 1.2 §5.2.6)
    /// No device-writable byte exists to hold the status.
    case missingStatus
    /// Fewer than 16 device-readable bytes for the request header.
    case headerTooShort(UInt64)
    /// IN/GET_ID data is device-readable, or OUT/DISCARD/WRITE_ZEROES data is device-writable.
    case dataDirectionMismatch(type: UInt32)
    /// Data length is not a multiple of the unit the request type needs.
    case badDataLength(UInt64)

    public var description: String {
        switch self {
        case .badRegion(let i): return "memory region \(i) is empty or overflows"
        case .overlappingRegions(let a, let b): return "memory regions \(a) and \(b) overlap"
        case .tooManyRegions(let n): return "too many memory regions (\(n))"
        case .badQueueSize(let n): return "bad queue size \(n)"
        case .misalignedRing: return "ring address misaligned"
        case .availIndexOutOfRange(let idx, let last):
            return "avail idx \(idx) too far ahead of last avail idx \(last)"
        case .headOutOfRange(let h): return "head index \(h) out of range"
        case .ringIndexOutOfRange(let i): return "packed ring index \(i) out of range"
        case .indirectInChain: return "indirect descriptor inside a multi-descriptor packed chain"
        case .ringOverrun(let n, let size):
            // A negative count is a SET_VRING_BASE whose used position is ahead of its avail one (§2.8.1).
            if n < 0 { return "the used position is \(-n) slots ahead of the avail position in a ring of \(size)" }
            return "\(n) slots in flight in a ring of \(size)"
        case .nextOutOfRange(let n): return "next index \(n) out of range"
        case .chainTooLong: return "descriptor chain longer than its table (loop)"
        case .indirectNested: return "nested indirect descriptor"
        case .indirectBadLength(let l): return "indirect table length \(l) not a multiple of 16"
        case .indirectTooLong(let l): return "indirect table too long (\(l) bytes)"
        case .indirectEmpty: return "empty indirect table"
        case .indirectWithNext: return "descriptor has both INDIRECT and NEXT"
        case .addressOverflow(let a, let l):
            return "address 0x\(String(a, radix: 16)) + \(l) overflows"
        case .addressUnmapped(let a, let l):
            return "address range 0x\(String(a, radix: 16)) + \(l) not mapped"
        case .readableAfterWritable: return "device-readable descriptor after a device-writable one"
        case .tooManySegments(let n): return "chain needs more than \(n) segments"
        case .missingStatus: return "no device-writable byte for the status"
        case .headerTooShort(let n): return "request header too short (\(n) readable bytes)"
        case .dataDirectionMismatch(let t): return "data buffers have the wrong direction for type \(t)"
        case .badDataLength(let n): return "bad data length \(n)"
        }
    }
}
