import DaemonTestSupport
import Foundation
import Glibc
import JSONRPC
import Posix
import Synchronization
import Testing
import VhostUser
import VhostUserFrontend
import Virtio

/// Tenant isolation (issue 19, acceptance): an attacker, on a controller of
/// its own, does what a hostile QEMU or RPC client may do while a neighbour
/// controller on the same reactor (`-m 0x1`) runs verified I/O. The
/// neighbour keeps at least 80 % of its solo IOPS and its p99 stays under
/// twice the solo p99; `spdk_get_version` answers with p99 under 50 ms; the
/// daemon stays up; the attacker gets its documented outcome.
///
/// The machine these run on may be shared (2 CPUs, other builds and tests),
/// so short solo and attacked windows alternate (`IsolationHarness.windows`
/// of each, ABBA order) and their quieter quartiles are compared: the upper
/// quartile of IOPS, the lower quartile of the neighbour's p99 and of the
/// RPC client's. Other work on the machine only ever takes from the
/// neighbour, in solo and attacked windows alike, while an attack that
/// costs the neighbour does so in every attacked window; medians, tried
/// first, swung by 2x between runs with no attack at all. A window in which
/// the neighbour completes nothing fails the test, unless the reactor was
/// runnable and given no CPU then (seen on the shared machine: 0.3-0.5 s,
/// solo windows too) or the hypervisor stole the CPUs; the neighbour must
/// still complete requests after the last window. Each test prints an
/// `isolation <attack>: ...` line, and a second one with where the daemon's
/// threads spent their time.
///
/// The thresholds are the shipped daemon's: scripts/test.sh runs this suite
/// against the release build (`VHOST_BLKD_BIN`). A debug daemon, with its
/// dynamic exclusivity checks and thread assertions, spends 2-3x the CPU on
/// control-thread work, and on a 2-CPU machine that CPU is the neighbour's
/// driver's: the memfd-shrink and huge-clear attacks then miss the p99 bound.
@Suite("Tenant isolation: an attacker beside a neighbour on one reactor", .serialized)
struct IsolationTests {
    typealias H = IsolationHarness

    /// A frontend hands over a blocking call eventfd whose counter is at its
    /// maximum (2^64 - 2) and keeps asking for interrupts (vhost-user spec,
    /// "SET_VRING_CALL"; virtio 1.2 §2.7.7). The daemon makes the descriptor
    /// non-blocking (`CallSignal`): the flag is the open file's, so the
    /// attacker sees O_NONBLOCK on its own copy. Its requests still complete;
    /// it finds them by polling its used ring (virtio 1.2 §2.7.8).
    @Test func blockingCallEventFDWithAFullCounter() throws {
        let harness = try IsolationHarness { daemon in try Self.attackerController(daemon) }
        defer { harness.close() }
        let attacker = try HostileFrontendTests.startedFrontend(harness.daemon.socketDirectory + "/attacker")
        defer { attacker.close(); attacker.memory.close() }
        let call = try EventFD(nonBlocking: false)
        defer { call.close() }
        var full: UInt64 = 0xffff_ffff_ffff_fffe
        #expect(withUnsafeBytes(of: &full) { Glibc.write(call.fd.rawValue, $0.baseAddress, 8) } == 8)
        #expect(fcntl(call.fd.rawValue, F_GETFL) & O_NONBLOCK == 0, "the attacker's eventfd starts blocking")
        try attacker.channel.send(
            VhostUserMessage(request: .setVringCall, payload: .u64(0), fds: [call.fd]), ack: attacker.replyAck)
        let reads = try PolledReads(attacker.driverQueue(0), memory: attacker.memory)
        let nonBlocking = fcntl(call.fd.rawValue, F_GETFL) & O_NONBLOCK != 0
        let attack = LoopAttack(reads.step)
        attack.afterEnd = reads.endWindow
        let report = try harness.measure("blocking full call fd", attack: attack) {
            #expect(nonBlocking, "the daemon left the call eventfd blocking")
            let (done, failed, windows) = reads.tally
            #expect(done > 0 && windows == H.windows, "the attacker's requests did not complete in every window")
            #expect(failed == 0, "\(failed) of the attacker's requests failed")
            return "call fd O_NONBLOCK after SET_VRING_CALL: \(nonBlocking); \(done) requests completed (used ring polled), \(failed) failed"
        }
        report.check()
    }

    /// A frontend reads its own kick eventfd in a tight loop while it keeps
    /// requests flowing (vhost-user spec, "SET_VRING_KICK"): the signal is
    /// gone before the daemon's read. Kick reads never block a reactor, on
    /// either engine; the attacker's queue is still served (when the
    /// reactor's polling finds its avail ring, or a kick gets through), and
    /// it stops on GET_VRING_BASE ("Stopping rings"). The thief runs at
    /// SCHED_IDLE: it spins whenever its CPU is free, but takes no CPU from
    /// anyone else on a (shared, 2-CPU) test machine.
    @Test(arguments: DataPathTests.Engine.allCases)
    func selfReadingKickEventFD(engine: DataPathTests.Engine) throws {
        let harness = try IsolationHarness(arguments: engine.arguments) { daemon in try Self.attackerController(daemon) }
        defer { harness.close() }
        let attacker = try HostileFrontendTests.startedFrontend(harness.daemon.socketDirectory + "/attacker")
        defer { attacker.close(); attacker.memory.close() }
        let queue = try attacker.driverQueue(0)
        let reads = try PolledReads(queue, memory: attacker.memory)
        let stolen = Atomic<UInt64>(0)
        let kick = queue.kickFD
        let thief: @Sendable () -> Void = {
            let value = kick.drain()
            if value > 0 { stolen.add(value, ordering: .relaxed) }
        }
        let attack = LoopAttack(reads.step, (thief, .idle))
        let report = try harness.measure("self-reading kick fd (\(engine.rawValue))", attack: attack) {
            let (done, failed, _) = reads.tally
            #expect(done > 0, "the attacker's queue was never served")
            #expect(failed == 0, "\(failed) of the attacker's requests failed")
            // The thief keeps reading while the queue is stopped.
            let stopping = try Repeater(name: "kick-thief", priority: .idle, thief)
            let start = ContinuousClock.now
            let base = Result { try attacker.getVringBase(0) }
            let elapsed = ContinuousClock.now - start
            stopping.stop()
            guard case .success(let value) = base else {
                Issue.record("GET_VRING_BASE failed while the attacker read its kicks: \(base)")
                return "GET_VRING_BASE failed: \(base)"
            }
            // Everything published was popped, except perhaps requests still in flight.
            let behind = queue.publishedAvailIdx &- value
            #expect(Int(behind) <= reads.inFlight, "base \(value), published \(queue.publishedAvailIdx), \(reads.inFlight) in flight")
            let ms = Double(elapsed.components.attoseconds) / 1e15 + Double(elapsed.components.seconds) * 1000
            return "\(done) requests served, \(failed) failed, \(stolen.load(ordering: .relaxed)) kicks stolen; "
                + "GET_VRING_BASE answered \(value) in \(H.format(ms, 1)) ms"
        }
        report.check()
    }

    /// A frontend shrinks the memfd of its guest memory under a running
    /// queue (vhost-user spec, "SET_MEM_TABLE") while more than 4,096 ranges
    /// are guarded (520 sessions of 8 regions each): the SIGBUS guard still
    /// covers its mapping, the daemon disconnects it with a log line, and
    /// goes on. Each attacked window shrinks again and again, a new
    /// session each time.
    /// A frontend keeps four reads of 16 MiB in flight, the largest the
    /// device advertises (size_max * seg_max, virtio 1.2 §5.2.4), on RAM and
    /// on tmpfs, whose I/O is otherwise copied on the reactor. Copies over
    /// 64 KiB are made a chunk per reactor iteration (`LargeCopies`), so the
    /// neighbour's requests do not wait behind them; a read over the
    /// maximum fails with IOERR (`BlkLimits`).
    @Test(arguments: [DataPathTests.Backend.malloc, .tmpfs])
    func oversizedRequests(backend: DataPathTests.Backend) throws {
        let harness = try IsolationHarness { daemon in
            try DataPathTests.createBdev(daemon, backend, name: "A0", sectors: 65536)  // 32 MiB
            try daemon.call("vhost_create_blk_controller", ["ctrlr": "attacker", "dev_name": "A0"])
        }
        defer { harness.close() }
        let memory = try FrontendMemory(size: 80 << 20)
        defer { memory.close() }
        let attacker = try DataPathTests.attach(harness.daemon, "attacker", memory: memory, queues: 1)
        defer { attacker.close() }
        let most = 16 << 20
        let over = try attacker.read(sector: 0, count: most / 512 + 1).status
        let reads = try PolledReads(attacker.driverQueue(0), memory: memory, bytes: most)
        let attack = LoopAttack(reads.step)
        attack.afterEnd = reads.endWindow
        let report = try harness.measure("oversized requests (\(backend))", attack: attack) {
            #expect(over == BlkWire.statusIOErr, "a read over size_max * seg_max was served")
            let (done, failed, windows) = reads.tally
            #expect(done > 0 && windows == H.windows, "the attacker's reads did not complete in every window")
            #expect(failed == 0, "\(failed) of the attacker's 16 MiB reads failed")
            return "\(done) reads of 16 MiB served in chunks, \(failed) failed; 16 MiB + 512 B: status \(over) (IOERR)"
        }
        report.check()
    }

