import Glibc

/// One mapped range of guest RAM (a vhost-user memory table entry after mmap).
///
/// `@unchecked Sendable`: `host` points into a mapping whose owner (the
/// vhost-user session) keeps it alive while any copy of a table that holds it
/// is in use; the bytes themselves are shared with the guest and never trusted.
public struct GuestMemoryRegion: @unchecked Sendable {  // immutable; mapped on the control loop, read on the queues' reactors
    /// First guest-physical address of the region.
    public let guestPhysAddr: UInt64
    /// Length in bytes (non-zero).
    public let size: UInt64
    /// The frontend's (QEMU's) virtual address of the region's first byte.
    public let userAddr: UInt64
    /// This process's address of the region's first byte.
    public let host: UnsafeMutableRawPointer

    public init(guestPhysAddr: UInt64, size: UInt64, userAddr: UInt64, host: UnsafeMutableRawPointer) {
        self.guestPhysAddr = guestPhysAddr
        self.size = size
        self.userAddr = userAddr
        self.host = host
    }

    /// Host pointer for `[start, start + length)` where `start` is in the
    /// address space whose base is `base`, or nil if it is not fully inside.
    @inline(__always)
    fileprivate func translate(_ address: UInt64, base: UInt64, length: UInt64) -> UnsafeMutableRawPointer? {
        guard address >= base else { return nil }
        let offset = address &- base
        guard offset < size, length <= size &- offset else { return nil }
        // offset < size <= Int.max (checked in GuestMemory.init).
        return host + Int(truncatingIfNeeded: offset)
    }
}

/// An immutable table of guest memory regions with address translation.
///
/// Cheap to copy; regions are kept sorted by guest-physical address. Lookups
/// scan linearly (vhost-user tables are small). `@unchecked Sendable` for the
/// same reason as `GuestMemoryRegion`.
public struct GuestMemory: @unchecked Sendable {  // immutable; built on the control loop, read on the queues' reactors
    /// Upper bound on regions, what GET_MAX_MEM_SLOTS answers (vhost-user
    /// spec, "VHOST_USER_GET_MAX_MEM_SLOTS"): the largest `VHOST_USER_MAX_RAM_SLOTS`
    /// of any QEMU (docs/PROTOCOL-NOTES.md, "Memory slots").
    public static let maxRegions = 512

    /// The regions, sorted by guest-physical address.
    public let regions: [GuestMemoryRegion]

    /// A table with no regions: every translation fails.
    public static let empty = GuestMemory(unchecked: [])

    private init(unchecked regions: [GuestMemoryRegion]) { self.regions = regions }

    /// Validates and sorts `regions`.
    ///
    /// Rejects a size of 0, a size above `Int.max`, `gpa + size` or
    /// `userAddr + size` overflowing, overlapping guest-physical ranges, and
    /// more than `maxRegions` regions.
    public init(regions: [GuestMemoryRegion]) throws(VirtioError) {
        guard regions.count <= Self.maxRegions else { throw .tooManyRegions(count: regions.count) }
        for (i, r) in regions.enumerated() {
            guard r.size > 0, Int(exactly: r.size) != nil,
                  !r.guestPhysAddr.addingReportingOverflow(r.size).overflow,
                  !r.userAddr.addingReportingOverflow(r.size).overflow
            else { throw .badRegion(index: i) }
        }
        let order = regions.indices.sorted { regions[$0].guestPhysAddr < regions[$1].guestPhysAddr }
        for k in order.indices.dropFirst() {
            let prev = regions[order[k - 1]], cur = regions[order[k]]
            // No overflow: validated above.
            if prev.guestPhysAddr &+ prev.size > cur.guestPhysAddr {
                throw .overlappingRegions(first: order[k - 1], second: order[k])
            }
        }
        self.regions = order.map { regions[$0] }
    }

