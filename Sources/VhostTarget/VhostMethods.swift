import Glibc
import JSONRPC
import Posix
import VhostBlkAPI

/// vhost_* methods (SPDK's names, parameters and results: SPDK JSON-RPC,
/// "vhost_create_blk_controller", "vhost_get_controllers",
/// "vhost_delete_controller"; our additions and every error code in
/// api/vhost-blkd.openrpc.json).
/// SPDK answers vhost errors with -32602 and the strerror text.
extension VhostTarget {
    func vhostCreateBlkController(_ p: VhostCreateBlkControllerParams) throws(RPCError) -> JSON {
        let name = p.ctrlr
        guard !name.isEmpty, !name.contains("/"), name != ".", name != ".." else {
            throw .invalidParams("Invalid controller name '\(name)'")
        }
        let socketPath = configuration.socketDirectory.hasSuffix("/")
            ? configuration.socketDirectory + name : configuration.socketDirectory + "/" + name
        guard socketPath.utf8.count <= UnixSocket.maxPathLength else {
            throw .invalidParams("Socket path \(socketPath) is longer than \(UnixSocket.maxPathLength) bytes")
        }
        if controllers[name] != nil { throw .invalidParams("\(RPCError.errorText(EEXIST)): controller \(name)") }
        if let transport = p.transport, transport != "vhost_user_blk" {
            throw .invalidParams("Unsupported transport '\(transport)'")
        }
        let bdev = try p.devName.map { name throws(RPCError) in try unclaimedBdev(name) }
        let mask: CPUSet
        if let text = p.cpumask {
            guard let parsed = CPUSet(parsing: text) else { throw .invalidParams("Invalid cpumask '\(text)'") }
            guard parsed.isSubset(of: configuration.cpumask) else {
                throw .invalidParams("cpumask \(parsed.hexMask) is not a subset of the daemon's \(configuration.cpumask.hexMask)")
            }
            mask = parsed
        } else {
            mask = configuration.cpumask
        }
        guard let reactor = pickReactor(for: mask) else { throw .internalError("No reactor for cpumask \(mask.hexMask)") }
        let permissions = SocketPermissions(mode: p.socketMode, group: p.socketGroup)
        let listener = try listenControllerSocket(path: socketPath, permissions: permissions)
        let controller = Controller(
            name: name, socketPath: socketPath, cpumask: mask, readOnly: p.readonly, reactor: reactor,
            queueReactors: queueReactors(for: mask, home: reactor),
            maxQueues: configuration.maxQueuesPerController, limits: configuration.sessionLimits, bdev: bdev,
            listener: listener, loop: loop, logger: logger)
        controller.socketPermissions = permissions
        controller.writeThrough = p.writeCache == false
        controller.packedRing = p.packedRing
        controller.guestChangedSavedState = { [unowned self] in persistAfter(change: "SET_CONFIG (write cache)") }
        do {
            controller.listenToken = try loop.register(listener, events: .readable) { [unowned self, unowned controller] _ in
                acceptFrontend(controller)
            }
        } catch {
            listener.close()
            FileSystem.removeFile(socketPath)
            throw .internalError("cannot watch \(socketPath): \(error)")
        }
        bdev?.claimedBy = controller
        reactor.load.add(1, ordering: .relaxed)
        controllers[name] = controller
        controllerOrder.append(name)
        controller.logger.info("controller created", metadata: [
            "bdev.name": "\(bdev?.name ?? "(none)")", "socket": "\(socketPath)", "reactor": "\(reactor.index)",
        ])
        return .bool(true)
    }

    func vhostGetControllers(_ p: VhostGetControllersParams) throws(RPCError) -> JSON {
        if let name = p.name {
            guard let controller = controllers[name] else { throw .invalidParams("\(RPCError.errorText(ENODEV)): controller \(name)") }
            return .array([describe(controller)])
        }
        let names = p.page.map { Array($0.slice(controllerOrder)) } ?? controllerOrder
        return .array(names.compactMap { controllers[$0] }.map(describe))
    }

    /// Answers once a connected frontend's queues have drained (force).
    func vhostDeleteController(_ p: VhostDeleteControllerParams, _ reply: @escaping RPCReply) throws(RPCError) {
        guard let controller = controllers[p.ctrlr] else {
            throw .invalidParams("\(RPCError.errorText(ENODEV)): controller \(p.ctrlr)")
        }
        if let session = controller.session, !p.force {
            let pid = session.peerPID.map { "pid \($0)" } ?? "unknown pid"
            let state = session.isClosing ? "a disconnected frontend whose queues still drain" : "a connected frontend"
            throw RPCError(
                code: -Int(EBUSY),
                message: "\(RPCError.errorText(EBUSY)): controller \(p.ctrlr) has \(state) (\(pid)); stop it first or pass force")
        }
        if let session = controller.session {
            controller.logger.notice("force delete: disconnecting frontend pid \(session.peerPID.map(String.init) ?? "?")")
        }
        // Gone from every listing at once; the bdev stays claimed until the queues drained.
        controllers.removeValue(forKey: p.ctrlr)
        controllerOrder.removeAll { $0 == p.ctrlr }
        destroy(controller) {
            controller.logger.info("controller deleted")
            reply(.success(.bool(true)))
        }
    }

