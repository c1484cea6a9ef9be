import DaemonTestSupport
import Foundation
import JSONRPC
import Testing
import VhostUserFrontend

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

    /// A ring of 32768 entries with 2000 requests published at once, more
    /// than a queue's request slots (1024 by default; 16 with
    /// `--max-requests-per-queue 16`): a queue whose slots are all taken
    /// stops popping and resumes as each completes, on a file through the
    /// io_uring engine and on RAM. Every write is read back and compared.
    @Test(arguments: [
        (DataPathTests.Backend.tmpfs, 1024), (.tmpfs, 16), (.malloc, 1024), (.malloc, 16),
    ])
    func moreRequestsInTheRingThanSlots(backend: DataPathTests.Backend, slots: Int) throws {
        var arguments = ["--tmpfs-io", "engine"]
        if slots != 1024 { arguments += ["--max-requests-per-queue", "\(slots)"] }
        let daemon = try DaemonProcess(extraArguments: arguments)
        defer { daemon.stop(); daemon.cleanUp() }
        let requests = 2000
        if backend == .malloc {
            try DataPathTests.createBdev(daemon, .malloc, name: "D0", sectors: UInt64(requests) * 8)
        } else {
            // On tmpfs, but through io_uring (`--tmpfs-io engine`): completions come later, as from a disk.
            let image = "/dev/shm/vbd-slots-\(UUID().uuidString.prefix(8)).img"
            try runCommand("/usr/bin/truncate", ["-s", "\(requests * 4096)", image])
            defer { try? FileManager.default.removeItem(atPath: image) }
            try daemon.call("bdev_uring_create", ["filename": .string(image), "name": "D0"])
        }
        try DataPathTests.createController(daemon, "vhost.0", bdev: "D0")
        let memory = try FrontendMemory(size: 32 << 20)
        defer { memory.close() }
        let f = try VhostUserFrontend(socketPath: daemon.socketDirectory + "/vhost.0", memory: memory)
        defer { f.close() }
        try f.connect()
        try f.start(queueCount: 1, queueSize: 32768)
        let q = try f.driverQueue(0)

        /// Publishes `requests` 4 KiB requests of `type` at once, collects them all; returns their data buffers.
        func batch(_ type: UInt32, fill: ((Int) -> [UInt8])?) throws -> [GuestBuffer] {
            var data: [GuestBuffer] = [], statuses: [GuestBuffer] = [], heads: [UInt16: Int] = [:]
            for i in 0..<requests {
                let header = try memory.allocate(16, alignment: 16)
                header.write(BlkWire.header(type: type, sector: UInt64(i) * 8))
                let buffer = try memory.allocate(4096, alignment: 4096)
                if let fill { buffer.write(fill(i)) }
                let status = try memory.allocate(1, alignment: 1)
                status.pointer.storeBytes(of: 0xff, as: UInt8.self)
                let head = try q.addChain([
                    ChainBuffer(header, writable: false), ChainBuffer(buffer, writable: fill == nil),
                    ChainBuffer(status, writable: true),
                ], owning: [header])
                heads[head] = i
                data.append(buffer)
                statuses.append(status)
            }
            q.publishAndKick(force: true)
            var done = 0
            while done < requests {
                let used = try q.waitUsed(timeout: .seconds(20))
                #expect(heads.removeValue(forKey: UInt16(truncatingIfNeeded: used.id)) != nil, "used id \(used.id)")
                done += 1
            }
            let failed = statuses.filter { $0.pointer.load(as: UInt8.self) != BlkWire.statusOK }.count
            #expect(failed == 0, "\(failed) of \(requests) requests failed")
            statuses.forEach(memory.release)
            return data
        }
        let pattern = { (i: Int) in (0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ i &* 13 &+ ($0 >> 8)) } }
        try batch(BlkWire.typeOut, fill: pattern).forEach(memory.release)
        let read = try batch(BlkWire.typeIn, fill: nil)
        let wrong = read.indices.filter { read[$0].read() != pattern($0) }
        #expect(wrong.isEmpty, "\(wrong.count) sectors read back other data, first \(wrong.first ?? -1)")
        read.forEach(memory.release)
        #expect(!daemon.log.contains("error"), "\(daemon.log.suffix(2000))")
    }
}
