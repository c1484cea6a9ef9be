import DaemonTestSupport
import Foundation
import JSONRPC
import Posix
import Testing
import VhostUser
import VhostUserFrontend
import Virtio

/// A file bdev on a small tmpfs that fills up under writes (issue 24, item 4;
/// docs/OPERATIONS.md, "Full disks"): under `report` the write fails with
/// IOERR and the log and counters say why; under `pause` it stalls until
/// space is freed and `bdev_resume_io` is called, then completes and its
/// data reads back.
@Suite("Error policy on a full disk", .serialized)
struct ErrorPolicyTests {
    /// A 64 KiB tmpfs holding a 32 KiB filler file and a 1 MiB sparse image:
    /// about eight 4 KiB pages can be written before ENOSPC.
    struct SmallFilesystem {
        let mountPoint: String
        var image: String { mountPoint + "/disk.img" }
        var filler: String { mountPoint + "/filler" }

        init(_ daemon: DaemonProcess) throws {
            mountPoint = daemon.directory.appendingPathComponent("small").path
            try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
            let (mounted, output) = try runCommand("/usr/bin/mount", ["-t", "tmpfs", "-o", "size=64k", "tmpfs", mountPoint])
            try #require(mounted == 0, "mount tmpfs (needs root): \(output)")
            try Data(repeating: 0xA5, count: 32 << 10).write(to: URL(fileURLWithPath: filler))
            try runCommand("/usr/bin/truncate", ["-s", "1M", image])
        }

        func unmount() { _ = try? runCommand("/usr/bin/umount", ["-l", mountPoint]) }
    }

    /// Starts a 4 KiB write of `data` at `sector` on queue 0 without waiting.
    static func submitWrite(_ f: VhostUserFrontend, _ memory: FrontendMemory, sector: UInt64, data: [UInt8]) throws -> (head: UInt16, status: GuestBuffer) {
        let q = try f.driverQueue(0)
        let header = try memory.allocate(16, alignment: 16)
        header.write(BlkWire.header(type: BlkWire.typeOut, sector: sector))
        let buffer = try memory.allocate(data.count, alignment: 512)
        buffer.write(data)
        let status = try memory.allocate(1, alignment: 1)
        status.pointer.storeBytes(of: 0xff, as: UInt8.self)
        let head = try q.addChain([ChainBuffer(header, writable: false), ChainBuffer(buffer, writable: false),
                                   ChainBuffer(status, writable: true)])
        q.publishAndKick()
        return (head, status)
    }

    /// How the bdev does its I/O: inline syscalls on the reactor (a `uring`
    /// bdev on tmpfs), io_uring (`--tmpfs-io engine`), the thread pool (`aio`).
    enum Path: String, CaseIterable, Sendable {
        case inline, ioUring, threadPool

        var daemonArguments: [String] { self == .ioUring ? ["--tmpfs-io", "engine"] : [] }
        var createMethod: String { self == .threadPool ? "bdev_aio_create" : "bdev_uring_create" }
        var inlineIO: Bool { self == .inline }
    }

    static func createBdev(_ daemon: DaemonProcess, _ path: Path, _ fs: SmallFilesystem) throws {
        if path == .threadPool {
            try daemon.call("bdev_aio_create", ["filename": .string(fs.image), "name": "T0", "block_size": 512])
        } else {
            try daemon.call("bdev_uring_create", ["filename": .string(fs.image), "name": "T0"])
        }
        let info = try daemon.call("bdev_get_bdevs", ["name": "T0"]).arrayValue?.first?["driver_specific"]
        let driver = path == .threadPool ? "aio" : "uring"
        #expect(info?[driver]?["inline_io"]?.boolValue == path.inlineIO, "\(String(describing: info))")
    }

    static func iostat(_ daemon: DaemonProcess, _ name: String) throws -> JSON? {
        try daemon.call("bdev_get_iostat", ["name": .string(name)])["bdevs"]?.arrayValue?.first
    }

    static func errorPolicy(_ daemon: DaemonProcess, _ name: String) throws -> JSON? {
        try daemon.call("bdev_get_bdevs", ["name": .string(name)]).arrayValue?.first?["error_policy"]
    }

