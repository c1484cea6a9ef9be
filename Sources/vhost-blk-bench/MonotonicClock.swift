import Glibc

/// CLOCK_MONOTONIC in nanoseconds (vDSO, cheap enough per request).
enum MonotonicClock {
    static func nanos() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(truncatingIfNeeded: ts.tv_sec) &* 1_000_000_000 &+ UInt64(truncatingIfNeeded: ts.tv_nsec)
    }

    /// Sleeps until `deadline` (monotonic ns); returns early never, late by scheduler slack.
    static func sleep(until deadline: UInt64) {
        while true {
            let now = nanos()
            guard now < deadline else { return }
            let left = deadline - now
            var ts = timespec(tv_sec: Int(left / 1_000_000_000), tv_nsec: Int(left % 1_000_000_000))
            _ = nanosleep(&ts, nil)
        }
    }
}
