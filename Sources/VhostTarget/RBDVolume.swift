import BlockIO
import JSONRPC
import VhostBlkAPI

/// What an rbd bdev holds: its open image and how it was reached, for
/// `bdev_get_bdevs` and `save_config` (SPDK's bdev_rbd_dump_info_json and
/// bdev_rbd_write_config_json).
final class RBDVolume {
    let image: RBDImage
    let pool: String
    let imageName: String
    /// The registered cluster it uses, with that cluster's parameters; nil
    /// when the bdev has a connection of its own (`user_id`, `config`).
    let cluster: BdevRbdRegisterClusterParams?
    let userID: String?
    let config: RBDConfigOptions?
    /// librbd's update watch fired and the size was not read since; a read
    /// is under way; a retry is scheduled (control loop only).
    var sizeCheckWanted = false
    var sizeCheckRunning = false
    var sizeCheckScheduled = false
    /// The bdev's own connection, shut down with it.
    private let ownCluster: RBDCluster?

    init(image: RBDImage, pool: String, imageName: String, cluster: BdevRbdRegisterClusterParams?,
         userID: String?, config: RBDConfigOptions?, ownCluster: RBDCluster?) {
        self.image = image
        self.pool = pool
        self.imageName = imageName
        self.cluster = cluster
        self.userID = userID
        self.config = config
        self.ownCluster = ownCluster
    }

    /// Closes the image, then the bdev's own connection (blocks on the cluster: off the control loop).
    func close() {
        image.close()
        ownCluster?.shutdown()
    }

    /// `driver_specific.rbd` of `bdev_get_bdevs`, in SPDK's shape.
    var json: JSON {
        var info: JSONObject = ["pool_name": .string(pool), "rbd_name": .string(imageName)]
        if let cluster {
            // SPDK's bdev_rbd_cluster_dump_entry: the cluster's parameters but its core mask.
            for (key, value) in RBDClusterRegistry.describe(cluster) where key != "core_mask" { info[key] = value }
        } else {
            if let userID { info["user_id"] = .string(userID) }
            if let config { info["config"] = config.json }
        }
        return .object(info)
    }
}
