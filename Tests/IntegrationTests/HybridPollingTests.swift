import DaemonTestSupport
import Foundation
import JSONRPC
import Testing

/// Hybrid polling (VirtqueueServer): a file-backed queue at depth leaves the
/// reactor's polling and is served on kicks, while a RAM queue on the same
/// reactor keeps being polled. The file queue must still be woken by every
/// guest kick when its requests are handled inside the RAM queue's polling
/// phases (it may not leave its notifications suppressed): both loads run to
/// the end with every request completed, on one reactor.
@Suite("Hybrid polling on a shared reactor", .serialized)
struct HybridPollingTests {
    static let bench = DaemonProcess.binaryDirectory.appendingPathComponent("vhost-blk-bench").path

    @Test func fileQueueAtDepthBesideAPolledRAMQueue() throws {
        let daemon = try DaemonProcess(cpumask: "0x1")
        defer { daemon.stop(); daemon.cleanUp() }
        let image = daemon.directory.appendingPathComponent("file.img").path
        #expect(FileManager.default.createFile(atPath: image, contents: nil))
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: image))
        try handle.truncate(atOffset: 64 << 20)
        try handle.close()
        try daemon.call("bdev_uring_create", ["filename": .string(image), "name": "F0"])
        try daemon.call("bdev_malloc_create", ["num_blocks": 131_072, "block_size": 512, "name": "M0"])
        try daemon.call("vhost_create_blk_controller", ["ctrlr": "file", "dev_name": "F0"])
        try daemon.call("vhost_create_blk_controller", ["ctrlr": "ram", "dev_name": "M0"])

        // The RAM client at depth 1 keeps the reactor in polling phases; the
        // file client at depth 32 on two queues makes its queues leave them.
        func start(_ ctrlr: String, iodepth: Int, queues: Int) throws -> (Process, Pipe) {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: Self.bench)
            p.arguments = [
                "--socket", daemon.socketDirectory + "/" + ctrlr, "--queues", "\(queues)", "--iodepth", "\(iodepth)",
                "--bs", "4096", "--rw", "randrw", "--runtime", "3", "--warmup", "0.5", "--json",
            ]
            let pipe = Pipe()
            p.standardOutput = pipe
            p.standardError = pipe
            try p.run()
            return (p, pipe)
        }
        let ram = try start("ram", iodepth: 1, queues: 1)
        let file = try start("file", iodepth: 32, queues: 2)
        for (name, (process, pipe)) in [("file", file), ("ram", ram)] {
            let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            // A queue whose kicks go unheard stalls: the bench exits non-zero after 5 s without progress.
            #expect(process.terminationStatus == 0, "\(name): \(output)")
            let line = output.split(separator: "\n").last { $0.hasPrefix("{") }.map(String.init) ?? ""
            let report = try JSON.parse(line)
            #expect(report["errors"]?.intValue == 0, "\(name): \(output)")
            #expect((report["ios"]?.intValue ?? 0) > 1000, "\(name) moved data: \(output)")
        }
        #expect(daemon.stop() == 0)
    }
}
