import DaemonTestSupport
import Foundation
import JSONRPC
import Testing
import VhostUserFrontend
#if canImport(Glibc)
import Glibc
#endif

/// A real Linux guest (QEMU 7.2, TCG, 2 queues) on a controller whose bdev
/// is a Ceph RBD image of the suite's throw-away cluster
/// (scripts/ceph-test-cluster.sh), running fio randrw with
/// `--verify=crc32c` through every fault of issue 20: an `rbd resize`
/// outside the daemon and a `bdev_rbd_resize`, the OSD stopped for 10 s,
/// and a `kill -9` of the daemon restarted from its `--config`. Each test
/// stops its guest and daemon (by pid) before the suite's cluster stops.
@Suite(
    "Guests on Ceph RBD controllers", .serialized, .enabled(if: E2EEnvironment.isEnabled, E2EEnvironment.skipComment),
    .cephCluster)
struct RBDGuestTests {
    static let imageMiB = 64

    /// Creates image `image` of `imageMiB` in the cluster and, in `daemon`,
    /// cluster `c1`, bdev `R0` on the image and controller `vhost.0` on it.
    static func serve(_ cluster: CephTestCluster, image: String, daemon: DaemonProcess) throws {
        try cluster.rbd("create", "--size", "\(imageMiB)", "rbd/\(image)")
        try daemon.call("bdev_rbd_register_cluster", ["name": "c1", "config_file": .string(cluster.configPath)])
        try daemon.call("bdev_rbd_create", [
            "pool_name": "rbd", "rbd_name": .string(image), "block_size": 512, "cluster_name": "c1", "name": "R0",
        ])
        try daemon.call("vhost_create_blk_controller", ["ctrlr": "vhost.0", "dev_name": "R0"])
    }

    /// A verifying randrw fio job of `sizeMiB` at `offsetMiB`, bounded by size
    /// (the runtime bound only guards a hang, so a `--verify_only` replay matches).
    static func job(_ name: String, offsetMiB: Int, sizeMiB: Int) -> FioJob {
        var job = FioJob()
        job.name = name
        job.offset = "\(offsetMiB)M"
        job.size = "\(sizeMiB)M"
        job.ioDepth = 16
        job.runtimeSeconds = 600
        return job
    }

