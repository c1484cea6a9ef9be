import Glibc
import JSONRPC
import Posix
import VhostBlkAPI

/// vhost_* methods (SPDK's names, parameters and results; PROTOCOL.md §4).
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
        if p.packedRing { throw .invalidParams("Packed rings are not supported") }
        if let transport = p.transport, transport != "vhost_user_blk" {
            throw .invalidParams("Unsupported transport '\(transport)'")
        }
        guard let bdev = bdevs[p.devName] else { throw .invalidParams("\(RPCError.errorText(ENODEV)): bdev \(p.devName)") }
        if let owner = bdev.claimedBy {
            throw .invalidParams("\(RPCError.errorText(EBUSY)): bdev \(p.devName) is already used by controller \(owner)")
        }
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
        let listener: FileDescriptor
        do {
            listener = try UnixSocket.listen(path: socketPath, mode: 0o600)
        } catch {
            throw .invalidParams("\(error.message): cannot listen on \(socketPath)")
        }
        let controller = Controller(
            name: name, socketPath: socketPath, cpumask: mask, readOnly: p.readonly, reactor: reactor,
            maxQueues: configuration.maxQueuesPerController, bdev: bdev, listener: listener, logger: logger)
        do {
            controller.listenToken = try loop.register(listener, events: .readable) { [unowned self, unowned controller] _ in
                acceptFrontend(controller)
            }
        } catch {
            listener.close()
            unlink(socketPath)
            throw .internalError("cannot watch \(socketPath): \(error)")
        }
        bdev.claimedBy = name
        reactor.load.add(1, ordering: .relaxed)
        controllers[name] = controller
        controllerOrder.append(name)
        controller.logger.info("controller created", metadata: [
            "bdev.name": "\(bdev.name)", "socket": "\(socketPath)", "reactor": "\(reactor.index)",
        ])
        return .bool(true)
    }

    func vhostGetControllers(_ p: VhostGetControllersParams) throws(RPCError) -> JSON {
        if let name = p.name {
            guard let controller = controllers[name] else { throw .invalidParams("\(RPCError.errorText(ENODEV)): controller \(name)") }
            return .array([describe(controller)])
        }
        return .array(controllerOrder.compactMap { controllers[$0] }.map(describe))
    }

    func vhostDeleteController(_ p: VhostDeleteControllerParams) throws(RPCError) -> JSON {
        guard let controller = controllers[p.ctrlr] else {
            throw .invalidParams("\(RPCError.errorText(ENODEV)): controller \(p.ctrlr)")
        }
        if let session = controller.session {
            let pid = session.peerPID.map { "pid \($0)" } ?? "unknown pid"
            throw RPCError(code: -Int(EBUSY), message: "\(RPCError.errorText(EBUSY)): controller \(p.ctrlr) has a connected frontend (\(pid))")
        }
        destroy(controller)
        controllers.removeValue(forKey: p.ctrlr)
        controllerOrder.removeAll { $0 == p.ctrlr }
        controller.logger.info("controller deleted")
        return .bool(true)
    }

    /// One `vhost_get_controllers` entry in SPDK's shape.
    private func describe(_ controller: Controller) -> JSON {
        var sessions: [JSON] = []
        if let session = controller.session {
            let queues: [JSON] = session.vrings.enumerated().compactMap { index, vring in
                guard vring.server != nil else { return nil }
                return ["index": .int(Int64(index)), "size": .int(Int64(vring.size)), "reactor": .int(Int64(controller.reactor.index))]
            }
            sessions.append([
                "frontend_pid": session.peerPID.map { .int(Int64($0)) } ?? .null,
                "features": .array(session.features.names.map { .string($0) }),
                "protocol_features": .array(session.protocolFeatures.names.map { .string($0) }),
                "queues": .array(queues),
            ])
        }
        return [
            "ctrlr": .string(controller.name),
            "cpumask": .string(controller.cpumask.hexMask),
            "delay_base_us": 0,
            "iops_threshold": 60000,
            "socket": .string(controller.socketPath),
            "sessions": .array(sessions),
            "backend_specific": [
                "block": [
                    "readonly": .bool(controller.readOnly),
                    "bdev": controller.bdev.map { .string($0.name) } ?? .null,
                    "transport": "vhost_user_blk",
                ],
            ],
        ]
    }
}
