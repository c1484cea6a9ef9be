/// What one reactor's loop did, counted so that two runs of the same load
/// can be compared (issue 23: identical runs settling at different rates).
///
/// Plain integers that only the reactor thread writes (a few adds per loop
/// iteration or polling round, none per request); readers take a copy on the
/// reactor with `Reactor.postAndWait` (`Reactor.countersSnapshot`), so there
/// are no atomics. A polling phase adds its rounds every millisecond and
/// at its end. Times are nanoseconds of CLOCK_MONOTONIC.
public struct ReactorCounters: Sendable, Equatable {
    /// Waits in the engine that could block (the loop's sleeps), and how many
    /// of them returned with nothing handled (a timeout or a spurious wake-up).
    public var sleeps: UInt64 = 0
    /// Polling phases entered, their rounds, and the rounds that found no work.
    public var pollPhases: UInt64 = 0
    public var pollRounds: UInt64 = 0
    public var emptyPollRounds: UInt64 = 0
    /// Times the adaptive window was switched off (a sleep longer than the
    /// maximum) and grown (a sleep within the maximum, longer than the window).
    public var pollWindowOffs: UInt64 = 0
    public var pollWindowGrows: UInt64 = 0
    /// Times the window was opened at the maximum for one probe (where the
    /// rule would have stopped it, or while it was stopped: `PollWindow`).
    public var pollWindowProbes: UInt64 = 0
    /// The window now (0: the reactor sleeps without polling first).
    public var pollWindowNanoseconds: UInt64 = 0
    /// The primary engine's submissions: system calls that submitted
    /// anything, and the operations they carried (io_uring only; 0 for the
    /// thread pool).
    public var engineSubmits: UInt64 = 0
    public var engineSubmitted: UInt64 = 0
    /// Busy, idle (asleep in the engine) and polling (part of busy) time.
    public var busyNanoseconds: UInt64 = 0
    public var idleNanoseconds: UInt64 = 0
    public var pollNanoseconds: UInt64 = 0

    public init() {}
}
