import DaemonTestSupport
import Foundation
import JSONRPC
import Synchronization
import Testing

/// Live migration of a QEMU 7.2 guest between two vhost-blkd daemons that
/// share a backing file, like two hosts sharing storage, while the guest
/// verifies its I/O (vhost-user spec, "Migration": LOG_ALL, LOG_SHMFD,
/// SET_LOG_BASE, the used ring logged, in-flight I/O finished at the stop).
@Suite("Live migration between two daemons", .serialized, .enabled(if: E2EEnvironment.isEnabled, E2EEnvironment.skipComment))
struct MigrationGuestTests {
    @Test func migrateUnderVerifiedLoadThenRestartTheDestination() throws {
        try E2EEnvironment.requireReady()
        let shared = URL(fileURLWithPath: "/tmp").appendingPathComponent("vbd-mig-\(UUID().uuidString.prefix(6))")
        try FileManager.default.createDirectory(at: shared, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: shared) }
        let image = shared.appendingPathComponent("disk.img").path
        try runCommand("/usr/bin/truncate", ["-s", "256M", image])

        let source = try DaemonProcess(cpumask: "0x1")
        defer { source.stop(); source.cleanUp() }
        let destinationDirectory = shared.appendingPathComponent("dst")
        let destinationArguments = ["--config", shared.appendingPathComponent("dst.json").path, "--persist"]
        var destination = try DaemonProcess(cpumask: "0x2", extraArguments: destinationArguments, directory: destinationDirectory)
        defer { destination.stop() }
        for daemon in [source, destination] {
            try daemon.call("bdev_uring_create", ["filename": .string(image), "name": "disk0"])
            try daemon.call("vhost_create_blk_controller", ["ctrlr": "vhost.0", "dev_name": "disk0"])
        }

        // fio with verification, round after round, across the migration and the restart.
        var lines: [String] = []
        for i in 1...Self.rounds {
            var job = FioJob()
            job.name = "round\(i)"
            job.size = "24M"
            job.offset = "\(1 + 24 * ((i - 1) % 8))M"
            lines.append("run_fio \(job.quotedArguments())\necho \"E2E-ROUND: \(i)\"")
        }
        let script = GuestScript()
            .waitForDisk("vda")
            .ready("migrate")
            .appending(lines.joined(separator: "\n"))

        let work = try E2EEnvironment.makeWorkDirectory("migration")
        defer { E2EEnvironment.removeWorkDirectory(work) }
        let incoming = work.appendingPathComponent("incoming.sock").path
        let sourceVM = try GuestVM(
            name: "src", script: script, disks: [GuestDisk(socketPath: source.socketDirectory + "/vhost.0", numQueues: 2)],
            workDirectory: work, qmp: true)
        let destinationVM = try GuestVM(
            name: "dst", script: script,
            disks: [GuestDisk(socketPath: destination.socketDirectory + "/vhost.0", numQueues: 2, reconnectSeconds: 1)],
            workDirectory: work, qmp: true, extraArguments: ["-incoming", "unix:\(incoming)"])
        try sourceVM.start()
        defer { sourceVM.kill() }
        try sourceVM.waitForConsole("E2E-READY: migrate", timeout: .seconds(120))
        try destinationVM.start()
        defer { destinationVM.kill() }
        try sourceVM.waitForConsole("E2E-ROUND: 1", timeout: .seconds(120))

        // Stats are read from the source throughout the migration.
        let statsStop = Atomic<Bool>(false)
        let statsCalls = Atomic<Int>(0)
        let statsThread = DispatchGroup()
        DispatchQueue.global().async(group: statsThread) {
            guard let client = try? source.client() else { return }
            while !statsStop.load(ordering: .relaxed) {
                if (try? client.call("bdev_get_iostat", params: ["name": "disk0"])) != nil { statsCalls.add(1, ordering: .relaxed) }
                usleep(20_000)
            }
        }

        let qmp = try QMPClient(socketPath: try #require(sourceVM.qmpSocketPath))
        // QEMU's default migration parameters. With max-bandwidth 4 GiB/s and downtime-limit
        // 300 ms, QEMU 7.2 under TCG corrupts the destination guest's memory about one run
        // in two even when the guest does no disk I/O at all (kernel oopses in timers and
        // stack-protector panics right after the switch-over): a QEMU/TCG problem, not the
        // backend's.
        let start = ContinuousClock.now
        try qmp.execute("migrate", arguments: ["uri": "unix:\(incoming)"])
        var status = ""
        while ContinuousClock.now - start < .seconds(120) {
            let info = try qmp.execute("query-migrate") as? [String: Any]
            status = info?["status"] as? String ?? "?"
            if status == "completed" || status == "failed" || status == "cancelled" { break }
            usleep(50_000)
        }
        let migrationTime = ContinuousClock.now - start
        statsStop.store(true, ordering: .relaxed)
        statsThread.wait()
        print("migration: \(status) in \(migrationTime); bdev_get_iostat answered \(statsCalls.load(ordering: .relaxed)) times meanwhile")
        #expect(status == "completed", "source QEMU log:\n\(sourceVM.qemuLog().suffix(2000))")
        #expect(source.log.contains("dirty logging on"))
        sourceVM.kill()

        // The destination's daemon restarts under the running guest (QEMU reconnects),
        // once the guest has finished a round on the destination.
        let lastSourceRound = Self.lastRound(in: sourceVM.console())
        do {
            try destinationVM.waitForConsole("E2E-ROUND: \(lastSourceRound + 1)", timeout: .seconds(180))
        } catch {
            Issue.record("""
                \(error)
                --- destination guest console ---
                \(destinationVM.console().suffix(4000))
                --- destination QEMU ---
                \(destinationVM.qemuLog().suffix(3000))
                --- destination daemon ---
                \(destination.log.suffix(3000))
                --- source daemon ---
                \(source.log.suffix(2000))
                """)
            throw error
        }
        #expect(destination.stop() == 0)
        destination = try DaemonProcess(cpumask: "0x2", extraArguments: destinationArguments, directory: destinationDirectory)

        let result = try destinationVM.waitForExit(timeout: .seconds(300))
        let console = sourceVM.console() + result.console
        print(console.split(whereSeparator: \.isNewline).filter { $0.contains("err=") }.suffix(8).joined(separator: "\n"))
        #expect(result.succeeded, "\(result.summary)\n--- destination daemon ---\n\(destination.log.suffix(3000))")
        #expect(!console.contains("E2E-FAIL"))
        #expect(console.contains("E2E-ROUND: \(Self.rounds)"))
        #expect(Self.count("E2E-OK: fio passed", in: console) == Self.rounds)
    }

    /// Enough fio rounds that the guest is still busy after the migration and the restart.
    static let rounds = 20

    /// The highest `E2E-ROUND: N` in `console` (0 if none).
    static func lastRound(in console: String) -> Int {
        console.split(whereSeparator: \.isNewline).compactMap { line -> Int? in
            guard let range = line.range(of: "E2E-ROUND: ") else { return nil }
            return Int(line[range.upperBound...].prefix { $0.isNumber })
        }.max() ?? 0
    }

    static func count(_ needle: String, in text: String) -> Int {
        text.components(separatedBy: needle).count - 1
    }
}
