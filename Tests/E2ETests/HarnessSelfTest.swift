import Foundation
import Testing

/// Checks the e2e harness and guest image against qemu-storage-daemon (not
/// vhost-blkd): boots a 2-queue guest, runs the fio verify script, and the
/// two reboot flows. Runs only with `VHOST_BLKD_E2E_SELFTEST=1`.
@Suite(
    .serialized,
    .enabled(
        if: ProcessInfo.processInfo.environment["VHOST_BLKD_E2E_SELFTEST"] == "1",
        "set VHOST_BLKD_E2E_SELFTEST=1 to check the harness against qemu-storage-daemon"))
struct HarnessSelfTest {
    /// 64 MiB image: 131072 sectors.
    static let imageBytes: UInt64 = 64 << 20

    private func makeImage(in dir: URL) throws -> URL {
        let image = dir.appendingPathComponent("disk.img")
        guard FileManager.default.createFile(atPath: image.path, contents: nil) else {
            throw E2EError.failed("cannot create \(image.path)")
        }
        let handle = try FileHandle(forWritingTo: image)
        try handle.truncate(atOffset: Self.imageBytes)
        try handle.close()
        return image
    }

    @Test(.timeLimit(.minutes(3)))
    func fioVerifyWithTwoQueues() throws {
        try E2EEnvironment.requireReady()
        let dir = try E2EEnvironment.makeWorkDirectory("self")
        defer { E2EEnvironment.removeWorkDirectory(dir) }
        let socket = dir.appendingPathComponent("qsd.sock").path
        let qsd = try QemuStorageDaemon(
            image: try makeImage(in: dir), socketPath: socket, numQueues: 2,
            logURL: dir.appendingPathComponent("qsd.log"))
        defer { qsd.stop() }

        let script = GuestScript.diskCheck(sectors: Self.imageBytes / 512, serial: "vhost_user_blk")
            .expectFile("/sys/block/vda/mq/1/cpu_list", equals: "1")
        let vm = try GuestVM(script: script, disks: [GuestDisk(socketPath: socket, numQueues: 2)], workDirectory: dir)
        let start = ContinuousClock.now
        try vm.start()
        let result = try vm.waitForExit(timeout: .seconds(120))
        print("self-test fio: \(ContinuousClock.now - start) total; console:\n\(result.consoleTail)")
        #expect(result.exitStatus == 0, "\(result.summary)")
        #expect(result.boots == 1)
        #expect(result.console.contains("E2E-OK: fio passed"))
    }

    @Test(.timeLimit(.minutes(3)))
    func sysrqRebootKeepsData() throws {
        try E2EEnvironment.requireReady()
        let dir = try E2EEnvironment.makeWorkDirectory("self")
        defer { E2EEnvironment.removeWorkDirectory(dir) }
        let socket = dir.appendingPathComponent("qsd.sock").path
        let qsd = try QemuStorageDaemon(
            image: try makeImage(in: dir), socketPath: socket, numQueues: 2,
            logURL: dir.appendingPathComponent("qsd.log"))
        defer { qsd.stop() }

        let script = GuestScript().waitForDisk().rebootThenVerify(FioJob())
        let vm = try GuestVM(
            script: script, disks: [GuestDisk(socketPath: socket, numQueues: 2)], workDirectory: dir,
            noReboot: false)
        let start = ContinuousClock.now
        try vm.start()
        let result = try vm.waitForExit(timeout: .seconds(180))
        print("self-test sysrq reboot: \(ContinuousClock.now - start) total")
        #expect(result.exitStatus == 0, "\(result.summary)")
        #expect(result.boots == 2)
        #expect(result.console.contains("E2E-PHASE: 2"))
        #expect(result.console.contains("E2E-OK: data verified after reboot"))
    }

