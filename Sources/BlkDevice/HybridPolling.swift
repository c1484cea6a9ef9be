/// Whether a queue whose file I/O goes through an engine joins its reactor's
/// polling: only while the guest keeps few requests in flight.
///
/// At depth, a batch of file I/O keeps the reactor busy and the guest's
/// refill arrives with its kick anyway, so spinning for it only costs CPU (a
/// tmpfs file at QD32: a third more CPU per I/O for the same IOPS); at depth
/// 1 polling cuts latency (2.6x the IOPS). RAM, null and inline file queues
/// always poll: there the wake-up chain is most of the cycle.
///
/// The depth is the guest's requests outstanding at each publish (avail
/// index seen less the previous used index), a moving average with weight
/// 1/8, kept in sixteenths; polling goes off above 8 and back on below 4.
package struct HybridPolling: Sendable, Equatable {
    package static let offDepth: UInt32 = 8 * 16
    package static let onDepth: UInt32 = 4 * 16

    /// Whether this queue's I/O goes through an engine (else it always polls).
    package private(set) var appliesToQueue = false
    package private(set) var depthAverage: UInt32 = 0
    package private(set) var wantsPolling = true

    package init() {}

    /// A new backend: engine-backed queues keep their average; others poll.
    package mutating func adopt(engineBacked: Bool) {
        appliesToQueue = engineBacked
        if !engineBacked { wantsPolling = true }
    }

    /// Samples the guest's depth at a publish.
    @inline(__always)
    package mutating func noteDepth(_ outstanding: UInt16) {
        guard appliesToQueue else { return }
        depthAverage = depthAverage &- depthAverage / 8 &+ UInt32(outstanding) &* 2  // weight 1/8, in sixteenths
        if wantsPolling {
            if depthAverage > Self.offDepth { wantsPolling = false }
        } else if depthAverage < Self.onDepth {
            wantsPolling = true
        }
    }
}
