import DaemonTestSupport
import Foundation
import JSONRPC
import Testing
import VhostUserFrontend

/// Many controllers in one daemon (issue 8, "Density"): what an idle
/// controller costs in CPU, memory, threads and descriptors, how long
/// creating and deleting one takes, and how RPC latency holds up at that
/// size. N comes from VHOST_BLKD_DENSITY_N (default 200; 1000 by hand).
/// Only what cannot flake is asserted; the figures are printed.
@Suite("Density: many controllers in one daemon", .serialized)
struct DensityTests {
    static var count: Int {
        ProcessInfo.processInfo.environment["VHOST_BLKD_DENSITY_N"].flatMap { Int($0) }.map { max(1, $0) } ?? 200
    }
    static let connected = 4

    @Test func manyIdleControllers() throws {
        let n = Self.count
        let cpumask = ProcessInfo.processInfo.activeProcessorCount >= 2 ? "0x3" : "0x1"
        // Debug logging writes a line per create; measure at the operator's level.
        let daemon = try DaemonProcess(cpumask: cpumask, extraArguments: ["--log-level", "info"])
        defer { daemon.stop(); daemon.cleanUp() }
        let client = try daemon.client()
        let pid = daemon.pid
        let before = try ProcSample(pid: pid)

        var bdevCreate: [Double] = [], ctrlrCreate: [Double] = []
        for i in 0..<n {
            bdevCreate.append(try Self.timed {
                _ = try client.call("bdev_null_create", params: [
                    "name": .string("N\(i)"), "num_blocks": 2048, "block_size": 512,
                ])
            })
            ctrlrCreate.append(try Self.timed {
                _ = try client.call("vhost_create_blk_controller", params: ["ctrlr": .string("d\(i)"), "dev_name": .string("N\(i)")])
            })
        }
        let created = try ProcSample(pid: pid)

        // A few controllers with a connected frontend and started queues.
        var memories: [FrontendMemory] = []
        defer { for m in memories { m.close() } }
        var frontends: [VhostUserFrontend] = []
        defer { for f in frontends { f.close() } }
        for i in 0..<min(Self.connected, n) {
            let memory = try FrontendMemory(size: 4 << 20)
            memories.append(memory)
            let f = try VhostUserFrontend(socketPath: daemon.socketDirectory + "/d\(i)", memory: memory)
            frontends.append(f)
            try f.connect()
            try f.start(queueCount: 2, queueSize: 128)
            #expect(try f.read(sector: 0, count: 8).status == BlkWire.statusOK)
        }
        usleep(200_000)
        let connectedSample = try ProcSample(pid: pid)

        // Idle CPU over 5 s.
        let idleStart = try ProcSample(pid: pid)
        let wall = Date()
        sleep(5)
        let idleEnd = try ProcSample(pid: pid)
        let idleSeconds = Date().timeIntervalSince(wall)
        let idleCPU = (idleEnd.cpuSeconds - idleStart.cpuSeconds) / idleSeconds

        // RPC latency at this size.
        let version = try Self.latencies(200) { _ = try client.call("spdk_get_version", params: nil) }
        let iostat = try Self.latencies(n >= 1000 ? 40 : 100) {
            let r = try client.call("bdev_get_iostat", params: nil)
            #expect(r["bdevs"]?.arrayValue?.count == n)
        }
        let listing = try Self.latencies(n >= 1000 ? 40 : 100) {
            let r = try client.call("vhost_get_controllers", params: nil)
            #expect(r.arrayValue?.count == n)
        }
        let bdevs = try Self.latencies(n >= 1000 ? 40 : 100) {
            let r = try client.call("bdev_get_bdevs", params: nil)
            #expect(r.arrayValue?.count == n)
        }
        let one = try Self.latencies(200) { _ = try client.call("vhost_get_controllers", params: ["name": "d0"]) }
        // Pages of 100 (vhost-blkd's offset/limit): what an operator's tool asks for at this size.
        var pageStart = 0
        let pagedListing = try Self.latencies(100) {
            let r = try client.call("vhost_get_controllers", params: ["offset": .int(Int64(pageStart)), "limit": 100])
            #expect(r.arrayValue?.count == min(100, n - pageStart))
            pageStart = (pageStart + 100) % n
        }
        pageStart = 0
        let pagedIostat = try Self.latencies(100) {
            let r = try client.call("bdev_get_iostat", params: ["offset": .int(Int64(pageStart)), "limit": 100])
            #expect(r["bdevs"]?.arrayValue?.count == min(100, n - pageStart))
            pageStart = (pageStart + 100) % n
        }

        for f in frontends { f.close() }
        frontends.removeAll()
        usleep(100_000)
        var ctrlrDelete: [Double] = [], bdevDelete: [Double] = []
        for i in 0..<n {
            ctrlrDelete.append(try Self.timed { _ = try client.call("vhost_delete_controller", params: ["ctrlr": .string("d\(i)")]) })
            bdevDelete.append(try Self.timed { _ = try client.call("bdev_null_delete", params: ["name": .string("N\(i)")]) })
        }
        let deleted = try ProcSample(pid: pid)

        let rssPerController = Double(created.rssBytes - before.rssBytes) / Double(n)
        print("""
            density N=\(n) cpumask=\(cpumask) (debug build unless VHOST_BLKD_BIN says otherwise)
              idle CPU over \(String(format: "%.1f", idleSeconds)) s: \(String(format: "%.3f", idleCPU * 100)) % of a core \
            (\(Self.connected) controllers connected, 2 queues each)
              RSS: before \(before.rssBytes >> 10) KiB, after create \(created.rssBytes >> 10) KiB, \
            connected \(connectedSample.rssBytes >> 10) KiB, after delete \(deleted.rssBytes >> 10) KiB; \
            per controller \(String(format: "%.1f", rssPerController / 1024)) KiB
              threads: \(before.threads) -> \(created.threads) -> \(connectedSample.threads); \
            fds: \(before.fds) -> \(created.fds) -> \(connectedSample.fds) -> \(deleted.fds)
              create (ms): bdev \(Self.meanMax(bdevCreate)), controller \(Self.meanMax(ctrlrCreate)) slowest at \(ctrlrCreate.indices.sorted { ctrlrCreate[$0] > ctrlrCreate[$1] }.prefix(4))
              delete (ms): controller \(Self.meanMax(ctrlrDelete)), bdev \(Self.meanMax(bdevDelete))
              RPC p50/p99 (ms): spdk_get_version \(Self.percentiles(version)), bdev_get_iostat \(Self.percentiles(iostat)), \
            vhost_get_controllers \(Self.percentiles(listing)), bdev_get_bdevs \(Self.percentiles(bdevs)), \
            vhost_get_controllers(name) \(Self.percentiles(one)), \
            vhost_get_controllers(limit 100) \(Self.percentiles(pagedListing)), bdev_get_iostat(limit 100) \(Self.percentiles(pagedIostat))
            """)
        #expect(idleCPU < 0.05, "idle CPU \(idleCPU * 100) % of a core")
        #expect(rssPerController < 1024 * 1024, "RSS per idle controller \(rssPerController) bytes")
        // An idle controller holds its listening socket and nothing else: no thread, no eventfd.
        #expect(created.threads == before.threads)
        #expect(created.fds - before.fds <= n + 8, "fds \(before.fds) -> \(created.fds) for \(n) controllers")
        #expect(deleted.fds <= before.fds + 8, "fds after deleting everything: \(deleted.fds), before: \(before.fds)")
        #expect(daemon.stop() == 0)
    }

