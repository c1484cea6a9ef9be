import BlockIO
import JSONRPC
import VhostBlkAPI

/// The clusters `bdev_rbd_register_cluster` connected, by name, in
/// registration order, and the names still connecting (control loop only).
struct RBDClusterRegistry {
    struct Entry {
        let params: BdevRbdRegisterClusterParams
        let cluster: RBDCluster
    }

    private(set) var entries: [String: Entry] = [:]
    private(set) var order: [String] = []
    /// Names whose connect is under way: taken, not yet usable.
    var connecting: Set<String> = []
    /// Bdevs being created on a cluster (bdev name -> cluster name): it cannot be unregistered meanwhile.
    var creating: [String: String] = [:]

    subscript(name: String) -> Entry? { entries[name] }

    mutating func add(_ entry: Entry) {
        entries[entry.params.name] = entry
        order.append(entry.params.name)
    }

    mutating func remove(_ name: String) -> Entry? {
        order.removeAll { $0 == name }
        return entries.removeValue(forKey: name)
    }

    var all: [Entry] { order.compactMap { entries[$0] } }

    /// One entry of `bdev_rbd_get_clusters_info` (SPDK's bdev_rbd_cluster_dump_entry).
    static func describe(_ p: BdevRbdRegisterClusterParams) -> JSONObject {
        var info: JSONObject = ["cluster_name": .string(p.name)]
        if let userID = p.userID { info["user_id"] = .string(userID) }
        if let config = p.configParam { info["config_param"] = config.json }
        if let file = p.configFile { info["config_file"] = .string(file) }
        if let file = p.keyFile { info["key_file"] = .string(file) }
        if let mask = p.coreMask { info["core_mask"] = .string(mask) }
        return info
    }
}
