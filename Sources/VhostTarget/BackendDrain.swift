import Logging
import Posix

/// Counts the queues still finishing requests on a previous backend; the
/// last one runs `done` (control loop).
final class BackendDrain {
    private var remaining: Int
    private let logger: Logger
    private let done: () -> Void
    private let started = EventLoop.nowMilliseconds()

    init(servers: Int, logger: Logger, done: @escaping () -> Void) {
        remaining = servers
        self.logger = logger
        self.done = done
    }

    func serverDrained() {
        remaining -= 1
        if remaining == 0 { done() }
    }

    /// Logs every 5 s, with the time since the switch, while requests on the previous backend are in flight.
    func warnWhileWaiting(on loop: EventLoop) {
        loop.after(milliseconds: 5000) { [weak self, weak loop] in
            guard let self, let loop, remaining > 0 else { return }
            let seconds = (EventLoop.nowMilliseconds() &- started) / 1000
            logger.warning("requests on the previous backend still in flight after \(seconds) s")
            warnWhileWaiting(on: loop)
        }
    }
}

/// A control-loop object carried through a reactor and back: only ever
/// touched on the control loop, where the closure that holds it runs.
struct LoopBound<Object: AnyObject>: @unchecked Sendable {
    let object: Object
    init(_ object: Object) { self.object = object }
}
