import BlockIO
import Glibc
import JSONRPC
import VhostBlkAPI

/// Resizing bdevs while guests use them (docs/PROTOCOL-NOTES.md, "Live resize"):
/// `bdev_uring_rescan`, `bdev_aio_rescan`, `bdev_null_resize` (SPDK's) and
/// `bdev_resize` (ours). Every size change reaches the controller's running
/// queues and the guest (CONFIG_CHANGE_MSG).
extension VhostTarget {
    /// Reads the file's size off the control loop (`StorageCalls`), then
    /// hands it to the controller; answers once requests dispatched at the
    /// old size completed (the file may have shrunk under them).
    func bdevRescan(_ name: String, driver: Bdev.Driver, _ reply: @escaping RPCReply) throws(RPCError) {
        guard let bdev = bdevs[name], bdev.driver == driver, case .file(let file) = bdev.backing else {
            throw .errno(ENODEV)
        }
        try refuseWhileBusy(bdev)
        try storageCalls.run("size check of \(file.path)", { () -> Result<UInt64, RPCError> in
            do throws(BdevOpenError) {
                return .success(try file.refreshSize())
            } catch {
                return .failure(RPCError(opening: error))
            }
        }, then: { [unowned self] result in
            switch result {
            case .failure(let error):
                bdev.operation = nil
                reply(.failure(error))
            case .success(let bytes):
                // The file already has its new size: a shrink done outside the
                // daemon cannot be refused, only reported.
                setSize(of: bdev, numBlocks: bytes / UInt64(bdev.blockSize), waitForPreviousRequests: true) {
                    bdev.operation = nil
                    reply(.success(.bool(true)))
                }
            }
        })
        bdev.operation = "being rescanned"
    }

    func bdevNullResize(_ p: BdevNullResizeParams) throws(RPCError) -> JSON {
        guard let bdev = bdevs[p.name], bdev.driver == .null else { throw .errno(ENODEV) }
        let numBlocks = try blocks(mebibytes: p.newSize, of: bdev)
        // SPDK: "The new bdev size must not be smaller than current bdev size."
        guard numBlocks >= bdev.numBlocks else {
            throw RPCError(code: -Int(EINVAL), message: "The new size of null bdev \(p.name) must not be smaller than its current size")
        }
        setSize(of: bdev, numBlocks: numBlocks, waitForPreviousRequests: false) {}
        return .bool(true)
    }

    /// A grow answers once the backing has its new size and the guest was
    /// told; a shrink once requests dispatched at the old size completed and
    /// the backing was cut. A file's size is set off the control loop.
    func bdevResize(_ p: BdevResizeParams, _ reply: @escaping RPCReply) throws(RPCError) {
        guard let bdev = bdevs[p.name] else { throw .errno(ENODEV) }
        try refuseWhileBusy(bdev)
        let numBlocks = try blocks(mebibytes: p.newSizeMiB, of: bdev)
        let bytes = numBlocks &* UInt64(bdev.blockSize)  // checked by blocks(mebibytes:of:)
        if case .file(let file) = bdev.backing, file.isBlockDevice {
            throw RPCError(
                code: -Int(EINVAL),
                message: "bdev \(p.name) is block device \(file.path): resize the device (e.g. losetup -c), then call bdev_uring_rescan")
        }
        if bdev.readOnly { throw RPCError(code: -Int(EROFS), message: "bdev \(p.name) is read-only") }
        let shrinking = numBlocks < bdev.numBlocks
        if shrinking, let owner = bdev.claimedBy, !p.allowShrink {
            throw RPCError(
                code: -Int(EBUSY),
                message: "\(RPCError.errorText(EBUSY)): bdev \(p.name) is used by controller \(owner.name); shrinking it needs allow_shrink")
        }
        let finish: (Result<Void, RPCError>) -> Void = { result in
            bdev.operation = nil
            reply(result.map { .bool(true) })
        }
        if shrinking {
            // Stop new requests beyond the new end and wait for those in flight,
            // then cut. The cut's storage call has its place before anything
            // changes: it cannot be refused once the guest was told.
            let slot: StorageCalls.Slot?
            if case .file(let file) = bdev.backing {
                slot = try storageCalls.reserve(for: "resize of \(file.path)")
            } else if case .rbd(let volume) = bdev.backing {
                slot = try storageCalls.reserve(for: "resize of rbd image \(volume.pool)/\(volume.imageName)")
            } else {
                slot = nil
            }
            bdev.operation = "being shrunk"
            setSize(of: bdev, numBlocks: numBlocks, waitForPreviousRequests: true) { [unowned self] in
                resizeBacking(of: bdev, to: bytes, in: slot, then: finish)
            }
        } else {
            bdev.operation = "being resized"
            resizeBacking(of: bdev, to: bytes) { [unowned self] result in
                guard case .success = result else { return finish(result) }
                setSize(of: bdev, numBlocks: numBlocks, waitForPreviousRequests: false) { finish(.success(())) }
            }
        }
    }

