import Foundation

/// A fio job run inside the guest against a virtio-blk disk.
///
/// The job is size-bounded: it writes `size` bytes' worth of random blocks
/// at `offset` and, with `verify`, reads every written block back and checks
/// its crc32c header. `runtimeSeconds` is only a safety bound; a job cut
/// short by it cannot be replayed by a later `--verify_only` pass.
struct FioJob: Sendable {
    var name = "e2e"
    var device = "/dev/vda"
    var readWrite = "randrw"
    var blockSizes = "4k-64k"
    var size = "32M"
    /// Leaves the first MiB free (the reboot marker lives in block 0).
    var offset = "1M"
    var ioDepth = 8
    var numJobs = 1
    var ioEngine = "libaio"
    var verify: String? = "crc32c"
    var runtimeSeconds = 120
    /// Further `--option=value` arguments.
    var extraArguments: [String] = []

    /// fio's arguments. With `verifyOnly`, fio replays the same job (same
    /// options, same default seed: `randrepeat=1`) without writing and checks
    /// the data a previous run of this job left.
    func arguments(verifyOnly: Bool = false) -> [String] {
        var args = [
            "--name=\(name)", "--filename=\(device)", "--rw=\(readWrite)", "--bsrange=\(blockSizes)",
            "--size=\(size)", "--offset=\(offset)", "--ioengine=\(ioEngine)", "--direct=1",
            "--iodepth=\(ioDepth)", "--numjobs=\(numJobs)", "--runtime=\(runtimeSeconds)",
            "--group_reporting",
        ]
        if let verify {
            args += ["--verify=\(verify)", "--do_verify=1", "--verify_fatal=1", "--verify_dump=0"]
        }
        if verifyOnly { args.append("--verify_only") }
        return args + extraArguments
    }

    /// fio's arguments, shell-quoted, space-separated.
    func quotedArguments(verifyOnly: Bool = false) -> String {
        arguments(verifyOnly: verifyOnly).map(GuestScript.quote).joined(separator: " ")
    }

    /// The fio command line, shell-quoted.
    func commandLine(verifyOnly: Bool = false) -> String {
        "fio " + quotedArguments(verifyOnly: verifyOnly)
    }
}

/// A `/test.sh` for the guest, built step by step:
///
///     let script = GuestScript()
///         .waitForDisk("vda")
///         .expectSectors(131072)
///         .expectSerial("vhost_user_blk")
///         .runFio(FioJob())
///
/// The guest's /init runs it with `sh` and prints `E2E-EXIT: <status>`. Each
/// failed step prints `E2E-FAIL: <why>` and exits 1; passed checks print
/// `E2E-OK: ...`.
struct GuestScript: Sendable {
    private(set) var lines: [String]

    init() {
        lines = [Self.prelude]
    }

    /// The script text.
    var text: String { lines.joined(separator: "\n") + "\n" }

    /// Appends raw shell.
    func appending(_ shell: String) -> GuestScript {
        var copy = self
        copy.lines.append(shell)
        return copy
    }

    /// Waits (bounded) for `/dev/<disk>` to appear.
    func waitForDisk(_ disk: String = "vda", timeoutSeconds: Int = 20) -> GuestScript {
        appending("wait_for_block \(Self.quote(disk)) \(timeoutSeconds)")
    }

    /// Checks `/sys/block/<disk>/size` (capacity in 512-byte sectors).
    func expectSectors(_ sectors: UInt64, disk: String = "vda") -> GuestScript {
        appending("expect_file \(Self.quote("/sys/block/\(disk)/size")) \(sectors)")
    }

    /// Waits (bounded, polling every 50 ms) until `/sys/block/<disk>/size`
    /// is `sectors`: a live resize reached the guest. Prints
    /// `E2E-OK: /sys/block/<disk>/size = <sectors>`.
    func waitForSectors(_ sectors: UInt64, disk: String = "vda", timeoutSeconds: Int = 30) -> GuestScript {
        appending("wait_for_sectors \(Self.quote(disk)) \(sectors) \(timeoutSeconds)")
    }

    /// Prints `E2E-READY: <step>`: the test acts when it sees the line.
    func ready(_ step: String) -> GuestScript {
        appending("echo \"E2E-READY: \(step)\"")
    }

