/// A reactor's adaptive polling window: how long its next wait spins
/// before it sleeps. QEMU's rule (util/aio-posix.c, `adjust_polling_time`):
/// a sleep no longer than the window means polling would have caught it; a
/// longer one within the maximum grows the window (4 µs, doubling); beyond
/// the maximum, polling would not have paid, so it stops. With hysteresis:
/// `lateWakeUpsToStop` late wake-ups in a row stop it, not the first.
///
/// QEMU stops at the first. Against an interrupt-driven client whose own
/// wake-up now and then takes longer than the window (a halted vCPU), that
/// made the reactor flip between polling and sleeping, and a reactor that
/// sleeps makes the client kick and wait for it in turn: identical 4K
/// randread QD32 runs settled at 371k to 774k IOPS with 98 to 8,791 window
/// stops in 4 s. Four in a row gave 1 to 53 stops, and an idle reactor still
/// sleeps after four windows (docs/PERFORMANCE.md, "Why identical runs differ").
public struct PollWindow: Sendable {
    /// What one wake-up did to the window.
    public enum Change: Equatable, Sendable {
        case unchanged
        case grew
        case stopped
    }

    /// Late wake-ups in a row that stop polling.
    public static let lateWakeUpsToStop = 4
    /// The window after a stop, or at first, once a wake-up comes in time.
    public static let firstNanoseconds: UInt64 = 4_000

    /// The longest window; 0 never polls.
    public let maximumNanoseconds: UInt64
    /// The window now; 0: the next wait sleeps at once.
    public private(set) var nanoseconds: UInt64 = 0
    /// Wake-ups in a row that came later than the maximum.
    private var lateWakeUps = 0

    public init(maximumNanoseconds: UInt64) {
        self.maximumNanoseconds = maximumNanoseconds
    }

    /// Adapts the window to a wait that slept `blocked` nanoseconds.
    public mutating func wokeUp(afterSleeping blocked: UInt64) -> Change {
        guard maximumNanoseconds > 0 else { return .unchanged }
        if blocked > maximumNanoseconds {
            lateWakeUps = min(lateWakeUps &+ 1, Self.lateWakeUpsToStop)
            guard lateWakeUps == Self.lateWakeUpsToStop, nanoseconds > 0 else { return .unchanged }
            nanoseconds = 0
            return .stopped
        }
        lateWakeUps = 0
        guard blocked > nanoseconds else { return .unchanged }
        nanoseconds = min(maximumNanoseconds, nanoseconds == 0 ? Self.firstNanoseconds : nanoseconds &* 2)
        return .grew
    }
}
