import DaemonTestSupport
import Foundation
import JSONRPC
import Testing
import VhostUser
import VhostUserFrontend
import Virtio

/// What the guest was told is durable stays so: flushes, the write-cache
/// switch (CONFIG_WCE, virtio 1.2 §5.2.5.1) and data across a daemon crash.
@Suite("Data integrity against the running daemon")
struct DataIntegrityTests {
    typealias D = DataPathTests

    @Test func guestSwitchesTheWriteCache() throws {
        let daemon = try D.daemonServing(.ioUring, .uring, bdev: "D0")
        defer { daemon.stop(); daemon.cleanUp() }
        try D.withLogOnError(daemon) { () throws in
            let memory = try FrontendMemory(size: 16 << 20)
            defer { memory.close() }
            let f = try D.attach(daemon, "vhost.0", memory: memory)
            defer { f.close() }
            #expect(f.ackedFeatures.contains(.configWCE))
            // Write-back by default: the guest must flush.
            #expect(try f.getConfig(offset: 32, size: 1) == [1])

            try f.setConfig(offset: 32, bytes: [0])
            #expect(try f.getConfig(offset: 32, size: 1) == [0])
            #expect(try D.roundTrip(f, queue: 0, sector: 9, seed: 1))
            #expect(try D.roundTrip(f, queue: 1, sector: 10, seed: 2))
            #expect(daemon.log.contains("write cache to write-through"))

            // Anything but the writeback byte is refused, and changes nothing.
            #expect(throws: FrontendError.self) { try f.setConfig(offset: 0, bytes: [1, 2, 3, 4, 5, 6, 7, 8]) }
            #expect(D.le(try f.getConfig(size: 8), at: 0, as: UInt64.self) == D.sectors)

            try f.setConfig(offset: 32, bytes: [1])
            #expect(try f.getConfig(offset: 32, size: 1) == [1])
            #expect(daemon.log.contains("write cache to write-back"))
            #expect(try D.roundTrip(f, sector: 11, seed: 3))
        }
    }

    /// The guest's write-through choice outlives a daemon restart with
    /// `--persist`: QEMU keeps showing the guest the config it set, so a
    /// daemon that came back write-back would complete writes the guest
    /// believes durable without making them so.
    @Test func writeCacheChoiceSurvivesARestart() throws {
        let directory = URL(fileURLWithPath: "/tmp").appendingPathComponent("vbd-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let configPath = directory.appendingPathComponent("vhost-blkd.json").path
        let arguments = ["--config", configPath, "--persist"]
        let image = directory.appendingPathComponent("disk.img").path
        #expect(FileManager.default.createFile(atPath: image, contents: Data(count: Int(D.sectors) * 512)))

        let daemon = try DaemonProcess(extraArguments: arguments, directory: directory)
        defer { daemon.stop(); daemon.cleanUp() }
        try daemon.call("bdev_uring_create", ["filename": .string(image), "name": "D0", "block_size": 512])
        try daemon.call("vhost_create_blk_controller", ["ctrlr": "vhost.0", "dev_name": "D0"])
        func writeCache(_ d: DaemonProcess) throws -> JSON? {
            try d.call("vhost_get_controllers", ["name": "vhost.0"]).arrayValue?.first?["backend_specific"]?["block"]?["write_cache"]
        }
        #expect(try writeCache(daemon) == .bool(true))
        do {
            let memory = try FrontendMemory(size: 16 << 20)
            defer { memory.close() }
            let f = try D.attach(daemon, "vhost.0", memory: memory)
            defer { f.close() }
            try f.setConfig(offset: 32, bytes: [0])
            #expect(try f.getConfig(offset: 32, size: 1) == [0])
        }
        #expect(try writeCache(daemon) == .bool(false))
        // The guest's change reaches the file shortly after (written off the control loop).
        func savedConfig(within seconds: Int, until done: (String) -> Bool) -> String {
            let deadline = ContinuousClock.now + .seconds(seconds)
            var text = ""
            repeat {
                text = (try? String(contentsOfFile: configPath, encoding: .utf8)) ?? ""
                if done(text) { break }
                usleep(20_000)
            } while ContinuousClock.now < deadline
            return text
        }
        let saved = savedConfig(within: 5) { $0.contains("\"write_cache\": false") }
        #expect(saved.contains("\"write_cache\": false"), "\(saved)")
        #expect(daemon.stop() == 0)

        let restarted = try DaemonProcess(extraArguments: arguments, directory: directory)
        defer { restarted.stop() }
        #expect(try writeCache(restarted) == .bool(false))
        let memory = try FrontendMemory(size: 16 << 20)
        defer { memory.close() }
        let f = try D.attach(restarted, "vhost.0", memory: memory)
        defer { f.close() }
        #expect(try f.getConfig(offset: 32, size: 1) == [0])
        #expect(try D.roundTrip(f, queue: 0, sector: 9, seed: 1))
        // Back to write-back: the saved config no longer carries the key.
        try f.setConfig(offset: 32, bytes: [1])
        let resaved = savedConfig(within: 5) { !$0.contains("write_cache") }
        #expect(!resaved.contains("write_cache"), "\(resaved)")
    }

    /// `write_cache: false` at creation (vhost-blkd's extension): the guest
    /// starts with a write-through disk.
    @Test func controllerCreatedWriteThrough() throws {
        let daemon = try DaemonProcess()
        defer { daemon.stop(); daemon.cleanUp() }
        try daemon.call("bdev_malloc_create", ["num_blocks": 2048, "block_size": 512, "name": "M0"])
        try daemon.call("vhost_create_blk_controller", ["ctrlr": "vhost.0", "dev_name": "M0", "write_cache": false])
        let memory = try FrontendMemory(size: 16 << 20)
        defer { memory.close() }
        let f = try D.attach(daemon, "vhost.0", memory: memory)
        defer { f.close() }
        #expect(try f.getConfig(offset: 32, size: 1) == [0])
        #expect(throws: RPCClientError.self) {
            try daemon.call("vhost_create_blk_controller", ["ctrlr": "vhost.1", "dev_name": "M0", "write_cache": "no"])
        }
    }

