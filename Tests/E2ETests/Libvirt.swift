import DaemonTestSupport
import Foundation
import Posix
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Debian 12's libvirt (9.0) for the e2e tests: the system instance (`qemu:///system`),
/// whose QEMU runs as `libvirt-qemu` the way an operator's does (docs/OPERATIONS.md,
/// "Sockets and permissions"). Without systemd (CI, this machine) nothing starts
/// `virtlogd` and `libvirtd` on demand, so `LibvirtInstance.start()` starts them with
/// `-d` unless they already serve their sockets, and `stop()` ends only the ones it
/// started, by the pid in their pid files (libvirtd(8), virtlogd(8)).
enum Libvirt {
    static let uri = "qemu:///system"
    /// The privileged daemons' sockets and pid files (libvirtd(8), virtlogd(8): FILES).
    static let libvirtdSocket = "/run/libvirt/libvirt-sock"
    static let libvirtdPidFile = "/run/libvirtd.pid"
    static let virtlogdSocket = "/run/libvirt/virtlogd-sock"
    static let virtlogdPidFile = "/run/virtlogd.pid"
    /// Where libvirt keeps a running domain's QEMU pid and its log.
    static func qemuPidFile(domain: String) -> String { "/run/libvirt/qemu/\(domain).pid" }
    static func qemuLog(domain: String) -> String { "/var/log/libvirt/qemu/\(domain).log" }

    static func tool(_ name: String) -> URL? {
        if let found = E2EEnvironment.executable(named: name) { return found }
        for dir in ["/usr/sbin", "/usr/bin", "/sbin"] {
            let candidate = URL(fileURLWithPath: dir).appendingPathComponent(name)
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        }
        return nil
    }

    static var libvirtd: URL? { tool("libvirtd") }
    static var virtlogd: URL? { tool("virtlogd") }
    static var virsh: URL? { tool("virsh") }

    /// What is missing; empty when the libvirt test can run.
    static var missingPrerequisites: [String] {
        var missing = E2EEnvironment.missingPrerequisites
        let apt = "(apt-get install libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients, or scripts/install-deps.sh)"
        if libvirtd == nil { missing.append("libvirtd not found \(apt)") }
        if virtlogd == nil { missing.append("virtlogd not found \(apt)") }
        if virsh == nil { missing.append("virsh not found \(apt)") }
        if getpwnam("libvirt-qemu") == nil { missing.append("no user libvirt-qemu \(apt)") }
        if geteuid() != 0 { missing.append("not root (the system libvirtd runs QEMU as libvirt-qemu)") }
        return missing
    }

    static var isEnabled: Bool { missingPrerequisites.isEmpty || E2EEnvironment.isRequired }

    static var skipComment: Comment {
        Comment(rawValue: "libvirt e2e skipped: \(missingPrerequisites.joined(separator: "; ")); set VHOST_BLKD_E2E=1 to require")
    }

    /// `virsh -c qemu:///system ARGS`: status and combined output.
    @discardableResult
    static func virsh(_ arguments: [String]) throws -> (status: Int32, output: String) {
        guard let virsh else { throw E2EError.missingPrerequisites(["virsh"]) }
        return try runCommand(virsh.path, ["-c", uri] + arguments)
    }

    /// `virsh ARGS`, which must succeed; its output.
    @discardableResult
    static func virshOK(_ arguments: [String]) throws -> String {
        let (status, output) = try virsh(arguments)
        guard status == 0 else { throw E2EError.failed("virsh \(arguments.joined(separator: " ")) exited \(status): \(output)") }
        return output
    }

