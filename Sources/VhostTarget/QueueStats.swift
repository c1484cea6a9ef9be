import Virtio

/// The operation classes counted apart (SPDK's io types read, write and
/// unmap; flush and write-zeroes are vhost-blkd's additions). `other` is
/// GET_ID, unknown types and malformed chains: counted as requests and, when
/// they fail, as errors, never as I/O.
enum IOStatOp: UInt8, CaseIterable, Sendable {
    case read, write, unmap, flush, writeZeroes, other

    /// Counted ops, in the order results list them.
    static let counted: [IOStatOp] = [.read, .write, .unmap, .flush, .writeZeroes]

    /// From the request type's raw value (virtio 1.2 §5.2.6): an integer
    /// switch, not calls to the types' static accessors.
    @inline(__always)
    init(_ type: BlkRequestType) {
        switch type.rawValue {
        case 0: self = .read  // VIRTIO_BLK_T_IN
        case 1: self = .write  // VIRTIO_BLK_T_OUT
        case 4: self = .flush
        case 11: self = .unmap  // DISCARD
        case 13: self = .writeZeroes
        default: self = .other
        }
    }

    /// The name used in `bdev_get_latency` and the metrics labels.
    var name: String {
        switch self {
        case .read: return "read"
        case .write: return "write"
        case .unmap: return "unmap"
        case .flush: return "flush"
        case .writeZeroes: return "write_zeroes"
        case .other: return "other"
        }
    }
}

/// Count, bytes and latency of one operation class (SPDK's
/// `spdk_bdev_io_stat` fields for one io type). Latency is in nanoseconds,
/// which are this daemon's ticks (`tick_rate` 1e9).
struct OpStats: Sendable, Equatable {
    var ops: UInt64 = 0
    var bytes: UInt64 = 0
    var latencySum: UInt64 = 0
    /// UInt64.max while nothing was counted (reported as 0, as SPDK does).
    var latencyMin: UInt64 = .max
    var latencyMax: UInt64 = 0

    @inline(__always)
    mutating func record(bytes: UInt64, latency: UInt64) {
        ops &+= 1
        self.bytes &+= bytes
        latencySum &+= latency
        if latency < latencyMin { latencyMin = latency }
        if latency > latencyMax { latencyMax = latency }
    }

    mutating func add(_ other: OpStats) {
        ops &+= other.ops
        bytes &+= other.bytes
        latencySum &+= other.latencySum
        latencyMin = min(latencyMin, other.latencyMin)
        latencyMax = max(latencyMax, other.latencyMax)
    }

    mutating func resetMinMax() {
        latencyMin = .max
        latencyMax = 0
    }
}

/// Latency histograms per operation class (`LatencyHistogram`: about 3 %
/// resolution; 15 KiB each, allocated on the first latency of their class,
/// so an idle bdev or queue holds none).
struct LatencyHistograms: Sendable {
    var read = LatencyHistogram()
    var write = LatencyHistogram()
    var unmap = LatencyHistogram()
    var flush = LatencyHistogram()
    var writeZeroes = LatencyHistogram()

    @inline(__always)
    mutating func record(_ op: IOStatOp, _ latency: UInt64) {
        switch op {
        case .read: read.record(latency)
        case .write: write.record(latency)
        case .unmap: unmap.record(latency)
        case .flush: flush.record(latency)
        case .writeZeroes: writeZeroes.record(latency)
        case .other: break
        }
    }

    /// The class's histogram; nil for `.other`.
    subscript(op: IOStatOp) -> LatencyHistogram? {
        switch op {
        case .read: return read
        case .write: return write
        case .unmap: return unmap
        case .flush: return flush
        case .writeZeroes: return writeZeroes
        case .other: return nil
        }
    }

    mutating func add(_ other: LatencyHistograms) {
        read.add(other.read)
        write.add(other.write)
        unmap.add(other.unmap)
        flush.add(other.flush)
        writeZeroes.add(other.writeZeroes)
    }
}

