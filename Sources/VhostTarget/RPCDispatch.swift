import JSONRPC
import VhostBlkAPI

/// Routes a JSON-RPC request to its method (PROTOCOL.md §4).
extension VhostTarget {
    typealias MethodHandler = @Sendable (VhostTarget, JSON?) throws(RPCError) -> JSON

    /// Every served method, in the order `rpc_get_methods` lists them.
    static let methods: [(name: String, handler: MethodHandler)] = [
        (BdevUringCreateParams.method, { t, p throws(RPCError) in try t.bdevUringCreate(BdevUringCreateParams(params: p)) }),
        (BdevUringDeleteParams.method, { t, p throws(RPCError) in try t.bdevDelete(BdevUringDeleteParams(params: p).name, driver: .uring) }),
        (BdevAioCreateParams.method, { t, p throws(RPCError) in try t.bdevAioCreate(BdevAioCreateParams(params: p)) }),
        (BdevAioDeleteParams.method, { t, p throws(RPCError) in try t.bdevDelete(BdevAioDeleteParams(params: p).name, driver: .aio) }),
        (BdevMallocCreateParams.method, { t, p throws(RPCError) in try t.bdevMallocCreate(BdevMallocCreateParams(params: p)) }),
        (BdevMallocDeleteParams.method, { t, p throws(RPCError) in try t.bdevDelete(BdevMallocDeleteParams(params: p).name, driver: .malloc) }),
        (BdevNullCreateParams.method, { t, p throws(RPCError) in try t.bdevNullCreate(BdevNullCreateParams(params: p)) }),
        (BdevNullDeleteParams.method, { t, p throws(RPCError) in try t.bdevDelete(BdevNullDeleteParams(params: p).name, driver: .null) }),
        (BdevUringRescanParams.method, { t, p throws(RPCError) in try t.bdevRescan(BdevUringRescanParams(params: p).name, driver: .uring) }),
        (BdevAioRescanParams.method, { t, p throws(RPCError) in try t.bdevRescan(BdevAioRescanParams(params: p).name, driver: .aio) }),
        (BdevNullResizeParams.method, { t, p throws(RPCError) in try t.bdevNullResize(BdevNullResizeParams(params: p)) }),
        (BdevResizeParams.method, { t, p throws(RPCError) in try t.bdevResize(BdevResizeParams(params: p)) }),
        (BdevGetBdevsParams.method, { t, p throws(RPCError) in try t.bdevGetBdevs(BdevGetBdevsParams(params: p)) }),
        (BdevGetIostatParams.method, { t, p throws(RPCError) in try t.bdevGetIostat(BdevGetIostatParams(params: p)) }),
        (BdevResetIostatParams.method, { t, p throws(RPCError) in try t.bdevResetIostat(BdevResetIostatParams(params: p)) }),
        (BdevGetLatencyParams.method, { t, p throws(RPCError) in try t.bdevGetLatency(BdevGetLatencyParams(params: p)) }),
        (BdevSetQosLimitParams.method, { t, p throws(RPCError) in try t.bdevSetQosLimit(BdevSetQosLimitParams(params: p)) }),
        (VhostCreateBlkControllerParams.method, { t, p throws(RPCError) in try t.vhostCreateBlkController(VhostCreateBlkControllerParams(params: p)) }),
        (VhostGetControllersParams.method, { t, p throws(RPCError) in try t.vhostGetControllers(VhostGetControllersParams(params: p)) }),
        (VhostDeleteControllerParams.method, { t, p throws(RPCError) in try t.vhostDeleteController(VhostDeleteControllerParams(params: p)) }),
        (VhostBlkAttachParams.method, { t, p throws(RPCError) in try t.vhostBlkAttach(VhostBlkAttachParams(params: p)) }),
        (VhostBlkDetachParams.method, { t, p throws(RPCError) in try t.vhostBlkDetach(VhostBlkDetachParams(params: p)) }),
        (RpcGetMethodsParams.method, { t, p throws(RPCError) in try t.rpcGetMethods(RpcGetMethodsParams(params: p)) }),
        (SpdkGetVersionParams.method, { _, p throws(RPCError) in
            _ = try SpdkGetVersionParams(params: p)
            return VhostTarget.versionJSON
        }),
        (FrameworkGetSubsystemsParams.method, { t, p throws(RPCError) in
            _ = try FrameworkGetSubsystemsParams(params: p)
            return t.frameworkGetSubsystems()
        }),
        (FrameworkGetConfigParams.method, { t, p throws(RPCError) in try t.frameworkGetConfig(FrameworkGetConfigParams(params: p)) }),
        (FrameworkStartInitParams.method, { _, p throws(RPCError) in
            _ = try FrameworkStartInitParams(params: p)
            return .bool(true)
        }),
        (FrameworkGetReactorsParams.method, { t, p throws(RPCError) in
            _ = try FrameworkGetReactorsParams(params: p)
            return t.frameworkGetReactors()
        }),
        (ThreadGetStatsParams.method, { t, p throws(RPCError) in
            _ = try ThreadGetStatsParams(params: p)
            return t.threadGetStats()
        }),
    ]

    static let handlerTable: [String: MethodHandler] = Dictionary(
        methods.map { ($0.name, $0.handler) }, uniquingKeysWith: { first, _ in first })

    static let version = (major: 0, minor: 1, patch: 0, suffix: "")
    static var versionJSON: JSON {
        [
            "version": .string("vhost-blkd v\(version.major).\(version.minor).\(version.patch)"),
            "fields": ["major": .int(Int64(version.major)), "minor": .int(Int64(version.minor)),
                       "patch": .int(Int64(version.patch)), "suffix": .string(version.suffix)],
        ]
    }

    func handle(_ request: RPCRequest) -> Result<JSON, RPCError> {
        guard let handler = Self.handlerTable[request.method] else {
            return .failure(.methodNotFound(request.method))
        }
        do {
            let result = try handler(self, request.params)
            persistAfter(method: request.method)
            return .success(result)
        } catch {
            logger.debug("RPC \(request.method) failed: \(error.message)")
            return .failure(error)
        }
    }
}
