import Reactor
import Testing

/// The reactor's adaptive polling window (`PollWindow`): QEMU's rule for
/// growing it, four late wake-ups in a row to stop it, and probes that
/// open a stopped window at the maximum again.
@Suite struct PollWindowTests {
    static let max: UInt64 = 64_000

    /// A window grown to the maximum by wake-ups that came in time.
    static func grown() -> PollWindow {
        var w = PollWindow(maximumNanoseconds: max)
        var blocked: UInt64 = 5_000
        while w.nanoseconds < max {
            #expect(w.wokeUp(afterSleeping: blocked, at: 0) == .grew)
            blocked = min(max, w.nanoseconds + 1)
        }
        return w
    }

    @Test func growsFromFourMicrosecondsByDoublingUpToTheMaximum() {
        var w = PollWindow(maximumNanoseconds: Self.max)
        #expect(w.nanoseconds == 0)
        var seen: [UInt64] = []
        for _ in 0..<8 {
            _ = w.wokeUp(afterSleeping: Self.max, at: 0)  // in time: exactly the maximum
            seen.append(w.nanoseconds)
        }
        #expect(seen == [4_000, 8_000, 16_000, 32_000, 64_000, 64_000, 64_000, 64_000])
    }

    @Test func aSleepWithinTheWindowChangesNothing() {
        var w = Self.grown()
        #expect(w.wokeUp(afterSleeping: 10_000, at: 0) == .unchanged)
        #expect(w.nanoseconds == Self.max)
    }