/// I/O counters of a bdev or one virtqueue: what `bdev_get_iostat` reports.
struct IOStats: Sendable {
    var read = OpStats(), write = OpStats(), unmap = OpStats(), flush = OpStats(), writeZeroes = OpStats()
    /// Requests completed with VIRTIO_BLK_S_IOERR (SPDK's "failed") and VIRTIO_BLK_S_UNSUPP.
    var failed: UInt64 = 0
    var unsupported: UInt64 = 0
    var histograms = LatencyHistograms()

    /// Counts one completed request: a successful one as I/O of its class
    /// (SPDK counts only successes), a failed one as an error.
    @inline(__always)
    mutating func record(_ op: IOStatOp, status: BlkStatus, bytes: UInt64, latency: UInt64) {
        guard status.rawValue == 0 else {  // VIRTIO_BLK_S_OK
            if status.rawValue == 2 { unsupported &+= 1 } else { failed &+= 1 }  // UNSUPP, else IOERR
            return
        }
        switch op {
        case .read: read.record(bytes: bytes, latency: latency)
        case .write: write.record(bytes: bytes, latency: latency)
        case .unmap: unmap.record(bytes: bytes, latency: latency)
        case .flush: flush.record(bytes: 0, latency: latency)
        case .writeZeroes: writeZeroes.record(bytes: bytes, latency: latency)
        case .other: return
        }
        histograms.record(op, latency)
    }

    subscript(op: IOStatOp) -> OpStats {
        switch op {
        case .read: return read
        case .write: return write
        case .unmap: return unmap
        case .flush: return flush
        case .writeZeroes: return writeZeroes
        case .other: return OpStats()
        }
    }

    mutating func add(_ other: IOStats) {
        read.add(other.read)
        write.add(other.write)
        unmap.add(other.unmap)
        flush.add(other.flush)
        writeZeroes.add(other.writeZeroes)
        failed &+= other.failed
        unsupported &+= other.unsupported
        histograms.add(other.histograms)
    }

    /// SPDK's reset modes: `all` zeroes everything, `maxmin` only the
    /// latency extremes, `error` only the error counts.
    mutating func reset(_ mode: IOStatResetMode) {
        switch mode {
        case .none:
            return
        case .all, .ioOnly:
            self = IOStats()
        case .maxmin:
            read.resetMinMax(); write.resetMinMax(); unmap.resetMinMax(); flush.resetMinMax(); writeZeroes.resetMinMax()
        case .error:
            failed = 0
            unsupported = 0
        }
    }
}

/// `reset_mode` of `bdev_get_iostat` / `mode` of `bdev_reset_iostat`;
/// `ioOnly` (internal) zeroes a queue's I/O counters but not its request,
/// kick and interrupt counts.
enum IOStatResetMode: Sendable {
    case all, maxmin, error, none, ioOnly
}

/// Everything one virtqueue counts, as a value: kept in its
/// `QueueStatsBlock` on the reactor thread, copied out for readers. A copy
/// is cheap: the histograms' arrays are copy-on-write (the reactor's next
/// record copies ~190 KiB once).
struct QueueStats: Sendable {
    var io = IOStats()
    /// Requests completed (every popped head completes once, malformed ones included).
    var requests: UInt64 = 0
    /// Kick eventfd reads that completed.
    var kicks: UInt64 = 0
    /// Used-ring publications that signalled the call eventfd, and those that did not (EVENT_IDX, NO_INTERRUPT).
    var interruptsSent: UInt64 = 0
    var interruptsSuppressed: UInt64 = 0
    /// Runs of the avail ring that popped at least one head (requests / batches = mean batch size).
    var batches: UInt64 = 0
    /// Filled in by the snapshot: requests popped and not yet completed, and the ring size.
    var inFlight: Int = 0
    var size: UInt16 = 0

