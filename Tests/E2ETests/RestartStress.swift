import DaemonTestSupport
import Foundation
import JSONRPC
#if canImport(Glibc)
import Glibc
#endif

/// SplitMix64 (Steele, Lea and Flood, "Fast Splittable Pseudorandom Number
/// Generators", OOPSLA 2014): a seeded generator, so that a failing stress
/// run's kill times can be replayed with the seed it printed.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// The pieces of `RestartGuestTests.restartStress`: the guest's fio loop,
/// the host's watch over guest and daemon, and the evidence a failure leaves.
enum RestartStress {
    /// `kill -9` + restart cycles per run.
    static let restarts = 20
    /// How long the guest's I/O runs against a daemon before it is killed, in seconds.
    static let lifetime: ClosedRange<Double> = 1.5...4.0
    /// After its lifetime, the daemon is killed as soon as it holds requests,
    /// or after this many more seconds if it holds none.
    static let aimSeconds = 1.0
    /// The guest kills a fio run that has not finished after this long (`timeout`).
    static let fioTimeoutSeconds = 60
    /// Written into the disk's first block by the host: the guest ends its loop
    /// after the fio run under way (fio's jobs start at 1 MiB and never touch it).
    static let stopMarker = "E2E-STOP"
    /// What the guest prints when a fio run failed or did not end: the host
    /// then takes its evidence while the guest waits.
    static let stallMarker = "E2E-STALL:"
    /// Kernel messages that mean the guest saw the restarts (a failed request,
    /// a task stuck in D state, a crash).
    static let kernelErrorMarkers = [
        "I/O error", "blocked for more than", "hung_task", "Kernel panic", "Oops:", "BUG: ", "general protection fault",
    ]

    /// `VHOST_BLKD_STRESS_SEED` (to replay a run), else a fresh one.
    static func seed() -> UInt64 {
        if let text = E2EEnvironment.variables["VHOST_BLKD_STRESS_SEED"], let seed = UInt64(text) { return seed }
        return UInt64.random(in: 0...UInt64.max)
    }

    /// One fio run of the loop: two jobs, one per guest CPU and so one per
    /// virtqueue (virtio-blk maps a CPU's requests to its queue), each writing
    /// and verifying its own 8 MiB. (fio warns that "multiple writers may
    /// overwrite blocks that belong to other jobs": it warns for any
    /// `numjobs` > 1 on one file with verify; `offset_increment` keeps the
    /// two regions apart.)
    static var job: FioJob {
        var job = FioJob()
        job.name = "stress"
        job.size = "8M"
        job.offset = "1M"
        job.ioDepth = 16
        job.blockSizes = "4k-64k"
        job.numJobs = 2
        job.extraArguments = ["--offset_increment=16M", "--cpus_allowed=0-1", "--cpus_allowed_policy=split"]
        return job
    }