    @Test func fourLateWakeUpsInARowStopPollingNotThree() {
        var w = Self.grown()
        for _ in 0..<3 { #expect(w.wokeUp(afterSleeping: Self.max + 1, at: 0) == .unchanged) }
        #expect(w.nanoseconds == Self.max)
        #expect(w.wokeUp(afterSleeping: 1_000_000, at: 0) == .stopped)
        #expect(w.nanoseconds == 0)
        // Stopped, it stays stopped while wake-ups stay late.
        #expect(w.wokeUp(afterSleeping: 1_000_000, at: 0) == .unchanged)
        #expect(w.nanoseconds == 0)
        // One in time starts it again at 4 µs.
        #expect(w.wokeUp(afterSleeping: 20_000, at: 0) == .grew)
        #expect(w.nanoseconds == PollWindow.firstNanoseconds)
    }

    @Test func aWakeUpInTimeResetsTheCount() {
        var w = Self.grown()
        for _ in 0..<10 {
            for _ in 0..<3 { #expect(w.wokeUp(afterSleeping: Self.max * 4, at: 0) == .unchanged) }
            #expect(w.wokeUp(afterSleeping: 1_000, at: 0) == .unchanged)
        }
        #expect(w.nanoseconds == Self.max)
        for _ in 0..<3 { _ = w.wokeUp(afterSleeping: Self.max * 4, at: 0) }
        #expect(w.wokeUp(afterSleeping: Self.max * 4, at: 0) == .stopped)
    }

    @Test func aZeroMaximumNeverPolls() {
        var w = PollWindow(maximumNanoseconds: 0)
        for blocked: UInt64 in [0, 1_000, 100_000] { #expect(w.wokeUp(afterSleeping: blocked, at: 0) == .unchanged) }
        #expect(w.nanoseconds == 0)
    }

    /// Stops a grown window at `now` with four late wake-ups.
    static func stopped(at now: UInt64) -> PollWindow {
        var w = grown()
        for _ in 0..<3 { _ = w.wokeUp(afterSleeping: max * 4, at: now) }
        #expect(w.wokeUp(afterSleeping: max * 4, at: now) == .stopped)
        return w
    }

    @Test func aStoppedWindowIsProbedAtTheMaximumAfterOneMillisecond() {
        let t0: UInt64 = 5_000_000_000
        var w = Self.stopped(at: t0)
        #expect(w.wokeUp(afterSleeping: Self.max * 4, at: t0 + PollWindow.firstProbeDelayNanoseconds - 1) == .unchanged)
        #expect(w.nanoseconds == 0)
        #expect(w.wokeUp(afterSleeping: Self.max * 4, at: t0 + PollWindow.firstProbeDelayNanoseconds) == .probed)
        #expect(w.nanoseconds == Self.max)
        #expect(w.isProbing)
        // The probe caught the next request: polling stays on at the maximum.
        #expect(w.wokeUp(afterSleeping: 1_000, at: t0 + 2_000_000) == .unchanged)
        #expect(w.nanoseconds == Self.max)
        #expect(!w.isProbing)
    }

    @Test func eachFailedProbeDoublesTheWaitUpToSixtyFourMilliseconds() {
        var now: UInt64 = 1_000_000_000
        var w = Self.stopped(at: now)
        var delays: [UInt64] = []
        for _ in 0..<9 {
            // Late wake-ups every 100 µs until the probe opens; then the probe fails.
            let stoppedAt = now
            repeat {
                now += 100_000
            } while w.wokeUp(afterSleeping: 200_000, at: now) != .probed
            delays.append((now - stoppedAt) / 100_000 * 100_000)
            now += 100_000
            #expect(w.wokeUp(afterSleeping: 200_000, at: now) == .stopped)
            #expect(w.nanoseconds == 0)
        }
        // Rounded up to the 100 µs steps: the first probe waits 1 ms (plus the
        // step of the stop), then 2, 4 ... 64 ms from the failed probe's stop.
        #expect(delays == [1_000_000, 2_000_000, 4_000_000, 8_000_000, 16_000_000, 32_000_000, 64_000_000, 64_000_000, 64_000_000])
        // A wake-up in time below the full window does not reset the wait.
        #expect(w.wokeUp(afterSleeping: 10_000, at: now + 1) == .grew)
        for _ in 0..<3 { #expect(w.wokeUp(afterSleeping: 200_000, at: now + 2) == .unchanged) }
        #expect(w.wokeUp(afterSleeping: 200_000, at: now + 2) == .stopped)
        #expect(w.wokeUp(afterSleeping: 200_000, at: now + 2 + PollWindow.firstProbeDelayNanoseconds) == .unchanged)
        // A probe that catches the next request does.
        now += PollWindow.lastProbeDelayNanoseconds + 2
        #expect(w.wokeUp(afterSleeping: 200_000, at: now) == .probed)
        #expect(w.wokeUp(afterSleeping: 1_000, at: now + 1) == .unchanged)
        for _ in 0..<4 { _ = w.wokeUp(afterSleeping: 200_000, at: now + 2) }
        #expect(w.nanoseconds == 0)
        #expect(w.wokeUp(afterSleeping: 200_000, at: now + 2 + PollWindow.firstProbeDelayNanoseconds) == .probed)
    }

    @Test func aWindowBelowTheMaximumThatWouldStopIsProbedInstead() {
        var w = PollWindow(maximumNanoseconds: Self.max)
        #expect(w.wokeUp(afterSleeping: 10_000, at: 0) == .grew)
        #expect(w.wokeUp(afterSleeping: 10_000, at: 0) == .grew)
        #expect(w.nanoseconds == 8_000)
        for _ in 0..<3 { #expect(w.wokeUp(afterSleeping: 100_000, at: 1) == .unchanged) }
        #expect(w.wokeUp(afterSleeping: 100_000, at: 1) == .probed)
        #expect(w.nanoseconds == Self.max)
        // It failed: stopped, and the next probe waits 2 ms.
        #expect(w.wokeUp(afterSleeping: 100_000, at: 2) == .stopped)
        #expect(w.wokeUp(afterSleeping: 100_000, at: 2 + 2_000_000 - 1) == .unchanged)
        #expect(w.wokeUp(afterSleeping: 100_000, at: 2 + 2_000_000) == .probed)
    }

    /// The slow states of issue 23: a client that keeps pace with a reactor
    /// polling the full window (the next request comes within it), but whose
    /// requests, against a sleeping or briefly polling reactor, make most
    /// sleeps late (the reactor's own wake-up from the kick is in them) and
    /// every `shortEvery`-th one short. QEMU's rule, and four in a row alone,
    /// go round stop and 4 µs for good; probes bring full polling back
    /// within about a millisecond (a 150 µs cycle after the 1 ms delay).
    @Test(arguments: [Int.max, 5, 8])
    func aClientThatKeepsPaceWithPollingGetsPollingBack(shortEvery: Int) {
        var w = Self.stopped(at: 0)
        var now: UInt64 = 0
        var pollingSince: UInt64?
        var sleeps = 0
        while now < 10_000_000 {
            if w.nanoseconds == Self.max {
                pollingSince = pollingSince ?? now
                now += 30_000
                _ = w.wokeUp(afterSleeping: 0, at: now)  // caught while polling
            } else {
                pollingSince = nil
                sleeps += 1
                let cycle: UInt64 = sleeps % shortEvery == 0 ? 50_000 : 150_000
                now += cycle
                _ = w.wokeUp(afterSleeping: cycle - w.nanoseconds, at: now)
            }
        }
        #expect(pollingSince.map { $0 <= 1_500_000 } == true, "polling since \(String(describing: pollingSince)) ns")
        #expect(w.nanoseconds == Self.max)
    }
}