    // MARK: Helpers

    /// A second resize while one is under way would race it (a shrink waiting
    /// for its drain would cut the file under a grow).
    func refuseWhileBusy(_ bdev: Bdev) throws(RPCError) {
        if let operation = bdev.operation {
            throw RPCError(code: -Int(EBUSY), message: "\(RPCError.errorText(EBUSY)): bdev \(bdev.name) is \(operation); retry when that call has answered")
        }
    }

    /// `mebibytes` as whole blocks of `bdev`, refusing 0 and sizes over 1 PiB.
    private func blocks(mebibytes: UInt64, of bdev: Bdev) throws(RPCError) -> UInt64 {
        let (bytes, overflow) = mebibytes.multipliedReportingOverflow(by: 1 << 20)
        guard mebibytes > 0, !overflow, bytes <= 1 << 50 else {
            throw RPCError(code: -Int(EINVAL), message: "Invalid size \(mebibytes) MiB")
        }
        return bytes / UInt64(bdev.blockSize)
    }

    /// Gives the backing `bytes`: a file on a storage thread (`ftruncate`
    /// waits for the storage), memory at once; then `done`, on the control loop.
    /// With `slot`, the call runs in the place reserved for it.
    private func resizeBacking(
        of bdev: Bdev, to bytes: UInt64, in slot: StorageCalls.Slot? = nil, then done: @escaping (Result<Void, RPCError>) -> Void
    ) {
        switch bdev.backing {
        case .file(let file):
            resizeOnStorageThread("resize of \(file.path)", in: slot, { () throws(BdevOpenError) in
                try file.resize(to: bytes)
            }, then: done)
        case .memory(let memory):
            do throws(BdevOpenError) {
                try memory.resize(to: bytes)
                done(.success(()))
            } catch {
                done(.failure(RPCError(opening: error)))
            }
        case .null:
            done(.success(()))
        case .rbd(let volume):
            let image = volume.image
            resizeOnStorageThread("resize of rbd image \(volume.pool)/\(volume.imageName)", in: slot, { () throws(BdevOpenError) in
                try image.resize(to: bytes)
            }, then: done)
        }
    }

    /// Runs `resize` on a storage thread (`what` names it); then `done`,
    /// on the control loop, also when no thread could take it.
    private func resizeOnStorageThread(
        _ what: String, in slot: StorageCalls.Slot?, _ resize: @escaping @Sendable () throws(BdevOpenError) -> Void,
        then done: @escaping (Result<Void, RPCError>) -> Void
    ) {
        do throws(RPCError) {
            try storageCalls.run(what, in: slot, { () -> Result<Void, RPCError> in
                do throws(BdevOpenError) {
                    try resize()
                    return .success(())
                } catch {
                    return .failure(RPCError(opening: error))
                }
            }, then: done)
        } catch {
            done(.failure(error))
        }
    }

    /// Records the new size and hands it to the controller using `bdev`, whose
    /// guest is told; then `done` runs, with `waitForPreviousRequests` once
    /// requests dispatched at the old size completed (a shrink).
    func setSize(of bdev: Bdev, numBlocks: UInt64, waitForPreviousRequests: Bool, then done: @escaping () -> Void) {
        let old = bdev.numBlocks
        bdev.numBlocks = numBlocks
        logger.info("bdev resized", metadata: [
            "bdev.name": "\(bdev.name)", "old.blocks": "\(old)", "new.blocks": "\(numBlocks)",
        ])
        guard let session = bdev.claimedBy?.session else {
            done()
            return
        }
        session.backendChanged(waitForPreviousRequests: waitForPreviousRequests, then: done)
    }
}
