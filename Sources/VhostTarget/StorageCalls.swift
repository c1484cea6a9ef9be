import Glibc
import JSONRPC
import Logging
import Posix

/// Filesystem calls that take as long as the storage does: opening a file on
/// a hung NFS mount, `ftruncate` on a frozen filesystem, `fstat` of a file
/// whose server does not answer. Each runs on a thread of its own and its
/// result comes back on the control loop, which meanwhile serves every other
/// client, controller and frontend.
///
/// At most `limit` run at once: beyond that a call is refused (EAGAIN), so
/// storage that hangs cannot pile up threads. The log names a call still
/// waiting every 5 s.
///
/// Thread confinement: the control loop, but for the calls themselves
/// (checked in debug builds, results included).
final class StorageCalls {
    static let limit = 16

    private let loop: EventLoop
    private let logger: Logger
    /// Calls started (or places reserved) whose results have not come back.
    private(set) var running = 0

    init(loop: EventLoop, logger: Logger) {
        self.loop = loop
        self.logger = logger
    }

    /// A call's place among the `limit`, taken before the work that leads to
    /// it (a shrink first waits for requests in flight, then truncates): a
    /// full table then refuses the work before it starts, not half way.
    final class Slot {
        fileprivate var taken = true
        fileprivate init() {}
    }

    /// Takes a place for a call to `run` later (`in: slot`); throws EAGAIN
    /// when `limit` calls already wait.
    func reserve(for what: String) throws(RPCError) -> Slot {
        loop.preconditionInLoop()
        try checkRoom(for: what)
        running += 1
        return Slot()
    }

    /// Runs `call` on a new thread; `done` gets its result on the control loop.
    /// `what` names it in errors and the log ("open /mnt/nfs/disk.img").
    /// With a `slot` from `reserve`, it runs in that place (and never throws EAGAIN).
    func run<T: Sendable>(
        _ what: String, in slot: Slot? = nil, _ call: @escaping @Sendable () -> T, then done: @escaping (T) -> Void
    ) throws(RPCError) {
        loop.preconditionInLoop()
        if let slot, slot.taken {
            slot.taken = false  // the place passes to this call
        } else {
            try checkRoom(for: what)
            running += 1
        }
        let pending = LoopBound(
            PendingCall(what: what, started: EventLoop.nowMilliseconds(), loop: loop, logger: logger, done: done))
        let loop = self.loop
        do {
            try PosixThread.startDetached(name: "vb-storage") {
                let result = call()
                loop.execute { pending.object.finish(result) }
            }
        } catch {
            running -= 1
            throw RPCError(code: -Int(error.rawValue), message: "cannot start a thread for \(what): \(error)")
        }
        pending.object.onFinish = { [weak self] in self?.running -= 1 }
        warnWhileWaiting(pending.object)
    }

    private func checkRoom(for what: String) throws(RPCError) {
        guard running < Self.limit else {
            throw RPCError(
                code: -Int(EAGAIN),
                message: "\(RPCError.errorText(EAGAIN)): \(running) file operations already wait for their storage; "
                    + "\(what) was not started. Check the storage, then retry")
        }
    }

    private func warnWhileWaiting<T>(_ call: PendingCall<T>) {
        loop.after(milliseconds: 5000) { [weak self, weak call] in
            guard let self, let call, !call.finished else { return }
            let seconds = (EventLoop.nowMilliseconds() &- call.started) / 1000
            logger.warning("\(call.what) still waits for its storage after \(seconds) s; the daemon serves everything else")
            warnWhileWaiting(call)
        }
    }
}

/// One call in flight: its completion, run once on the control loop.
private final class PendingCall<T> {
    let what: String
    let started: UInt64
    private let loop: EventLoop
    private let logger: Logger
    private var done: ((T) -> Void)?
    var onFinish: (() -> Void)?
    var finished: Bool { done == nil }

    init(what: String, started: UInt64, loop: EventLoop, logger: Logger, done: @escaping (T) -> Void) {
        self.what = what
        self.started = started
        self.loop = loop
        self.logger = logger
        self.done = done
    }

    func finish(_ result: T) {
        loop.preconditionInLoop()
        guard let done else { return }
        self.done = nil
        onFinish?()
        let seconds = (EventLoop.nowMilliseconds() &- started) / 1000
        if seconds >= 5 { logger.notice("\(what) completed after \(seconds) s") }
        done(result)
    }
}
