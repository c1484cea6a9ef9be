import BlockIO
import Glibc
import JSONRPC
import Posix
import VhostBlkAPI

/// bdev_rbd_* methods (SPDK's names, parameters and results: SPDK JSON-RPC,
/// "bdev_rbd_register_cluster" ... "bdev_rbd_resize"; docs/OPERATIONS.md,
/// "Ceph RBD volumes"). Connecting, opening, resizing and closing block on
/// the cluster: they run off the control loop (`StorageCalls`), bounded by
/// librados' timeouts (`RBDCluster.defaultTimeoutSeconds`).
extension VhostTarget {
    func bdevRbdRegisterCluster(_ p: BdevRbdRegisterClusterParams, _ reply: @escaping RPCReply) throws(RPCError) {
        guard !p.name.isEmpty, p.name.utf8.count <= 255 else {
            throw RPCError(code: -Int(EINVAL), message: "Invalid cluster name '\(p.name)'")
        }
        if rbdClusters[p.name] != nil || rbdClusters.connecting.contains(p.name) {
            throw RPCError(code: -Int(EEXIST), message: "\(RPCError.errorText(EEXIST)): cluster \(p.name)")
        }
        let cpus = try Self.rbdCoreMask(p.coreMask, allowed: configuration.allowedCPUs)
        try storageCalls.run("connect to Ceph cluster \(p.name)", { () -> Result<RBDCluster, RPCError> in
            do throws(BdevOpenError) {
                return .success(try RBDCluster.connect(
                    userID: p.userID, configParams: p.configParam?.pairs ?? [], configFile: p.configFile, keyFile: p.keyFile,
                    cpus: cpus))
            } catch {
                return .failure(RPCError(opening: error))
            }
        }, then: { [unowned self] result in
            rbdClusters.connecting.remove(p.name)
            switch result {
            case .failure(let error):
                reply(.failure(error))
            case .success(let cluster):
                rbdClusters.add(.init(params: p, cluster: cluster))
                logger.info("rbd cluster registered", metadata: ["cluster": "\(p.name)"])
                reply(.success(.string(p.name)))
            }
        })
        rbdClusters.connecting.insert(p.name)
    }

    /// SPDK's `core_mask` ("0x3", "3" or "[0,2-3]"): the CPUs the cluster's
    /// librados and librbd threads run on; CPUs this process may not use are refused.
    static func rbdCoreMask(_ text: String?, allowed: CPUSet) throws(RPCError) -> CPUSet? {
        guard let text else { return nil }
        guard let cpus = CPUSet(parsing: text) else {
            throw RPCError(code: -Int(EINVAL), message: "Invalid core_mask '\(text)'")
        }
        guard cpus.isSubset(of: allowed) else {
            throw RPCError(code: -Int(EINVAL), message: "core_mask \(cpus.hexMask) includes CPUs this process may not use (allowed: \(allowed.hexMask))")
        }
        return cpus
    }

    func bdevRbdUnregisterCluster(_ p: BdevRbdUnregisterClusterParams) throws(RPCError) -> JSON {
        guard rbdClusters[p.name] != nil else {
            throw RPCError(code: -Int(ENOENT), message: "\(RPCError.errorText(ENOENT)): cluster \(p.name)")
        }
        let users = bdevs.values.compactMap { bdev -> String? in
            guard case .rbd(let volume) = bdev.backing, volume.cluster?.name == p.name else { return nil }
            return bdev.name
        } + rbdClusters.creating.filter { $0.value == p.name }.map(\.key)
        if let user = users.sorted().first {
            throw RPCError(code: -Int(EBUSY), message: "\(RPCError.errorText(EBUSY)): cluster \(p.name) is used by bdev \(user)")
        }
        guard let entry = rbdClusters.remove(p.name) else { throw .errno(ENOENT) }
        let cluster = entry.cluster
        do {
            try storageCalls.run("disconnect from Ceph cluster \(p.name)", { cluster.shutdown() }, then: { _ in })
        } catch {
            cluster.shutdown()  // no thread to be had
        }
        logger.info("rbd cluster unregistered", metadata: ["cluster": "\(p.name)"])
        return .bool(true)
    }

