import Glibc
import Posix
import Testing
import Virtio
@testable import VhostUser

@Suite struct MappingTests {
    /// A memfd of `size` bytes whose byte i holds `UInt8(i / 4096)` at each page start.
    func memfd(_ size: Int) throws -> FileDescriptor {
        let fd = try Memfd.create(name: "test", size: size)
        let map = try SharedMapping(fd: fd, length: size)
        for page in stride(from: 0, to: size, by: 4096) {
            map.base.storeBytes(of: UInt8(truncatingIfNeeded: page / 4096), toByteOffset: page, as: UInt8.self)
        }
        map.unmap()
        return fd
    }

    /// `fd` still refers to the file whose inode was `ino` (fd numbers are
    /// reused by tests running in parallel, so compare inodes).
    func stillOpen(_ fd: FileDescriptor, _ ino: UInt) -> Bool { Self.inode(fd) == ino }

    static func inode(_ fd: FileDescriptor) -> UInt {
        (try? fd.stat()).map { UInt($0.st_ino) } ?? 0
    }

    @Test func twoRegionsShareOneMemfdAtDifferentOffsets() throws {
        let fd = try memfd(0x100000)
        let ino_fd = Self.inode(fd)
        let dup = try fd.duplicate()
        let ino_dup = Self.inode(dup)
        // As QEMU sends it: gpa 0 size 0xa0000, and gpa 0xc0000 at offset 0xc0000.
        let table = [
            MemoryRegionDescriptor(guestPhysAddr: 0, size: 0xa0000, userAddr: 0x7f00_0000_0000, mmapOffset: 0),
            MemoryRegionDescriptor(guestPhysAddr: 0xc0000, size: 0x40000, userAddr: 0x7f00_000c_0000, mmapOffset: 0xc0000),
        ]
        let mapping = try GuestMemoryMapping.map(table, fds: [fd, dup])
        defer { mapping.unmapAll() }
        #expect(!stillOpen(fd, ino_fd))
        #expect(!stillOpen(dup, ino_dup))
        let mem = mapping.memory
        #expect(mem.regions.count == 2)
        let p = try #require(mem.hostPointer(gpa: 0xc0000, length: 1))
        #expect(p.load(as: UInt8.self) == 0xc0)
        let q = try #require(mem.hostPointer(gpa: 0x9f000, length: 4096))
        #expect(q.load(as: UInt8.self) == 0x9f)
        let u = try #require(mem.hostPointer(userAddr: 0x7f00_000d_0000, length: 16))
        #expect(u.load(as: UInt8.self) == 0xd0)
        #expect(mem.hostPointer(gpa: 0xa0000, length: 1) == nil)
        // Both regions alias one file: gpa 0 and gpa 0xc0000 map offsets 0 and 0xc0000 of it.
        p.storeBytes(of: 0x55, as: UInt8.self)
        #expect(mem.hostPointer(gpa: 0, length: 1)?.load(as: UInt8.self) == 0x00)
        #expect(mem.hostPointer(gpa: 0xc0000, length: 1)?.load(as: UInt8.self) == 0x55)
    }