    @Test(.timeLimit(.minutes(3)))
    func qmpSystemResetKeepsData() throws {
        try E2EEnvironment.requireReady()
        let dir = try E2EEnvironment.makeWorkDirectory("self")
        defer { E2EEnvironment.removeWorkDirectory(dir) }
        let socket = dir.appendingPathComponent("qsd.sock").path
        let qsd = try QemuStorageDaemon(
            image: try makeImage(in: dir), socketPath: socket, numQueues: 1,
            logURL: dir.appendingPathComponent("qsd.log"))
        defer { qsd.stop() }

        let script = GuestScript().waitForDisk().rebootThenVerify(FioJob(), trigger: .external)
        let vm = try GuestVM(
            script: script, disks: [GuestDisk(socketPath: socket, numQueues: 1)], workDirectory: dir,
            noReboot: false, qmp: true)
        try vm.start()
        let qmp = try QMPClient(socketPath: try #require(vm.qmpSocketPath))
        let status = try qmp.execute("query-status") as? [String: Any]
        #expect(status?["status"] as? String == "running")
        try vm.waitForConsole(GuestScript.awaitingResetLine, timeout: .seconds(120))
        try qmp.execute("system_reset")
        try qmp.waitForEvent("RESET", timeout: .seconds(10))
        let result = try vm.waitForExit(timeout: .seconds(120))
        #expect(result.exitStatus == 0, "\(result.summary)")
        #expect(result.boots == 2)
        #expect(result.console.contains("E2E-OK: data verified after reboot"))
    }

    /// The verify-only replay must notice lost writes: corrupt the image
    /// between the phases and expect phase 2 to fail.
    @Test(.timeLimit(.minutes(3)))
    func resetVerifyDetectsCorruption() throws {
        try E2EEnvironment.requireReady()
        let dir = try E2EEnvironment.makeWorkDirectory("self")
        defer { E2EEnvironment.removeWorkDirectory(dir) }
        let socket = dir.appendingPathComponent("qsd.sock").path
        let image = try makeImage(in: dir)
        let qsd = try QemuStorageDaemon(
            image: image, socketPath: socket, logURL: dir.appendingPathComponent("qsd.log"))
        defer { qsd.stop() }

        let script = GuestScript().waitForDisk().rebootThenVerify(FioJob(), trigger: .external)
        let vm = try GuestVM(
            script: script, disks: [GuestDisk(socketPath: socket)], workDirectory: dir, noReboot: false, qmp: true)
        try vm.start()
        let qmp = try QMPClient(socketPath: try #require(vm.qmpSocketPath))
        try vm.waitForConsole(GuestScript.awaitingResetLine, timeout: .seconds(120))
        // Zero 4 MiB inside the fio region (1 MiB + 32 MiB): written blocks are lost.
        let handle = try FileHandle(forWritingTo: image)
        try handle.seek(toOffset: 8 << 20)
        try handle.write(contentsOf: Data(count: 4 << 20))
        try handle.close()
        try qmp.execute("system_reset")
        let result = try vm.waitForExit(timeout: .seconds(120))
        #expect(result.boots == 2, "\(result.summary)")
        #expect(result.console.contains("E2E-PHASE: 2"))
        #expect(result.exitStatus == 1, "\(result.summary)")
        #expect(result.console.contains("E2E-FAIL: fio exited"))
    }
}

/// Pure checks of the harness helpers (always run).
struct HarnessHelperTests {
    @Test func initrdAppendsTestScript() throws {
        let archive = GuestInitrd.cpioArchive(files: [("test.sh", 0o100755, Data("echo hi\n".utf8))])
        #expect(archive.count % 4 == 0)
        #expect(archive.prefix(6) == Data("070701".utf8))
        #expect(String(decoding: archive, as: UTF8.self).contains("TRAILER!!!"))
    }

    @Test func exitStatusParsing() {
        #expect(GuestVM.exitStatus(in: "boot\nE2E-EXIT: 3\r\n[ 1.0] reboot") == 3)
        #expect(GuestVM.exitStatus(in: "E2E-EXIT: 1\nE2E-BOOT: 2\nE2E-EXIT: 0\n") == 0)
        #expect(GuestVM.exitStatus(in: "kernel panic") == nil)
        #expect(GuestScript.quote("it's") == "'it'\\''s'")
        #expect(GuestScript.quote("/dev/vda") == "/dev/vda")
    }
}
