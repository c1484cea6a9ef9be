import Glibc
import Testing
import Virtio

@Suite struct GuestMemoryTests {
    @Test func regionsAreSortedByGPA() throws {
        let g = try FakeGuest()
        #expect(g.memory.regions.map(\.guestPhysAddr) == [0, 0x80000])
        #expect(GuestMemory.empty.regions.isEmpty)
        #expect(GuestMemory.empty.hostPointer(gpa: 0, length: 1) == nil)
    }

    @Test func translatesInsideAndRejectsAcrossBoundary() throws {
        let g = try FakeGuest()
        #expect(g.memory.hostPointer(gpa: 0x7fff0, length: 16) == g.base + 0x7fff0)
        #expect(g.memory.hostPointer(gpa: 0x7fff8, length: 16) == nil)  // spans A and B
        #expect(g.memory.hostPointer(gpa: 0x80000, length: 16) == g.base + 0x90000)
        #expect(g.memory.hostPointer(gpa: 0xffff0, length: 16) == g.base + 0x90000 + 0x7fff0)
        #expect(g.memory.hostPointer(gpa: 0xffff1, length: 16) == nil)  // past the end
        #expect(g.memory.hostPointer(gpa: 0x100000, length: 1) == nil)
        #expect(g.memory.hostPointer(gpa: UInt64.max, length: UInt64.max) == nil)
    }

    @Test func translatesUserAddresses() throws {
        let g = try FakeGuest()
        #expect(g.memory.hostPointer(userAddr: FakeGuest.userA + 0x10, length: 8) == g.base + 0x10)
        #expect(g.memory.hostPointer(userAddr: FakeGuest.userB + 0x7fff8, length: 8) == g.base + 0x90000 + 0x7fff8)
        #expect(g.memory.hostPointer(userAddr: FakeGuest.userB + 0x7fff8, length: 9) == nil)
        #expect(g.memory.hostPointer(userAddr: FakeGuest.userA - 1, length: 1) == nil)
    }

    @Test func appendIOVecsSplitsAcrossRegions() throws {
        let g = try FakeGuest()
        var count = 1
        #expect(g.memory.appendIOVecs(gpa: 0x7ff00, length: 0x200, to: g.iovecs, count: &count))
        #expect(count == 3)
        #expect(g.iov(1).base == g.base + 0x7ff00 && g.iov(1).len == 0x100)
        #expect(g.iov(2).base == g.base + 0x90000 && g.iov(2).len == 0x100)
        #expect(g.memory.isMapped(gpa: 0x7ff00, length: 0x200))
    }

    @Test func appendIOVecsFailsWithoutSideEffects() throws {
        let g = try FakeGuest(iovecCapacity: 2)
        var count = 1
        // Needs two entries, only one left.
        #expect(!g.memory.appendIOVecs(gpa: 0x7ff00, length: 0x200, to: g.iovecs, count: &count))
        #expect(count == 1)
        // Runs off the end of region B.
        #expect(!g.memory.appendIOVecs(gpa: 0xfff00, length: 0x200, to: g.iovecs, count: &count))
        #expect(count == 1)
        #expect(!g.memory.isMapped(gpa: 0xfff00, length: 0x200))
        // Zero length succeeds and appends nothing.
        #expect(g.memory.appendIOVecs(gpa: 0xdead_0000, length: 0, to: g.iovecs, count: &count))
        #expect(count == 1)
    }

    @Test func readCrossesRegions() throws {
        let g = try FakeGuest()
        g.write([1, 2, 3, 4], at: 0x7fffe)
        var out = [UInt8](repeating: 0, count: 4)
        #expect(out.withUnsafeMutableBytes { g.memory.read(gpa: 0x7fffe, into: $0) })
        #expect(out == [1, 2, 3, 4])
        #expect(!out.withUnsafeMutableBytes { g.memory.read(gpa: 0xffffe, into: $0) })
    }

    @Test func rejectsBadTables() throws {
        let p = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 8)
        defer { p.deallocate() }
        func region(_ gpa: UInt64, _ size: UInt64, user: UInt64 = 0x1000) -> GuestMemoryRegion {
            GuestMemoryRegion(guestPhysAddr: gpa, size: size, userAddr: user, host: p)
        }
        #expect(throws: VirtioError.badRegion(index: 0)) { try GuestMemory(regions: [region(0, 0)]) }
        #expect(throws: VirtioError.badRegion(index: 1)) {
            try GuestMemory(regions: [region(0, 16), region(UInt64.max - 8, 16)])
        }
        #expect(throws: VirtioError.badRegion(index: 0)) {
            try GuestMemory(regions: [region(0, 16, user: UInt64.max - 4)])
        }
        #expect(throws: VirtioError.overlappingRegions(first: 1, second: 0)) {
            try GuestMemory(regions: [region(0x100, 0x100), region(0, 0x101)])
        }
        #expect(throws: VirtioError.overlappingRegions(first: 0, second: 1)) {
            try GuestMemory(regions: [region(0x100, 0x100), region(0x1ff, 0x10)])
        }
        // Adjacent is fine, and so is a region ending at 2^64 - 1.
        let ok = try GuestMemory(regions: [region(0x100, 0x100), region(0x200, 0x10), region(UInt64.max - 16, 16)])
        #expect(ok.regions.count == 3)
        // QEMU's vhost-user limit (VHOST_USER_MAX_RAM_SLOTS) fits, one more does not.
        #expect(try GuestMemory(regions: (0..<512).map { region(UInt64($0) * 16, 16) }).regions.count == 512)
        let many = (0..<513).map { region(UInt64($0) * 16, 16) }
        #expect(throws: VirtioError.tooManyRegions(count: 513)) { try GuestMemory(regions: many) }
    }
}

@Suite struct FeaturesTests {
    @Test func bitsAndNames() {
        #expect(VirtioFeatures.version1.rawValue == 1 << 32)
        #expect(VirtioFeatures.eventIdx.rawValue == 1 << 29)
        #expect(VirtioFeatures.ringReset.rawValue == 1 << 40)
        #expect(VirtioFeatures.configWCE.rawValue == 1 << 11)
        let f: VirtioFeatures = [.flush, .version1, VirtioFeatures(rawValue: 1 << 3)]
        #expect(f.names == ["bit 3", "FLUSH", "VERSION_1"])
        #expect(VirtioFeatures().names.isEmpty)
    }
}
