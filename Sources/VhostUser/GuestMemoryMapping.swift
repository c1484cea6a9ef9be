import CShims
import Glibc
import Posix
import Virtio

/// The mmapped guest memory of one vhost-user session (SET_MEM_TABLE,
/// ADD_MEM_REG, REM_MEM_REG; vhost-user spec, "Memory access").
///
/// Each region of a regular file (memfd, tmpfs, hugetlbfs) maps its fd from
/// `mmapOffset` rounded down to the file's page size (hugetlbfs: its huge
/// page) to `mmapOffset + size`, so the address space a table takes is its
/// size: QEMU slices one memfd into RAM below and above 4 GiB, and mapping
/// each slice from offset 0 took the lower slice twice. Other files (device
/// DAX) map from offset 0, whose alignment every device accepts. Two regions
/// may share one fd. fds are closed once mapped: the mappings keep the memory.
///
/// Ownership: the value owns its mappings. Replacing a table or removing a
/// region never unmaps memory a reactor may still use: the caller unmaps the
/// old mapping (`unmapAll()`) or the returned retired mappings once every
/// user of the previous `GuestMemory` has switched over.
public struct GuestMemoryMapping: Sendable {
    /// One mapped region: what the front end described and the mmap behind it.
    public struct MappedRegion: Sendable {
        public let descriptor: MemoryRegionDescriptor
        public let mapping: SharedMapping
        /// Where the region's first byte lies in `mapping`.
        public let hostOffset: Int
    }

    /// A region checked and placed in its file, not mapped yet.
    private struct Plan {
        let descriptor: MemoryRegionDescriptor
        let fd: FileDescriptor
        let fileOffset: Int
        let length: Int
        let hostOffset: Int
    }

    public private(set) var regions: [MappedRegion]
    /// Translation table over `regions`.
    public private(set) var memory: GuestMemory

    /// No regions mapped.
    public init() {
        regions = []
        memory = .empty
    }

    private init(regions: [MappedRegion]) throws(VhostUserError) {
        self.regions = regions
        self.memory = try Self.table(regions)
    }

    /// Maps a SET_MEM_TABLE. Takes ownership of `fds` (one per region, same
    /// order): they are closed on success and on failure. On failure nothing
    /// stays mapped. A table whose mappings would take more than
    /// `maxMappedBytes` of address space is refused before anything is
    /// mapped (`.memoryOverLimit`).
    public static func map(
        _ descriptors: [MemoryRegionDescriptor], fds: [FileDescriptor], maxMappedBytes: UInt64 = .max
    ) throws(VhostUserError) -> GuestMemoryMapping {
        defer { fds.closeAll() }
        guard descriptors.count == fds.count else {
            throw .wrongFDCount(request: .setMemTable, got: fds.count, expected: descriptors.count)
        }
        var plans: [Plan] = []
        var total: UInt64 = 0
        for (i, d) in descriptors.enumerated() {
            let plan = try plan(d, fd: fds[i], index: i)
            plans.append(plan)
            // Each length fits an Int; eight of them cannot overflow, but say so.
            let (sum, overflow) = total.addingReportingOverflow(UInt64(plan.length))
            total = overflow ? .max : sum
        }
        guard total <= maxMappedBytes else { throw .memoryOverLimit(mappedBytes: total, limit: maxMappedBytes) }
        var mapped: [MappedRegion] = []
        do throws(VhostUserError) {
            for (i, plan) in plans.enumerated() {
                mapped.append(try map(plan, index: i))
            }
            return try GuestMemoryMapping(regions: mapped)
        } catch {
            for m in mapped { m.mapping.unmap() }
            throw error
        }
    }