    // MARK: Helpers

    static func timed(_ body: () throws -> Void) rethrows -> Double {
        let start = DispatchTime.now().uptimeNanoseconds
        try body()
        return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
    }

    static func latencies(_ count: Int, _ body: () throws -> Void) rethrows -> [Double] {
        try (0..<count).map { _ in try timed(body) }.sorted()
    }

    static func meanMax(_ ms: [Double]) -> String {
        guard let max = ms.max() else { return "-" }
        return String(format: "mean %.3f max %.3f", ms.reduce(0, +) / Double(ms.count), max)
    }

    static func percentiles(_ sorted: [Double]) -> String {
        guard !sorted.isEmpty else { return "-" }
        func at(_ p: Double) -> Double { sorted[min(sorted.count - 1, Int((Double(sorted.count) * p).rounded(.up)) - 1)] }
        return String(format: "%.2f/%.2f", at(0.5), at(0.99))
    }
}

/// One look at a process in /proc: CPU time, RSS, threads, descriptors.
struct ProcSample {
    let cpuSeconds: Double
    let rssBytes: Int
    let threads: Int
    let fds: Int

    init(pid: Int32) throws {
        let stat = try String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
        // Fields after the parenthesised command: state is field 3; utime 14, stime 15.
        guard let close = stat.lastIndex(of: ")") else { throw ProcError.unreadable }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 13, let utime = Double(fields[11]), let stime = Double(fields[12]) else { throw ProcError.unreadable }
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        cpuSeconds = (utime + stime) / ticks
        let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        func field(_ name: String) -> Int {
            for line in status.split(separator: "\n") where line.hasPrefix(name + ":") {
                return Int(line.dropFirst(name.count + 1).trimmingCharacters(in: .whitespaces).split(separator: " ").first ?? "") ?? 0
            }
            return 0
        }
        rssBytes = field("VmRSS") * 1024
        threads = field("Threads")
        fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? 0
    }

    enum ProcError: Error { case unreadable }
}