    /// A frontend clears its whole 2 GiB disk with one DISCARD or
    /// WRITE_ZEROES of the largest range the device advertises
    /// (max_discard_sectors, max_write_zeroes_sectors, virtio 1.2 §5.2.4),
    /// again and again, each time after data was written, on RAM
    /// (MADV_DONTNEED) and on tmpfs (a punched hole), both served on the
    /// reactor. Returning resident pages costs 1-2 ms per MiB, so a clear is
    /// made in chunks sized to about 20 us of reactor time (`LargeCopies`);
    /// the attacker's clears complete and the disk reads back zeroes.
    ///
    /// What is cleared: on tmpfs 64 MiB a round, written into the file by
    /// the attacker's thread (the test holds the file); on RAM one 4 MiB
    /// write a round through the daemon, then a 30 ms pause. Writes into
    /// pages not yet there fault each page in on the reactor, which is the
    /// writer's own work: four of them a round, unpaced, kept the reactor
    /// busy enough that the neighbour's driver, which shares its CPU on a
    /// 2-CPU machine, fell to 56-67 % of its rate (clears alone: 99 %).
    /// The attacker's thread runs at SCHED_IDLE, as the kick thief does:
    /// refilling 64 MiB of tmpfs a round is its own CPU (half a CPU here),
    /// which on a real host is its own vCPU's; at normal priority it took
    /// that CPU from the neighbour's driver (waiting for a CPU 32-34 % of
    /// the time, p99 2.8-2.9x solo in a fresh-clone CI run) while the
    /// daemon's reactor kept up with the clears.
    @Test(arguments: [DataPathTests.Backend.malloc, .tmpfs])
    func hugeClears(backend: DataPathTests.Backend) throws {
        let sectors = UInt64(1) << 22  // 2 GiB, sparse
        var file: Int32 = -1
        let harness = try IsolationHarness { daemon in
            if backend == .tmpfs {
                let path = "/dev/shm/vbd-\(daemon.directory.lastPathComponent)-A0.img"
                file = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
                defer { unlink(path) }
                guard file >= 0, ftruncate(file, off_t(sectors * 512)) == 0 else { throw FrontendError.system(.current) }
                try daemon.call("bdev_uring_create", ["filename": .string(path), "name": "A0", "block_size": 512])
            } else {
                try DataPathTests.createBdev(daemon, backend, name: "A0", sectors: sectors)
            }
            try daemon.call("vhost_create_blk_controller", ["ctrlr": "attacker", "dev_name": "A0"])
        }
        defer {
            harness.close()
            if file >= 0 { Glibc.close(file) }
        }
        let memory = try FrontendMemory(size: 40 << 20)
        defer { memory.close() }
        let attacker = try DataPathTests.attach(harness.daemon, "attacker", memory: memory, queues: 1)
        defer { attacker.close() }
        let clears = try ClearRounds(attacker.driverQueue(0), memory: memory, sectors: UInt32(sectors), file: file >= 0 ? file : nil)
        let report = try harness.measure("huge DISCARD/WRITE_ZEROES (\(backend))", attack: LoopAttack(clears.step, priority: .idle)) {
            let t = clears.tally
            #expect(t.discards > 0 && t.writeZeroes > 0, "no clear of the whole disk completed")
            #expect(t.failures.isEmpty, "\(t.failures)")
            let zeroes = clears.readsBackZeroes()
            #expect(zeroes, "the disk does not read back zeroes after the last clear")
            return "\(t.discards) DISCARDs and \(t.writeZeroes) WRITE_ZEROES of 2 GiB after \(t.writes) writes of "
                + "\(backend == .tmpfs ? 16 : 4) MiB, \(t.failures.count) failed; reads back zeroes: \(zeroes)"
        }
        // Freeing what a round wrote costs the reactor 1-2 ms of CPU per MiB, in chunks of about
        // 20 us (`LargeClears`). Against a debug daemon (dynamic exclusivity checks, thread
        // assertions) the neighbour's p99 reached 2.0-2.4 ms against 0.23-0.33 ms solo on this
        // 2-CPU machine; against the release daemon, as shipped, it stays within the bounds.
        report.check()
    }

    @Test func memfdShrinkPastFourThousandGuardedRanges() throws {
        var holders: [VhostUserFrontend] = []
        let harness = try IsolationHarness { daemon in
            try Self.attackerController(daemon)
            holders = try Self.guardedRangeHolders(daemon, sessions: 520)
        }
        defer {
            harness.close()
            for f in holders { f.close() }
        }
        let shrinks = SessionAttacker(harness.daemon, SessionAttacker.shrink)
        let reason = "the frontend shrank memory it shares with the daemon"
        let report = try harness.measure("memfd shrink past 4096 guarded ranges", attack: LoopAttack(shrinks.step, priority: .idle)) {
            let (done, failures) = shrinks.tally
            #expect(done > 0, "no shrink was done")
            #expect(failures.isEmpty, "\(failures)")
            let logged = harness.daemon.log.components(separatedBy: reason).count - 1
            #expect(logged == done, "\(done) shrinks, \(logged) log lines")
            #expect(!harness.daemon.log.contains("SET_MEM_TABLE refused"))
            return "\(done) shrinks with 4,160+ guarded ranges, each disconnected (\(logged) '\(reason)' lines), \(failures.count) failures"
        }
        // Each shrink ends a session and the attacker's next one maps a new table (25-30 a
        // second): that is control-thread work, on the control CPUs (ControlCPUs). A debug
        // daemon spends 11-17 % of a CPU on it, and on this 2-CPU machine the neighbour's driver
        // then waited for a CPU 30 % of the time and its p99 reached 2-3.5x solo; the release
        // daemon, as shipped, spends 5-7 % and the p99 stays at 0.5-0.9x solo. The attacker's
        // own set-up of each session (a memfd, a handshake, a round trip: a fifth of a CPU) runs
        // at SCHED_IDLE, as its own vCPU's work would on a real host: at normal priority a
        // fresh-clone CI run had the neighbour's driver waiting for a CPU 24-25 % of the time
        // and its p99 at 2.1-2.9x solo, the daemon's threads unchanged.
        report.check()
    }

    /// A frontend asks for 100 TiB of guest memory (eight 12.5 TiB regions
    /// over one sparse memfd), again and again, a new session each time: the
    /// session budget (`--max-session-memory`, 64 GiB by default) refuses
    /// each table before mapping it, and the frontend is disconnected with a
    /// log line (`TenantBudgetTests`).
    @Test func hugeSparseMemoryTables() throws {
        let sparse = try Memfd.create(name: "sparse-guest", size: Int(TenantBudgetTests.slice))
        defer { sparse.close() }
        try Self.measureSessions(
            "100 TiB sparse memory tables", what: "100 TiB memory tables",
            line: "SET_MEM_TABLE asks to map 100.0 TiB (109951162777600 bytes) of guest memory in 8 regions"
        ) { [sparse] in try SessionAttacker.hugeMemoryTable($0, sparse: sparse) }
    }

    /// A frontend that negotiated dirty logging hands over a 1 TiB dirty log
    /// beside its 16 MiB memory table, again and again: the log must fit
    /// the table, and the frontend is disconnected with a log line.
    @Test func hugeDirtyLogs() throws {
        let log = try Memfd.create(name: "sparse-log", size: 1 << 40)
        defer { log.close() }
        try Self.measureSessions(
            "1 TiB dirty logs", what: "1 TiB dirty logs",
            line: "SET_LOG_BASE asks for a dirty log of 1.0 TiB (1099511627776 bytes), more than the memory table needs"
        ) { [log] in try SessionAttacker.hugeDirtyLog($0, log: log) }
    }

    /// A frontend publishes a head past the end of its descriptor table
    /// (virtio 1.2 §2.7.6: an avail ring entry indexes that table), again and
    /// again: the queue is broken, and the frontend is disconnected with the
    /// reason.
    @Test func brokenRings() throws {
        try Self.measureSessions(
            "broken rings", what: "broken rings", line: "disconnecting frontend: queue 0: the guest's ring is broken",
            SessionAttacker.brokenRing)
    }

    /// The harness with controller `attacker`, attacked by one `session`
    /// after another (`SessionAttacker`), each of which must end with `line`
    /// in the daemon's log.
    static func measureSessions(
        _ name: String, what: String, line: String, sourceLocation: SourceLocation = #_sourceLocation,
        _ session: @escaping @Sendable (String) throws -> Void
    ) throws {
        let harness = try IsolationHarness { daemon in try Self.attackerController(daemon) }
        defer { harness.close() }
        let attacker = SessionAttacker(harness.daemon, session)
        let report = try harness.measure(name, attack: LoopAttack(attacker.step)) {
            try Self.sessionOutcome(harness.daemon, attacker, line: line, what: what)
        }
        report.check(sourceLocation: sourceLocation)
    }

    /// Checks that every hostile session was disconnected with a log line
    /// containing `line`, and describes the outcome.
    static func sessionOutcome(_ daemon: DaemonProcess, _ attacker: SessionAttacker, line: String, what: String) throws -> String {
        let (done, failures) = attacker.tally
        #expect(done > 0, "no hostile session was made")
        #expect(failures.isEmpty, "\(failures)")
        // The log line is written as the session ends; the last may still be on its way.
        let deadline = ContinuousClock.now + .seconds(2)
        var logged = daemon.log.components(separatedBy: line).count - 1
        while logged < done && ContinuousClock.now < deadline {
            usleep(20_000)
            logged = daemon.log.components(separatedBy: line).count - 1
        }
        #expect(logged == done, "\(done) sessions, \(logged) log lines '\(line)'")
        return "\(done) \(what), each disconnected (\(logged) '\(line)' lines), \(failures.count) failures"
    }

