import Glibc

/// Walks the descriptors of one packed-ring buffer into iovecs (virtio 1.2
/// §2.8.6, §2.8.7), producing the same `ChainBuffers` as the split walker
/// (`head` is the buffer ID), so request parsing and the executor are shared.
///
/// Reads exactly the slots `PackedQueue.popAvail()` measured, whatever their
/// NEXT flags say now (the guest may rewrite them meanwhile). A one-slot
/// buffer may be INDIRECT: its table is `len / 16` consecutive descriptors, in
/// which NEXT and the buffer ID are ignored (§2.8.7; Linux once set NEXT
/// there). INDIRECT inside a table, and INDIRECT in a chain of more than one
/// slot, are refused: drivers must not write them (§2.8.7's "Driver
/// Requirements: Indirect Descriptors"), and the split walker refuses the same.
/// Every address and length is checked, each buffer is translated fully
/// through `GuestMemory` (split where it spans regions), device-readable
/// buffers must precede device-writable ones, and zero-length descriptors are
/// skipped, as in `DescriptorChainWalker`.
public enum PackedChainWalker {
    /// Walks `head` in `queue`'s descriptor ring.
    public static func walk(
        queue: PackedQueue, head: PackedChainHead, memory: GuestMemory,
        into iovecs: UnsafeMutableBufferPointer<iovec>
    ) throws(VirtioError) -> ChainBuffers {
        try walk(ring: UnsafeRawPointer(queue.descRing), size: queue.size, head: head, memory: memory, into: iovecs)
    }

    /// Walks `head` in the descriptor ring at `ring` (`size` slots).
    public static func walk(
        ring: UnsafeRawPointer, size: UInt16, head: PackedChainHead, memory: GuestMemory,
        into iovecs: UnsafeMutableBufferPointer<iovec>
    ) throws(VirtioError) -> ChainBuffers {
        guard head.index < size else { throw .ringIndexOutOfRange(head.index) }
        guard head.slotCount > 0, head.slotCount <= size else { throw .chainTooLong }
        var out = Accumulator(id: head.id, iovecs: iovecs)
        let ringSize = Int(size)
        for k in 0..<Int(head.slotCount) {
            let slot = (Int(head.index) + k) % ringSize
            let desc = PackedDescriptor(loadingFrom: ring + PackedDescriptor.byteSize * slot)
            if desc.isIndirect {
                guard !desc.hasNext else { throw .indirectWithNext }
                guard head.slotCount == 1 else { throw .indirectInChain }
                try walkIndirect(desc, memory: memory, into: &out)
                break
            }
            try out.append(desc, memory: memory)
        }
        return out.result
    }

    /// Appends every entry of the indirect table `desc` points to.
    private static func walkIndirect(
        _ desc: PackedDescriptor, memory: GuestMemory, into out: inout Accumulator
    ) throws(VirtioError) {
        guard desc.len > 0 else { throw .indirectEmpty }
        guard desc.len % UInt32(PackedDescriptor.byteSize) == 0 else { throw .indirectBadLength(desc.len) }
        let entries = desc.len / UInt32(PackedDescriptor.byteSize)
        guard entries <= DescriptorChainWalker.maxIndirectEntries else { throw .indirectTooLong(desc.len) }
        guard !desc.addr.addingReportingOverflow(UInt64(desc.len)).overflow else {
            throw .addressOverflow(addr: desc.addr, length: desc.len)
        }
        let length = UInt64(desc.len)
        if let table = memory.hostPointer(gpa: desc.addr, length: length) {
            for i in 0..<Int(entries) {
                let entry = PackedDescriptor(loadingFrom: table + PackedDescriptor.byteSize * i)
                guard !entry.isIndirect else { throw .indirectNested }
                try out.append(entry, memory: memory)
            }
        } else if memory.isMapped(gpa: desc.addr, length: length) {
            // A table spanning adjacent regions: read entry by entry.
            for i in 0..<UInt64(entries) {
                var raw: (UInt64, UInt64) = (0, 0)
                let ok = withUnsafeMutableBytes(of: &raw) { buffer in
                    memory.read(gpa: desc.addr &+ i &* 16, into: buffer)
                }
                guard ok else { throw .addressUnmapped(addr: desc.addr, length: length) }
                let tail = UInt64(littleEndian: raw.1)  // len, id, flags
                let entry = PackedDescriptor(
                    addr: UInt64(littleEndian: raw.0), len: UInt32(truncatingIfNeeded: tail),
                    id: UInt16(truncatingIfNeeded: tail >> 32), flags: UInt16(truncatingIfNeeded: tail >> 48))
                guard !entry.isIndirect else { throw .indirectNested }
                try out.append(entry, memory: memory)
            }
        } else {
            throw .addressUnmapped(addr: desc.addr, length: length)
        }
    }

    /// The iovecs and byte counts gathered so far.
    private struct Accumulator {
        let iovecs: UnsafeMutableBufferPointer<iovec>
        var result: ChainBuffers
        var count = 0

        init(id: UInt16, iovecs: UnsafeMutableBufferPointer<iovec>) {
            self.iovecs = iovecs
            result = ChainBuffers(head: id, readableCount: 0, writableCount: 0, readableBytes: 0, writableBytes: 0)
        }

        @inline(__always)
        mutating func append(_ desc: PackedDescriptor, memory: GuestMemory) throws(VirtioError) {
            guard desc.len > 0 else { return }
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
                result.writableBytes &+= UInt64(desc.len)  // ≤ 2^15 descriptors of < 2^32 bytes: cannot wrap
            } else {
                guard result.writableCount == 0 else { throw .readableAfterWritable }
                result.readableCount += added
                result.readableBytes &+= UInt64(desc.len)
            }
        }
    }
}
