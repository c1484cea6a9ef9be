import ArgumentParser
import Glibc
import JSONRPC
import VhostBlkAPI

/// `vhost-blkctl iostat [NAME...] [-i SECONDS] [-c COUNT] [--json]`: one
/// line per bdev and interval, like `iostat -x`: rates from the difference
/// of two `bdev_get_iostat` samples, p99 from `bdev_get_latency` (since the
/// counters started), in-flight from `vhost_get_controllers`.
struct Iostat: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "iostat", abstract: "Live I/O statistics per bdev, one line per device and interval (like iostat -x).")
    @Argument(help: "Bdevs to show (default: all)") var names: [String] = []
    @Option(name: [.customShort("i"), .long], help: "Seconds between reports") var interval: Double = 1
    @Option(name: [.customShort("c"), .long], help: "Number of reports (default: until interrupted)") var count: Int?
    @Flag(help: "One JSON object per report, for scripts") var json = false

    func validate() throws {
        guard interval.isFinite, interval > 0, interval <= 86400 else { throw ValidationError("-i must be between 0 and 86400 seconds") }
        if let count, count < 1 { throw ValidationError("-c must be at least 1") }
    }

    func run() throws {
        let client: RPCClient
        do {
            client = try RPCClient(path: globalOptions.socket, timeout: globalOptions.timeout)
        } catch {
            printError(error.description)
            throw ExitCode(1)
        }
        let source = IostatSource(client: client, names: names)
        var previous = try source.sample()
        var reports = 0
        while count.map({ reports < $0 }) ?? true {
            var pause = timespec(tv_sec: Int(interval), tv_nsec: Int((interval - interval.rounded(.down)) * 1e9))
            var left = timespec()
            while nanosleep(&pause, &left) != 0 && errno == EINTR { pause = left }
            let current = try source.sample()
            let rows = IostatRow.rows(from: previous, to: current)
            print(json ? IostatRow.json(rows, ticks: current.ticks) : IostatRow.table(rows))
            fflush(nil)  // every stream: a pipe sees each report at once
            previous = current
            reports += 1
        }
    }
}

/// One sample of every selected bdev's counters.
struct IostatSample {
    struct Device {
        var readOps: Int64 = 0, readBytes: Int64 = 0, readTicks: Int64 = 0
        var writeOps: Int64 = 0, writeBytes: Int64 = 0, writeTicks: Int64 = 0
        var errors: Int64 = 0
        var p99Nanoseconds: Int64 = 0
        var inFlight: Int64 = 0
        /// Queues hold writes under the `pause` error policy (docs/OPERATIONS.md, "Full disks").
        var paused = false
    }
    var ticks: Int64 = 0
    var tickRate: Int64 = 1_000_000_000
    var devices: [(name: String, device: Device)] = []
}

/// Reads the three RPCs an iostat line needs.
struct IostatSource {
    let client: RPCClient
    let names: [String]

    func call<P: RPCMethodParams>(_ params: P) throws -> JSON {
        do {
            return try client.call(P.method, params: params.json)
        } catch {
            printError(error.description)
            throw ExitCode(1)
        }
    }

    func sample() throws -> IostatSample {
        let iostat = try call(BdevGetIostatParams(names: names.isEmpty ? nil : names))
        let latency = try call(BdevGetLatencyParams())
        let controllers = try call(VhostGetControllersParams())
        var inFlight: [String: Int64] = [:]
        for controller in controllers.arrayValue ?? [] {
            guard let bdev = controller["backend_specific"]?["block"]?["bdev"]?.stringValue else { continue }
            let queues = controller["sessions"]?.arrayValue?.flatMap { $0["queues"]?.arrayValue ?? [] } ?? []
            inFlight[bdev, default: 0] += queues.reduce(0) { $0 + ($1["in_flight"]?.intValue ?? 0) }
        }
        var p99: [String: Int64] = [:]
        for bdev in latency["bdevs"]?.arrayValue ?? [] {
            guard let name = bdev["name"]?.stringValue else { continue }
            p99[name] = max(bdev["read"]?["p99"]?.intValue ?? 0, bdev["write"]?["p99"]?.intValue ?? 0)
        }
        var sample = IostatSample()
        sample.ticks = iostat["ticks"]?.intValue ?? 0
        sample.tickRate = max(1, iostat["tick_rate"]?.intValue ?? 1_000_000_000)
        for bdev in iostat["bdevs"]?.arrayValue ?? [] {
            guard let name = bdev["name"]?.stringValue else { continue }
            func value(_ key: String) -> Int64 { bdev[key]?.intValue ?? 0 }
            var d = IostatSample.Device()
            d.readOps = value("num_read_ops")
            d.readBytes = value("bytes_read")
            d.readTicks = value("read_latency_ticks")
            d.writeOps = value("num_write_ops")
            d.writeBytes = value("bytes_written")
            d.writeTicks = value("write_latency_ticks")
            d.errors = bdev["io_error"]?.objectValue?.pairs.reduce(0) { $0 + ($1.value.intValue ?? 0) } ?? 0
            d.p99Nanoseconds = p99[name] ?? 0
            d.inFlight = inFlight[name] ?? 0
            d.paused = bdev["io_paused"]?.boolValue ?? false
            sample.devices.append((name, d))
        }
        return sample
    }
}