    /// Shell: runs `timeout -s KILL 60 fio <job>` in a loop until the disk's
    /// first block holds `stopMarker`. Each run prints `E2E-RUN: N ok S s`.
    /// A run that fails, is killed by the timeout, or cannot even be killed
    /// (requests the device never completes keep fio in D state) prints
    /// `E2E-STALL: ...` with the block layer's view of the disk, then waits
    /// two minutes for the host to take its own evidence before failing.
    /// The end prints the guest kernel's I/O errors and hung tasks.
    static func guestLoop(_ job: FioJob, disk: String = "vda") -> String {
        let dev = "/dev/\(disk)"
        return """
            stress_report() {
                echo "E2E-REPORT: \(disk) stat: $(cat /sys/block/\(disk)/stat)"
                echo "E2E-REPORT: \(disk) inflight (reads writes): $(cat /sys/block/\(disk)/inflight)"
                mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
                for h in /sys/kernel/debug/block/\(disk)/hctx*; do
                    [ -d "$h" ] || continue
                    echo "E2E-REPORT: ${h##*/}: $(grep -h 'busy=' "$h/tags" 2>/dev/null) requests busy: $(wc -l < "$h/busy")"
                    head -4 "$h/busy" | sed 's/^/E2E-REPORT:   /'
                done
                dmesg | tail -15 | sed 's/^/E2E-REPORT: dmesg: /'
            }
            echo "E2E-STRESS: start"
            run=0
            while :; do
                mark=$(timeout -s KILL \(fioTimeoutSeconds) dd if=\(dev) bs=4096 count=1 iflag=direct 2>/dev/null | head -c \(stopMarker.utf8.count))
                [ "$mark" = \(stopMarker) ] && break
                run=$((run + 1))
                t0=$(cut -d' ' -f1 /proc/uptime)
                timeout -s KILL \(fioTimeoutSeconds) \(job.commandLine()) > /tmp/stress.log 2>&1 &
                pid=$!
                while :; do
                    state=$(cut -d' ' -f3 /proc/$pid/stat 2>/dev/null)
                    { [ -z "$state" ] || [ "$state" = Z ]; } && break
                    if [ $(( $(cut -d. -f1 /proc/uptime) - ${t0%.*} )) -ge \(fioTimeoutSeconds + 10) ]; then
                        echo "\(stallMarker) fio run $run still not ended \(fioTimeoutSeconds + 10) s after it started (state $state)"
                        stress_report
                        sleep 120
                        fail "fio run $run hung"
                    fi
                    sleep 0.2
                done
                wait $pid
                status=$?
                secs=$(awk -v a="$t0" -v b="$(cut -d' ' -f1 /proc/uptime)" 'BEGIN { printf "%.1f", b - a }')
                if [ "$status" -ne 0 ]; then
                    echo "\(stallMarker) fio run $run exited with status $status after $secs s (137: killed by the timeout)"
                    tail -25 /tmp/stress.log
                    stress_report
                    sleep 120
                    fail "fio run $run exited with status $status"
                fi
                echo "E2E-RUN: $run ok $secs s"
            done
            echo "E2E-STRESS: $run fio runs"
            dmesg | grep -E 'I/O error|blocked for more than|hung_task' | sed 's/^/E2E-KMSG: /'
            echo "E2E-IOERRORS: $(dmesg | grep -c 'I/O error')"
            """
    }

    /// One kill and what followed it.
    struct Kill: CustomStringConvertible {
        var number: Int
        /// How long the guest's I/O had run against the daemon.
        var io: Duration
        /// Requests the daemon held (popped, not completed) just before the kill.
        var inFlight: Int64
        /// Kill to reaped, to the new daemon answering RPCs, to both queues
        /// started again (QEMU reconnected), to the first completed request.
        var reaped: Duration
        var up: Duration
        var started: Duration
        var stall: Duration

        var description: String {
            "kill \(number)/\(RestartStress.restarts) after \(format(io)) s of I/O with \(inFlight) requests in flight; "
                + "reaped \(format(reaped)) s, daemon up \(format(up)) s, queues started \(format(started)) s, "
                + "first completion (stall) \(format(stall)) s"
        }
    }

    static func format(_ duration: Duration, digits: Int = 2) -> String {
        let seconds = Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
        return String(format: "%.\(digits)f", seconds)
    }

    /// The host's watch over one run: every wait also checks that the guest
    /// reports no trouble and the daemon did not die, and fails with the
    /// evidence (`RestartStress.evidence`) if either happens or the wait
    /// times out.
    final class Watch {
        let label: String
        let seed: UInt64
        let vm: GuestVM
        /// The daemon now serving; the test replaces it at each restart.
        var daemon: DaemonProcess
        private let qmp: QMPClient?

        init(label: String, seed: UInt64, daemon: DaemonProcess, vm: GuestVM) {
            self.label = label
            self.seed = seed
            self.daemon = daemon
            self.vm = vm
            qmp = try? QMPClient(socketPath: vm.qmpSocketPath ?? "")
        }

        /// Throws with the evidence if the guest reported trouble or the daemon died.
        func check() throws {
            let console = vm.console()
            var reason: String?
            if let range = console.range(of: RestartStress.stallMarker) {
                reason = String(console[range.lowerBound...].prefix { $0 != "\n" })
            } else if console.contains("E2E-FAIL") || (console.contains("E2E-EXIT") && !console.contains("E2E-IOERRORS: ")) {
                reason = "the guest's script ended early"
            } else if !vm.isRunning {
                reason = "QEMU exited"
            } else if !daemon.isRunning {
                reason = "the daemon exited on its own"
            }
            if let reason { throw failure(reason) }
        }

        /// Polls `condition` every 50 ms, checking guest and daemon, until it holds or `timeout` passes.
        func wait(_ what: String, timeout: Duration, until condition: () -> Bool) throws {
            let deadline = ContinuousClock.now + timeout
            while !condition() {
                try check()
                guard ContinuousClock.now < deadline else { throw failure("\(what) did not happen within \(timeout)") }
                usleep(50_000)
            }
        }

