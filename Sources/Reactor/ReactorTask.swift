/// Work that lives on one reactor: a virtqueue being served, for instance.
/// Every call happens on the reactor's thread.
public protocol ReactorTask: AnyObject {
    /// An operation this task queued with `slot` finished with `result` (bytes or -errno).
    func complete(slot: UInt32, result: Int32)
    /// Called once per reactor iteration after the completions, for tasks that asked
    /// (`Reactor.markDirty`): publish used entries, signal the guest, resume popping.
    func flush()
}

/// Which engine an operation goes to: the reactor's primary engine (io_uring
/// when available) or its thread pool (for `bdev_aio_*` bdevs, and for
/// everything when io_uring is unavailable).
public enum EngineChoice: Sendable {
    case primary
    case threadPool
}
