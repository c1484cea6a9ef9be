import Testing
@testable import BlkDevice

/// Interrupt coalescing's arithmetic (SPDK lib/vhost/vhost.c,
/// `session_vq_io_stats_update`, `vhost_session_vq_used_signal`), driven
/// with a made-up clock.
@Suite struct InterruptCoalescingTests {
    static let ms: UInt64 = 1_000_000
    static let window = CoalescingSettings.windowNanos

    @Test func settingsAreCheckedAsSPDKChecksThem() throws {
        #expect(throws: CoalescingSettings.Refusal.thresholdTooLow(99)) {
            try CoalescingSettings(delayBaseMicros: 0, iopsThreshold: 99)
        }
        #expect(throws: CoalescingSettings.Refusal.delayTooLarge(4_294_968)) {
            try CoalescingSettings(delayBaseMicros: 4_294_968, iopsThreshold: 60000)
        }
        let max = try CoalescingSettings(delayBaseMicros: 4_294_967, iopsThreshold: 100)
        #expect(max.delayBaseNanos < UInt64(UInt32.max))
        #expect(max.thresholdPerWindow == 1)
        let typical = try CoalescingSettings(delayBaseMicros: 80, iopsThreshold: 60000)
        #expect(typical.thresholdPerWindow == 600)  // 60000 IOPS over a 10 ms window
        #expect(typical.isEnabled)
        #expect(!CoalescingSettings.off.isEnabled)
        #expect(CoalescingSettings.off.iopsThreshold == 60000)
    }

    @Test func belowTheThresholdNothingIsDelayed() throws {
        var c = InterruptCoalescing(settings: try CoalescingSettings(delayBaseMicros: 100, iopsThreshold: 60000))
        var now: UInt64 = 1_000 * Self.ms
        for _ in 0..<50 {
            #expect(c.completed(10, now: now) == nil)  // 10 per ms: 100 per window, threshold 600
            c.signalled(now: now)
            now += Self.ms
        }
        #expect(c.delayNanos == 0)
    }

    @Test func theDelayScalesWithTheRateAboveTheThreshold() throws {
        let settings = try CoalescingSettings(delayBaseMicros: 100, iopsThreshold: 60000)
        var c = InterruptCoalescing(settings: settings)
        var now: UInt64 = 1_000 * Self.ms
        #expect(c.completed(1, now: now) == nil)  // opens the first window
        // 1800 completions in the window: (1800 - 600) / 600 = 2 times the base.
        for _ in 0..<18 {
            now += Self.window / 20
            _ = c.completed(100, now: now)
        }
        now += Self.window  // the window is over: the next completion closes it
        #expect(c.completed(0, now: now) == nil)  // a new rate: the next interrupt may go at once
        #expect(c.delayNanos == 200_000)
        c.signalled(now: now)
        // Within the delay: held back until the signal's time.
        #expect(c.completed(4, now: now + 50_000) == now + 200_000)
        #expect(c.completed(4, now: now + 199_999) == now + 200_000)
        #expect(c.completed(4, now: now + 200_000) == nil)
    }

    @Test func aQuietWindowTakesTheDelayAway() throws {
        var c = InterruptCoalescing(settings: try CoalescingSettings(delayBaseMicros: 1000, iopsThreshold: 100))
        var now: UInt64 = 5_000 * Self.ms
        _ = c.completed(5, now: now)  // 5 per window against 1: delay 4 ms
        #expect(c.delayNanos == 4 * Self.ms)
        c.signalled(now: now)
        now += Self.window
        _ = c.completed(1, now: now)  // one request in the window: at the threshold
        #expect(c.delayNanos == 0)
        #expect(c.completed(1, now: now + 1) == nil)
    }

    @Test func hugeRatesAreCappedNotTrapped() throws {
        var c = InterruptCoalescing(settings: try CoalescingSettings(delayBaseMicros: 4_294_967, iopsThreshold: 100))
        _ = c.completed(Int.max, now: UInt64.max - 1)
        #expect(c.delayNanos == InterruptCoalescing.maxDelayNanos)
        c.signalled(now: UInt64.max - 1)
        #expect(c.notBefore == UInt64.max)
        _ = c.completed(-5, now: 0)  // nonsense counts are ignored
    }

    @Test func newSettingsStartOver() throws {
        var c = InterruptCoalescing(settings: try CoalescingSettings(delayBaseMicros: 1000, iopsThreshold: 100))
        _ = c.completed(50, now: 10 * Self.ms)
        c.signalled(now: 10 * Self.ms)
        #expect(c.completed(1, now: 11 * Self.ms) != nil)
        c.update(.off)
        #expect(!c.isEnabled)
        #expect(c.delayNanos == 0)
        #expect(c.notBefore == 0)
    }
}
