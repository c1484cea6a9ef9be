import Reactor
import Virtio

/// A bdev's rate limits (`bdev_set_qos_limit`), in units per second; 0 is
/// unlimited. Bytes, not MiB: SPDK multiplies the RPC's MiB by 1024 * 1024.
struct QoSLimits: Equatable, Sendable {
    var rwIOsPerSec: UInt64 = 0
    var rwBytesPerSec: UInt64 = 0
    var rBytesPerSec: UInt64 = 0
    var wBytesPerSec: UInt64 = 0

    var isUnlimited: Bool { rwIOsPerSec == 0 && rwBytesPerSec == 0 && rBytesPerSec == 0 && wBytesPerSec == 0 }
}

/// What one request takes from the buckets: one I/O, and its data bytes
/// from the read or write bucket.
struct QoSCost: Sendable {
    var isRead = false
    var isWrite = false
    var bytes: UInt64 = 0
}

/// A queue holding a request back until the limiter lets it go (reactor thread).
protocol QoSWaiter: AnyObject {
    /// The cost of the held request.
    var qosPendingCost: QoSCost { get }
    /// The limiter charged the held request: dispatch it and resume popping.
    func qosResume()
}

/// Token buckets for one bdev's limits on the reactor that serves its
/// controller (all of a controller's queues live on one reactor, so no
/// locks): refilled from the reactor's loop clock, with SPDK's rule that a
/// request goes when every bucket it draws from is positive and may
/// overdraw it (so requests larger than a bucket still pass, paid back
/// later). A queue whose request is held stops popping its avail ring;
/// held queues are released in the order they were held, on a one-shot
/// timer armed only while something waits.
///
/// Thread confinement: `controlLimits` on the control loop; the rest on `reactor`
/// (the initial limits are set before the limiter is handed over).
final class QoSLimiter: @unchecked Sendable {  // reactor-confined after construction; control-side state is separate
    /// How much credit a bucket keeps while nobody draws from it.
    static let burstNanoseconds: UInt64 = 10_000_000
    /// Shortest and longest timer sleeps (SPDK's timeslice is 1 ms).
    static let minimumWaitNanoseconds: UInt64 = 1_000_000
    static let maximumWaitNanoseconds: UInt64 = 100_000_000

    let reactor: Reactor
    /// The limits last sent to the reactor (control loop only).
    var controlLimits: QoSLimits

    private var limits: QoSLimits
    /// Per bucket (I/Os, rw bytes, read bytes, write bytes): the rate per
    /// second (0: no limit) and the tokens left.
    private var rates: [Double] = [0, 0, 0, 0]
    private var tokens: [Double] = [0, 0, 0, 0]
    private var lastRefill: UInt64 = 0
    private var waiters: [QoSWaiter] = []
    private var timer: ReactorTimer?
    private var closed = false

    init(reactor: Reactor, limits: QoSLimits) {
        self.reactor = reactor
        self.limits = limits
        controlLimits = limits
        rates = Self.rates(limits)
        tokens = rates.map { $0 * Self.burstSeconds }
    }

    private static var burstSeconds: Double { Double(burstNanoseconds) / 1e9 }

    private static func rates(_ limits: QoSLimits) -> [Double] {
        [Double(limits.rwIOsPerSec), Double(limits.rwBytesPerSec), Double(limits.rBytesPerSec), Double(limits.wBytesPerSec)]
    }

    // MARK: Data path (reactor thread)

    /// True when the request may go now (its cost is charged); false when
    /// it must wait: `waiter` is queued and gets `qosResume` in turn.
    func admit(_ cost: QoSCost, waiter: QoSWaiter) -> Bool {
        if limits.isUnlimited || closed { return true }
        if waiters.isEmpty {
            refill()
            if hasBudget(cost) {
                charge(cost)
                return true
            }
        }
        waiters.append(waiter)
        armTimer()
        return false
    }

