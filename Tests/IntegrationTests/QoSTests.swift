import DaemonTestSupport
import Foundation
import JSONRPC
import Testing

/// `bdev_set_qos_limit` (issue 8, "QoS"): SPDK's parameter checks, limits
/// shown and saved, and enforcement measured with `vhost-blk-bench` as the
/// front end: achieved IOPS and MB/s within 5 % of the limit, a live change
/// taking effect, and an unlimited neighbour on the same reactor keeping
/// most of its solo rate. Runs are short (3 s); the figures are printed.
@Suite("QoS rate limits", .serialized)
struct QoSTests {
    static let bench = DaemonProcess.binaryDirectory.appendingPathComponent("vhost-blk-bench").path

    /// A daemon on one reactor with null bdevs Q0 and Q1 behind vhost.0 and vhost.1.
    static func daemonWithTwoControllers() throws -> DaemonProcess {
        let daemon = try DaemonProcess(cpumask: "0x1", extraArguments: ["--log-level", "info"])
        for i in 0..<2 {
            try daemon.call("bdev_null_create", ["name": .string("Q\(i)"), "num_blocks": 262_144, "block_size": 512])
            try daemon.call("vhost_create_blk_controller", ["ctrlr": .string("vhost.\(i)"), "dev_name": .string("Q\(i)")])
        }
        return daemon
    }

    /// Runs the benchmark against `ctrlr`; returns its JSON report.
    /// Seconds per accuracy run: 3 in CI, `VHOST_BLKD_QOS_SECONDS=10` for the issue's 10 s runs.
    static let accuracySeconds = ProcessInfo.processInfo.environment["VHOST_BLKD_QOS_SECONDS"].flatMap(Double.init) ?? 3

    static func runBench(_ daemon: DaemonProcess, _ ctrlr: String, bs: Int = 4096, iodepth: Int = 16, queues: Int = 1,
                         runtime: Double = accuracySeconds) throws -> JSON {
        let (status, output) = try runCommand(bench, [
            "--socket", daemon.socketDirectory + "/" + ctrlr, "--queues", "\(queues)", "--iodepth", "\(iodepth)",
            "--bs", "\(bs)", "--rw", "randrw", "--runtime", "\(runtime)", "--warmup", "0.5", "--json",
        ])
        #expect(status == 0, "\(output)")
        let line = output.split(separator: "\n").last { $0.hasPrefix("{") }.map(String.init) ?? ""
        let report = try JSON.parse(line)
        #expect(report["errors"]?.intValue == 0, "\(output)")
        return report
    }

    static func setLimit(_ daemon: DaemonProcess, _ bdev: String, _ limits: [String: JSON]) throws {
        var params = JSONObject(limits)
        params["name"] = .string(bdev)
        try daemon.call("bdev_set_qos_limit", .object(params))
    }

    static func within(_ achieved: Double, _ limit: Double, _ tolerance: Double) -> Bool {
        abs(achieved - limit) <= limit * tolerance
    }

    // MARK: Parameters, listing, config

