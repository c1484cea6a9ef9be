import DaemonTestSupport
import Foundation
import JSONRPC
import Testing

/// A real Linux guest (QEMU 7.2, TCG) on packed virtqueues (virtio 1.2 §2.8,
/// VIRTIO_F_RING_PACKED, bit 34): `-device vhost-user-blk-pci,...,packed=on`
/// on controllers created with SPDK's `packed_ring` (docs/PROTOCOL-NOTES.md,
/// "Packed virtqueues"). The guest's driver negotiates bit 34 and runs
/// verified fio on two packed queues, across daemon restarts (SIGTERM, kill -9) and a
/// live migration between two daemons.
@Suite("Guests on packed rings", .serialized, .enabled(if: E2EEnvironment.isEnabled, E2EEnvironment.skipComment))
struct PackedGuestTests {
    /// VIRTIO_F_RING_PACKED.
    static let packedBit = 34

    /// The disk `ctrlr` of a guest on `daemon`, 2 queues, with QEMU's `packed=on`.
    static func disk(_ daemon: DaemonProcess, _ ctrlr: String, reconnectSeconds: Int? = nil) -> GuestDisk {
        GuestDisk(
            socketPath: daemon.socketDirectory + "/" + ctrlr, numQueues: 2, reconnectSeconds: reconnectSeconds,
            deviceProperties: ["packed=on"])
    }

    /// Waits (up to `timeout`) until controller `ctrlr` has a session with
    /// both queues running, and returns the features it negotiated.
    static func sessionFeatures(_ daemon: DaemonProcess, _ ctrlr: String, timeout: Duration = .seconds(60)) throws -> [String] {
        let deadline = ContinuousClock.now + timeout
        while true {
            let list = try daemon.call("vhost_get_controllers", ["name": .string(ctrlr)])
            let sessions = list.arrayValue?.first?["sessions"]?.arrayValue ?? []
            if let session = sessions.first(where: { $0["max_queues"]?.intValue == 2 }) {
                return (session["features"]?.arrayValue ?? []).compactMap(\.stringValue)
            }
            if ContinuousClock.now >= deadline {
                throw E2EError.timeout("no session with 2 queues on \(ctrlr): \(list)")
            }
            usleep(100_000)
        }
    }

    /// (a) With `packed=on`, a controller made with `packed_ring` gives the
    /// guest bit 34 and fio verifies on its two packed queues; one made
    /// without it (the second disk) gives the guest a split ring: QEMU keeps
    /// `packed=on` only where the back end offers the bit.
    @Test func fioVerifiesOnTwoPackedQueues() throws {
        try E2EEnvironment.requireReady()
        let daemon = try DaemonProcess(cpumask: "0x1")
        defer { daemon.stop(); daemon.cleanUp() }
        let sizeMiB = 128
        for (index, packed) in [true, false].enumerated() {
            try daemon.call("bdev_malloc_create", ["num_blocks": .int(Int64(sizeMiB) * 2048), "block_size": 512, "name": .string("disk\(index)")])
            try daemon.call("vhost_create_blk_controller", [
                "ctrlr": .string("vhost.\(index)"), "dev_name": .string("disk\(index)"), "packed_ring": .bool(packed),
            ])
        }
        let script = GuestScript.diskCheck(sectors: UInt64(sizeMiB) * 2048, serial: "vhost.0", fio: nil)
            .waitForDisk("vdb")
            .expectFeatureBit(Self.packedBit, true, disk: "vda")
            .expectFeatureBit(Self.packedBit, false, disk: "vdb")
            .expectFile("/sys/block/vda/mq/1/cpu_list", equals: "1")
            .expectFile("/sys/block/vdb/mq/1/cpu_list", equals: "1")
            .ready("fio")
            .runFio(FioJob())
            .runFio(FioJob(name: "split", device: "/dev/vdb", size: "8M"))

        let work = try E2EEnvironment.makeWorkDirectory("packed")
        defer { E2EEnvironment.removeWorkDirectory(work) }
        let vm = try GuestVM(
            name: "packed", script: script, disks: [Self.disk(daemon, "vhost.0"), Self.disk(daemon, "vhost.1")],
            workDirectory: work)
        try vm.start()
        defer { vm.kill() }
        try vm.waitForConsole("E2E-READY: fio", timeout: .seconds(180))
        // The daemon's side of the same negotiation, while the guest runs fio.
        #expect(try Self.sessionFeatures(daemon, "vhost.0").contains("RING_PACKED"))
        #expect(try !Self.sessionFeatures(daemon, "vhost.1").contains("RING_PACKED"))

        let result = try vm.waitForExit(timeout: .seconds(240))
        print(result.console.split(whereSeparator: \.isNewline).filter { $0.contains("feature bit") || $0.contains("err=") }
            .joined(separator: "\n"))
        #expect(result.succeeded, "\(result.summary)\n--- daemon log ---\n\(daemon.log.suffix(3000))")
        #expect(result.console.contains("E2E-OK: vda feature bit 34 = 1"))
        #expect(result.console.contains("E2E-OK: vdb feature bit 34 = 0"))
        #expect(RestartGuestTests.count("E2E-OK: fio passed", in: result.console) == 2)
        #expect(!daemon.log.contains("broken"), "\(daemon.log.suffix(3000))")
        #expect(daemon.stop() == 0)
    }