    /// Connections flood the controller listeners while the daemon is out
    /// of descriptors (RLIMIT_NOFILE lowered with prlimit(1)): accept(2)
    /// fails with EMFILE, the daemon takes each connection off the queue with
    /// its reserve descriptor and closes it, and does not spin.
    @Test func emfileOnAControllerListener() throws {
        let harness = try IsolationHarness { daemon in
            for i in 0..<ListenerEMFILETests.controllers {
                try daemon.call("bdev_null_create", ["name": .string("E\(i)"), "num_blocks": 2048, "block_size": 512])
                try daemon.call("vhost_create_blk_controller", ["ctrlr": .string("e\(i)"), "dev_name": .string("E\(i)")])
            }
        }
        defer { harness.close() }
        let flood = try EMFILEFlood(harness.daemon)
        let report = try harness.measure("EMFILE on a controller listener", attack: flood) {
            let t = flood.tally
            #expect(t.closedAtOnce > 0, "no connection was closed while the daemon was out of descriptors")
            #expect(t.floods > 0)
            let warnings = harness.daemon.log.components(separatedBy: "out of file descriptors").count - 1
            #expect(warnings >= 1, "no 'out of file descriptors' warning")
            // Descriptors back: a frontend is served again.
            let served = flood.servedAgain(timeout: .seconds(3))
            #expect(served == nil, "a frontend is not served after the flood: \(served ?? "")")
            return "RLIMIT_NOFILE \(t.limit): \(t.closedAtOnce) of \(t.held) held connections closed at once, "
                + "\(t.floods) flood connections; \(warnings) warning(s); served again after"
        }
        report.check()
    }

    /// A tenant who can write in an `--allowed-dir` swaps a directory on the
    /// way to its image with a symlink that leads outside
    /// (renameat2(2) RENAME_EXCHANGE), while RPC clients create and delete
    /// bdevs on the image: no create opens the file outside, in 10,000 swaps.
    @Test func symlinkSwapRaceOnAllowedDir() throws {
        let (base, allowed) = try AllowedDirRaceTests.swapLayout()
        let harness = try IsolationHarness(arguments: ["--allowed-dir", allowed], directory: URL(fileURLWithPath: base)) { _ in }
        defer { harness.close() }
        let race = SwapRace(harness.daemon, allowed: allowed)
        let attack = race.attack
        let report = try harness.measure("symlink swap on --allowed-dir", attack: attack) {
            // The attacked windows make most of the 10,000 swaps (issue 19); the rest run after the last.
            try attack.begin()
            let deadline = ContinuousClock.now + .seconds(60)
            while race.swaps.load(ordering: .relaxed) < AllowedDirRaceTests.swaps && ContinuousClock.now < deadline { usleep(10_000) }
            try attack.end()
            let t = race.tally.withLock { $0 }
            let swaps = race.swaps.load(ordering: .relaxed)
            #expect(swaps >= AllowedDirRaceTests.swaps)
            #expect(race.failedSwaps.load(ordering: .relaxed) == 0)
            #expect(t.outside == 0, "a bdev was opened on the file outside the allowed directory")
            #expect(t.inside > 0, "no create succeeded: the race was not exercised")
            #expect(t.refused > 0, "no create was refused: the swap never showed")
            #expect(t.other.isEmpty, "\(t.other)")
            return "\(swaps) swaps: \(t.inside) creates opened inside, \(t.refused) refused (\(t.refusedAtOpen) by the open), \(t.outside) outside"
        }
        report.check()
    }

    /// Hostile JSON-RPC clients: one sends a string that never ends, as
    /// fast as the socket takes it (reconnecting each time it is dropped),
    /// and four dribble a byte every few milliseconds. Each request is cut
    /// at `JSONStreamDecoder.defaultMaxBytes` with -32600 and a close; the
    /// honest client's `spdk_get_version` keeps its p99 under 50 ms.
    @Test func hostileRPCClients() throws {
        let harness = try IsolationHarness { _ in }
        defer { harness.close() }
        let clients = HostileRPC(harness.daemon.rpcSocket)
        let report = try harness.measure("hostile RPC clients", attack: clients.attack) {
            let t = clients.tally.withLock { $0 }
            #expect(t.refused > 0, "no oversized request was refused")
            #expect(t.other.isEmpty, "\(t.other)")
            let mib = H.format(Double(t.bytes) / Double(1 << 20), 0)
            return "\(t.refused) never-ending strings refused with -32600 and closed (\(mib) MiB sent), \(t.dribbled) bytes dribbled on 4 connections"
        }
        report.check()
    }

    // MARK: Attack setups

    /// A malloc controller `attacker` (2 MiB) beside the neighbour.
    static func attackerController(_ daemon: DaemonProcess) throws {
        try daemon.call("bdev_malloc_create", ["num_blocks": 4096, "block_size": 512, "name": "A0"])
        try daemon.call("vhost_create_blk_controller", ["ctrlr": "attacker", "dev_name": "A0"])
    }

    /// `sessions` connected frontends, each with a memory table of eight
    /// one-page regions in one memfd: eight guarded mappings each in the
    /// daemon. The caller closes them.
    static func guardedRangeHolders(_ daemon: DaemonProcess, sessions: Int) throws -> [VhostUserFrontend] {
        let client = try daemon.client()
        let memfd = try Memfd.create(name: "eight-regions", size: 8 << 12)
        defer { memfd.close() }
        let regions = (0..<8).map { i in
            HostileFrontendTests.region(gpa: UInt64(i) << 12, size: 1 << 12, user: 0x7000_0000_0000 + UInt64(i << 12), offset: UInt64(i) << 12)
        }
        let unused = try FrontendMemory(size: 4096)  // these sessions send their own table
        defer { unused.close() }
        var options = VhostUserFrontend.Options()
        options.useBackendChannel = false
        options.useInflight = false
        var frontends: [VhostUserFrontend] = []
        do {
            for i in 0..<sessions {
                _ = try client.call("bdev_null_create", params: ["name": .string("G\(i)"), "num_blocks": 2048, "block_size": 512])
                _ = try client.call("vhost_create_blk_controller", params: ["ctrlr": .string("g\(i)"), "dev_name": .string("G\(i)")])
                let f = try VhostUserFrontend(socketPath: daemon.socketDirectory + "/g\(i)", memory: unused, options: options)
                frontends.append(f)
                try f.connect()
                try f.channel.send(
                    HostileFrontendTests.message(.setMemTable, .memoryTable(regions), fds: [FileDescriptor](repeating: memfd, count: 8)),
                    ack: f.replyAck)
            }
        } catch {
            for f in frontends { f.close() }
            throw error
        }
        return frontends
    }
}

// MARK: - The harness

/// A daemon with one reactor (`-m 0x1`), a neighbour controller
/// `neighbour` on a malloc bdev doing verified I/O at depth 4 (each request
/// timed), and an RPC client calling `spdk_get_version` every 10 ms on one
/// connection (each call timed). `measure` alternates solo and attacked
/// windows and compares them. Reusable for any attack: give `measure` an
/// `IsolationAttack`.
final class IsolationHarness {
    /// Solo and attacked windows, each; they alternate in ABBA order.
    static let windows = 8
    /// One window's length, after `settle`. Short windows, many of them:
    /// a stall of the whole machine (other work on its 2 CPUs) then falls
    /// on solo and attacked windows alike, and the quieter quartiles skip it.
    static let window: Duration = .milliseconds(300)
    /// A window in which the hypervisor stole this share (percent) of the
    /// machine's CPU time measures the host, not the daemon (solo and
    /// attacked alike): it is taken again, up to `maximumRetakes` times,
    /// and the last one counts. Seen on this 2-vCPU guest: 12-38 % stolen
    /// for minutes, the neighbour's solo p99 at 1.2-2.4 ms against 0.3 ms.
    static let maximumSteal: UInt64 = 10
    static let maximumRetakes = 3
    /// Time left after starting or pausing an attack before a window starts.
    static let settle: Duration = .milliseconds(50)
    /// The acceptance thresholds (issue 19).
    static let minimumIOPSRatio = 0.8
    static let maximumP99Ratio = 2.0
    static let maximumRPCP99Milliseconds = 50.0

    /// The reactor's CPU (the first this process may use), and the CPU of
    /// the attacker's threads (its "vCPUs"), off the reactor's as
    /// docs/OPERATIONS.md advises (the second; nil on a 1-CPU machine).
    /// The neighbour's driver may run anywhere: pinned, it cannot leave a
    /// CPU the machine's other work crowds.
    static let reactorCPU = CPUSet.allowed().cpus.first ?? 0
    static let attackerCPU = CPUSet.allowed().cpus.dropFirst().first

    let daemon: DaemonProcess
    private let memory: FrontendMemory
    private let frontend: VhostUserFrontend
    let neighbour: NeighbourLoad
    let pinger: RPCPinger
    private var closed = false

