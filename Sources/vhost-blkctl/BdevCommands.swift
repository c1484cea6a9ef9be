import ArgumentParser
import VhostBlkAPI

/// Number of `blockSize` blocks in `megabytes` MiB, as rpc.py computes it.
func blockCount(megabytes: Double, blockSize: UInt32) throws -> UInt64 {
    guard blockSize > 0 else { throw ValidationError("BLOCK_SIZE must be greater than 0") }
    let blocks = (megabytes * 1024 * 1024 / Double(blockSize)).rounded(.down)
    guard megabytes > 0, let count = UInt64(exactly: blocks) else {
        throw ValidationError("TOTAL_SIZE must be a positive size in MiB")
    }
    return count
}

struct BdevUringCreate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: BdevUringCreateParams.method, abstract: "Create a bdev with io_uring backend")
    @Argument(help: "Path to device or file (ex: /dev/nvme0n1)") var filename: String
    @Argument(help: "bdev name") var name: String
    @Argument(help: "Block size for this bdev") var blockSize: UInt32?
    @Option(name: [.customShort("u"), .long], help: "UUID of the bdev") var uuid: String?

    func run() throws {
        try invoke(
            BdevUringCreateParams(filename: filename, name: name, blockSize: blockSize, uuid: uuid), style: .plain)
    }
}

struct BdevUringDelete: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: BdevUringDeleteParams.method, abstract: "Delete a uring bdev")
    @Argument(help: "uring bdev name") var name: String

    func run() throws { try invoke(BdevUringDeleteParams(name: name), style: .none) }
}

struct BdevAioCreate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: BdevAioCreateParams.method, abstract: "Add a bdev with aio backend")
    @Argument(help: "Path to device or file (ex: /dev/sda)") var filename: String
    @Argument(help: "Block device name") var name: String
    @Argument(help: "Block size for this bdev") var blockSize: UInt32?
    @Flag(name: [.customShort("r"), .long], help: "Set this bdev as read-only") var readonly = false
    @Flag(name: .long, help: "Support unmap/write-zeroes by fallocate (accepted for rpc.py; vhost-blkd always does)") var fallocate = false
    @Option(name: [.customShort("u"), .long], help: "UUID of the bdev") var uuid: String?
    @Flag(name: .customLong("no-wait"), help: "Enable the RWF_NOWAIT flag for block devices (accepted for rpc.py; ignored by vhost-blkd)") var nowait = false

    func run() throws {
        try invoke(
            BdevAioCreateParams(
                filename: filename, name: name, blockSize: blockSize, readonly: readonly, fallocate: fallocate,
                uuid: uuid, nowait: nowait),
            style: .plain)
    }
}

struct BdevAioDelete: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: BdevAioDeleteParams.method, abstract: "Delete an aio disk")
    @Argument(help: "aio bdev name") var name: String

    func run() throws { try invoke(BdevAioDeleteParams(name: name), style: .none) }
}

struct BdevMallocCreate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: BdevMallocCreateParams.method, abstract: "Create a bdev with malloc backend")
    @Argument(help: "Size of malloc bdev in MB (float > 0)") var totalSize: Double
    @Argument(help: "Data block size for this bdev") var blockSize: UInt32
    @Option(name: [.customShort("b"), .long], help: "Name of the bdev") var name: String?
    @Option(name: [.customShort("u"), .long], help: "UUID of the bdev") var uuid: String?
    @Option(name: [.customShort("p"), .long], help: "Physical block size for this bdev (accepted for rpc.py; ignored by vhost-blkd)")
    var physicalBlockSize: UInt32?
    @Option(name: [.customShort("o"), .long], help: "Split on optimal IO boundary, in blocks (0 = disabled) (accepted for rpc.py; ignored by vhost-blkd)")
    var optimalIoBoundary: UInt32?
    @Option(name: [.customShort("n"), .long], help: "NUMA node ID for the memory (-1 = any) (accepted for rpc.py; ignored by vhost-blkd)") var numaId: Int32?

    func run() throws {
        let params = BdevMallocCreateParams(
            numBlocks: try blockCount(megabytes: totalSize, blockSize: blockSize), blockSize: blockSize,
            name: name, uuid: uuid, physicalBlockSize: physicalBlockSize,
            optimalIoBoundary: optimalIoBoundary ?? 0, numaId: numaId ?? -1)
        try invoke(params, style: .plain)
    }
}