    /// Both resizes reach the guest while fio runs: `rbd resize` (librbd's
    /// update watch in the daemon), then `bdev_rbd_resize`; the guest's
    /// /sys/block/vda/size follows each (CONFIG_CHANGE), fio's verify is
    /// clean, and a second fio verifies the grown end.
    @Test func resizesReachTheGuestUnderFio() throws {
        try E2EEnvironment.requireReady()
        let cluster = try CephTestCluster.required()
        let daemon = try DaemonProcess(cpumask: "0x1")
        defer { daemon.stop(); daemon.cleanUp() }
        try Self.serve(cluster, image: "grow", daemon: daemon)
        let outside = 96, rpc = 128  // MiB
        let underResize = Self.job("under-resize", offsetMiB: 1, sizeMiB: 24)
        let grownEnd = Self.job("grown-end", offsetMiB: rpc - 16, sizeMiB: 16)
        let script = GuestScript()
            .waitForDisk("vda")
            .expectSectors(UInt64(Self.imageMiB) << 11)
            .startFio(underResize)
            .ready("resize-outside")
            .waitForSectors(UInt64(outside) << 11, timeoutSeconds: 60)
            .ready("resize-rpc")
            .waitForSectors(UInt64(rpc) << 11, timeoutSeconds: 60)
            .waitForFio(underResize)
            .runFio(grownEnd)

        let work = try E2EEnvironment.makeWorkDirectory("rbd-resize")
        defer { E2EEnvironment.removeWorkDirectory(work) }
        let vm = try GuestVM(
            name: "rbd-resize", script: script,
            disks: [GuestDisk(socketPath: daemon.socketDirectory + "/vhost.0", numQueues: 2)], workDirectory: work)
        try vm.start()
        defer { vm.kill() }

        try vm.waitForConsole("E2E-READY: resize-outside", timeout: .seconds(240))
        let fioRunning = !vm.console().contains("E2E-OK: fio passed")
        var started = ContinuousClock.now
        try cluster.rbd("resize", "--size", "\(outside)", "rbd/grow")
        try vm.waitForConsole("E2E-READY: resize-rpc", timeout: .seconds(120))
        print("rbd guest: rbd resize \(Self.imageMiB) -> \(outside) MiB seen by the guest \(ContinuousClock.now - started) after it began")
        started = ContinuousClock.now
        #expect(try daemon.call("bdev_rbd_resize", ["name": "R0", "new_size": .int(Int64(rpc))]) == .bool(true))
        let result = try vm.waitForExit(timeout: .seconds(400))
        let log = daemon.log
        #expect(result.succeeded, "\(result.summary)\n--- daemon log ---\n\(log.suffix(4000))")
        #expect(result.console.contains("E2E-OK: /sys/block/vda/size = \(outside << 11)"))
        #expect(result.console.contains("E2E-OK: /sys/block/vda/size = \(rpc << 11)"))
        #expect(RestartGuestTests.count("E2E-OK: fio passed", in: result.console) == 2)
        #expect(log.contains("was resized outside the daemon"))
        #expect(try daemon.call("bdev_get_bdevs", ["name": "R0"]).arrayValue?.first?["num_blocks"] == .int(Int64(rpc) << 11))
        #expect(try cluster.rbd("info", "rbd/grow").contains("size \(rpc) MiB"))
        print("rbd guest: resizes under fio (fio still running at the first: \(fioRunning)); "
              + "bdev_rbd_resize -> \(rpc) MiB and the rest of the script \(ContinuousClock.now - started)")
        print(Self.fioLines(result.console))
        #expect(daemon.stop() == 0)
    }

