import Glibc
import Posix
import Synchronization
import VhostUser
import Virtio

/// A buffer in the front end's guest memory: its guest-physical address and
/// where this process sees it.
public struct GuestBuffer: @unchecked Sendable {  // points into FrontendMemory's mapping, alive until it closes
    public let gpa: UInt64
    public let pointer: UnsafeMutableRawPointer
    public let length: Int
    /// Offset in the backing memfd (allocator bookkeeping).
    public let offset: Int

    public var bytes: UnsafeMutableRawBufferPointer { UnsafeMutableRawBufferPointer(start: pointer, count: length) }

    /// Copies `data` in at `at` (clipped to the buffer).
    public func write(_ data: [UInt8], at: Int = 0) {
        guard at >= 0, at < length else { return }
        let n = min(data.count, length - at)
        data.withUnsafeBytes { src in
            if let s = src.baseAddress { memcpy(pointer + at, s, n) }
        }
    }

    /// Copies `count` bytes out from `at` (clipped to the buffer).
    public func read(at: Int = 0, count: Int? = nil) -> [UInt8] {
        guard at >= 0, at <= length else { return [] }
        let n = min(count ?? (length - at), length - at)
        return Array(UnsafeRawBufferPointer(start: pointer + at, count: n))
    }
}

/// Guest RAM for the in-repo front end: one memfd, mapped here once, and
/// announced to the back end as one region or as two (split at `splitOffset`,
/// the second optionally moved up in guest-physical space by `gap`, like
/// QEMU's hole below 1 MiB). `userAddr` of each region is this process's
/// virtual address, as QEMU does.
///
/// Allocation: a first-fit free list under a mutex, so queues driven from
/// different threads can allocate and free concurrently.
public final class FrontendMemory: @unchecked Sendable {  // immutable after init except `free` (under its Mutex) and `closed` (atomic)
    public let size: Int
    public let fd: FileDescriptor
    private let closed = Atomic<Bool>(false)
    public let base: UnsafeMutableRawPointer
    /// Where the second region starts in the memfd, if the memory is split.
    public let splitOffset: Int?
    /// Extra guest-physical distance between the two regions (0: contiguous).
    public let gap: UInt64
    /// Guest-physical address of the memfd's first byte (a hot-plugged DIMM's base).
    public let guestBase: UInt64
    /// The table sent in SET_MEM_TABLE (all regions share `fd`).
    public let regions: [MemoryRegionDescriptor]
    private let mapping: SharedMapping
    private let free: Mutex<[Range<Int>]>

    /// - Parameters:
    ///   - size: bytes of guest RAM.
    ///   - splitAt: if set, announce two regions, the second starting at this memfd offset.
    ///   - gap: with `splitAt`, the guest-physical hole before the second region.
    ///   - guestBase: the guest-physical address of the first byte (memory a
    ///     frontend hot-plugs with ADD_MEM_REG lies above the boot RAM).
    public init(size: Int = 64 << 20, splitAt: Int? = nil, gap: UInt64 = 0, guestBase: UInt64 = 0) throws(FrontendError) {
        guard size > 0, size % 4096 == 0 else { throw .invalidArgument("memory size must be a positive multiple of 4096") }
        if let s = splitAt, s <= 0 || s >= size || s % 4096 != 0 {
            throw .invalidArgument("split offset must be page aligned and inside the memory")
        }
        do {
            fd = try Memfd.create(name: "vhost-frontend-ram", size: size)
        } catch {
            throw .system(error)
        }
        do {
            mapping = try SharedMapping(fd: fd, length: size)
        } catch {
            fd.close()
            throw .system(error.errno)
        }
        self.size = size
        self.base = mapping.base
        self.splitOffset = splitAt
        self.gap = splitAt == nil ? 0 : gap
        self.guestBase = guestBase
        let user = UInt64(UInt(bitPattern: mapping.base))
        if let s = splitAt {
            regions = [
                MemoryRegionDescriptor(guestPhysAddr: guestBase, size: UInt64(s), userAddr: user, mmapOffset: 0),
                MemoryRegionDescriptor(
                    guestPhysAddr: guestBase + UInt64(s) + gap, size: UInt64(size - s), userAddr: user + UInt64(s),
                    mmapOffset: UInt64(s)),
            ]
        } else {
            regions = [MemoryRegionDescriptor(guestPhysAddr: guestBase, size: UInt64(size), userAddr: user, mmapOffset: 0)]
        }
        // Keep page 0 unused so gpa 0 never names a live buffer.
        free = Mutex([4096..<size])
    }

    /// Unmaps the memory and closes the memfd, after the back end stopped
    /// using it. Once: a second call does nothing (unmapping or closing again
    /// could hit what another thread has mapped or opened since).
    public func close() {
        guard !closed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        mapping.unmap()
        fd.close()
    }

    // MARK: Addresses

    /// Guest-physical address of memfd offset `offset`.
    public func gpa(ofOffset offset: Int) -> UInt64 {
        if let s = splitOffset, offset >= s { return guestBase + UInt64(offset) + gap }
        return guestBase + UInt64(offset)
    }