/// One device's line of a report.
struct IostatRow {
    var name: String
    var readsPerSecond = 0.0, writesPerSecond = 0.0
    var readMBPerSecond = 0.0, writeMBPerSecond = 0.0
    var readAwaitMs = 0.0, writeAwaitMs = 0.0, p99Ms = 0.0
    var inFlight: Int64 = 0
    var errors: Int64 = 0
    var paused = false

    static func rows(from a: IostatSample, to b: IostatSample) -> [IostatRow] {
        let seconds = max(Double(b.ticks - a.ticks) / Double(b.tickRate), 1e-9)
        let before = Dictionary(a.devices.map { ($0.name, $0.device) }, uniquingKeysWith: { first, _ in first })
        return b.devices.map { name, now in
            let then = before[name] ?? IostatSample.Device()
            let reads = Double(max(0, now.readOps - then.readOps)), writes = Double(max(0, now.writeOps - then.writeOps))
            let msPerTick = 1000 / Double(b.tickRate)
            var row = IostatRow(name: name)
            row.readsPerSecond = reads / seconds
            row.writesPerSecond = writes / seconds
            row.readMBPerSecond = Double(max(0, now.readBytes - then.readBytes)) / seconds / 1_048_576
            row.writeMBPerSecond = Double(max(0, now.writeBytes - then.writeBytes)) / seconds / 1_048_576
            row.readAwaitMs = reads == 0 ? 0 : Double(now.readTicks - then.readTicks) * msPerTick / reads
            row.writeAwaitMs = writes == 0 ? 0 : Double(now.writeTicks - then.writeTicks) * msPerTick / writes
            row.p99Ms = Double(now.p99Nanoseconds) / 1e6
            row.inFlight = now.inFlight
            row.errors = max(0, now.errors - then.errors)
            row.paused = now.paused
            return row
        }
    }

    static let header = ["Device", "r/s", "w/s", "rMB/s", "wMB/s", "r_await", "w_await", "p99_ms", "inflight", "errors"]

    static func table(_ rows: [IostatRow]) -> String {
        var lines = [line(header)]
        for r in rows {
            lines.append(line([
                r.name, fixed(r.readsPerSecond), fixed(r.writesPerSecond), fixed(r.readMBPerSecond), fixed(r.writeMBPerSecond),
                fixed(r.readAwaitMs), fixed(r.writeAwaitMs), fixed(r.p99Ms), String(r.inFlight), String(r.errors),
            ]) + (r.paused ? "  PAUSED (full disk: bdev_resume_io)" : ""))
        }
        return lines.joined(separator: "\n") + "\n"
    }

    static func json(_ rows: [IostatRow], ticks: Int64) -> String {
        let devices: [JSON] = rows.map { r in
            [
                "name": .string(r.name), "r_s": .double(r.readsPerSecond), "w_s": .double(r.writesPerSecond),
                "rMB_s": .double(r.readMBPerSecond), "wMB_s": .double(r.writeMBPerSecond),
                "r_await_ms": .double(r.readAwaitMs), "w_await_ms": .double(r.writeAwaitMs), "p99_ms": .double(r.p99Ms),
                "in_flight": .int(r.inFlight), "errors": .int(r.errors), "paused": .bool(r.paused),
            ]
        }
        return JSON.object(["ticks": .int(ticks), "devices": .array(devices)]).encoded()
    }

    /// The name left-aligned in 16 columns, numbers right-aligned in 9.
    private static func line(_ fields: [String]) -> String {
        guard let first = fields.first else { return "" }
        let name = first.count >= 16 ? first + " " : first + String(repeating: " ", count: 16 - first.count)
        return name + fields.dropFirst().map { $0.count >= 9 ? " " + $0 : String(repeating: " ", count: 9 - $0.count) + $0 }.joined()
    }

    /// Two decimals, without Foundation.
    static func fixed(_ value: Double) -> String {
        guard value.isFinite else { return "0.00" }
        let hundredths = Int64((value * 100).rounded())
        let whole = hundredths / 100, fraction = abs(hundredths % 100)
        return "\(whole).\(fraction < 10 ? "0" : "")\(fraction)"
    }
}
