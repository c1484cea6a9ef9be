import BlkDevice

/// The Prometheus text exposition format (version 0.0.4) of the daemon's
/// counters: the numbers of bdev_get_iostat, bdev_get_latency (as a
/// histogram with fixed buckets read off the latency histograms),
/// vhost_get_controllers' queue detail and framework_get_reactors.
///
/// Hand-written rather than through swift-prometheus: that library's
/// counters only grow by increments and its histograms take one observation
/// at a time, while these values are snapshots of counters that the reactors
/// keep (and `bdev_reset_iostat` may zero), and histograms that already hold
/// millions of observations. The format itself is a few lines.
struct MetricsText {
    /// Histogram bucket bounds in seconds.
    static let bucketBounds: [Double] = [
        0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1,
    ]

    private(set) var text = ""
    private var declared: Set<String> = []

    mutating func family(_ name: String, _ type: String, _ help: String) {
        guard declared.insert(name).inserted else { return }
        text += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
    }

    mutating func sample(_ name: String, _ labels: [(String, String)], _ value: String) {
        if labels.isEmpty {
            text += "\(name) \(value)\n"
        } else {
            text += "\(name){" + labels.map { "\($0.0)=\"\(Self.escape($0.1))\"" }.joined(separator: ",") + "} \(value)\n"
        }
    }

    mutating func sample(_ name: String, _ labels: [(String, String)], _ value: UInt64) {
        sample(name, labels, String(value))
    }

    /// Label values escape backslash, double quote and newline.
    static func escape(_ value: String) -> String {
        var out = ""
        for c in value {
            switch c {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.append(c)
            }
        }
        return out
    }

    static func seconds(_ nanoseconds: UInt64) -> String {
        String(Double(nanoseconds) / 1e9)
    }

    /// A histogram family member from a latency histogram of nanoseconds.
    mutating func histogram(_ name: String, _ labels: [(String, String)], _ h: LatencyHistogram, sumNanoseconds: UInt64) {
        for bound in Self.bucketBounds {
            let limit = UInt64(bound * 1e9)
            sample(name + "_bucket", labels + [("le", String(bound))], h.count(within: 0...limit))
        }
        sample(name + "_bucket", labels + [("le", "+Inf")], h.totalCount)
        sample(name + "_sum", labels, Self.seconds(sumNanoseconds))
        sample(name + "_count", labels, h.totalCount)
    }
}

extension VhostTarget {
    /// The scrape body: every family's samples in one group, as the format asks.
    func metricsText() -> String {
        let bdevTotals = bdevOrder.compactMap { bdevs[$0] }.map { ($0.name, totals(of: $0)) }
        let queues = bdevTotals.flatMap { name, t in t.queues.map { (name, $0) } }
        var m = MetricsText()
        m.family("vhost_blkd_bdev_ops_total", "counter", "Successful I/O operations completed, by operation.")
        for (name, t) in bdevTotals {
            for op in IOStatOp.counted { m.sample("vhost_blkd_bdev_ops_total", [("bdev", name), ("op", op.name)], t.total[op].ops) }
        }
        m.family("vhost_blkd_bdev_bytes_total", "counter", "Bytes moved by successful I/O operations, by operation.")
        for (name, t) in bdevTotals {
            for op in IOStatOp.counted { m.sample("vhost_blkd_bdev_bytes_total", [("bdev", name), ("op", op.name)], t.total[op].bytes) }
        }
        m.family("vhost_blkd_bdev_errors_total", "counter", "Requests completed with an error status.")
        for (name, t) in bdevTotals {
            m.sample("vhost_blkd_bdev_errors_total", [("bdev", name), ("status", "failed")], t.total.failed)
            m.sample("vhost_blkd_bdev_errors_total", [("bdev", name), ("status", "unsupported")], t.total.unsupported)
        }
        m.family("vhost_blkd_bdev_io_errors_total", "counter", "Failed backend operations, by errno (short: fewer bytes moved than asked).")
        for (name, t) in bdevTotals {
            for errnoClass in IOErrnoClass.allCases {
                m.sample("vhost_blkd_bdev_io_errors_total", [("bdev", name), ("errno", errnoClass.name)], t.total.errnos[errnoClass])
            }
        }
        m.family("vhost_blkd_bdev_io_paused", "gauge", "Queues holding writes under the pause error policy.")
        for (name, _) in bdevTotals {
            m.sample("vhost_blkd_bdev_io_paused", [("bdev", name)], UInt64(clamping: bdevs[name]?.errorState.pausedQueues ?? 0))
        }
        m.family("vhost_blkd_bdev_latency_seconds", "histogram", "Latency from pop to completion of successful requests.")
        for (name, t) in bdevTotals {
            for op in IOStatOp.counted {
                guard let h = t.total.histograms[op] else { continue }
                m.histogram("vhost_blkd_bdev_latency_seconds", [("bdev", name), ("op", op.name)], h, sumNanoseconds: t.total[op].latencySum)
            }
        }
        func labels(_ bdev: String, _ q: QueueSnapshot) -> [(String, String)] {
            [("bdev", bdev), ("ctrlr", q.controller), ("queue", String(q.index))]
        }
        m.family("vhost_blkd_queue_requests_total", "counter", "Requests popped from the virtqueue.")
        for (bdev, q) in queues { m.sample("vhost_blkd_queue_requests_total", labels(bdev, q), q.stats.requests) }
        m.family("vhost_blkd_queue_kicks_total", "counter", "Guest kicks received.")
        for (bdev, q) in queues { m.sample("vhost_blkd_queue_kicks_total", labels(bdev, q), q.stats.kicks) }
        m.family("vhost_blkd_queue_interrupts_total", "counter", "Used-ring publications, by whether the guest was signalled.")
        for (bdev, q) in queues {
            m.sample("vhost_blkd_queue_interrupts_total", labels(bdev, q) + [("kind", "sent")], q.stats.interruptsSent)
            m.sample("vhost_blkd_queue_interrupts_total", labels(bdev, q) + [("kind", "suppressed")], q.stats.interruptsSuppressed)
        }
        m.family("vhost_blkd_queue_in_flight", "gauge", "Requests popped and not yet completed.")
        for (bdev, q) in queues { m.sample("vhost_blkd_queue_in_flight", labels(bdev, q), UInt64(max(0, q.stats.inFlight))) }
        m.family("vhost_blkd_queue_ops_total", "counter", "Successful I/O operations on this virtqueue, by operation.")
        for (bdev, q) in queues {
            for op in IOStatOp.counted { m.sample("vhost_blkd_queue_ops_total", labels(bdev, q) + [("op", op.name)], q.stats.io[op].ops) }
        }
        m.family("vhost_blkd_reactor_busy_seconds_total", "counter", "Time the reactor spent handling events.")
        for r in reactors {
            m.sample("vhost_blkd_reactor_busy_seconds_total", [("reactor", String(r.index)), ("lcore", String(r.cpu))],
                     MetricsText.seconds(r.busyNanoseconds.load(ordering: .relaxed)))
        }
        m.family("vhost_blkd_reactor_idle_seconds_total", "counter", "Time the reactor spent waiting.")
        for r in reactors {
            m.sample("vhost_blkd_reactor_idle_seconds_total", [("reactor", String(r.index)), ("lcore", String(r.cpu))],
                     MetricsText.seconds(r.idleNanoseconds.load(ordering: .relaxed)))
        }
        return m.text
    }
}
