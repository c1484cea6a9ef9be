import BlockIO
import CShims
import Glibc
import JSONRPC
import Logging
import Posix
import Reactor

/// The daemon's core: reactors, bdevs, controllers and the control loop that
/// serves the JSON-RPC socket and every vhost-user socket.
///
/// Thread confinement: bdevs, controllers and sessions are touched only on the
/// control loop's thread (the one that calls `run()`); reactors get work by
/// message. Debug builds check the entry points (`EventLoop.preconditionInLoop`).
public final class VhostTarget: @unchecked Sendable {  // state confined to the control loop thread; `requestShutdown` is thread-safe
    public let configuration: TargetConfiguration
    let logger: Logger
    let loop: EventLoop
    private(set) var reactors: [Reactor] = []
    var bdevs: [String: Bdev] = [:]
    var bdevOrder: [String] = []
    var controllers: [String: Controller] = [:]
    var controllerOrder: [String] = []
    /// Frontend connections accepted so far: the next session's SPDK `vid`.
    var sessionsAccepted: UInt32 = 0
    private var rpcServer: RPCServer?
    var metricsEndpoint: MetricsEndpoint?
    private var lock: PathLock?
    private var createdSocketDirectory = false
    private var createdRPCDirectory: String?
    /// Controllers deleted whose sessions still drain (shutdown waits for them).
    private var releasing = 0
    /// Set once shutdown began: saved configs are no longer rewritten.
    private(set) var shuttingDown = false
    /// Opens, resizes and rescans of files, off the control loop.
    private(set) lazy var storageCalls = StorageCalls(loop: loop, logger: logger)
    /// `--persist`'s writes of the config file, off the control loop.
    private(set) lazy var configWriter = ConfigWriter(loop: loop)
    /// `--config` entries that failed at start or on the last retry, in
    /// config order (ConfigReplay.swift).
    var failedConfig: [FailedConfigEntry] = []
    /// A `framework_retry_failed_config` is replaying entries.
    var retryingFailedConfig = false
    /// File bdevs whose open has not come back: their names are taken.
    var bdevsBeingOpened: Set<String> = []
    /// `bdev_rbd_register_cluster`'s clusters (RBDMethods.swift), and names being connected.
    var rbdClusters = RBDClusterRegistry()
    /// Why the thread-pool engine serves every bdev, when it does.
    private(set) var threadPoolReason: String?
    /// Every listener's accept(2) failures (a descriptor held in reserve).
    let listenerReserve: ListenerReserve

    public init(configuration: TargetConfiguration, logger: Logger) throws(Errno) {
        self.configuration = configuration
        self.logger = logger
        loop = try EventLoop()
        listenerReserve = ListenerReserve(loop: loop, logger: logger)
    }

    /// Takes the RPC socket's lock, starts reactors and listens for RPC clients.
    /// Throws `TargetStartError` with a message for the operator.
    public func start() throws(TargetStartError) {
        let rpcPath = configuration.rpcSocketPath
        try prepareRPCDirectory()
        do {
            lock = try PathLock(path: rpcPath + ".lock")
        } catch {
            if error == Errno(EWOULDBLOCK) {
                throw TargetStartError("another vhost-blkd is serving \(rpcPath) (lock \(rpcPath).lock is held); refusing to start")
            }
            throw TargetStartError("cannot lock \(rpcPath).lock: \(error)")
        }
        do {
            try prepareSocketDirectory()
            try guardSharedMemory()  // SharedMemoryFaults.swift
            try pinControlThread()  // before any thread starts that should inherit it
            try startReactors()
            try loadConfigFile()  // before the RPC socket exists: a bad config never half-starts
            rpcServer = try RPCServer(
                path: rpcPath, mode: configuration.rpcSocketMode, group: configuration.rpcSocketGroup,
                loop: loop, logger: logger, reserve: listenerReserve
            ) { [unowned self] request, respond in
                self.handle(request, respond: respond)
            }
            try startMetrics()  // MetricsEndpoint.swift
        } catch {
            stopEverything()
            throw error
        }
        // Every socket exists now: the RPC socket, and each restored controller's (created by the replay).
        notify(["READY=1", "STATUS=\(statusLine)"])
        logger.info("vhost-blkd listening", metadata: [
            "rpc.socket": "\(rpcPath)", "socket.dir": "\(configuration.socketDirectory)",
            "cpumask": "\(configuration.cpumask.hexMask)", "engine": "\(reactors.first?.engineName ?? "?")",
            "control.cpus": "\(configuration.controlCPUs?.cpus?.list ?? "unpinned")",
        ])
    }

    /// Pins the control loop's thread (this one) to the control CPUs; the
    /// `vb-storage` and `vb-config` threads it starts inherit them.
    private func pinControlThread() throws(TargetStartError) {
        guard let placement = configuration.controlCPUs else { return }
        let line = placement.describe(reactors: configuration.cpumask)
        guard let cpus = placement.cpus else {
            logger.notice("\(line)")
            return
        }
        do {
            try PosixThread.pinCurrent(to: cpus)
        } catch {
            throw TargetStartError("cannot pin the control thread to CPU(s) \(cpus.list): \(error)")
        }
        logger.info("\(line)")
    }

