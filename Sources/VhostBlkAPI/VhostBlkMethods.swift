/// Every method the daemon serves, with its params type.
public enum VhostBlkMethods {
    /// The params types, in the order `rpc_get_methods` lists them.
    public static let paramTypes: [any RPCMethodParams.Type] = [
        BdevUringCreateParams.self, BdevUringDeleteParams.self,
        BdevAioCreateParams.self, BdevAioDeleteParams.self,
        BdevMallocCreateParams.self, BdevMallocDeleteParams.self,
        BdevNullCreateParams.self, BdevNullDeleteParams.self,
        BdevUringRescanParams.self, BdevAioRescanParams.self, BdevNullResizeParams.self, BdevResizeParams.self,
        BdevGetBdevsParams.self,
        BdevRbdRegisterClusterParams.self, BdevRbdUnregisterClusterParams.self, BdevRbdGetClustersInfoParams.self,
        BdevRbdCreateParams.self, BdevRbdDeleteParams.self, BdevRbdResizeParams.self,
        BdevGetIostatParams.self, BdevResetIostatParams.self, BdevGetLatencyParams.self,
        BdevSetQosLimitParams.self, BdevSetErrorPolicyParams.self, BdevResumeIOParams.self,
        VhostCreateBlkControllerParams.self, VhostGetControllersParams.self, VhostDeleteControllerParams.self,
        VhostBlkAttachParams.self, VhostBlkDetachParams.self, VhostControllerSetCoalescingParams.self,
        RpcGetMethodsParams.self, SpdkGetVersionParams.self,
        FrameworkGetSubsystemsParams.self, FrameworkGetConfigParams.self, FrameworkStartInitParams.self,
        FrameworkGetFailedConfigParams.self, FrameworkRetryFailedConfigParams.self,
        FrameworkGetReactorsParams.self, ThreadGetStatsParams.self,
        LogSetLevelParams.self, LogGetLevelParams.self, LogSetPrintLevelParams.self, LogGetPrintLevelParams.self,
    ]

    /// The method names.
    public static let all: [String] = paramTypes.map { $0.method }

    /// The params type for `method`, if served.
    public static func paramType(for method: String) -> (any RPCMethodParams.Type)? {
        paramTypes.first { $0.method == method }
    }
}
