/// Work that lives on one reactor: a virtqueue being served, for instance.
/// Every call happens on the reactor's thread.
public protocol ReactorTask: AnyObject {
    /// An operation this task queued with `slot` finished with `result` (bytes or -errno).
    func complete(slot: UInt32, result: Int32)
    /// Called once per reactor iteration after the completions, for tasks that asked
    /// (`Reactor.markDirty`): publish used entries, signal the guest, resume popping.
    func flush()
    /// The reactor starts an adaptive-polling phase (`Reactor.setPollable`):
    /// wake-ups are not needed while it lasts (a virtqueue stops asking for kicks).
    func beginPoll()
    /// Looks for work without a wake-up (a virtqueue reads its avail index);
    /// true when some was found.
    func poll() -> Bool
    /// The polling phase ends: ask for wake-ups again, and take work that raced in.
    func endPoll()
}

extension ReactorTask {
    public func beginPoll() {}
    public func poll() -> Bool { false }
    public func endPoll() {}
}

/// Which engine an operation goes to: the reactor's primary engine (io_uring
/// when available) or its thread pool (for `bdev_aio_*` bdevs, and for
/// everything when io_uring is unavailable).
public enum EngineChoice: Sendable {
    case primary
    case threadPool
}
