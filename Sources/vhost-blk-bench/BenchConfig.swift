/// The I/O pattern, named as fio names it.
enum RWPattern: String, CaseIterable, Sendable {
    case randread, randwrite, read, write, randrw

    /// Random offsets (otherwise each queue walks its own region sequentially).
    var isRandom: Bool { self == .randread || self == .randwrite || self == .randrw }
}

/// How a queue thread learns about completions.
enum WaitMode: String, CaseIterable, Sendable {
    /// Sleep on the call eventfd (EVENT_IDX `used_event` re-armed after each reap).
    case interrupt
    /// Spin on `used->idx`, with interrupts suppressed through `used_event`.
    case poll
}

/// One benchmark run's parameters, validated.
struct BenchConfig: Sendable {
    var socketPath: String
    var queues: Int
    var iodepth: Int
    var blockSize: Int
    var pattern: RWPattern
    var runtimeNanos: UInt64
    var warmupNanos: UInt64
    var mode: WaitMode
    var cpu: Int?
    /// CPUs for the queue threads, queue i on the i-th (cycling); empty: `cpu`.
    var queueCPUs: [Int] = []
    var serverPID: Int32?
    var queueSize: UInt16
    /// A queue with requests in flight and no completion for this long is stalled: the run fails.
    var stallNanos: UInt64 = 5_000_000_000
    var seed: UInt64
    /// Write the whole disk once, sequentially (each queue its share), and
    /// stop: no warm-up, no time limit (`--fill`).
    var fill = false
    /// Negotiate VIRTIO_F_RING_PACKED and drive packed rings (`--packed`).
    var packed = false
}

/// Queue size for `iodepth` three-descriptor chains: the next power of two
/// of at least `3 * iodepth` and 128, or nil above the split-ring limit.
func defaultQueueSize(iodepth: Int) -> UInt16? {
    let (need, overflow) = iodepth.multipliedReportingOverflow(by: 3)
    guard !overflow, need <= 32768 else { return nil }
    var size = 128
    while size < need { size <<= 1 }
    return UInt16(exactly: size)
}
