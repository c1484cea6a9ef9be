import DaemonTestSupport
import Foundation
import JSONRPC
import Testing

/// More requests in flight than the engines hold: queues must stop popping,
/// resume on completions, and never stall (the 2012 vhost-blk review's flow
/// control lesson). Driven by `vhost-blk-bench`, which also smoke-tests it.
@Suite("Flow control under a full engine")
struct FlowControlTests {
    /// `--tmpfs-io engine`: the file is on tmpfs, whose I/O would otherwise not
    /// go through an engine at all (`inline` rows: the same load served inline).
    @Test(arguments: [
        ("io_uring", "bdev_uring_create"), ("io_uring", "bdev_aio_create"), ("thread-pool", "bdev_uring_create"),
        ("inline", "bdev_uring_create"),
    ])
    func twoDeepQueuesOverfillTheEngine(engine: String, method: String) throws {
        let arguments = engine == "inline" ? [] : ["--engine", engine, "--tmpfs-io", "engine"]
        let daemon = try DaemonProcess(extraArguments: arguments)
        defer { daemon.stop(); daemon.cleanUp() }
        let image = "/dev/shm/vbd-flow-\(UUID().uuidString.prefix(8)).img"
        try runCommand("/usr/bin/truncate", ["-s", "256M", image])
        defer { try? FileManager.default.removeItem(atPath: image) }
        try daemon.call(method, ["filename": .string(image), "name": "F0"])
        try daemon.call("vhost_create_blk_controller", ["ctrlr": "vhost.0", "dev_name": "F0"])

        // 2 x 400 in flight against engines of 512 (io_uring) and 256 (thread pool) slots.
        let bench = DaemonProcess.binaryDirectory.appendingPathComponent("vhost-blk-bench").path
        let (status, output) = try runCommand(bench, [
            "--socket", daemon.socketDirectory + "/vhost.0", "--queues", "2", "--iodepth", "400",
            "--queue-size", "2048", "--rw", "randrw", "--runtime", "1", "--warmup", "0",
        ])
        #expect(status == 0, "\(output)\n--- daemon log ---\n\(daemon.log.suffix(2000))")
        #expect(output.contains("errors 0"), "\(output)")
        #expect(!daemon.log.contains("error"), "\(daemon.log.suffix(2000))")
        #expect(daemon.stop() == 0)
    }

    /// An aio bdev (the thread pool beside an io_uring primary) at depth 1, where
    /// the reactor's polling phases end between most requests: a request that
    /// the end of a phase popped went to the pool's queue but was never handed
    /// to its workers, and the queue stalled (3 runs of 4 before the fix).
    @Test func threadPoolQueueAtDepthOneNeverStalls() throws {
        let daemon = try DaemonProcess(cpumask: "0x1")
        defer { daemon.stop(); daemon.cleanUp() }
        let image = daemon.directory.appendingPathComponent("pool.img").path
        try runCommand("/usr/bin/truncate", ["-s", "64M", image])
        try daemon.call("bdev_aio_create", ["filename": .string(image), "name": "A0"])
        try daemon.call("vhost_create_blk_controller", ["ctrlr": "vhost.0", "dev_name": "A0"])
        let bench = DaemonProcess.binaryDirectory.appendingPathComponent("vhost-blk-bench").path
        for round in 0..<3 {
            let (status, output) = try runCommand(bench, [
                "--socket", daemon.socketDirectory + "/vhost.0", "--iodepth", "1", "--rw", "randrw",
                "--runtime", "1", "--warmup", "0",
            ])
            #expect(status == 0, "round \(round): \(output)\n--- daemon log ---\n\(daemon.log.suffix(2000))")
            #expect(output.contains("errors 0"), "round \(round): \(output)")
        }
        #expect(daemon.stop() == 0)
    }
}
