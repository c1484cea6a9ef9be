import ArgumentParser
import VhostBlkAPI

struct BdevUringRescan: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: BdevUringRescanParams.method,
        abstract: "Rescan a uring bdev's size (after truncate or losetup -c) and tell its guest")
    @Argument(help: "uring bdev name") var name: String

    func run() throws { try invoke(BdevUringRescanParams(name: name), style: .none) }
}

struct BdevAioRescan: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: BdevAioRescanParams.method,
        abstract: "Rescan an aio bdev's size (after truncate or losetup -c) and tell its guest")
    @Argument(help: "aio bdev name") var name: String

    func run() throws { try invoke(BdevAioRescanParams(name: name), style: .none) }
}

struct BdevNullResize: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: BdevNullResizeParams.method, abstract: "Grow a null bdev")
    @Argument(help: "null bdev name") var name: String
    @Argument(help: "New size in MiB (not smaller than the current size)") var newSize: UInt64

    func run() throws { try invoke(BdevNullResizeParams(name: name, newSize: newSize), style: .none) }
}

struct BdevResize: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: BdevResizeParams.method,
        abstract: "Resize a file-backed, malloc or null bdev and tell its guest",
        discussion: """
            Grows (or, with --allow-shrink, shrinks) the file or memory behind the bdev. \
            Block devices refuse: resize the device, then run bdev_uring_rescan.
            """)
    @Argument(help: "bdev name") var name: String
    @Argument(help: "New size in MiB") var newSizeMib: UInt64
    @Flag(name: .long, help: "Allow shrinking a bdev a controller uses: requests beyond the new end fail")
    var allowShrink = false

    func run() throws {
        try invoke(BdevResizeParams(name: name, newSizeMiB: newSizeMib, allowShrink: allowShrink), style: .none)
    }
}

struct VhostBlkAttach: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: VhostBlkAttachParams.method, abstract: "Attach a bdev to an empty vhost-blk controller")
    @Argument(help: "Name of the vhost controller") var ctrlr: String
    @Argument(help: "Name of the bdev") var devName: String

    func run() throws { try invoke(VhostBlkAttachParams(ctrlr: ctrlr, devName: devName), style: .none) }
}

struct VhostBlkDetach: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: VhostBlkDetachParams.method,
        abstract: "Detach a controller's bdev once its in-flight I/O completed; the guest sees capacity 0")
    @Argument(help: "Name of the vhost controller") var ctrlr: String

    func run() throws { try invoke(VhostBlkDetachParams(ctrlr: ctrlr), style: .none) }
}
