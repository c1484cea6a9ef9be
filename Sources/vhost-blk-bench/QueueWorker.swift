import Glibc
import Posix
import Synchronization
import VhostUserFrontend

/// What one queue measured.
struct QueueResult: Sendable {
    var histogram = LatencyHistogram()
    var reads: UInt64 = 0
    var writes: UInt64 = 0
    /// Completions with a non-OK status (counted during warm-up too).
    var errors: UInt64 = 0
    /// Call-eventfd wake-ups (interrupt mode).
    var wakeups: UInt64 = 0
    /// Kicks sent (EVENT_IDX lets the device suppress them).
    var kicks: UInt64 = 0
    /// Why the queue stopped early, if it did.
    var failure: String?
}

/// A queue's worker whatever its ring type: what `Benchmark` starts and reads.
protocol QueueRunner: AnyObject, Sendable {
    func run(measureStart: UInt64, measureEnd: UInt64)
    var result: QueueResult { get }
}

/// Drives one virtqueue from one thread: keeps `iodepth` requests in flight,
/// reaps completions (sleeping on the call eventfd or spinning on the used
/// ring), and records latencies of completions inside the measured window.
/// Generic over the ring (split or packed), so each gets a loop of its own.
final class QueueWorker<Ring: BenchRing>: QueueRunner, @unchecked Sendable {  // run() on exactly one thread; result read after join
    private let ring: Ring
    private let memory: FrontendMemory
    private let config: BenchConfig
    private var slots: [RequestSlot]
    private var offsets: OffsetGenerator
    private(set) var result = QueueResult()
    /// Requests still to submit in a fill (`BenchConfig.fill`); nil: as many as time allows.
    private var remaining: UInt64?

    init(queue: DriverQueue, memory: FrontendMemory, config: BenchConfig, capacitySectors: UInt64) throws(BenchError) {
        self.memory = memory
        self.config = config
        guard let gen = OffsetGenerator(
            capacitySectors: capacitySectors, blockSize: config.blockSize, random: config.pattern.isRandom,
            queue: queue.index, queues: config.queues, seed: config.seed)
        else { throw .usage("block size \(config.blockSize) does not fit a disk of \(capacitySectors) sectors") }
        offsets = gen
        if config.fill {
            remaining = OffsetGenerator.shareBlocks(
                capacitySectors: capacitySectors, blockSize: config.blockSize, queue: queue.index, queues: config.queues)
        }
        var made: [RequestSlot] = []
        do {
            for i in 0..<config.iodepth {
                made.append(try RequestSlot(memory: memory, blockSize: config.blockSize, fill: UInt8(truncatingIfNeeded: i &+ 1)))
            }
            ring = try Ring(queue: queue, slots: made, blockSize: config.blockSize)
        } catch {
            made.forEach { $0.release(to: memory) }
            throw .frontend(error)
        }
        slots = made
    }

    /// Runs until `measureEnd` (monotonic ns), then drains what is in flight.
    func run(measureStart: UInt64, measureEnd: UInt64) {
        do throws(FrontendError) {
            try loop(measureStart: measureStart, measureEnd: measureEnd)
        } catch {
            result.failure = "queue \(ring.queueIndex): \(error)"
        }
        drain()
    }

    private func loop(measureStart: UInt64, measureEnd: UInt64) throws(FrontendError) {
        let poll = config.mode == .poll
        ring.setPolling(poll)
        var now = MonotonicClock.nanos()
        for i in slots.indices where mayStartAnother() { try submit(i, at: now) }
        kick(poll: poll)
        var lastProgress = now
        while true {
            now = MonotonicClock.nanos()
            if now >= measureEnd { return }
            if remaining == 0 && ring.inFlightCount == 0 { return }  // the fill is done
            var reaped = 0
            var done: UInt64 = 0
            while let i = try ring.popUsed() {
                if reaped == 0 { done = MonotonicClock.nanos() }
                reaped += 1
                complete(i, at: done, measureStart: measureStart, measureEnd: measureEnd)
                if done < measureEnd && mayStartAnother() { try submit(i, at: done) }
            }
            if reaped > 0 {
                kick(poll: poll)
                lastProgress = done
                continue
            }
            if now &- lastProgress > config.stallNanos {
                throw .timeout("a completion on queue \(ring.queueIndex) (\(ring.inFlightCount) in flight)")
            }
            if poll { continue }
            if ring.hasUsedAfterBarrier() { continue }
            let leftMs = Int32(clamping: (measureEnd &- now) / 1_000_000 + 1)
            if waitCall(milliseconds: min(leftMs, 100)) { result.wakeups &+= 1 }
        }
    }

    /// Whether another request may start: always, except at the end of a
    /// fill (counts the one it allows).
    private func mayStartAnother() -> Bool {
        guard let left = remaining else { return true }
        guard left > 0 else { return false }
        remaining = left - 1
        return true
    }

    /// Prepares slot `i` with the next offset and queues its chain (not yet published).
    private func submit(_ i: Int, at now: UInt64) throws(FrontendError) {
        let write: Bool
        switch config.pattern {
        case .read, .randread: write = false
        case .write, .randwrite: write = true
        case .randrw: write = offsets.coin()
        }
        slots[i].prepare(write: write, sector: offsets.nextSector())
        slots[i].isWrite = write
        slots[i].submittedAt = now
        try ring.add(slot: i, write: write)
    }

    private func complete(_ i: Int, at done: UInt64, measureStart: UInt64, measureEnd: UInt64) {
        if slots[i].statusByte != BlkWire.statusOK { result.errors &+= 1 }
        guard done >= measureStart, done < measureEnd else { return }
        result.histogram.record(done &- slots[i].submittedAt)
        if slots[i].isWrite { result.writes &+= 1 } else { result.reads &+= 1 }
    }

    /// Publishes and kicks if the device asked for it (poll mode: keeping interrupts off).
    private func kick(poll: Bool) {
        if ring.publishAndKick(poll: poll) { result.kicks &+= 1 }
    }

    /// Sleeps on the call eventfd; true if it fired (and was drained).
    private func waitCall(milliseconds: Int32) -> Bool {
        guard let ready = try? ring.callFD.fd.poll(Int16(POLLIN), timeoutMilliseconds: milliseconds), ready != 0 else { return false }
        return ring.callFD.drain() > 0
    }

    /// Collects what is still in flight (bounded: 3 s), then frees the slots.
    private func drain() {
        let deadline = MonotonicClock.nanos() &+ 3_000_000_000
        draining: while ring.inFlightCount > 0 && MonotonicClock.nanos() < deadline {
            var any = false
            do {
                while let i = try ring.popUsed() {
                    any = true
                    if slots[i].statusByte != BlkWire.statusOK { result.errors &+= 1 }
                }
            } catch {
                // A used element naming no request: the ring can no longer be trusted.
                if result.failure == nil { result.failure = "queue \(ring.queueIndex): \(error)" }
                break draining
            }
            if !any { _ = waitCall(milliseconds: 10) }
        }
        if ring.inFlightCount > 0 && result.failure == nil {
            result.failure = "queue \(ring.queueIndex): \(ring.inFlightCount) requests never completed"
        }
        // Buffers of requests that never completed stay allocated: the back end may still write them.
        if ring.inFlightCount == 0 { slots.forEach { $0.release(to: memory) } }
        slots = []
    }
}
