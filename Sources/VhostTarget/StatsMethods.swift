import BlkDevice
import Glibc
import JSONRPC
import VhostBlkAPI

/// bdev_get_iostat, bdev_reset_iostat, bdev_get_latency (SPDK's names and
/// result shapes, SPDK JSON-RPC, "bdev_get_iostat"; the latency method is
/// vhost-blkd's, in api/vhost-blkd.openrpc.json).
/// Ticks are CLOCK_MONOTONIC nanoseconds: `tick_rate` is 1e9.
extension VhostTarget {
    static let tickRate: Int64 = 1_000_000_000

    func bdevGetIostat(_ p: BdevGetIostatParams) throws(RPCError) -> JSON {
        let all = try selectBdevs(name: p.name, names: p.names)
        let selected = p.page.map { Array($0.slice(all)) } ?? all
        let reset = IOStatResetMode(p.resetMode)
        var result: JSONObject = ["tick_rate": .int(Self.tickRate), "ticks": .int(Self.ticksNow())]
        if p.perChannel {
            // SPDK: per-channel statistics are for one named bdev.
            guard selected.count == 1, p.name != nil || p.names?.count == 1, let bdev = selected.first else {
                throw .invalidParams("per_channel needs exactly one bdev name")
            }
            let (_, queues) = totals(of: bdev, reset: reset)
            result["name"] = .string(bdev.name)
            result["channels"] = .array(queues.map { queue in
                var entry: JSONObject = ["thread_id": .int(Int64(queue.reactor) + 1)]
                Self.write(queue.stats.io, into: &entry)
                entry["ctrlr"] = .string(queue.controller)
                entry["queue"] = .int(Int64(queue.index))
                return .object(entry)
            })
            return .object(result)
        }
        result["bdevs"] = .array(selected.map { bdev in
            var entry: JSONObject = ["name": .string(bdev.name)]
            Self.write(totals(of: bdev, reset: reset).total, into: &entry)
            entry["io_paused"] = .bool(bdev.errorState.pausedQueues > 0)
            return .object(entry)
        })
        return .object(result)
    }

    func bdevResetIostat(_ p: BdevResetIostatParams) throws(RPCError) -> JSON {
        let mode = IOStatResetMode(p.mode ?? .all)
        for bdev in try selectBdevs(name: p.name, names: nil) { _ = totals(of: bdev, reset: mode) }
        return .bool(true)
    }

    func bdevGetLatency(_ p: BdevGetLatencyParams) throws(RPCError) -> JSON {
        let selected = try selectBdevs(name: p.name, names: nil)
        return [
            "unit": "ns",
            "bdevs": .array(selected.map { bdev in
                let total = totals(of: bdev).total
                var entry: JSONObject = ["name": .string(bdev.name)]
                for op in IOStatOp.counted {
                    entry[op.name] = Self.latencyJSON(total[op], total.histograms[op])
                }
                return .object(entry)
            }),
        ]
    }

    // MARK: Helpers

    /// The bdevs named (each must exist: -19 otherwise), or all of them.
    func selectBdevs(name: String?, names: [String]?) throws(RPCError) -> [Bdev] {
        var wanted: [String] = []
        if let name { wanted.append(name) }
        if let names { wanted += names }
        if wanted.isEmpty { return bdevOrder.compactMap { bdevs[$0] } }
        var result: [Bdev] = []
        for name in wanted {
            guard let bdev = bdevs[name] else { throw .errno(ENODEV) }
            if !result.contains(where: { $0 === bdev }) { result.append(bdev) }
        }
        return result
    }

    static func ticksNow() -> Int64 { Int64(clamping: monotonicNanoseconds()) }

    static func int(_ value: UInt64) -> JSON { .int(Int64(clamping: value)) }

    /// SPDK's `bdev_get_iostat` members, then vhost-blkd's flush and write-zeroes ones.
    static func write(_ s: IOStats, into o: inout JSONObject) {
        o["bytes_read"] = int(s.read.bytes)
        o["num_read_ops"] = int(s.read.ops)
        o["bytes_written"] = int(s.write.bytes)
        o["num_write_ops"] = int(s.write.ops)
        o["bytes_unmapped"] = int(s.unmap.bytes)
        o["num_unmap_ops"] = int(s.unmap.ops)
        o["bytes_copied"] = 0
        o["num_copy_ops"] = 0
        writeLatency(s.read, "read", into: &o)
        writeLatency(s.write, "write", into: &o)
        writeLatency(s.unmap, "unmap", into: &o)
        writeLatency(OpStats(), "copy", into: &o)
        o["num_flush_ops"] = int(s.flush.ops)
        writeLatency(s.flush, "flush", into: &o)
        o["bytes_write_zeroes"] = int(s.writeZeroes.bytes)
        o["num_write_zeroes_ops"] = int(s.writeZeroes.ops)
        writeLatency(s.writeZeroes, "write_zeroes", into: &o)
        var errors = JSONObject()
        if s.failed > 0 { errors["failed"] = int(s.failed) }
        if s.unsupported > 0 { errors["unsupported"] = int(s.unsupported) }
        o["io_error"] = .object(errors)
        // vhost-blkd's: failed backend operations by errno (ErrorPolicyMethods.swift; docs/OPERATIONS.md, "Full disks").
        var errnos = JSONObject()
        for errnoClass in IOErrnoClass.allCases where s.errnos[errnoClass] > 0 { errnos[errnoClass.name] = int(s.errnos[errnoClass]) }
        o["io_errno"] = .object(errnos)
    }

    private static func writeLatency(_ s: OpStats, _ op: String, into o: inout JSONObject) {
        o["\(op)_latency_ticks"] = int(s.latencySum)
        o["max_\(op)_latency_ticks"] = int(s.latencyMax)
        o["min_\(op)_latency_ticks"] = int(s.ops == 0 ? 0 : s.latencyMin)
    }

    /// Percentiles from the histogram (about 3 % resolution), capped by the exact extremes.
    static func latencyJSON(_ s: OpStats, _ histogram: LatencyHistogram?) -> JSON {
        guard s.ops > 0, let histogram else {
            return ["count": 0, "min": 0, "mean": 0, "p50": 0, "p90": 0, "p99": 0, "p99_9": 0, "max": 0]
        }
        func at(_ percentile: Double) -> JSON {
            int(min(max(histogram.valueAtPercentile(percentile), s.latencyMin), s.latencyMax))
        }
        return [
            "count": int(s.ops), "min": int(s.latencyMin), "mean": int(s.latencySum / s.ops),
            "p50": at(50), "p90": at(90), "p99": at(99), "p99_9": at(99.9), "max": int(s.latencyMax),
        ]
    }
}

extension IOStatResetMode {
    init(_ name: IOStatResetModeName?) {
        switch name {
        case .all?: self = .all
        case .maxmin?: self = .maxmin
        case .error?: self = .error
        case .none?, nil: self = .none
        }
    }
}

extension VhostTarget {
    /// The stats module's methods: counters are not saved state, so resets
    /// change no config either.
    static let statsRPCMethods: [RPCMethod] = [
        .immediate(BdevGetIostatParams.self, .stats, mutatesConfig: false) { t, p throws(RPCError) in try t.bdevGetIostat(p) },
        .immediate(BdevResetIostatParams.self, .stats, mutatesConfig: false) { t, p throws(RPCError) in try t.bdevResetIostat(p) },
        .immediate(BdevGetLatencyParams.self, .stats, mutatesConfig: false) { t, p throws(RPCError) in try t.bdevGetLatency(p) },
    ]
}
