import BlockIO
import Glibc
import Posix
import VhostBlkAPI

/// How the daemon runs: where its sockets go and which CPUs it serves from.
public struct TargetConfiguration: Sendable {
    /// JSON-RPC socket (SPDK's `-r`).
    public var rpcSocketPath: String = RPCSocketDefault.path
    /// Directory for controller sockets, one per controller named after it (SPDK's `-S`).
    public var socketDirectory: String = RPCSocketDefault.socketDirectory
    /// Reactor CPUs, one reactor each (SPDK's `-m`).
    public var cpumask: CPUSet = .allowed()
    /// The CPUs the process may use, read when the configuration is made
    /// (on the main thread, before any thread is pinned): what an RPC's
    /// CPU mask is checked against (a control thread's own CPUs are fewer).
    public var allowedCPUs: CPUSet = .allowed()
    /// Where the threads other than reactors run (`--control-cpus`, or the
    /// allowed CPUs less the reactors'); nil: left where they start.
    public var controlCPUs: ControlCPUs?
    /// Serve every bdev with the thread-pool engine even where io_uring works.
    public var forceThreadPool = false
    /// `bdev_uring_create` files on tmpfs or ramfs do their I/O as syscalls on
    /// the reactor instead of through io_uring, which hands each to a worker
    /// thread there (`--tmpfs-io inline`, the default; `engine` turns it off).
    public var inlineMemoryFilesystemIO = true
    /// Queues a controller offers (GET_QUEUE_NUM); QEMU defaults to one per vCPU.
    public var maxQueuesPerController = 32
    /// What each frontend session may make the daemon hold
    /// (`--max-session-memory`, `--max-requests-per-queue`).
    public var sessionLimits = SessionLimits()
    /// Permission bits of the RPC socket (`--rpc-socket-mode`).
    public var rpcSocketMode: mode_t = 0o600
    /// Group of the RPC socket (`--rpc-socket-group`); nil keeps the daemon's.
    public var rpcSocketGroup: gid_t?
    /// Which files `bdev_uring_create`/`bdev_aio_create` may open (`--allowed-dir`).
    public var backingPathPolicy = BackingPathPolicy()
    /// SPDK `save_config` file replayed at start (`--config`).
    public var configFile: String?
    /// Rewrite `configFile` after every successful change (`--persist`); a
    /// missing file then means a first boot and the daemon starts empty.
    public var persistConfig = false
    /// `--strict-config`: the first `configFile` entry that fails stops the
    /// start (exit 1). Without it the entry is logged, listed by
    /// `framework_get_failed_config`, kept in a persisted file, and the rest
    /// of the file is served (docs/OPERATIONS.md, "Boot with a bad entry").
    public var strictConfig = false
    /// systemd's notification socket (`Type=notify`, from `$NOTIFY_SOCKET`):
    /// `READY=1` once the RPC socket and every restored controller's socket
    /// exist, `STATUS=` lines, `STOPPING=1` at shutdown. Nil: not notified.
    public var systemdNotify: SystemdNotify?
    /// Prometheus text endpoint (`--metrics`); nil: off.
    public var metricsAddress: MetricsAddress?
    /// The log threshold every logger of the daemon reads (`--log-level`,
    /// then `log_set_level`/`log_set_print_level`; LogMethods.swift).
    public var logControl = LogControl(level: .info)

    /// Adaptive polling: the longest a reactor spins after activity before
    /// sleeping, in microseconds (QEMU's poll-max-ns); 0 turns polling off.
    public var pollMaxMicroseconds: UInt64 = 64
    /// io_uring submission-queue polling for every reactor's ring (`--sqpoll-idle-ms`,
    /// `--sqpoll-cpu`); nil: submissions are system calls.
    public var submissionPolling: SubmissionPolling?

    public init() {}
}