    func bdevRbdGetClustersInfo(_ p: BdevRbdGetClustersInfoParams) throws(RPCError) -> JSON {
        if let name = p.name {
            guard let entry = rbdClusters[name] else {
                throw RPCError(code: -Int(ENOENT), message: "\(RPCError.errorText(ENOENT)): cluster \(name)")
            }
            return .object(RBDClusterRegistry.describe(entry.params))
        }
        return .array(rbdClusters.all.map { .object(RBDClusterRegistry.describe($0.params)) })
    }

    func bdevRbdCreate(_ p: BdevRbdCreateParams, _ reply: @escaping RPCReply) throws(RPCError) {
        let name = p.name ?? nextName(prefix: "Ceph")
        try checkNewBdevName(name)
        guard p.blockSize >= 512, p.blockSize <= 65536, p.blockSize & (p.blockSize - 1) == 0 else {
            throw RPCError(code: -Int(EINVAL), message: "Invalid block size \(p.blockSize): must be a power of two from 512 to 65536")
        }
        guard !p.poolName.isEmpty, !p.rbdName.isEmpty else {
            throw RPCError(code: -Int(EINVAL), message: "pool_name and rbd_name must not be empty")
        }
        var registered: RBDClusterRegistry.Entry?
        if let clusterName = p.clusterName {
            guard let entry = rbdClusters[clusterName] else {
                throw RPCError(code: -Int(ENOENT), message: "\(RPCError.errorText(ENOENT)): cluster \(clusterName) is not registered")
            }
            registered = entry
        }
        let shared = registered?.cluster
        try storageCalls.run("open of rbd image \(p.poolName)/\(p.rbdName)", { () -> Result<OpenedRBD, RPCError> in
            do throws(BdevOpenError) {
                let own = shared == nil
                    ? try RBDCluster.connect(userID: p.userID, configParams: p.config?.pairs ?? [], configFile: nil, keyFile: nil)
                    : nil
                guard let cluster = shared ?? own else { return .failure(.errno(EINVAL)) }
                do throws(BdevOpenError) {
                    // On the cluster's core_mask: librbd starts threads as the image opens and as it is watched.
                    return try RBDCluster.onCPUs(cluster.cpus) { () throws(BdevOpenError) -> Result<OpenedRBD, RPCError> in
                        let image = try cluster.openImage(pool: p.poolName, image: p.rbdName, readOnly: p.readOnly)
                        do throws(BdevOpenError) {
                            // Watch before reading the size: a resize from outside after the read is reported.
                            try image.watchUpdates { [weak self, weak image] in
                                guard let self, let image else { return }
                                loop.execute { [weak self] in self?.rbdImageUpdated(image) }
                            }
                            return .success(OpenedRBD(image: image, size: try image.size(), ownCluster: own))
                        } catch {
                            image.close()
                            throw error
                        }
                    }
                } catch {
                    own?.shutdown()
                    throw error
                }
            } catch {
                return .failure(RPCError(opening: error))
            }
        }, then: { [unowned self] result in
            bdevsBeingOpened.remove(name)
            rbdClusters.creating.removeValue(forKey: name)
            switch result {
            case .failure(let error):
                reply(.failure(error))
            case .success(let opened):
                let volume = RBDVolume(image: opened.image, pool: p.poolName, imageName: p.rbdName, cluster: registered?.params,
                                       userID: p.userID, config: p.config, ownCluster: opened.ownCluster)
                add(Bdev(name: name, driver: .rbd, uuid: p.uuid, blockSize: p.blockSize,
                         numBlocks: opened.size / UInt64(p.blockSize), backing: .rbd(volume), readOnly: p.readOnly))
                logger.info("bdev created", metadata: [
                    "bdev.name": "\(name)", "driver": "rbd", "image": "\(p.poolName)/\(p.rbdName)",
                    "cluster": "\(p.clusterName ?? "(own)")", "size": "\(opened.size)",
                ])
                reply(.success(.string(name)))
            }
        })
        bdevsBeingOpened.insert(name)
        if let clusterName = p.clusterName { rbdClusters.creating[name] = clusterName }
    }