    func vhostBlkAttach(_ p: VhostBlkAttachParams) throws(RPCError) -> JSON {
        let controller = try controller(named: p.ctrlr)
        if let current = controller.bdev {
            throw RPCError(
                code: -Int(EBUSY),
                message: "\(RPCError.errorText(EBUSY)): controller \(p.ctrlr) already has bdev \(current.name); detach it first")
        }
        let bdev = try unclaimedBdev(p.devName)
        if controller.session != nil, bdev.blockSize != controller.blockSize {
            throw .invalidParams(
                "bdev \(bdev.name) has \(bdev.blockSize)-byte blocks but the connected guest uses \(controller.blockSize): "
                    + "a guest cannot change block size while running")
        }
        controller.settleStatsBeforeBackendChange()
        controller.bdev = bdev
        bdev.claimedBy = controller
        controller.session?.backendChanged(waitForPreviousRequests: false)
        controller.logger.info("bdev attached", metadata: ["bdev.name": "\(bdev.name)", "capacity": "\(bdev.sizeBytes / 512)"])
        return .bool(true)
    }

    /// Answers once no request on the bdev is in flight, when it is released.
    func vhostBlkDetach(_ p: VhostBlkDetachParams, _ reply: @escaping RPCReply) throws(RPCError) {
        let controller = try controller(named: p.ctrlr)
        guard let bdev = controller.bdev else {
            throw RPCError(code: -Int(ENODEV), message: "\(RPCError.errorText(ENODEV)): controller \(p.ctrlr) has no bdev attached")
        }
        controller.settleStatsBeforeBackendChange()
        controller.bdev = nil
        // New requests fail from here on; the bdev is released once the old ones completed.
        let release = {
            bdev.claimedBy = nil
            controller.logger.info("bdev detached", metadata: ["bdev.name": "\(bdev.name)"])
            reply(.success(.bool(true)))
        }
        if let session = controller.session {
            session.backendChanged(waitForPreviousRequests: true, then: release)
        } else {
            release()
        }
    }

    private func controller(named name: String) throws(RPCError) -> Controller {
        guard let controller = controllers[name] else {
            throw .invalidParams("\(RPCError.errorText(ENODEV)): controller \(name)")
        }
        return controller
    }

    /// The bdev `name`, which no controller may use yet.
    private func unclaimedBdev(_ name: String) throws(RPCError) -> Bdev {
        guard let bdev = bdevs[name] else { throw .invalidParams("\(RPCError.errorText(ENODEV)): bdev \(name)") }
        if let owner = bdev.claimedBy {
            throw .invalidParams("\(RPCError.errorText(EBUSY)): bdev \(name) is already used by controller \(owner.name)")
        }
        return bdev
    }

    /// One `vhost_get_controllers` entry in SPDK's shape (SPDK
    /// lib/vhost/vhost_rpc.c, `_rpc_get_vhost_controller`; vhost.c,
    /// `vhost_session_info_json`; vhost_blk.c, `vhost_blk_dump_info_json`):
    /// SPDK's keys with SPDK's meaning, then vhost-blkd's own
    /// (`frontend_pid`, `features`, `protocol_features`, `queues` per
    /// session; `write_cache` under `block`).
    private func describe(_ controller: Controller) -> JSON {
        var sessions: [JSON] = []
        if let session = controller.session {
            let queues = queueDetail(controller)  // ReactorStatsMethods.swift
            let inFlight = queues.reduce(Int64(0)) { $0 &+ ($1["in_flight"]?.intValue ?? 0) }
            sessions.append([
                "vid": .int(Int64(session.vid)),
                "id": .int(Int64(session.id)),
                "name": .string("\(controller.name)s\(session.vid)"),
                "started": .bool(!queues.isEmpty),
                "max_queues": .int(Int64(session.startedQueueCount)),
                "inflight_task_cnt": .int(inFlight),
                "frontend_pid": session.peerPID.map { .int(Int64($0)) } ?? .null,
                "features": .array(session.features.names.map { .string($0) }),
                "protocol_features": .array(session.protocolFeatures.names.map { .string($0) }),
                "queues": .array(queues),
            ])
        }
        return [
            "ctrlr": .string(controller.name),
            "cpumask": .string(controller.cpumask.hexMask),
            "delay_base_us": .int(Int64(controller.coalescing.delayBaseMicros)),
            "iops_threshold": .int(Int64(controller.coalescing.iopsThreshold)),
            "socket": .string(controller.socketPath),
            "sessions": .array(sessions),
            "backend_specific": [
                "block": [
                    "readonly": .bool(controller.readOnly),
                    "bdev": controller.bdev.map { .string($0.name) } ?? .null,
                    "transport": "vhost_user_blk",
                    "write_cache": .bool(!controller.writeThrough),
                    "packed_ring": .bool(controller.packedRing),
                ],
            ],
        ]
    }
}

extension VhostTarget {
    /// The vhost module's methods.
    static let vhostRPCMethods: [RPCMethod] = [
        .immediate(VhostCreateBlkControllerParams.self, .vhost, mutatesConfig: true) { t, p throws(RPCError) in
            try t.vhostCreateBlkController(p)
        },
        .immediate(VhostGetControllersParams.self, .vhost, mutatesConfig: false) { t, p throws(RPCError) in try t.vhostGetControllers(p) },
        .deferred(VhostDeleteControllerParams.self, .vhost, mutatesConfig: true) { t, p, reply throws(RPCError) in
            try t.vhostDeleteController(p, reply)
        },
        .immediate(VhostBlkAttachParams.self, .vhost, mutatesConfig: true) { t, p throws(RPCError) in try t.vhostBlkAttach(p) },
        .deferred(VhostBlkDetachParams.self, .vhost, mutatesConfig: true) { t, p, reply throws(RPCError) in try t.vhostBlkDetach(p, reply) },
    ]  // vhost_controller_set_coalescing: CoalescingMethods.swift
}