    @Test func parametersFollowSPDK() throws {
        let daemon = try Self.daemonWithTwoControllers()
        defer { daemon.stop(); daemon.cleanUp() }
        func code(_ params: JSON) -> Int? {
            do {
                try daemon.call("bdev_set_qos_limit", params)
                return nil
            } catch let error as RPCClientError {
                if case .rpc(let e) = error { return e.code }
                return nil
            } catch {
                return nil
            }
        }
        #expect(code(["name": "Q0", "rw_ios_per_sec": 1500]) == -22)  // not a multiple of 1000
        #expect(code(["name": "Q0"]) == -32602)  // no limit given
        #expect(code(["name": "nope", "rw_ios_per_sec": 1000]) == -19)
        #expect(code(["name": "Q0", "rw_ios_per_sec": -1]) == -32602)

        try Self.setLimit(daemon, "Q0", ["rw_ios_per_sec": 20000, "rw_mbytes_per_sec": 100])
        try Self.setLimit(daemon, "Q0", ["w_mbytes_per_sec": 7])  // the others stay
        let limits = try daemon.call("bdev_get_bdevs", ["name": "Q0"]).arrayValue?.first?["assigned_rate_limits"]
        #expect(limits?["rw_ios_per_sec"]?.intValue == 20000)
        #expect(limits?["rw_mbytes_per_sec"]?.intValue == 100)
        #expect(limits?["r_mbytes_per_sec"]?.intValue == 0)
        #expect(limits?["w_mbytes_per_sec"]?.intValue == 7)

        // Saved right after the bdev's create, so load_config replays it.
        let config = try daemon.call("framework_get_config", ["name": "bdev"]).arrayValue ?? []
        let methods = config.compactMap { $0["method"]?.stringValue }
        let create = try #require(methods.firstIndex(of: "bdev_null_create"))
        #expect(methods.indices.contains(create + 1) && methods[create + 1] == "bdev_set_qos_limit")
        #expect(config[create + 1]["params"]?["rw_ios_per_sec"]?.intValue == 20000)
        #expect(config[create + 1]["params"]?["name"]?.stringValue == "Q0")
        #expect(methods.filter { $0 == "bdev_set_qos_limit" }.count == 1)

        // The CLI with rpc.py's argument forms; 0 removes a limit.
        let ctl = try runCommand(DaemonProcess.ctlPath, [
            "-s", daemon.rpcSocket, "bdev_set_qos_limit", "Q0", "--rw-ios-per-sec", "0", "--rw-mbytes-per-sec", "0",
            "--w-mbytes-per-sec", "0",
        ])
        #expect(ctl.status == 0, "\(ctl.output)")
        let cleared = try daemon.call("bdev_get_bdevs", ["name": "Q0"]).arrayValue?.first?["assigned_rate_limits"]
        #expect(cleared?["rw_ios_per_sec"]?.intValue == 0)
        #expect(cleared?["w_mbytes_per_sec"]?.intValue == 0)
        let after = try daemon.call("framework_get_config", ["name": "bdev"]).arrayValue ?? []
        #expect(!after.contains { $0["method"]?.stringValue == "bdev_set_qos_limit" })
        #expect(daemon.stop() == 0)
    }

    // MARK: Enforcement

    @Test func iopsAndBandwidthLimitsHold() throws {
        let daemon = try Self.daemonWithTwoControllers()
        defer { daemon.stop(); daemon.cleanUp() }

        try Self.setLimit(daemon, "Q0", ["rw_ios_per_sec": 5000])
        let iops = try #require(Self.runBench(daemon, "vhost.0")["iops"]?.doubleValue)
        print("QoS rw_ios_per_sec 5000: achieved \(String(format: "%.1f", iops)) IOPS (\(String(format: "%+.2f", (iops / 5000 - 1) * 100)) %)")
        #expect(Self.within(iops, 5000, 0.05), "\(iops) IOPS against 5000")

        // 20 MiB/s with 64 KiB requests (the bench reports decimal MB/s).
        try Self.setLimit(daemon, "Q0", ["rw_ios_per_sec": 0, "rw_mbytes_per_sec": 20])
        let mbps = try #require(Self.runBench(daemon, "vhost.0", bs: 65536)["mbps"]?.doubleValue)
        let limit = 20.0 * 1_048_576 / 1e6
        print("QoS rw_mbytes_per_sec 20: achieved \(String(format: "%.3f", mbps)) MB/s of \(String(format: "%.3f", limit)) (\(String(format: "%+.2f", (mbps / limit - 1) * 100)) %)")
        #expect(Self.within(mbps, limit, 0.05), "\(mbps) MB/s against \(limit)")
        #expect(daemon.stop() == 0)
    }

