/// The outcome of a run: what it measured and how to print it.
struct BenchReport {
    var config: BenchConfig
    var queueResults: [QueueResult]
    var capacitySectors: UInt64
    var eventIdx: Bool
    /// Server CPU seconds consumed inside the measured window, if `--server-pid` was given and readable.
    var serverCPUSeconds: Double?
    var clientCPUSeconds: Double
    var measuredSeconds: Double

    var histogram: LatencyHistogram {
        var h = LatencyHistogram()
        for r in queueResults { h.merge(r.histogram) }
        return h
    }
    var ios: UInt64 { queueResults.reduce(0) { $0 &+ $1.reads &+ $1.writes } }
    var errors: UInt64 { queueResults.reduce(0) { $0 &+ $1.errors } }
    var failures: [String] { queueResults.compactMap(\.failure) }
    var iops: Double { measuredSeconds > 0 ? Double(ios) / measuredSeconds : 0 }
    /// Decimal megabytes per second.
    var megabytesPerSecond: Double { iops * Double(config.blockSize) / 1e6 }
    /// Server CPU microseconds per completed I/O.
    var serverMicrosPerIO: Double? {
        guard let s = serverCPUSeconds, ios > 0 else { return nil }
        return s * 1e6 / Double(ios)
    }

    var ok: Bool { errors == 0 && failures.isEmpty && ios > 0 }

    /// Call-eventfd wakeups (interrupts the client took) per completed I/O.
    var wakeupsPerIO: Double? {
        guard ios > 0 else { return nil }
        return Double(queueResults.reduce(0) { $0 &+ $1.wakeups }) / Double(ios)
    }

    /// One line for people.
    var humanLine: String {
        let h = histogram
        var s = "\(config.pattern.rawValue) bs=\(config.blockSize) qd=\(config.iodepth) queues=\(config.queues) mode=\(config.mode.rawValue): "
        s += "\(fixed(iops, 0)) IOPS, \(fixed(megabytesPerSecond, 1)) MB/s, "
        s += "lat p50 \(fixed(Double(h.quantile(0.5)) / 1000, 1)) us, p99 \(fixed(Double(h.quantile(0.99)) / 1000, 1)) us, "
        s += "errors \(errors)"
        if let cpu = serverCPUSeconds, let per = serverMicrosPerIO {
            s += ", server cpu \(fixed(cpu, 2)) s (\(fixed(cpu / max(measuredSeconds, 1e-9) * 100, 0))%), \(fixed(per, 2)) us/IO"
        }
        s += ", client cpu \(fixed(clientCPUSeconds, 2)) s"
        if config.mode == .interrupt, let w = wakeupsPerIO { s += ", \(fixed(w, 3)) interrupts/IO" }
        if config.packed { s += ", packed ring" }
        if !eventIdx { s += " [no EVENT_IDX]" }
        for f in failures { s += " [FAILED: \(f)]" }
        return s
    }

    /// One JSON object.
    var json: String {
        let h = histogram
        var fields: [(String, String)] = [
            ("socket", quote(config.socketPath)),
            ("rw", quote(config.pattern.rawValue)),
            ("bs", "\(config.blockSize)"),
            ("iodepth", "\(config.iodepth)"),
            ("queues", "\(config.queues)"),
            ("queue_size", "\(config.queueSize)"),
            ("mode", quote(config.mode.rawValue)),
            ("ring", quote(config.packed ? "packed" : "split")),
            ("event_idx", eventIdx ? "true" : "false"),
            ("capacity_bytes", "\(capacitySectors &* 512)"),
            ("runtime_s", fixed(measuredSeconds, 3)),
            ("ios", "\(ios)"),
            ("reads", "\(queueResults.reduce(0) { $0 &+ $1.reads })"),
            ("writes", "\(queueResults.reduce(0) { $0 &+ $1.writes })"),
            ("iops", fixed(iops, 1)),
            ("mbps", fixed(megabytesPerSecond, 2)),
            ("lat_mean_us", fixed(h.meanNanos / 1000, 2)),
            ("lat_p50_us", fixed(Double(h.quantile(0.5)) / 1000, 2)),
            ("lat_p99_us", fixed(Double(h.quantile(0.99)) / 1000, 2)),
            ("lat_max_us", fixed(Double(h.maxNanos) / 1000, 2)),
            ("errors", "\(errors)"),
            ("kicks", "\(queueResults.reduce(0) { $0 &+ $1.kicks })"),
            ("wakeups", "\(queueResults.reduce(0) { $0 &+ $1.wakeups })"),
            ("wakeups_per_io", wakeupsPerIO.map { fixed($0, 4) } ?? "null"),
            ("client_cpu_s", fixed(clientCPUSeconds, 3)),
        ]
        if let cpu = serverCPUSeconds {
            fields.append(("server_cpu_s", fixed(cpu, 3)))
            fields.append(("server_cpu_us_per_io", serverMicrosPerIO.map { fixed($0, 3) } ?? "null"))
        }
        fields.append(("failures", "[" + failures.map(quote).joined(separator: ",") + "]"))
        return "{" + fields.map { "\(quote($0.0)):\($0.1)" }.joined(separator: ",") + "}"
    }
}

/// `x` with `digits` decimals (0...6), without Foundation; "0" for non-finite or huge values.
func fixed(_ x: Double, _ digits: Int) -> String {
    let d = min(max(digits, 0), 6)
    var scale = 1.0
    for _ in 0..<d { scale *= 10 }
    guard x.isFinite, let scaled = Int64(exactly: (abs(x) * scale).rounded()) else { return "0" }
    let sign = x < 0 && scaled != 0 ? "-" : ""
    guard d > 0 else { return sign + "\(scaled)" }
    let unit = Int64(scale)
    let frac = String(scaled % unit)
    return sign + "\(scaled / unit)." + String(repeating: "0", count: d - frac.count) + frac
}

/// A JSON string literal.
func quote(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\t": out += "\\t"
        default:
            if u.value < 0x20 {
                let hex = String(u.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            } else {
                out.unicodeScalars.append(u)
            }
        }
    }
    return out + "\""
}
