import ArgumentParser
import VhostBlkAPI

/// `key=value` arguments as rpc.py turns them into a config object.
func rbdConfigOptions(_ entries: [String], option: String) throws -> RBDConfigOptions? {
    guard !entries.isEmpty else { return nil }
    return RBDConfigOptions(try entries.map { entry in
        guard let eq = entry.firstIndex(of: "=") else { throw ValidationError("\(option) \(entry) not in key=value form") }
        return (String(entry[..<eq]), String(entry[entry.index(after: eq)...]))
    })
}

struct BdevRbdRegisterCluster: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: BdevRbdRegisterClusterParams.method, abstract: "Add a Rados cluster with ceph rbd backend")
    @Argument(help: "Name of the Rados cluster only known to rbd bdev") var name: String
    @Option(name: .customLong("user"), help: "Ceph user name (i.e. admin, not client.admin)") var userID: String?
    @Option(name: .customLong("config-param"), help: "adds a key=value configuration option for rados_conf_set (default: rely on config file)")
    var configParam: [String] = []
    @Option(name: .customLong("config-file"), help: "The file path of the Rados configuration file") var configFile: String?
    @Option(name: .customLong("key-file"), help: "The file path of the Rados keyring file") var keyFile: String?
    @Option(name: .customLong("core-mask"), help: "Set core mask for librbd IO context threads (recorded; vhost-blkd does not pin librbd's threads)")
    var coreMask: String?

    func run() throws {
        try invoke(
            BdevRbdRegisterClusterParams(
                name: name, userID: userID, configParam: try rbdConfigOptions(configParam, option: "--config-param"),
                configFile: configFile, keyFile: keyFile, coreMask: coreMask),
            style: .pretty)
    }
}

struct BdevRbdUnregisterCluster: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: BdevRbdUnregisterClusterParams.method, abstract: "Unregister a Rados cluster object")
    @Argument(help: "Name of the Rados Cluster only known to rbd bdev") var name: String

    func run() throws { try invoke(BdevRbdUnregisterClusterParams(name: name), style: .none) }
}

struct BdevRbdGetClustersInfo: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: BdevRbdGetClustersInfoParams.method, abstract: "Display registered Rados Cluster names and related info")
    @Option(name: [.customShort("b"), .long], help: "Name of the registered Rados Cluster Name. Example: Cluster1") var name: String?

    func run() throws { try invoke(BdevRbdGetClustersInfoParams(name: name), style: .pretty) }
}

struct BdevRbdCreate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: BdevRbdCreateParams.method, abstract: "Add a bdev with ceph rbd backend")
    @Argument(help: "rbd pool name") var poolName: String
    @Argument(help: "rbd image name") var rbdName: String
    @Argument(help: "rbd block size") var blockSize: UInt32
    @Option(name: [.customShort("b"), .long], help: "Name of the bdev") var name: String?
    @Option(name: .customLong("user"), help: "Ceph user name (i.e. admin, not client.admin)") var userID: String?
    @Option(name: .customLong("config"), help: "adds a key=value configuration option for rados_conf_set (default: rely on config file)")
    var config: [String] = []
    @Option(name: [.customShort("c"), .long], help: "cluster name to identify the Rados cluster") var clusterName: String?
    @Option(name: [.customShort("u"), .long], help: "UUID of the bdev") var uuid: String?
    @Flag(name: [.customShort("r"), .customLong("readonly")], help: "Set this bdev as read-only") var readOnly = false

    func run() throws {
        try invoke(
            BdevRbdCreateParams(
                poolName: poolName, rbdName: rbdName, blockSize: blockSize, name: name, userID: userID,
                config: try rbdConfigOptions(config, option: "--config"), clusterName: clusterName, uuid: uuid,
                readOnly: readOnly),
            style: .pretty)
    }
}

struct BdevRbdDelete: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: BdevRbdDeleteParams.method, abstract: "Delete a rbd bdev")
    @Argument(help: "rbd bdev name") var name: String

    func run() throws { try invoke(BdevRbdDeleteParams(name: name), style: .none) }
}

struct BdevRbdResize: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: BdevRbdResizeParams.method, abstract: "Resize a rbd bdev")
    @Argument(help: "rbd bdev name") var name: String
    @Argument(help: "new bdev size for resize operation. The unit is MiB") var newSize: UInt64

    func run() throws { try invoke(BdevRbdResizeParams(name: name, newSizeMiB: newSize), style: .pretty) }
}
