import Glibc
import Posix
import Synchronization
import VhostUserFrontend

/// Drives one virtqueue from one thread: keeps `iodepth` requests in flight,
/// reaps completions (sleeping on the call eventfd or spinning on the used
/// ring), and records latencies of completions inside the measured window.
final class QueueWorker: @unchecked Sendable {  // run() on exactly one thread; result read after join
    /// What one queue measured.
    struct Result: Sendable {
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

    private let queue: DriverQueue
    private let memory: FrontendMemory
    private let config: BenchConfig
    private var slots: [RequestSlot] = []
    /// Slot index carried by each descriptor head, -1 when none.
    private var slotOfHead: [Int32]
    private var offsets: OffsetGenerator
    private(set) var result = Result()
    /// Requests still to submit in a fill (`BenchConfig.fill`); nil: as many as time allows.
    private var remaining: UInt64?

    init(queue: DriverQueue, memory: FrontendMemory, config: BenchConfig, capacitySectors: UInt64) throws(BenchError) {
        self.queue = queue
        self.memory = memory
        self.config = config
        slotOfHead = [Int32](repeating: -1, count: Int(queue.size))
        guard let gen = OffsetGenerator(
            capacitySectors: capacitySectors, blockSize: config.blockSize, random: config.pattern.isRandom,
            queue: queue.index, queues: config.queues, seed: config.seed)
        else { throw .usage("block size \(config.blockSize) does not fit a disk of \(capacitySectors) sectors") }
        offsets = gen
        if config.fill {
            remaining = OffsetGenerator.shareBlocks(
                capacitySectors: capacitySectors, blockSize: config.blockSize, queue: queue.index, queues: config.queues)
        }
        do {
            for i in 0..<config.iodepth {
                slots.append(try RequestSlot(memory: memory, blockSize: config.blockSize, fill: UInt8(truncatingIfNeeded: i &+ 1)))
            }
        } catch {
            slots.forEach { $0.release(to: memory) }
            throw .frontend(error)
        }
    }

    /// Runs until `measureEnd` (monotonic ns), then drains what is in flight.
    func run(measureStart: UInt64, measureEnd: UInt64) {
        do throws(FrontendError) {
            try loop(measureStart: measureStart, measureEnd: measureEnd)
        } catch {
            result.failure = "queue \(queue.index): \(error)"
        }
        drain()
    }

    private func loop(measureStart: UInt64, measureEnd: UInt64) throws(FrontendError) {
        let poll = config.mode == .poll
        queue.setNoInterrupt(poll)
        var now = MonotonicClock.nanos()
        for i in slots.indices where mayStartAnother() { try submit(i, at: now) }
        kick(poll: poll)
        var lastProgress = now
        while true {
            now = MonotonicClock.nanos()
            if now >= measureEnd { return }
            if remaining == 0 && queue.inFlightCount == 0 { return }  // the fill is done
            var reaped = 0
            var done: UInt64 = 0
            while let used = queue.popUsed() {
                if reaped == 0 { done = MonotonicClock.nanos() }
                reaped += 1
                guard let head = UInt16(exactly: used.id), Int(head) < slotOfHead.count, slotOfHead[Int(head)] >= 0 else {
                    throw .protocolViolation("used id \(used.id) names no request in flight")
                }
                let i = Int(slotOfHead[Int(head)])
                slotOfHead[Int(head)] = -1
                complete(i, at: done, measureStart: measureStart, measureEnd: measureEnd)
                if done < measureEnd && mayStartAnother() { try submit(i, at: done) }
            }
            if reaped > 0 {
                kick(poll: poll)
                lastProgress = done
                continue
            }
            if now &- lastProgress > config.stallNanos {
                throw .timeout("a completion on queue \(queue.index) (\(queue.inFlightCount) in flight)")
            }
            if poll { continue }
            // used_event was re-armed by popUsed; a full barrier before the
            // last look at used->idx, or a completion published meanwhile would
            // raise no interrupt (virtio 1.2 §2.7.10).
            atomicMemoryFence(ordering: .sequentiallyConsistent)
            if queue.usedIdx != queue.lastUsedIdx { continue }
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
        let head = try queue.addChain(write ? slots[i].writeChain : slots[i].readChain)
        guard Int(head) < slotOfHead.count else { throw .protocolViolation("head \(head) outside the queue") }
        slotOfHead[Int(head)] = Int32(i)
    }

    private func complete(_ i: Int, at done: UInt64, measureStart: UInt64, measureEnd: UInt64) {
        if slots[i].statusByte != BlkWire.statusOK { result.errors &+= 1 }
        guard done >= measureStart, done < measureEnd else { return }
        result.histogram.record(done &- slots[i].submittedAt)
        if slots[i].isWrite { result.writes &+= 1 } else { result.reads &+= 1 }
    }

    /// Publishes; in poll mode pushes `used_event` half the ring ahead so the device does not interrupt.
    private func kick(poll: Bool) {
        if poll { queue.setUsedEvent(queue.lastUsedIdx &+ 0x7fff) }
        if queue.publishAndKick() { result.kicks &+= 1 }
    }

    /// Sleeps on the call eventfd; true if it fired (and was drained).
    private func waitCall(milliseconds: Int32) -> Bool {
        guard let ready = try? queue.callFD.fd.poll(Int16(POLLIN), timeoutMilliseconds: milliseconds), ready != 0 else { return false }
        return queue.callFD.drain() > 0
    }

    /// Collects what is still in flight (bounded: 3 s), then frees the slots.
    private func drain() {
        let deadline = MonotonicClock.nanos() &+ 3_000_000_000
        while queue.inFlightCount > 0 && MonotonicClock.nanos() < deadline {
            var any = false
            while let used = queue.popUsed() {
                any = true
                if let head = UInt16(exactly: used.id), Int(head) < slotOfHead.count, slotOfHead[Int(head)] >= 0 {
                    let i = Int(slotOfHead[Int(head)])
                    slotOfHead[Int(head)] = -1
                    if slots[i].statusByte != BlkWire.statusOK { result.errors &+= 1 }
                }
            }
            if !any { _ = waitCall(milliseconds: 10) }
        }
        if queue.inFlightCount > 0 && result.failure == nil {
            result.failure = "queue \(queue.index): \(queue.inFlightCount) requests never completed"
        }
        // Buffers of requests that never completed stay allocated: the back end may still write them.
        if queue.inFlightCount == 0 { slots.forEach { $0.release(to: memory) } }
        slots = []
    }
}