    /// Checks `/sys/block/<disk>/serial` (the GET_ID string).
    func expectSerial(_ serial: String, disk: String = "vda") -> GuestScript {
        appending("expect_file \(Self.quote("/sys/block/\(disk)/serial")) \(Self.quote(serial))")
    }

    /// Checks any sysfs (or other) file's contents, e.g. `/sys/block/vda/ro`.
    func expectFile(_ path: String, equals value: String) -> GuestScript {
        appending("expect_file \(Self.quote(path)) \(Self.quote(value))")
    }

    /// Checks one bit of the virtio features the guest's driver negotiated
    /// (sysfs `/sys/block/<disk>/device/features`: one '0' or '1' per bit,
    /// bit 0 first). Prints `E2E-OK: <disk> feature bit <bit> = <0|1>`.
    func expectFeatureBit(_ bit: Int, _ set: Bool, disk: String = "vda") -> GuestScript {
        appending("expect_feature_bit \(Self.quote(disk)) \(bit) \(set ? 1 : 0)")
    }

    /// Runs fio and fails the script if it fails; fio's summary goes to the console.
    func runFio(_ job: FioJob, verifyOnly: Bool = false) -> GuestScript {
        appending("run_fio \(job.quotedArguments(verifyOnly: verifyOnly))")
    }

    /// Starts `job` in the background (its output in `/tmp/<name>.log`) and
    /// waits, bounded, until its disk has requests in flight
    /// (`/sys/block/<disk>/stat` field 9): a step after this one acts under
    /// load. `waitForFio(job)` collects it. With `repeatWhileSectors`, runs
    /// `job` again and again (each run verified) while the disk's size is
    /// that many sectors: a fault the test injects at an unknown point
    /// always meets a run, and a resize ends the loop after the run under way.
    func startFio(_ job: FioJob, repeatWhileSectors sectors: UInt64? = nil) -> GuestScript {
        let name = String(job.device.split(separator: "/").last ?? "vda")
        let disk = Self.quote(name)
        let run: String
        if let sectors {
            let size = Self.quote("/sys/block/\(name)/size")
            run = """
                echo "E2E-FIO: \(job.commandLine()), again while \(size) is \(sectors)"
                ( _runs=0
                  while [ "$(cat \(size))" = \(sectors) ]; do
                      \(job.commandLine()) > /tmp/\(job.name).run.log 2>&1 || { cat /tmp/\(job.name).run.log; exit 1; }
                      _runs=$((_runs + 1)); grep -E 'err=' /tmp/\(job.name).run.log
                  done
                  echo "fio runs: $_runs" ) > /tmp/\(job.name).log 2>&1 &
                """
        } else {
            run = """
                echo "E2E-FIO: \(job.commandLine())"
                \(job.commandLine()) > /tmp/\(job.name).log 2>&1 &
                """
        }
        return appending(
            """
            \(run)
            echo $! > /tmp/\(job.name).pid
            _n=0
            while [ "$(awk '{print $9}' /sys/block/\(disk)/stat)" = 0 ]; do
                kill -0 "$(cat /tmp/\(job.name).pid)" 2>/dev/null || break
                _n=$((_n + 1)); [ "$_n" -gt 3000 ] && fail "fio \(job.name) never had requests in flight"; sleep 0.01
            done
            """)
    }

    /// Waits for the fio that `startFio(job)` started: fails the script if it
    /// failed (its log's tail on the console), else prints its error, verify
    /// and issued lines and `E2E-OK: fio passed`.
    func waitForFio(_ job: FioJob) -> GuestScript {
        appending(
            """
            wait "$(cat /tmp/\(job.name).pid)" || { tail -40 /tmp/\(job.name).log; fail "fio \(job.name) failed"; }
            grep -E 'err=|verify|issued|fio runs' /tmp/\(job.name).log
            echo "E2E-OK: fio passed"
            """)
    }

