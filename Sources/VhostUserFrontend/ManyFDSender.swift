import Posix

/// Sends one message with any number of descriptors attached (SCM_RIGHTS),
/// beyond the 8 that `UnixSocket.send` allows: for tests of a back end that
/// must refuse more descriptors than any vhost-user message carries.
public enum ManyFDSender {
    /// `sendmsg` of `bytes` with `fds` (the caller keeps them); returns the bytes sent.
    public static func send(_ socket: FileDescriptor, _ bytes: [UInt8], fds: [FileDescriptor]) throws(Errno) -> Int {
        try UnixSocket.sendUnbounded(socket, bytes, fds: fds)
    }
}
