import CShims
import Glibc

/// Unix stream sockets: listen, accept, connect, and messages with SCM_RIGHTS.
public enum UnixSocket {
    /// The longest path a `sockaddr_un` holds (107 bytes plus the NUL).
    public static let maxPathLength = 107

    /// Creates a listening socket at `path` with permission bits `mode`. A stale
    /// socket file at `path` is replaced; any other kind of file is an error (EEXIST).
    public static func listen(path: String, mode: mode_t = 0o600, backlog: Int32 = 128) throws(Errno) -> FileDescriptor {
        guard !path.isEmpty, path.utf8.count <= maxPathLength else { throw Errno(ENAMETOOLONG) }
        var st = Glibc.stat()
        if lstat(path, &st) == 0 {
            guard (st.st_mode & S_IFMT) == S_IFSOCK else { throw Errno.EEXIST }
            unlink(path)
        }
        let fd = FileDescriptor(try retryingEINTR { socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) })
        do throws(Errno) {
            // Bind with a restrictive umask so the socket never exists with looser permissions.
            let oldMask = umask(0o777 & ~mode)
            let rc = vb_unix_bind(fd.rawValue, path)
            umask(oldMask)
            _ = try checkNegErrno(rc)
            _ = try retryingEINTR { chmod(path, mode) }
            _ = try retryingEINTR { Glibc.listen(fd.rawValue, backlog) }
            try fd.setNonBlocking()
            return fd
        } catch {
            fd.close()
            throw error
        }
    }

    /// Accepts one connection (non-blocking listener: nil when none is pending).
    public static func accept(_ listener: FileDescriptor) throws(Errno) -> FileDescriptor? {
        let fd = vb_accept(listener.rawValue)
        if fd >= 0 { return FileDescriptor(fd) }
        if fd == -EAGAIN || fd == -EWOULDBLOCK { return nil }
        throw Errno(0 - fd)
    }

    /// Connects a blocking stream socket to `path`.
    public static func connect(path: String) throws(Errno) -> FileDescriptor {
        let fd = FileDescriptor(try retryingEINTR { socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) })
        do throws(Errno) {
            guard path.utf8.count <= maxPathLength else { throw Errno(ENAMETOOLONG) }
            _ = try checkNegErrno(vb_unix_connect(fd.rawValue, path))
            return fd
        } catch {
            fd.close()
            throw error
        }
    }

    /// Sends `bytes` and `fds` in one message (the fds ride with the first byte).
    /// The caller keeps `fds` (the peer gets duplicates).
    public static func send(_ socket: FileDescriptor, _ bytes: UnsafeRawBufferPointer, fds: [FileDescriptor] = []) throws(Errno) -> Int {
        let raw = fds.map(\.rawValue)
        let n = raw.withUnsafeBufferPointer { f in
            vb_send_with_fds(socket.rawValue, bytes.baseAddress, bytes.count, f.baseAddress, Int32(f.count))
        }
        return try checkNegErrno(n)
    }

    /// Sends all of `bytes`, with `fds` on the first chunk.
    public static func sendAll(_ socket: FileDescriptor, _ bytes: [UInt8], fds: [FileDescriptor] = []) throws(Errno) {
        var offset = 0
        var pendingFDs = fds
        while offset < bytes.count {
            let fdsNow = pendingFDs
            let n = try bytes.withUnsafeBytes { raw in
                Result { () throws(Errno) -> Int in try send(socket, UnsafeRawBufferPointer(rebasing: raw[offset...]), fds: fdsNow) }
            }.get()
            pendingFDs = []
            offset += n
        }
    }

    /// One `recvmsg`: bytes read (0 = peer closed) and the descriptors that
    /// came with them, which the caller owns and must close or hand on.
    public struct Received {
        public var count: Int
        public var fds: [FileDescriptor]
        /// The control data was cut short (more descriptors than expected were sent).
        public var truncated: Bool
    }

    public static func receive(_ socket: FileDescriptor, into buffer: UnsafeMutableRawBufferPointer, maxFDs: Int = 8) throws(Errno) -> Received {
        var fds = [Int32](repeating: -1, count: 16)
        var nfds: Int32 = 0
        var truncated: Int32 = 0
        let n = fds.withUnsafeMutableBufferPointer { f in
            vb_recv_with_fds(socket.rawValue, buffer.baseAddress, buffer.count, f.baseAddress, Int32(min(maxFDs, 16)), &nfds, &truncated)
        }
        let got = fds.prefix(Int(max(0, nfds))).map(FileDescriptor.init)
        if n < 0 {
            got.closeAll()
            throw Errno(Int32(truncatingIfNeeded: -n))
        }
        return Received(count: n, fds: got, truncated: truncated != 0)
    }

    /// One sendmsg(2) of `bytes` with any number of `fds` attached
    /// (SCM_RIGHTS, unix(7)), beyond the 8 that `send` allows: for tests of a
    /// back end that must refuse more descriptors than any message carries.
    /// Returns the bytes sent; the caller keeps `fds`.
    public static func sendUnbounded(_ socket: FileDescriptor, _ bytes: [UInt8], fds: [FileDescriptor]) throws(Errno) -> Int {
        let header = MemoryLayout<cmsghdr>.size
        let align = MemoryLayout<Int>.size
        let dataLength = MemoryLayout<Int32>.size * fds.count
        let space = (header + dataLength + align - 1) / align * align
        let control = UnsafeMutableRawPointer.allocate(byteCount: max(space, header), alignment: align)
        defer { control.deallocate() }
        memset(control, 0, max(space, header))
        let cmsg = control.assumingMemoryBound(to: cmsghdr.self)
        cmsg.pointee.cmsg_len = header + dataLength
        cmsg.pointee.cmsg_level = SOL_SOCKET
        cmsg.pointee.cmsg_type = Int32(SCM_RIGHTS)
        fds.map(\.rawValue).withUnsafeBytes { raw in
            if let base = raw.baseAddress { memcpy(control + header, base, dataLength) }
        }
        var copy = bytes
        return try copy.withUnsafeMutableBytes { raw in
            Result { () throws(Errno) -> Int in
                var iov = iovec(iov_base: raw.baseAddress, iov_len: raw.count)
                return try withUnsafeMutablePointer(to: &iov) { iovPointer in
                    Result { () throws(Errno) -> Int in
                        var message = msghdr()
                        message.msg_iov = iovPointer
                        message.msg_iovlen = 1
                        message.msg_control = control
                        message.msg_controllen = space
                        return try retryingEINTR { sendmsg(socket.rawValue, &message, Int32(MSG_NOSIGNAL)) }
                    }
                }.get()
            }
        }.get()
    }

    /// The peer's process id (SO_PEERCRED), if known.
    public static func peerPID(_ socket: FileDescriptor) -> Int32? {
        let pid = vb_peer_pid(socket.rawValue)
        return pid > 0 ? pid : nil
    }
}
