import ArgumentParser
import VhostBlkAPI

/// `bdev_set_qos_limit NAME [--rw-ios-per-sec N] [--rw-mbytes-per-sec N]
/// [--r-mbytes-per-sec N] [--w-mbytes-per-sec N]`, as SPDK's rpc.py.
struct BdevSetQosLimit: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: BdevSetQosLimitParams.method, abstract: "Set QoS rate limit on a blockdev")
    @Argument(help: "Blockdev name to set QoS. Example: Malloc0") var name: String
    @Option(help: "R/W IOs per second limit (>=1000, example: 20000). 0 means unlimited.") var rwIosPerSec: UInt64?
    @Option(help: "R/W megabytes per second limit (>=1, example: 100). 0 means unlimited.") var rwMbytesPerSec: UInt64?
    @Option(help: "Read megabytes per second limit (>=1, example: 100). 0 means unlimited.") var rMbytesPerSec: UInt64?
    @Option(help: "Write megabytes per second limit (>=1, example: 100). 0 means unlimited.") var wMbytesPerSec: UInt64?

    func run() throws {
        try invoke(BdevSetQosLimitParams(
            name: name, rwIOsPerSec: rwIosPerSec, rwMBytesPerSec: rwMbytesPerSec,
            rMBytesPerSec: rMbytesPerSec, wMBytesPerSec: wMbytesPerSec), style: .none)
    }
}