struct BdevMallocDelete: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: BdevMallocDeleteParams.method, abstract: "Delete a malloc disk")
    @Argument(help: "malloc bdev name") var name: String

    func run() throws { try invoke(BdevMallocDeleteParams(name: name), style: .none) }
}

struct BdevNullCreate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: BdevNullCreateParams.method, abstract: "Add a bdev with null backend")
    @Argument(help: "Block device name") var name: String
    @Argument(help: "Size of null bdev in MB (int > 0)") var totalSize: UInt64
    @Argument(help: "Data block size for this bdev") var blockSize: UInt32
    @Option(name: [.customShort("u"), .long], help: "UUID of the bdev") var uuid: String?
    @Option(name: [.customShort("p"), .long], help: "Physical block size for this bdev (accepted for rpc.py; ignored by vhost-blkd)")
    var physicalBlockSize: UInt32?
    @Option(name: [.customShort("a"), .long], help: "Preferred write alignment in blocks (accepted for rpc.py; ignored by vhost-blkd)")
    var preferredWriteAlignment: UInt32?
    @Option(name: [.customShort("g"), .long], help: "Preferred write granularity in blocks (accepted for rpc.py; ignored by vhost-blkd)")
    var preferredWriteGranularity: UInt32?
    @Option(name: [.customShort("s"), .long], help: "Optimal write size in blocks (accepted for rpc.py; ignored by vhost-blkd)") var optimalWriteSize: UInt32?
    @Option(name: [.customShort("c"), .long], help: "Preferred unmap alignment in blocks (accepted for rpc.py; ignored by vhost-blkd)")
    var preferredUnmapAlignment: UInt32?
    @Option(name: [.customShort("r"), .long], help: "Preferred unmap granularity in blocks (accepted for rpc.py; ignored by vhost-blkd)")
    var preferredUnmapGranularity: UInt32?

    func run() throws {
        guard blockSize > 0 else { throw ValidationError("BLOCK_SIZE must be greater than 0") }
        let bytes = totalSize.multipliedReportingOverflow(by: 1024 * 1024)
        guard !bytes.overflow, totalSize > 0 else { throw ValidationError("TOTAL_SIZE must be a positive size in MiB") }
        let params = BdevNullCreateParams(
            name: name, numBlocks: bytes.partialValue / UInt64(blockSize), blockSize: blockSize, uuid: uuid,
            physicalBlockSize: physicalBlockSize, preferredWriteAlignment: preferredWriteAlignment,
            preferredWriteGranularity: preferredWriteGranularity, optimalWriteSize: optimalWriteSize,
            preferredUnmapAlignment: preferredUnmapAlignment, preferredUnmapGranularity: preferredUnmapGranularity)
        try invoke(params, style: .plain)
    }
}

struct BdevNullDelete: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: BdevNullDeleteParams.method, abstract: "Delete a null bdev")
    @Argument(help: "null bdev name") var name: String

    func run() throws { try invoke(BdevNullDeleteParams(name: name), style: .none) }
}

struct BdevGetBdevs: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: BdevGetBdevsParams.method, abstract: "Display current blockdev list or required blockdev")
    @Option(name: [.customShort("b"), .long], help: "Name of the Blockdev") var name: String?
    @Option(name: [.customShort("t"), .customLong("timeout-ms")], help: "Time in ms to wait for the bdev to appear")
    var timeout: UInt64?
    @OptionGroup var page: PageOptions

    func run() throws { try invoke(BdevGetBdevsParams(name: name, timeout: timeout, page: page.listPage), style: .pretty) }
}
