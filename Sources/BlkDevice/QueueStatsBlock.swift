import Glibc
import Virtio

/// A queue's counters and per-request stamps as raw words that the
/// `VirtqueueServer` owns and only its reactor thread touches; the
/// `QueueStats` value is built only by `snapshot()` (rare: readers post it to
/// the reactor with `Reactor.postAndWait`, so there are no atomics and no
/// data race).
///
/// Why raw words (issue 4: stats must add under 2 % of a request's
/// instructions): a request costs a few plain loads, adds and stores, with
/// no Array uniqueness or bounds checks, no switch on the class (its row is
/// the request type's number) and no object to reach first (a noncopyable
/// struct stored in the server). Nothing is counted twice: a class's
/// operation count is its histogram's total, and the request count is the
/// sum of all rows and errors, both added up by `snapshot()`. Successes come
/// in runs (a batch popped in one reactor iteration and completed together
/// shares its latency: pops are stamped with the iteration's clock read and
/// completions with one read per batch, `VirtqueueServer.completionClock`,
/// both in nanoseconds of CLOCK_MONOTONIC): one that extends
/// the current run costs a compare, a count and a byte sum, and a run goes
/// into its row when the next success differs, and before any read. One anonymous
/// mapping holds everything, so pages never touched (idle classes, unused
/// octaves) cost no memory.
///
/// Build with `-Xswiftc -DVHOST_BLKD_NO_STATS` to compile the hot-path
/// methods to nothing (to measure what they cost).
package struct QueueStatsBlock: ~Copyable {
    /// Word offsets in the mapping.
    private enum Layout {
        // Queue counters (page 0).
        static var kicks: Int { 0 }
        static var batches: Int { 1 }
        /// `interruptsSuppressed + 1` is `interruptsSent`: indexed by the Bool.
        static var interruptsSuppressed: Int { 2 }
        static var interruptsSent: Int { 3 }
        static var failed: Int { 4 }
        static var unsupported: Int { 5 }
        /// Requests whose counts a reset zeroed while `requests` kept them.
        static var requestsReset: Int { 6 }
        /// 1 when the words are an anonymous mapping, 0 when allocated.
        static var mapped: Int { 7 }
        /// The run of successes not yet in their row: same row, same
        /// latency (popped in one reactor iteration, completed in one), so
        /// each costs a compare, a count and a byte sum; `recordRun` puts the
        /// run in its row when the next success differs, and before any read.
        static var runRow: Int { 8 }
        static var runLatency: Int { 9 }
        static var runCount: Int { 10 }
        static var runBytes: Int { 11 }
        /// Failed backend operations per `IOErrnoClass`, from here on.
        static var errnos: Int { 12 }
        /// Interrupts coalescing held back, each sent later (after the errno classes, fewer than 52).
        static var interruptsDelayed: Int { 64 }

        /// One row per request type 0..<15 (virtio 1.2 §5.2.6) and one for
        /// 15 and above, from page 1 (256 KiB of address space per queue). A row is its latency histogram's
        /// buckets, then bytes, latency sum and the extremes as `0 - min`
        /// and `max - min + 1` (zero: none yet), so that zeroed memory is an
        /// empty row and one compare tells whether a latency widens them.
        static var rowCount: Int { 16 }
        static var rows: Int { 512 }
        static var rowWords: Int { 2048 }
        static var bytes: Int { LatencyHistogram.bucketCount }
        static var latencySum: Int { bytes + 1 }
        static var negatedMin: Int { bytes + 2 }
        static var spanPlusOne: Int { bytes + 3 }

        /// Per slot: pop time, bytes, row (kept after completion: only a
        /// request that began can succeed, and only successes read them).
        static var pending: Int { rows + rowCount * rowWords }
        static var pendingWords: Int { 3 }

        static func byteCount(slotMask: UInt32) -> Int { (pending + (Int(slotMask) + 1) * pendingWords) * 8 }

        static func row(of type: BlkRequestType) -> Int {
            Int(truncatingIfNeeded: min(type.rawValue, UInt32(rowCount - 1)))
        }
    }

    private let words: UnsafeMutablePointer<UInt64>
    /// Slot numbers are masked into the stamps (capacity: a power of two), so
    /// no slot value can reach outside them.
    private let slotMask: UInt32

    package init(slotCount: Int) {
        var capacity = 1
        while capacity < slotCount && capacity < 1 << 16 { capacity <<= 1 }
        slotMask = UInt32(capacity - 1)
        let byteCount = Layout.byteCount(slotMask: slotMask)
        if let raw = mmap(nil, byteCount, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
           Int(bitPattern: raw) != -1 {
            words = raw.bindMemory(to: UInt64.self, capacity: byteCount / 8)
            words[Layout.mapped] = 1
        } else {
            words = .allocate(capacity: byteCount / 8)
            words.initialize(repeating: 0, count: byteCount / 8)
        }
    }

    deinit {
        if words[Layout.mapped] == 1 {
            munmap(words, Layout.byteCount(slotMask: slotMask))
        } else {
            words.deallocate()
        }
    }

    // MARK: Hot path (reactor thread)

    /// A parsed request in `slot`: its type, data bytes and pop time. Every
    /// request that may complete successfully must begin.
    @inline(__always)
    package func begin(_ slot: UInt32, _ type: BlkRequestType, bytes: UInt64, at time: @autoclosure () -> UInt64) {
        #if !VHOST_BLKD_NO_STATS
        let stamp = words + (Layout.pending &+ Int(slot & slotMask) &* Layout.pendingWords)
        stamp[0] = time()
        stamp[1] = bytes
        stamp[2] = UInt64(Layout.row(of: type))
        #endif
    }

    /// The byte range of a discard or write-zeroes request (its payload is only the segment).
    @inline(__always)
    package func setBytes(_ slot: UInt32, _ bytes: UInt64) {
        #if !VHOST_BLKD_NO_STATS
        words[Layout.pending &+ Int(slot & slotMask) &* Layout.pendingWords &+ 1] = bytes
        #endif
    }

    /// Counts the completion of `slot` (every popped head completes once): a
    /// success as I/O of its request type (SPDK counts only successes), a
    /// failure as an error.
    @inline(__always)
    package func complete(_ slot: UInt32, _ status: BlkStatus, at time: @autoclosure () -> UInt64) {
        #if !VHOST_BLKD_NO_STATS
        guard status.rawValue == 0 else { return countError(status) }  // VIRTIO_BLK_S_OK
        let stamp = words + (Layout.pending &+ Int(slot & slotMask) &* Layout.pendingWords)
        let latency = time() &- stamp[0]
        if latency == words[Layout.runLatency] && stamp[2] == words[Layout.runRow] {
            words[Layout.runCount] &+= 1
            words[Layout.runBytes] &+= stamp[1]
            return
        }
        startRun(row: stamp[2], latency: latency, bytes: stamp[1])
        #endif
    }

    /// Records the current run in its row and starts one with this success.
    @inline(never)
    private func startRun(row: UInt64, latency: UInt64, bytes: UInt64) {
        recordRun()
        words[Layout.runRow] = row
        words[Layout.runLatency] = latency
        words[Layout.runCount] = 1
        words[Layout.runBytes] = bytes
    }

    /// Moves the current run's successes into their row (empties the run).
    private func recordRun() {
        let count = words[Layout.runCount]
        guard count > 0 else { return }
        let latency = words[Layout.runLatency]
        let row = words + (Layout.rows &+ Int(truncatingIfNeeded: words[Layout.runRow]) &* Layout.rowWords)
        row[Layout.bytes] &+= words[Layout.runBytes]
        row[Layout.latencySum] &+= latency &* count
        // latency - min >= max - min + 1 (wrapping): outside [min, max], or the row is empty.
        if latency &+ row[Layout.negatedMin] >= row[Layout.spanPlusOne] { Self.widen(row, to: latency) }
        row[LatencyHistogram.index(of: latency)] &+= count
        words[Layout.runCount] = 0
        words[Layout.runBytes] = 0
    }

    /// A backend operation failed (the failure path only).
    package func countErrno(_ errnoClass: IOErrnoClass) {
        #if !VHOST_BLKD_NO_STATS
        words[Layout.errnos &+ errnoClass.rawValue] &+= 1
        #endif
    }

    @inline(__always) package func countKick() {
        #if !VHOST_BLKD_NO_STATS
        words[Layout.kicks] &+= 1
        #endif
    }

    @inline(__always) package func countBatch() {
        #if !VHOST_BLKD_NO_STATS
        words[Layout.batches] &+= 1
        #endif
    }

    @inline(__always) package func countNotification(sent: Bool) {
        #if !VHOST_BLKD_NO_STATS
        words[Layout.interruptsSuppressed &+ (sent ? 1 : 0)] &+= 1
        #endif
    }

    @inline(__always) package func countDelayedInterrupt() {
        #if !VHOST_BLKD_NO_STATS
        words[Layout.interruptsDelayed] &+= 1
        #endif
    }

    /// Makes a row's extremes include `latency` (rare: a new minimum or maximum).
    @inline(never)
    private static func widen(_ row: UnsafeMutablePointer<UInt64>, to latency: UInt64) {
        let (low, high) = extremes(row) ?? (latency, latency)
        let newLow = Swift.min(low, latency), newHigh = Swift.max(high, latency)
        row[Layout.negatedMin] = 0 &- newLow
        row[Layout.spanPlusOne] = (newHigh &- newLow) &+ 1
    }

    /// A row's (min, max); nil when it has none (or spans all of UInt64,
    /// which takes a latency of 584 years).
    private static func extremes(_ row: UnsafeMutablePointer<UInt64>) -> (UInt64, UInt64)? {
        let negated = row[Layout.negatedMin], spanPlusOne = row[Layout.spanPlusOne]
        guard spanPlusOne != 0 else { return nil }
        return (0 &- negated, (0 &- negated) &+ (spanPlusOne &- 1))
    }

    /// VIRTIO_BLK_S_UNSUPP counts as unsupported, anything else as failed (IOERR).
    @inline(never)
    private func countError(_ status: BlkStatus) {
        words[status.rawValue == 2 ? Layout.unsupported : Layout.failed] &+= 1
    }

    // MARK: Readers (reactor thread, rare)

    /// The counters as a value.
    package func snapshot() -> QueueStats {
        recordRun()
        var stats = QueueStats()
        stats.kicks = words[Layout.kicks]
        stats.batches = words[Layout.batches]
        stats.interruptsSent = words[Layout.interruptsSent]
        stats.interruptsSuppressed = words[Layout.interruptsSuppressed]
        stats.interruptsDelayed = words[Layout.interruptsDelayed]
        stats.io.failed = words[Layout.failed]
        stats.io.unsupported = words[Layout.unsupported]
        for errnoClass in IOErrnoClass.allCases { stats.io.errnos[errnoClass] = words[Layout.errnos + errnoClass.rawValue] }
        stats.requests = words[Layout.requestsReset] &+ stats.io.failed &+ stats.io.unsupported &+ successes()
        for op in IOStatOp.counted {
            guard let type = op.requestType else { continue }
            let row = words + (Layout.rows + Layout.row(of: type) * Layout.rowWords)
            let histogram = LatencyHistogram(buckets: UnsafeBufferPointer(start: row, count: LatencyHistogram.bucketCount))
            let (low, high) = Self.extremes(row) ?? (.max, 0)
            stats.io[op] = OpStats(
                ops: histogram.totalCount, bytes: op == .flush ? 0 : row[Layout.bytes],
                latencySum: row[Layout.latencySum], latencyMin: low, latencyMax: high)
            stats.io.histograms[op] = histogram
        }
        return stats
    }

    /// SPDK's reset modes (`IOStats.reset`); `all` also zeroes the queue
    /// counters, `ioOnly` only the I/O ones.
    package func reset(_ mode: IOStatResetMode) {
        recordRun()
        switch mode {
        case .none:
            return
        case .maxmin:
            for index in 0..<Layout.rowCount {
                let row = Layout.rows + index * Layout.rowWords
                // Untouched rows stay untouched (no page for them).
                if words[row + Layout.spanPlusOne] != 0 {
                    words[row + Layout.negatedMin] = 0
                    words[row + Layout.spanPlusOne] = 0
                }
            }
        case .error:
            words[Layout.requestsReset] &+= words[Layout.failed] &+ words[Layout.unsupported]
            words[Layout.failed] = 0
            words[Layout.unsupported] = 0
            clearErrnos()
        case .ioOnly:
            words[Layout.requestsReset] &+= words[Layout.failed] &+ words[Layout.unsupported] &+ successes()
            words[Layout.failed] = 0
            words[Layout.unsupported] = 0
            clearErrnos()
            clearRows()
        case .all:
            for index in Layout.kicks...Layout.requestsReset { words[index] = 0 }  // not `mapped` nor the (empty) run
            words[Layout.interruptsDelayed] = 0
            clearErrnos()
            clearRows()
        }
    }

    private func clearErrnos() {
        for errnoClass in IOErrnoClass.allCases { words[Layout.errnos + errnoClass.rawValue] = 0 }
    }

    /// Successful requests of every type: the rows' histogram totals.
    private func successes() -> UInt64 {
        var total: UInt64 = 0
        for index in 0..<Layout.rowCount {
            let row = words + (Layout.rows + index * Layout.rowWords)
            for bucket in 0..<LatencyHistogram.bucketCount { total &+= row[bucket] }
        }
        return total
    }

    /// Zeroes every row; a mapping gives their pages back instead (they read as zeros again).
    private func clearRows() {
        let start = words + Layout.rows
        let count = Layout.rowCount * Layout.rowWords
        if words[Layout.mapped] == 1, madvise(start, count * 8, MADV_DONTNEED) == 0 { return }
        start.update(repeating: 0, count: count)
    }
}