    /// The RPC socket's directory (the default's /run/vhost-blkd outside a
    /// systemd unit that makes it), created one level deep like `-S`'s.
    private func prepareRPCDirectory() throws(TargetStartError) {
        let path = configuration.rpcSocketPath
        guard let slash = path.lastIndex(of: "/"), slash != path.startIndex else { return }
        let dir = String(path[..<slash])
        var st = stat()
        if stat(dir, &st) == 0 { return }
        let error = Errno.current
        guard error == Errno(ENOENT) else { throw TargetStartError("cannot use RPC socket directory \(dir): \(error)") }
        guard mkdir(dir, 0o755) == 0 else {
            throw TargetStartError(
                "cannot create RPC socket directory \(dir): \(Errno.current) (choose another socket with -r or VHOST_BLKD_RPC_SOCKET)")
        }
        createdRPCDirectory = dir
    }

    private func prepareSocketDirectory() throws(TargetStartError) {
        let dir = configuration.socketDirectory
        if let st = try? FileSystem.status(dir) {
            guard (st.st_mode & S_IFMT) == S_IFDIR else { throw TargetStartError("socket directory \(dir) is not a directory") }
            return
        }
        do {
            try FileSystem.makeDirectory(dir, mode: 0o755)
        } catch {
            throw TargetStartError("cannot create socket directory \(dir): \(error)")
        }
        createdSocketDirectory = true
    }

    private func startReactors() throws(TargetStartError) {
        var useURing = !configuration.forceThreadPool
        if configuration.forceThreadPool {
            threadPoolReason = "forced by configuration"
            logger.notice("thread-pool engine forced: io_uring is not used")
        } else if let error = URingEngine.probe() {
            useURing = false
            threadPoolReason = "io_uring unavailable: \(error)"
            logger.warning("io_uring is unavailable (\(error)); falling back to the thread-pool engine for every bdev")
        }
        for (index, cpu) in configuration.cpumask.cpus.enumerated() {
            do {
                let reactor = try Reactor(
                    index: index, cpu: cpu, useURing: useURing, pollMaxMicroseconds: configuration.pollMaxMicroseconds,
                    submissionPolling: configuration.submissionPolling,
                    poolCPUs: configuration.controlCPUs?.cpus?.cpus ?? configuration.cpumask.cpus,
                    ioWorkerCPUs: configuration.controlCPUs?.cpus?.cpus ?? [], logger: logger)
                try reactor.start()
                reactors.append(reactor)
            } catch {
                throw TargetStartError("cannot start reactor \(index) on CPU \(cpu): \(error)")
            }
        }
    }

    /// Serves until `requestShutdown()`; then closes everything (SIGINT/SIGTERM path).
    public func run() {
        loop.run()
        stopEverything()
    }

    /// Stops the control loop (any thread): `run()` then shuts down cleanly.
    public func requestShutdown() { loop.stop() }

    /// Watches `signals` (already blocked by the caller) and shuts down on any of them.
    public func shutdownOn(signals: [Int32]) throws(Errno) {
        let fd = try FileDescriptor.signalFD(signals)
        _ = try loop.register(fd, events: .readable) { [unowned self] _ in
            var info = signalfd_siginfo()
            _ = withUnsafeMutableBytes(of: &info) { raw in try? fd.read(into: raw) }
            logger.notice("signal \(info.ssi_signo): shutting down")
            loop.stop()
        }
    }

    /// Stop accepting, end sessions (in-flight I/O completes: the loop runs
    /// until every queue has drained), remove sockets, stop reactors.
    private func stopEverything() {
        if !shuttingDown, rpcServer != nil { notify(["STOPPING=1", "STATUS=stopping"]) }
        shuttingDown = true
        rpcServer?.close()
        rpcServer = nil
        metricsEndpoint?.close()
        metricsEndpoint = nil
        for name in controllerOrder {
            if let controller = controllers[name] { destroy(controller) }
        }
        controllers.removeAll()
        controllerOrder.removeAll()
        // Force-deleted controllers included; the config file has every change answered.
        loop.run(until: { releasing == 0 && configWriter.isIdle })
        if storageCalls.running > 0 {
            logger.warning(
                "\(storageCalls.running) file operations still wait for their storage; the process exits once they return")
        }
        for reactor in reactors { reactor.stop() }
        reactors.removeAll()
        for name in bdevOrder { bdevs[name]?.close() }
        bdevs.removeAll()
        bdevOrder.removeAll()
        if createdSocketDirectory { FileSystem.removeDirectory(configuration.socketDirectory) }
        lock?.release()
        lock = nil
        if let dir = createdRPCDirectory { rmdir(dir) }  // only if empty
        logger.info("vhost-blkd stopped")
    }

