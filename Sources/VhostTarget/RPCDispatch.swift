import JSONRPC
import VhostBlkAPI

/// Routes a JSON-RPC request to its method (PROTOCOL.md §4).
extension VhostTarget {
    /// Answers a method call on the control loop, now or later.
    typealias RPCReply = (Result<JSON, RPCError>) -> Void

    /// A method's implementation: most answer at once; those that wait for
    /// queues to drain (detach, shrink, deleting a controller in use) or for
    /// storage (opening, resizing or rescanning a file) answer through
    /// `RPCReply` later, while the loop serves everything else.
    enum MethodHandler: Sendable {
        case immediate(@Sendable (VhostTarget, JSON?) throws(RPCError) -> JSON)
        case deferred(@Sendable (VhostTarget, JSON?, @escaping RPCReply) throws(RPCError) -> Void)
    }

    /// Every served method, in the order `rpc_get_methods` lists them.
    static let methods: [(name: String, handler: MethodHandler)] = [
        (BdevUringCreateParams.method, .deferred({ t, p, reply throws(RPCError) in try t.bdevUringCreate(BdevUringCreateParams(params: p), reply) })),
        (BdevUringDeleteParams.method, .immediate({ t, p throws(RPCError) in try t.bdevDelete(BdevUringDeleteParams(params: p).name, driver: .uring) })),
        (BdevAioCreateParams.method, .deferred({ t, p, reply throws(RPCError) in try t.bdevAioCreate(BdevAioCreateParams(params: p), reply) })),
        (BdevAioDeleteParams.method, .immediate({ t, p throws(RPCError) in try t.bdevDelete(BdevAioDeleteParams(params: p).name, driver: .aio) })),
        (BdevMallocCreateParams.method, .immediate({ t, p throws(RPCError) in try t.bdevMallocCreate(BdevMallocCreateParams(params: p)) })),
        (BdevMallocDeleteParams.method, .immediate({ t, p throws(RPCError) in try t.bdevDelete(BdevMallocDeleteParams(params: p).name, driver: .malloc) })),
        (BdevNullCreateParams.method, .immediate({ t, p throws(RPCError) in try t.bdevNullCreate(BdevNullCreateParams(params: p)) })),
        (BdevNullDeleteParams.method, .immediate({ t, p throws(RPCError) in try t.bdevDelete(BdevNullDeleteParams(params: p).name, driver: .null) })),
        (BdevUringRescanParams.method, .deferred({ t, p, reply throws(RPCError) in try t.bdevRescan(BdevUringRescanParams(params: p).name, driver: .uring, reply) })),
        (BdevAioRescanParams.method, .deferred({ t, p, reply throws(RPCError) in try t.bdevRescan(BdevAioRescanParams(params: p).name, driver: .aio, reply) })),
        (BdevNullResizeParams.method, .immediate({ t, p throws(RPCError) in try t.bdevNullResize(BdevNullResizeParams(params: p)) })),
        (BdevResizeParams.method, .deferred({ t, p, reply throws(RPCError) in try t.bdevResize(BdevResizeParams(params: p), reply) })),
        (BdevGetBdevsParams.method, .deferred({ t, p, reply throws(RPCError) in try t.bdevGetBdevs(BdevGetBdevsParams(params: p), reply) })),
        (BdevGetIostatParams.method, .immediate({ t, p throws(RPCError) in try t.bdevGetIostat(BdevGetIostatParams(params: p)) })),
        (BdevResetIostatParams.method, .immediate({ t, p throws(RPCError) in try t.bdevResetIostat(BdevResetIostatParams(params: p)) })),
        (BdevGetLatencyParams.method, .immediate({ t, p throws(RPCError) in try t.bdevGetLatency(BdevGetLatencyParams(params: p)) })),
        (BdevSetQosLimitParams.method, .immediate({ t, p throws(RPCError) in try t.bdevSetQosLimit(BdevSetQosLimitParams(params: p)) })),
        (VhostCreateBlkControllerParams.method, .immediate({ t, p throws(RPCError) in try t.vhostCreateBlkController(VhostCreateBlkControllerParams(params: p)) })),
        (VhostGetControllersParams.method, .immediate({ t, p throws(RPCError) in try t.vhostGetControllers(VhostGetControllersParams(params: p)) })),
        (VhostDeleteControllerParams.method, .deferred({ t, p, reply throws(RPCError) in try t.vhostDeleteController(VhostDeleteControllerParams(params: p), reply) })),
        (VhostBlkAttachParams.method, .immediate({ t, p throws(RPCError) in try t.vhostBlkAttach(VhostBlkAttachParams(params: p)) })),
        (VhostBlkDetachParams.method, .deferred({ t, p, reply throws(RPCError) in try t.vhostBlkDetach(VhostBlkDetachParams(params: p), reply) })),
        (RpcGetMethodsParams.method, .immediate({ t, p throws(RPCError) in try t.rpcGetMethods(RpcGetMethodsParams(params: p)) })),
        (SpdkGetVersionParams.method, .immediate({ _, p throws(RPCError) in
            _ = try SpdkGetVersionParams(params: p)
            return VhostTarget.versionJSON
        })),
        (FrameworkGetSubsystemsParams.method, .immediate({ t, p throws(RPCError) in
            _ = try FrameworkGetSubsystemsParams(params: p)
            return t.frameworkGetSubsystems()
        })),
        (FrameworkGetConfigParams.method, .immediate({ t, p throws(RPCError) in try t.frameworkGetConfig(FrameworkGetConfigParams(params: p)) })),
        (FrameworkStartInitParams.method, .immediate({ _, p throws(RPCError) in
            _ = try FrameworkStartInitParams(params: p)
            return .bool(true)
        })),
        (FrameworkGetReactorsParams.method, .immediate({ t, p throws(RPCError) in
            _ = try FrameworkGetReactorsParams(params: p)
            return t.frameworkGetReactors()
        })),
        (ThreadGetStatsParams.method, .immediate({ t, p throws(RPCError) in
            _ = try ThreadGetStatsParams(params: p)
            return t.threadGetStats()
        })),
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

    /// Serves `request`; `respond` runs once, when the method has answered
    /// (a saved config is rewritten first when the method changed it, off
    /// the control loop).
    func handle(_ request: RPCRequest, respond: @escaping RPCReply) {
        guard let handler = Self.handlerTable[request.method] else {
            respond(.failure(.methodNotFound(request.method)))
            return
        }
        let finish: RPCReply = { [unowned self] result in
            switch result {
            case .success:
                persistAfter(method: request.method) { respond(result) }
            case .failure(let error):
                logger.debug("RPC \(request.method) failed: \(error.message)")
                respond(result)
            }
        }
        do throws(RPCError) {
            switch handler {
            case .immediate(let method): finish(.success(try method(self, request.params)))
            case .deferred(let method): try method(self, request.params, finish)
            }
        } catch {
            finish(.failure(error))
        }
    }
}
