import DaemonTestSupport
import Foundation
import JSONRPC
import Testing

/// The daemon dies (`kill -9`) or is restarted (SIGTERM) while a guest runs
/// verified fio: QEMU 7.2 reconnects (`reconnect=1`), the restarted daemon
/// reloads its persisted config and resubmits what was in flight from the
/// inflight region (docs/PROTOCOL-NOTES.md, "Inflight tracking across
/// restarts"), and fio finishes
/// with no error and a clean verify.
@Suite("Guests across daemon crashes and restarts", .serialized, .enabled(if: E2EEnvironment.isEnabled, E2EEnvironment.skipComment))
struct RestartGuestTests {
    @Test func killAndRestartUnderLoad() throws {
        try E2EEnvironment.requireReady()
        let directory = URL(fileURLWithPath: "/tmp").appendingPathComponent("vbd-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: directory) }
        let config = directory.appendingPathComponent("vhost-blkd.json").path
        let arguments = ["--config", config, "--persist"]
        var daemon = try DaemonProcess(cpumask: "0x1", extraArguments: arguments, directory: directory)
        defer { daemon.stop() }
        let image = directory.appendingPathComponent("disk0.img").path
        try runCommand("/usr/bin/truncate", ["-s", "256M", image])
        try daemon.call("bdev_uring_create", ["filename": .string(image), "name": "disk0"])
        try daemon.call("vhost_create_blk_controller", ["ctrlr": "vhost.0", "dev_name": "disk0"])

        var crashJob = FioJob()
        crashJob.name = "across-kill"
        crashJob.size = "120M"
        crashJob.ioDepth = 32
        crashJob.blockSizes = "16k-256k"
        var restartJob = crashJob
        restartJob.name = "across-sigterm"
        restartJob.offset = "128M"
        let script = GuestScript()
            .waitForDisk("vda")
            .expectFile("/sys/block/vda/cache_type", equals: "write back")
            // The guest turns the write cache off (CONFIG_WCE): every write is durable when acked.
            .appending("echo 'write through' > /sys/block/vda/cache_type || fail 'cannot switch the cache'")
            .expectFile("/sys/block/vda/cache_type", equals: "write through")
            .appending(Self.fioUnderWay(crashJob, step: "kill"))
            .appending(Self.fioUnderWay(restartJob, step: "sigterm"))

        let work = try E2EEnvironment.makeWorkDirectory("restart")
        defer { E2EEnvironment.removeWorkDirectory(work) }
        let vm = try GuestVM(
            name: "restart", script: script,
            disks: [GuestDisk(socketPath: daemon.socketDirectory + "/vhost.0", numQueues: 2, reconnectSeconds: 1)],
            workDirectory: work)
        try vm.start()
        defer { vm.kill() }

        /// Restarts the daemon while fio has requests in flight; `crash` picks kill -9 or SIGTERM.
        func restart(after step: String, crash: Bool) throws {
            try vm.waitForConsole("E2E-READY: \(step)", timeout: .seconds(180))
            if crash {
                daemon.crash()
            } else {
                #expect(daemon.stop() == 0)
            }
            daemon = try DaemonProcess(cpumask: "0x1", extraArguments: arguments, directory: directory)
            #expect(try daemon.call("vhost_get_controllers").arrayValue?.count == 1)
        }
        try restart(after: "kill", crash: true)
        try restart(after: "sigterm", crash: false)

        let result = try vm.waitForExit(timeout: .seconds(300))
        let log = daemon.log
        let recovered = log.split(whereSeparator: \.isNewline).filter { $0.contains("recovered from the inflight region") }
        print("restart under load: \(recovered.count) queue recoveries logged; \(recovered.first ?? "")")
        let fioLines = result.console.split(whereSeparator: \.isNewline).filter { $0.contains("err=") || $0.contains("verify") }
        print(fioLines.prefix(6).joined(separator: "\n"))
        #expect(result.succeeded, "\(result.summary)\n--- daemon log ---\n\(log.suffix(4000))")
        #expect(Self.count("E2E-OK: fio passed", in: result.console) == 2)
        // Whether requests were in flight at the kill is up to timing; the recovery
        // itself is checked deterministically in InflightQueueTests and ResubmitTests.
        #expect(log.contains("guest switched the write cache to write-through"))
        #expect(daemon.stop() == 0)
    }

    /// Shell: starts `job` in the background, waits until the disk has
    /// requests in flight (`/sys/block/vda/stat` field 9), prints
    /// `E2E-READY: <step>` for the test to act, then waits for fio.
    static func fioUnderWay(_ job: FioJob, step: String) -> String {
        """
        echo "E2E-FIO: \(job.commandLine())"
        \(job.commandLine()) > /tmp/\(job.name).log 2>&1 &
        fio_pid=$!
        _n=0
        while [ "$(awk '{print $9}' /sys/block/vda/stat)" = 0 ]; do
            _n=$((_n + 1)); [ "$_n" -gt 3000 ] && fail "fio never had requests in flight"; sleep 0.01
        done
        echo "E2E-READY: \(step)"
        wait $fio_pid || { tail -40 /tmp/\(job.name).log; fail "fio \(job.name) failed"; }
        grep -E 'err=|verify|issued' /tmp/\(job.name).log
        echo "E2E-OK: fio passed"
        """
    }

    static func count(_ needle: String, in text: String) -> Int {
        text.components(separatedBy: needle).count - 1
    }
}
