import Reactor
import Synchronization
import Virtio

/// A bdev's rate limits (`bdev_set_qos_limit`), in units per second; 0 is
/// unlimited. Bytes, not MiB: SPDK multiplies the RPC's MiB by 1024 * 1024.
package struct QoSLimits: Equatable, Sendable {
    package var rwIOsPerSec: UInt64 = 0
    package var rwBytesPerSec: UInt64 = 0
    package var rBytesPerSec: UInt64 = 0
    package var wBytesPerSec: UInt64 = 0

    package init() {}

    package var isUnlimited: Bool { rwIOsPerSec == 0 && rwBytesPerSec == 0 && rBytesPerSec == 0 && wBytesPerSec == 0 }
}

/// What one request takes from the buckets: one I/O, and its data bytes
/// from the read or write bucket.
package struct QoSCost: Sendable {
    package var isRead = false
    package var isWrite = false
    package var bytes: UInt64 = 0
}

/// A queue holding a request back until the limiter lets it go.
package protocol QoSWaiter: AnyObject, Sendable {
    /// The reactor that serves the queue: `qosResume` runs there.
    var qosReactor: Reactor { get }
    /// The limiter charged the held request: dispatch it and resume popping.
    func qosResume()
}

/// Token buckets for one bdev's limits, shared by the controller's queues,
/// which may run on several reactors: the buckets sit behind a mutex that
/// only limited bdevs ever take (an unlimited bdev has no limiter). Refilled
/// from the calling reactor's loop clock (all read CLOCK_MONOTONIC), with
/// SPDK's rule that a request goes when every bucket it draws from is
/// positive and may overdraw it (so requests larger than a bucket still
/// pass, paid back later). A queue whose request is held stops popping its
/// avail ring; held queues are released in the order they were held, on a
/// one-shot timer on the limiter's home reactor, armed only while something
/// waits; a released queue resumes on its own reactor.
///
/// Thread confinement: `controlLimits` on the control loop; `timer` on
/// `reactor`; the buckets and waiters under `state`'s mutex. Debug builds
/// check the reactor-side calls (`Reactor.preconditionOnReactor`).
package final class QoSLimiter: @unchecked Sendable {  // controlLimits: control loop; timer: home reactor; the rest locked
    /// How much credit a bucket keeps while nobody draws from it.
    package static let burstNanoseconds: UInt64 = 10_000_000
    /// Shortest and longest timer sleeps (SPDK's timeslice is 1 ms).
    package static let minimumWaitNanoseconds: UInt64 = 1_000_000
    package static let maximumWaitNanoseconds: UInt64 = 100_000_000

    /// The home reactor: it owns the timer and applies limit changes.
    package let reactor: Reactor
    /// The limits last sent to the reactor (control loop only).
    package var controlLimits: QoSLimits

    private let state: Mutex<QoSBuckets>
    private var timer: ReactorTimer?

    package init(reactor: Reactor, limits: QoSLimits) {
        self.reactor = reactor
        controlLimits = limits
        state = Mutex(QoSBuckets(limits: limits))
    }

    // MARK: Data path (the waiter's reactor)

    /// True when the request may go now (its cost is charged); false when
    /// it must wait: `waiter` is queued and gets `qosResume` in turn.
    package func admit(_ cost: QoSCost, waiter: QoSWaiter) -> Bool {
        waiter.qosReactor.preconditionOnReactor()
        let now = waiter.qosReactor.loopTime.load(ordering: .relaxed)
        let admitted = state.withLock { buckets in buckets.admit(cost, waiter: waiter, now: now) }
        if !admitted {
            if waiter.qosReactor === reactor {
                armTimer()
            } else {
                reactor.post { self.armTimer() }
            }
        }
        return admitted
    }

    /// Drops `waiter` (its queue is stopping and sends its request anyway).
    package func forget(_ waiter: QoSWaiter) {
        waiter.qosReactor.preconditionOnReactor()
        state.withLock { buckets in buckets.waiters.removeAll { $0.waiter === waiter } }
    }

    // MARK: Home reactor

    /// New limits, live: the buckets keep their credit up to the new burst,
    /// and waiting queues are re-examined at once.
    package func setLimits(_ newLimits: QoSLimits) {
        reactor.preconditionOnReactor()
        let now = reactor.loopTime.load(ordering: .relaxed)
        state.withLock { buckets in buckets.setLimits(newLimits, now: now) }
        release()
    }

    /// The controller is going away: nothing is held any more, the timer closes.
    package func close() {
        reactor.preconditionOnReactor()
        state.withLock { buckets in buckets.closed = true }
        release()
        timer?.close()
        timer = nil
    }

    /// Lets held queues go, oldest first, while the buckets allow; each
    /// resumes on its own reactor.
    private func release() {
        let now = reactor.loopTime.load(ordering: .relaxed)
        let (released, nextWait) = state.withLock { buckets in buckets.release(now: now) }
        for waiter in released {
            if waiter.qosReactor === reactor {
                waiter.qosResume()
            } else {
                waiter.qosReactor.post { waiter.qosResume() }
            }
        }
        if nextWait != nil { armTimer() }
    }

    private func armTimer() {
        reactor.preconditionOnReactor()
        guard let wait = state.withLock({ buckets in buckets.nextWait() }) else { return }
        if timer == nil {
            do {
                timer = try ReactorTimer(reactor: reactor) { [weak self] in self?.release() }
            } catch {
                // No descriptor for a timer: fail open rather than hold requests forever.
                reactor.logger.error("QoS timer unavailable (\(error)); limits are not enforced")
                state.withLock { buckets in buckets.closed = true }
                release()
                return
            }
        }
        guard let timer, !timer.isArmed else { return }
        timer.arm(afterNanoseconds: wait)
    }
}

