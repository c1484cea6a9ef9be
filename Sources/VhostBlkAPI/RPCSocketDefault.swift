/// Where the daemon's sockets are when nothing says otherwise: one default
/// shared by `vhost-blkd -r`/`-S`, `vhost-blkctl -s`, the example systemd unit
/// and the docs (docs/OPERATIONS.md, "Sockets and permissions").
///
/// `/run/vhost-blkd` is the unit's `RuntimeDirectory=` (systemd.exec(5)):
/// memory-backed, root-owned, emptied at boot, and visible to every process,
/// where `/var/tmp` is world-writable, survives reboots and is private to a
/// unit with `PrivateTmp=yes`. Because `sudo` resets the environment
/// (sudoers(5), `env_reset`), the CLI's built-in default, not a variable, must
/// be where the service listens.
public enum RPCSocketDefault {
    /// The JSON-RPC socket.
    public static let path = "/run/vhost-blkd/rpc.sock"
    /// The directory of controller sockets.
    public static let socketDirectory = "/run/vhost-blkd"
    /// The variable both `vhost-blkd` and `vhost-blkctl` read for the RPC
    /// socket when `-r`/`-s` is not given (an unprivileged or second daemon).
    public static let environmentVariable = "VHOST_BLKD_RPC_SOCKET"

    /// `value` (the variable's, if set and not empty), else `path`.
    public static func resolve(environment value: String?) -> String {
        if let value, !value.isEmpty { return value }
        return path
    }
}