    /// The reset path: on the first boot, runs `job` (write + verify), writes
    /// `marker` into block 0 of the disk, and reboots the guest (`trigger`;
    /// QEMU must run without `-no-reboot`). On the next boot, which runs the
    /// same script, the marker is found: a `--verify_only` replay of `job`
    /// checks the data survived, and the script ends. Steps before this one
    /// run on both boots. Prints `E2E-PHASE: 1` / `E2E-PHASE: 2`.
    ///
    /// `job.offset` must leave block 0 (4 KiB) alone, and `job` must finish
    /// by size (not by runtime) for the replay to match.
    func rebootThenVerify(
        _ job: FioJob, disk: String = "vda", marker: String = "E2E-MARK-\(UUID().uuidString)",
        trigger: RebootTrigger = .sysrq
    ) -> GuestScript {
        let dev = Self.quote("/dev/\(disk)")
        let mark = Self.quote(marker)
        let reboot: String
        switch trigger {
        case .sysrq:
            reboot = "echo \"E2E-REBOOT\"; sleep 0.5; echo b > /proc/sysrq-trigger"
        case .external:
            reboot = "echo \"\(Self.awaitingResetLine)\""
        }
        return appending(
            """
            marker=\(mark)
            found=$(dd if=\(dev) bs=4096 count=1 iflag=direct 2>/dev/null | head -c ${#marker})
            if [ "$found" = "$marker" ]; then
                echo "E2E-PHASE: 2"
                run_fio \(job.quotedArguments(verifyOnly: true))
                echo "E2E-OK: data verified after reboot"
            else
                echo "E2E-PHASE: 1"
                run_fio \(job.quotedArguments())
                printf '%s' "$marker" | dd of=\(dev) bs=4096 conv=sync,fsync oflag=direct 2>/dev/null || fail "cannot write the marker"
                \(reboot)
                sleep 120
                fail "the reboot did not happen"
            fi
            """)
    }

    /// How `rebootThenVerify` reboots the guest.
    enum RebootTrigger: Sendable {
        /// The guest reboots itself (`echo b > /proc/sysrq-trigger`).
        case sysrq
        /// The guest prints `awaitingResetLine` and waits; the test resets it
        /// (QMP `system_reset`).
        case external
    }

    /// Printed by a `.external` reboot step when the test should reset the guest.
    static let awaitingResetLine = "E2E-AWAIT-RESET"

    /// The standard disk check: waits for the disk, checks its size and
    /// serial when given, and runs a verifying fio job when given.
    static func diskCheck(
        disk: String = "vda", sectors: UInt64? = nil, serial: String? = nil, fio: FioJob? = FioJob()
    ) -> GuestScript {
        var script = GuestScript().waitForDisk(disk)
        if let sectors { script = script.expectSectors(sectors, disk: disk) }
        if let serial { script = script.expectSerial(serial, disk: disk) }
        if var fio {
            fio.device = "/dev/\(disk)"
            script = script.runFio(fio)
        }
        return script
    }

    /// Single-quotes `word` for sh.
    static func quote(_ word: String) -> String {
        if !word.isEmpty, word.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_=/.,:+@%".contains($0)) }) {
            return word
        }
        return "'" + word.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }

    /// Shell helpers every script starts with.
    static let prelude = """
        fail() { echo "E2E-FAIL: $*"; exit 1; }
        wait_for_block() {
            _n=0
            while [ ! -b "/dev/$1" ]; do
                _n=$((_n + 1))
                [ "$_n" -gt $(($2 * 10)) ] && fail "no /dev/$1 after $2 s"
                sleep 0.1
            done
            echo "E2E-OK: /dev/$1 present"
        }
        expect_file() {
            _v=$(cat "$1" 2>/dev/null) || fail "cannot read $1"
            [ "$_v" = "$2" ] || fail "$1 is '$_v', expected '$2'"
            echo "E2E-OK: $1 = $_v"
        }
        wait_for_sectors() {
            _n=0
            while [ "$(cat "/sys/block/$1/size")" != "$2" ]; do
                _n=$((_n + 1))
                [ "$_n" -gt $(($3 * 20)) ] && fail "/sys/block/$1/size is $(cat "/sys/block/$1/size"), expected $2"
                sleep 0.05
            done
            echo "E2E-OK: /sys/block/$1/size = $2"
        }
        expect_feature_bit() {
            _f=$(cat "/sys/block/$1/device/features" 2>/dev/null) || fail "cannot read /sys/block/$1/device/features"
            _b=$(printf '%s' "$_f" | cut -c $(($2 + 1)))
            [ "$_b" = "$3" ] || fail "$1 feature bit $2 is '$_b', expected '$3' (features $_f)"
            echo "E2E-OK: $1 feature bit $2 = $_b"
        }
        run_fio() {
            echo "E2E-FIO: fio $*"
            fio "$@"
            _s=$?
            [ "$_s" -eq 0 ] || fail "fio exited with status $_s"
            echo "E2E-OK: fio passed"
        }
        """
}
