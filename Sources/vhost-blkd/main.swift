import ArgumentParser
import Glibc
import Logging
import BlockIO
import Posix
import VhostBlkAPI
import VhostTarget

/// `vhost-blkd`: serves vhost-user-blk controllers, managed over an SPDK-compatible JSON-RPC socket.
struct VhostBlkd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vhost-blkd",
        abstract: "Serve files, block devices and RAM as virtio-blk disks to QEMU over vhost-user.",
        discussion: """
            Manage it with vhost-blkctl or SPDK's rpc.py (spdk-rpc -s RPC_SOCKET ...).
            Without --rpc-socket the daemon listens on $VHOST_BLKD_RPC_SOCKET if set, else on \
            /run/vhost-blkd/rpc.sock, where vhost-blkctl looks by default too (it reads the same variable).
            Set VHOST_BLKD_ENGINE=thread-pool (or pass --engine thread-pool) to serve every bdev \
            with the thread-pool engine instead of io_uring.
            Started by systemd with Type=notify (NOTIFY_SOCKET set), it sends READY=1 once the RPC \
            socket and every controller socket restored from --config exist, and STOPPING=1 at shutdown.
            A failed I/O is logged with its bdev, offset and errno and fails in the guest; \
            bdev_set_error_policy NAME pause makes a full disk stall the guest instead, until \
            bdev_resume_io NAME (after space is freed).
            Defaults: --rpc-socket /run/vhost-blkd/rpc.sock, --socket-dir /run/vhost-blkd, \
            --log-level info, --log-format text, --max-queues 32, --max-session-memory 64G, --max-requests-per-queue 1024, \
            --poll-max-us 64, --tmpfs-io inline, --rpc-socket-mode 0600.
            --version prints the version this build was made from (`git describe` when it was built: \
            scripts/version.sh), the one spdk_get_version reports; vhost-blkctl --version prints its own.
            """,
        version: BuildVersion.current.text)

    @Option(name: [.customShort("r"), .customLong("rpc-socket")], help: "JSON-RPC Unix socket path (default: $VHOST_BLKD_RPC_SOCKET, else /run/vhost-blkd/rpc.sock); a missing parent directory is created.")
    var rpcSocket: String?

    @Option(name: [.customShort("S"), .customLong("socket-dir")], help: "Directory for controller sockets.")
    var socketDir = RPCSocketDefault.socketDirectory

    @Option(name: [.customShort("m"), .customLong("cpumask")], help: "Reactor CPUs as a hex mask (0x3) or a list ([0,2-3]); default: all allowed CPUs.")
    var cpumask: String?

    @Option(name: .customLong("control-cpus"), help: "CPUs of the threads other than reactors (control loop, storage calls, thread-pool and io_uring workers), as -m; within the allowed CPUs. Default: the allowed CPUs less the reactors' (none left: not pinned).")
    var controlCPUs: String?

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical; logs go to standard error. Changed at runtime by the log_set_level RPC (until the restart).")
    var logLevel = "info"

    @Option(name: .customLong("log-format"), help: "text (default: one line per message) or json (one JSON object per line: timestamp, level, label, source, message, metadata).")
    var logFormat = "text"

    @Option(name: .customLong("engine"), help: "I/O engine: io_uring (default, falls back to the thread pool when unavailable) or thread-pool.")
    var engine: String?

    @Option(name: .customLong("tmpfs-io"), help: "I/O on bdev_uring files on tmpfs or ramfs: inline (default: syscalls on the reactor, a page-cache copy each) or engine (io_uring, which hands each to a kernel worker thread there).")
    var tmpfsIO = "inline"

    @Option(name: .customLong("sqpoll-idle-ms"), help: "io_uring submission polling: a kernel thread per reactor picks up submissions (no system call) and spins this many milliseconds (1-60000) after the last one before it sleeps; off by default. Worth it only with spare CPUs: the thread's CPU time is the daemon's.")
    var sqpollIdleMs: UInt32?

    @Option(name: .customLong("sqpoll-cpu"), help: "The CPU the submission-polling kernel threads run on (with --sqpoll-idle-ms); default: any CPU the daemon may use.")
    var sqpollCPU: Int?

    @Option(name: .customLong("metrics"), help: "Serve Prometheus metrics (GET /metrics) on unix:PATH or 127.0.0.1:PORT; off by default.")
    var metrics: String?
    @Option(name: .customLong("max-queues"), help: "Queues each controller offers (GET_QUEUE_NUM), 1-256.")
    var maxQueues = 32

    @Option(name: .customLong("max-session-memory"), help: "Guest memory one frontend may have the daemon map, in bytes or with a K, M, G or T suffix (1M-128T); a memory table over it disconnects the frontend.")
    var maxSessionMemory = "64G"

    @Option(name: .customLong("max-requests-per-queue"), help: "Requests one queue may have in flight, 1-32768, whatever its ring size; more wait in the ring.")
    var maxRequestsPerQueue = 1024

    @Option(name: .customLong("poll-max-us"), help: "Adaptive polling: the longest a reactor spins after activity before it sleeps, in microseconds, 0-10000 (0: never poll).")
    var pollMaxUs: UInt64 = 64

    @Option(name: .customLong("config"), help: "SPDK save_config JSON file replayed at start; an entry that fails is logged and left out (framework_get_failed_config lists it, framework_retry_failed_config retries it) and the rest is served.")
    var configFile: String?

    @Flag(name: .customLong("strict-config"), help: "The first --config entry that fails stops the start (exit 1) instead of being left out.")
    var strictConfig = false

    @Flag(name: .customLong("persist"), help: "Rewrite the --config file atomically after every successful change (a missing file is a first boot: start empty).")
    var persist = false

    @Option(name: .customLong("rpc-socket-mode"), help: "Permission bits of the RPC socket, octal.")
    var rpcSocketMode = "0600"

    @Option(name: .customLong("rpc-socket-group"), help: "Group (name or gid) of the RPC socket.")
    var rpcSocketGroup: String?

    @Option(name: .customLong("allowed-dir"), help: "Directory bdev_uring_create/bdev_aio_create may open files in (repeatable); default: any absolute path.")
    var allowedDirs: [String] = []

    mutating func run() throws {
        guard let level = Logger.Level(rawValue: logLevel.lowercased()) else {
            throw ValidationError("unknown log level '\(logLevel)'")
        }
        guard let format = LogFormat(rawValue: logFormat) else {
            throw ValidationError("unknown --log-format '\(logFormat)' (text or json)")
        }
        var config = TargetConfiguration()
        config.rpcSocketPath = rpcSocket
            ?? RPCSocketDefault.resolve(environment: ProcessInfoLite.environment(RPCSocketDefault.environmentVariable))
        config.socketDirectory = socketDir
        config.maxQueuesPerController = maxQueues
        guard pollMaxUs <= 10_000 else { throw ValidationError("--poll-max-us must be 0...10000") }
        config.pollMaxMicroseconds = pollMaxUs
        guard (1...256).contains(maxQueues) else { throw ValidationError("--max-queues must be 1...256") }
        guard let memory = ByteSize.parse(maxSessionMemory), SessionLimits.memoryRange.contains(memory) else {
            throw ValidationError("--max-session-memory takes bytes or a size such as 64G, from 1M to 128T, not '\(maxSessionMemory)'")
        }
        config.sessionLimits.maxMemoryBytes = memory
        guard SessionLimits.requestsRange.contains(maxRequestsPerQueue) else {
            throw ValidationError("--max-requests-per-queue must be 1...32768")
        }
        config.sessionLimits.maxRequestsPerQueue = maxRequestsPerQueue
        if let cpumask {
            guard let mask = CPUSet(parsing: cpumask) else { throw ValidationError("invalid cpumask '\(cpumask)'") }
            let allowed = CPUSet.allowed()
            guard mask.isSubset(of: allowed) else {
                throw ValidationError("cpumask \(mask.hexMask) includes CPUs this process may not use (allowed: \(allowed.hexMask))")
            }
            config.cpumask = mask
        }
        do {
            config.controlCPUs = try ControlCPUs.resolve(requested: controlCPUs, reactors: config.cpumask, allowed: CPUSet.allowed())
        } catch {
            throw ValidationError(error.description)
        }
        let engineChoice = engine ?? ProcessInfoLite.environment("VHOST_BLKD_ENGINE") ?? "io_uring"
        switch engineChoice {
        case "io_uring", "uring": config.forceThreadPool = false
        case "thread-pool", "threadpool": config.forceThreadPool = true
        default: throw ValidationError("unknown engine '\(engineChoice)' (io_uring or thread-pool)")
        }
        switch tmpfsIO {
        case "inline": config.inlineMemoryFilesystemIO = true
        case "engine": config.inlineMemoryFilesystemIO = false
        default: throw ValidationError("unknown --tmpfs-io '\(tmpfsIO)' (inline or engine)")
        }
        try applySubmissionPolling(to: &config)
        try applyAccessOptions(to: &config)
        if let metrics {
            guard let address = MetricsAddress(parsing: metrics) else {
                throw ValidationError("--metrics takes unix:PATH or an IPv4 HOST:PORT such as 127.0.0.1:9500, not '\(metrics)'")
            }
            config.metricsAddress = address
        }

        let logControl = LogControl(level: level)
        config.logControl = logControl
        LoggingSystem.bootstrap { label in
            DaemonLogHandler(label: label, format: format, control: logControl)
        }
        let logger = Logger(label: "vhost-blkd")

        // Block the shutdown signals before any thread starts, so only the signalfd sees them.
        var signals = sigset_t()
        sigemptyset(&signals)
        sigaddset(&signals, SIGINT)
        sigaddset(&signals, SIGTERM)
        pthread_sigmask(SIG_BLOCK, &signals, nil)
        signal(SIGPIPE, SIG_IGN)

        // Before any thread starts: growing the descriptor table later stalls an RPC (FileDescriptorTable).
        let openFiles = FileDescriptorTable.prepare()
        logger.debug("descriptor limit \(openFiles)")

        // systemd's Type=notify (sd_notify(3)): READY=1 once every socket exists. The
        // variable is removed so nothing the daemon starts inherits it.
        let notifySocket = ProcessInfoLite.environment("NOTIFY_SOCKET")
        config.systemdNotify = SystemdNotify.fromEnvironment(unsetEnvironment: true)
        if config.systemdNotify == nil, let raw = notifySocket {
            logger.warning("NOTIFY_SOCKET '\(raw)' is not an AF_UNIX socket path or @abstract name: systemd is not notified")
        }
        let target = try VhostTarget(configuration: config, logger: logger)
        do {
            try target.shutdownOn(signals: [SIGINT, SIGTERM])
            try target.start()
        } catch let error as TargetStartError {
            logger.critical("\(error.description)")
            throw ExitCode(1)
        }
        target.run()
    }
}