    /// One single-reactor daemon (`-m 0x1`) started with `--config FILE
    /// --persist` serves the guest's RBD controller and a neighbour
    /// controller on a malloc bdev, driven by the in-repo front end.
    ///
    /// The OSD stops for 10 s while the guest's fio (a verified job run
    /// again and again until a `bdev_rbd_resize` after the outage ends the
    /// loop) has requests in flight:
    /// the reactor never waits for librbd (completions come back through an
    /// eventfd), so the neighbour keeps at least 80 % of its solo IOPS, and
    /// once the OSD is back fio's verify finishes clean. Then `kill -9` of
    /// the daemon under load and a restart from the config file: QEMU
    /// reconnects, fio's verify is clean, and a `--verify_only` replay of
    /// the first job reads back what the killed daemon had acknowledged.
    /// The new daemon's first write waits until librbd can take the image's
    /// exclusive lock from the killed daemon's client, once the OSD dropped
    /// its watch (`osd_client_watch_timeout`, 30 s): printed, not asserted.
    ///
    /// The neighbour's IOPS in 300 ms windows, compared by their upper
    /// quartiles, as IsolationTests compares, so a stall of the whole
    /// machine does not decide. The outage's rate must reach 80 % of the
    /// lower of two rates without an outage: the neighbour alone (before
    /// the guest boots and after it exits) and beside the guest's fio on a
    /// healthy cluster (the 3 s before the OSD stops). On this 2-CPU host
    /// the in-repo driver's rate follows which other processes take the
    /// CPUs: a fresh-clone CI run with other suites beside it measured 71 %
    /// of the rate alone while the reactor was 10 % busy and slept 2,075
    /// times a second, and a quiet run measured 3,546 IOPS beside the guest,
    /// 2,665 alone and 2,739 during the outage. A reactor held by librbd
    /// would leave the neighbour near 0.
    @Test func osdOutageAndKillUnderLoad() throws {
        try E2EEnvironment.requireReady()
        let cluster = try CephTestCluster.required()
        let directory = URL(fileURLWithPath: "/tmp").appendingPathComponent("vbd-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: directory) }
        let arguments = ["--config", directory.appendingPathComponent("vhost-blkd.json").path, "--persist"]
        var daemon = try DaemonProcess(cpumask: "0x1", extraArguments: arguments, directory: directory)
        defer { daemon.stop() }
        try Self.serve(cluster, image: "load", daemon: daemon)
        try daemon.call("bdev_malloc_create", ["num_blocks": 32768, "block_size": 512, "name": "N0"])
        try daemon.call("vhost_create_blk_controller", ["ctrlr": "neighbour", "dev_name": "N0"])

        var neighbour = try RBDNeighbour(daemon: daemon)
        defer { neighbour.close() }
        var loop = try ReactorLoop(daemon)
        var solo = neighbour.rates(for: .seconds(3))
        var reactor = try ["solo before the guest: " + loop.since(daemon)]

        // The first job runs again and again until the test resizes the disk once the OSD is
        // back: stop-osd took 2-16 s, longer than one run on a fast machine.
        let outageJob = Self.job("osd-outage", offsetMiB: 1, sizeMiB: 24)
        let killJob = Self.job("kill-9", offsetMiB: 32, sizeMiB: 24)
        let script = GuestScript()
            .waitForDisk("vda")
            .startFio(outageJob, repeatWhileSectors: UInt64(Self.imageMiB) << 11).ready("osd-stop").waitForFio(outageJob)
            .startFio(killJob).ready("kill").waitForFio(killJob)
            // What the killed daemon acknowledged, read back through the restarted one.
            .runFio(outageJob, verifyOnly: true)
        let work = try E2EEnvironment.makeWorkDirectory("rbd-faults")
        defer { E2EEnvironment.removeWorkDirectory(work) }
        let vm = try GuestVM(
            name: "rbd-faults", script: script,
            disks: [GuestDisk(socketPath: daemon.socketDirectory + "/vhost.0", numQueues: 2, reconnectSeconds: 1)],
            workDirectory: work)
        try vm.start()
        defer { vm.kill() }

        // The OSD down for 10 s under load, after 3 s of the same load on a healthy cluster.
        try vm.waitForConsole("E2E-READY: osd-stop", timeout: .seconds(240))
        loop = try ReactorLoop(daemon)
        let healthy = neighbour.rates(for: .seconds(3))
        reactor.append(try "guest on a healthy cluster: " + loop.since(daemon))
        var osdStopped = false
        defer { if osdStopped { try? cluster.startOSD() } }
        let stopping = ContinuousClock.now
        try cluster.stopOSD()
        osdStopped = true
        loop = try ReactorLoop(daemon)
        let outage = neighbour.rates(for: .seconds(10))
        reactor.append(try "OSD down: " + loop.since(daemon))
        // The guest's requests still wait in librbd at the end of the outage.
        let waiting = try Self.inFlight(daemon, "vhost.0")
        let restarting = ContinuousClock.now
        try cluster.startOSD()
        osdStopped = false
        print("rbd guest: OSD stopped in \(restarting - stopping) with the guest's fio under way, \(waiting) requests "
              + "waiting in librbd after 10 s down, OSD restarted in \(ContinuousClock.now - restarting)")
        #expect(waiting > 0, "no guest request waited on the stopped OSD: the outage did not meet the guest's load")
        // The guest's fio loop ends with the run under way.
        #expect(try daemon.call("bdev_rbd_resize", ["name": "R0", "new_size": .int(Int64(Self.imageMiB) + 8)]) == .bool(true))

        // kill -9 under load; the new daemon comes back from the config file.
        try vm.waitForConsole("E2E-READY: kill", timeout: .seconds(300))
        let first = neighbour.close()
        #expect(first.errors == 0, "neighbour: \(first.firstError ?? "")")
        daemon.crash()
        let killed = ContinuousClock.now
        daemon = try DaemonProcess(cpumask: "0x1", extraArguments: arguments, directory: directory)
        #expect(try daemon.call("vhost_get_controllers").arrayValue?.count == 2)
        #expect(try daemon.call("bdev_rbd_get_clusters_info").arrayValue?.count == 1)
        // The first write the new daemon completes: librbd must take the image's
        // exclusive lock from the killed daemon's client first.
        var firstWrite: Duration?
        while firstWrite == nil, ContinuousClock.now - killed < .seconds(120), vm.isRunning {
            let stats = try daemon.call("bdev_get_iostat", ["name": "R0"])["bdevs"]?.arrayValue?.first
            if (stats?["num_write_ops"]?.intValue ?? 0) > 0 { firstWrite = ContinuousClock.now - killed } else { usleep(100_000) }
        }
        let result = try vm.waitForExit(timeout: .seconds(400))
        let log = daemon.log
        #expect(result.succeeded, "\(result.summary)\n--- daemon log ---\n\(log.suffix(4000))")
        #expect(RestartGuestTests.count("E2E-OK: fio passed", in: result.console) == 3)
        print("rbd guest: after kill -9 the first write completed after \(firstWrite.map { "\($0)" } ?? "none"), "
              + "the guest finished in \(ContinuousClock.now - killed); "
              + "\(log.split(whereSeparator: \.isNewline).filter { $0.contains("recovered from the inflight region") }.count) queue recoveries logged")
        print(Self.fioLines(result.console))

        neighbour = try RBDNeighbour(daemon: daemon)
        loop = try ReactorLoop(daemon)
        solo += neighbour.rates(for: .seconds(3))
        reactor.append(try "solo after the guest: " + loop.since(daemon))
        let second = neighbour.close()
        #expect(second.errors == 0, "neighbour: \(second.firstError ?? "")")

        let soloIOPS = RBDNeighbour.upperQuartile(solo), outageIOPS = RBDNeighbour.upperQuartile(outage)
        let healthyIOPS = RBDNeighbour.upperQuartile(healthy)
        let baseline = min(healthyIOPS, soloIOPS)
        let ratio = baseline > 0 ? outageIOPS / baseline : 0
        let f = { (value: Double) in String(format: "%.0f", value) }
        let percent = { (a: Double, b: Double) in b > 0 ? String(format: "%.0f %%", 100 * a / b) : "-" }
        print("rbd guest: neighbour \(f(healthyIOPS)) IOPS beside the guest on a healthy cluster, \(f(outageIOPS)) IOPS "
              + "while the OSD was down (\(percent(outageIOPS, healthyIOPS))); alone \(f(soloIOPS)) IOPS "
              + "(the outage: \(percent(outageIOPS, soloIOPS))); windows healthy \(healthy.map(f)), outage \(outage.map(f)), "
              + "alone \(solo.map(f))")
        print("rbd guest: the reactor, " + reactor.joined(separator: "; "))
        let why = "neighbour IOPS fell to \(ratio) of its rate without an outage while the OSD was down: "
            + "healthy \(healthy.map(f)), alone \(solo.map(f)), outage \(outage.map(f))"
        #expect(ratio >= 0.8, "\(why)")
        #expect(daemon.stop() == 0)
    }

    /// Live migration of the guest between two daemons serving the same RBD
    /// image, each through its own cluster handle, as MigrationGuestTests does
    /// with a shared file: verified fio rounds run across the switch-over and a
    /// destination-daemon restart (SIGTERM: `rbd_close` releases the lock).
    /// The image has the exclusive-lock feature (Ceph's default features): the
    /// source's librbd client owns the lock while the guest runs there; after
    /// the switch-over the destination's first write asks for it and the
    /// source, alive and idle, hands it over (printed: the first write's wait).
    @Test func migrateBetweenTwoDaemons() throws {
        try E2EEnvironment.requireReady()
        let cluster = try CephTestCluster.required()
        try MigrationGuestTests().migrateRetryingQEMUCrashes(disk: .rbd(cluster, pool: "rbd", image: "migrate"))
    }

    /// Requests `ctrlr`'s session has in flight (`vhost_get_controllers`' `inflight_task_cnt`).
    static func inFlight(_ daemon: DaemonProcess, _ ctrlr: String) throws -> Int64 {
        let controller = try daemon.call("vhost_get_controllers", ["name": .string(ctrlr)]).arrayValue?.first
        return controller?["sessions"]?.arrayValue?.first?["inflight_task_cnt"]?.intValue ?? 0
    }

    /// fio's error, verify and issued lines from the console.
    static func fioLines(_ console: String) -> String {
        console.split(whereSeparator: \.isNewline).filter { $0.contains("err=") || $0.contains("issued rwts") || $0.contains("fio runs") }
            .joined(separator: "\n")
    }
}

/// The single reactor's loop counters (`framework_get_reactors`): what it
/// did over a phase, printed next to the neighbour's IOPS.
struct ReactorLoop {
    let start = ContinuousClock.now
    let busy: Int64, idle: Int64, sleeps: Int64

