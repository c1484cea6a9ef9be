import Glibc
import Posix
import Virtio

/// The mmapped guest memory of one vhost-user session (SET_MEM_TABLE,
/// ADD_MEM_REG, REM_MEM_REG; vhost-user spec, "Payload" and "Memory access";
/// docs/PROTOCOL-NOTES.md, "Payloads").
///
/// Each region maps `mmapOffset + size` bytes of its fd from offset 0
/// (MAP_SHARED) and uses `base + mmapOffset`, so two regions may share one
/// memfd. fds are closed once mapped: the mappings keep the memory.
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
    /// stays mapped.
    public static func map(_ descriptors: [MemoryRegionDescriptor], fds: [Int32]) throws(VhostUserError) -> GuestMemoryMapping {
        defer { for fd in fds { Glibc.close(fd) } }
        guard descriptors.count == fds.count else {
            throw .wrongFDCount(request: .setMemTable, got: fds.count, expected: descriptors.count)
        }
        var mapped: [MappedRegion] = []
        do throws(VhostUserError) {
            for (i, d) in descriptors.enumerated() {
                mapped.append(try mapRegion(d, fd: fds[i], index: i))
            }
            return try GuestMemoryMapping(regions: mapped)
        } catch {
            for m in mapped { m.mapping.unmap() }
            throw error
        }
    }

    /// ADD_MEM_REG: maps one more region. Takes ownership of `fd` (closed in
    /// all cases). On failure the mapping is unchanged.
    public mutating func add(_ descriptor: MemoryRegionDescriptor, fd: Int32) throws(VhostUserError) {
        defer { Glibc.close(fd) }
        let region = try Self.mapRegion(descriptor, fd: fd, index: regions.count)
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
                host: r.mapping.base + Int(truncatingIfNeeded: r.descriptor.mmapOffset))
        }
        do {
            return try GuestMemory(regions: entries)
        } catch {
            throw .invalidMemoryTable(error)
        }
    }

    /// Validates `d` and maps `mmapOffset + size` bytes of `fd` from offset 0.
    private static func mapRegion(_ d: MemoryRegionDescriptor, fd: Int32, index: Int) throws(VhostUserError) -> MappedRegion {
        guard d.size > 0 else { throw .badRegion(index: index, reason: "size is 0") }
        guard !d.guestPhysAddr.addingReportingOverflow(d.size).overflow else {
            throw .badRegion(index: index, reason: "guest_phys_addr + size overflows")
        }
        guard !d.userAddr.addingReportingOverflow(d.size).overflow else {
            throw .badRegion(index: index, reason: "userspace_addr + size overflows")
        }
        let (end, overflow) = d.mmapOffset.addingReportingOverflow(d.size)
        guard !overflow, let length = Int(exactly: end) else {
            throw .badRegion(index: index, reason: "mmap_offset + size overflows")
        }
        // A mapping past the end of a regular file (memfd, hugetlbfs) would
        // SIGBUS on first touch: refuse it up front.
        var st = stat()
        if fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, Int(st.st_size) < length {
            throw .badRegion(index: index, reason: "mmap_offset + size exceeds the file size \(st.st_size)")
        }
        do throws(SharedMappingError) {
            let mapping = try SharedMapping(fd: FileDescriptor(fd), length: length)
            return MappedRegion(descriptor: d, mapping: mapping)
        } catch .mmap(let e) {
            throw .mapFailed(index: index, errno: e.rawValue)
        } catch {
            throw .badRegion(index: index, reason: "\(error)")  // SharedMappingError.unguarded
        }
    }
}