    /// (b) The daemon is restarted while the guest has requests in flight
    /// on its packed queues, by SIGTERM (it completes them before it exits)
    /// or by kill -9 (they are resubmitted by the next daemon), and QEMU
    /// reconnects (`reconnect=1`): fio finishes with a clean verify.
    ///
    /// Either way QEMU 7.2 cannot tell the restarted daemon where a packed
    /// queue stopped: its GET_VRING_BASE fails once the back end has gone
    /// ("vhost VQ 0 ring restore failed"), and for a packed ring it then keeps
    /// the positions of the session's start (`virtio_queue_packed_restore_last_avail_idx`
    /// does nothing: a packed ring has no used index in guest memory to read
    /// back, virtio 1.2 §2.8). The positions come from the packed inflight
    /// region (vhost-user spec, "Inflight I/O tracking"; `PackedInflightQueue`).
    @Test(arguments: [false, true])
    func restartUnderLoad(crash: Bool) throws {
        try E2EEnvironment.requireReady()
        try restartOnce(crash: crash)
    }

    func restartOnce(crash: Bool) throws {
        let directory = URL(fileURLWithPath: "/tmp").appendingPathComponent("vbd-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: directory) }
        let arguments = ["--config", directory.appendingPathComponent("vhost-blkd.json").path, "--persist"]
        var daemon = try DaemonProcess(cpumask: "0x1", extraArguments: arguments, directory: directory)
        defer { daemon.stop() }
        let image = directory.appendingPathComponent("disk0.img").path
        try runCommand("/usr/bin/truncate", ["-s", "256M", image])
        try daemon.call("bdev_uring_create", ["filename": .string(image), "name": "disk0"])
        try daemon.call("vhost_create_blk_controller", ["ctrlr": "vhost.0", "dev_name": "disk0", "packed_ring": true])

        var job = FioJob()
        job.name = crash ? "across-kill" : "across-sigterm"
        job.size = "120M"
        job.ioDepth = 32
        job.blockSizes = "16k-256k"
        let script = GuestScript()
            .waitForDisk("vda")
            .expectFeatureBit(Self.packedBit, true)
            .startFio(job).ready("restart").waitForFio(job)

        let work = try E2EEnvironment.makeWorkDirectory("packed-restart")
        defer { E2EEnvironment.removeWorkDirectory(work) }
        let vm = try GuestVM(
            name: "packed-restart", script: script, disks: [Self.disk(daemon, "vhost.0", reconnectSeconds: 1)],
            workDirectory: work)
        try vm.start()
        defer { vm.kill() }

        try vm.waitForConsole("E2E-READY: restart", timeout: .seconds(180))
        #expect(try Self.sessionFeatures(daemon, "vhost.0").contains("RING_PACKED"))
        if crash {
            daemon.crash()
        } else {
            #expect(daemon.stop() == 0)
        }
        daemon = try DaemonProcess(cpumask: "0x1", extraArguments: arguments, directory: directory)
        // QEMU reconnects and starts both queues packed again.
        #expect(try Self.sessionFeatures(daemon, "vhost.0").contains("RING_PACKED"))
        // fio had 32 requests queued when the daemon stopped: the restarted one
        // must serve some within a minute, or the queues resumed at the wrong slot.
        let deadline = ContinuousClock.now + .seconds(60)
        var served: Int64 = 0
        while served == 0, vm.isRunning, ContinuousClock.now < deadline {
            let bdev = try daemon.call("bdev_get_iostat", ["name": "disk0"])["bdevs"]?.arrayValue?.first
            served = (bdev?["num_read_ops"]?.intValue ?? 0) + (bdev?["num_write_ops"]?.intValue ?? 0)
            if served == 0 { usleep(200_000) }
        }
        guard served > 0 || !vm.isRunning else {
            let starts = daemon.log.split(whereSeparator: \.isNewline).filter { $0.contains("queue started") }
            throw E2EError.failed("""
                the restarted daemon served no request in 60 s
                --- queue starts (frontend_base: the positions QEMU sent) ---
                \(starts.joined(separator: "\n"))
                --- qemu log ---
                \(GuestVM.tail(vm.qemuLog()))
                """)
        }

        let result = try vm.waitForExit(timeout: .seconds(300))
        print(result.console.split(whereSeparator: \.isNewline).filter { $0.contains("err=") || $0.contains("verify") }
            .prefix(6).joined(separator: "\n"))
        #expect(result.succeeded, "\(result.summary)\n--- daemon log ---\n\(daemon.log.suffix(4000))")
        #expect(RestartGuestTests.count("E2E-OK: fio passed", in: result.console) == 1)
        #expect(!daemon.log.contains("broken"), "\(daemon.log.suffix(3000))")
        let recovered = daemon.log.split(whereSeparator: \.isNewline).filter { $0.contains("recovered from the inflight region") }
        print("packed restart (\(crash ? "kill -9" : "SIGTERM")): \(recovered.count) queue recoveries logged; \(recovered.first ?? "")")
        #expect(!recovered.isEmpty, "QEMU's stale packed positions were not replaced by the region's")
        #expect(daemon.stop() == 0)
    }

    /// (c) Live migration between two daemons (`MigrationGuestTests`) with
    /// packed rings on both: the guest's verified fio rounds run on across
    /// the switch-over and finish clean on the destination, which is then
    /// restarted under them (its queues resume from the inflight region).
    @Test func migrateUnderVerifiedLoad() throws {
        try E2EEnvironment.requireReady()
        try MigrationGuestTests().migrateRetryingQEMUCrashes(packed: true, restartDestination: true)
    }
}