    init(_ daemon: DaemonProcess) throws {
        let reactor = try daemon.call("framework_get_reactors")["reactors"]?.arrayValue?.first
        busy = reactor?["busy"]?.intValue ?? 0
        idle = reactor?["idle"]?.intValue ?? 0
        sleeps = reactor?["loop"]?["sleeps"]?.intValue ?? 0
    }

    /// Busy share and sleeps per second since this sample.
    func since(_ daemon: DaemonProcess) throws -> String {
        let now = try ReactorLoop(daemon)
        let elapsed = now.start - start
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let total = (now.busy - busy) + (now.idle - idle)
        let share = total > 0 ? Double(now.busy - busy) * 100 / Double(total) : 0
        return String(format: "busy %.0f %%, %.0f sleeps/s", share, Double(now.sleeps - sleeps) / max(seconds, 0.001))
    }
}

/// The neighbour of the RBD controller: controller `neighbour` of the same
/// reactor, driven by the in-repo front end with `VerifiedIOLoad` (one
/// write, read back and compare at a time: two requests a round).
final class RBDNeighbour {
    private let memory: FrontendMemory
    private let frontend: VhostUserFrontend
    private let load: VerifiedIOLoad
    private var outcome: VerifiedIOLoad.Outcome?

    init(daemon: DaemonProcess, ctrlr: String = "neighbour") throws {
        memory = try FrontendMemory(size: 8 << 20)
        do {
            frontend = try VhostUserFrontend(socketPath: daemon.socketDirectory + "/" + ctrlr, memory: memory)
        } catch {
            memory.close()
            throw error
        }
        do {
            try frontend.connect()
            try frontend.start(queueCount: 1, queueSize: 128)
            load = try VerifiedIOLoad(frontend: frontend, sectors: 4096)
        } catch {
            frontend.close()
            memory.close()
            throw error
        }
    }

    /// IOPS in each 300 ms window for `duration`.
    func rates(for duration: Duration) -> [Double] {
        let end = ContinuousClock.now + duration
        var rates: [Double] = []
        while ContinuousClock.now + .milliseconds(300) <= end {
            let start = ContinuousClock.now, before = load.outcome.rounds
            usleep(300_000)
            let elapsed = ContinuousClock.now - start
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            rates.append(Double(2 * (load.outcome.rounds - before)) / seconds)
        }
        return rates
    }

    /// Stops the load and disconnects; what the load saw. Once.
    @discardableResult
    func close() -> VerifiedIOLoad.Outcome {
        if let outcome { return outcome }
        let result = load.stop()
        outcome = result
        frontend.close()
        memory.close()
        return result
    }

    deinit { close() }

    /// The upper quartile (IsolationReport compares IOPS by it).
    static func upperQuartile(_ values: [Double]) -> Double {
        guard !values.isEmpty else { return 0 }
        let sorted = values.sorted()
        return sorted[min(sorted.count - 1, Int((Double(sorted.count - 1) * 0.75).rounded()))]
    }
}