    /// A front-end that did not negotiate CONFIG_WCE cannot write the config.
    @Test func writebackIsReadOnlyWithoutConfigWCE() throws {
        let daemon = try D.daemonServing(.ioUring, .malloc, bdev: "M0")
        defer { daemon.stop(); daemon.cleanUp() }
        let memory = try FrontendMemory(size: 16 << 20)
        defer { memory.close() }
        var options = VhostUserFrontend.Options()
        options.wantedFeatures.remove(.configWCE)
        let f = try VhostUserFrontend(socketPath: daemon.socketDirectory + "/vhost.0", memory: memory, options: options)
        defer { f.close() }
        try f.connect()
        try f.start(queueCount: 1)
        #expect(throws: FrontendError.self) { try f.setConfig(offset: 32, bytes: [0]) }
        #expect(try f.getConfig(offset: 32, size: 1) == [1])
        #expect(try D.roundTrip(f, sector: 1, seed: 1))
    }

    /// Data written and flushed before `kill -9` reads back after a restart
    /// from the persisted config, in both cache modes.
    @Test(arguments: [false, true])
    func flushedDataSurvivesACrash(writeThrough: Bool) throws {
        try PersistentDaemonFolder.withDaemonServingD0 { folder, daemon, memory in
            let data = (0..<64).map { D.pattern(4096, seed: $0) }
            do {
                let f = try D.attach(daemon, "vhost.0", memory: memory)
                defer { f.close() }
                if writeThrough { try f.setConfig(offset: 32, bytes: [0]) }
                for (i, block) in data.enumerated() {
                    #expect(try f.write(queue: i % 2, sector: UInt64(i) * 8, data: block).status == BlkWire.statusOK)
                }
                #expect(try f.flush().status == BlkWire.statusOK)
                daemon.crash()
            }
            daemon = try folder.start()
            let f = try D.attach(daemon, "vhost.0", memory: memory)
            defer { f.close() }
            for (i, block) in data.enumerated() {
                let r = try f.read(queue: i % 2, sector: UInt64(i) * 8, count: 8)
                #expect(r.status == BlkWire.statusOK)
                #expect(r.data == block, "block \(i) after the crash")
            }
        }
    }
}
