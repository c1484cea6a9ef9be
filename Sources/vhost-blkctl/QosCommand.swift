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

/// `bdev_set_error_policy NAME report|pause` (vhost-blkd's extension;
/// docs/OPERATIONS.md, "Full disks").
struct BdevSetErrorPolicy: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: BdevSetErrorPolicyParams.method,
        abstract: "Set what a blockdev does when a write finds its file system full",
        discussion: "report (the default): the guest gets an I/O error. pause: the write is held and its queue stops until bdev_resume_io, so the guest stalls instead.")
    @Argument(help: "Blockdev name. Example: vm1") var name: String
    @Argument(help: "report or pause") var policy: String

    func run() throws {
        try invoke(BdevSetErrorPolicyParams(name: name, policy: policy), style: .none)
    }
}

/// `bdev_resume_io NAME` (vhost-blkd's extension).
struct BdevResumeIO: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: BdevResumeIOParams.method,
        abstract: "Resume a blockdev paused on a full disk: held writes are performed again")
    @Argument(help: "Blockdev name. Example: vm1") var name: String

    func run() throws {
        try invoke(BdevResumeIOParams(name: name), style: .none)
    }
}
