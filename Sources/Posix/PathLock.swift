import Glibc

/// An exclusive `flock` on a lock file next to a socket, so that a second
/// daemon refuses to start instead of stealing the socket (SPDK does the same
/// with `<socket>.lock`).
public struct PathLock: Sendable {
    public let path: String
    private let fd: FileDescriptor

    /// Takes the lock or throws EWOULDBLOCK when another process holds it.
    public init(path: String) throws(Errno) {
        self.path = path
        fd = try FileDescriptor.open(path, flags: O_RDWR | O_CREAT, mode: 0o600)
        if flock(fd.rawValue, LOCK_EX | LOCK_NB) != 0 {
            let e = errno
            fd.close()
            throw Errno(e)
        }
    }

    /// Releases the lock and removes the lock file.
    public func release() {
        unlink(path)
        fd.close()
    }
}