        /// Waits until the daemon has `queues` queues started (QEMU is back)
        /// and has completed a request; the instants both happened.
        func awaitIO(after kill: ContinuousClock.Instant, queues count: Int, restart: Int) throws
            -> (started: ContinuousClock.Instant, resumed: ContinuousClock.Instant)
        {
            var started: ContinuousClock.Instant?
            let what = restart == 0 ? "I/O on the first daemon" : "I/O after restart \(restart)"
            try wait(what, timeout: .seconds(RestartStress.fioTimeoutSeconds)) {
                let queues = RestartStress.queues(daemon)
                if started == nil, queues.count >= count { started = ContinuousClock.now }
                return RestartStress.total("requests", queues) > 0
            }
            let resumed = ContinuousClock.now
            return (started ?? resumed, resumed)
        }

        /// Polls the daemon (every 2 ms, for up to `aimSeconds`) until it holds
        /// requests; how many it held at the last look.
        func aimForRequests() -> Int64 {
            let begun = ContinuousClock.now
            var held = RestartStress.total("in_flight", RestartStress.queues(daemon))
            while held == 0, ContinuousClock.now - begun < .seconds(RestartStress.aimSeconds) {
                usleep(2_000)
                held = RestartStress.total("in_flight", RestartStress.queues(daemon))
            }
            return held
        }

        /// Prints the evidence and returns the error that fails the test with it.
        func failure(_ reason: String) -> Error {
            let evidence = RestartStress.evidence(reason: reason, seed: seed, daemon: daemon, vm: vm, qmp: qmp)
            print(evidence)
            return E2EError.failed("\(label) (seed \(seed)): \(reason)\n\(evidence)")
        }
    }

    // MARK: - The daemon's view

    /// The one controller's queues, from `vhost_get_controllers` (empty while
    /// no frontend is connected or its queues are not started).
    static func queues(_ daemon: DaemonProcess) -> [JSON] {
        guard let controllers = try? daemon.call("vhost_get_controllers").arrayValue,
            let session = controllers.first?["sessions"]?.arrayValue?.first,
            let queues = session["queues"]?.arrayValue
        else { return [] }
        return queues
    }

    /// Sums one integer field over the queues.
    static func total(_ field: String, _ queues: [JSON]) -> Int64 {
        queues.reduce(0) { $0 + ($1[field]?.intValue ?? 0) }
    }

    // MARK: - Evidence

