import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One vhost-user-blk disk of a guest: `-chardev socket,...` plus
/// `-device vhost-user-blk-pci,...`.
struct GuestDisk: Sendable {
    /// The backend's vhost-user socket (QEMU connects to it at start).
    var socketPath: String
    var numQueues = 1
    /// QEMU's `reconnect=N` (seconds): reconnect after the backend goes away
    /// (needed for daemon-restart tests; docs/PROTOCOL-NOTES.md, "Inflight
    /// tracking across restarts").
    var reconnectSeconds: Int? = nil
    /// Further `-device` properties, e.g. `["queue-size=256", "packed=on"]`.
    var deviceProperties: [String] = []
}

/// What a finished guest left behind.
struct GuestResult: Sendable {
    /// The status `/test.sh` exited with (the last `E2E-EXIT: N` line), or nil
    /// if the guest never printed one (crash, hang, killed).
    var exitStatus: Int32?
    /// The whole serial console.
    var console: String
    /// QEMU's own stdout/stderr (connection errors and the like).
    var qemuLog: String
    /// QEMU's exit status (or signal number if killed).
    var qemuStatus: Int32
    /// How many times the guest's /init started (2 after one reboot).
    var boots: Int

    /// Whether the script exited 0.
    var succeeded: Bool { exitStatus == 0 }

    /// The console's last lines, for failure messages.
    var consoleTail: String { GuestVM.tail(console) }

    /// A description for `#expect(..., "\(result)")`-style failure comments.
    var summary: String {
        "guest exit \(exitStatus.map(String.init) ?? "none"), qemu status \(qemuStatus), boots \(boots)\n"
            + "--- console tail ---\n\(consoleTail)\n--- qemu log ---\n\(GuestVM.tail(qemuLog))"
    }
}

/// A QEMU (TCG) guest booting the e2e kernel and initramfs with a test script
/// and vhost-user-blk disks (docs/PROTOCOL-NOTES.md, "Test guests").
///
/// Files live in `workDirectory`: `<name>.initrd`, `<name>.console.log`,
/// `<name>.qemu.log` and, with `qmp`, `<name>.qmp`. QEMU is killed when the
/// value is released.
final class GuestVM {
    let name: String
    let workDirectory: URL
    let disks: [GuestDisk]
    let consoleURL: URL
    let qemuLogURL: URL
    let initrdURL: URL
    /// The QMP socket path, when asked for.
    let qmpSocketPath: String?
    /// The full qemu-system-x86_64 argument list (without the program).
    let arguments: [String]

    private let qemu: URL
    private var process: Process?

    /// Prepares a guest; `start()` launches it.
    ///
    /// - Parameters:
    ///   - script: the guest's `/test.sh`.
    ///   - disks: vhost-user-blk disks, in order (vda, vdb, ...).
    ///   - noReboot: pass `-no-reboot` (a guest reboot ends QEMU); turn it off
    ///     for reboot tests, where the guest reboots and runs the script again.
    ///   - qmp: open a QMP socket (`qmpSocketPath`) for `QMPClient`.
    ///   - extraArguments: more QEMU arguments (e.g. `["-incoming", "defer"]`).
    ///   - hotplugMemory: DIMM slots and the most memory with them
    ///     (`-m SIZE,slots=N,maxmem=M`), for memory hot-plug through QMP.
    init(
        name: String = "guest", script: GuestScript, disks: [GuestDisk], workDirectory: URL,
        memoryMiB: Int = 512, hotplugMemory: (slots: Int, maxMiB: Int)? = nil, cpus: Int = 2, noReboot: Bool = true, qmp: Bool = false,
        extraArguments: [String] = [], kernelAppend: String = "console=ttyS0 panic=-1 quiet"
    ) throws {
        try E2EEnvironment.requireReady()
        guard let qemu = E2EEnvironment.qemu else { throw E2EError.missingPrerequisites(["qemu-system-x86_64"]) }
        self.qemu = qemu
        self.name = name
        self.workDirectory = workDirectory
        self.disks = disks
        consoleURL = workDirectory.appendingPathComponent("\(name).console.log")
        qemuLogURL = workDirectory.appendingPathComponent("\(name).qemu.log")
        initrdURL = workDirectory.appendingPathComponent("\(name).initrd")
        qmpSocketPath = qmp ? workDirectory.appendingPathComponent("\(name).qmp").path : nil

        try GuestInitrd.make(base: E2EEnvironment.baseInitrd, script: script.text, output: initrdURL)

        var memory = "\(memoryMiB)M"
        if let hotplugMemory { memory += ",slots=\(hotplugMemory.slots),maxmem=\(hotplugMemory.maxMiB)M" }
        var args = [
            "-accel", "tcg", "-cpu", "max", "-smp", "\(cpus)", "-m", memory,
            "-object", "memory-backend-memfd,id=mem,size=\(memoryMiB)M,share=on",
            "-numa", "node,memdev=mem",
            "-nographic", "-monitor", "none", "-serial", "file:\(consoleURL.path)", "-nic", "none",
            "-kernel", E2EEnvironment.kernel.path, "-initrd", initrdURL.path,
            "-append", kernelAppend,
        ]
        if noReboot { args.append("-no-reboot") }
        if let qmpSocketPath { args += ["-qmp", "unix:\(qmpSocketPath),server=on,wait=off"] }
        for (index, disk) in disks.enumerated() {
            var chardev = "socket,id=c\(index),path=\(disk.socketPath)"
            if let reconnect = disk.reconnectSeconds { chardev += ",reconnect=\(reconnect)" }
            let device = (["vhost-user-blk-pci", "chardev=c\(index)", "num-queues=\(disk.numQueues)"]
                + disk.deviceProperties).joined(separator: ",")
            args += ["-chardev", chardev, "-device", device]
        }
        arguments = args + extraArguments
    }

