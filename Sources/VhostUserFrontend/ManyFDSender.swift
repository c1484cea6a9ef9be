import Glibc
import Posix

/// Sends one message with any number of descriptors attached (SCM_RIGHTS),
/// beyond the 8 that `UnixSocket.send` allows: for tests of a back end that
/// must refuse more descriptors than any vhost-user message carries.
public enum ManyFDSender {
    /// `sendmsg` of `bytes` with `fds`; returns the bytes sent.
    public static func send(_ socket: FileDescriptor, _ bytes: [UInt8], fds: [Int32]) throws(Errno) -> Int {
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
        fds.withUnsafeBytes { raw in
            if let base = raw.baseAddress { memcpy(control + header, base, dataLength) }
        }
        var copy = bytes
        let sent = copy.withUnsafeMutableBytes { raw -> Int in
            var iov = iovec(iov_base: raw.baseAddress, iov_len: raw.count)
            return withUnsafeMutablePointer(to: &iov) { iovPointer in
                var message = msghdr()
                message.msg_iov = iovPointer
                message.msg_iovlen = 1
                message.msg_control = control
                message.msg_controllen = space
                return sendmsg(socket.rawValue, &message, Int32(MSG_NOSIGNAL))
            }
        }
        guard sent >= 0 else { throw Errno(errno) }
        return sent
    }
}
