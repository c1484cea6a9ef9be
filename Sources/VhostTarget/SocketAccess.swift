import Glibc
import JSONRPC
import Posix
import VhostBlkAPI

/// A controller socket's `socket_mode`/`socket_group` as requested (issue 5,
/// "who may do what"): nil members mean the default, 0600 and the daemon's group.
struct SocketPermissions: Equatable {
    var mode: SocketMode?
    var group: SocketGroup?

    /// The bits to create the socket with.
    var modeBits: mode_t { mode.map { mode_t($0.bits) } ?? 0o600 }
}

/// Group lookups and ownership changes for Unix sockets.
public enum SocketAccess {
    /// The gid for a group name or a decimal gid; nil for an unknown name.
    public static func gid(named text: String) -> gid_t? {
        guard let group = SocketGroup(text: text) else { return nil }
        return gid(for: group)
    }

    /// The gid for `group`; nil for an unknown name.
    static func gid(for group: SocketGroup) -> gid_t? {
        switch group {
        case .id(let id):
            return gid_t(id)
        case .name(let name):
            var size = max(1024, sysconf(Int32(_SC_GETGR_R_SIZE_MAX)))
            while size <= 1 << 20 {
                var entry = group_struct()
                var result: UnsafeMutablePointer<group_struct>?
                var buffer = [CChar](repeating: 0, count: size)
                let rc = buffer.withUnsafeMutableBufferPointer { b in
                    getgrnam_r(name, &entry, b.baseAddress, b.count, &result)
                }
                if rc == ERANGE {
                    size *= 2
                    continue
                }
                guard rc == 0, result != nil else { return nil }
                return entry.gr_gid
            }
            return nil
        }
    }

    /// Gives the file at `path` to group `gid`, keeping its owner.
    static func setGroup(path: String, gid: gid_t) throws(Errno) {
        try FileSystem.setGroup(path, gid: gid)
    }
}

/// glibc's `struct group` (named to keep it apart from `SocketGroup`).
typealias group_struct = Glibc.group

extension VhostTarget {
    /// Listens on a controller socket with `permissions` applied (mode at
    /// bind time, then the group), so libvirt's QEMU user can connect.
    /// Nothing is left behind on failure.
    func listenControllerSocket(path: String, permissions: SocketPermissions) throws(RPCError) -> FileDescriptor {
        var gid: gid_t?
        if let group = permissions.group {
            guard let resolved = SocketAccess.gid(for: group) else {
                throw .invalidParams("Unknown group '\(group)' for socket_group")
            }
            gid = resolved
        }
        let listener: FileDescriptor
        do {
            listener = try UnixSocket.listen(path: path, mode: permissions.modeBits)
        } catch {
            throw .invalidParams("\(error.message): cannot listen on \(path)")
        }
        if let gid, let group = permissions.group {
            do {
                try SocketAccess.setGroup(path: path, gid: gid)
            } catch {
                listener.close()
                FileSystem.removeFile(path)
                throw .invalidParams("\(error.message): cannot give \(path) to group \(group)")
            }
        }
        return listener
    }
}