    deinit { kill() }

    /// The command line, for logs.
    var commandLine: String {
        ([qemu.path] + arguments).map(GuestScript.quote).joined(separator: " ")
    }

    /// Launches QEMU. The backends' sockets must already be listening.
    func start() throws {
        guard process == nil else { throw E2EError.failed("\(name) already started") }
        let files = FileManager.default
        guard files.createFile(atPath: qemuLogURL.path, contents: nil),
            files.createFile(atPath: consoleURL.path, contents: nil)
        else { throw E2EError.failed("cannot create logs in \(workDirectory.path)") }
        let log = try FileHandle(forWritingTo: qemuLogURL)
        let child = Process()
        child.executableURL = qemu
        child.arguments = arguments
        child.standardInput = FileHandle.nullDevice
        child.standardOutput = log
        child.standardError = log
        try child.run()
        try? log.close()
        process = child
    }

    /// Whether QEMU is running.
    var isRunning: Bool { process?.isRunning ?? false }

    /// The console so far.
    func console() -> String { Self.read(consoleURL) }

    /// QEMU's stdout/stderr so far.
    func qemuLog() -> String { Self.read(qemuLogURL) }

    /// Waits until QEMU exits, then parses the console. On timeout, kills QEMU
    /// and throws with the console tail.
    func waitForExit(timeout: Duration) throws -> GuestResult {
        guard let child = process else { throw E2EError.failed("\(name) not started") }
        let deadline = ContinuousClock.now + timeout
        while child.isRunning {
            if ContinuousClock.now >= deadline {
                kill()
                throw E2EError.timeout(
                    "\(name) still running after \(timeout)\n--- console tail ---\n\(Self.tail(console()))"
                        + "\n--- qemu log ---\n\(Self.tail(qemuLog()))")
            }
            usleep(20_000)
        }
        child.waitUntilExit()
        let text = console()
        return GuestResult(
            exitStatus: Self.exitStatus(in: text), console: text, qemuLog: qemuLog(),
            qemuStatus: child.terminationStatus, boots: Self.count("E2E-BOOT:", in: text))
    }

    /// Waits until the console contains `text` (e.g. a line the script
    /// prints before a step the test must act on). Throws with the console
    /// tail on timeout or if QEMU exits first; does not kill QEMU.
    func waitForConsole(_ text: String, timeout: Duration) throws {
        let deadline = ContinuousClock.now + timeout
        while true {
            if console().contains(text) { return }
            if !isRunning {
                throw E2EError.failed(
                    "\(name) exited before printing \(text)\n--- console tail ---\n\(Self.tail(console()))"
                        + "\n--- qemu log ---\n\(Self.tail(qemuLog()))")
            }
            if ContinuousClock.now >= deadline {
                throw E2EError.timeout("\(name) never printed \(text)\n--- console tail ---\n\(Self.tail(console()))")
            }
            usleep(50_000)
        }
    }

    /// Kills QEMU (SIGKILL) and reaps it; harmless if it is not running.
    func kill() {
        guard let child = process, child.isRunning else { return }
        _ = Glibc.kill(child.processIdentifier, SIGKILL)
        child.waitUntilExit()
    }

    // MARK: - Helpers

    /// The status in the last `E2E-EXIT: N` line.
    static func exitStatus(in console: String) -> Int32? {
        var status: Int32?
        for line in console.split(whereSeparator: { $0 == "\n" || $0 == "\r" }) {
            guard let range = line.range(of: "E2E-EXIT: ") else { continue }
            let digits = line[range.upperBound...].prefix { $0.isNumber || $0 == "-" }
            if let value = Int32(digits) { status = value }
        }
        return status
    }

    static func count(_ marker: String, in console: String) -> Int {
        console.components(separatedBy: marker).count - 1
    }

    /// The last `lines` lines of `text`.
    static func tail(_ text: String, lines: Int = 40) -> String {
        text.split(separator: "\n", omittingEmptySubsequences: false).suffix(lines).joined(separator: "\n")
    }

    private static func read(_ url: URL) -> String {
        guard let data = FileManager.default.contents(atPath: url.path) else { return "" }
        return String(decoding: data, as: UTF8.self)
    }
}
