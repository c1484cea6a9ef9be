import ArgumentParser
import CShims
import Glibc
import Posix
import VhostBlkAPI
import VhostUserFrontend
import Virtio

extension RWPattern: ExpressibleByArgument {}
extension WaitMode: ExpressibleByArgument {}

/// `vhost-blk-bench`: plays the vhost-user front end (as QEMU would) against
/// any vhost-user-blk socket and measures IOPS, latency and the server's CPU
/// cost per I/O. One thread per queue, all pinned to `--cpu`.
@main
struct VhostBlkBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vhost-blk-bench",
        abstract: "Benchmark a vhost-user-blk back end from the host, with no guest.",
        discussion: """
            Guest memory is a memfd; queues are split rings, or packed rings with --packed \
            (VIRTIO_F_RING_PACKED; the back end must offer it), with EVENT_IDX when offered. Each \
            queue is driven by its own thread, which keeps --iodepth requests in flight. Exits 1 if \
            any request completed with a non-OK status or a queue stalled. --version prints the \
            version this build was made from (scripts/version.sh).
            """,
        version: BuildVersion.current.text)

    @Option(help: "The back end's vhost-user socket.") var socket: String
    @Option(help: "Queues to start (one thread each).") var queues = 1
    @Option(help: "Requests in flight per queue.") var iodepth = 32
    @Option(help: "Bytes per request (a multiple of 512).") var bs = 4096
    @Option(help: "randread, randwrite, read, write or randrw (50/50).") var rw: RWPattern = .randread
    @Option(help: "Measured seconds.") var runtime: Double = 5
    @Option(help: "Warm-up seconds before measuring.") var warmup: Double = 1
    @Option(help: "interrupt (sleep on the call eventfd) or poll (spin on the used ring).") var mode: WaitMode = .interrupt
    @Option(help: "Pin every benchmark thread to this CPU.") var cpu: Int?
    @Option(help: "Pin queue i's thread to the i-th of these CPUs (comma-separated, cycling); overrides --cpu for queue threads.")
    var cpus: String?
    @Option(help: "Report this process's CPU time (the server's) consumed while measuring.") var serverPid: Int32?
    @Option(help: "Virtqueue size (a power of two for split rings); default: fits 3 descriptors per request, at least 128.") var queueSize: UInt16?
    @Option(help: "Random seed.") var seed: UInt64 = 1
    @Flag(help: "Print one JSON object instead of a line.") var json = false
    @Flag(help: "Write the whole disk once, sequentially (--bs, --iodepth, --queues), and stop: no warm-up, no time limit. So that later reads read written data (docs/PERFORMANCE.md).")
    var fill = false
    @Flag(help: "Negotiate VIRTIO_F_RING_PACKED and drive packed rings (vhost-blkd: a controller created with packed_ring); the queue size need not be a power of two.")
    var packed = false

    func validate() throws {
        guard (1...256).contains(queues) else { throw ValidationError("--queues must be 1...256") }
        guard (1...32768).contains(iodepth) else { throw ValidationError("--iodepth must be 1...32768") }
        guard bs >= 512, bs % 512 == 0, bs <= 64 << 20 else { throw ValidationError("--bs must be a multiple of 512 up to 64 MiB") }
        guard runtime > 0, runtime <= 86_400 else { throw ValidationError("--runtime must be in (0, 86400] seconds") }
        guard warmup >= 0, warmup <= 3600 else { throw ValidationError("--warmup must be in [0, 3600] seconds") }
        if let cpu { guard (0..<1024).contains(cpu) else { throw ValidationError("--cpu must be 0...1023") } }
        if cpus != nil { guard queueCPUs != nil else { throw ValidationError("--cpus must list CPUs 0...1023, comma-separated") } }
        if let serverPid { guard serverPid > 0 else { throw ValidationError("--server-pid must be positive") } }
        let size = queueSize ?? defaultQueueSize(iodepth: iodepth) ?? 0
        if packed {
            guard size > 0, size <= 32768, Int(size) >= 3 * iodepth else {
                throw ValidationError("queue size must be at least 3 x iodepth (max 32768)")
            }
        } else {
            guard size > 0, size & (size &- 1) == 0, Int(size) >= 3 * iodepth else {
                throw ValidationError("queue size must be a power of two of at least 3 x iodepth (max 32768)")
            }
        }
    }

    /// `--cpus` parsed; nil when absent or malformed.
    var queueCPUs: [Int]? {
        guard let cpus else { return nil }
        let list = cpus.split(separator: ",").map { Int($0.filter { $0 != " " }) }
        guard !list.isEmpty, list.allSatisfy({ $0.map { (0..<1024).contains($0) } ?? false }) else { return nil }
        return list.compactMap { $0 }
    }

    func run() throws {
        let config = BenchConfig(
            socketPath: socket, queues: queues, iodepth: iodepth, blockSize: bs, pattern: fill ? .write : rw,
            runtimeNanos: UInt64(runtime * 1e9), warmupNanos: UInt64(warmup * 1e9), mode: mode, cpu: cpu,
            queueCPUs: queueCPUs ?? [], serverPID: serverPid, queueSize: queueSize ?? defaultQueueSize(iodepth: iodepth) ?? 128, seed: seed,
            fill: fill, packed: packed)
        if let cpu {
            // Returns the error number itself (pthread_setaffinity_np does not set errno).
            let rc = vb_pin_current_thread(Int32(cpu))
            if rc != 0 { throw ValidationError("cannot pin to CPU \(cpu): \(Errno(rc))") }
        }
        let report: BenchReport
        do {
            report = try Benchmark(config: config).run()
        } catch {
            printError("vhost-blk-bench: \(error)")
            throw ExitCode(2)
        }
        if let serverPid, report.serverCPUSeconds == nil {
            printError("vhost-blk-bench: warning: cannot read /proc/\(serverPid)/stat; no server CPU reported")
        }
        print(json ? report.json : report.humanLine)
        if !report.ok {
            if report.errors > 0 { printError("vhost-blk-bench: \(report.errors) requests completed with a non-OK status") }
            if report.ios == 0 { printError("vhost-blk-bench: no I/O completed in the measured window") }
            throw ExitCode(1)
        }
    }
}

func printError(_ s: String) {
    try? FileDescriptor.standardError.writeAll(Array((s + "\n").utf8))
}
