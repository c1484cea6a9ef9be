import DaemonTestSupport
import Foundation
import JSONRPC
import Testing

/// After fio in a real guest, `bdev_get_iostat` counts exactly the requests
/// fio issued (issue 4: "counts are exact").
@Suite("Guest I/O against the daemon's stats", .serialized, .enabled(if: E2EEnvironment.isEnabled, E2EEnvironment.skipComment))
struct StatsGuestTests {
    @Test func iostatEqualsWhatFioIssued() throws {
        try E2EEnvironment.requireReady()
        let daemon = try DaemonProcess(cpumask: "0x1")
        defer { daemon.stop(); daemon.cleanUp() }
        try daemon.call("bdev_malloc_create", ["num_blocks": .int(64 * 2048), "block_size": 512, "name": "disk0"])
        try daemon.call("vhost_create_blk_controller", ["ctrlr": "vhost.0", "dev_name": "disk0"])
        var job = FioJob()
        job.size = "16M"
        job.blockSizes = "4k-64k"
        // One guest request per fio I/O: no merging in the guest's block layer.
        let script = GuestScript()
            .waitForDisk("vda")
            .appending("echo 2 > /sys/block/vda/queue/nomerges")
            .ready("reset")
            .appending("sleep 2")
            .runFio(job)
            .appending("sync")

        let work = try E2EEnvironment.makeWorkDirectory("stats")
        defer { E2EEnvironment.removeWorkDirectory(work) }
        let vm = try GuestVM(
            name: "stats", script: script, disks: [GuestDisk(socketPath: daemon.socketDirectory + "/vhost.0", numQueues: 2)],
            workDirectory: work)
        try vm.start()
        defer { vm.kill() }
        try vm.waitForConsole("E2E-READY: reset", timeout: .seconds(120))
        try daemon.call("bdev_reset_iostat", ["name": "disk0"])
        let result = try vm.waitForExit(timeout: .seconds(240))
        #expect(result.succeeded, "\(result.summary)")

        // fio: "issued rwts: total=READS,WRITES,TRIMS,0 short=..."
        let issued = try #require(result.console.split(whereSeparator: \.isNewline).first { $0.contains("issued rwts: total=") })
        let totals = issued.split(separator: "=")[1].split(separator: " ")[0].split(separator: ",").compactMap { Int64($0) }
        let stats = try daemon.call("bdev_get_iostat", ["name": "disk0"])
        let bdev = stats["bdevs"]?.arrayValue?.first
        print("fio \(issued.trimmingCharacters(in: .whitespaces)); daemon reads \(bdev?["num_read_ops"]?.intValue ?? -1) writes \(bdev?["num_write_ops"]?.intValue ?? -1)")
        #expect(totals.count >= 2)
        #expect(bdev?["num_read_ops"]?.intValue == totals.first)
        #expect(bdev?["num_write_ops"]?.intValue == totals.dropFirst().first)
        #expect(bdev?["io_error"]?["failed"]?.intValue ?? 0 == 0)
    }
}
