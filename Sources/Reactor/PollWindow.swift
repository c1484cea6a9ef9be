/// A reactor's adaptive polling window: how long its next wait spins
/// before it sleeps. QEMU's rule (util/aio-posix.c, `adjust_polling_time`):
/// a sleep no longer than the window means polling would have caught it; a
/// longer one within the maximum grows the window (4 µs, doubling); beyond
/// the maximum, polling would not have paid, so it stops. With hysteresis:
/// `lateWakeUpsToStop` late wake-ups in a row stop it, not the first; and
/// with probes: a stopped window is tried again at the maximum now and then.
///
/// QEMU stops at the first. Against an interrupt-driven client whose own
/// wake-up now and then takes longer than the window (a halted vCPU), that
/// made the reactor flip between polling and sleeping, and a reactor that
/// sleeps makes the client kick and wait for it in turn: identical 4K
/// randread QD32 runs settled at 371k to 774k IOPS with 98 to 8,791 window
/// stops in 4 s. Four in a row gave 1 to 53 stops, and an idle reactor still
/// sleeps after four windows (docs/PERFORMANCE.md, "Why identical runs differ").
///
/// After a stop, QEMU's rule restarts at 4 µs, after a sleep within the
/// maximum. But a reactor that sleeps, or polls only briefly, measures
/// sleeps that include its own wake-up from the kick (a halted CPU), so
/// against a client that would keep pace with a reactor polling the full
/// window they stay late: the reactor went round stop, 4 µs, stop, hundreds
/// of times a second, asleep 20-30 % of runs that polled at 1-1.5M IOPS
/// otherwise. So where the rule would stop a window below the maximum, or a
/// stopped one wakes late, a probe opens the full window instead, at most
/// once per probe delay: if it catches the next request, polling is back;
/// if not, the window stops at once and the next probe waits twice as long
/// (1 ms, doubling to 64 ms; back to 1 ms once the full window pays), so a
/// reactor with sparse requests spins at most 64 µs in 64 ms for probes.
public struct PollWindow: Sendable {
    /// What one wake-up did to the window.
    public enum Change: Equatable, Sendable {
        case unchanged
        case grew
        case stopped
        /// Open at the maximum for one probe (instead of stopping, or stopped).
        case probed
    }

    /// Late wake-ups in a row that stop polling.
    public static let lateWakeUpsToStop = 4
    /// The window after a stop, or at first, once a wake-up comes in time.
    public static let firstNanoseconds: UInt64 = 4_000
    /// The wait before the first probe after a stop, and the longest wait
    /// (each failed probe doubles it; a wake-up in time at the full window
    /// resets it).
    public static let firstProbeDelayNanoseconds: UInt64 = 1_000_000
    public static let lastProbeDelayNanoseconds: UInt64 = 64_000_000

    /// The longest window; 0 never polls.
    public let maximumNanoseconds: UInt64
    /// The window now; 0: the next wait sleeps at once.
    public private(set) var nanoseconds: UInt64 = 0
    /// Wake-ups in a row that came later than the maximum.
    private var lateWakeUps = 0
    /// True while the window is open for a probe.
    public private(set) var isProbing = false
    /// The wait from a stop to the next probe, and when that probe is due
    /// (the caller's clock, nanoseconds).
    private var probeDelay = PollWindow.firstProbeDelayNanoseconds
    private var nextProbe: UInt64 = 0

    public init(maximumNanoseconds: UInt64) {
        self.maximumNanoseconds = maximumNanoseconds
    }

    /// Adapts the window to a wait that slept `blocked` nanoseconds and
    /// ended at `now` (any monotonic clock in nanoseconds).
    public mutating func wokeUp(afterSleeping blocked: UInt64, at now: UInt64) -> Change {
        guard maximumNanoseconds > 0 else { return .unchanged }
        if blocked > maximumNanoseconds {
            if isProbing {
                // The probe's window did not catch the next request.
                isProbing = false
                probeDelay = min(probeDelay &* 2, Self.lastProbeDelayNanoseconds)
                return stop(at: now)
            }
            lateWakeUps = min(lateWakeUps &+ 1, Self.lateWakeUpsToStop)
            if nanoseconds > 0 && lateWakeUps < Self.lateWakeUpsToStop { return .unchanged }
            // Stopping, or stopped: a probe when one is due, unless the full
            // window is what just failed.
            if nanoseconds < maximumNanoseconds && now >= nextProbe {
                isProbing = true
                nanoseconds = maximumNanoseconds
                return .probed
            }
            return nanoseconds > 0 ? stop(at: now) : .unchanged
        }
        lateWakeUps = 0
        isProbing = false
        // Polling at the full window paid: the next probe may come soon again.
        if nanoseconds == maximumNanoseconds { probeDelay = Self.firstProbeDelayNanoseconds }
        guard blocked > nanoseconds else { return .unchanged }
        nanoseconds = min(maximumNanoseconds, nanoseconds == 0 ? Self.firstNanoseconds : nanoseconds &* 2)
        return .grew
    }

    private mutating func stop(at now: UInt64) -> Change {
        nanoseconds = 0
        nextProbe = now &+ probeDelay
        return .stopped
    }
}
