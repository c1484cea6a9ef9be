import Glibc
import Logging
import Posix

/// A listening socket on the control loop whose accept(2) failures
/// `ListenerReserve` handles: a controller's, the RPC server's, the metrics
/// endpoint's.
protocol ReservedListener: AnyObject {
    var listener: FileDescriptor { get }
    var listenToken: EventLoop.Token? { get }
    var logger: Logger { get }
    /// Who connects to it, for the log: "frontend", "RPC client", "metrics client".
    var peerKind: String { get }
}

/// What the daemon's listening sockets do when accept(2) fails.
///
/// accept(2) fails with EMFILE (or ENFILE) while the connection stays in the
/// listen queue, so a level-triggered listener is reported readable again at
/// once: a loop that only logs spins at 100 % CPU and floods the log. The
/// daemon keeps one descriptor in reserve (a /dev/null opened at start):
/// out of descriptors, it closes the reserve, accepts the waiting connection
/// and closes it (the frontend sees end of file and, like QEMU with
/// `reconnect=`, tries again), then reopens the reserve. Other accept errors
/// (ENOMEM, ENOBUFS), and EMFILE when the reserve could not be reopened, make
/// the listener rest `pauseMilliseconds` instead. One warning starts a burst;
/// while it lasts, a count is logged every `reportMilliseconds`.
///
/// Thread confinement: the control loop.
final class ListenerReserve {
    /// How long a listener is not watched after an accept error it cannot clear.
    static let pauseMilliseconds: UInt64 = 100
    /// At most one log line per this period while a burst lasts.
    static let reportMilliseconds: UInt64 = 5000

    private let loop: EventLoop
    private let logger: Logger
    private var spare: FileDescriptor?
    /// Connections closed and pauses since the last line; nil: no burst.
    private var burst: (refused: Int, paused: Int)?

    init(loop: EventLoop, logger: Logger) {
        self.loop = loop
        self.logger = logger
        spare = Self.openSpare()
    }

    deinit { spare?.close() }

    private static func openSpare() -> FileDescriptor? { try? FileDescriptor.open("/dev/null", flags: O_RDONLY) }

    /// accept(2) on `owner`'s listener failed with `error`. Returns true
    /// when the waiting connection was taken off the queue and closed (accept
    /// again); false when nothing waits or the listener now rests
    /// `pauseMilliseconds`.
    func acceptFailed(_ owner: any ReservedListener, _ error: Errno) -> Bool {
        if error.rawValue == EMFILE || error.rawValue == ENFILE {
            switch refuseOne(on: owner.listener) {
            case .refused:
                note(owner, error, refused: true)
                return true
            case .nothingWaiting:
                // accept(2) takes the descriptor before it looks at the
                // queue: out of descriptors, an empty queue says EMFILE too.
                return false
            case .noReserve:
                break
            }
        }
        note(owner, error, refused: false)
        if let token = owner.listenToken {
            loop.modify(token, events: [])
            loop.after(milliseconds: Self.pauseMilliseconds) { [loop, weak owner] in
                // Closed meanwhile: its token is gone. (A controller whose
                // session is closing turns it off again in `acceptFrontend`.)
                guard let owner, let token = owner.listenToken else { return }
                loop.modify(token, events: .readable)
            }
        }
        return false
    }

    private enum Refusal { case refused, nothingWaiting, noReserve }

    /// Closes the reserve, accepts one connection and closes it, reopens the
    /// reserve. `noReserve` when there is none (one freed since is taken
    /// first) or its slot went to another thread before the accept.
    private func refuseOne(on listener: FileDescriptor) -> Refusal {
        if spare == nil { spare = Self.openSpare() }
        guard let reserve = spare else { return .noReserve }
        reserve.close()
        spare = nil
        let outcome: Refusal
        do {
            if let accepted = try UnixSocket.accept(listener) {
                accepted.close()
                outcome = .refused
            } else {
                outcome = .nothingWaiting
            }
        } catch {
            outcome = .noReserve
        }
        spare = Self.openSpare()
        return outcome
    }

    /// Logs the first failure of a burst at once, then counts.
    private func note(_ owner: any ReservedListener, _ error: Errno, refused: Bool) {
        if var counts = burst {
            if refused { counts.refused += 1 } else { counts.paused += 1 }
            burst = counts
            return
        }
        burst = (0, 0)
        if refused {
            owner.logger.warning(
                "out of file descriptors (accept: \(error)): new \(owner.peerKind) connections are closed at once; raise LimitNOFILE")
        } else {
            owner.logger.error("\(owner.peerKind) accept failed: \(error); listening again in \(Self.pauseMilliseconds) ms")
        }
        loop.after(milliseconds: Self.reportMilliseconds) { [weak self] in self?.report() }
    }

    /// Logs what the burst did since the last line; ends it when that was nothing.
    private func report() {
        guard let counts = burst else { return }
        guard counts.refused + counts.paused > 0 else {
            burst = nil
            return
        }
        let period = "in the last \(Self.reportMilliseconds / 1000) s"
        if counts.refused > 0 {
            logger.warning(
                "out of file descriptors: \(counts.refused) more connections closed at once \(period); raise LimitNOFILE")
        }
        if counts.paused > 0 {
            logger.error("accept failed \(counts.paused) more times \(period); each paused its listener \(Self.pauseMilliseconds) ms")
        }
        burst = (0, 0)
        loop.after(milliseconds: Self.reportMilliseconds) { [weak self] in self?.report() }
    }
}

extension Controller: ReservedListener {
    var peerKind: String { "frontend" }
}
