import CRBD
import Glibc
import Synchronization

/// An open RBD image (librbd's `rbd_image_t` and its pool's
/// `rados_ioctx_t`). Reactors start asynchronous operations on it
/// (`submit`); librbd completes them on its own threads into the queue's
/// `RBDCompletionQueue`. `size`, `resize` and `close` block on the cluster:
/// the control plane calls them off its loop.
///
/// `@unchecked Sendable`: librbd's image handle is thread-safe; `close` happens once.
public final class RBDImage: @unchecked Sendable {
    /// What a reactor asks librbd to do.
    public enum Operation {
        case readv, writev, flush, discard, writeZeroes
    }

    /// The cluster stays connected while the image is open.
    public let cluster: RBDCluster
    private let ioctx: rados_ioctx_t
    private let image: rbd_image_t
    private let closed = Atomic<Bool>(false)

    init(cluster: RBDCluster, ioctx: rados_ioctx_t, image: rbd_image_t) {
        self.cluster = cluster
        self.ioctx = ioctx
        self.image = image
    }

    /// The image's size in bytes now.
    public func size() throws(BdevOpenError) -> UInt64 {
        var bytes: UInt64 = 0
        let rc = rbd_get_size(image, &bytes)
        guard rc == 0 else { throw RBDCluster.failure(rc, "rbd_get_size") }
        return bytes
    }

    /// Grows or shrinks the image to `bytes`.
    public func resize(to bytes: UInt64) throws(BdevOpenError) {
        let rc = rbd_resize(image, bytes)
        guard rc == 0 else { throw RBDCluster.failure(rc, "rbd_resize to \(bytes) bytes") }
    }

    /// Starts `operation` for request slot `slot` of `queue`; its result
    /// (librbd's return value: bytes read, 0, or -errno) arrives through
    /// `queue`. Returns 0 when started, else -errno (and nothing arrives).
    /// `iovecs` stay valid until the completion is delivered.
    @inline(__always)
    public func submit(
        _ operation: Operation, iovecs: UnsafePointer<iovec>, count: Int, offset: UInt64, length: UInt64,
        slot: UInt32, queue: RBDCompletionQueue
    ) -> Int32 {
        guard let node = queue.node(slot) else { return -EINVAL }
        var completion: rbd_completion_t?
        var rc = rbd_aio_create_completion(UnsafeMutableRawPointer(node), { completion, argument in
            // A librbd thread: record the result and hand the node to its queue.
            guard let argument else { return }
            let value = rbd_aio_get_return_value(completion)
            rbd_aio_release(completion)
            RBDCompletionQueue.completed(argument, result: Int32(clamping: value))
        }, &completion)
        guard rc == 0, let completion else { return rc < 0 ? rc : -ENOMEM }
        switch operation {
        case .readv: rc = rbd_aio_readv(image, iovecs, Int32(truncatingIfNeeded: count), offset, completion)
        case .writev: rc = rbd_aio_writev(image, iovecs, Int32(truncatingIfNeeded: count), offset, completion)
        case .flush: rc = rbd_aio_flush(image, completion)
        case .discard: rc = rbd_aio_discard(image, offset, length, completion)
        case .writeZeroes: rc = rbd_aio_write_zeroes(image, offset, Int(truncatingIfNeeded: length), completion, 0, 0)
        }
        if rc < 0 {
            rbd_aio_release(completion)
            return rc
        }
        return 0
    }

    /// Closes the image (flushing librbd's cache, releasing its exclusive
    /// lock) and its pool context, once; nothing may be in flight.
    public func close() {
        guard !closed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        _ = rbd_close(image)
        rados_ioctx_destroy(ioctx)
    }

    deinit { close() }
}
