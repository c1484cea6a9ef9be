import JSONRPC
import VhostBlkAPI

/// Routes a JSON-RPC request to its method (SPDK's JSON-RPC methods,
/// doc/jsonrpc.md upstream; the contract is api/vhost-blkd.openrpc.json).
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

    /// One served method, registered by its module (each `*Methods.swift`
    /// file lists its own).
    struct RPCMethod: Sendable {
        enum Module: Sendable { case bdev, stats, qos, vhost, framework, log }

        let name: String
        let module: Module
        /// Whether success can change what `save_config` writes
        /// (`currentConfig()`): with `--persist` such a call rewrites the
        /// file before it answers; no other call does.
        let mutatesConfig: Bool
        let handler: MethodHandler

        /// A method that answers at once, its params decoded as `P` first.
        static func immediate<P: RPCMethodParams>(
            _: P.Type, _ module: Module, mutatesConfig: Bool,
            _ body: @escaping @Sendable (VhostTarget, P) throws(RPCError) -> JSON
        ) -> RPCMethod {
            RPCMethod(name: P.method, module: module, mutatesConfig: mutatesConfig,
                      handler: .immediate({ target, params throws(RPCError) in try body(target, P(params: params)) }))
        }

        /// A method that may answer later, its params decoded as `P` first.
        static func deferred<P: RPCMethodParams>(
            _: P.Type, _ module: Module, mutatesConfig: Bool,
            _ body: @escaping @Sendable (VhostTarget, P, @escaping RPCReply) throws(RPCError) -> Void
        ) -> RPCMethod {
            RPCMethod(name: P.method, module: module, mutatesConfig: mutatesConfig,
                      handler: .deferred({ target, params, reply throws(RPCError) in try body(target, P(params: params), reply) }))
        }
    }

    /// Every served method, in the order `rpc_get_methods` lists them (the
    /// order of `VhostBlkMethods.paramTypes`).
    static let methods: [RPCMethod] =
        bdevRPCMethods + rbdRPCMethods + statsRPCMethods + qosRPCMethods + errorPolicyRPCMethods + vhostRPCMethods + coalescingRPCMethods
        + frameworkRPCMethods + logRPCMethods

    static let methodTable: [String: RPCMethod] = Dictionary(
        methods.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })

    /// `spdk_get_version`'s answer: this build's version (`BuildVersion`).
    static var versionJSON: JSON { BuildVersion.current.json }

    /// Serves `request`; `respond` runs once, when the method has answered
    /// (after a method that `mutatesConfig`, a saved config is rewritten
    /// first, off the control loop).
    func handle(_ request: RPCRequest, respond: @escaping RPCReply) {
        loop.preconditionInLoop()
        guard let method = Self.methodTable[request.method] else {
            respond(.failure(.methodNotFound(request.method)))
            return
        }
        let finish: RPCReply = { [unowned self] result in
            switch result {
            case .success where method.mutatesConfig:
                pruneFailedConfig()
                persistAfter(change: request.method) { respond(result) }
            case .success:
                respond(result)
            case .failure(let error):
                logger.debug("RPC \(request.method) failed: \(error.message)")
                respond(result)
            }
        }
        do throws(RPCError) {
            switch method.handler {
            case .immediate(let body): finish(.success(try body(self, request.params)))
            case .deferred(let body): try body(self, request.params, finish)
            }
        } catch {
            finish(.failure(error))
        }
    }
}
