import DaemonTestSupport
import Foundation
import JSONRPC
import Testing

/// A real Linux guest (QEMU 7.2, TCG) whose virtio_blk driver does verified
/// fio I/O on controllers the real daemon serves, made over JSON-RPC.
@Suite("Guests on vhost-blkd", .serialized, .enabled(if: E2EEnvironment.isEnabled, E2EEnvironment.skipComment))
struct VhostBlkdGuestTests {
    enum Backend: String, CaseIterable, Sendable {
        /// `tmpfsFile`: a `uring` bdev on /dev/shm, served inline.
        case uringFile, aioFile, loopDevice, malloc, tmpfsFile
    }

    /// Creates the bdev `disk0` of `sizeMiB` on `backend`; returns a cleanup closure.
    func makeBdev(_ backend: Backend, daemon: DaemonProcess, sizeMiB: Int) throws -> () -> Void {
        let image = daemon.directory.appendingPathComponent("disk0.img").path
        switch backend {
        case .uringFile, .aioFile:
            try runCommand("/usr/bin/truncate", ["-s", "\(sizeMiB)M", image])
            let method = backend == .uringFile ? "bdev_uring_create" : "bdev_aio_create"
            try daemon.call(method, ["filename": .string(image), "name": "disk0"])
            return {}
        case .loopDevice:
            try runCommand("/usr/bin/truncate", ["-s", "\(sizeMiB)M", image])
            let (status, output) = try runCommand("/usr/sbin/losetup", ["-f", "--show", image])
            guard status == 0 else { throw E2EError.failed("losetup failed: \(output)") }
            let device = output.trimmingCharacters(in: .whitespacesAndNewlines)
            try daemon.call("bdev_uring_create", ["filename": .string(device), "name": "disk0"])
            return { _ = try? runCommand("/usr/sbin/losetup", ["-d", device]) }
        case .malloc:
            try daemon.call("bdev_malloc_create", ["num_blocks": .int(Int64(sizeMiB) * 2048), "block_size": 512, "name": "disk0"])
            return {}
        case .tmpfsFile:
            let shm = "/dev/shm/vbd-e2e-\(daemon.directory.lastPathComponent).img"
            try runCommand("/usr/bin/truncate", ["-s", "\(sizeMiB)M", shm])
            defer { try? FileManager.default.removeItem(atPath: shm) }  // the daemon keeps it open
            try daemon.call("bdev_uring_create", ["filename": .string(shm), "name": "disk0"])
            let inline = try daemon.call("bdev_get_bdevs", ["name": "disk0"]).arrayValue?.first?["driver_specific"]?["uring"]?["inline_io"]
            guard inline == .bool(true) else { throw E2EError.failed("tmpfs bdev not served inline: \(String(describing: inline))") }
            return {}
        }
    }

    /// Boots a guest with 2 queues on controller `vhost.0` and runs `script`.
    func boot(_ daemon: DaemonProcess, script: GuestScript, label: String, noReboot: Bool = true) throws -> GuestResult {
        let work = try E2EEnvironment.makeWorkDirectory(label)
        defer { E2EEnvironment.removeWorkDirectory(work) }
        let disk = GuestDisk(socketPath: daemon.socketDirectory + "/vhost.0", numQueues: 2)
        let vm = try GuestVM(name: label, script: script, disks: [disk], workDirectory: work, noReboot: noReboot)
        try vm.start()
        return try vm.waitForExit(timeout: .seconds(240))
    }

