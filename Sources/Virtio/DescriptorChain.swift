import Glibc

/// The buffers of one validated descriptor chain: `iovecs[0..<readableCount]`
/// are device-readable, the next `writableCount` entries device-writable.
public struct ChainBuffers: Sendable, Equatable {
    public var head: UInt16
    public var readableCount: Int
    public var writableCount: Int
    public var readableBytes: UInt64
    public var writableBytes: UInt64

    public init(head: UInt16, readableCount: Int, writableCount: Int, readableBytes: UInt64, writableBytes: UInt64) {
        self.head = head
        self.readableCount = readableCount
        self.writableCount = writableCount
        self.readableBytes = readableBytes
        self.writableBytes = writableBytes
    }

    /// Total iovec entries used.
    public var segmentCount: Int { readableCount + writableCount }
}

/// Walks a split-ring descriptor chain into iovecs (virtio 1.2 §2.7.5,
/// modelled on rust-vmm virtio-queue `chain.rs`).
///
/// Follows NEXT; enters at most one indirect table (§2.7.5.3), which must be
/// the last descriptor of its chain; a ttl equal to the current table's size
/// stops loops; every index, address and length is checked, and each buffer
/// is translated fully through `GuestMemory` (split where it spans regions).
/// Zero-length descriptors are skipped.
public enum DescriptorChainWalker {
    /// Largest indirect table accepted, in descriptors.
    public static let maxIndirectEntries: UInt32 = 1024

    /// Walks the chain at `head` of `queue`'s descriptor table.
    public static func walk(
        queue: SplitQueue, head: UInt16, memory: GuestMemory,
        into iovecs: UnsafeMutableBufferPointer<iovec>
    ) throws(VirtioError) -> ChainBuffers {
        try walk(descTable: UnsafeRawPointer(queue.descTable), size: queue.size, head: head, memory: memory, into: iovecs)
    }

    /// Walks the chain at `head` of the descriptor table at `descTable` (`size` entries).
    public static func walk(
        descTable: UnsafeRawPointer, size: UInt16, head: UInt16, memory: GuestMemory,
        into iovecs: UnsafeMutableBufferPointer<iovec>
    ) throws(VirtioError) -> ChainBuffers {
        guard head < size else { throw .headOutOfRange(head) }
        var table = Table.direct(descTable)
        var tableSize = UInt32(size)
        var ttl = tableSize
        var inIndirect = false
        var index = head
        var result = ChainBuffers(head: head, readableCount: 0, writableCount: 0, readableBytes: 0, writableBytes: 0)
        var count = 0

        while true {
            guard ttl > 0 else { throw .chainTooLong }
            ttl -= 1
            guard let desc = table.descriptor(at: index, memory: memory) else {
                throw .addressUnmapped(addr: table.gpa, length: UInt64(tableSize) * 16)
            }

            if desc.isIndirect {
                guard !inIndirect else { throw .indirectNested }
                guard !desc.hasNext else { throw .indirectWithNext }
                guard desc.len > 0 else { throw .indirectEmpty }
                guard desc.len % UInt32(Descriptor.byteSize) == 0 else { throw .indirectBadLength(desc.len) }
                let entries = desc.len / UInt32(Descriptor.byteSize)
                guard entries <= maxIndirectEntries else { throw .indirectTooLong(desc.len) }
                guard !desc.addr.addingReportingOverflow(UInt64(desc.len)).overflow else {
                    throw .addressOverflow(addr: desc.addr, length: desc.len)
                }
                if let p = memory.hostPointer(gpa: desc.addr, length: UInt64(desc.len)) {
                    table = .direct(UnsafeRawPointer(p))
                } else if memory.isMapped(gpa: desc.addr, length: UInt64(desc.len)) {
                    table = .spanning(gpa: desc.addr)
                } else {
                    throw .addressUnmapped(addr: desc.addr, length: UInt64(desc.len))
                }
                inIndirect = true
                tableSize = entries
                ttl = entries
                index = 0
                continue
            }

            if desc.len > 0 {
                guard !desc.addr.addingReportingOverflow(UInt64(desc.len)).overflow else {
                    throw .addressOverflow(addr: desc.addr, length: desc.len)
                }
                let before = count
                if !memory.appendIOVecs(gpa: desc.addr, length: desc.len, to: iovecs, count: &count) {
                    if memory.isMapped(gpa: desc.addr, length: UInt64(desc.len)) {
                        throw .tooManySegments(limit: iovecs.count)
                    }
                    throw .addressUnmapped(addr: desc.addr, length: UInt64(desc.len))
                }
                let added = count - before
                if desc.isWrite {
                    result.writableCount += added
                    result.writableBytes &+= UInt64(desc.len)  // ≤ 2^57 in total: cannot wrap
                } else {
                    guard result.writableCount == 0 else { throw .readableAfterWritable }
                    result.readableCount += added
                    result.readableBytes &+= UInt64(desc.len)
                }
            }

            guard desc.hasNext else { return result }
            guard UInt32(desc.next) < tableSize else { throw .nextOutOfRange(desc.next) }
            index = desc.next
        }
    }

    /// Where the current descriptor table lives.
    private enum Table {
        /// Contiguous in this process (the main table, or an indirect table in one region).
        case direct(UnsafeRawPointer)
        /// An indirect table spanning adjacent regions: read entry by entry.
        case spanning(gpa: UInt64)

        var gpa: UInt64 {
            if case .spanning(let gpa) = self { return gpa }
            return 0
        }

        @inline(__always)
        func descriptor(at index: UInt16, memory: GuestMemory) -> Descriptor? {
            switch self {
            case .direct(let base):
                return Descriptor(loadingFrom: base + Descriptor.byteSize * Int(index))
            case .spanning(let gpa):
                var raw: (UInt64, UInt64) = (0, 0)
                let ok = withUnsafeMutableBytes(of: &raw) { buffer in
                    memory.read(gpa: gpa &+ UInt64(index) &* 16, into: buffer)
                }
                guard ok else { return nil }
                return withUnsafeBytes(of: &raw) { buffer in
                    guard let base = buffer.baseAddress else { return nil }
                    return Descriptor(loadingFrom: base)
                }
            }
        }
    }
}
