import DaemonTestSupport
import Foundation
import Glibc
import JSONRPC
import Posix
import Testing
import VhostUserFrontend
import Virtio

/// Per-device statistics (issue 4): bdev_get_iostat, bdev_get_latency, the
/// queue detail of vhost_get_controllers, framework_get_reactors,
/// thread_get_stats and `vhost-blkctl iostat`, against the real daemon.
@Suite("Statistics against the running daemon")
struct StatsTests {
    /// Monotonic nanoseconds, to bound the daemon's latencies from outside.
    static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    /// What the frontend did and saw, per operation.
    struct Measured {
        var ops = 0, bytes = 0
        var sumNanos: UInt64 = 0, maxNanos: UInt64 = 0
        mutating func add(bytes: Int, nanos: UInt64) {
            ops += 1
            self.bytes += bytes
            sumNanos += nanos
            maxNanos = max(maxNanos, nanos)
        }
    }

    static func timed(_ body: () throws -> BlkCompletion) throws -> (BlkCompletion, UInt64) {
        let start = now()
        let completion = try body()
        return (completion, now() - start)
    }

    static func int(_ json: JSON?, _ key: String) -> Int64 { json?[key]?.intValue ?? -1 }

    static func iostat(_ daemon: DaemonProcess, _ name: String) throws -> JSON? {
        try daemon.call("bdev_get_iostat", ["name": .string(name)])["bdevs"]?.arrayValue?.first
    }

    /// Waits until `ctrlr` has no session (the daemon saw the disconnect).
    static func waitForNoSession(_ daemon: DaemonProcess, _ ctrlr: String) throws {
        for _ in 0..<200 {
            let c = try daemon.call("vhost_get_controllers", ["name": .string(ctrlr)])
            if c.arrayValue?.first?["sessions"]?.arrayValue?.isEmpty == true { return }
            usleep(10_000)
        }
        Issue.record("session of \(ctrlr) did not end")
    }

    @Test func countersMatchWhatTheFrontendDid() throws {
        let daemon = try DataPathTests.daemonServing(.ioUring, .uring, bdev: "D0")
        defer { daemon.stop(); daemon.cleanUp() }
        try DataPathTests.withLogOnError(daemon) { () throws in try exercise(daemon) }
    }

