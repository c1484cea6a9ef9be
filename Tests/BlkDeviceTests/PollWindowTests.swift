import Reactor
import Testing

/// The reactor's adaptive polling window (`PollWindow`): QEMU's rule for
/// growing it, and four late wake-ups in a row to stop it.
@Suite struct PollWindowTests {
    static let max: UInt64 = 64_000

    /// A window grown to the maximum by wake-ups that came in time.
    static func grown() -> PollWindow {
        var w = PollWindow(maximumNanoseconds: max)
        var blocked: UInt64 = 5_000
        while w.nanoseconds < max {
            #expect(w.wokeUp(afterSleeping: blocked) == .grew)
            blocked = min(max, w.nanoseconds + 1)
        }
        return w
    }

    @Test func growsFromFourMicrosecondsByDoublingUpToTheMaximum() {
        var w = PollWindow(maximumNanoseconds: Self.max)
        #expect(w.nanoseconds == 0)
        var seen: [UInt64] = []
        for _ in 0..<8 {
            _ = w.wokeUp(afterSleeping: Self.max)  // in time: exactly the maximum
            seen.append(w.nanoseconds)
        }
        #expect(seen == [4_000, 8_000, 16_000, 32_000, 64_000, 64_000, 64_000, 64_000])
    }

    @Test func aSleepWithinTheWindowChangesNothing() {
        var w = Self.grown()
        #expect(w.wokeUp(afterSleeping: 10_000) == .unchanged)
        #expect(w.nanoseconds == Self.max)
    }

    @Test func fourLateWakeUpsInARowStopPollingNotThree() {
        var w = Self.grown()
        for _ in 0..<3 { #expect(w.wokeUp(afterSleeping: Self.max + 1) == .unchanged) }
        #expect(w.nanoseconds == Self.max)
        #expect(w.wokeUp(afterSleeping: 1_000_000) == .stopped)
        #expect(w.nanoseconds == 0)
        // Stopped, it stays stopped while wake-ups stay late.
        #expect(w.wokeUp(afterSleeping: 1_000_000) == .unchanged)
        #expect(w.nanoseconds == 0)
        // One in time starts it again at 4 µs.
        #expect(w.wokeUp(afterSleeping: 20_000) == .grew)
        #expect(w.nanoseconds == PollWindow.firstNanoseconds)
    }

    @Test func aWakeUpInTimeResetsTheCount() {
        var w = Self.grown()
        for _ in 0..<10 {
            for _ in 0..<3 { #expect(w.wokeUp(afterSleeping: Self.max * 4) == .unchanged) }
            #expect(w.wokeUp(afterSleeping: 1_000) == .unchanged)
        }
        #expect(w.nanoseconds == Self.max)
        for _ in 0..<3 { _ = w.wokeUp(afterSleeping: Self.max * 4) }
        #expect(w.wokeUp(afterSleeping: Self.max * 4) == .stopped)
    }

    @Test func aZeroMaximumNeverPolls() {
        var w = PollWindow(maximumNanoseconds: 0)
        for blocked: UInt64 in [0, 1_000, 100_000] { #expect(w.wokeUp(afterSleeping: blocked) == .unchanged) }
        #expect(w.nanoseconds == 0)
    }
}
