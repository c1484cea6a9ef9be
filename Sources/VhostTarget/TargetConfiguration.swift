import Posix

/// How the daemon runs: where its sockets go and which CPUs it serves from.
public struct TargetConfiguration: Sendable {
    /// JSON-RPC socket (SPDK's `-r`).
    public var rpcSocketPath: String = "/var/tmp/vhost-blkd.sock"
    /// Directory for controller sockets, one per controller named after it (SPDK's `-S`).
    public var socketDirectory: String = "/var/tmp/vhost-blkd"
    /// Reactor CPUs, one reactor each (SPDK's `-m`).
    public var cpumask: CPUSet = .allowed()
    /// Serve every bdev with the thread-pool engine even where io_uring works.
    public var forceThreadPool = false
    /// Queues a controller offers (GET_QUEUE_NUM); QEMU defaults to one per vCPU.
    public var maxQueuesPerController = 32

    public init() {}
}