    func exercise(_ daemon: DaemonProcess) throws {
        let memory = try FrontendMemory(size: 16 << 20)
        defer { memory.close() }
        var f = try DataPathTests.attach(daemon, "vhost.0", memory: memory, queues: 2)
        var reads = Measured(), writes = Measured(), flushes = Measured(), unmaps = Measured(), zeroes = Measured()
        var perQueueRequests = [0, 0]

        // Reads of two sizes on queue 0, writes on queue 1.
        for i in 0..<5 {
            let (c, t) = try Self.timed { try f.read(queue: 0, sector: UInt64(i) * 8, count: 8) }
            #expect(c.status == BlkWire.statusOK)
            reads.add(bytes: 4096, nanos: t)
        }
        for i in 0..<3 {
            let (c, t) = try Self.timed { try f.read(queue: 0, sector: 100 + UInt64(i), count: 1) }
            #expect(c.status == BlkWire.statusOK)
            reads.add(bytes: 512, nanos: t)
        }
        perQueueRequests[0] += 8
        for i in 0..<4 {
            let data = DataPathTests.pattern(8192, seed: i)
            let (c, t) = try Self.timed { try f.write(queue: 1, sector: 1000 + UInt64(i) * 16, data: data) }
            #expect(c.status == BlkWire.statusOK)
            writes.add(bytes: 8192, nanos: t)
        }
        perQueueRequests[1] += 4
        for _ in 0..<2 {
            let (c, t) = try Self.timed { try f.flush(queue: 1) }
            #expect(c.status == BlkWire.statusOK)
            flushes.add(bytes: 0, nanos: t)
        }
        perQueueRequests[1] += 2
        let (d, dt) = try Self.timed { try f.discard(queue: 0, segments: [BlkSegment(sector: 2048, sectors: 8)]) }
        #expect(d.status == BlkWire.statusOK)
        unmaps.add(bytes: 4096, nanos: dt)
        let (z, zt) = try Self.timed { try f.writeZeroes(queue: 0, segments: [BlkSegment(sector: 4096, sectors: 16)]) }
        #expect(z.status == BlkWire.statusOK)
        zeroes.add(bytes: 8192, nanos: zt)
        perQueueRequests[0] += 2
        // GET_ID: a request, not I/O. Errors: beyond capacity (IOERR) and an unknown type (UNSUPP).
        #expect(try f.getID(queue: 0).status == BlkWire.statusOK)
        #expect(try f.read(queue: 0, sector: DataPathTests.sectors, count: 1).status == BlkWire.statusIOErr)
        #expect(try f.write(queue: 1, sector: DataPathTests.sectors - 1, data: DataPathTests.pattern(1024, seed: 9)).status == BlkWire.statusIOErr)
        #expect(try f.request(queue: 0, type: 99, sector: 0, dataOut: [], dataInLength: 0).status == BlkWire.statusUnsupported)
        perQueueRequests[0] += 3
        perQueueRequests[1] += 1

        // Exact counts, SPDK's member names.
        let s = try #require(try Self.iostat(daemon, "D0"))
        #expect(Self.int(s, "num_read_ops") == 8)
        #expect(Self.int(s, "bytes_read") == Int64(reads.bytes))
        #expect(Self.int(s, "num_write_ops") == 4)
        #expect(Self.int(s, "bytes_written") == 32768)
        #expect(Self.int(s, "num_unmap_ops") == 1)
        #expect(Self.int(s, "bytes_unmapped") == 4096)
        #expect(Self.int(s, "num_flush_ops") == 2)
        #expect(Self.int(s, "num_write_zeroes_ops") == 1)
        #expect(Self.int(s, "bytes_write_zeroes") == 8192)
        #expect(s["io_error"] == ["failed": 2, "unsupported": 1])
        #expect(Self.int(s, "num_copy_ops") == 0)

        // Latencies lie within what the frontend measured around each request.
        for (op, m) in [("read", reads), ("write", writes), ("unmap", unmaps), ("flush", flushes), ("write_zeroes", zeroes)] {
            let sum = Self.int(s, "\(op)_latency_ticks"), mx = Self.int(s, "max_\(op)_latency_ticks"), mn = Self.int(s, "min_\(op)_latency_ticks")
            #expect(sum >= 0 && UInt64(sum) <= m.sumNanos, "\(op) sum \(sum) vs frontend \(m.sumNanos)")
            #expect(mx >= 0 && UInt64(mx) <= m.maxNanos, "\(op) max \(mx) vs frontend \(m.maxNanos)")
            #expect(mn >= 0 && mn <= mx)
        }
        #expect(Self.int(s, "read_latency_ticks") > 0, "file reads take time")

        // Percentiles: ordered, bounded by the exact extremes.
        let latency = try daemon.call("bdev_get_latency", ["name": "D0"])
        #expect(latency["unit"] == "ns")
        let read = try #require(latency["bdevs"]?.arrayValue?.first?["read"])
        #expect(Self.int(read, "count") == 8)
        #expect(Self.int(read, "max") == Self.int(s, "max_read_latency_ticks"))
        #expect(Self.int(read, "min") == Self.int(s, "min_read_latency_ticks"))
        let p = ["p50", "p90", "p99", "p99_9"].map { Self.int(read, $0) }
        #expect(p == p.sorted() && Self.int(read, "min") <= p[0] && p[3] <= Self.int(read, "max"))
        #expect(Self.int(latency["bdevs"]?.arrayValue?.first?["flush"], "count") == 2)

        // per_channel: one entry per virtqueue, summing to the totals.
        let perChannel = try daemon.call("bdev_get_iostat", ["name": "D0", "per_channel": true])
        #expect(perChannel["name"] == "D0")
        let channels = try #require(perChannel["channels"]?.arrayValue)
        #expect(channels.count == 2)
        for key in ["num_read_ops", "bytes_read", "num_write_ops", "bytes_written", "num_unmap_ops", "num_flush_ops", "read_latency_ticks"] {
            #expect(channels.map { Self.int($0, key) }.reduce(0, +) == Self.int(s, key), "\(key)")
        }
        #expect(channels.map { Self.int($0, "queue") } == [0, 1])
        #expect(Self.int(channels[0], "num_read_ops") == 8 && Self.int(channels[1], "num_write_ops") == 4)

        // vhost_get_controllers: per-queue requests, kicks, interrupts, batches.
        let controller = try daemon.call("vhost_get_controllers", ["name": "vhost.0"]).arrayValue?.first
        let queues = try #require(controller?["sessions"]?.arrayValue?.first?["queues"]?.arrayValue)
        #expect(queues.count == 2)
        for (i, q) in queues.enumerated() {
            #expect(Self.int(q, "requests") == Int64(perQueueRequests[i]), "queue \(i)")
            #expect(Self.int(q, "in_flight") == 0)
            #expect(Self.int(q, "size") == 128)
            #expect(Self.int(q, "kicks") >= 1 && Self.int(q, "kicks") <= Int64(perQueueRequests[i]))
            #expect(Self.int(q, "interrupts_sent") + Self.int(q, "interrupts_suppressed") >= 1)
            #expect((q["mean_batch_size"]?.doubleValue ?? 0) >= 1)
            #expect(Self.int(q, "batches") >= 1 && Self.int(q, "batches") <= Self.int(q, "requests"), "queue \(i) pop batches")
        }

        // A disconnect and a reconnect keep the totals; new I/O adds to them.
        f.close()
        try Self.waitForNoSession(daemon, "vhost.0")
        let afterClose = try #require(try Self.iostat(daemon, "D0"))
        #expect(Self.int(afterClose, "num_read_ops") == 8)
        #expect(Self.int(afterClose, "num_write_ops") == 4)
        #expect(afterClose["io_error"] == ["failed": 2, "unsupported": 1])
        #expect(Self.int(afterClose, "read_latency_ticks") == Self.int(s, "read_latency_ticks"))
        f = try DataPathTests.attach(daemon, "vhost.0", memory: memory, queues: 1)
        defer { f.close() }
        #expect(try f.read(queue: 0, sector: 0, count: 2).status == BlkWire.statusOK)
        let afterReconnect = try #require(try Self.iostat(daemon, "D0"))
        #expect(Self.int(afterReconnect, "num_read_ops") == 9)
        #expect(Self.int(afterReconnect, "bytes_read") == Int64(reads.bytes + 1024))
        #expect(Self.int(try daemon.call("bdev_get_latency", ["name": "D0"])["bdevs"]?.arrayValue?.first?["read"], "count") == 9)

        // reset_mode / bdev_reset_iostat.
        let beforeReset = try daemon.call("bdev_get_iostat", ["name": "D0", "reset_mode": "all"])
        #expect(Self.int(beforeReset["bdevs"]?.arrayValue?.first, "num_read_ops") == 9)
        let zeroed = try #require(try Self.iostat(daemon, "D0"))
        #expect(Self.int(zeroed, "num_read_ops") == 0 && Self.int(zeroed, "bytes_written") == 0)
        #expect(zeroed["io_error"] == .object(JSONObject()))
        #expect(try f.read(queue: 0, sector: 0, count: 1).status == BlkWire.statusOK)
        #expect(try daemon.call("bdev_reset_iostat", ["name": "D0"]) == true)
        #expect(Self.int(try Self.iostat(daemon, "D0"), "num_read_ops") == 0)

        // Errors: an unknown bdev is -19; per_channel needs one name.
        #expect(throws: (any Error).self) { try daemon.call("bdev_get_iostat", ["name": "nope"]) }
        #expect(throws: (any Error).self) { try daemon.call("bdev_get_iostat", ["per_channel": true]) }
        #expect(throws: (any Error).self) { try daemon.call("bdev_get_iostat", ["reset_mode": "sometimes"]) }
    }

