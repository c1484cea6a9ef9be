import CShims
import Glibc
import Posix

/// The dirty-page log QEMU reads during live migration (vhost-user spec,
/// "Migration"; SET_LOG_BASE with LOG_SHMFD): one bit per 4 KiB
/// guest-physical page, bit `page % 8` of byte `page / 8`. QEMU clears words
/// with atomic exchanges while back-ends set bits, so each set is an atomic OR.
///
/// `@unchecked Sendable`: the mapping is shared memory written only through
/// atomic ORs; it is unmapped when the last holder (the session, the running
/// queues) lets go, so a queue never writes to an unmapped log.
public final class DirtyLog: @unchecked Sendable {  // no lock: atomic ORs from the queues' reactors
    public static let pageSize: UInt64 = 0x1000

    /// The bytes of log that cover guest-physical addresses below `end`, as
    /// QEMU sizes the log it sends (`vhost_get_log_size`): whole 64-bit
    /// words, each for 64 pages.
    public static func bytesCovering(guestPhysicalEnd end: UInt64) -> UInt64 {
        let wordSpan = pageSize * 64
        let words = end / wordSpan + (end % wordSpan == 0 ? 0 : 1)
        return words * 8  // at most 2^46 words
    }

    /// What QEMU adds to a log it grows for a bigger memory table, to resize
    /// it less often (`VHOST_LOG_BUFFER`, at most 4 KiB).
    public static let frontendSlackBytes: UInt64 = 0x1000

    private let mapping: SharedMapping
    private let bytes: UnsafeMutablePointer<UInt8>
    /// Log bytes: pages beyond `sizeBytes * 8` are not logged.
    public let sizeBytes: UInt64

    /// Maps `size` bytes of `fd` at `offset` (the caller closes `fd`).
    public init(fd: FileDescriptor, size: UInt64, offset: UInt64) throws(VhostUserError) {
        guard size > 0, size <= 1 << 40, let length = Int(exactly: size), let at = Int(exactly: offset),
              offset % UInt64(Glibc.getpagesize()) == 0 else {
            throw .invalidLog("log of \(size) bytes at offset \(offset)")
        }
        // Writing beyond the file's end would be SIGBUS: the whole log must exist.
        let st = try? fd.stat()
        let fileSize = st?.st_size ?? 0
        let (end, overflow) = offset.addingReportingOverflow(size)
        guard st != nil, !overflow, end <= UInt64(clamping: fileSize) else {
            throw .invalidLog("log [\(offset), +\(size)) is not inside its \(fileSize)-byte file")
        }
        do {
            mapping = try SharedMapping(fd: fd, length: length, offset: at)
        } catch {
            throw .invalidLog("cannot map the log: \(error)")
        }
        bytes = mapping.base.bindMemory(to: UInt8.self, capacity: length)
        sizeBytes = size
    }

    deinit { mapping.unmap() }

    /// Pages of the log that were gone when touched (the frontend shrank its file).
    public var lostPages: Int { mapping.lostPages }

    /// Marks every page of `[gpa, gpa + length)` dirty.
    public func mark(gpa: UInt64, length: UInt64) {
        guard length > 0 else { return }
        let (last, overflow) = gpa.addingReportingOverflow(length - 1)
        let firstPage = gpa / Self.pageSize
        let lastPage = overflow ? UInt64.max / Self.pageSize : last / Self.pageSize
        var page = firstPage
        while page <= lastPage {
            let byte = page / 8
            guard byte < sizeBytes else { return }
            vb_atomic_or_u8(bytes + Int(byte), UInt8(1) << UInt8(page % 8))
            page += 1
        }
    }
}