extension VhostBlkd {
    /// --sqpoll-idle-ms and --sqpoll-cpu.
    func applySubmissionPolling(to config: inout TargetConfiguration) throws {
        guard let idle = sqpollIdleMs else {
            if sqpollCPU != nil { throw ValidationError("--sqpoll-cpu needs --sqpoll-idle-ms") }
            return
        }
        guard (1...60_000).contains(idle) else { throw ValidationError("--sqpoll-idle-ms must be 1...60000") }
        // The kernel checks the CPU against the cgroup's cpuset, not the affinity mask
        // (taskset): a refused CPU leaves the reactors without polling, with a warning.
        if let cpu = sqpollCPU, !(0..<1024).contains(cpu) { throw ValidationError("--sqpoll-cpu must be 0...1023") }
        config.submissionPolling = SubmissionPolling(idleMilliseconds: idle, cpu: sqpollCPU)
    }

    /// --config/--persist, --rpc-socket-mode/--rpc-socket-group and --allowed-dir.
    func applyAccessOptions(to config: inout TargetConfiguration) throws {
        if persist && configFile == nil { throw ValidationError("--persist needs --config FILE") }
        if strictConfig && configFile == nil { throw ValidationError("--strict-config needs --config FILE") }
        config.configFile = configFile
        config.persistConfig = persist
        config.strictConfig = strictConfig
        guard let mode = mode_t(rpcSocketMode.hasPrefix("0o") ? String(rpcSocketMode.dropFirst(2)) : rpcSocketMode, radix: 8),
              mode <= 0o777
        else { throw ValidationError("--rpc-socket-mode '\(rpcSocketMode)' is not an octal mode 0...0777") }
        config.rpcSocketMode = mode
        if let rpcSocketGroup {
            guard let gid = SocketAccess.gid(named: rpcSocketGroup) else {
                throw ValidationError("--rpc-socket-group '\(rpcSocketGroup)': no such group")
            }
            config.rpcSocketGroup = gid
        }
        do {
            config.backingPathPolicy = try BackingPathPolicy(allowedDirectories: allowedDirs)
        } catch {
            throw ValidationError(error.description)
        }
    }
}

/// getenv without Foundation.
enum ProcessInfoLite {
    static func environment(_ name: String) -> String? {
        guard let value = getenv(name) else { return nil }
        return String(cString: value)
    }
}

VhostBlkd.main()