    /// ADD_MEM_REG (vhost-user spec, "VHOST_USER_ADD_MEM_REG"): maps one more
    /// region. Takes ownership of `fd` (closed in all cases). On failure the
    /// mapping is unchanged and nothing new stays mapped. Refused before
    /// mapping: a table already at `maxRegions`, a region overlapping another
    /// in guest-physical or frontend (user) addresses, and one that would
    /// take the mappings past `maxMappedBytes` (`.memoryOverLimit`).
    /// Existing regions keep their mappings, so a `GuestMemory` taken before
    /// stays valid.
    public mutating func add(
        _ descriptor: MemoryRegionDescriptor, fd: FileDescriptor,
        maxMappedBytes: UInt64 = .max, maxRegions: Int = GuestMemory.maxRegions
    ) throws(VhostUserError) {
        defer { fd.close() }
        let index = regions.count
        guard index < maxRegions else { throw .tooManyRegions(count: UInt32(clamping: index + 1), limit: maxRegions) }
        let plan = try Self.plan(descriptor, fd: fd, index: index)
        // plan() checked that neither end of the new region overflows.
        for existing in regions {
            let e = existing.descriptor
            if descriptor.guestPhysAddr < e.guestPhysAddr &+ e.size && e.guestPhysAddr < descriptor.guestPhysAddr &+ descriptor.size {
                throw .badRegion(index: index, reason: "guest-physical range overlaps the region at gpa 0x\(String(e.guestPhysAddr, radix: 16)) size 0x\(String(e.size, radix: 16))")
            }
            if descriptor.userAddr < e.userAddr &+ e.size && e.userAddr < descriptor.userAddr &+ descriptor.size {
                throw .badRegion(index: index, reason: "userspace_addr range overlaps the region at gpa 0x\(String(e.guestPhysAddr, radix: 16)) size 0x\(String(e.size, radix: 16))")
            }
        }
        let (total, overflow) = mappedBytes.addingReportingOverflow(UInt64(plan.length))
        guard !overflow, total <= maxMappedBytes else {
            throw .memoryOverLimit(mappedBytes: overflow ? .max : total, limit: maxMappedBytes)
        }
        let region = try Self.map(plan, index: index)
        let candidate = regions + [region]
        do throws(VhostUserError) {
            memory = try Self.table(candidate)
            regions = candidate
        } catch {
            region.mapping.unmap()
            throw error
        }
    }

    /// REM_MEM_REG: drops the region matching `descriptor`'s guest address,
    /// user address and size (the mmap offset is ignored, per the spec).
    /// Returns the retired mapping: unmap it once no reactor uses the old table.
    public mutating func remove(_ descriptor: MemoryRegionDescriptor) throws(VhostUserError) -> SharedMapping {
        guard let index = regions.firstIndex(where: {
            $0.descriptor.guestPhysAddr == descriptor.guestPhysAddr
                && $0.descriptor.userAddr == descriptor.userAddr
                && $0.descriptor.size == descriptor.size
        }) else {
            throw .regionNotFound(guestPhysAddr: descriptor.guestPhysAddr, size: descriptor.size)
        }
        var remaining = regions
        let removed = remaining.remove(at: index)
        memory = try Self.table(remaining)
        regions = remaining
        return removed.mapping
    }

    /// Address space the regions' mappings take.
    public var mappedBytes: UInt64 { regions.reduce(0) { $0 &+ UInt64($1.mapping.length) } }

    /// The end of the highest guest-physical range in the table (0 when
    /// empty): what a dirty log must cover (vhost-user spec, "Migration").
    public var guestPhysicalEnd: UInt64 {
        // Validated by `GuestMemory`: no region's end overflows.
        memory.regions.reduce(0) { Swift.max($0, $1.guestPhysAddr &+ $1.size) }
    }

    /// Pages of the regions that were gone when touched: the frontend shrank a
    /// file it shared (`SharedMemoryGuard` put zero pages in their place).
    public var lostPages: Int { regions.reduce(0) { $0 + $1.mapping.lostPages } }

    /// Unmaps every region. Call once, after the last user of `memory` is gone.
    public func unmapAll() {
        for r in regions { r.mapping.unmap() }
    }