    /// Runs `path ARGUMENTS` with stdin from /dev/null, stdout and stderr appended to `log`,
    /// no descriptor above 2, an empty signal mask and every signal at its default action,
    /// and returns its exit status (-1 if a signal ended it). A daemon started from the test
    /// process must not inherit that process's signal mask: its threads block SIGTERM and
    /// others, posix_spawn(3) (and so Foundation's `Process`) passes the mask on, and
    /// libvirtd or virtlogd started that way ignore the SIGTERM meant to stop them.
    static func spawnAndWait(_ path: String, _ arguments: [String], log: String) throws -> Int32 {
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t()
        sigemptyset(&none)
        var all = sigset_t()
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        posix_spawn_file_actions_addclosefrom_np(&actions, 3)
        let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, path, &actions, &attributes, argv, environ)
        guard spawned == 0 else { throw E2EError.system("posix_spawn \(path)", spawned) }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            guard errno == EINTR else { throw E2EError.system("waitpid \(pid)", errno) }
        }
        // WIFEXITED / WEXITSTATUS (wait(2)).
        return status & 0x7f == 0 ? (status >> 8) & 0xff : -1
    }

    /// Whether something accepts connections on the Unix socket `path`.
    static func isServing(_ path: String) -> Bool {
        guard let socket = try? UnixSocket.connect(path: path) else { return false }
        socket.close()
        return true
    }

    /// The pid in `file`, if it names a live (not zombie) process.
    static func livePid(inFile file: String) -> Int32? {
        guard let text = try? String(contentsOfFile: file, encoding: .utf8),
            let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 0,
            isAlive(pid)
        else { return nil }
        return pid
    }

    /// Whether `pid` exists and is not a zombie (a daemon that exited but that
    /// its parent, here init, has not reaped yet).
    static func isAlive(_ pid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return false }
        let state = stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).prefix(1)
        return state != "Z" && state != "X"
    }
}

/// One of libvirt's daemons (`libvirtd`, `virtlogd`): started by the test with `-d`
/// when nothing serves its socket, stopped (SIGTERM, by its pid file's pid) only then.
final class LibvirtDaemon {
    let name: String
    /// The pid the test started, nil when it found the daemon already running.
    private(set) var startedPid: Int32?
    /// The daemon's own pid (started or found).
    let pid: Int32?

    init(executable: URL, socket: String, pidFile: String, log: URL) throws {
        name = executable.lastPathComponent
        if Libvirt.isServing(socket) {
            pid = Libvirt.livePid(inFile: pidFile)
            print("\(name): already serving \(socket) (pid \(pid.map(String.init) ?? "unknown")); the test leaves it alone")
            return
        }
        if let stale = Libvirt.livePid(inFile: pidFile) {
            throw E2EError.failed("\(name) pid \(stale) (\(pidFile)) runs but does not serve \(socket); not touching it")
        }
        // -d forks into the background once initialised; its stdio goes to /dev/null,
        // so the log file only gets what fails before that.
        let status = try Libvirt.spawnAndWait(executable.path, ["-d", "-p", pidFile], log: log.path)
        guard status == 0 else {
            let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
            throw E2EError.failed("\(executable.path) -d exited with status \(status): \(text)")
        }
        let deadline = ContinuousClock.now + .seconds(60)
        var found: Int32?
        while ContinuousClock.now < deadline {
            found = Libvirt.livePid(inFile: pidFile)
            if found != nil, Libvirt.isServing(socket) { break }
            usleep(100_000)
        }
        guard let found, Libvirt.isServing(socket) else {
            if let found { kill(found, SIGTERM) }  // this test started it
            throw E2EError.timeout("\(name) -d: no live pid in \(pidFile) serving \(socket) after 60 s")
        }
        pid = found
        startedPid = found
        print("\(name): started, pid \(found)")
    }

    /// SIGTERM to the daemon this test started, then waits (30 s, then SIGKILL).
    /// Does nothing for one that was already running.
    func stop() {
        guard let pid = startedPid else { return }
        startedPid = nil
        guard Libvirt.isAlive(pid) else { return }
        kill(pid, SIGTERM)
        let deadline = ContinuousClock.now + .seconds(30)
        while Libvirt.isAlive(pid), ContinuousClock.now < deadline { usleep(50_000) }
        if Libvirt.isAlive(pid) {
            print("\(name) pid \(pid) ignored SIGTERM for 30 s: SIGKILL")
            kill(pid, SIGKILL)
        }
    }

    deinit { stop() }
}
