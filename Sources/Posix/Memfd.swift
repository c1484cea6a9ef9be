import CShims
import Glibc

/// A shared-memory mapping of a file descriptor (guest memory regions, memfds).
/// Owns the mapping: `unmap()` exactly once.
public struct SharedMapping: @unchecked Sendable {  // the pointer is shared guest memory; users synchronise via the ring protocol
    public let base: UnsafeMutableRawPointer
    public let length: Int

    /// Maps `length` bytes of `fd` from offset 0, read-write, MAP_SHARED.
    public init(fd: FileDescriptor, length: Int, offset: Int = 0) throws(Errno) {
        guard length > 0 else { throw Errno.EINVAL }
        let p = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd.rawValue, off_t(offset))
        guard let p, p != MAP_FAILED else { throw Errno.current }
        base = p
        self.length = length
    }

    public func unmap() { munmap(base, length) }
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