    /// Everything a hang or failure leaves to look at: two snapshots of the
    /// daemon's queues a second apart, QEMU's view of each vring, the
    /// daemon's log, the guest console and QEMU's log. Also written to a
    /// folder under /tmp, whose path the text names.
    static func evidence(reason: String, seed: UInt64, daemon: DaemonProcess, vm: GuestVM, qmp: QMPClient?) -> String {
        var parts = ["=== restart stress evidence (seed \(seed)): \(reason) ==="]
        for snapshot in 1...2 {
            let client = try? RPCClient(path: daemon.rpcSocket, timeout: .seconds(5))
            let answer = (try? client?.call("vhost_get_controllers", params: nil).encoded(pretty: true)) ?? "(no answer in 5 s)"
            parts.append("--- vhost_get_controllers, snapshot \(snapshot) ---\n\(answer)")
            if snapshot == 1 { usleep(1_000_000) }
        }
        parts.append("--- QEMU's vrings ---\n" + (qmp.map(ringState) ?? "(no QMP connection)"))
        parts.append("--- daemon log (last 150 lines) ---\n" + GuestVM.tail(daemon.log, lines: 150))
        parts.append("--- guest console (last 100 lines) ---\n" + GuestVM.tail(vm.console(), lines: 100))
        parts.append("--- qemu log ---\n" + GuestVM.tail(vm.qemuLog(), lines: 30))
        var text = parts.joined(separator: "\n")
        let folder = "/tmp/vhb-stress-evidence-\(seed)"
        if (try? FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)) != nil {
            try? text.write(toFile: folder + "/evidence.txt", atomically: true, encoding: .utf8)
            try? daemon.log.write(toFile: folder + "/daemon.log", atomically: true, encoding: .utf8)
            try? vm.console().write(toFile: folder + "/console.log", atomically: true, encoding: .utf8)
            text += "\n(full daemon log and console in \(folder))"
        }
        return text
    }

    /// Each vring's indexes as the guest's memory holds them (virtio 1.2
    /// §2.7.6 and §2.7.8, split virtqueues): `avail.idx`, `used.idx`, and the
    /// event-index words (`used_event` after the avail ring, `avail_event`
    /// after the used ring, §2.7.10). The ring addresses come from
    /// `x-query-virtio-vhost-queue-status` (QEMU 7.2, qapi/virtio.json); the
    /// words are read with the monitor's `xp`. `avail.idx` ahead of
    /// `used.idx` with nothing in flight in the daemon is a lost request;
    /// `used.idx` past `used_event` with the guest still waiting is a lost
    /// interrupt.
    static func ringState(_ qmp: QMPClient) -> String {
        var lines: [String] = []
        guard let devices = (try? qmp.execute("x-query-virtio")) as? [[String: Any]], !devices.isEmpty else {
            return "x-query-virtio gave nothing"
        }
        for device in devices {
            guard let path = device["path"] as? String else { continue }
            guard let status = (try? qmp.execute("x-query-virtio-status", arguments: ["path": path])) as? [String: Any] else {
                lines.append("\(path): x-query-virtio-status failed")
                continue
            }
            let transports = (status["guest-features"] as? [String: Any])?["transports"] as? [String] ?? []
            let eventIdx = transports.contains { $0.hasPrefix("VIRTIO_RING_F_EVENT_IDX") }
            // Unknown counts as started: see below.
            let vhostStarted = (status["vhost-started"] as? NSNumber)?.boolValue ?? true
            lines.append(
                "\(path): started \(status["started"] ?? "?"), vhost started \(status["vhost-started"] ?? "?"), "
                    + "broken \(status["broken"] ?? "?"), vm running \(status["vm-running"] ?? "?"), EVENT_IDX \(eventIdx)")
            for queue in 0..<16 {
                let arguments: [String: Any] = ["path": path, "queue": queue]
                var num: UInt64?, avail: UInt64?, used: UInt64?
                if vhostStarted {
                    // Not x-query-virtio-queue-status: with vhost running, QEMU 7.2 answers it
                    // by sending GET_VRING_BASE, which stops the ring (vhost-user spec).
                    let answer = try? qmp.execute("x-query-virtio-vhost-queue-status", arguments: arguments)
                    guard let vring = answer as? [String: Any] else { break }  // past the last queue
                    (num, avail, used) = (number(vring["num"]), number(vring["avail-phys"]), number(vring["used-phys"]))
                } else {
                    // QEMU's own copy of the queue, synced when vhost stopped.
                    let answer = try? qmp.execute("x-query-virtio-queue-status", arguments: arguments)
                    guard let vring = answer as? [String: Any] else { break }
                    (num, avail, used) = (number(vring["vring-num"]), number(vring["vring-avail"]), number(vring["vring-used"]))
                    lines.append(
                        "queue \(queue): QEMU's copy: last-avail-idx \(vring["last-avail-idx"] ?? "?"), "
                            + "used-idx \(vring["used-idx"] ?? "?"), inuse \(vring["inuse"] ?? "?")")
                }
                guard let num, let avail, let used, num > 0, avail > 0, used > 0 else {
                    lines.append("queue \(queue): no ring addresses")
                    continue
                }
                let availFlags = word(qmp, avail), availIdx = word(qmp, avail + 2), usedEvent = word(qmp, avail + 4 + 2 * num)
                let usedFlags = word(qmp, used), usedIdx = word(qmp, used + 2), availEvent = word(qmp, used + 4 + 8 * num)
                lines.append(
                    "queue \(queue): num \(num), avail.flags \(availFlags) avail.idx \(availIdx) used_event \(usedEvent); "
                        + "used.flags \(usedFlags) used.idx \(usedIdx) avail_event \(availEvent)")
            }
        }
        return lines.joined(separator: "\n")
    }

    private static func number(_ value: Any?) -> UInt64? { (value as? NSNumber)?.uint64Value }

    /// The little-endian 16-bit word at guest-physical `address`, as the monitor prints it.
    private static func word(_ qmp: QMPClient, _ address: UInt64) -> String {
        let command = "xp /1hx 0x" + String(address, radix: 16)
        guard let text = (try? qmp.execute("human-monitor-command", arguments: ["command-line": command])) as? String,
            let range = text.range(of: "0x", options: .backwards)
        else { return "?" }
        let digits = text[range.upperBound...].prefix { $0.isHexDigit }
        return UInt16(digits, radix: 16).map(String.init) ?? "?"
    }
}