    /// Drops `waiter` (its queue is stopping and sends its request anyway).
    func forget(_ waiter: QoSWaiter) {
        waiters.removeAll { $0 === waiter }
    }

    /// New limits, live: the buckets keep their credit up to the new burst,
    /// and waiting queues are re-examined at once.
    func setLimits(_ newLimits: QoSLimits) {
        refill()
        limits = newLimits
        rates = Self.rates(newLimits)
        for i in tokens.indices { tokens[i] = min(tokens[i], rates[i] * Self.burstSeconds) }
        release()
    }

    /// The controller is going away: nothing is held any more, the timer closes.
    func close() {
        closed = true
        release()
        timer?.close()
        timer = nil
    }

    // MARK: Buckets

    private func refill() {
        let now = reactor.loopTime.load(ordering: .relaxed)
        let elapsed = now > lastRefill ? now - lastRefill : 0
        lastRefill = max(now, lastRefill)
        guard elapsed > 0 else { return }
        let seconds = Double(min(elapsed, Self.burstNanoseconds)) / 1e9
        for i in 0..<4 where rates[i] > 0 {
            tokens[i] = min(tokens[i] + rates[i] * seconds, rates[i] * Self.burstSeconds)
        }
    }

    /// Whether `cost` draws from bucket `i` (which has a limit).
    @inline(__always)
    private func draws(_ cost: QoSCost, from i: Int) -> Bool {
        guard rates[i] > 0 else { return false }
        switch i {
        case 0: return true
        case 1: return cost.bytes > 0
        case 2: return cost.bytes > 0 && cost.isRead
        default: return cost.bytes > 0 && cost.isWrite
        }
    }

    private func hasBudget(_ cost: QoSCost) -> Bool {
        for i in 0..<4 where draws(cost, from: i) && tokens[i] <= 0 { return false }
        return true
    }

    private func charge(_ cost: QoSCost) {
        for i in 0..<4 where draws(cost, from: i) { tokens[i] -= i == 0 ? 1 : Double(cost.bytes) }
    }

    /// How long until every bucket `cost` draws from is positive again.
    private func wait(for cost: QoSCost) -> UInt64 {
        var longest = 0.0
        for i in 0..<4 where draws(cost, from: i) && tokens[i] <= 0 {
            longest = max(longest, (1 - tokens[i]) / rates[i])
        }
        let nanoseconds = UInt64(exactly: (min(longest, 1) * 1e9).rounded(.up)) ?? Self.maximumWaitNanoseconds
        return min(max(nanoseconds, Self.minimumWaitNanoseconds), Self.maximumWaitNanoseconds)
    }

    // MARK: Releasing held queues

    /// Lets held queues go, oldest first, while the buckets allow; a resumed
    /// queue that is held again goes to the back (round robin among queues).
    private func release() {
        refill()
        while let first = waiters.first {
            let cost = first.qosPendingCost
            let free = limits.isUnlimited || closed
            guard free || hasBudget(cost) else { break }
            waiters.removeFirst()
            if !free { charge(cost) }
            first.qosResume()
        }
        if !waiters.isEmpty { armTimer() }
    }

    private func armTimer() {
        guard !closed, let first = waiters.first else { return }
        if timer == nil {
            do {
                timer = try ReactorTimer(reactor: reactor) { [weak self] in self?.release() }
            } catch {
                // No descriptor for a timer: fail open rather than hold requests forever.
                reactor.logger.error("QoS timer unavailable (\(error)); limits are not enforced")
                closed = true
                release()
                return
            }
        }
        guard let timer, !timer.isArmed else { return }
        timer.arm(afterNanoseconds: wait(for: first.qosPendingCost))
    }
}

extension QoSCost {
    /// Reads and writes draw their data bytes; every request counts as one I/O.
    init(_ request: BlkRequest) {
        switch request.type {
        case .in: self.init(isRead: true, isWrite: false, bytes: request.dataLength)
        case .out: self.init(isRead: false, isWrite: true, bytes: request.dataLength)
        default: self.init()
        }
    }
}
