import BlockIO
import Glibc
import JSONRPC
import Posix
import VhostBlkAPI

/// bdev_* methods (SPDK's names, parameters and results: SPDK JSON-RPC,
/// "bdev_malloc_create", "bdev_null_create", "bdev_aio_create",
/// "bdev_uring_create", "bdev_get_bdevs"; error codes in
/// api/vhost-blkd.openrpc.json).
extension VhostTarget {
    func bdevUringCreate(_ p: BdevUringCreateParams, _ reply: @escaping RPCReply) throws(RPCError) {
        try createFileBdev(
            name: p.name, filename: p.filename, blockSize: p.blockSize, readOnly: false, uuid: p.uuid, driver: .uring, reply)
    }

    func bdevAioCreate(_ p: BdevAioCreateParams, _ reply: @escaping RPCReply) throws(RPCError) {
        try createFileBdev(
            name: p.name, filename: p.filename, blockSize: p.blockSize, readOnly: p.readonly, uuid: p.uuid, driver: .aio, reply)
    }

    /// Resolves and opens the file off the control loop (`StorageCalls`);
    /// the name is taken meanwhile. Answers once it is open, or why not.
    private func createFileBdev(
        name: String, filename: String, blockSize: UInt32?, readOnly: Bool, uuid: String?, driver: Bdev.Driver,
        _ reply: @escaping RPCReply
    ) throws(RPCError) {
        try checkNewBdevName(name)
        let policy = configuration.backingPathPolicy
        try storageCalls.run("open of \(filename)", { () -> Result<FileBacking, RPCError> in
            do throws(RPCError) {
                let target = try policy.target(for: filename)
                do throws(BdevOpenError) {
                    return .success(try FileBacking.open(
                        path: target.path, readOnly: readOnly, blockSize: blockSize, opener: target.opener))
                } catch {
                    return .failure(RPCError(opening: error))
                }
            } catch {
                return .failure(error)
            }
        }, then: { [unowned self] opened in
            bdevsBeingOpened.remove(name)
            switch opened {
            case .failure(let error):
                reply(.failure(error))
            case .success(let file):
                let bdev = Bdev(name: name, driver: driver, uuid: uuid, blockSize: file.blockSize,
                                numBlocks: file.sizeBytes / UInt64(file.blockSize), backing: .file(file), readOnly: readOnly)
                bdev.inlineIO = driver == .uring && file.isOnMemoryFilesystem && configuration.inlineMemoryFilesystemIO
                add(bdev)
                logger.info("bdev created", metadata: [
                    "bdev.name": "\(name)", "driver": "\(driver.rawValue)", "file": "\(filename)",
                    "direct": "\(file.isDirect)", "size": "\(file.sizeBytes)",
                    "io": "\(bdev.inlineIO ? "inline (tmpfs)" : driver == .aio ? "thread-pool" : "engine")",
                ])
                reply(.success(.string(name)))
            }
        })
        bdevsBeingOpened.insert(name)
    }

    func bdevMallocCreate(_ p: BdevMallocCreateParams) throws(RPCError) -> JSON {
        let name = p.name ?? nextName(prefix: "Malloc")
        try checkNewBdevName(name)
        let size = try sizeBytes(numBlocks: p.numBlocks, blockSize: p.blockSize)
        let memory: MemoryBacking
        do {
            memory = try MemoryBacking(sizeBytes: size)
        } catch {
            throw RPCError(opening: error)
        }
        add(Bdev(name: name, driver: .malloc, uuid: p.uuid, blockSize: p.blockSize, numBlocks: p.numBlocks, backing: .memory(memory)))
        return .string(name)
    }

    func bdevNullCreate(_ p: BdevNullCreateParams) throws(RPCError) -> JSON {
        try checkNewBdevName(p.name)
        _ = try sizeBytes(numBlocks: p.numBlocks, blockSize: p.blockSize)
        add(Bdev(name: p.name, driver: .null, uuid: p.uuid, blockSize: p.blockSize, numBlocks: p.numBlocks, backing: .null))
        return .string(p.name)
    }

