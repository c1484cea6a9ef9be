import ArgumentParser
import VhostBlkAPI

/// `vhost-blkctl [-s SOCK] [-t TIMEOUT] <method> ...`: calls one JSON-RPC
/// method of vhost-blkd, with rpc.py's arguments and output.
struct VhostBlkctl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vhost-blkctl",
        abstract: "Manage vhost-blkd over its SPDK-compatible JSON-RPC socket.",
        discussion: """
            Global options go before the method name:
              -s, --server SOCK     RPC socket (default $\(RPCSocketDefault.environmentVariable) if set, \
            else \(GlobalOptions.defaultSocket), where vhost-blkd listens by default)
              -t, --timeout SECS    time to wait for a response (default 60)
            """,
        version: BuildVersion.current.text,
        subcommands: [
            BdevUringCreate.self, BdevUringDelete.self,
            BdevAioCreate.self, BdevAioDelete.self,
            BdevMallocCreate.self, BdevMallocDelete.self,
            BdevNullCreate.self, BdevNullDelete.self,
            BdevUringRescan.self, BdevAioRescan.self, BdevNullResize.self, BdevResize.self,
            BdevGetBdevs.self,
            BdevRbdRegisterCluster.self, BdevRbdUnregisterCluster.self, BdevRbdGetClustersInfo.self,
            BdevRbdCreate.self, BdevRbdDelete.self, BdevRbdResize.self,
            BdevGetIostat.self, BdevResetIostat.self, BdevGetLatency.self,
            BdevSetQosLimit.self, BdevSetErrorPolicy.self, BdevResumeIO.self,
            VhostCreateBlkController.self, VhostGetControllers.self, VhostDeleteController.self,
            VhostBlkAttach.self, VhostBlkDetach.self, VhostControllerSetCoalescing.self,
            RpcGetMethods.self, SpdkGetVersion.self, FrameworkGetReactors.self, ThreadGetStats.self,
            FrameworkGetSubsystems.self, FrameworkGetConfig.self, FrameworkStartInit.self,
            FrameworkGetFailedConfig.self, FrameworkRetryFailedConfig.self,
            LogSetLevel.self, LogGetLevel.self, LogSetPrintLevel.self, LogGetPrintLevel.self,
            SaveConfig.self, LoadConfig.self,
            Iostat.self,
        ])

    /// Parses the process arguments (global options first) and runs.
    static func runFromCommandLine() {
        if let error = globalOptions.error {
            exit(withError: ValidationError(error))
        }
        main(globalOptions.remaining)
    }
}
