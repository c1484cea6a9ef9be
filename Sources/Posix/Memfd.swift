import CShims
import Glibc

/// A shared-memory mapping of a file descriptor (guest memory regions, memfds).
/// Owns the mapping: `unmap()` exactly once.
///
/// Each mapping is registered with `SharedMemoryGuard` (when installed): if
/// the file shrinks under it, accesses past the end find zero pages instead
/// of killing the process, and `lostPages` tells. A mapping the installed
/// guard cannot take is unmapped and refused (`SharedMappingError.unguarded`).
///
/// `@unchecked Sendable`: immutable; its owner (the daemon's control loop)
/// maps and unmaps it; reactors share the bytes under the ring protocol.
public struct SharedMapping: @unchecked Sendable {  // control loop maps; reactors use the bytes
    public let base: UnsafeMutableRawPointer
    public let length: Int
    private let guardSlot: Int32

    /// Maps `length` bytes of `fd` from offset 0, read-write, MAP_SHARED.
    public init(fd: FileDescriptor, length: Int, offset: Int = 0) throws(SharedMappingError) {
        guard length > 0 else { throw .mmap(.EINVAL) }
        let p = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd.rawValue, off_t(offset))
        guard let p, p != MAP_FAILED else { throw .mmap(.current) }
        do {
            guardSlot = try SharedMemoryGuard.register(p, length: length)
        } catch {
            munmap(p, length)
            throw .unguarded(error)
        }
        base = p
        self.length = length
    }

    /// Pages that were gone when touched (the file shrank) and now read as zeros.
    public var lostPages: Int { SharedMemoryGuard.lostPages(guardSlot) }

    public func unmap() {
        SharedMemoryGuard.unregister(guardSlot)
        munmap(base, length)
    }
}

public enum Memfd {
    /// Creates an anonymous memory file of `size` bytes.
    public static func create(name: String, size: Int) throws(Errno) -> FileDescriptor {
        let fd = FileDescriptor(try retryingEINTR { memfd_create(name, vb_mfd_cloexec()) })
        if ftruncate(fd.rawValue, off_t(size)) != 0 {
            let e = Errno.current
            fd.close()
            throw e
        }
        return fd
    }
}