    /// Guest-physical address of a pointer into this memory, or nil.
    public func gpa(of pointer: UnsafeRawPointer) -> UInt64? {
        let p = UInt(bitPattern: pointer), b = UInt(bitPattern: base)
        guard p >= b, p - b < UInt(size) else { return nil }
        return gpa(ofOffset: Int(p - b))
    }

    /// This process's pointer for guest-physical `gpa`, or nil if unmapped.
    public func pointer(gpa: UInt64) -> UnsafeMutableRawPointer? {
        for r in regions where gpa >= r.guestPhysAddr && gpa - r.guestPhysAddr < r.size {
            return base + Int(r.mmapOffset + (gpa - r.guestPhysAddr))
        }
        return nil
    }

    /// The front end's virtual address (what SET_VRING_ADDR carries) of a pointer.
    public func userAddr(of pointer: UnsafeRawPointer) -> UInt64 { UInt64(UInt(bitPattern: pointer)) }

    /// A device-side translation table over this memory (for tests that walk
    /// chains with `Virtio` directly, without a back end).
    public func guestMemory() throws(FrontendError) -> GuestMemory {
        do {
            return try GuestMemory(regions: regions.map {
                GuestMemoryRegion(
                    guestPhysAddr: $0.guestPhysAddr, size: $0.size, userAddr: $0.userAddr,
                    host: base + Int($0.mmapOffset))
            })
        } catch {
            throw .virtio(error)
        }
    }

    // MARK: Allocation

    /// Allocates `length` bytes aligned to `alignment` (a power of two). The
    /// buffer never crosses the region split unless `mayStraddle` is set and
    /// the regions are contiguous in guest-physical space.
    public func allocate(_ length: Int, alignment: Int = 64, mayStraddle: Bool = false) throws(FrontendError) -> GuestBuffer {
        guard length > 0, alignment > 0, alignment & (alignment - 1) == 0 else {
            throw .invalidArgument("bad length \(length) or alignment \(alignment)")
        }
        let straddleOK = mayStraddle && gap == 0
        let split = splitOffset
        let found = free.withLock { ranges -> Int? in
            for (i, r) in ranges.enumerated() {
                var start = (r.lowerBound + alignment - 1) & ~(alignment - 1)
                if !straddleOK, let s = split, start < s, start + length > s { start = s }
                guard start + length <= r.upperBound else { continue }
                Self.carve(&ranges, at: i, start ..< start + length)
                return start
            }
            return nil
        }
        guard let offset = found else { throw .outOfGuestMemory(bytes: length) }
        return buffer(offset: offset, length: length)
    }

    /// Allocates `length` bytes that cross the region split in the middle (a
    /// buffer the back end must split into two iovecs). Needs contiguous regions.
    public func allocateStraddlingSplit(_ length: Int) throws(FrontendError) -> GuestBuffer {
        guard let s = splitOffset, gap == 0, length >= 2 else {
            throw .invalidArgument("memory is not split into contiguous regions")
        }
        let wanted = (s - length / 2) ..< (s - length / 2 + length)
        let ok = free.withLock { ranges -> Bool in
            guard let i = ranges.firstIndex(where: { $0.lowerBound <= wanted.lowerBound && wanted.upperBound <= $0.upperBound })
            else { return false }
            Self.carve(&ranges, at: i, wanted)
            return true
        }
        guard ok else { throw .outOfGuestMemory(bytes: length) }
        return buffer(offset: wanted.lowerBound, length: length)
    }

    /// Returns a buffer to the allocator.
    public func release(_ buffer: GuestBuffer) {
        let r = buffer.offset ..< buffer.offset + buffer.length
        free.withLock { ranges in
            var i = ranges.firstIndex(where: { $0.lowerBound >= r.upperBound }) ?? ranges.count
            ranges.insert(r, at: i)
            // Merge with the next and previous neighbours.
            if i + 1 < ranges.count, ranges[i].upperBound == ranges[i + 1].lowerBound {
                ranges[i] = ranges[i].lowerBound ..< ranges[i + 1].upperBound
                ranges.remove(at: i + 1)
            }
            if i > 0, ranges[i - 1].upperBound == ranges[i].lowerBound {
                ranges[i - 1] = ranges[i - 1].lowerBound ..< ranges[i].upperBound
                ranges.remove(at: i)
                i -= 1
            }
        }
    }

    /// Free bytes left (for leak checks in tests).
    public var freeBytes: Int { free.withLock { $0.reduce(0) { $0 + $1.count } } }

    private func buffer(offset: Int, length: Int) -> GuestBuffer {
        memset(base + offset, 0, length)
        return GuestBuffer(gpa: gpa(ofOffset: offset), pointer: base + offset, length: length, offset: offset)
    }

    private static func carve(_ ranges: inout [Range<Int>], at i: Int, _ used: Range<Int>) {
        let r = ranges[i]
        var pieces: [Range<Int>] = []
        if r.lowerBound < used.lowerBound { pieces.append(r.lowerBound ..< used.lowerBound) }
        if used.upperBound < r.upperBound { pieces.append(used.upperBound ..< r.upperBound) }
        ranges.replaceSubrange(i...i, with: pieces)
    }
}
