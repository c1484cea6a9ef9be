import JSONRPC
import VhostBlkAPI

/// framework_* and rpc_get_methods: what SPDK's `save_config` and
/// `load_config` (rpc/config.py) call (docs/PROTOCOL-NOTES.md, "save_config
/// and load_config").
extension VhostTarget {
    /// The subsystems, in the order their configs replay.
    static let subsystems: [(name: String, dependsOn: [String])] = [("bdev", []), ("vhost_blk", ["bdev"])]

    /// Methods callable only before initialization; the daemon is always
    /// initialized, so `rpc_get_methods {current: true}` leaves them out (as
    /// SPDK does after init; `load_config` would otherwise call them forever).
    static let startupOnlyMethods: Set<String> = [FrameworkStartInitParams.method]

    func rpcGetMethods(_ p: RpcGetMethodsParams) -> JSON {
        let names = Self.methods.map(\.name).filter { !p.current || !Self.startupOnlyMethods.contains($0) }
        return .array(names.map { .string($0) })
    }

    func frameworkGetSubsystems() -> JSON {
        .array(Self.subsystems.map { ["subsystem": .string($0.name), "depends_on": .array($0.dependsOn.map { .string($0) })] })
    }

    /// -32602 for an unknown subsystem, as SPDK answers.
    func frameworkGetConfig(_ p: FrameworkGetConfigParams) throws(RPCError) -> JSON {
        guard let subsystem = currentConfig().subsystems.first(where: { $0.name == p.name }) else {
            throw .invalidParams("Subsystem '\(p.name)' not found")
        }
        return .array(subsystem.entries.map(\.json))
    }

    /// The calls that rebuild the current state: bdev creates with their
    /// current sizes, then controller creates (SPDK's `save_config` shape).
    func currentConfig() -> SavedConfig {
        let clusterEntries = rbdClusters.all.map {
            SavedConfig.Entry(method: BdevRbdRegisterClusterParams.method, params: $0.params.json)
        }
        let bdevEntries = clusterEntries + bdevOrder.compactMap { bdevs[$0] }.flatMap { [createEntry($0)] + Self.qosConfigEntries($0) + Self.errorPolicyConfigEntries($0) }
        let controllerEntries = controllerOrder.compactMap { controllers[$0] }.flatMap {
            [createEntry($0)] + Self.coalescingConfigEntries($0)
        }
        return SavedConfig(subsystems: [
            .init(name: "bdev", entries: bdevEntries),
            .init(name: "vhost_blk", entries: controllerEntries),
        ])
    }

    private func createEntry(_ bdev: Bdev) -> SavedConfig.Entry {
        var params: JSONObject = ["name": .string(bdev.name)]
        let method: String
        switch bdev.backing {
        case .file(let file):
            params["filename"] = .string(file.path)
            params["block_size"] = .int(Int64(bdev.blockSize))
            if bdev.driver == .aio {
                method = BdevAioCreateParams.method
                params["readonly"] = .bool(bdev.readOnly)
            } else {
                method = BdevUringCreateParams.method
            }
        case .rbd(let volume):
            return SavedConfig.Entry(method: BdevRbdCreateParams.method, params: BdevRbdCreateParams(
                poolName: volume.pool, rbdName: volume.imageName, blockSize: bdev.blockSize, name: bdev.name,
                userID: volume.userID, config: volume.config, clusterName: volume.cluster?.name, uuid: bdev.uuid,
                readOnly: bdev.readOnly).json)
        case .memory, .null:
            method = bdev.driver == .null ? BdevNullCreateParams.method : BdevMallocCreateParams.method
            params["num_blocks"] = .int(Int64(clamping: bdev.numBlocks))
            params["block_size"] = .int(Int64(bdev.blockSize))
        }
        params["uuid"] = .string(bdev.uuid)
        return SavedConfig.Entry(method: method, params: .object(params))
    }

    private func createEntry(_ controller: Controller) -> SavedConfig.Entry {
        var params: JSONObject = ["ctrlr": .string(controller.name)]
        if let bdev = controller.bdev { params["dev_name"] = .string(bdev.name) }
        params["cpumask"] = .string(controller.cpumask.hexMask)
        params["readonly"] = .bool(controller.readOnly)
        if let mode = controller.socketPermissions.mode { params["socket_mode"] = mode.rpcJSON }
        if let group = controller.socketPermissions.group { params["socket_group"] = group.rpcJSON }
        // The guest's CONFIG_WCE choice survives a restart: it would otherwise believe
        // its writes durable on completion while the daemon went back to write-back.
        if controller.writeThrough { params["write_cache"] = false }
        if controller.packedRing { params["packed_ring"] = true }
        return SavedConfig.Entry(method: VhostCreateBlkControllerParams.method, params: .object(params))
    }
}

extension VhostTarget {
    /// The framework module's methods, with the reactor statistics
    /// (ReactorStatsMethods.swift) and the failed config entries'
    /// (ConfigReplay.swift); only a retry changes saved state.
    static let frameworkRPCMethods: [RPCMethod] = [
        .immediate(RpcGetMethodsParams.self, .framework, mutatesConfig: false) { t, p in t.rpcGetMethods(p) },
        .immediate(SpdkGetVersionParams.self, .framework, mutatesConfig: false) { _, _ in VhostTarget.versionJSON },
        .immediate(FrameworkGetSubsystemsParams.self, .framework, mutatesConfig: false) { t, _ in t.frameworkGetSubsystems() },
        .immediate(FrameworkGetConfigParams.self, .framework, mutatesConfig: false) { t, p throws(RPCError) in try t.frameworkGetConfig(p) },
        .immediate(FrameworkStartInitParams.self, .framework, mutatesConfig: false) { _, _ in .bool(true) },
        .immediate(FrameworkGetFailedConfigParams.self, .framework, mutatesConfig: false) { t, _ in t.frameworkGetFailedConfig() },
        .deferred(FrameworkRetryFailedConfigParams.self, .framework, mutatesConfig: true) { t, _, reply throws(RPCError) in
            try t.frameworkRetryFailedConfig(reply)
        },
        .immediate(FrameworkGetReactorsParams.self, .framework, mutatesConfig: false) { t, _ in t.frameworkGetReactors() },
        .immediate(ThreadGetStatsParams.self, .framework, mutatesConfig: false) { t, _ in t.threadGetStats() },
    ]
}