    /// Starts the daemon with `arguments`, creates the neighbour's bdev and
    /// controller, runs `setup` (the attacker's bdevs, controllers, files),
    /// then starts the neighbour's load and the RPC client.
    init(arguments: [String] = [], directory: URL? = nil, setup: (DaemonProcess) throws -> Void) throws {
        daemon = try DaemonProcess(cpumask: CPUSet([Self.reactorCPU]).hexMask, extraArguments: arguments, directory: directory)
        do {
            try DataPathTests.createBdev(daemon, .malloc, name: "N0", sectors: 8192)
            try DataPathTests.createController(daemon, "neighbour", bdev: "N0")
            try setup(daemon)
            memory = try FrontendMemory(size: 8 << 20)
        } catch {
            daemon.stop()
            daemon.cleanUp()
            throw error
        }
        do {
            frontend = try DataPathTests.attach(daemon, "neighbour", memory: memory, queues: 1)
        } catch {
            memory.close()
            daemon.stop()
            daemon.cleanUp()
            throw error
        }
        do {
            neighbour = try NeighbourLoad(frontend: frontend)
            pinger = try RPCPinger(path: daemon.rpcSocket)
        } catch {
            frontend.close()
            memory.close()
            daemon.stop()
            daemon.cleanUp()
            throw error
        }
    }

    /// Stops the loads, the frontend and the daemon; removes its folder.
    func close() {
        guard !closed else { return }
        closed = true
        pinger.stop()
        neighbour.stop()
        frontend.close()
        memory.close()
        daemon.stop()
        daemon.cleanUp()
    }

    /// Runs `windows` solo and attacked windows, alternating; then
    /// `outcome` (after the attack's last `end`), which checks the
    /// attacker's documented outcome and describes it.
    func measure(_ name: String, attack: any IsolationAttack, outcome: () throws -> String) throws -> IsolationReport {
        var solo: [Window] = []
        var attacked: [Window] = []
        var stall: String?
        var attacking = false
        var retaken = 0
        defer { if attacking { try? attack.end() } }
        for pair in 0..<Self.windows {
            // Solo first, then attacked first (ABBA): a trend in the machine's load cancels out.
            for attackWindow in pair % 2 == 0 ? [false, true] : [true, false] {
                if attackWindow {
                    try attack.begin()
                    attacking = true
                }
                var w: Window
                var tries = 0
                repeat {
                    tries += 1
                    Self.sleep(Self.settle)
                    _ = neighbour.take()
                    _ = pinger.take()
                    let before = ThreadCPU.now(daemon: daemon.pid)
                    Self.sleep(Self.window)
                    w = neighbour.take()
                    let calls = pinger.take()
                    w.cpu = ThreadCPU.now(daemon: daemon.pid).since(before, nanoseconds: w.nanoseconds)
                    w.rpcP99 = Double(Window.percentile(calls.latencies, 0.99)) / 1e6
                    w.rpcCalls = calls.latencies.count
                } while w.cpu.steal >= Self.maximumSteal && tries <= Self.maximumRetakes
                retaken += tries - 1
                if w.latencies.isEmpty && stall == nil {
                    // Nothing completed: the daemon stalled, unless the machine did not run it. A
                    // reactor that is runnable and got no CPU time in the window was starved (its
                    // wait is counted only once it runs again); one that sleeps with requests on
                    // its ring, or spins, stalled.
                    let diagnostics = stallDiagnostics()
                    let starved = w.cpu.steal >= 10 || (reactorState() == "R" && w.cpu.reactor < 5)
                    if starved {
                        print("isolation \(name): no completion in a window, the reactor runnable but given no CPU (\(w.cpu.steal) % stolen):\n\(diagnostics)")
                    } else {
                        stall = diagnostics
                    }
                }
                if attackWindow {
                    attacked.append(w)
                    try attack.end()
                    attacking = false
                } else {
                    solo.append(w)
                }
            }
        }
        if retaken > 0 {
            print("isolation \(name): \(retaken) window(s) retaken: the hypervisor stole \(Self.maximumSteal) % or more of the CPUs in them")
        }
        let described = try outcome()
        // The neighbour still completes requests after the last window.
        _ = neighbour.take()
        Self.sleep(.milliseconds(500))
        if neighbour.take().latencies.isEmpty {
            stall = (stall ?? "") + "\nno completion in the 500 ms after the windows either:\n" + stallDiagnostics()
        }
        return IsolationReport(
            name: name, solo: solo, attacked: attacked, rpcFailures: pinger.failures, neighbour: neighbour.outcome,
            daemonRunning: daemon.isRunning, outcome: described, stall: stall, log: { [daemon] in String(daemon.log.suffix(3000)) })
    }

    /// The scheduler state of `reactor_0` (proc(5) /proc/PID/task/TID/stat: R runnable, S sleeping).
    func reactorState() -> String {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(daemon.pid)/task")) ?? []
        for tid in tasks {
            let base = "/proc/\(daemon.pid)/task/\(tid)/"
            guard (try? String(contentsOfFile: base + "comm", encoding: .utf8))?.hasPrefix("reactor_0") == true,
                  let stat = try? String(contentsOfFile: base + "stat", encoding: .utf8),
                  let paren = stat.lastIndex(of: ")")
            else { continue }
            return stat[stat.index(after: paren)...].split(separator: " ").first.map(String.init) ?? "?"
        }
        return "?"
    }

    /// Where the daemon's threads wait (proc(5): wchan, and the kernel stack
    /// as root), the neighbour's ring, and the log's end: for a window in
    /// which the neighbour completed nothing.
    func stallDiagnostics() -> String {
        var lines: [String] = []
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(daemon.pid)/task")) ?? []
        for tid in tasks.sorted() {
            let base = "/proc/\(daemon.pid)/task/\(tid)/"
            let read = { (file: String) in ((try? String(contentsOfFile: base + file, encoding: .utf8)) ?? "?").trimmingCharacters(in: .whitespacesAndNewlines) }
            let stack = read("stack").split(separator: "\n").prefix(6).joined(separator: " < ")
            lines.append("\(tid) \(read("comm")): state \(read("stat").split(separator: " ").dropFirst(2).first ?? "?"), wchan \(read("wchan")), stack \(stack)")
        }
        lines.append("neighbour: \(neighbour.ringState)")
        lines.append("log:\n" + String(daemon.log.suffix(4000)))
        return lines.joined(separator: "\n")
    }

    static func sleep(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        usleep(UInt32(seconds) * 1_000_000 + UInt32(attoseconds / 1_000_000_000_000))
    }

    static func format(_ value: Double, _ decimals: Int) -> String { String(format: "%.\(decimals)f", value) }
}

/// Where the threads that matter spent a window, in percent of it
/// (proc(5), /proc/PID/task/TID/schedstat: time on a CPU, and time
/// runnable but waiting for one). A thread that waits for a CPU is slowed
/// by CPU contention, whoever causes it: on a 2-CPU machine the
/// attacker's own driver threads, the daemon's control thread, and any
/// other work compete with the reactor and the neighbour's driver.
struct ThreadCPU: Sendable {
    /// The daemon's control loop (its main thread): on a CPU, and waiting for one.
    var control: UInt64 = 0
    var controlWaiting: UInt64 = 0
    /// The daemon's `reactor_0`: on a CPU, and waiting for one.
    var reactor: UInt64 = 0
    var reactorWaiting: UInt64 = 0
    /// The neighbour's driver thread (this process): waiting for a CPU.
    var neighbourWaiting: UInt64 = 0
    /// The attacker's threads (this process, `attack-*`): on a CPU.
    var attacker: UInt64 = 0
    /// The machine's CPU time stolen by its hypervisor, and all its CPU
    /// time (/proc/stat, in clock ticks): a virtual machine that was not
    /// run for a while stalls every thread at once.
    var steal: UInt64 = 0
    var total: UInt64 = 0

    init() {}

    /// Cumulative nanoseconds now.
    static func now(daemon pid: Int32) -> ThreadCPU {
        var t = ThreadCPU()
        for (tid, comm, run, wait) in threads(pid) {
            if tid == "\(pid)" {
                t.control = run
                t.controlWaiting = wait
            }
            if comm == "reactor_0" {
                t.reactor = run
                t.reactorWaiting = wait
            }
        }
        for (_, comm, run, wait) in threads(getpid()) {
            if comm == "neighbour" { t.neighbourWaiting = wait }
            if comm.hasPrefix("attack-") { t.attacker += run }
        }
        // The first line of /proc/stat: "cpu  user nice system idle iowait irq softirq steal ...".
        let stat = (try? String(contentsOfFile: "/proc/stat", encoding: .utf8))?.split(separator: "\n").first ?? ""
        let ticks = stat.split(separator: " ").dropFirst().compactMap { UInt64($0) }
        t.steal = ticks.count > 7 ? ticks[7] : 0
        t.total = ticks.prefix(8).reduce(0, +)
        return t
    }

