import DaemonTestSupport
import Foundation
import JSONRPC
import Testing

/// A thin file on a small file system fills up under a guest's fio (issue 24,
/// item 4; docs/OPERATIONS.md, "Full disks"): with `report` the guest gets
/// EIO and the daemon's log says why; with `pause` fio stalls, space is
/// freed, `bdev_resume_io` is called, and fio finishes with a clean verify.
@Suite("Full disk under a guest", .serialized, .enabled(if: E2EEnvironment.isEnabled, E2EEnvironment.skipComment))
struct FullDiskGuestTests {
    /// An 8 MiB tmpfs holding a 5 MiB filler and a 16 MiB sparse image: about
    /// 3 MiB can be written before ENOSPC; 8 MiB once the filler is gone.
    struct SmallFilesystem {
        let mountPoint: String
        var image: String { mountPoint + "/thin.img" }
        var filler: String { mountPoint + "/filler" }

        init(_ work: URL) throws {
            mountPoint = work.appendingPathComponent("small").path
            try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
            let (mounted, output) = try runCommand("/usr/bin/mount", ["-t", "tmpfs", "-o", "size=8m", "tmpfs", mountPoint])
            try #require(mounted == 0, "mount tmpfs (needs root): \(output)")
            try Data(repeating: 0x5A, count: 5 << 20).write(to: URL(fileURLWithPath: filler))
            try runCommand("/usr/bin/truncate", ["-s", "16M", image])
        }

        func unmount() { _ = try? runCommand("/usr/bin/umount", ["-l", mountPoint]) }
    }

    /// 6 MiB written sequentially in 64 KiB blocks, then read back and checked.
    static var job: FioJob {
        var job = FioJob()
        job.readWrite = "write"
        job.blockSizes = "64k-64k"
        job.size = "6M"
        job.ioDepth = 4
        job.runtimeSeconds = 300
        return job
    }

    static func start(_ daemon: DaemonProcess, policy: String, script: GuestScript, work: URL) throws -> (SmallFilesystem, GuestVM) {
        let fs = try SmallFilesystem(work)
        try daemon.call("bdev_uring_create", ["filename": .string(fs.image), "name": "thin0"])
        try daemon.call("bdev_set_error_policy", ["name": "thin0", "policy": .string(policy)])
        try daemon.call("vhost_create_blk_controller", ["ctrlr": "vhost.0", "dev_name": "thin0"])
        let vm = try GuestVM(
            name: "fulldisk-\(policy)", script: script,
            disks: [GuestDisk(socketPath: daemon.socketDirectory + "/vhost.0", numQueues: 1)], workDirectory: work)
        try vm.start()
        return (fs, vm)
    }

    @Test func reportGivesTheGuestEIOAndLogsWhy() throws {
        try E2EEnvironment.requireReady()
        let daemon = try DaemonProcess(cpumask: "0x1")
        defer { daemon.stop(); daemon.cleanUp() }
        let work = try E2EEnvironment.makeWorkDirectory("fulldisk-report")
        defer { E2EEnvironment.removeWorkDirectory(work) }
        // fio must fail with EIO: the script succeeds only if it does.
        let script = GuestScript()
            .waitForDisk("vda")
            .appending("""
                echo "E2E-FIO: fio \(Self.job.quotedArguments())"
                fio \(Self.job.quotedArguments()) > /tmp/fio.out 2>&1
                _s=$?
                cat /tmp/fio.out
                [ "$_s" -ne 0 ] || fail "fio succeeded on a full disk"
                grep -q "Input/output error" /tmp/fio.out || fail "fio failed without an I/O error"
                echo "E2E-OK: fio got EIO"
                """)
        let (fs, vm) = try Self.start(daemon, policy: "report", script: script, work: work)
        defer { vm.kill(); fs.unmount() }
        let result = try vm.waitForExit(timeout: .seconds(300))
        #expect(result.succeeded, "\(result.summary)")
        #expect(result.console.contains("E2E-OK: fio got EIO"), "\(result.consoleTail)")
        let log = daemon.log
        let line = log.split(separator: "\n").first { $0.contains("bdev thin0: write offset") && $0.contains("ENOSPC (No space left on device)") }
        #expect(line != nil, "\(log.suffix(3000))")
        if let line { print("daemon log: \(line)") }
        let stat = try daemon.call("bdev_get_iostat", ["name": "thin0"])["bdevs"]?.arrayValue?.first
        print("io_errno: \(String(describing: stat?["io_errno"])) io_error: \(String(describing: stat?["io_error"]))")
        #expect((stat?["io_errno"]?["ENOSPC"]?.intValue ?? 0) + (stat?["io_errno"]?["short"]?.intValue ?? 0) > 0)
        #expect((stat?["io_error"]?["failed"]?.intValue ?? 0) > 0)
    }

    /// Inline (tmpfs served by syscalls on the reactor: one write held, the
    /// rest stay in the ring) and through io_uring (`--tmpfs-io engine`: the
    /// guest's writes in flight fail together and are all held).
    @Test(arguments: ["inline", "engine"])
    func pauseStallsTheGuestUntilResumedThenVerifies(tmpfsIO: String) throws {
        try E2EEnvironment.requireReady()
        let daemon = try DaemonProcess(cpumask: "0x1", extraArguments: ["--tmpfs-io", tmpfsIO])
        defer { daemon.stop(); daemon.cleanUp() }
        let work = try E2EEnvironment.makeWorkDirectory("fulldisk-pause-\(tmpfsIO)")
        defer { E2EEnvironment.removeWorkDirectory(work) }
        let script = GuestScript().waitForDisk("vda").runFio(Self.job)
        let (fs, vm) = try Self.start(daemon, policy: "pause", script: script, work: work)
        defer { vm.kill(); fs.unmount() }

        // The disk fills up: the queue pauses.
        let deadline = ContinuousClock.now + .seconds(240)
        var paused = false
        while ContinuousClock.now < deadline {
            let policy = try daemon.call("bdev_get_bdevs", ["name": "thin0"]).arrayValue?.first?["error_policy"]
            if policy?["io_paused"] == true {
                paused = true
                print("paused: \(String(describing: policy))")
                break
            }
            if GuestVM.exitStatus(in: vm.console()) != nil { break }
            Thread.sleep(forTimeInterval: 0.2)
        }
        try #require(paused, "the queue never paused: \(GuestVM.tail(vm.console()))\n\(daemon.log.suffix(3000))")
        // fio stalls: nothing finishes while paused.
        Thread.sleep(forTimeInterval: 3)
        #expect(!vm.console().contains("E2E-OK: fio passed"))
        #expect(GuestVM.exitStatus(in: vm.console()) == nil, "\(GuestVM.tail(vm.console()))")
        #expect(!vm.console().contains("I/O error"), "the guest saw an error: \(GuestVM.tail(vm.console()))")

        // Free space, resume: fio finishes and its verify is clean.
        try FileManager.default.removeItem(atPath: fs.filler)
        try daemon.call("bdev_resume_io", ["name": "thin0"])
        let result = try vm.waitForExit(timeout: .seconds(300))
        #expect(result.succeeded, "\(result.summary)")
        #expect(result.console.contains("E2E-OK: fio passed"), "\(result.consoleTail)")
        #expect(!result.console.contains("I/O error"), "\(result.consoleTail)")
        #expect(try daemon.call("bdev_get_bdevs", ["name": "thin0"]).arrayValue?.first?["error_policy"]?["io_paused"] == false)
        for line in daemon.log.split(separator: "\n") where line.contains("paused on a full disk") || line.contains("resumed") {
            print("daemon log: \(line)")
        }
    }
}
