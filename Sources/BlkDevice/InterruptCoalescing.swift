/// A controller's interrupt coalescing settings, as `vhost_controller_set_coalescing`
/// takes them (SPDK JSON-RPC, "vhost_controller_set_coalescing"; SPDK
/// lib/vhost/vhost.c, `vhost_dev_set_coalescing`): `delayBaseMicros` 0 turns
/// coalescing off; otherwise a queue completing more than `iopsThreshold`
/// requests per second delays its interrupts (`InterruptCoalescing`).
package struct CoalescingSettings: Sendable, Equatable {
    /// How often a queue's rate is measured: SPDK's SPDK_VHOST_STATS_CHECK_INTERVAL_MS.
    package static let windowNanos: UInt64 = 10_000_000
    /// Windows per second.
    package static let windowsPerSecond: UInt64 = 1_000_000_000 / windowNanos
    /// The largest `delay_base_us`: the delay in nanoseconds must stay below
    /// 2^32, as SPDK keeps it below 2^32 ticks.
    package static let maxDelayBaseMicros: UInt32 = UInt32(UInt64(UInt32.max) / 1000)
    /// The smallest `iops_threshold`: one request per window.
    package static let minIOPSThreshold: UInt32 = UInt32(windowsPerSecond)

    /// SPDK's defaults (SPDK_VHOST_COALESCING_DELAY_BASE_US, SPDK_VHOST_VQ_IOPS_COALESCING_THRESHOLD).
    package static let off = CoalescingSettings(uncheckedDelayBaseMicros: 0, iopsThreshold: 60000)

    package let delayBaseMicros: UInt32
    package let iopsThreshold: UInt32

    /// Why `delay_base_us`/`iops_threshold` are refused (SPDK answers EINVAL for both).
    package enum Refusal: Error, Equatable {
        case delayTooLarge(UInt32)
        case thresholdTooLow(UInt32)
    }

    /// Validates as SPDK does: the delay must fit, and the threshold must be
    /// at least one request per window (100 IOPS), whether or not coalescing is on.
    package init(delayBaseMicros: UInt32, iopsThreshold: UInt32) throws(Refusal) {
        guard delayBaseMicros <= Self.maxDelayBaseMicros else { throw .delayTooLarge(delayBaseMicros) }
        guard iopsThreshold >= Self.minIOPSThreshold else { throw .thresholdTooLow(iopsThreshold) }
        self.init(uncheckedDelayBaseMicros: delayBaseMicros, iopsThreshold: iopsThreshold)
    }

    private init(uncheckedDelayBaseMicros: UInt32, iopsThreshold: UInt32) {
        self.delayBaseMicros = uncheckedDelayBaseMicros
        self.iopsThreshold = iopsThreshold
    }

    package var isEnabled: Bool { delayBaseMicros > 0 }
    /// The delay base in nanoseconds.
    package var delayBaseNanos: UInt64 { UInt64(delayBaseMicros) * 1000 }
    /// Requests per window at or below which interrupts are not delayed (at least 1).
    package var thresholdPerWindow: UInt64 { max(1, UInt64(iopsThreshold) / Self.windowsPerSecond) }
}

/// One queue's interrupt coalescing (SPDK lib/vhost/vhost.c,
/// `session_vq_io_stats_update` and `vhost_session_vq_used_signal`): every
/// 10 ms window, a queue that completed `count` requests, more than the
/// threshold `t` per window, delays its interrupts by
/// `delay_base * (count - t) / t`; after an interrupt the next waits that
/// long. Pure and clock-free (the caller passes CLOCK_MONOTONIC
/// nanoseconds), so unit tests drive it.
///
/// One difference from SPDK: a window at or below the threshold sets the
/// delay back to 0 (SPDK keeps the last delay and keeps counting until the
/// threshold is crossed again, which holds a delay over an idle queue).
package struct InterruptCoalescing {
    package private(set) var settings: CoalescingSettings
    /// The current delay between interrupts.
    package private(set) var delayNanos: UInt64 = 0
    /// No interrupt before this time.
    package private(set) var notBefore: UInt64 = 0
    private var windowEnd: UInt64 = 0
    private var windowCount: UInt64 = 0

    package init(settings: CoalescingSettings = .off) {
        self.settings = settings
    }

    /// New settings; the current delay and window start over.
    package mutating func update(_ newSettings: CoalescingSettings) {
        self = InterruptCoalescing(settings: newSettings)
    }

    package var isEnabled: Bool { settings.isEnabled }

    /// `count` requests completed and were published at `now`. Returns nil
    /// when the guest may be signalled now, or the time to signal it at.
    package mutating func completed(_ count: Int, now: UInt64) -> UInt64? {
        windowCount &+= UInt64(max(0, count))
        if now >= windowEnd {
            closeWindow(now: now)
        }
        return now < notBefore ? notBefore : nil
    }

    /// The guest was signalled at `now`: the next interrupt waits `delayNanos`.
    package mutating func signalled(now: UInt64) {
        let (next, overflow) = now.addingReportingOverflow(delayNanos)
        notBefore = overflow ? UInt64.max : next
    }

    /// SPDK's `session_vq_io_stats_update`, run when a window has passed.
    private mutating func closeWindow(now: UInt64) {
        let threshold = settings.thresholdPerWindow
        if windowCount > threshold {
            let (product, overflow) = settings.delayBaseNanos.multipliedReportingOverflow(by: windowCount - threshold)
            delayNanos = overflow ? UInt64.max / threshold : product / threshold
            delayNanos = min(delayNanos, Self.maxDelayNanos)
        } else {
            delayNanos = 0
        }
        notBefore = now  // a new rate: the next interrupt may go at once (SPDK sets next_event_time = now)
        windowCount = 0
        let (end, overflow) = now.addingReportingOverflow(CoalescingSettings.windowNanos)
        windowEnd = overflow ? UInt64.max : end
    }

    /// No delay exceeds one second, whatever the rate: a guest waits at most that long for an interrupt.
    package static let maxDelayNanos: UInt64 = 1_000_000_000
}