    /// Refused while a controller uses the bdev; answers once the image is closed.
    func bdevRbdDelete(_ p: BdevRbdDeleteParams, _ reply: @escaping RPCReply) throws(RPCError) {
        guard let bdev = bdevs[p.name], bdev.driver == .rbd, case .rbd(let volume) = bdev.backing else { throw .errno(ENODEV) }
        if let owner = bdev.claimedBy {
            throw RPCError(code: -Int(EBUSY), message: "\(RPCError.errorText(EBUSY)): bdev \(p.name) is used by controller \(owner.name)")
        }
        try refuseWhileBusy(bdev)
        let slot = try storageCalls.reserve(for: "close of rbd image \(volume.pool)/\(volume.imageName)")
        bdevs.removeValue(forKey: p.name)
        bdevOrder.removeAll { $0 == p.name }
        logger.info("bdev deleted", metadata: ["bdev.name": "\(p.name)"])
        let image = volume.image
        try storageCalls.run("close of rbd image \(volume.pool)/\(volume.imageName)", in: slot, { image.close() },
                             then: { _ in
                                 volume.close()  // the bdev's own connection, if any (the image is closed already)
                                 reply(.success(.bool(true)))
                             })
    }

    /// Grows the image (SPDK refuses to shrink it), then tells the guest.
    func bdevRbdResize(_ p: BdevRbdResizeParams, _ reply: @escaping RPCReply) throws(RPCError) {
        guard let bdev = bdevs[p.name], bdev.driver == .rbd, case .rbd(let volume) = bdev.backing else { throw .errno(ENODEV) }
        try refuseWhileBusy(bdev)
        let (bytes, overflow) = p.newSizeMiB.multipliedReportingOverflow(by: 1 << 20)
        guard p.newSizeMiB > 0, !overflow, bytes <= 1 << 50 else {
            throw RPCError(code: -Int(EINVAL), message: "Invalid size \(p.newSizeMiB) MiB")
        }
        guard bytes >= bdev.sizeBytes else {
            throw RPCError(code: -Int(EINVAL), message: "The new size of rbd bdev \(p.name) must not be smaller than its current size")
        }
        if bdev.readOnly { throw RPCError(code: -Int(EROFS), message: "bdev \(p.name) is read-only") }
        let image = volume.image
        try storageCalls.run("resize of rbd image \(volume.pool)/\(volume.imageName)", { () -> Result<Void, RPCError> in
            do throws(BdevOpenError) {
                try image.resize(to: bytes)
                return .success(())
            } catch {
                return .failure(RPCError(opening: error))
            }
        }, then: { [unowned self] result in
            guard case .success = result else {
                bdev.operation = nil
                return reply(result.map { .bool(true) })
            }
            setSize(of: bdev, numBlocks: bytes / UInt64(bdev.blockSize), waitForPreviousRequests: false) {
                bdev.operation = nil
                reply(.success(.bool(true)))
            }
        })
        bdev.operation = "being resized"
    }
}

extension VhostTarget {
    /// librbd's update watch fired (posted here from a librbd thread): the
    /// image's header changed, perhaps its size (`rbd resize` outside the
    /// daemon). The size is read off the control loop and applied as
    /// `bdev_rbd_resize` applies it; a shrink as `bdev_uring_rescan` applies
    /// a file's (requests dispatched at the old size complete first).
    func rbdImageUpdated(_ image: RBDImage) {
        guard let bdev = bdevs.values.first(where: { bdev in
            if case .rbd(let volume) = bdev.backing { return volume.image === image }
            return false
        }), case .rbd(let volume) = bdev.backing else { return }  // deleted, or not added yet (its size is read after the watch)
        volume.sizeCheckWanted = true
        checkRBDSize(bdev, volume)
    }