    /// Deletes a bdev of `driver`; refuses one a controller uses (-16).
    func bdevDelete(_ name: String, driver: Bdev.Driver) throws(RPCError) -> JSON {
        guard let bdev = bdevs[name], bdev.driver == driver else { throw .errno(ENODEV) }
        if let owner = bdev.claimedBy {
            throw RPCError(code: -Int(EBUSY), message: "\(RPCError.errorText(EBUSY)): bdev \(name) is used by controller \(owner.name)")
        }
        if let operation = bdev.operation {
            throw RPCError(code: -Int(EBUSY), message: "\(RPCError.errorText(EBUSY)): bdev \(name) is \(operation); retry when that call has answered")
        }
        // A file's close may wait for its storage (NFS flushes on close): off the loop.
        var closing: (FileBacking, StorageCalls.Slot)?
        if case .file(let file) = bdev.backing { closing = (file, try storageCalls.reserve(for: "close of \(file.path)")) }
        bdevs.removeValue(forKey: name)
        bdevOrder.removeAll { $0 == name }
        if let (file, slot) = closing {
            do {
                try storageCalls.run("close of \(file.path)", in: slot, { file.close() }, then: { _ in })
            } catch {
                file.close()  // no thread to be had
            }
        } else {
            bdev.close()
        }
        logger.info("bdev deleted", metadata: ["bdev.name": "\(name)"])
        return .bool(true)
    }

    /// With `name` and `timeout` (ms, SPDK's), waits that long for the bdev
    /// to appear (one being created on another connection) before ENODEV.
    func bdevGetBdevs(_ p: BdevGetBdevsParams, _ reply: @escaping RPCReply) throws(RPCError) {
        guard let name = p.name else {
            let names = p.page.map { Array($0.slice(bdevOrder)) } ?? bdevOrder
            return reply(.success(.array(names.compactMap { bdevs[$0] }.map(describe))))
        }
        let deadline = EventLoop.nowMilliseconds() &+ min(p.timeout ?? 0, 3_600_000)
        func answer() {
            if let bdev = bdevs[name] {
                reply(.success(.array([describe(bdev)])))
            } else if EventLoop.nowMilliseconds() >= deadline {
                reply(.failure(.errno(ENODEV)))
            } else {
                loop.after(milliseconds: 10) { answer() }
            }
        }
        answer()
    }

    // MARK: Helpers

    func checkNewBdevName(_ name: String) throws(RPCError) {
        guard !name.isEmpty, name.utf8.count <= 255, !name.contains("/") else {
            throw RPCError(code: -Int(EINVAL), message: "Invalid bdev name '\(name)'")
        }
        if bdevs[name] != nil || bdevsBeingOpened.contains(name) {
            throw RPCError(code: -Int(EEXIST), message: "\(RPCError.errorText(EEXIST)): bdev \(name)")
        }
    }

    private func sizeBytes(numBlocks: UInt64, blockSize: UInt32) throws(RPCError) -> UInt64 {
        guard blockSize >= 512, blockSize <= 65536, blockSize & (blockSize - 1) == 0 else {
            throw RPCError(code: -Int(EINVAL), message: "Invalid block size \(blockSize): must be a power of two from 512 to 65536")
        }
        guard numBlocks > 0 else { throw RPCError(code: -Int(EINVAL), message: "num_blocks must be greater than 0") }
        let (size, overflow) = numBlocks.multipliedReportingOverflow(by: UInt64(blockSize))
        guard !overflow, size <= 1 << 50 else { throw RPCError(code: -Int(EINVAL), message: "Size \(numBlocks) x \(blockSize) is too large") }
        return size
    }

    func nextName(prefix: String) -> String {
        var i = 0
        while bdevs["\(prefix)\(i)"] != nil { i += 1 }
        return "\(prefix)\(i)"
    }

    func add(_ bdev: Bdev) {
        bdevs[bdev.name] = bdev
        bdevOrder.append(bdev.name)
    }