    // MARK: systemd

    /// What `STATUS=` says: how much is served, and how many config entries failed.
    var statusLine: String {
        var line = "serving \(controllers.count) controllers, \(bdevs.count) bdevs"
        if !failedConfig.isEmpty {
            line += "; \(failedConfig.count) config entries failed (vhost-blkctl framework_get_failed_config)"
        }
        return line
    }

    /// Sends `assignments` to systemd (`Type=notify`), when started by it.
    func notify(_ assignments: [String]) {
        guard let notifier = configuration.systemdNotify else { return }
        do {
            try notifier.send(assignments)
        } catch {
            logger.warning("cannot notify systemd at \(notifier.address): \(error)")
        }
    }

    /// A new `STATUS=` after the served set changed (a retry).
    func notifyStatus() { notify(["STATUS=\(statusLine)"]) }

    // MARK: Controllers' sockets

    /// Stops listening at once; `done` runs once the session (if any) has
    /// drained and closed and the bdev is released.
    func destroy(_ controller: Controller, then done: @escaping () -> Void = {}) {
        loop.preconditionInLoop()
        if let token = controller.listenToken { loop.unregister(token) }
        controller.listenToken = nil
        controller.listener.close()
        FileSystem.removeFile(controller.socketPath)
        releasing += 1
        let release = { [unowned self] in
            releasing -= 1
            controller.bdev?.claimedBy = nil
            controller.closeQoS()
            controller.reactor.load.subtract(1, ordering: .relaxed)
            done()
        }
        if let session = controller.session {
            endSession(session, then: release)
        } else {
            release()
        }
    }

    func acceptFrontend(_ controller: Controller) {
        loop.preconditionInLoop()
        if let existing = controller.session, existing.isClosing || existing.hasHungUp() {
            // The previous session still drains, or its frontend reconnects
            // before the loop read the rest of what it sent (the session reads
            // it, then ends at end of file): new connections wait in the
            // backlog until it has closed (`endSession` watches again).
            if let token = controller.listenToken { loop.modify(token, events: []) }
            return
        }
        while true {
            let fd: FileDescriptor?
            do {
                fd = try UnixSocket.accept(controller.listener)
            } catch {
                // Level-triggered: returning with the connection still queued would spin.
                if listenerReserve.acceptFailed(controller, error) { continue }
                return
            }
            guard let fd else { return }
            if let existing = controller.session {
                let pid = UnixSocket.peerPID(fd).map(String.init) ?? "?"
                controller.logger.warning("refusing a second frontend (pid \(pid)): controller already serves pid \(existing.peerPID.map(String.init) ?? "?")")
                fd.close()
                continue
            }
            do {
                try fd.setNonBlocking()
            } catch {
                fd.close()
                continue
            }
            let session = VhostUserSession(
                controller: controller, socket: fd, loop: loop, vid: sessionsAccepted, id: controller.sessionsAccepted)
            sessionsAccepted &+= 1
            controller.sessionsAccepted &+= 1
            controller.session = session
            controller.logger.info("frontend connected", metadata: ["frontend.pid": "\(session.peerPID.map(String.init) ?? "?")"])
            session.onFailure = { [unowned self, unowned session] in self.endSession(session) }
            do {
                session.token = try loop.register(fd, events: .readable) { [unowned self, unowned session] events in
                    if !session.readable(events) { self.endSession(session) }
                }
            } catch {
                endSession(session)
            }
        }
    }

    /// Stops serving `session`'s frontend; once its queues have drained it
    /// closes, the controller accepts a frontend again, and `done` runs.
    func endSession(_ session: VhostUserSession, then done: (() -> Void)? = nil) {
        loop.preconditionInLoop()
        if !session.isClosing {
            if let token = session.token { loop.unregister(token) }
            session.token = nil
            let controller = session.controller
            session.close { [unowned self] in
                if controller.session === session { controller.session = nil }
                controller.logger.info("session ended")
                if let token = controller.listenToken {
                    loop.modify(token, events: .readable)  // connections that waited are accepted now
                }
            }
        }
        if let done { session.close(then: done) }
    }

    /// Least loaded reactor among `cpus`.
    func pickReactor(for cpus: CPUSet) -> Reactor? {
        reactors.filter { cpus.cpus.contains($0.cpu) }.min { $0.load.load(ordering: .relaxed) < $1.load.load(ordering: .relaxed) }
    }

    /// The reactors among `cpus` in CPU order, rotated to start at `home`:
    /// where a controller's queues go, queue `i` on the `i`th.
    func queueReactors(for cpus: CPUSet, home: Reactor) -> [Reactor] {
        let eligible = reactors.filter { cpus.cpus.contains($0.cpu) }
        guard let start = eligible.firstIndex(where: { $0 === home }) else { return [home] }
        return Array(eligible[start...] + eligible[..<start])
    }
}

/// Why the daemon could not start, in words for the operator.
public struct TargetStartError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