    @Test func overlappingRegionsRejectedAndNothingLeaks() throws {
        let a = try memfd(0x20000), b = try memfd(0x20000)
        let ino_a = Self.inode(a)
        let ino_b = Self.inode(b)
        let table = [
            MemoryRegionDescriptor(guestPhysAddr: 0, size: 0x20000, userAddr: 0x1000_0000, mmapOffset: 0),
            MemoryRegionDescriptor(guestPhysAddr: 0x10000, size: 0x10000, userAddr: 0x2000_0000, mmapOffset: 0x10000),
        ]
        #expect(throws: VhostUserError.invalidMemoryTable(.overlappingRegions(first: 0, second: 1))) {
            try GuestMemoryMapping.map(table, fds: [a, b])
        }
        #expect(!stillOpen(a, ino_a))
        #expect(!stillOpen(b, ino_b))
    }

    @Test func malformedRegionsRejected() throws {
        let cases: [(MemoryRegionDescriptor, String)] = [
            (MemoryRegionDescriptor(guestPhysAddr: 0, size: 0, userAddr: 0, mmapOffset: 0), "size is 0"),
            (MemoryRegionDescriptor(guestPhysAddr: .max - 10, size: 0x1000, userAddr: 0, mmapOffset: 0), "guest_phys_addr + size overflows"),
            (MemoryRegionDescriptor(guestPhysAddr: 0, size: 0x1000, userAddr: .max, mmapOffset: 0), "userspace_addr + size overflows"),
            (MemoryRegionDescriptor(guestPhysAddr: 0, size: 0x1000, userAddr: 0, mmapOffset: .max), "mmap_offset + size overflows"),
            (MemoryRegionDescriptor(guestPhysAddr: 0, size: 0x20000, userAddr: 0, mmapOffset: 0x1000), "mmap_offset + size exceeds the file size 131072"),
        ]
        for (region, reason) in cases {
            let fd = try memfd(0x20000)
            let ino_fd = Self.inode(fd)
            #expect(throws: VhostUserError.badRegion(index: 0, reason: reason)) {
                try GuestMemoryMapping.map([region], fds: [fd])
            }
            #expect(!stillOpen(fd, ino_fd))
        }
        let fd = try memfd(0x1000)
        let ino_fd = Self.inode(fd)
        #expect(throws: VhostUserError.wrongFDCount(request: .setMemTable, got: 1, expected: 0)) {
            try GuestMemoryMapping.map([], fds: [fd])
        }
        #expect(!stillOpen(fd, ino_fd))
    }

    @Test func addAndRemoveRegions() throws {
        let r0 = MemoryRegionDescriptor(guestPhysAddr: 0, size: 0x10000, userAddr: 0x1000_0000, mmapOffset: 0)
        var mapping = try GuestMemoryMapping.map([r0], fds: [try memfd(0x10000)])
        let r1 = MemoryRegionDescriptor(guestPhysAddr: 0x10000, size: 0x10000, userAddr: 0x2000_0000, mmapOffset: 0x10000)
        let fd1 = try memfd(0x20000)
        let ino_fd1 = Self.inode(fd1)
        try mapping.add(r1, fd: fd1)
        #expect(!stillOpen(fd1, ino_fd1))
        #expect(mapping.memory.regions.count == 2)
        #expect(mapping.memory.hostPointer(gpa: 0x10000, length: 1)?.load(as: UInt8.self) == 0x10)
        #expect(mapping.memory.isMapped(gpa: 0xff00, length: 0x200))

        // Overlapping add leaves the mapping unchanged.
        let fd2 = try memfd(0x10000)
        let ino_fd2 = Self.inode(fd2)
        #expect(throws: VhostUserError.badRegion(index: 2, reason: "guest-physical range overlaps the region at gpa 0x10000 size 0x10000")) {
            try mapping.add(MemoryRegionDescriptor(guestPhysAddr: 0x18000, size: 0x1000, userAddr: 0x3000_0000, mmapOffset: 0), fd: fd2)
        }
        #expect(!stillOpen(fd2, ino_fd2))
        #expect(mapping.regions.count == 2)
        // So does one whose frontend addresses overlap another region's.
        #expect(throws: VhostUserError.badRegion(index: 2, reason: "userspace_addr range overlaps the region at gpa 0x0 size 0x10000")) {
            try mapping.add(MemoryRegionDescriptor(guestPhysAddr: 0x40000, size: 0x1000, userAddr: 0x1000_f000, mmapOffset: 0), fd: try memfd(0x1000))
        }
        // And one past the slot count or the address-space limit, before anything is mapped.
        #expect(throws: VhostUserError.tooManyRegions(count: 3, limit: 2)) {
            try mapping.add(MemoryRegionDescriptor(guestPhysAddr: 0x40000, size: 0x1000, userAddr: 0x3000_0000, mmapOffset: 0), fd: try memfd(0x1000), maxRegions: 2)
        }
        #expect(throws: VhostUserError.memoryOverLimit(mappedBytes: 0x21000, limit: 0x20fff)) {
            try mapping.add(MemoryRegionDescriptor(guestPhysAddr: 0x40000, size: 0x1000, userAddr: 0x3000_0000, mmapOffset: 0), fd: try memfd(0x1000), maxMappedBytes: 0x20fff)
        }
        #expect(mapping.regions.count == 2 && mapping.mappedBytes == 0x20000)

        // Remove ignores mmap_offset, needs a matching gpa/userAddr/size.
        var lookup = r0
        lookup.mmapOffset = 0x9999
        let retired = try mapping.remove(lookup)
        #expect(mapping.memory.regions.count == 1)
        #expect(mapping.memory.hostPointer(gpa: 0, length: 1) == nil)
        retired.unmap()
        #expect(throws: VhostUserError.regionNotFound(guestPhysAddr: 0, size: 0x10000)) {
            _ = try mapping.remove(r0)
        }
        mapping.unmapAll()
    }

    // MARK: Address space (issue 19 item 4)

    /// QEMU slices one memfd into RAM below and above 4 GiB: each slice is
    /// mapped once, from its own offset, so the table takes its size in
    /// address space (from offset 0 it took the lower slice twice).
    @Test func slicesOfOneMemfdAreMappedOnce() throws {
        let fd = try memfd(0x100000)
        let dup = try fd.duplicate()
        let table = [
            MemoryRegionDescriptor(guestPhysAddr: 0, size: 0x80000, userAddr: 0x7f00_0000_0000, mmapOffset: 0),
            MemoryRegionDescriptor(guestPhysAddr: 0x1_0000_0000, size: 0x80000, userAddr: 0x7f00_0008_0000, mmapOffset: 0x80000),
        ]
        let mapping = try GuestMemoryMapping.map(table, fds: [fd, dup])
        defer { mapping.unmapAll() }
        #expect(mapping.mappedBytes == 0x100000)
        #expect(mapping.regions.map(\.mapping.length) == [0x80000, 0x80000])
        #expect(mapping.guestPhysicalEnd == 0x1_0008_0000)
        #expect(mapping.memory.hostPointer(gpa: 0x1_0000_0000, length: 1)?.load(as: UInt8.self) == 0x80)
        #expect(mapping.memory.hostPointer(gpa: 0x1_0007_f000, length: 1)?.load(as: UInt8.self) == 0xff)
        #expect(mapping.memory.hostPointer(gpa: 0x7f000, length: 1)?.load(as: UInt8.self) == 0x7f)
    }

    /// An mmap offset inside a page: the mapping starts at that page, the
    /// region at its offset in it.
    @Test func unalignedOffsetMapsFromItsPage() throws {
        let fd = try memfd(0x3000)
        let byte = try SharedMapping(fd: fd, length: 0x3000)
        byte.base.storeBytes(of: 0xab, toByteOffset: 0x1800, as: UInt8.self)
        byte.unmap()
        let region = MemoryRegionDescriptor(guestPhysAddr: 0x4000, size: 0x1000, userAddr: 0x1000_0000, mmapOffset: 0x1800)
        let mapping = try GuestMemoryMapping.map([region], fds: [fd])
        defer { mapping.unmapAll() }
        #expect(mapping.mappedBytes == 0x1800)  // [0x1000, 0x2800) of the file
        #expect(mapping.memory.hostPointer(gpa: 0x4000, length: 1)?.load(as: UInt8.self) == 0xab)
    }

    /// A table over the limit is refused before any region is mapped: eight
    /// regions of 12.5 TiB over one sparse 12.5 TiB memfd (they all alias its
    /// start) cost nothing to ask for and would take 100 TiB of address space.
    @Test func tableOverTheLimitIsRefusedUnmapped() throws {
        let slice: UInt64 = 25 << 39  // 12.5 TiB
        let fd = try Memfd.create(name: "sparse", size: Int(slice))
        let ino = Self.inode(fd)
        let table = (0..<8).map {
            MemoryRegionDescriptor(guestPhysAddr: UInt64($0) * slice, size: slice, userAddr: UInt64($0 + 1) << 44, mmapOffset: 0)
        }
        let fds = try (0..<8).map { _ in try fd.duplicate() }
        fd.close()
        #expect(throws: VhostUserError.memoryOverLimit(mappedBytes: 8 * slice, limit: 64 << 30)) {
            try GuestMemoryMapping.map(table, fds: fds, maxMappedBytes: 64 << 30)
        }
        #expect(fds.allSatisfy { !stillOpen($0, ino) })
        // At the limit exactly, a table is mapped.
        let small = try memfd(0x10000)
        let mapping = try GuestMemoryMapping.map(
            [MemoryRegionDescriptor(guestPhysAddr: 0, size: 0x10000, userAddr: 0x1000_0000, mmapOffset: 0)],
            fds: [small], maxMappedBytes: 0x10000)
        #expect(mapping.mappedBytes == 0x10000)
        mapping.unmapAll()
    }
}
