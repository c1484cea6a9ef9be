import CShims
import Glibc
import Posix

/// A one-shot timer served by a reactor's engine, without touching the loop:
/// a timerfd whose read is queued in the engine only while the timer is
/// armed, so an idle timer costs one descriptor and no engine slot, and the
/// reactor sleeps as before when nothing waits.
///
/// Thread confinement: create, arm, close and get called back on `reactor`'s thread.
public final class ReactorTimer: ReactorTask {
    private let reactor: Reactor
    private let timer: TimerFD
    /// The timerfd read's landing zone (owned; freed in deinit).
    private let buffer = UnsafeMutableRawPointer.allocate(byteCount: 8, alignment: 8)
    private var taskID: UInt32 = 0
    private var readQueued = false
    private var closing = false
    private var fired: (() -> Void)?

    /// True from `arm` until the timer has fired (or was closed).
    public private(set) var isArmed = false

    /// Creates the timerfd and registers with `reactor` (call on its thread).
    /// `fired` runs on the reactor once per expiry of an `arm`.
    public init(reactor: Reactor, fired: @escaping () -> Void) throws(Errno) {
        self.reactor = reactor
        reactor.preconditionOnReactor()
        // Blocking on purpose: io_uring polls it, the thread pool reads it on a worker.
        do {
            timer = try TimerFD()
        } catch {
            buffer.deallocate()
            throw error
        }
        self.fired = fired
        taskID = reactor.register(self)
    }

    deinit {
        buffer.deallocate()
    }

    /// Fires once after `nanoseconds` (at least 1), replacing an earlier deadline.
    public func arm(afterNanoseconds nanoseconds: UInt64) {
        reactor.preconditionOnReactor()
        guard !closing else { return }
        setTime(max(1, nanoseconds))
        isArmed = true
        queueRead()
    }

    /// Stops the timer for good: the pending read (if any) is completed at
    /// once, then the task is unregistered and the descriptor closed.
    public func close() {
        reactor.preconditionOnReactor()
        guard !closing else { return }
        closing = true
        fired = nil
        isArmed = false
        if readQueued {
            setTime(1)  // the read completes; `complete` finishes the close
        } else {
            finishClose()
        }
    }

    private func setTime(_ nanoseconds: UInt64) {
        _ = try? timer.arm(afterNanoseconds: nanoseconds)
    }

    private func queueRead() {
        guard !readQueued else { return }
        readQueued = reactor.enqueue(.read(fd: timer.fd, buffer: buffer, length: 8), task: taskID, slot: 0)
        if !readQueued {
            reactor.markDirty(taskID)  // engine full (not expected: one slot per task is reserved); retried at flush
        }
    }

    private func finishClose() {
        reactor.unregister(taskID)
        timer.close()
    }

    // MARK: ReactorTask

    public func complete(slot: UInt32, result: Int32) {
        reactor.preconditionOnReactor()
        readQueued = false
        if closing {
            finishClose()
            return
        }
        guard isArmed else { return }
        if result < 0 {
            // EINTR and the like: the deadline may not have passed; ask again.
            queueRead()
            return
        }
        isArmed = false
        fired?()
    }

    public func flush() {
        if isArmed && !readQueued && !closing { queueRead() }
    }
}
