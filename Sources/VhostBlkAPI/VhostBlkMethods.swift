/// Every method the daemon serves, with its params type.
public enum VhostBlkMethods {
    /// The params types, in the order `rpc_get_methods` lists them.
    public static let paramTypes: [any RPCMethodParams.Type] = [
        BdevUringCreateParams.self, BdevUringDeleteParams.self,
        BdevAioCreateParams.self, BdevAioDeleteParams.self,
        BdevMallocCreateParams.self, BdevMallocDeleteParams.self,
        BdevNullCreateParams.self, BdevNullDeleteParams.self,
        BdevGetBdevsParams.self,
        VhostCreateBlkControllerParams.self, VhostGetControllersParams.self, VhostDeleteControllerParams.self,
        RpcGetMethodsParams.self, SpdkGetVersionParams.self,
    ]

    /// The method names.
    public static let all: [String] = paramTypes.map { $0.method }

    /// The params type for `method`, if served.
    public static func paramType(for method: String) -> (any RPCMethodParams.Type)? {
        paramTypes.first { $0.method == method }
    }
}