    /// Latency is wall-clock time from pop to completion for every backend:
    /// requests served inline (RAM, tmpfs) complete in the reactor iteration
    /// that popped them, and once all reported 0 ns.
    @Test(arguments: [DataPathTests.Backend.malloc, .tmpfs, .uring])
    func latencyIsMeasuredForEveryBackend(backend: DataPathTests.Backend) throws {
        let daemon = try DataPathTests.daemonServing(.ioUring, backend, bdev: "D0")
        defer { daemon.stop(); daemon.cleanUp() }
        let memory = try FrontendMemory(size: 16 << 20)
        defer { memory.close() }
        let f = try DataPathTests.attach(daemon, "vhost.0", memory: memory, queues: 1)
        defer { f.close() }
        for i in 0..<50 { #expect(try DataPathTests.roundTrip(f, sector: UInt64(i) * 8, seed: i)) }
        let s = try Self.iostat(daemon, "D0")
        for op in ["read", "write"] {
            #expect(Self.int(s, "num_\(op)_ops") == 50)
            #expect(Self.int(s, "\(op)_latency_ticks") > 0, "\(backend) \(op)s take time")
            #expect(Self.int(s, "max_\(op)_latency_ticks") > 0 && Self.int(s, "min_\(op)_latency_ticks") <= Self.int(s, "max_\(op)_latency_ticks"))
        }
        let latency = try daemon.call("bdev_get_latency", ["name": "D0"])
        let read = try #require(latency["bdevs"]?.arrayValue?.first?["read"])
        #expect(Self.int(read, "count") == 50)
        #expect(Self.int(read, "p50") > 0 && Self.int(read, "p99") >= Self.int(read, "p50"), "\(read)")
    }

    @Test func reactorsAndThreads() throws {
        let daemon = try DataPathTests.daemonServing(.ioUring, .malloc, bdev: "M0")
        defer { daemon.stop(); daemon.cleanUp() }
        let memory = try FrontendMemory(size: 16 << 20)
        defer { memory.close() }
        let f = try DataPathTests.attach(daemon, "vhost.0", memory: memory, queues: 2)
        defer { f.close() }
        usleep(20_000)
        let reactors = try daemon.call("framework_get_reactors")
        #expect(reactors["tick_rate"] == 1_000_000_000)
        #expect(Self.int(reactors, "pid") == Int64(daemon.pid))
        let r = try #require(reactors["reactors"]?.arrayValue?.first)
        #expect(Self.int(r, "lcore") == 0)
        #expect(Self.int(r, "tid") > 0)
        #expect(Self.int(r, "idle") > 0, "an idle reactor's wait counts once settled")
        #expect(Self.int(r, "busy") >= 0)
        #expect(r["lw_threads"]?.arrayValue?.first?["name"] == "reactor_0")
        #expect(r["controllers"] == [["ctrlr": "vhost.0", "queues": [0, 1]]])
        let threads = try daemon.call("thread_get_stats")
        let t = try #require(threads["threads"]?.arrayValue?.first)
        #expect(t["name"] == "reactor_0" && Self.int(t, "id") == 1 && t["cpumask"] == "0x1")
        #expect(Self.int(t, "idle") >= Self.int(r, "idle"))
    }

    @Test func iostatCommandPrintsATable() throws {
        let daemon = try DataPathTests.daemonServing(.ioUring, .malloc, bdev: "M0")
        defer { daemon.stop(); daemon.cleanUp() }
        let memory = try FrontendMemory(size: 16 << 20)
        defer { memory.close() }
        let f = try DataPathTests.attach(daemon, "vhost.0", memory: memory, queues: 1)
        defer { f.close() }
        // Traffic while iostat samples: writes and one error per loop.
        let ctl = Process()
        ctl.executableURL = URL(fileURLWithPath: DaemonProcess.ctlPath)
        ctl.arguments = ["-s", daemon.rpcSocket, "iostat", "M0", "-i", "0.3", "-c", "2"]
        let pipe = Pipe()
        ctl.standardOutput = pipe
        try ctl.run()
        var writes = 0
        let deadline = Self.now() + 10_000_000_000
        while ctl.isRunning && Self.now() < deadline {
            #expect(try f.write(sector: 0, data: DataPathTests.pattern(4096, seed: writes)).status == BlkWire.statusOK)
            writes += 1
        }
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        ctl.waitUntilExit()
        #expect(ctl.terminationStatus == 0)
        let lines = output.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true).map(String.init) }
        let header = ["Device", "r/s", "w/s", "rMB/s", "wMB/s", "r_await", "w_await", "p99_ms", "inflight", "errors"]
        #expect(lines.filter { $0 == header }.count == 2, "\(output)")
        let rows = lines.filter { $0.first == "M0" }
        #expect(rows.count == 2, "\(output)")
        // The first interval saw writes: w/s > 0, wMB/s consistent with 4 KiB writes, no reads, no errors.
        if let first = rows.first, first.count == header.count {
            let wps = Double(first[2]) ?? 0, wmb = Double(first[4]) ?? -1
            #expect(wps > 0 && Double(first[1]) == 0)
            #expect(abs(wmb - wps * 4096 / 1_048_576) <= 0.02 + wmb * 0.01)
            #expect(first[9] == "0" && first[8] == "0")
        }

