import ArgumentParser
import VhostBlkAPI

extension SocketMode: ExpressibleByArgument {
    public init?(argument: String) { self.init(octal: argument) }
}

extension SocketGroup: ExpressibleByArgument {
    public init?(argument: String) { self.init(text: argument) }
}

struct VhostCreateBlkController: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: VhostCreateBlkControllerParams.method, abstract: "Add a new vhost block controller")
    @Argument(help: "Name of the vhost controller") var ctrlr: String
    @Argument(help: "Name of the bdev to expose as the block device (omit for an empty controller)") var devName: String?
    @Option(help: "CPU mask for the controller's threads") var cpumask: String?
    @Option(help: "virtio blk transport name (only vhost_user_blk, the default)") var transport: String?
    @Flag(name: [.customShort("r"), .long], help: "Expose the block device as read-only") var readonly = false
    @Flag(name: [.customShort("p"), .long], help: "Set controller as packed ring supported") var packedRing = false
    @Option(help: "Permission bits of the controller's socket, octal (default 0600; 0660 for libvirt's QEMU)")
    var socketMode: SocketMode?
    @Option(help: "Group (name or gid) of the controller's socket, e.g. kvm")
    var socketGroup: SocketGroup?
    @Flag(inversion: .prefixedNo, help: "Start with the disk's write cache on (write-back, the default) or off (write-through)")
    var writeCache: Bool?

    func run() throws {
        try invoke(
            VhostCreateBlkControllerParams(
                ctrlr: ctrlr, devName: devName, cpumask: cpumask, readonly: readonly, packedRing: packedRing,
                transport: transport, socketMode: socketMode, socketGroup: socketGroup, writeCache: writeCache),
            style: .none)
    }
}

struct VhostGetControllers: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: VhostGetControllersParams.method, abstract: "List all or specific vhost controller(s)")
    @Option(name: [.customShort("n"), .long], help: "Name of a specific vhost controller to query") var name: String?
    @OptionGroup var page: PageOptions

    func run() throws { try invoke(VhostGetControllersParams(name: name, page: page.listPage), style: .pretty) }
}

struct VhostControllerSetCoalescing: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: VhostControllerSetCoalescingParams.method, abstract: "Set vhost controller coalescing")
    @Argument(help: "Name of the vhost controller") var ctrlr: String
    @Argument(help: "Base coalescing delay in microseconds (0: off)") var delayBaseUs: UInt32
    @Argument(help: "IOPS threshold above which coalescing kicks in (at least 100)") var iopsThreshold: UInt32

    func run() throws {
        try invoke(
            VhostControllerSetCoalescingParams(ctrlr: ctrlr, delayBaseUs: delayBaseUs, iopsThreshold: iopsThreshold),
            style: .none)
    }
}

/// vhost-blkd's paging of full listings (`offset`/`limit`): with a thousand
/// entries, pages of a hundred answer within a few milliseconds.
struct PageOptions: ParsableArguments {
    @Option(help: "vhost-blkd: skip this many entries (creation order)") var offset: Int?
    @Option(help: "vhost-blkd: return at most this many entries") var limit: Int?

    func validate() throws {
        if (offset ?? 0) < 0 || (limit ?? 0) < 0 { throw ValidationError("--offset and --limit must not be negative") }
    }

    var listPage: ListPage? {
        guard offset != nil || limit != nil else { return nil }
        return ListPage(offset: offset ?? 0, limit: limit)
    }
}

struct VhostDeleteController: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: VhostDeleteControllerParams.method, abstract: "Delete a vhost controller")
    @Argument(help: "Name of the vhost controller") var ctrlr: String
    @Flag(name: [.customShort("f"), .long], help: "Also when a frontend is connected: stop its queues and disconnect it")
    var force = false

    func run() throws { try invoke(VhostDeleteControllerParams(ctrlr: ctrlr, force: force), style: .none) }
}

struct RpcGetMethods: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: RpcGetMethodsParams.method, abstract: "Get list of supported RPC methods")
    @Flag(name: [.customShort("c"), .long], help: "Only methods callable in the current state") var current = false
    @Flag(name: [.customShort("i"), .long], help: "Include deprecated method aliases (accepted; vhost-blkd has none)") var includeAliases = false

    func run() throws {
        try invoke(RpcGetMethodsParams(current: current, includeAliases: includeAliases), style: .pretty)
    }
}

struct SpdkGetVersion: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: SpdkGetVersionParams.method, abstract: "Get the daemon's version")

    func run() throws { try invoke(SpdkGetVersionParams(), style: .plain) }
}
