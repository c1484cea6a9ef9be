import Glibc
import Synchronization

/// The RAM behind a malloc bdev (`bdev_malloc_create`): an anonymous
/// MAP_NORESERVE mapping, so untouched blocks cost nothing and read as zeroes.
///
/// The mapping reserves address space beyond the size (`capacityBytes`), so
/// the bdev grows in place (`resize`) without moving memory that reactors use.
///
/// `@unchecked Sendable`: the mapping is fixed; reactors copy in and out of
/// disjoint or guest-ordered ranges (a disk gives no stronger guarantee);
/// `release` is once-only and must follow the bdev's detach from every reactor.
public final class MemoryBacking: @unchecked Sendable {  // no lock: reactors copy; size atomic (see above)
    public let base: UnsafeMutableRawPointer
    /// The size I/O may use; changed by `resize`.
    public var sizeBytes: UInt64 { size.load(ordering: .acquiring) }
    /// The most `resize` can grow to: the reserved address space.
    public let capacityBytes: UInt64
    private let size: Atomic<UInt64>
    private let released = Atomic<Bool>(false)

    /// Address space reserved beyond the size: growth without remapping.
    static let growthReserve: UInt64 = 16 << 30

    /// Maps `sizeBytes` (1 byte ... Int.max) of zeroed memory, reserving room to grow.
    public init(sizeBytes: UInt64) throws(BdevOpenError) {
        guard sizeBytes > 0, Int(exactly: sizeBytes) != nil else {
            throw .invalid("Invalid memory bdev size \(sizeBytes)")
        }
        let (reserve, overflow) = sizeBytes.addingReportingOverflow(max(sizeBytes, Self.growthReserve))
        var mapped: UnsafeMutableRawPointer? = nil
        var capacity = sizeBytes
        if !overflow, let length = Int(exactly: reserve) {
            mapped = Self.map(length)
            capacity = reserve
        }
        if mapped == nil {
            // Strict overcommit may refuse the reserve: map the size alone.
            mapped = Self.map(Int(sizeBytes))
            capacity = sizeBytes
        }
        guard let mapped else {
            let error = errno
            throw BdevOpenError(errno: error, message: "Cannot allocate \(sizeBytes) bytes: \(String(cString: strerror(error)))")
        }
        base = mapped
        capacityBytes = capacity
        size = Atomic(sizeBytes)
    }

    private static func map(_ length: Int) -> UnsafeMutableRawPointer? {
        let mapped: UnsafeMutableRawPointer? = mmap(
            nil, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        guard let mapped, mapped != UnsafeMutableRawPointer(bitPattern: -1) else { return nil }
        return mapped
    }

    /// Sets the size to `newSize` (1 ... `capacityBytes`). Memory beyond a
    /// smaller size is returned to the kernel, so a later growth reads zeroes.
    /// Callers shrink only once no request beyond the new end is in flight.
    public func resize(to newSize: UInt64) throws(BdevOpenError) {
        guard newSize > 0, newSize <= capacityBytes else {
            throw .invalid("Cannot resize to \(newSize) bytes: a malloc bdev grows in place up to \(capacityBytes >> 20) MiB")
        }
        if released.load(ordering: .relaxed) { throw .system(ENXIO, "malloc bdev") }
        let old = sizeBytes
        if newSize < old {
            size.store(newSize, ordering: .releasing)
            _ = discardTail(from: newSize, to: old)
        } else {
            size.store(newSize, ordering: .releasing)
        }
    }

    /// Zeroes `[from, to)` without bounds checks against the current size.
    private func discardTail(from: UInt64, to: UInt64) -> Int32 {
        guard from < to, let start = Int(exactly: from), let stop = Int(exactly: to) else { return 0 }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let firstPage = (start + page - 1) / page * page
        let lastPage = stop / page * page
        if firstPage < lastPage {
            memset(base + start, 0, firstPage - start)
            if madvise(base + firstPage, lastPage - firstPage, MADV_DONTNEED) != 0 {
                memset(base + firstPage, 0, lastPage - firstPage)
            }
            memset(base + lastPage, 0, stop - lastPage)
        } else {
            memset(base + start, 0, stop - start)
        }
        return 0
    }

    deinit { release() }

    /// Copies `[offset, offset + total)` into the iovecs; returns bytes or -errno
    /// (-EINVAL out of range or over Int32.max bytes, -EFAULT for a null buffer, -ENXIO after `release`).
    public func read(into iovecs: UnsafePointer<iovec>, count: Int, offset: UInt64) -> Int32 {
        let checked = check(iovecs, count: count, offset: offset)
        guard checked >= 0 else { return checked }
        var position = Int(offset)  // checked: offset + total <= sizeBytes <= Int.max
        for index in 0..<count {
            let vec = iovecs[index]
            guard vec.iov_len > 0, let target = vec.iov_base else { continue }
            memcpy(target, base + position, vec.iov_len)
            position += vec.iov_len
        }
        return checked
    }

    /// Copies the iovecs to `offset`; returns bytes or -errno (as `read`).
    public func write(from iovecs: UnsafePointer<iovec>, count: Int, offset: UInt64) -> Int32 {
        let checked = check(iovecs, count: count, offset: offset)
        guard checked >= 0 else { return checked }
        var position = Int(offset)
        for index in 0..<count {
            let vec = iovecs[index]
            guard vec.iov_len > 0, let source = vec.iov_base else { continue }
            memcpy(base + position, source, vec.iov_len)
            position += vec.iov_len
        }
        return checked
    }

    /// Zeroes `[offset, offset + length)` (DISCARD and WRITE_ZEROES): whole pages
    /// are returned to the kernel with MADV_DONTNEED, partial pages are memset.
    /// Returns 0 or -errno.
    public func discard(offset: UInt64, length: UInt64) -> Int32 {
        if released.load(ordering: .relaxed) { return -ENXIO }
        let (end, overflow) = offset.addingReportingOverflow(length)
        guard !overflow, end <= sizeBytes else { return -EINVAL }
        return discardTail(from: offset, to: end)
    }

    /// Unmaps the memory (once). No I/O may be in flight or follow.
    public func release() {
        let (exchanged, _) = released.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing)
        if exchanged { munmap(base, Int(capacityBytes)) }
    }

    /// Total iovec length if `[offset, offset + total)` lies inside the mapping, else -errno.
    private func check(_ iovecs: UnsafePointer<iovec>, count: Int, offset: UInt64) -> Int32 {
        if released.load(ordering: .relaxed) { return -ENXIO }
        guard count >= 0 else { return -EINVAL }
        var total: UInt64 = 0
        for index in 0..<count {
            let vec = iovecs[index]
            if vec.iov_len > 0 && vec.iov_base == nil { return -EFAULT }
            let (sum, overflow) = total.addingReportingOverflow(UInt64(vec.iov_len))
            if overflow { return -EINVAL }
            total = sum
        }
        let (end, overflow) = offset.addingReportingOverflow(total)
        guard !overflow, end <= sizeBytes, let result = Int32(exactly: total) else { return -EINVAL }
        return result
    }
}