    /// One limit shared by queues on two reactors (the buckets sit behind a
    /// mutex; a held queue resumes on its own reactor).
    @Test(.enabled(if: ProcessInfo.processInfo.activeProcessorCount >= 2, "needs two CPUs for two reactors"))
    func limitHoldsAcrossReactors() throws {
        let daemon = try DaemonProcess(cpumask: "0x3", extraArguments: ["--log-level", "info"])
        defer { daemon.stop(); daemon.cleanUp() }
        try daemon.call("bdev_null_create", ["name": "Q0", "num_blocks": 262_144, "block_size": 512])
        try daemon.call("vhost_create_blk_controller", ["ctrlr": "vhost.0", "dev_name": "Q0"])
        try Self.setLimit(daemon, "Q0", ["rw_ios_per_sec": 5000])
        let report = try Self.runBench(daemon, "vhost.0", queues: 2)
        let iops = try #require(report["iops"]?.doubleValue)
        print("QoS rw_ios_per_sec 5000 over 2 queues on 2 reactors: achieved \(String(format: "%.1f", iops)) IOPS (\(String(format: "%+.2f", (iops / 5000 - 1) * 100)) %)")
        #expect(Self.within(iops, 5000, 0.05), "\(iops) IOPS against 5000")
        #expect(daemon.stop() == 0)
    }

    @Test func liveChangeTakesEffect() throws {
        let daemon = try Self.daemonWithTwoControllers()
        defer { daemon.stop(); daemon.cleanUp() }
        try Self.setLimit(daemon, "Q0", ["rw_ios_per_sec": 2000])
        // One bench run; the rate is read from bdev_get_iostat in two windows.
        let run = Process()
        run.executableURL = URL(fileURLWithPath: Self.bench)
        run.arguments = ["--socket", daemon.socketDirectory + "/vhost.0", "--iodepth", "16", "--rw", "randread",
                         "--runtime", "5", "--warmup", "0"]
        run.standardOutput = FileHandle.nullDevice
        try run.run()
        defer { if run.isRunning { run.terminate() }; run.waitUntilExit() }
        func rate(over seconds: Double) throws -> Double {
            func ops() throws -> Double {
                let r = try daemon.call("bdev_get_iostat", ["name": "Q0"])["bdevs"]?.arrayValue?.first
                return Double(r?["num_read_ops"]?.intValue ?? 0)
            }
            let a = try ops(), start = Date()
            usleep(UInt32(seconds * 1e6))
            return (try ops() - a) / Date().timeIntervalSince(start)
        }
        usleep(700_000)
        let slow = try rate(over: 1.5)
        try Self.setLimit(daemon, "Q0", ["rw_ios_per_sec": 6000])
        usleep(200_000)
        let fast = try rate(over: 1.5)
        run.waitUntilExit()
        print("QoS live change: 2000 -> \(String(format: "%.0f", slow)) IOPS; 6000 -> \(String(format: "%.0f", fast)) IOPS")
        #expect(run.terminationStatus == 0)
        #expect(Self.within(slow, 2000, 0.10), "\(slow) IOPS against 2000")
        #expect(Self.within(fast, 6000, 0.10), "\(fast) IOPS against 6000")
        #expect(daemon.stop() == 0)
    }

    @Test func unlimitedNeighbourKeepsItsRate() throws {
        let daemon = try Self.daemonWithTwoControllers()
        defer { daemon.stop(); daemon.cleanUp() }
        let solo = try #require(Self.runBench(daemon, "vhost.1")["iops"]?.doubleValue)

        try Self.setLimit(daemon, "Q0", ["rw_ios_per_sec": 3000])
        let limited = Process()
        limited.executableURL = URL(fileURLWithPath: Self.bench)
        limited.arguments = ["--socket", daemon.socketDirectory + "/vhost.0", "--iodepth", "64", "--rw", "randread",
                             "--runtime", "4", "--warmup", "0"]
        limited.standardOutput = FileHandle.nullDevice
        try limited.run()
        defer { if limited.isRunning { limited.terminate() }; limited.waitUntilExit() }
        usleep(300_000)
        let shared = try #require(Self.runBench(daemon, "vhost.1")["iops"]?.doubleValue)
        limited.waitUntilExit()
        let ratio = shared / max(solo, 1)
        print("QoS neighbour: solo \(String(format: "%.0f", solo)) IOPS, beside a limited controller \(String(format: "%.0f", shared)) IOPS (\(String(format: "%.0f", ratio * 100)) %)")
        #expect(limited.terminationStatus == 0)
        #expect(ratio >= 0.5, "unlimited neighbour kept \(ratio * 100) % of its solo IOPS")
        #expect(daemon.stop() == 0)
    }
}
