import Virtio

/// The operation classes counted apart (SPDK's io types read, write and
/// unmap; flush and write-zeroes are vhost-blkd's additions). `other` is
/// GET_ID, unknown types and malformed chains: counted as requests and, when
/// they fail, as errors, never as I/O.
package enum IOStatOp: UInt8, CaseIterable, Sendable {
    case read, write, unmap, flush, writeZeroes, other

    /// Counted ops, in the order results list them.
    package static let counted: [IOStatOp] = [.read, .write, .unmap, .flush, .writeZeroes]

    /// The request type counted as this class (virtio 1.2 §5.2.6); nil for `other`.
    package var requestType: BlkRequestType? {
        switch self {
        case .read: return .in  // VIRTIO_BLK_T_IN
        case .write: return .out  // VIRTIO_BLK_T_OUT
        case .unmap: return .discard
        case .flush: return .flush
        case .writeZeroes: return .writeZeroes
        case .other: return nil
        }
    }

    /// The name used in `bdev_get_latency` and the metrics labels.
    package var name: String {
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
package struct OpStats: Sendable, Equatable {
    package var ops: UInt64 = 0
    package var bytes: UInt64 = 0
    package var latencySum: UInt64 = 0
    /// UInt64.max while nothing was counted (reported as 0, as SPDK does).
    package var latencyMin: UInt64 = .max
    package var latencyMax: UInt64 = 0

    package init() {}

    package init(ops: UInt64, bytes: UInt64, latencySum: UInt64, latencyMin: UInt64, latencyMax: UInt64) {
        self.ops = ops
        self.bytes = bytes
        self.latencySum = latencySum
        self.latencyMin = latencyMin
        self.latencyMax = latencyMax
    }

    package mutating func add(_ other: OpStats) {
        ops &+= other.ops
        bytes &+= other.bytes
        latencySum &+= other.latencySum
        latencyMin = min(latencyMin, other.latencyMin)
        latencyMax = max(latencyMax, other.latencyMax)
    }

    package mutating func resetMinMax() {
        latencyMin = .max
        latencyMax = 0
    }
}

/// A value per counted operation class, as named properties (what the RPC
/// results and the metrics read), reachable by `IOStatOp` in one place.
package protocol PerOpClass {
    associatedtype Value
    var read: Value { get set }
    var write: Value { get set }
    var unmap: Value { get set }
    var flush: Value { get set }
    var writeZeroes: Value { get set }
}

extension PerOpClass {
    /// The property holding `op`'s value; nil for `.other`.
    package static func field(_ op: IOStatOp) -> WritableKeyPath<Self, Value>? {
        switch op {
        case .read: return \.read
        case .write: return \.write
        case .unmap: return \.unmap
        case .flush: return \.flush
        case .writeZeroes: return \.writeZeroes
        case .other: return nil
        }
    }

    /// `op`'s value; nil for `.other` (setting it, or setting nil, is ignored).
    package subscript(counted op: IOStatOp) -> Value? {
        get { Self.field(op).map { self[keyPath: $0] } }
        set {
            guard let field = Self.field(op), let newValue else { return }
            self[keyPath: field] = newValue
        }
    }

    /// Applies `body` to every class's value.
    package mutating func updateEach(_ body: (inout Value) -> Void) {
        body(&read); body(&write); body(&unmap); body(&flush); body(&writeZeroes)
    }
}

/// Latency histograms per operation class (`LatencyHistogram`: about 3 %
/// resolution; 15 KiB each, allocated on the first latency of their class,
/// so an idle bdev or queue holds none).
package struct LatencyHistograms: PerOpClass, Sendable {
    package var read = LatencyHistogram()
    package var write = LatencyHistogram()
    package var unmap = LatencyHistogram()
    package var flush = LatencyHistogram()
    package var writeZeroes = LatencyHistogram()

    /// The class's histogram; nil for `.other` (setting it is ignored).
    package subscript(op: IOStatOp) -> LatencyHistogram? {
        get { self[counted: op] }
        set { self[counted: op] = newValue }
    }

    package mutating func add(_ other: LatencyHistograms) {
        for op in IOStatOp.counted { self[counted: op]?.add(other[counted: op] ?? LatencyHistogram()) }
    }
}

/// I/O counters of a bdev or one virtqueue: what `bdev_get_iostat` reports.
package struct IOStats: PerOpClass, Sendable {
    package var read = OpStats(), write = OpStats(), unmap = OpStats(), flush = OpStats(), writeZeroes = OpStats()
    /// Requests completed with VIRTIO_BLK_S_IOERR (SPDK's "failed") and VIRTIO_BLK_S_UNSUPP.
    package var failed: UInt64 = 0
    package var unsupported: UInt64 = 0
    /// Failed backend operations by errno (an operation held under the
    /// `pause` error policy and failing again counts again).
    package var errnos = IOErrnoCounts()
    package var histograms = LatencyHistograms()

    package init() {}

    /// The class's counters; `.other` reads as empty (setting it is ignored).
    package subscript(op: IOStatOp) -> OpStats {
        get { self[counted: op] ?? OpStats() }
        set { self[counted: op] = newValue }
    }

    package mutating func add(_ other: IOStats) {
        for op in IOStatOp.counted { self[counted: op]?.add(other[op]) }
        failed &+= other.failed
        unsupported &+= other.unsupported
        errnos.add(other.errnos)
        histograms.add(other.histograms)
    }

    /// SPDK's reset modes: `all` zeroes everything, `maxmin` only the
    /// latency extremes, `error` only the error counts.
    package mutating func reset(_ mode: IOStatResetMode) {
        switch mode {
        case .none:
            return
        case .all, .ioOnly:
            self = IOStats()
        case .maxmin:
            updateEach { $0.resetMinMax() }
        case .error:
            failed = 0
            unsupported = 0
            errnos = IOErrnoCounts()
        }
    }
}

/// `reset_mode` of `bdev_get_iostat` / `mode` of `bdev_reset_iostat`;
/// `ioOnly` (internal) zeroes a queue's I/O counters but not its request,
/// kick and interrupt counts.
package enum IOStatResetMode: Sendable {
    case all, maxmin, error, none, ioOnly
}

/// Everything one virtqueue counts, as a value: built by its
/// `QueueStatsBlock.snapshot()` on the reactor thread from the raw counters.
package struct QueueStats: Sendable {
    package var io = IOStats()
    /// Requests completed (every popped head completes once, malformed ones included).
    package var requests: UInt64 = 0
    /// Kick eventfd reads that completed.
    package var kicks: UInt64 = 0
    /// Used-ring publications that signalled the call eventfd, and those that did not (EVENT_IDX, NO_INTERRUPT).
    package var interruptsSent: UInt64 = 0
    package var interruptsSuppressed: UInt64 = 0
    /// Interrupts coalescing held back (each sent later, covering more completions).
    package var interruptsDelayed: UInt64 = 0
    /// Runs of the avail ring that popped at least one head (requests / batches = mean batch size).
    package var batches: UInt64 = 0
    /// Filled in by the snapshot: requests popped and not yet completed, and the ring size.
    package var inFlight: Int = 0
    package var size: UInt16 = 0

    package var meanBatchSize: Double { batches == 0 ? 0 : Double(requests) / Double(batches) }

    package mutating func add(_ other: QueueStats) {
        io.add(other.io)
        requests &+= other.requests
        kicks &+= other.kicks
        interruptsSent &+= other.interruptsSent
        interruptsSuppressed &+= other.interruptsSuppressed
        interruptsDelayed &+= other.interruptsDelayed
        batches &+= other.batches
    }
}
