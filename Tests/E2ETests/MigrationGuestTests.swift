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
        try migrateRetryingQEMUCrashes()
    }

    /// `migrateOnce`, tried again (up to `attempts` times) when the destination
    /// guest's kernel crashes after the switch-over (QEMU's problem, not ours).
    /// `packed`: both daemons' controllers offer packed rings and QEMU asks for
    /// them (`packed=on`). `restartDestination`: the destination daemon is
    /// restarted (SIGTERM) under the guest once it runs there. `disk`: what
    /// both daemons serve (`MigrationDisk`: the same file, or the same RBD image).
    func migrateRetryingQEMUCrashes(packed: Bool = false, restartDestination: Bool = true, disk: MigrationDisk = .file) throws {
        for attempt in 1...Self.attempts {
            guard let crash = try migrateOnce(packed: packed, restartDestination: restartDestination, disk: disk) else { return }
            print("""
                migration attempt \(attempt) of \(Self.attempts): the destination guest's kernel crashed after \
                the switch-over (QEMU 7.2 TCG, see below); console:
                \(crash)
                """)
        }
        Issue.record("the destination guest's kernel crashed after the switch-over in all \(Self.attempts) attempts")
    }

    /// How often a migration whose destination guest kernel crashes is tried.
    /// QEMU 7.2 under TCG corrupts the destination guest's memory now and then
    /// under host load: kernel oopses in hrtimers, slab freelists, list
    /// debugging or rss counters seconds after the switch-over. Measured on
    /// this test beside three busy loops (2026-11-26): 2 of 6 runs crashed
    /// (two loops), 2 of 8 with `-accel tcg,thread=single`, 2 of 8 with
    /// `-smp 1`, and 1 of 16 with no disk I/O at all in the guest (dd from
    /// /dev/urandom and sha256sum in RAM instead of fio): the device wrote
    /// nothing, so the corruption is QEMU's. A write our device fails to log
    /// lands in a data buffer, a status byte or a used ring, which fio's
    /// verification and the ring checks see as a data error or a hang; those
    /// still fail the test at once.
    static let attempts = 3

    /// Kernel crash markers on a guest console, and the one of a guest CPU
    /// whose timer stopped firing after the switch-over: RCU's "timer wakeup
    /// didn't happen" (a local APIC timer QEMU lost; a device that loses an
    /// interrupt leaves fio blocked in D state instead, "blocked for more
    /// than 120 seconds", which is not on this list).
    static let kernelCrashMarkers = [
        "Kernel panic", "Oops:", "BUG: ", "general protection fault", "kthread timer wakeup didn't happen",
    ]

    /// What both daemons' bdev `disk0` is: the same file (`bdev_uring_create`,
    /// two hosts sharing storage) or the same RBD image, which each daemon
    /// opens through a cluster handle of its own (`bdev_rbd_register_cluster`
    /// `c1`, `bdev_rbd_create`), as two hosts would. The image (`diskMiB`) is
    /// created for each attempt and removed after it.
    enum MigrationDisk {
        case file
        case rbd(CephTestCluster, pool: String, image: String)
    }

    /// The shared disk's size: the fio rounds use its first 193 MiB.
    static let diskMiB = 256

    /// One migration under load and a destination-daemon restart. Returns the
    /// destination console when its guest kernel crashed (retried), nil
    /// otherwise; every other failure is recorded as an issue.
    func migrateOnce(packed: Bool = false, restartDestination: Bool = true, disk: MigrationDisk = .file) throws -> String? {
        let shared = URL(fileURLWithPath: "/tmp").appendingPathComponent("vbd-mig-\(UUID().uuidString.prefix(6))")
        try FileManager.default.createDirectory(at: shared, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: shared) }
        // Runs after both daemons stopped (defers run in reverse), so no watcher holds the image.
        defer { if case .rbd(let cluster, let pool, let image) = disk { _ = try? cluster.rbd("rm", "--no-progress", "\(pool)/\(image)") } }
        let createDisk: (DaemonProcess) throws -> Void
        switch disk {
        case .file:
            let image = shared.appendingPathComponent("disk.img").path
            try runCommand("/usr/bin/truncate", ["-s", "\(Self.diskMiB)M", image])
            createDisk = { daemon in try daemon.call("bdev_uring_create", ["filename": .string(image), "name": "disk0"]) }
        case .rbd(let cluster, let pool, let image):
            try cluster.rbd("create", "--size", "\(Self.diskMiB)", "\(pool)/\(image)")
            let info = try cluster.rbd("info", "\(pool)/\(image)")
            print("migration: rbd info \(pool)/\(image):\n\(info)")
            // The hand-over this test is about: both daemons write the image in turn.
            #expect(info.contains("exclusive-lock"), "the image has no exclusive-lock feature: \(info)")
            createDisk = { daemon in
                try daemon.call("bdev_rbd_register_cluster", ["name": "c1", "config_file": .string(cluster.configPath)])
                try daemon.call("bdev_rbd_create", [
                    "pool_name": .string(pool), "rbd_name": .string(image), "block_size": 512, "cluster_name": "c1", "name": "disk0",
                ])
            }
        }

        let source = try DaemonProcess(cpumask: "0x1")
        defer { source.stop(); source.cleanUp() }
        let destinationDirectory = shared.appendingPathComponent("dst")
        let destinationArguments = ["--config", shared.appendingPathComponent("dst.json").path, "--persist"]
        var destination = try DaemonProcess(cpumask: "0x2", extraArguments: destinationArguments, directory: destinationDirectory)
        defer { destination.stop() }
        for daemon in [source, destination] {
            try createDisk(daemon)
            try daemon.call("vhost_create_blk_controller", ["ctrlr": "vhost.0", "dev_name": "disk0", "packed_ring": .bool(packed)])
        }
        let deviceProperties = packed ? ["packed=on"] : []

        // fio with verification, round after round, across the migration and the restart.
        var lines: [String] = []
        for i in 1...Self.rounds {
            var job = FioJob()
            job.name = "round\(i)"
            job.size = "24M"
            job.offset = "\(1 + 24 * ((i - 1) % 8))M"
            lines.append("run_fio \(job.quotedArguments())\necho \"E2E-ROUND: \(i)\"")
        }
        var script = GuestScript().waitForDisk("vda")
        if packed { script = script.expectFeatureBit(PackedGuestTests.packedBit, true) }
        script = script
            .ready("migrate")
            .appending(lines.joined(separator: "\n"))

        let work = try E2EEnvironment.makeWorkDirectory("migration")
        defer { E2EEnvironment.removeWorkDirectory(work) }
        let incoming = work.appendingPathComponent("incoming.sock").path
        let sourceVM = try GuestVM(
            name: "src", script: script, disks: [GuestDisk(socketPath: source.socketDirectory + "/vhost.0", numQueues: 2, deviceProperties: deviceProperties)],
            workDirectory: work, qmp: true)
        let destinationVM = try GuestVM(
            name: "dst", script: script,
            disks: [GuestDisk(
                socketPath: destination.socketDirectory + "/vhost.0", numQueues: 2, reconnectSeconds: 1,
                deviceProperties: deviceProperties)],
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

        // Who owns the image's exclusive lock while the guest writes on the source.
        let sourceLocker = try Self.locker(disk)

        let qmp = try QMPClient(socketPath: try #require(sourceVM.qmpSocketPath))
        // QEMU's default migration parameters. With max-bandwidth 4 GiB/s and downtime-limit
        // 300 ms, QEMU 7.2 under TCG corrupts the destination guest's memory about one run
        // in two even when the guest does no disk I/O at all (kernel oopses in timers and
        // stack-protector panics right after the switch-over): a QEMU/TCG problem, not the
        // backend's. With these it still happens now and then under load (`attempts`).
        let start = ContinuousClock.now
        try qmp.execute("migrate", arguments: ["uri": "unix:\(incoming)"])
        var status = ""
        var lastInfo: [String: Any]?
        while ContinuousClock.now - start < .seconds(120) {
            let info = try qmp.execute("query-migrate") as? [String: Any]
            lastInfo = info
            status = info?["status"] as? String ?? "?"
            if status == "completed" || status == "failed" || status == "cancelled" { break }
            usleep(50_000)
        }
        let completed = ContinuousClock.now
        let migrationTime = completed - start
        statsStop.store(true, ordering: .relaxed)
        statsThread.wait()
        print("migration: \(status) in \(migrationTime); bdev_get_iostat answered \(statsCalls.load(ordering: .relaxed)) times meanwhile")
        #expect(status == "completed", """
            migration \(status) after \(migrationTime); query-migrate: \(lastInfo.map { "\($0)" } ?? "none")
            source QEMU log:
            \(sourceVM.qemuLog().suffix(2000))
            """)
        #expect(source.log.contains("dirty logging on"))
        sourceVM.kill()
        if packed {
            #expect(try PackedGuestTests.sessionFeatures(destination, "vhost.0").contains("RING_PACKED"))
        }

        // The destination's first write: on RBD librbd must first take the image's exclusive
        // lock from the source daemon's client, which still has the image open (idle, its
        // queues stopped at the switch-over) and hands the lock over when asked.
        var firstWrite: Duration?
        while firstWrite == nil, ContinuousClock.now - completed < .seconds(120), destinationVM.isRunning {
            if try Self.writes(destination) > 0 { firstWrite = ContinuousClock.now - completed } else { usleep(50_000) }
        }
        let slowest = (destination: try Self.slowestWrite(destination), source: try Self.slowestWrite(source))
        print("migration: the destination's first write completed \(firstWrite.map { "\($0)" } ?? "never (120 s)") "
              + "after the switch-over; its slowest write so far took \(slowest.destination), the source's slowest \(slowest.source)")
        if case .rbd = disk {
            // The source's queues flushed the image at their stop (GET_VRING_BASE), so every
            // write the guest saw complete there is on the OSDs before the destination reads.
            let flushes = source.log.split(whereSeparator: \.isNewline).filter { $0.contains("queue stop: RBD image flushed") }
            print("migration: the source's stop flushes:\n\(flushes.joined(separator: "\n"))")
            #expect(!flushes.isEmpty, "the source daemon did not flush the image when QEMU stopped its queues")
            // The lock moved: another librbd client (the destination's) owns it now.
            let destinationLocker = try Self.locker(disk)
            print("migration: exclusive lock owner \(sourceLocker ?? "none") while on the source, \(destinationLocker ?? "none") after the first write on the destination")
            #expect(sourceLocker != nil && destinationLocker != nil && sourceLocker != destinationLocker)
        }

        // The destination's daemon restarts under the running guest (QEMU reconnects),
        // once the guest has finished a round on the destination (`restartDestination`).
        let lastSourceRound = Self.lastRound(in: sourceVM.console())
        do {
            try destinationVM.waitForConsole("E2E-ROUND: \(lastSourceRound + 1)", timeout: .seconds(180))
        } catch {
            if let crash = Self.kernelCrash(destinationVM.console()) { return crash }
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
        if restartDestination {
            #expect(destination.stop() == 0)
            let stopped = ContinuousClock.now
            destination = try DaemonProcess(cpumask: "0x2", extraArguments: destinationArguments, directory: destinationDirectory)
            // On RBD the stopped daemon's rbd_close released the lock: the new one takes it at once.
            var restartedWrite: Duration?
            while restartedWrite == nil, ContinuousClock.now - stopped < .seconds(120), destinationVM.isRunning {
                if try Self.writes(destination) > 0 { restartedWrite = ContinuousClock.now - stopped } else { usleep(50_000) }
            }
            print("migration: the restarted destination's first write completed \(restartedWrite.map { "\($0)" } ?? "never (120 s)") "
                  + "after the SIGTERM'd daemon exited")
        }

        let result = try destinationVM.waitForExit(timeout: .seconds(300))
        if !result.succeeded, let crash = Self.kernelCrash(result.console) { return crash }
        let console = sourceVM.console() + result.console
        print(console.split(whereSeparator: \.isNewline).filter { $0.contains("err=") }.suffix(8).joined(separator: "\n"))
        #expect(result.succeeded, "\(result.summary)\n--- destination daemon ---\n\(destination.log.suffix(3000))")
        #expect(!console.contains("E2E-FAIL"))
        #expect(console.contains("E2E-ROUND: \(Self.rounds)"))
        #expect(Self.count("E2E-OK: fio passed", in: console) == Self.rounds)
        return nil
    }

    /// The librbd client owning the RBD image's exclusive lock (`rbd lock ls`'s
    /// locker, `client.N`); nil for a file or when none does.
    static func locker(_ disk: MigrationDisk) throws -> String? {
        guard case .rbd(let cluster, let pool, let image) = disk else { return nil }
        let output = try cluster.rbd("lock", "ls", "\(pool)/\(image)")
        return output.split(whereSeparator: \.isNewline).lazy
            .compactMap { $0.split(separator: " ").first }.first { $0.hasPrefix("client.") }.map(String.init)
    }

    /// `disk0`'s completed writes (`bdev_get_iostat`).
    static func writes(_ daemon: DaemonProcess) throws -> Int64 {
        try daemon.call("bdev_get_iostat", ["name": "disk0"])["bdevs"]?.arrayValue?.first?["num_write_ops"]?.intValue ?? 0
    }

    /// `disk0`'s slowest write so far (`max_write_latency_ticks`: nanoseconds).
    static func slowestWrite(_ daemon: DaemonProcess) throws -> Duration {
        let ticks = try daemon.call("bdev_get_iostat", ["name": "disk0"])["bdevs"]?.arrayValue?.first?["max_write_latency_ticks"]?.intValue
        return .nanoseconds(ticks ?? 0)
    }

    /// What fio prints when data read back is not what was written.
    static let verifyErrorMarkers = ["verify: bad", "verify failed", "verify type mismatch", "bad magic"]

    /// The console from the first kernel crash marker on, if there is one and
    /// fio found no data error (a data error fails the test, crash or not).
    /// A failed step counts as a data error unless every failure is fio killed
    /// by a signal (exit status 128 + N: the same corrupted memory that oopsed
    /// the kernel, e.g. glibc's `free(): corrupted unsorted chunks` and abort)
    /// and fio reported no verify error.
    static func kernelCrash(_ console: String) -> String? {
        let failures = console.split(whereSeparator: \.isNewline).filter { $0.contains("E2E-FAIL") }
        let killedBySignal = failures.allSatisfy { line in
            guard let range = line.range(of: "E2E-FAIL: fio exited with status ") else { return false }
            return Int(line[range.upperBound...].prefix { $0.isNumber }).map { $0 > 128 } ?? false
        }
        guard killedBySignal, !verifyErrorMarkers.contains(where: console.contains) else { return nil }
        let hits = kernelCrashMarkers.compactMap { console.range(of: $0)?.lowerBound }
        guard let first = hits.min() else { return nil }
        let lineStart = console[..<first].lastIndex(of: "\n").map { console.index(after: $0) } ?? console.startIndex
        return String(console[lineStart...].prefix(1500))
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

/// What the migration test counts as QEMU's crash (retried) and what as ours.
@Suite("Migration test: guest kernel crash detection")
struct MigrationCrashDetectionTests {
    /// The destination console of this session's failed CI run (trimmed).
    static let oops = """
        E2E-ROUND: 3
        [    8.420067] BUG: kernel NULL pointer dereference, address: 0000000000000000
        [    8.423337] Oops: 0002 [#1] PREEMPT SMP NOPTI
        [    8.423337] RIP: 0010:rb_erase+0x25d/0x370
        """

    @Test func aKernelCrashIsFoundFromItsFirstLine() throws {
        let crash = try #require(MigrationGuestTests.kernelCrash(Self.oops))
        #expect(crash.hasPrefix("[    8.420067] BUG: kernel NULL pointer dereference"))
        #expect(crash.contains("rb_erase"))
    }

    @Test func aDataErrorIsNeverTakenForQEMUs() {
        #expect(MigrationGuestTests.kernelCrash(Self.oops + "\nE2E-FAIL: fio verify\n") == nil)
        #expect(MigrationGuestTests.kernelCrash("E2E-ROUND: 3\nE2E-OK: fio passed\n") == nil)
        // fio's own verify failure (exit status 1), and a verify error even when fio then died.
        #expect(MigrationGuestTests.kernelCrash(Self.oops + "\nE2E-FAIL: fio exited with status 1\n") == nil)
        let verify = "verify: bad magic header 0, wanted acca at file /dev/vda offset 1048576, length 4096\n"
        #expect(MigrationGuestTests.kernelCrash(Self.oops + "\n" + verify + "Aborted\nE2E-FAIL: fio exited with status 134\n") == nil)
        #expect(MigrationGuestTests.kernelCrash("E2E-FAIL: fio exited with status 134\n") == nil, "no kernel crash: not QEMU's")
    }

    /// A fresh-clone CI run (2026-12-07, packed-ring migration): right after the
    /// switch-over the destination kernel oopsed executing a data page while
    /// fio's heap was corrupted (glibc abort, exit status 134), no verify error.
    static let oopsWithFioAbort = """
        E2E-ROUND: 2
        free(): corrupted unsorted chunks
        [   15.525551] kernel tried to execute NX-protected page - exploit attempt? (uid: 0)
        [   15.526458] BUG: unable to handle page fault for address: ff387da65d220140
        [   15.526458] Oops: 0011 [#1] PREEMPT SMP NOPTI
        [   15.526458] CPU: 0 PID: 15 Comm: rcu_preempt Not tainted 6.1.0-57-cloud-amd64 #1  Debian 6.1.192-3
        Aborted
        E2E-FAIL: fio exited with status 134
        """

    @Test func fioKilledByTheSameCorruptionIsQEMUs() throws {
        let crash = try #require(MigrationGuestTests.kernelCrash(Self.oopsWithFioAbort))
        #expect(crash.hasPrefix("[   15.526458] BUG: unable to handle page fault"))
    }

    /// A packed-ring migration beside the whole suite (2026-12-08): the
    /// destination guest's CPU 1 never took a timer interrupt again, so fio's
    /// round never ended (trimmed).
    static let deadTimer = """
        E2E-ROUND: 1
        [   34.342221] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:
        [   34.345735] rcu: \t1-...!: (5 ticks this GP) idle=9c80/0/0x0 softirq=1285/1286 fqs=3 (false positive?)
        [   34.345735] rcu: rcu_preempt kthread timer wakeup didn't happen for 5245 jiffies! g1041 f0x0 RCU_GP_WAIT_FQS(5) ->state=0x200
        [   34.345735] rcu: \tPossible timer handling issue on cpu=1 timer-softirq=381
        """

    @Test func aGuestCPUWhoseTimerStoppedIsQEMUs() throws {
        let crash = try #require(MigrationGuestTests.kernelCrash(Self.deadTimer))
        #expect(crash.hasPrefix("[   34.345735] rcu: rcu_preempt kthread timer wakeup didn't happen"))
        // A request the device never completed is a hang of ours, not QEMU's.
        let hung = "E2E-ROUND: 1\n[  243.1] INFO: task fio:106 blocked for more than 120 seconds.\n"
        #expect(MigrationGuestTests.kernelCrash(hung) == nil)
    }
}