    private static func threads(_ pid: Int32) -> [(tid: String, comm: String, run: UInt64, wait: UInt64)] {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
        return tasks.compactMap { tid in
            let base = "/proc/\(pid)/task/\(tid)/"
            let comm = (try? String(contentsOfFile: base + "comm", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
            let fields = ((try? String(contentsOfFile: base + "schedstat", encoding: .utf8)) ?? "")
                .split(separator: " ").compactMap { UInt64($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
            guard fields.count >= 2 else { return nil }
            return (tid, comm, fields[0], fields[1])
        }
    }

    /// Percent of `nanoseconds` spent since `before`.
    func since(_ before: ThreadCPU, nanoseconds: UInt64) -> ThreadCPU {
        let share = { (k: WritableKeyPath<ThreadCPU, UInt64>) in
            nanoseconds == 0 || self[keyPath: k] < before[keyPath: k] ? 0 : (self[keyPath: k] - before[keyPath: k]) * 100 / nanoseconds
        }
        var d = ThreadCPU()
        for k in [\ThreadCPU.control, \.controlWaiting, \.reactor, \.reactorWaiting, \.neighbourWaiting, \.attacker] { d[keyPath: k] = share(k) }
        // Stolen ticks as a share of the machine's ticks (all CPUs) over the window.
        let ticks = total >= before.total ? total - before.total : 0
        d.steal = ticks == 0 || steal < before.steal ? 0 : (steal - before.steal) * 100 / ticks
        return d
    }
}

/// What a window of the neighbour (or the RPC client) saw.
struct Window: Sendable {
    var latencies: [UInt64]
    var nanoseconds: UInt64
    /// The threads that matter over the window, in percent of it.
    var cpu = ThreadCPU()
    /// The RPC client's p99 in the window, milliseconds (about 30 calls: their slowest).
    var rpcP99 = 0.0
    /// RPC calls answered in the window.
    var rpcCalls = 0

    var iops: Double { nanoseconds == 0 ? 0 : Double(latencies.count) * 1e9 / Double(nanoseconds) }
    /// p99 in microseconds.
    var p99: Double { Double(Self.percentile(latencies, 0.99)) / 1000 }

    /// The nearest-rank percentile of `values` (0 if empty).
    static func percentile(_ values: [UInt64], _ p: Double) -> UInt64 {
        guard !values.isEmpty else { return 0 }
        let sorted = values.sorted()
        let rank = Int((p * Double(sorted.count)).rounded(.up))
        return sorted[min(max(rank, 1), sorted.count) - 1]
    }

    /// The `q` quantile of `values`, interpolated between the nearest ranks (0 if empty).
    static func quantile(_ values: [Double], _ q: Double) -> Double {
        let sorted = values.sorted()
        guard !sorted.isEmpty else { return 0 }
        let position = min(max(q, 0), 1) * Double(sorted.count - 1)
        let low = Int(position.rounded(.down))
        let high = min(low + 1, sorted.count - 1)
        return sorted[low] + (sorted[high] - sorted[low]) * (position - Double(low))
    }

    static func median(_ values: [Double]) -> Double { quantile(values, 0.5) }
}

/// The numbers of one attack, the acceptance checks and the printed line.
struct IsolationReport {
    var name: String
    var solo: [Window]
    var attacked: [Window]
    var rpcFailures: Int
    var neighbour: NeighbourLoad.Outcome
    var daemonRunning: Bool
    var outcome: String
    /// What `stallDiagnostics` saw, if the neighbour completed nothing in a window.
    var stall: String?
    var log: () -> String

    /// The quieter quartile of each kind of window: the upper quartile of
    /// IOPS, the lower quartile of p99 (`IsolationHarness.windows`).
    var soloIOPS: Double { Window.quantile(solo.map(\.iops), 0.75) }
    var attackedIOPS: Double { Window.quantile(attacked.map(\.iops), 0.75) }
    var soloP99: Double { Window.quantile(solo.map(\.p99), 0.25) }
    var attackedP99: Double { Window.quantile(attacked.map(\.p99), 0.25) }
    /// The RPC client's p99 the same way (milliseconds), and its calls in attacked windows.
    var rpcP99: Double { Window.quantile(attacked.map(\.rpcP99), 0.25) }
    var rpcSoloP99: Double { Window.quantile(solo.map(\.rpcP99), 0.25) }
    var rpcCalls: Int { attacked.map(\.rpcCalls).reduce(0, +) }
    var ratio: Double { soloIOPS == 0 ? 0 : attackedIOPS / soloIOPS }

    var line: String {
        let f = IsolationHarness.format
        return "isolation \(name): neighbour solo \(f(soloIOPS, 0)) IOPS p99 \(f(soloP99, 0)) us, "
            + "attacked \(f(attackedIOPS, 0)) IOPS (\(f(ratio * 100, 0)) %) p99 \(f(attackedP99, 0)) us; "
            + "rpc p99 \(f(rpcP99, 1)) ms (solo \(f(rpcSoloP99, 1))); attacker: \(outcome)"
    }

    /// Medians over the windows, in percent, solo -> attacked (the second line printed).
    var cpu: String {
        let m = { (w: [Window], k: KeyPath<ThreadCPU, UInt64>) in Int(Window.median(w.map { Double($0.cpu[keyPath: k]) })) }
        let both = { (k: KeyPath<ThreadCPU, UInt64>) in "\(m(solo, k)) -> \(m(attacked, k))" }
        return "isolation \(name): CPU % solo -> attacked: reactor on a CPU \(both(\.reactor)), waiting for one \(both(\.reactorWaiting)); "
            + "daemon control thread \(both(\.control)), waiting \(both(\.controlWaiting)); neighbour's driver waiting for a CPU \(both(\.neighbourWaiting)); "
            + "attacker's threads \(m(attacked, \.attacker)); stolen by the hypervisor \(both(\.steal))"
    }

    /// Each window, for a failure message.
    var windows: String {
        let f = IsolationHarness.format
        let describe = { (w: [Window]) in
            w.map {
                "\(f($0.iops, 0)) IOPS p99 \(f($0.p99, 0)) us max \(f(Double($0.latencies.max() ?? 0) / 1000, 0)) us, rpc p99 \(f($0.rpcP99, 1)) ms "
                    + "(waiting for a CPU: reactor \($0.cpu.reactorWaiting) %, control \($0.cpu.controlWaiting) %, "
                    + "driver \($0.cpu.neighbourWaiting) %; stolen \($0.cpu.steal) %)"
            }
                .joined(separator: ", ")
        }
        return "solo [\(describe(solo))], attacked [\(describe(attacked))]"
    }

    /// Prints the line and asserts every acceptance threshold (issue 19).
    func check(sourceLocation: SourceLocation = #_sourceLocation) {
        print(line)
        print(cpu)
        typealias H = IsolationHarness
        #expect(attackedP99 < H.maximumP99Ratio * soloP99, "\(name): neighbour p99 grew: \(windows)", sourceLocation: sourceLocation)
        #expect(daemonRunning, "\(name): the daemon died:\n\(log())", sourceLocation: sourceLocation)
        #expect(neighbour.errors == 0, "\(name): the neighbour saw \(neighbour.firstError ?? "")", sourceLocation: sourceLocation)
        #expect(stall == nil, "\(name): the neighbour stalled: \(windows)\n\(stall ?? "")", sourceLocation: sourceLocation)
        #expect(ratio >= H.minimumIOPSRatio, "\(name): neighbour IOPS fell to \(ratio): \(windows)", sourceLocation: sourceLocation)
        #expect(rpcCalls > 0 && rpcFailures == 0, "\(name): \(rpcFailures) RPC calls failed, \(rpcCalls) answered", sourceLocation: sourceLocation)
        #expect(rpcP99 < H.maximumRPCP99Milliseconds, "\(name): RPC p99 \(rpcP99) ms: \(windows)", sourceLocation: sourceLocation)
    }
}

/// An attack the harness switches on for each attacked window and off
/// for each solo one.
protocol IsolationAttack {
    /// Starts, or resumes, the attack.
    func begin() throws
    /// Pauses it (the attacker stays connected).
    func end() throws
}

/// An attack made of loops, each on its own thread while the attack is on.
final class LoopAttack: IsolationAttack {
    private let bodies: [(body: @Sendable () -> Void, priority: Repeater.Priority)]
    private var running: [Repeater] = []
    /// Called after each `end`, once the loops stopped.
    var afterEnd: () -> Void = {}

    init(_ body: @escaping @Sendable () -> Void, priority: Repeater.Priority = .normal, _ more: (@Sendable () -> Void, Repeater.Priority)...) {
        bodies = [(body, priority)] + more.map { (body: $0.0, priority: $0.1) }
    }

    func begin() throws {
        running = try bodies.enumerated().map { i, b in try Repeater(name: "attack-\(i)", priority: b.priority, b.body) }
    }

    func end() throws {
        for r in running { r.stop() }
        running = []
        afterEnd()
    }
}

/// A thread that calls `body` again and again until `stop()`, on
/// `IsolationHarness.attackerCPU` (an attacker's threads stand for its vCPUs).
final class Repeater: Sendable {
    enum Priority: Sendable {
        case normal
        /// SCHED_IDLE (sched(7)): runs only on a CPU nothing else wants.
        case idle
    }

    private final class Flag: Sendable {
        let stopping = Atomic<Bool>(false)
    }

    private let flag = Flag()
    private let thread: pthread_t

    init(name: String, priority: Priority = .normal, _ body: @escaping @Sendable () -> Void) throws {
        let flag = self.flag
        thread = try PosixThread.start(name: name, cpu: IsolationHarness.attackerCPU) {
            if priority == .idle {
                var param = sched_param(sched_priority: 0)
                _ = sched_setscheduler(0, 5 /* SCHED_IDLE */, &param)
            }
            while !flag.stopping.load(ordering: .acquiring) { body() }
        }
    }

    /// Ends the loop after the current call and joins the thread.
    func stop() {
        flag.stopping.store(true, ordering: .releasing)
        PosixThread.join(thread)
    }
}

// MARK: - The neighbour and the RPC client

/// Verified I/O at a small depth on a started frontend's queue 0, from
/// its own thread: each of `depth` slots writes 1 to 8 sectors of its own
/// part of the disk, reads them back and compares, again and again.
/// Every request's latency, from queuing it to collecting its used entry, goes
/// into the current window. The thread sleeps on the call eventfd (virtio
/// 1.2 §2.7.7, with VIRTIO_F_EVENT_IDX's `used_event`), as a guest does.
///
/// Depth 4 rather than 1: at depth 1 the reactor's adaptive polling
/// flips on and off with the driver's own gaps (which, on a loaded
/// machine, are longer than the 64 us window), and the neighbour's rate
/// jumps between two modes whatever the attacker does.
final class NeighbourLoad: @unchecked Sendable {  // the queue is driven only by the load's thread until `stop()` joins it
    static let depth = 4

    struct Outcome: Sendable {
        var requests = 0
        var errors = 0
        var firstError: String?
    }

    private struct State {
        var stop = false
        var outcome = Outcome()
        var latencies: [UInt64] = []
        var since = StatsTests.now()
    }

    /// One request slot: its buffers and where it is in its write, read, compare cycle.
    private struct Slot {
        let header: GuestBuffer
        let data: GuestBuffer
        let status: GuestBuffer
        let firstSector: UInt64
        var round = 0
        var reading = false
        var submitted: UInt64 = 0
        var count: Int { 1 + round % 8 }
        /// Places repeat every `span / 8` rounds; the pattern's seed
        /// (`round % 7`) differs from the last write there, since 7 does
        /// not divide the number of places.
        var sector: UInt64 { firstSector + UInt64(round * 8) % NeighbourLoad.span }
    }

    /// Sectors each slot owns (the disk has 8,192).
    static let span: UInt64 = 1016
    private let queue: DriverQueue
    private let state = Mutex(State())
    private var thread: pthread_t?
    private var slots: [Slot]
    private var slotOfHead: [UInt16: Int] = [:]
    /// Data for 1 to 8 sectors (first index: count - 1) with 7 seeds, made once.
    private let patterns: [[[UInt8]]]

    init(frontend: VhostUserFrontend) throws {
        queue = try frontend.driverQueue(0)
        let memory = frontend.memory
        slots = try (0..<Self.depth).map { i in
            Slot(header: try memory.allocate(16, alignment: 16), data: try memory.allocate(4096, alignment: 4096),
                 status: try memory.allocate(1, alignment: 1), firstSector: UInt64(i) * 2048)
        }
        patterns = (1...8).map { count in (0..<7).map { seed in DataPathTests.pattern(count * 512, seed: seed) } }
        thread = try PosixThread.start(name: "neighbour") { [self] in run() }
    }

    var outcome: Outcome { state.withLock { $0.outcome } }

    /// The ring as this side sees it (read without the driver thread's lock: for diagnostics only).
    var ringState: String {
        "avail idx \(queue.publishedAvailIdx), used idx \(queue.usedIdx), collected \(queue.lastUsedIdx), "
            + "in flight \(queue.inFlightCount), used flags \(queue.usedFlags), avail_event \(queue.availEvent)"
    }

    /// The latencies since the last call, and the time they span.
    func take() -> Window {
        let now = StatsTests.now()
        return state.withLock { s in
            let w = Window(latencies: s.latencies, nanoseconds: now - s.since)
            s.latencies = []
            s.latencies.reserveCapacity(w.latencies.count + 1024)
            s.since = now
            return w
        }
    }

    func stop() {
        state.withLock { $0.stop = true }
        if let thread { PosixThread.join(thread) }
        thread = nil
    }

    private func run() {
        for i in slots.indices { submit(i) }
        queue.publishAndKick()
        while !state.withLock({ $0.stop }) {
            var pfd = pollfd(fd: queue.callFD.fd.rawValue, events: Int16(POLLIN), revents: 0)
            if Glibc.poll(&pfd, 1, 50) > 0 { queue.callFD.drain() }
            var submitted = false
            while true {
                while let used = queue.popUsed() {
                    complete(used)
                    submitted = true
                }
                // `used_event` is written; look again before sleeping, or a completion published meanwhile is not signalled.
                atomicMemoryFence(ordering: .sequentiallyConsistent)
                if queue.peekUsedID() == nil { break }
            }
            if submitted { queue.publishAndKick() }
        }
        // Collect what is still in flight, so that the queue is idle when the frontend stops it.
        let deadline = ContinuousClock.now + .seconds(5)
        while queue.inFlightCount > 0 && ContinuousClock.now < deadline {
            if queue.popUsed() == nil { usleep(1000) }
        }
        if queue.inFlightCount > 0 { fail("\(queue.inFlightCount) requests never completed: \(ringState)") }
    }

    /// Puts slot `i`'s next request (its write, or the read that checks it) on the ring, unpublished.
    private func submit(_ i: Int) {
        let slot = slots[i]
        let count = slot.count
        slot.header.write(BlkWire.header(type: slot.reading ? BlkWire.typeIn : BlkWire.typeOut, sector: slot.sector))
        if slot.reading {
            memset(slot.data.pointer, 0xee, count * 512)
        } else {
            slot.data.write(patterns[count - 1][slot.round % 7])
        }
        slot.status.pointer.storeBytes(of: 0xff, as: UInt8.self)
        let data = ChainBuffer(gpa: slot.data.gpa, length: UInt32(count * 512), writable: slot.reading)
        do {
            let head = try queue.addChain([ChainBuffer(slot.header, writable: false), data, ChainBuffer(slot.status, writable: true)])
            slotOfHead[head] = i
            slots[i].submitted = StatsTests.now()
        } catch {
            fail("cannot queue a request: \(error)")
        }
    }

    private func complete(_ used: UsedElement) {
        let now = StatsTests.now()
        guard let head = UInt16(exactly: used.id), let i = slotOfHead.removeValue(forKey: head) else {
            fail("used id \(used.id) is no request in flight")
            return
        }
        let slot = slots[i]
        let count = slot.count
        let status = slot.status.pointer.load(as: UInt8.self)
        var failure: String?
        if status != BlkWire.statusOK {
            failure = "\(slot.reading ? "read" : "write") at \(slot.sector): status \(status)"
        } else if slot.reading && slot.data.read(count: count * 512) != patterns[count - 1][slot.round % 7] {
            failure = "read at \(slot.sector) returned other data"
        }
        state.withLock { s in
            s.latencies.append(now - slot.submitted)
            s.outcome.requests += 1
            if let failure {
                s.outcome.errors += 1
                if s.outcome.firstError == nil { s.outcome.firstError = failure }
            }
        }
        if slot.reading { slots[i].round += 1 }
        slots[i].reading.toggle()
        submit(i)
    }

    private func fail(_ why: String) {
        state.withLock { s in
            s.outcome.errors += 1
            if s.outcome.firstError == nil { s.outcome.firstError = why }
        }
    }
}

/// `spdk_get_version` every 10 ms on one connection, each call timed (one
/// connection: it needs no new descriptor in the daemon, so it is also
/// served while the daemon is out of them).
final class RPCPinger: Sendable {
    private struct State {
        var stop = false
        var latencies: [UInt64] = []
        var failures = 0
        var since = StatsTests.now()
    }

    private let state = Mutex(State())
    private let thread = Mutex<pthread_t?>(nil)

    init(path: String) throws {
        let client = try RPCClient(path: path, timeout: .seconds(5))
        let box = ClientBox(client)
        let started = try PosixThread.start(name: "rpc-pinger") { [self, box] in run(box) }
        thread.withLock { $0 = started }
    }

    var failures: Int { state.withLock { $0.failures } }

    func take() -> Window {
        let now = StatsTests.now()
        return state.withLock { s in
            let w = Window(latencies: s.latencies, nanoseconds: now - s.since)
            s.latencies = []
            s.since = now
            return w
        }
    }

    func stop() {
        state.withLock { $0.stop = true }
        if let t = thread.withLock({ $0 }) { PosixThread.join(t) }
        thread.withLock { $0 = nil }
    }

    private func run(_ box: ClientBox) {
        var next = StatsTests.now()
        while !state.withLock({ $0.stop }) {
            let t0 = StatsTests.now()
            let ok = (try? box.client.call("spdk_get_version"))?["version"] != nil
            let t1 = StatsTests.now()
            state.withLock { s in
                if ok { s.latencies.append(t1 - t0) } else { s.failures += 1 }
            }
            next += 10_000_000
            let now = StatsTests.now()
            if next > now { usleep(UInt32((next - now) / 1000)) } else { next = now }
        }
    }
}

/// An RPC client handed to the one thread that uses it.
private final class ClientBox: @unchecked Sendable {  // used by one thread only after init
    let client: RPCClient
    init(_ client: RPCClient) { self.client = client }
}

// MARK: - Attackers

/// Reads on an attacker's started queue, four at a time, without
/// interrupts: the used ring is polled every millisecond (virtio 1.2 §2.7.8);
/// a batch that makes no progress for 10 ms is kicked again. `step` is
/// one poll; the state carries over between attack windows.
final class PolledReads: @unchecked Sendable {  // `step` runs on one attack thread at a time; `LoopAttack.end` joins it before anyone reads
    static let batch = 4
    private let queue: DriverQueue
    private let slots: [(header: GuestBuffer, data: GuestBuffer, status: GuestBuffer)]
    private var slotOfHead: [UInt16: Int] = [:]
    private var lastProgress = StatsTests.now()
    private var windowsWithCompletions = Set<Int>()
    private let counts = Mutex<(done: Int, failed: Int, windows: Int, sawWindow: Bool)>((0, 0, 0, false))
    private(set) var inFlight = 0

    /// Reads of `bytes` each (one descriptor, as SeaBIOS sends them).
    init(_ queue: DriverQueue, memory: FrontendMemory, bytes: Int = 512) throws {
        self.queue = queue
        slots = try (0..<Self.batch).map { i in
            let header = try memory.allocate(16, alignment: 16)
            header.write(BlkWire.header(type: BlkWire.typeIn, sector: UInt64(i)))
            return (header, try memory.allocate(bytes, alignment: 4096), try memory.allocate(1, alignment: 1))
        }
    }

    /// Completed and failed requests, and in how many attack windows some completed.
    var tally: (done: Int, failed: Int, windows: Int) {
        counts.withLock { ($0.done, $0.failed, $0.windows + ($0.sawWindow ? 1 : 0)) }
    }

    /// Called by `LoopAttack` bodies: one round of submitting or polling.
    var step: @Sendable () -> Void { { [self] in poll() } }

    private func poll() {
        if inFlight == 0 {
            for (i, slot) in slots.enumerated() {
                slot.status.pointer.storeBytes(of: 0xff, as: UInt8.self)
                guard let head = try? queue.addChain([
                    ChainBuffer(slot.header, writable: false), ChainBuffer(slot.data, writable: true), ChainBuffer(slot.status, writable: true),
                ]) else { break }
                slotOfHead[head] = i
                inFlight += 1
            }
            queue.publishAndKick(force: true)
            lastProgress = StatsTests.now()
        }
        while let used = queue.popUsed() {
            inFlight -= 1
            lastProgress = StatsTests.now()
            let ok = UInt16(exactly: used.id).flatMap { slotOfHead.removeValue(forKey: $0) }
                .map { slots[$0].status.pointer.load(as: UInt8.self) == BlkWire.statusOK } ?? false
            counts.withLock { c in
                if ok { c.done += 1 } else { c.failed += 1 }
                c.sawWindow = true
            }
        }
        if inFlight > 0 {
            if StatsTests.now() - lastProgress > 10_000_000 {
                queue.kickFD.signal()
                lastProgress = StatsTests.now()
            }
            usleep(1000)
        }
    }

    /// Marks the end of an attack window (for `tally.windows`).
    func endWindow() {
        counts.withLock { c in
            if c.sawWindow { c.windows += 1 }
            c.sawWindow = false
        }
    }
}

/// Rounds of four 16 MiB writes (64 MiB made resident), then one DISCARD
/// or WRITE_ZEROES (alternately) of the whole 2 GiB disk, each request
/// waited for by polling the used ring. `step` is one round.
final class ClearRounds: @unchecked Sendable {  // `step` runs on one attack thread at a time; `LoopAttack.end` joins it before anyone reads
    struct Tally: Sendable {
        var writes = 0
        var discards = 0
        var writeZeroes = 0
        var failures: [String] = []
    }

    private let queue: DriverQueue
    private let sectors: UInt32
    private let header: GuestBuffer
    private let data: GuestBuffer
    private let segment: GuestBuffer
    private let status: GuestBuffer
    private var round = 0
    private let counts = Mutex(Tally())
    private let file: Int32?

    init(_ queue: DriverQueue, memory: FrontendMemory, sectors: UInt32, file: Int32?) throws {
        self.queue = queue
        self.sectors = sectors
        self.file = file
        header = try memory.allocate(16, alignment: 16)
        data = try memory.allocate(16 << 20, alignment: 4096)
        memset(data.pointer, 0x5a, data.length)
        segment = try memory.allocate(16, alignment: 16)
        status = try memory.allocate(1, alignment: 1)
    }

    var tally: Tally { counts.withLock { $0 } }

    var step: @Sendable () -> Void { { [self] in clearRound() } }

    private func clearRound() {
        for i in 0..<(file == nil ? 1 : 4) {
            let sector = UInt64((round * 4 + i) % 64) * (16 << 20) / 512
            if let file {
                if pwrite(file, data.pointer, data.length, off_t(sector * 512)) == data.length { counts.withLock { $0.writes += 1 } }
            } else if run(BlkWire.typeOut, sector: sector, [ChainBuffer(gpa: data.gpa, length: 4 << 20, writable: false)]) {
                counts.withLock { $0.writes += 1 }
            }
        }
        let discard = round % 2 == 0
        segment.write(BlkSegment(sector: 0, sectors: sectors).bytes)
        if run(discard ? BlkWire.typeDiscard : BlkWire.typeWriteZeroes, sector: 0, [ChainBuffer(segment, writable: false)]) {
            counts.withLock { if discard { $0.discards += 1 } else { $0.writeZeroes += 1 } }
        }
        round += 1
        // RAM is refilled through the reactor (page faults on fresh pages, the tenant's own
        // writes): paced, so that the clears, not the refill, are what is measured.
        if file == nil { usleep(30_000) }
    }

    /// The first 4 KiB read back as zeroes (after a round, which ends with a clear).
    func readsBackZeroes() -> Bool {
        memset(data.pointer, 0xee, 4096)
        guard run(BlkWire.typeIn, sector: 0, [ChainBuffer(gpa: data.gpa, length: 4096, writable: true)]) else { return false }
        return data.read(count: 4096).allSatisfy { $0 == 0 }
    }

    /// One request, its used entry polled for (up to 30 s); whether its status was OK.
    private func run(_ type: UInt32, sector: UInt64, _ body: [ChainBuffer]) -> Bool {
        header.write(BlkWire.header(type: type, sector: sector))
        status.pointer.storeBytes(of: 0xff, as: UInt8.self)
        do {
            _ = try queue.addChain([ChainBuffer(header, writable: false)] + body + [ChainBuffer(status, writable: true)])
        } catch {
            fail("type \(type): \(error)")
            return false
        }
        queue.publishAndKick(force: true)
        let deadline = StatsTests.now() + 30_000_000_000
        while queue.popUsed() == nil {
            if StatsTests.now() > deadline {
                fail("type \(type) at \(sector): no used entry in 30 s")
                return false
            }
            usleep(200)
        }
        let value = status.pointer.load(as: UInt8.self)
        if value != BlkWire.statusOK { fail("type \(type) at \(sector): status \(value)") }
        return value == BlkWire.statusOK
    }

    private func fail(_ why: String) {
        counts.withLock { if $0.failures.count < 5 { $0.failures.append(why) } }
    }
}

/// One hostile session after another on controller `attacker`, each made
/// by `body` and ended by the daemon (it waits for the disconnect): the
/// previous session is gone before the next connects, since the
/// controller serves one frontend at a time.
final class SessionAttacker: Sendable {
    private let daemon: DaemonProcess
    private let body: @Sendable (String) throws -> Void
    private let state = Mutex<(done: Int, failures: [String])>((0, []))

    /// `body` gets the controller's socket path and returns once the daemon
    /// disconnected it (or throws).
    init(_ daemon: DaemonProcess, _ body: @escaping @Sendable (String) throws -> Void) {
        self.daemon = daemon
        self.body = body
    }

    var tally: (done: Int, failures: [String]) { state.withLock { $0 } }

    var step: @Sendable () -> Void { { [self] in once() } }

    private func once() {
        do {
            try waitForNoSession()
            try body(daemon.socketDirectory + "/attacker")
            state.withLock { $0.done += 1 }
        } catch {
            state.withLock { if $0.failures.count < 5 { $0.failures.append("\(error)") } }
            usleep(50_000)
        }
    }

    /// The previous session has ended (a new one would be refused).
    private func waitForNoSession() throws {
        let client = try daemon.client()
        for _ in 0..<200 {
            let c = try client.call("vhost_get_controllers", params: ["name": "attacker"])
            if c.arrayValue?.first?["sessions"]?.arrayValue?.isEmpty == true { return }
            usleep(5_000)
        }
        throw FrontendError.timeout("the previous session of attacker did not end")
    }

    /// The daemon closed `f`'s connection within 5 s.
    static func disconnected(_ f: VhostUserFrontend) throws {
        guard f.channel.waitForClose(timeout: .seconds(5)) else { throw FrontendError.timeout("the daemon kept the connection") }
    }

    /// Connects, makes a round trip, then shrinks its memory under a queued
    /// read and kicks (as `HostileFrontendTests.shrinkUnderARunningQueue`).
    static func shrink(_ socket: String) throws {
        let f = try HostileFrontendTests.startedFrontend(socket)
        defer { f.close(); f.memory.close() }
        guard try HostileFrontendTests.roundTrip(f) else { throw FrontendError.protocolViolation("round trip failed before the shrink") }
        let (q, _) = try HostileFrontendTests.pushRequestWithDataAbove4MiB(f, write: false)
        usleep(20_000)  // past the reactor's polling phase: it waits for a kick
        guard ftruncate(f.memory.fd.rawValue, 4 << 20) == 0 else { throw FrontendError.system(.current) }
        q.publish()
        q.kickFD.signal()
        try disconnected(f)
    }

    /// Asks for 100 TiB of guest memory: eight 12.5 TiB regions over
    /// `sparse`, a memfd of that size (nothing to pay).
    static func hugeMemoryTable(_ socket: String, sparse: FileDescriptor) throws {
        let slice = TenantBudgetTests.slice
        let table = (0..<8).map {
            MemoryRegionDescriptor(guestPhysAddr: UInt64($0) * slice, size: slice, userAddr: UInt64($0 + 1) << 44, mmapOffset: 0)
        }
        let tiny = try FrontendMemory(size: 1 << 20)
        defer { tiny.close() }
        let f = try VhostUserFrontend(socketPath: socket, memory: tiny)
        defer { f.close() }
        try f.connect()
        try f.setFeatures(f.deviceFeatures.intersection(f.options.wantedFeatures))
        var setMemTable = VhostUserMessage(request: .setMemTable, payload: .memoryTable(table), fds: [FileDescriptor](repeating: sparse, count: 8))
        setMemTable.header.flags |= VhostUserHeader.flagNeedReply
        try f.channel.send(setMemTable)
        try disconnected(f)
    }

    /// Starts a queue on 16 MiB of memory with dirty logging negotiated,
    /// makes a round trip, then hands over `log`, a 1 TiB memfd, as its
    /// dirty log.
    static func hugeDirtyLog(_ socket: String, log: FileDescriptor) throws {
        let memory = try FrontendMemory(size: 16 << 20)
        defer { memory.close() }
        var options = VhostUserFrontend.Options()
        options.wantedFeatures.insert(.logAll)
        options.wantedProtocolFeatures.insert(.logSHMFD)
        let f = try VhostUserFrontend(socketPath: socket, memory: memory, options: options)
        defer { f.close() }
        try f.connect()
        try f.start(queueCount: 1, queueSize: 128)
        guard try HostileFrontendTests.roundTrip(f) else { throw FrontendError.protocolViolation("round trip failed before the log") }
        try f.channel.send(VhostUserMessage(request: .setLogBase, payload: .log(size: 1 << 40, offset: 0), fds: [log]))
        try disconnected(f)
    }

    /// Starts a queue, makes a round trip, then publishes a head past the
    /// end of its descriptor table (128 entries) and kicks.
    static func brokenRing(_ socket: String) throws {
        let f = try HostileFrontendTests.startedFrontend(socket)
        defer { f.close(); f.memory.close() }
        guard try HostileFrontendTests.roundTrip(f) else { throw FrontendError.protocolViolation("round trip failed before the broken ring") }
        let q = try f.driverQueue(0)
        q.pushAvail(head: 4000)
        q.publishAndKick(force: true)
        try disconnected(f)
    }
}

/// The daemon out of descriptors (`ListenerEMFILETests`): RLIMIT_NOFILE
/// lowered to leave 8 free, then each attacked window holds a connection
/// to each of 16 controllers and floods the last with connections; a
/// solo window closes them all.
final class EMFILEFlood: IsolationAttack, @unchecked Sendable {  // begin/end from the test's thread; the flood loop touches only `state`
    struct Tally: Sendable {
        var limit = 0
        var held = 0
        var closedAtOnce = 0
        var floods = 0
    }

    private let daemon: DaemonProcess
    private var held: [FileDescriptor] = []
    private var flood: Repeater?
    private let state = Mutex(Tally())

    init(_ daemon: DaemonProcess) throws {
        self.daemon = daemon
        usleep(100_000)  // the setup's RPC connections are closed
        let limit = ListenerEMFILETests.limit(leaving: ListenerEMFILETests.room, open: ListenerEMFILETests.descriptors(daemon.pid))
        let lowered = try runCommand("/usr/bin/prlimit", ["--pid", "\(daemon.pid)", "--nofile=\(limit):\(limit)"])
        guard lowered.status == 0 else { throw FrontendError.invalidArgument("prlimit: \(lowered.output)") }
        state.withLock { $0.limit = limit }
    }

    var tally: Tally { state.withLock { $0 } }

    func begin() throws {
        let n = ListenerEMFILETests.controllers
        for i in 0..<n {
            if let fd = Self.connect(daemon.socketDirectory + "/e\(i)") { held.append(fd) }
        }
        let path = daemon.socketDirectory + "/e\(n - 1)"
        flood = try Repeater(name: "attack-flood") { [self] in
            if let fd = Self.connect(path) {
                fd.close()
                state.withLock { $0.floods += 1 }
            }
            usleep(500)
        }
    }

    /// A non-blocking connect (a full listen backlog fails with EAGAIN instead of waiting).
    static func connect(_ path: String) -> FileDescriptor? {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { return nil }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in raw.copyBytes(from: Array(path.utf8.prefix(raw.count - 1))) }
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, __CONST_SOCKADDR_ARG(__sockaddr__: $0), socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard rc == 0 else {
            Glibc.close(fd)
            return nil
        }
        return FileDescriptor(fd)
    }

    /// nil once a frontend connecting to the flooded controller is answered GET_FEATURES
    /// (within `timeout`); else what went wrong last.
    func servedAgain(timeout: Duration) -> String? {
        let deadline = ContinuousClock.now + timeout
        var last = "not tried"
        while ContinuousClock.now < deadline {
            do {
                let channel = try VhostUserChannel(path: daemon.socketDirectory + "/e\(ListenerEMFILETests.controllers - 1)", timeout: .milliseconds(500))
                defer { channel.close() }
                _ = try channel.requestU64(.getFeatures)
                return nil
            } catch {
                last = "\(error)"
                usleep(50_000)
            }
        }
        return last
    }

    func end() throws {
        flood?.stop()
        flood = nil
        // A connection the daemon closed at once (it had no descriptor for it) reads end of file.
        var closed = 0
        for fd in held {
            var pfd = pollfd(fd: fd.rawValue, events: Int16(POLLIN), revents: 0)
            var byte: UInt8 = 0
            if poll(&pfd, 1, 0) == 1 && recv(fd.rawValue, &byte, 1, Int32(MSG_DONTWAIT)) == 0 { closed += 1 }
            fd.close()
        }
        let count = held.count
        held = []
        state.withLock { t in
            t.held += count
            t.closedAtOnce += closed
        }
    }
}

/// `AllowedDirRaceTests` as an attack: a swapper and two creators.
final class SwapRace: Sendable {
    let tally = Mutex(AllowedDirRaceTests.Tally())
    let swaps = Atomic<Int>(0)
    let failedSwaps = Atomic<Int>(0)
    private let daemon: DaemonProcess
    private let allowed: String

    init(_ daemon: DaemonProcess, allowed: String) {
        self.daemon = daemon
        self.allowed = allowed
    }

    var attack: LoopAttack { LoopAttack(swap, (create(0), .normal), (create(1), .normal)) }

    private var swap: @Sendable () -> Void {
        { [self] in
            if renameat2(AT_FDCWD, allowed + "/dir", AT_FDCWD, allowed + "/swap", AllowedDirRaceTests.renameExchange) != 0 {
                failedSwaps.add(1, ordering: .relaxed)
            }
            swaps.add(1, ordering: .relaxed)
            usleep(100)
        }
    }

    /// One create (and delete) per call, on a new connection each time.
    private func create(_ index: Int) -> @Sendable () -> Void {
        { [self] in
            let name = "R\(index)"
            do {
                let client = try daemon.client()
                _ = try client.call("bdev_uring_create", params: ["name": .string(name), "filename": .string(allowed + "/dir/disk.img")])
                let blocks = (try? client.call("bdev_get_bdevs", params: ["name": .string(name)]))?.arrayValue?.first?["num_blocks"]
                tally.withLock { t in
                    switch blocks {
                    case .int(2048): t.inside += 1
                    case .int(4096): t.outside += 1
                    default: t.other.append("num_blocks \(String(describing: blocks))")
                    }
                }
                _ = try? client.call("bdev_uring_delete", params: ["name": .string(name)])
            } catch RPCClientError.rpc(let error) {
                tally.withLock { t in
                    if error.code == -Int(EPERM) {
                        t.refused += 1
                        if error.message.contains("while it was being opened") { t.refusedAtOpen += 1 }
                    } else if t.other.count < 10 { t.other.append("\(error.code): \(error.message)") }
                }
            } catch {
                tally.withLock { if $0.other.count < 10 { $0.other.append("creator \(index): \(error)") } }
                usleep(10_000)
            }
        }
    }
}

/// A never-ending JSON string, sent as fast as the daemon reads it, on a
/// new connection each time the daemon drops it; and four connections
/// that dribble one byte every 2 ms, replaced every 50 ms.
final class HostileRPC: Sendable {
    struct Tally: Sendable {
        var refused = 0
        var bytes = 0
        var dribbled = 0
        var other: [String] = []
    }

    let tally = Mutex(Tally())
    private let path: String

    init(_ path: String) { self.path = path }

    var attack: LoopAttack { LoopAttack(flood, (dribble, .normal)) }

    /// One connection: a string that never ends, until the daemon answers -32600 and hangs up.
    private var flood: @Sendable () -> Void {
        { [self] in
            do {
                let client = try RPCClient(path: path, timeout: .seconds(5))
                try client.sendRaw(Array("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"".utf8))
                let chunk = [UInt8](repeating: UInt8(ascii: "x"), count: 64 << 10)
                var sent = 0
                while true {
                    do { try client.sendRaw(chunk) } catch { break }
                    sent += chunk.count
                    if sent > 64 << 20 { break }
                }
                let response = try client.readResponse()
                tally.withLock { t in
                    t.bytes += sent
                    if response["error"]?["code"] == .int(-32600) { t.refused += 1 } else if t.other.count < 10 { t.other.append("\(response)") }
                }
            } catch {
                tally.withLock { if $0.other.count < 10 { $0.other.append("flood: \(error)") } }
                usleep(10_000)
            }
        }
    }

    /// Four connections, each sent one byte of a never-ending request every 2 ms for 50 ms, then new ones.
    private var dribble: @Sendable () -> Void {
        { [self] in
            guard let fds = try? (0..<4).map({ _ in try UnixSocket.connect(path: path) }) else {
                tally.withLock { $0.other.append("dribble: no connection") }
                usleep(100_000)
                return
            }
            defer { fds.forEach { $0.close() } }
            let start = Array("{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"".utf8)
            for fd in fds { try? UnixSocket.sendAll(fd, start) }
            for _ in 0..<25 {
                for fd in fds {
                    if (try? UnixSocket.sendAll(fd, [UInt8(ascii: "y")])) != nil { tally.withLock { $0.dribbled += 1 } }
                }
                usleep(2_000)
            }
        }
    }
}
