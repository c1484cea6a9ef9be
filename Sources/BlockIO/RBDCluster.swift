import CRBD
import Glibc
import Posix
import Synchronization

/// A connection to a Ceph cluster (librados' `rados_t`): what
/// `bdev_rbd_register_cluster` names, or a bdev's own when it names none
/// (SPDK's module/bdev/rbd). librados handles are thread-safe; `connect`,
/// `openImage` and `shutdown` block on the network and run off the control
/// loop (StorageCalls).
///
/// `@unchecked Sendable`: the handle is used through librados, which locks
/// internally; `shutdown` happens once (the atomic).
public final class RBDCluster: @unchecked Sendable {
    /// Seconds `connect` and monitor commands wait for an unreachable
    /// cluster unless the configuration says otherwise (Ceph's
    /// `client_mount_timeout` is 300 s; `rados_mon_op_timeout` 0 is forever).
    public static let defaultTimeoutSeconds = 10

    private let handle: rados_t
    private let isShutDown = Atomic<Bool>(false)
    /// The CPUs librados' and librbd's threads run on (SPDK's `core_mask`), or nil: any.
    public let cpus: CPUSet?

    private init(handle: rados_t, cpus: CPUSet?) {
        self.handle = handle
        self.cpus = cpus
    }

    /// Creates, configures and connects a handle: the daemon's timeouts
    /// first, then `configFile` (nil: Ceph's default search, if any), then
    /// `keyFile` and `configParams` (rados_conf_set each), as SPDK's
    /// rbd_register_cluster does. Blocks up to the mount timeout. With
    /// `cpus`, the threads librados starts run there (`onCPUs`).
    public static func connect(
        userID: String?, configParams: [(String, String)], configFile: String?, keyFile: String?, cpus: CPUSet? = nil
    ) throws(BdevOpenError) -> RBDCluster {
        try onCPUs(cpus) { () throws(BdevOpenError) -> RBDCluster in
            try connectHere(userID: userID, configParams: configParams, configFile: configFile, keyFile: keyFile, cpus: cpus)
        }
    }

    private static func connectHere(
        userID: String?, configParams: [(String, String)], configFile: String?, keyFile: String?, cpus: CPUSet?
    ) throws(BdevOpenError) -> RBDCluster {
        var raw: rados_t?
        var rc = rados_create(&raw, userID ?? "admin")
        guard rc == 0, let raw else { throw failure(rc, "rados_create") }
        let cluster = RBDCluster(handle: raw, cpus: cpus)
        let timeout = String(defaultTimeoutSeconds)
        for (key, value) in [("client_mount_timeout", timeout), ("rados_mon_op_timeout", timeout)] {
            _ = rados_conf_set(raw, key, value)
        }
        // As SPDK: the default search (CEPH_CONF, /etc/ceph/ceph.conf...) when no file is named, and then no file is fine.
        rc = rados_conf_read_file(raw, configFile)
        if let configFile, rc != 0 { throw failure(rc, "cannot read config file \(configFile)") }
        if let keyFile {
            rc = rados_conf_set(raw, "keyring", keyFile)
            guard rc == 0 else { throw failure(rc, "cannot set keyring \(keyFile)") }
        }
        for (key, value) in configParams {
            rc = rados_conf_set(raw, key, value)
            guard rc == 0 else { throw failure(rc, "cannot set config option \(key)=\(value)") }
        }
        rc = rados_connect(raw)
        guard rc == 0 else { throw failure(rc, "cannot connect to the Ceph cluster") }
        return cluster
    }

    /// Opens `pool`/`image` (read-only: no exclusive lock, no writes), on
    /// the cluster's CPUs: librbd starts its threads at the first open.
    public func openImage(pool: String, image: String, readOnly: Bool) throws(BdevOpenError) -> RBDImage {
        try Self.onCPUs(cpus) { () throws(BdevOpenError) -> RBDImage in
            try openImageHere(pool: pool, image: image, readOnly: readOnly)
        }
    }

    /// Runs `body` with the calling thread pinned to `cpus` (when given),
    /// then gives the thread its own CPUs back: the threads librados and
    /// librbd start meanwhile inherit the pinning, as SPDK's bdev_rbd applies
    /// `core_mask` (it pins the registering thread around `rados_connect`).
    public static func onCPUs<T>(_ cpus: CPUSet?, _ body: () throws(BdevOpenError) -> T) throws(BdevOpenError) -> T {
        guard let cpus else { return try body() }
        let own = CPUSet.allowed()  // the calling thread's (sched_getaffinity of 0)
        do {
            try PosixThread.pinCurrent(to: cpus)
        } catch {
            throw BdevOpenError(errno: error.rawValue, message: "cannot run on core_mask \(cpus.hexMask): \(error.message)")
        }
        defer { try? PosixThread.pinCurrent(to: own) }
        return try body()
    }

    private func openImageHere(pool: String, image: String, readOnly: Bool) throws(BdevOpenError) -> RBDImage {
        var ioctx: rados_ioctx_t?
        var rc = rados_ioctx_create(handle, pool, &ioctx)
        guard rc == 0, let ioctx else { throw Self.failure(rc, "cannot open pool \(pool)") }
        var opened: rbd_image_t?
        rc = readOnly ? rbd_open_read_only(ioctx, image, &opened, nil) : rbd_open(ioctx, image, &opened, nil)
        guard rc == 0, let opened else {
            rados_ioctx_destroy(ioctx)
            throw Self.failure(rc, "cannot open image \(pool)/\(image)")
        }
        return RBDImage(cluster: self, ioctx: ioctx, image: opened)
    }

    /// Disconnects (once); every image must be closed first.
    public func shutdown() {
        guard !isShutDown.exchange(true, ordering: .acquiringAndReleasing) else { return }
        rados_shutdown(handle)
    }

    deinit { shutdown() }

    static func failure(_ rc: Int32, _ what: String) -> BdevOpenError {
        let errno = rc < 0 ? -rc : EIO
        return BdevOpenError(errno: errno, message: "\(what): \(String(cString: strerror(errno)))")
    }
}