    private static func table(_ regions: [MappedRegion]) throws(VhostUserError) -> GuestMemory {
        let entries = regions.map { r in
            GuestMemoryRegion(
                guestPhysAddr: r.descriptor.guestPhysAddr, size: r.descriptor.size,
                userAddr: r.descriptor.userAddr,
                host: r.mapping.base + r.hostOffset)
        }
        do {
            return try GuestMemory(regions: entries)
        } catch {
            throw .invalidMemoryTable(error)
        }
    }

    /// Validates `d` and places it in its file (see the type's comment).
    private static func plan(_ d: MemoryRegionDescriptor, fd: FileDescriptor, index: Int) throws(VhostUserError) -> Plan {
        guard d.size > 0 else { throw .badRegion(index: index, reason: "size is 0") }
        guard !d.guestPhysAddr.addingReportingOverflow(d.size).overflow else {
            throw .badRegion(index: index, reason: "guest_phys_addr + size overflows")
        }
        guard !d.userAddr.addingReportingOverflow(d.size).overflow else {
            throw .badRegion(index: index, reason: "userspace_addr + size overflows")
        }
        let (end, overflow) = d.mmapOffset.addingReportingOverflow(d.size)
        guard !overflow, let endOffset = Int(exactly: end) else {
            throw .badRegion(index: index, reason: "mmap_offset + size overflows")
        }
        guard let st = try? fd.stat(), (st.st_mode & S_IFMT) == S_IFREG else {
            // Not a regular file (or no fstat): from offset 0, as any device allows.
            return Plan(descriptor: d, fd: fd, fileOffset: 0, length: endOffset, hostOffset: Int(truncatingIfNeeded: d.mmapOffset))
        }
        // A mapping past the end of a regular file (memfd, hugetlbfs) would
        // SIGBUS on first touch: refuse it up front.
        if Int(st.st_size) < endOffset {
            throw .badRegion(index: index, reason: "mmap_offset + size exceeds the file size \(st.st_size)")
        }
        let page = pageSize(of: fd)
        let start = d.mmapOffset - d.mmapOffset % page
        var length = end - start  // start <= mmapOffset < end
        if page > UInt64(getpagesize()) {
            // hugetlbfs maps and unmaps whole huge pages.
            let (roundedUp, overflow) = length.addingReportingOverflow(page - 1)
            guard !overflow else { throw .badRegion(index: index, reason: "mmap_offset + size overflows") }
            length = roundedUp / page * page
        }
        guard let fileOffset = Int(exactly: start), let mappedLength = Int(exactly: length) else {
            throw .badRegion(index: index, reason: "mmap_offset + size overflows")
        }
        return Plan(descriptor: d, fd: fd, fileOffset: fileOffset, length: mappedLength, hostOffset: Int(truncatingIfNeeded: d.mmapOffset - start))
    }

    /// The page size mmap offsets in `fd`'s file must be multiples of: a
    /// hugetlbfs file's huge page, the system page otherwise.
    private static func pageSize(of fd: FileDescriptor) -> UInt64 {
        let hugetlbfsMagic = 0x9584_58f6
        if let fs = try? fd.fileSystemStat(), Int(fs.f_type) == hugetlbfsMagic, fs.f_bsize > 0 { return UInt64(fs.f_bsize) }
        return UInt64(getpagesize())
    }

    private static func map(_ plan: Plan, index: Int) throws(VhostUserError) -> MappedRegion {
        do throws(SharedMappingError) {
            let mapping = try SharedMapping(fd: plan.fd, length: plan.length, offset: plan.fileOffset)
            return MappedRegion(descriptor: plan.descriptor, mapping: mapping, hostOffset: plan.hostOffset)
        } catch .mmap(let e) {
            throw .mapFailed(index: index, errno: e.rawValue)
        } catch {
            throw .badRegion(index: index, reason: "\(error)")  // SharedMappingError.unguarded
        }
    }
}