/// The token buckets and the queue of held requests (under the limiter's mutex).
package struct QoSBuckets {
    package struct Held {
        let waiter: QoSWaiter
        let cost: QoSCost
    }

    package var limits: QoSLimits
    /// Per bucket (I/Os, rw bytes, read bytes, write bytes): the rate per
    /// second (0: no limit) and the tokens left.
    package var rates: [Double]
    package var tokens: [Double]
    package var lastRefill: UInt64 = 0
    package var waiters: [Held] = []
    package var closed = false

    package init(limits: QoSLimits) {
        self.limits = limits
        rates = Self.rates(limits)
        tokens = rates.map { $0 * Self.burstSeconds }
    }

    private static var burstSeconds: Double { Double(QoSLimiter.burstNanoseconds) / 1e9 }

    private static func rates(_ limits: QoSLimits) -> [Double] {
        [Double(limits.rwIOsPerSec), Double(limits.rwBytesPerSec), Double(limits.rBytesPerSec), Double(limits.wBytesPerSec)]
    }

    package mutating func admit(_ cost: QoSCost, waiter: QoSWaiter, now: UInt64) -> Bool {
        if limits.isUnlimited || closed { return true }
        if waiters.isEmpty {
            refill(now: now)
            if hasBudget(cost) {
                charge(cost)
                return true
            }
        }
        waiters.append(Held(waiter: waiter, cost: cost))
        return false
    }

    package mutating func setLimits(_ newLimits: QoSLimits, now: UInt64) {
        refill(now: now)
        limits = newLimits
        rates = Self.rates(newLimits)
        for i in tokens.indices { tokens[i] = min(tokens[i], rates[i] * Self.burstSeconds) }
    }

    /// The waiters that may go now (charged), and the wait for the next one, if any.
    package mutating func release(now: UInt64) -> ([QoSWaiter], UInt64?) {
        refill(now: now)
        var released: [QoSWaiter] = []
        while let first = waiters.first {
            let free = limits.isUnlimited || closed
            guard free || hasBudget(first.cost) else { break }
            waiters.removeFirst()
            if !free { charge(first.cost) }
            released.append(first.waiter)
        }
        return (released, nextWait())
    }

    /// How long until the oldest held request may go; nil when nothing waits.
    package func nextWait() -> UInt64? {
        guard !closed, let first = waiters.first else { return nil }
        return wait(for: first.cost)
    }

    private mutating func refill(now: UInt64) {
        let elapsed = now > lastRefill ? now - lastRefill : 0
        lastRefill = max(now, lastRefill)
        guard elapsed > 0 else { return }
        let seconds = Double(min(elapsed, QoSLimiter.burstNanoseconds)) / 1e9
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

    private mutating func charge(_ cost: QoSCost) {
        for i in 0..<4 where draws(cost, from: i) { tokens[i] -= i == 0 ? 1 : Double(cost.bytes) }
    }

    /// How long until every bucket `cost` draws from is positive again.
    private func wait(for cost: QoSCost) -> UInt64 {
        var longest = 0.0
        for i in 0..<4 where draws(cost, from: i) && tokens[i] <= 0 {
            longest = max(longest, (1 - tokens[i]) / rates[i])
        }
        let nanoseconds = UInt64(exactly: (min(longest, 1) * 1e9).rounded(.up)) ?? QoSLimiter.maximumWaitNanoseconds
        return min(max(nanoseconds, QoSLimiter.minimumWaitNanoseconds), QoSLimiter.maximumWaitNanoseconds)
    }
}

extension QoSCost {
    /// Reads and writes draw their data bytes; every request counts as one I/O.
    package init(_ request: BlkRequest) {
        switch request.type {
        case .in: self.init(isRead: true, isWrite: false, bytes: request.dataLength)
        case .out: self.init(isRead: false, isWrite: true, bytes: request.dataLength)
        default: self.init()
        }
    }
}
