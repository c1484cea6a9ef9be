import CShims
import Glibc

/// systemd's readiness protocol without libsystemd (sd_notify(3)): each
/// notification is one datagram of newline-separated `VARIABLE=value`
/// assignments (`READY=1`, `STATUS=...`, `STOPPING=1`) sent to the AF_UNIX
/// socket named in `$NOTIFY_SOCKET`; a leading '@' there names a socket in
/// the abstract namespace. Only AF_UNIX addresses are supported (systemd's
/// `vsock:` form is not).
public struct SystemdNotify: Sendable {
    /// The socket's address as `$NOTIFY_SOCKET` gave it.
    public let address: String

    public init?(address: String) {
        guard address.hasPrefix("/") || (address.hasPrefix("@") && address.utf8.count > 1) else { return nil }
        self.address = address
    }

    /// The service manager's socket from `$NOTIFY_SOCKET`, or nil when the
    /// variable is unset (not started by systemd with `Type=notify`) or names
    /// no AF_UNIX socket. With `unsetEnvironment`, the variable is removed (as
    /// sd_notify(3)'s `unset_environment`), so no process started later
    /// inherits it; the returned value keeps the address.
    public static func fromEnvironment(unsetEnvironment: Bool) -> SystemdNotify? {
        guard let raw = getenv("NOTIFY_SOCKET") else { return nil }
        let address = String(cString: raw)
        if unsetEnvironment { unsetenv("NOTIFY_SOCKET") }
        return SystemdNotify(address: address)
    }

    /// Sends `assignments` as one datagram, e.g. `["READY=1", "STATUS=serving"]`.
    public func send(_ assignments: [String]) throws(Errno) {
        let message = Array(assignments.joined(separator: "\n").utf8)
        let fd = FileDescriptor(try retryingEINTR { socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) })
        defer { fd.close() }
        let sent = try checkNegErrno(message.withUnsafeBytes { raw in
            vb_unix_sendto(fd.rawValue, address, raw.baseAddress, raw.count)  // EINTR retried in the shim
        })
        guard sent == message.count else { throw Errno(EMSGSIZE) }
    }
}
