import BlockIO
import Glibc
import JSONRPC
import VhostBlkAPI

/// Resizing bdevs while guests use them (PROTOCOL.md §1, "Live resize"):
/// `bdev_uring_rescan`, `bdev_aio_rescan`, `bdev_null_resize` (SPDK's) and
/// `bdev_resize` (ours). Every size change reaches the controller's running
/// queues and the guest (CONFIG_CHANGE_MSG).
extension VhostTarget {
    func bdevRescan(_ name: String, driver: Bdev.Driver, _ reply: @escaping RPCReply) throws(RPCError) {
        guard let bdev = bdevs[name], bdev.driver == driver, case .file(let file) = bdev.backing else {
            throw .errno(ENODEV)
        }
        try refuseWhileShrinking(bdev)
        let bytes: UInt64
        do {
            bytes = try file.refreshSize()
        } catch {
            throw RPCError(code: -Int(error.errno), message: error.message)
        }
        // The file already has its new size: a shrink done outside the daemon
        // cannot be refused, only reported.
        setSize(of: bdev, numBlocks: bytes / UInt64(bdev.blockSize), waitForPreviousRequests: true) {
            reply(.success(.bool(true)))
        }
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

    /// A shrink answers once requests dispatched at the old size completed
    /// and the backing was cut.
    func bdevResize(_ p: BdevResizeParams, _ reply: @escaping RPCReply) throws(RPCError) {
        guard let bdev = bdevs[p.name] else { throw .errno(ENODEV) }
        try refuseWhileShrinking(bdev)
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
        if shrinking {
            // Stop new requests beyond the new end and wait for those in flight, then cut.
            bdev.shrinkPending = true
            setSize(of: bdev, numBlocks: numBlocks, waitForPreviousRequests: true) { [unowned self] in
                bdev.shrinkPending = false
                do throws(RPCError) {
                    try resizeBacking(of: bdev, to: bytes)
                    reply(.success(.bool(true)))
                } catch {
                    reply(.failure(error))
                }
            }
        } else {
            try resizeBacking(of: bdev, to: bytes)
            setSize(of: bdev, numBlocks: numBlocks, waitForPreviousRequests: false) { reply(.success(.bool(true))) }
        }
    }

    // MARK: Helpers

    /// A second resize while a shrink waits for its drain would cut the file under it.
    private func refuseWhileShrinking(_ bdev: Bdev) throws(RPCError) {
        guard !bdev.shrinkPending else {
            throw RPCError(code: -Int(EBUSY), message: "\(RPCError.errorText(EBUSY)): bdev \(bdev.name) is being shrunk; retry when that call has answered")
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

    private func resizeBacking(of bdev: Bdev, to bytes: UInt64) throws(RPCError) {
        do {
            switch bdev.backing {
            case .file(let file): try file.resize(to: bytes)
            case .memory(let memory): try memory.resize(to: bytes)
            case .null: break
            }
        } catch {
            throw RPCError(code: -Int(error.errno), message: error.message)
        }
    }

    /// Records the new size and hands it to the controller using `bdev`, whose
    /// guest is told; then `done` runs, with `waitForPreviousRequests` once
    /// requests dispatched at the old size completed (a shrink).
    private func setSize(of bdev: Bdev, numBlocks: UInt64, waitForPreviousRequests: Bool, then done: @escaping () -> Void) {
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
