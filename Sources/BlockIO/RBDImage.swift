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
    /// Blocking calls under way (`size`, `resize`) and whether `close`
    /// began: `close` waits for the calls, and none starts after it.
    private let state = Mutex<State>(State())
    private struct State {
        var calls = 0
        var closing = false
        var watch: (handle: UInt64, context: Unmanaged<UpdateWatch>)?
    }

    /// What `rbd_update_watch`'s callback calls (a librbd thread).
    private final class UpdateWatch: Sendable {
        let notify: @Sendable () -> Void
        init(_ notify: @escaping @Sendable () -> Void) { self.notify = notify }
    }

    init(cluster: RBDCluster, ioctx: rados_ioctx_t, image: rbd_image_t) {
        self.cluster = cluster
        self.ioctx = ioctx
        self.image = image
    }

    /// Runs a blocking librbd call unless `close` began (then EBADF).
    private func call<T>(_ what: String, _ body: () -> (Int32, T)) throws(BdevOpenError) -> T {
        let open = state.withLock { state in
            guard !state.closing else { return false }
            state.calls += 1
            return true
        }
        guard open else { throw RBDCluster.failure(-EBADF, what) }
        let (rc, value) = body()
        state.withLock { $0.calls -= 1 }
        guard rc == 0 else { throw RBDCluster.failure(rc, what) }
        return value
    }

    /// The image's size in bytes now (refreshes the header when librbd
    /// saw an update: blocks on the cluster).
    public func size() throws(BdevOpenError) -> UInt64 {
        try call("rbd_get_size") {
            var bytes: UInt64 = 0
            let rc = rbd_get_size(image, &bytes)
            return (rc, bytes)
        }
    }

    /// Grows or shrinks the image to `bytes`.
    public func resize(to bytes: UInt64) throws(BdevOpenError) {
        try call("rbd_resize to \(bytes) bytes") { (rbd_resize(image, bytes), ()) }
    }

    /// Registers librbd's update watch (`rbd_update_watch`, librbd.h): librbd
    /// calls `notify` on one of its threads whenever the image's header
    /// changes (a resize by `rbd resize`, a snapshot, a feature change).
    /// `notify` must not block: it hands the event on. Once per image;
    /// `close` unregisters it first.
    public func watchUpdates(_ notify: @escaping @Sendable () -> Void) throws(BdevOpenError) {
        let context = Unmanaged.passRetained(UpdateWatch(notify))
        let registered: Bool
        do throws(BdevOpenError) {
            registered = try call("rbd_update_watch") {
            var handle: UInt64 = 0
            let rc = rbd_update_watch(image, &handle, { argument in
                guard let argument else { return }
                Unmanaged<UpdateWatch>.fromOpaque(argument)._withUnsafeGuaranteedRef { $0.notify() }
            }, context.toOpaque())
            guard rc == 0 else { return (rc, false) }
            let kept = state.withLock { state in
                guard state.watch == nil else { return false }
                state.watch = (handle, context)
                return true
            }
            if !kept { _ = rbd_update_unwatch(image, handle) }  // a second watch: keep the first
            return (0, kept)
            }
        } catch {
            context.release()
            throw error
        }
        if !registered { context.release() }
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
        start(slot: slot, queue: queue) { completion in
            switch operation {
            case .readv: rbd_aio_readv(image, iovecs, Int32(truncatingIfNeeded: count), offset, completion)
            case .writev: rbd_aio_writev(image, iovecs, Int32(truncatingIfNeeded: count), offset, completion)
            case .flush: rbd_aio_flush(image, completion)
            case .discard: rbd_aio_discard(image, offset, length, completion)
            case .writeZeroes: rbd_aio_write_zeroes(image, offset, Int(truncatingIfNeeded: length), completion, 0, 0)
            }
        }
    }

    /// Starts `rbd_aio_flush` for `queue`'s `stopFlushSlot`: it completes once
    /// every write librbd acknowledged before it reached the OSDs (the default
    /// `rbd_cache_policy` writearound acknowledges writes as it sends them).
    /// Returns 0 when started, else -errno (and nothing arrives).
    public func submitFlush(queue: RBDCompletionQueue) -> Int32 {
        start(slot: queue.stopFlushSlot, queue: queue) { completion in rbd_aio_flush(image, completion) }
    }

    /// Creates a completion that delivers its result to slot `slot` of
    /// `queue`, then runs `operation` with it (a librbd `rbd_aio_*` call).
    /// Returns 0 when started, else -errno (and nothing arrives).
    @inline(__always)
    private func start(slot: UInt32, queue: RBDCompletionQueue, _ operation: (rbd_completion_t) -> Int32) -> Int32 {
        guard let node = queue.node(slot) else { return -EINVAL }
        var completion: rbd_completion_t?
        let created = rbd_aio_create_completion(UnsafeMutableRawPointer(node), { completion, argument in
            // A librbd thread: record the result and hand the node to its queue.
            guard let argument else { return }
            let value = rbd_aio_get_return_value(completion)
            rbd_aio_release(completion)
            RBDCompletionQueue.completed(argument, result: Int32(clamping: value))
        }, &completion)
        guard created == 0, let completion else { return created < 0 ? created : -ENOMEM }
        let rc = operation(completion)
        if rc < 0 {
            rbd_aio_release(completion)
            return rc
        }
        return 0
    }

    /// Closes the image (flushing librbd's cache, releasing its exclusive
    /// lock) and its pool context, once; nothing may be in flight.
    /// Waits for blocking calls under way; unregisters the update watch
    /// first (`rbd_update_unwatch` returns once no callback runs).
    public func close() {
        let first = state.withLock { state in
            defer { state.closing = true }
            return !state.closing
        }
        guard first else { return }
        while state.withLock({ $0.calls }) > 0 { usleep(1000) }
        if let watch = state.withLock({ state in defer { state.watch = nil }; return state.watch }) {
            _ = rbd_update_unwatch(image, watch.handle)
            watch.context.release()
        }
        _ = rbd_close(image)
        rados_ioctx_destroy(ioctx)
    }

    deinit { close() }
}