    @Test(arguments: [
        (Backend.uringFile, "io_uring"), (Backend.loopDevice, "io_uring"), (Backend.malloc, "io_uring"),
        (Backend.uringFile, "thread-pool"), (Backend.aioFile, "io_uring"), (Backend.tmpfsFile, "io_uring"),
    ])
    func fioVerifies(backend: Backend, engine: String) throws {
        try E2EEnvironment.requireReady()
        let daemon = try DaemonProcess(cpumask: "0x1", extraArguments: ["--engine", engine])
        defer { daemon.stop(); daemon.cleanUp() }
        let sizeMiB = 128
        let cleanup = try makeBdev(backend, daemon: daemon, sizeMiB: sizeMiB)
        defer { cleanup() }
        try daemon.call("vhost_create_blk_controller", ["ctrlr": "vhost.0", "dev_name": "disk0"])
        let script = GuestScript.diskCheck(sectors: UInt64(sizeMiB) * 2048, serial: "vhost.0", fio: FioJob())
            .expectFile("/sys/block/vda/mq/1/cpu_list", equals: "1")
            .expectFile("/sys/block/vda/queue/max_segment_size", equals: "65536")
            .expectFile("/sys/block/vda/queue/max_segments", equals: "256")
        let result = try boot(daemon, script: script, label: "\(backend.rawValue)-\(engine)")
        #expect(result.succeeded, "\(result.summary)\n--- daemon log ---\n\(daemon.log.suffix(3000))")
        #expect(result.console.contains("err=0") || result.console.contains("err= 0"), "fio reported errors")
        #expect(daemon.isRunning)
        if engine == "thread-pool" {
            #expect(daemon.log.contains("thread-pool engine forced"))
        }
        #expect(daemon.stop() == 0)
    }

    @Test func rebootThenVerifyAgain() throws {
        try E2EEnvironment.requireReady()
        let daemon = try DaemonProcess(cpumask: "0x1")
        defer { daemon.stop(); daemon.cleanUp() }
        let cleanup = try makeBdev(.uringFile, daemon: daemon, sizeMiB: 64)
        defer { cleanup() }
        try daemon.call("vhost_create_blk_controller", ["ctrlr": "vhost.0", "dev_name": "disk0"])
        let script = GuestScript().waitForDisk("vda").rebootThenVerify(FioJob())
        let result = try boot(daemon, script: script, label: "reboot", noReboot: false)
        #expect(result.succeeded, "\(result.summary)\n--- daemon log ---\n\(daemon.log.suffix(3000))")
        #expect(result.boots == 2)
        #expect(result.console.contains("E2E-OK: data verified after reboot"))
        #expect(daemon.stop() == 0)
    }
    /// A boot that degrades (issue 24): the config's second disk sits on an
    /// image that is not there (an NFS share not yet mounted); the daemon
    /// starts anyway and a guest does verified I/O on the first disk, while
    /// framework_get_failed_config names the second.
    @Test func guestOnTheGoodControllerOfADegradedBoot() throws {
        try E2EEnvironment.requireReady()
        let directory = URL(fileURLWithPath: "/tmp").appendingPathComponent("vbd-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let configPath = directory.appendingPathComponent("config.json").path
        let missing = directory.appendingPathComponent("nfs/vm1.img").path
        let config: JSON = ["subsystems": [
            ["subsystem": "bdev", "config": [
                ["method": "bdev_malloc_create", "params": ["name": "disk0", "num_blocks": 131072, "block_size": 512]],  // 64 MiB
                ["method": "bdev_uring_create", "params": ["name": "disk1", "filename": .string(missing)]],
            ]],
            ["subsystem": "vhost_blk", "config": [
                ["method": "vhost_create_blk_controller", "params": ["ctrlr": "vhost.0", "dev_name": "disk0"]],
                ["method": "vhost_create_blk_controller", "params": ["ctrlr": "vhost.1", "dev_name": "disk1"]],
            ]],
        ]]
        try Data(config.encoded(pretty: true).utf8).write(to: URL(fileURLWithPath: configPath))
        let daemon = try DaemonProcess(cpumask: "0x1", extraArguments: ["--config", configPath, "--persist"], directory: directory)
        defer { daemon.stop(); daemon.cleanUp() }
        let failed = try daemon.call("framework_get_failed_config").arrayValue ?? []
        #expect(failed.compactMap { $0["params"]?["name"]?.stringValue ?? $0["params"]?["ctrlr"]?.stringValue } == ["disk1", "vhost.1"])
        let script = GuestScript.diskCheck(sectors: 64 * 2048, serial: "vhost.0", fio: FioJob(size: "16M"))
        let result = try boot(daemon, script: script, label: "degraded-boot")
        #expect(result.succeeded, "\(result.summary)\n--- daemon log ---\n\(daemon.log.suffix(3000))")
        #expect(daemon.stop() == 0)
    }
}