    /// One size check at a time per bdev; one more when an update came
    /// meanwhile; none while a resize call is under way (retried after it).
    private func checkRBDSize(_ bdev: Bdev, _ volume: RBDVolume) {
        guard volume.sizeCheckWanted, !volume.sizeCheckRunning, bdevs[bdev.name] === bdev else { return }
        guard bdev.operation == nil else { return retryRBDSizeCheck(bdev, volume, afterMilliseconds: 100) }
        volume.sizeCheckWanted = false
        volume.sizeCheckRunning = true
        let image = volume.image
        let blocksBefore = bdev.numBlocks
        do {
            try storageCalls.run("size check of rbd image \(volume.pool)/\(volume.imageName)", { () -> Result<UInt64, BdevOpenError> in
                do throws(BdevOpenError) {
                    return .success(try image.size())
                } catch {
                    return .failure(error)
                }
            }, then: { [unowned self] result in
                volume.sizeCheckRunning = false
                guard bdevs[bdev.name] === bdev else { return }
                switch result {
                case .failure(let error):
                    logger.warning("size check of rbd image \(volume.pool)/\(volume.imageName) failed: \(error.message)",
                                   metadata: ["bdev.name": "\(bdev.name)"])
                case .success(let bytes):
                    let numBlocks = bytes / UInt64(bdev.blockSize)
                    if bdev.operation != nil || bdev.numBlocks != blocksBefore {
                        // A resize call ran meanwhile: this size may predate it.
                        volume.sizeCheckWanted = true
                    } else if numBlocks != bdev.numBlocks {
                        logger.notice("rbd image \(volume.pool)/\(volume.imageName) was resized outside the daemon",
                                      metadata: ["bdev.name": "\(bdev.name)", "size": "\(bytes)"])
                        bdev.operation = "being resized after a resize of its image"
                        setSize(of: bdev, numBlocks: numBlocks, waitForPreviousRequests: numBlocks < bdev.numBlocks) { [unowned self] in
                            bdev.operation = nil
                            checkRBDSize(bdev, volume)
                        }
                        return
                    }
                }
                checkRBDSize(bdev, volume)
            })
        } catch {
            // No storage-call place now (EAGAIN): try again later.
            volume.sizeCheckRunning = false
            volume.sizeCheckWanted = true
            retryRBDSizeCheck(bdev, volume, afterMilliseconds: 1000)
        }
    }

    private func retryRBDSizeCheck(_ bdev: Bdev, _ volume: RBDVolume, afterMilliseconds delay: UInt64) {
        guard !volume.sizeCheckScheduled else { return }
        volume.sizeCheckScheduled = true
        loop.after(milliseconds: delay) { [weak self] in
            volume.sizeCheckScheduled = false
            self?.checkRBDSize(bdev, volume)
        }
    }
}

/// An image opened off the control loop, with its size and the bdev's own connection.
struct OpenedRBD: Sendable {
    let image: RBDImage
    let size: UInt64
    let ownCluster: RBDCluster?
}

extension VhostTarget {
    static let rbdRPCMethods: [RPCMethod] = [
        .deferred(BdevRbdRegisterClusterParams.self, .bdev, mutatesConfig: true) { t, p, reply throws(RPCError) in
            try t.bdevRbdRegisterCluster(p, reply)
        },
        .immediate(BdevRbdUnregisterClusterParams.self, .bdev, mutatesConfig: true) { t, p throws(RPCError) in
            try t.bdevRbdUnregisterCluster(p)
        },
        .immediate(BdevRbdGetClustersInfoParams.self, .bdev, mutatesConfig: false) { t, p throws(RPCError) in
            try t.bdevRbdGetClustersInfo(p)
        },
        .deferred(BdevRbdCreateParams.self, .bdev, mutatesConfig: true) { t, p, reply throws(RPCError) in try t.bdevRbdCreate(p, reply) },
        .deferred(BdevRbdDeleteParams.self, .bdev, mutatesConfig: true) { t, p, reply throws(RPCError) in try t.bdevRbdDelete(p, reply) },
        .deferred(BdevRbdResizeParams.self, .bdev, mutatesConfig: true) { t, p, reply throws(RPCError) in try t.bdevRbdResize(p, reply) },
    ]
}