    /// Host pointer for `[gpa, gpa + length)` only if the range lies inside one region.
    /// Use for rings, headers and indirect tables.
    public func hostPointer(gpa: UInt64, length: UInt64) -> UnsafeMutableRawPointer? {
        for r in regions {
            if let p = r.translate(gpa, base: r.guestPhysAddr, length: length) { return p }
        }
        return nil
    }

    /// Host pointer for `[userAddr, userAddr + length)` given in frontend virtual
    /// addresses (SET_VRING_ADDR), only if the range lies inside one region.
    public func hostPointer(userAddr: UInt64, length: UInt64) -> UnsafeMutableRawPointer? {
        for r in regions {
            if let p = r.translate(userAddr, base: r.userAddr, length: length) { return p }
        }
        return nil
    }

    /// The guest-physical address of `host`, a pointer into a region (dirty
    /// logging maps the iovecs the device wrote back to guest pages).
    public func guestPhysAddr(ofHost host: UnsafeRawPointer) -> UInt64? {
        let address = UInt(bitPattern: host)
        for region in regions {
            let start = UInt(bitPattern: region.host)
            guard address >= start else { continue }
            let offset = UInt64(address - start)
            if offset < region.size { return region.guestPhysAddr &+ offset }
        }
        return nil
    }

    /// Whether every byte of `[gpa, gpa + length)` is mapped (possibly across regions).
    public func isMapped(gpa: UInt64, length: UInt64) -> Bool {
        var cur = gpa
        var remaining = length
        while remaining > 0 {
            guard let r = region(containing: cur) else { return false }
            let avail = r.size &- (cur &- r.guestPhysAddr)
            let chunk = min(avail, remaining)
            remaining &-= chunk
            cur = cur &+ chunk
            if remaining > 0 && cur == 0 { return false }  // wrapped past 2^64
        }
        return true
    }

    /// Appends iovecs covering `[gpa, gpa + length)` to `iovecs[count...]`, one
    /// per region the range touches, advancing `count`.
    ///
    /// Returns false, leaving `count` as it was, if any byte is unmapped or
    /// `iovecs` has no room. A zero length appends nothing and succeeds.
    public func appendIOVecs(
        gpa: UInt64, length: UInt32, to iovecs: UnsafeMutableBufferPointer<iovec>, count: inout Int
    ) -> Bool {
        var n = count
        var cur = gpa
        var remaining = UInt64(length)
        while remaining > 0 {
            guard n >= 0, n < iovecs.count, let r = region(containing: cur) else { return false }
            let offset = cur &- r.guestPhysAddr
            let chunk = min(r.size &- offset, remaining)
            iovecs[n] = iovec(
                iov_base: r.host + Int(truncatingIfNeeded: offset),
                iov_len: Int(truncatingIfNeeded: chunk))
            n += 1
            remaining &-= chunk
            let (next, overflow) = cur.addingReportingOverflow(chunk)
            if overflow && remaining > 0 { return false }
            cur = next
        }
        count = n
        return true
    }

    /// Copies `buffer.count` bytes starting at `gpa` into `buffer`, crossing
    /// regions as needed. Returns false if any byte is unmapped.
    public func read(gpa: UInt64, into buffer: UnsafeMutableRawBufferPointer) -> Bool {
        guard let base = buffer.baseAddress else { return true }
        var cur = gpa
        var done = 0
        while done < buffer.count {
            guard let r = region(containing: cur) else { return false }
            let offset = cur &- r.guestPhysAddr
            let chunk = Int(truncatingIfNeeded: min(r.size &- offset, UInt64(buffer.count - done)))
            memcpy(base + done, r.host + Int(truncatingIfNeeded: offset), chunk)
            done += chunk
            let (next, overflow) = cur.addingReportingOverflow(UInt64(chunk))
            if overflow && done < buffer.count { return false }
            cur = next
        }
        return true
    }

    @inline(__always)
    private func region(containing gpa: UInt64) -> GuestMemoryRegion? {
        for r in regions where gpa >= r.guestPhysAddr && gpa &- r.guestPhysAddr < r.size {
            return r
        }
        return nil
    }
}