        // --json: one object per report.
        let json = try runCommand(DaemonProcess.ctlPath, ["-s", daemon.rpcSocket, "iostat", "-i", "0.1", "-c", "1", "--json"])
        #expect(json.status == 0)
        let report = try JSON.parse(json.output.trimmingCharacters(in: .whitespacesAndNewlines))
        #expect(report["devices"]?.arrayValue?.first?["name"] == "M0")
        #expect(report["devices"]?.arrayValue?.first?["errors"] == 0)

        // The plain RPC subcommands.
        let stat = try runCommand(DaemonProcess.ctlPath, ["-s", daemon.rpcSocket, "bdev_get_iostat", "-b", "M0"])
        #expect(stat.status == 0)
        #expect(Self.int(try JSON.parse(stat.output)["bdevs"]?.arrayValue?.first, "num_write_ops") == Int64(writes))
        let lat = try runCommand(DaemonProcess.ctlPath, ["-s", daemon.rpcSocket, "bdev_get_latency", "-b", "M0"])
        #expect(Self.int(try JSON.parse(lat.output)["bdevs"]?.arrayValue?.first?["write"], "count") == Int64(writes))
        #expect(try runCommand(DaemonProcess.ctlPath, ["-s", daemon.rpcSocket, "bdev_reset_iostat", "-b", "M0"]).status == 0)
        #expect(try runCommand(DaemonProcess.ctlPath, ["-s", daemon.rpcSocket, "framework_get_reactors"]).status == 0)
        #expect(try runCommand(DaemonProcess.ctlPath, ["-s", daemon.rpcSocket, "thread_get_stats"]).status == 0)
    }

    /// GET /metrics over a stream socket; the whole HTTP response.
    static func scrape(_ socket: FileDescriptor) throws -> String {
        defer { socket.close() }
        try socket.writeAll(Array("GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n".utf8))
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = try buffer.withUnsafeMutableBytes { raw in
                Result { () throws(Errno) -> Int in try socket.read(into: raw) }
            }.get()
            if n == 0 { break }
            response += buffer[0..<n]
        }
        return String(decoding: response, as: UTF8.self)
    }

    @Test func metricsEndpointServesPrometheusText() throws {
        let base = URL(fileURLWithPath: "/tmp").appendingPathComponent("vbm-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: base, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: base) }
        let path = base.appendingPathComponent("metrics.sock").path
        let daemon = try DaemonProcess(extraArguments: ["--metrics", "unix:" + path])
        defer { daemon.stop(); daemon.cleanUp() }
        try DataPathTests.createBdev(daemon, .malloc, name: "M0")
        try DataPathTests.createController(daemon, "vhost.0", bdev: "M0")
        let memory = try FrontendMemory(size: 16 << 20)
        defer { memory.close() }
        let f = try DataPathTests.attach(daemon, "vhost.0", memory: memory, queues: 1)
        defer { f.close() }
        for i in 0..<7 { #expect(try f.write(sector: UInt64(i), data: DataPathTests.pattern(512, seed: i)).status == BlkWire.statusOK) }
        #expect(try f.read(sector: DataPathTests.sectors, count: 1).status == BlkWire.statusIOErr)

        let response = try Self.scrape(try UnixSocket.connect(path: path))
        #expect(response.hasPrefix("HTTP/1.0 200 OK\r\n"), "\(response.prefix(200))")
        #expect(response.contains("Content-Type: text/plain; version=0.0.4"))
        let lines = Set(response.split(separator: "\n").map(String.init))
        #expect(lines.contains("# TYPE vhost_blkd_bdev_ops_total counter"))
        #expect(lines.contains("vhost_blkd_bdev_ops_total{bdev=\"M0\",op=\"write\"} 7"))
        #expect(lines.contains("vhost_blkd_bdev_bytes_total{bdev=\"M0\",op=\"write\"} 3584"))
        #expect(lines.contains("vhost_blkd_bdev_errors_total{bdev=\"M0\",status=\"failed\"} 1"))
        #expect(lines.contains("vhost_blkd_bdev_latency_seconds_count{bdev=\"M0\",op=\"write\"} 7"))
        #expect(lines.contains("vhost_blkd_bdev_latency_seconds_bucket{bdev=\"M0\",op=\"write\",le=\"+Inf\"} 7"))
        #expect(lines.contains("vhost_blkd_queue_requests_total{bdev=\"M0\",ctrlr=\"vhost.0\",queue=\"0\"} 8"))
        #expect(lines.contains("vhost_blkd_queue_in_flight{bdev=\"M0\",ctrlr=\"vhost.0\",queue=\"0\"} 0"))
        #expect(lines.contains { $0.hasPrefix("vhost_blkd_reactor_idle_seconds_total{reactor=\"0\",lcore=\"0\"} ") })
        // Each family is declared once, its samples in one group.
        var seen: [String] = []
        for line in response.split(separator: "\n") where !line.hasPrefix("#") && line.contains("{") {
            var family = String(line.prefix { $0 != "{" })
            for suffix in ["_bucket", "_sum", "_count"] where family.hasSuffix(suffix) { family = String(family.dropLast(suffix.count)) }
            if seen.last != family {
                #expect(!seen.contains(family), "\(family) is split")
                seen.append(family)
            }
        }
        // Anything but GET /metrics is 404.
        let other = try UnixSocket.connect(path: path)
        defer { other.close() }
        try other.writeAll(Array("POST /x HTTP/1.0\r\n\r\n".utf8))
        var buffer = [UInt8](repeating: 0, count: 256)
        let n = try buffer.withUnsafeMutableBytes { raw in Result { () throws(Errno) -> Int in try other.read(into: raw) } }.get()
        #expect(String(decoding: buffer[0..<n], as: UTF8.self).hasPrefix("HTTP/1.0 404"))
    }

    @Test func metricsOptionIsValidated() throws {
        let result = try runCommand(DaemonProcess.daemonPath, ["--metrics", "example.com:80", "-r", "/tmp/none.sock"])
        #expect(result.status != 0)
        #expect(result.output.contains("--metrics"))
    }
}