    var meanBatchSize: Double { batches == 0 ? 0 : Double(requests) / Double(batches) }

    mutating func add(_ other: QueueStats) {
        io.add(other.io)
        requests &+= other.requests
        kicks &+= other.kicks
        interruptsSent &+= other.interruptsSent
        interruptsSuppressed &+= other.interruptsSuppressed
        batches &+= other.batches
    }
}

extension QueueStats {
    @inline(__always)
    mutating func countNotification(sent: Bool) {
        if sent { interruptsSent &+= 1 } else { interruptsSuppressed &+= 1 }
    }

    /// SPDK's reset modes applied to one queue; `all` also zeroes the queue counters.
    mutating func reset(_ mode: IOStatResetMode) {
        io.reset(mode)
        if mode == .all {
            requests = 0
            kicks = 0
            interruptsSent = 0
            interruptsSuppressed = 0
            batches = 0
        }
    }
}

/// A queue's counters and the per-request stamps, in memory the
/// `VirtqueueServer` owns and only its reactor thread touches.
///
/// Why pointers rather than a stored `var`: every access to a class's
/// stored `var` costs a dynamic exclusivity check (swift_beginAccess and
/// endAccess, ~120 instructions each under callgrind), which alone would
/// exceed the 2 % budget per request. Stores through a pointer are plain
/// stores. Readers on other threads never touch this memory: they post a
/// closure to the reactor (`Reactor.postAndWait`) that returns `snapshot()`,
/// a value copy, so there is no data race and no atomics on the data path.
final class QueueStatsBlock {
    /// What one in-flight request will be counted as.
    struct Pending {
        var op: IOStatOp = .other
        var bytes: UInt64 = 0
        var started: UInt64 = 0
    }

    private let counters: UnsafeMutablePointer<QueueStats>
    private let pending: UnsafeMutablePointer<Pending>
    private let slotCount: Int

    init(slotCount: Int) {
        self.slotCount = slotCount
        counters = .allocate(capacity: 1)
        counters.initialize(to: QueueStats())
        pending = .allocate(capacity: max(1, slotCount))
        pending.initialize(repeating: Pending(), count: max(1, slotCount))
    }

    deinit {
        counters.deinitialize(count: 1)
        counters.deallocate()
        pending.deinitialize(count: max(1, slotCount))
        pending.deallocate()
    }

    /// A parsed request in `slot`: its class, data bytes and pop time.
    @inline(__always)
    func begin(_ slot: UInt32, _ op: IOStatOp, bytes: UInt64, at time: UInt64) {
        guard Int(slot) < slotCount else { return }
        pending[Int(slot)] = Pending(op: op, bytes: bytes, started: time)
    }

    /// The byte range of a discard or write-zeroes request (its payload is only the segment).
    @inline(__always)
    func setBytes(_ slot: UInt32, _ bytes: UInt64) {
        guard Int(slot) < slotCount else { return }
        pending[Int(slot)].bytes = bytes
    }

    /// Counts the completion of `slot` (every popped head completes once;
    /// one that never parsed counts as `other`) and clears its stamp.
    @inline(__always)
    func complete(_ slot: UInt32, _ status: BlkStatus, at time: UInt64) {
        guard Int(slot) < slotCount else { return }
        let p = pending[Int(slot)]
        pending[Int(slot)].op = .other
        counters.pointee.requests &+= 1
        counters.pointee.io.record(p.op, status: status, bytes: p.bytes, latency: time &- p.started)
    }

    @inline(__always) func countKick() { counters.pointee.kicks &+= 1 }
    @inline(__always) func countBatch() { counters.pointee.batches &+= 1 }
    @inline(__always) func countNotification(sent: Bool) { counters.pointee.countNotification(sent: sent) }

    func snapshot() -> QueueStats { counters.pointee }
    func reset(_ mode: IOStatResetMode) { counters.pointee.reset(mode) }
}