    /// One `bdev_get_bdevs` entry in SPDK's shape.
    private func describe(_ bdev: Bdev) -> JSON {
        var driverSpecific = JSONObject()
        switch bdev.backing {
        case .file(let file):
            var info: JSONObject = ["filename": .string(file.path)]
            if bdev.driver == .aio {
                info["block_size_override"] = .bool(false)
                info["readonly"] = .bool(bdev.readOnly)
                info["fallocate"] = .bool(false)
            }
            info["direct"] = .bool(file.isDirect)
            info["block_device"] = .bool(file.isBlockDevice)
            info["inline_io"] = .bool(bdev.inlineIO)
            driverSpecific[bdev.driver.rawValue] = .object(info)
        case .memory, .null:
            break
        case .rbd(let volume):
            driverSpecific["rbd"] = volume.json
        }
        let ioTypes: JSONObject = [
            "read": true, "write": .bool(!bdev.readOnly), "unmap": .bool(bdev.driver != .null),
            "write_zeroes": true, "flush": true, "reset": false, "compare": false,
            "compare_and_write": false, "abort": false, "nvme_admin": false, "nvme_io": false,
        ]
        return [
            "name": .string(bdev.name),
            "aliases": [],
            "product_name": .string(bdev.driver.productName),
            "block_size": .int(Int64(bdev.blockSize)),
            "num_blocks": .int(Int64(clamping: bdev.numBlocks)),
            "uuid": .string(bdev.uuid),
            "assigned_rate_limits": Self.assignedRateLimits(bdev),  // QoSMethods.swift
            "claimed": .bool(bdev.claimedBy != nil),
            "zoned": false,
            "supported_io_types": .object(ioTypes),
            "driver_specific": .object(driverSpecific),
            "error_policy": Self.errorPolicyJSON(bdev),  // ErrorPolicyMethods.swift
        ]
    }
}

extension VhostTarget {
    /// The bdev module's methods (here and in BdevResizeMethods.swift). A
    /// rescan changes no saved state: a file bdev's entry has no size, its
    /// create reads the file's.
    static let bdevRPCMethods: [RPCMethod] = [
        .deferred(BdevUringCreateParams.self, .bdev, mutatesConfig: true) { t, p, reply throws(RPCError) in try t.bdevUringCreate(p, reply) },
        .immediate(BdevUringDeleteParams.self, .bdev, mutatesConfig: true) { t, p throws(RPCError) in try t.bdevDelete(p.name, driver: .uring) },
        .deferred(BdevAioCreateParams.self, .bdev, mutatesConfig: true) { t, p, reply throws(RPCError) in try t.bdevAioCreate(p, reply) },
        .immediate(BdevAioDeleteParams.self, .bdev, mutatesConfig: true) { t, p throws(RPCError) in try t.bdevDelete(p.name, driver: .aio) },
        .immediate(BdevMallocCreateParams.self, .bdev, mutatesConfig: true) { t, p throws(RPCError) in try t.bdevMallocCreate(p) },
        .immediate(BdevMallocDeleteParams.self, .bdev, mutatesConfig: true) { t, p throws(RPCError) in try t.bdevDelete(p.name, driver: .malloc) },
        .immediate(BdevNullCreateParams.self, .bdev, mutatesConfig: true) { t, p throws(RPCError) in try t.bdevNullCreate(p) },
        .immediate(BdevNullDeleteParams.self, .bdev, mutatesConfig: true) { t, p throws(RPCError) in try t.bdevDelete(p.name, driver: .null) },
        .deferred(BdevUringRescanParams.self, .bdev, mutatesConfig: false) { t, p, reply throws(RPCError) in
            try t.bdevRescan(p.name, driver: .uring, reply)
        },
        .deferred(BdevAioRescanParams.self, .bdev, mutatesConfig: false) { t, p, reply throws(RPCError) in
            try t.bdevRescan(p.name, driver: .aio, reply)
        },
        .immediate(BdevNullResizeParams.self, .bdev, mutatesConfig: true) { t, p throws(RPCError) in try t.bdevNullResize(p) },
        .deferred(BdevResizeParams.self, .bdev, mutatesConfig: true) { t, p, reply throws(RPCError) in try t.bdevResize(p, reply) },
        .deferred(BdevGetBdevsParams.self, .bdev, mutatesConfig: false) { t, p, reply throws(RPCError) in try t.bdevGetBdevs(p, reply) },
    ]
}