    @Test(arguments: Path.allCases)
    func reportFailsTheWriteAndSaysWhy(path: Path) throws {
        let base = URL(fileURLWithPath: "/tmp").appendingPathComponent("vbm-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: base, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: base) }
        let metricsPath = base.appendingPathComponent("metrics.sock").path
        let daemon = try DaemonProcess(cpumask: "0x1", extraArguments: ["--metrics", "unix:" + metricsPath] + path.daemonArguments)
        defer { daemon.stop(); daemon.cleanUp() }
        let fs = try SmallFilesystem(daemon)
        defer { fs.unmount() }
        try Self.createBdev(daemon, path, fs)
        try daemon.call("vhost_create_blk_controller", ["ctrlr": "vhost.0", "dev_name": "T0"])
        #expect(try Self.errorPolicy(daemon, "T0")?["policy"] == "report")
        let memory = try FrontendMemory(size: 16 << 20)
        defer { memory.close() }
        let f = try DataPathTests.attach(daemon, "vhost.0", memory: memory, queues: 1)
        defer { f.close() }

        var statuses: [UInt8] = []
        for page in 0..<32 {
            statuses.append(try f.write(sector: UInt64(page * 8), data: DataPathTests.pattern(4096, seed: page)).status)
        }
        let first = try #require(statuses.firstIndex(of: BlkWire.statusIOErr), "\(statuses)")
        #expect(first >= 1, "\(statuses)")
        let offset = first * 4096
        let line = "bdev T0: write offset \(offset) length 4096 failed: ENOSPC (No space left on device) (1 errors so far)"
        #expect(daemon.log.contains(line), "\(daemon.log.suffix(3000))")
        let stat = try #require(try Self.iostat(daemon, "T0"))
        let enospc = try #require(stat["io_errno"]?["ENOSPC"]?.intValue, "\(stat)")
        #expect(enospc == Int64(statuses.count - first), "\(stat)")
        #expect(stat["io_error"]?["failed"]?.intValue == Int64(statuses.count - first))
        #expect(stat["io_paused"] == false)
        let metrics = Set(try StatsTests.scrape(try UnixSocket.connect(path: metricsPath)).split(separator: "\n").map(String.init))
        #expect(metrics.contains("# TYPE vhost_blkd_bdev_io_errors_total counter"))
        #expect(metrics.contains("vhost_blkd_bdev_io_errors_total{bdev=\"T0\",errno=\"ENOSPC\"} \(enospc)"), "\(metrics.sorted())")
        #expect(metrics.contains("vhost_blkd_bdev_io_errors_total{bdev=\"T0\",errno=\"EIO\"} 0"))
        #expect(metrics.contains("vhost_blkd_bdev_io_paused{bdev=\"T0\"} 0"))
        #expect(daemon.isRunning)
    }

    @Test(arguments: Path.allCases)
    func pauseStallsUntilResumedThenCompletes(path: Path) throws {
        let daemon = try DaemonProcess(cpumask: "0x1", extraArguments: path.daemonArguments)
        defer { daemon.stop(); daemon.cleanUp() }
        let fs = try SmallFilesystem(daemon)
        defer { fs.unmount() }
        try Self.createBdev(daemon, path, fs)
        try daemon.call("bdev_set_error_policy", ["name": "T0", "policy": "pause"])
        try daemon.call("vhost_create_blk_controller", ["ctrlr": "vhost.0", "dev_name": "T0"])
        #expect(try Self.errorPolicy(daemon, "T0")?["policy"] == "pause")
        let saved = try daemon.call("framework_get_config", ["name": "bdev"])
        #expect(saved.arrayValue?.contains { $0["method"] == "bdev_set_error_policy" } == true, "\(saved)")
        let memory = try FrontendMemory(size: 16 << 20)
        defer { memory.close() }
        let f = try DataPathTests.attach(daemon, "vhost.0", memory: memory, queues: 1)
        defer { f.close() }
        let q = try f.driverQueue(0)

        // Write pages until one stalls (no used element within 500 ms).
        var stalled: (page: Int, head: UInt16, status: GuestBuffer)?
        for page in 0..<32 {
            let (head, status) = try Self.submitWrite(f, memory, sector: UInt64(page * 8), data: DataPathTests.pattern(4096, seed: page))
            do {
                let used = try q.waitUsed(timeout: .milliseconds(500))
                #expect(used.id == UInt32(head))
                #expect(status.pointer.load(as: UInt8.self) == BlkWire.statusOK, "page \(page)")
            } catch {
                stalled = (page, head, status)
                break
            }
        }
        let held = try #require(stalled, "no write stalled on a full tmpfs")
        #expect(held.page >= 1)
        #expect(held.status.pointer.load(as: UInt8.self) == 0xff, "a held write has no status yet")
        let policy = try #require(try Self.errorPolicy(daemon, "T0"))
        #expect(policy["io_paused"] == true, "\(policy)")
        #expect(policy["paused_since"]?.intValue != nil, "\(policy)")
        #expect(try Self.iostat(daemon, "T0")?["io_paused"] == true)
        #expect(try Self.iostat(daemon, "T0")?["io_errno"]?["ENOSPC"]?.intValue == 1)
        #expect(daemon.log.contains("held until bdev_resume_io"), "\(daemon.log.suffix(3000))")
        #expect(daemon.log.contains("paused on a full disk"), "\(daemon.log.suffix(3000))")
        let ctl = try ExamplesSupport.run(DaemonProcess.ctlPath, ["-s", daemon.rpcSocket, "iostat", "T0", "--json", "-i", "0.1", "-c", "1"])
        #expect(ctl.status == 0, "\(ctl.stderr)")
        let report = try JSON.parse(ctl.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
        #expect(report["devices"]?.arrayValue?.first?["paused"] == true, "\(ctl.stdout) \(ctl.stderr)")

        // Still held after another while: resuming without space holds it again.
        Thread.sleep(forTimeInterval: 0.3)
        #expect(q.popUsed() == nil)
        try daemon.call("bdev_resume_io", ["name": "T0"])
        #expect(throws: FrontendError.self) { _ = try q.waitUsed(timeout: .milliseconds(500)) }

        // Free space, resume: the write completes and reads back.
        try FileManager.default.removeItem(atPath: fs.filler)
        try daemon.call("bdev_resume_io", ["name": "T0"])
        let used = try q.waitUsed(timeout: .seconds(5))
        #expect(used.id == UInt32(held.head))
        #expect(held.status.pointer.load(as: UInt8.self) == BlkWire.statusOK)
        let back = try f.read(sector: UInt64(held.page * 8), count: 8)
        #expect(back.status == BlkWire.statusOK)
        #expect(back.data == DataPathTests.pattern(4096, seed: held.page))
        #expect(try DataPathTests.roundTrip(f, sector: UInt64(held.page * 8 + 8), seed: 77))
        #expect(try Self.errorPolicy(daemon, "T0")?["io_paused"] == false)
        #expect(daemon.log.contains("resumed"), "\(daemon.log.suffix(3000))")
    }

    /// A held write still gets its used element when the session ends: the
    /// queue stops (GET_VRING_BASE is answered) and the controller goes.
    @Test func heldWritesFailWhenTheSessionEnds() throws {
        let daemon = try DaemonProcess(cpumask: "0x1")
        defer { daemon.stop(); daemon.cleanUp() }
        let fs = try SmallFilesystem(daemon)
        defer { fs.unmount() }
        try daemon.call("bdev_uring_create", ["filename": .string(fs.image), "name": "T0"])
        try daemon.call("bdev_set_error_policy", ["name": "T0", "policy": "pause"])
        try daemon.call("vhost_create_blk_controller", ["ctrlr": "vhost.0", "dev_name": "T0"])
        let memory = try FrontendMemory(size: 16 << 20)
        defer { memory.close() }
        let f = try DataPathTests.attach(daemon, "vhost.0", memory: memory, queues: 1)
        let q = try f.driverQueue(0)
        var stalledPage: Int?
        for page in 0..<32 {
            _ = try Self.submitWrite(f, memory, sector: UInt64(page * 8), data: DataPathTests.pattern(4096, seed: page))
            do { _ = try q.waitUsed(timeout: .milliseconds(500)) } catch {
                stalledPage = page
                break
            }
        }
        #expect(stalledPage != nil)
        f.close()
        // The session ends once its queues stopped: held writes must not keep it draining.
        let deadline = ContinuousClock.now + .seconds(10)
        var deleted = false
        while !deleted && ContinuousClock.now < deadline {
            do {
                try daemon.call("vhost_delete_controller", ["ctrlr": "vhost.0"])
                deleted = true
            } catch {
                Thread.sleep(forTimeInterval: 0.1)
            }
        }
        #expect(deleted, "the session still drains: \(daemon.log.suffix(3000))")
        #expect(daemon.log.contains("held writes completed with an I/O error: the queue stops"), "\(daemon.log.suffix(3000))")
        #expect(try Self.errorPolicy(daemon, "T0")?["io_paused"] == false)
        // Setting report and resuming an idle bdev answer true.
        try daemon.call("bdev_set_error_policy", ["name": "T0", "policy": "report"])
        try daemon.call("bdev_resume_io", ["name": "T0"])
        #expect(daemon.stop() == 0)
    }
}
