import DaemonTestSupport
import Foundation
import JSONRPC
import Testing
import VhostUserFrontend
#if canImport(Glibc)
import Glibc
#endif

/// SPDK's own command-line client, `spdk-rpc` (rpc.py, from PyPI's `spdk`
/// package), installed once per test run into a private virtual environment.
///
/// The venv lives at `$VHOST_BLKD_SPDK_VENV`, else `<repo>/.build/spdk-venv`,
/// and is reused while it holds the pinned version. In CI (`CI=true`) or with
/// `VHOST_BLKD_E2E=1` a venv that cannot be set up fails the tests; elsewhere
/// (no python3-venv, no network) they are skipped.
enum SPDKClient {
    /// The `spdk` release whose rpc.py the notes in docs/PROTOCOL-NOTES.md
    /// ("The JSON-RPC socket") were checked against.
    static let pinnedVersion = "26.9"

    /// The package root, found from this file's path (Tests/IntegrationTests/<file>).
    static let repoRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static var variables: [String: String] { ProcessInfo.processInfo.environment }

    /// `$VHOST_BLKD_SPDK_VENV`, else `<repo>/.build/spdk-venv`.
    static var venvDirectory: URL {
        if let dir = variables["VHOST_BLKD_SPDK_VENV"], !dir.isEmpty { return URL(fileURLWithPath: dir) }
        return repoRoot.appendingPathComponent(".build").appendingPathComponent("spdk-venv")
    }

    /// True in CI or when `VHOST_BLKD_E2E=1`: a missing client then fails the tests.
    static var isRequired: Bool { variables["CI"] == "true" || variables["VHOST_BLKD_E2E"] == "1" }

    /// The venv, set up at most once per process (the path of `spdk-rpc`, or why not).
    static let setup: Result<String, SPDKClientError> = Result { () throws(SPDKClientError) -> String in try prepareVenv() }

    /// Whether the suite runs: the client is there, or its absence must fail.
    static var isEnabled: Bool {
        if case .failure(let error) = setup, !isRequired {
            FileHandle.standardError.write(Data("SPDKClientTests skipped: \(error)\n".utf8))
            return false
        }
        return true
    }

    static let skipComment: Comment =
        "spdk-rpc unavailable (python3 -m venv + pip install spdk==26.9 failed); set VHOST_BLKD_E2E=1 to require"

    /// The path of `spdk-rpc`; throws why the venv could not be set up.
    static func executable() throws -> String { try setup.get() }

    /// Runs `spdk-rpc -s <daemon socket> <arguments>`; returns (status, stdout+stderr).
    static func run(_ daemon: DaemonProcess, _ arguments: [String]) throws -> (status: Int32, output: String) {
        try runCommand(executable(), ["-s", daemon.rpcSocket] + arguments)
    }

    /// Creates (or reuses) the venv under an exclusive lock, so parallel runs share it.
    private static func prepareVenv() throws(SPDKClientError) -> String {
        let venv = venvDirectory
        let python = venv.appendingPathComponent("bin/python3").path
        let client = venv.appendingPathComponent("bin/spdk-rpc").path
        do {
            try FileManager.default.createDirectory(
                at: venv.deletingLastPathComponent(), withIntermediateDirectories: true)
        } catch {
            throw .setup("cannot create \(venv.deletingLastPathComponent().path): \(error)")
        }
        let lockPath = venv.path + ".lock"
        let lock = open(lockPath, O_CREAT | O_RDWR | O_CLOEXEC, 0o644)
        guard lock >= 0 else { throw .setup("open \(lockPath): \(String(cString: strerror(errno)))") }
        defer { close(lock) }
        guard flock(lock, LOCK_EX) == 0 else { throw .setup("flock \(lockPath): \(String(cString: strerror(errno)))") }

        if installedVersion(python: python) == pinnedVersion, FileManager.default.isExecutableFile(atPath: client) {
            return client
        }
        guard let system = executable(named: "python3") else {
            throw .setup("python3 not in PATH (scripts/install-deps.sh installs python3-venv)")
        }
        let steps: [(String, [String])] = [
            (system, ["-m", "venv", "--clear", venv.path]),
            (python, ["-m", "pip", "install", "--disable-pip-version-check", "--no-input", "-q",
                      "--timeout", "30", "--retries", "2", "spdk==\(pinnedVersion)"]),
        ]
        for (path, arguments) in steps {
            let result: (status: Int32, output: String)
            do { result = try runCommand(path, arguments) } catch {
                throw .setup("\(path) \(arguments.joined(separator: " ")): \(error)")
            }
            guard result.status == 0 else {
                throw .setup("\(path) \(arguments.joined(separator: " ")) exited \(result.status):\n\(result.output)")
            }
        }
        guard installedVersion(python: python) == pinnedVersion, FileManager.default.isExecutableFile(atPath: client) else {
            throw .setup("spdk \(pinnedVersion) installed but \(client) is missing")
        }
        return client
    }

    /// The `spdk` version installed in the venv whose interpreter is `python`, if any.
    private static func installedVersion(python: String) -> String? {
        guard FileManager.default.isExecutableFile(atPath: python),
              let result = try? runCommand(python, ["-c", "import importlib.metadata as m; print(m.version('spdk'))"]),
              result.status == 0
        else { return nil }
        return result.output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// The first executable called `name` in `PATH`.
    private static func executable(named name: String) -> String? {
        for dir in (variables["PATH"] ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":") {
            let candidate = URL(fileURLWithPath: String(dir)).appendingPathComponent(name).path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }
}

/// Why the SPDK client could not be set up.
enum SPDKClientError: Error, CustomStringConvertible {
    case setup(String)

    var description: String {
        switch self {
        case .setup(let why): return "spdk-rpc venv setup failed: \(why)"
        }
    }
}

/// The real SPDK client (`spdk-rpc` 26.9) against the running daemon, for
/// every method the daemon implements (docs/PROTOCOL-NOTES.md, "The JSON-RPC
/// socket").
@Suite("spdk-rpc (SPDK's rpc.py) against the running daemon",
       .enabled(if: SPDKClient.isEnabled, SPDKClient.skipComment))
struct SPDKClientTests {
    /// Every method the daemon lists; each must be reachable through spdk-rpc.
    static let implemented = [
        "bdev_uring_create", "bdev_uring_delete", "bdev_aio_create", "bdev_aio_delete",
        "bdev_malloc_create", "bdev_malloc_delete", "bdev_null_create", "bdev_null_delete", "bdev_get_bdevs",
        "vhost_create_blk_controller", "vhost_get_controllers", "vhost_delete_controller",
        "vhost_controller_set_coalescing",
        "rpc_get_methods", "spdk_get_version",
        "bdev_uring_rescan", "bdev_aio_rescan", "bdev_null_resize",
        "bdev_get_iostat", "bdev_reset_iostat", "framework_get_reactors", "thread_get_stats",
        "bdev_set_qos_limit",
        "log_set_level", "log_get_level", "log_set_print_level", "log_get_print_level",
    ]

    /// vhost-blkd's own methods, which rpc.py does not know.
    static let extensions: Set<String> = [
        "bdev_resize", "vhost_blk_attach", "vhost_blk_detach", "bdev_get_latency",
        "framework_get_failed_config", "framework_retry_failed_config", "bdev_set_error_policy", "bdev_resume_io",
    ]

    /// Runs spdk-rpc, expects exit 0, and returns its output.
    @discardableResult
    func ok(_ daemon: DaemonProcess, _ arguments: String..., sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
        let (status, output) = try SPDKClient.run(daemon, arguments)
        #expect(status == 0, "spdk-rpc \(arguments.joined(separator: " ")):\n\(output)", sourceLocation: sourceLocation)
        return output
    }

    /// Runs spdk-rpc, expects exit 0, and parses its output as JSON.
    func json(_ daemon: DaemonProcess, _ arguments: String..., sourceLocation: SourceLocation = #_sourceLocation) throws -> JSON {
        let (status, output) = try SPDKClient.run(daemon, arguments)
        #expect(status == 0, "spdk-rpc \(arguments.joined(separator: " ")):\n\(output)", sourceLocation: sourceLocation)
        return try JSON.parse(output)
    }

    /// Runs spdk-rpc, expects a JSON-RPC error (exit 1) with `code`; returns the output.
    @discardableResult
    func fails(_ daemon: DaemonProcess, code: Int, _ arguments: String...,
               sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
        let (status, output) = try SPDKClient.run(daemon, arguments)
        #expect(status == 1, "spdk-rpc \(arguments.joined(separator: " ")):\n\(output)", sourceLocation: sourceLocation)
        #expect(output.contains("Got JSON-RPC error response"), "\(output)", sourceLocation: sourceLocation)
        #expect(output.contains("\"code\": \(code)"), "\(output)", sourceLocation: sourceLocation)
        return output
    }

    /// The daemon, started only once the client is known to be there.
    func startDaemon() throws -> DaemonProcess {
        _ = try SPDKClient.executable()
        return try DaemonProcess()
    }

    /// A sparse 16 MiB file under the daemon's directory.
    func makeImage(_ daemon: DaemonProcess, _ name: String) throws -> String {
        let path = daemon.directory.appendingPathComponent(name).path
        #expect(FileManager.default.createFile(atPath: path, contents: nil))
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        try handle.truncate(atOffset: 16 << 20)
        return path
    }

    /// Creates Malloc0, Null0, U0 and A0 (16 MiB each) the way an operator would.
    func createBdevs(_ daemon: DaemonProcess) throws {
        #expect(try ok(daemon, "bdev_malloc_create", "16", "512", "-b", "Malloc0").trimmed == "Malloc0")
        #expect(try ok(daemon, "bdev_null_create", "Null0", "16", "512").trimmed == "Null0")
        let uring = try makeImage(daemon, "uring.img")
        #expect(try ok(daemon, "bdev_uring_create", uring, "U0").trimmed == "U0")
        let aio = try makeImage(daemon, "aio.img")
        #expect(try ok(daemon, "bdev_aio_create", aio, "A0", "4096").trimmed == "A0")
    }

    @Test func versionAndMethods() throws {
        let daemon = try startDaemon()
        defer { daemon.stop(); daemon.cleanUp() }
        let version = try json(daemon, "spdk_get_version")
        #expect(version["version"]?.stringValue?.hasPrefix("vhost-blkd") == true)
        #expect(version["fields"]?["major"]?.intValue != nil)

        let listed = Set(try json(daemon, "rpc_get_methods").arrayValue?.compactMap(\.stringValue) ?? [])
        for method in Self.implemented { #expect(listed.contains(method), "rpc_get_methods lacks \(method)") }
        // rpc.py's load_config asks for the current methods with these flags.
        let current = Set(try json(daemon, "rpc_get_methods", "-c", "-i").arrayValue?.compactMap(\.stringValue) ?? [])
        #expect(current.isSuperset(of: Self.implemented))

        // Every method the daemon offers is a subcommand spdk-rpc knows.
        let help = try runCommand(SPDKClient.executable(), ["-h"])
        #expect(help.status == 0)
        let commands = Set(help.output.split(separator: "\n").compactMap { line -> String? in
            guard line.hasPrefix("    "), let first = line.split(separator: " ").first else { return nil }
            return String(first)
        })
        for method in listed.subtracting(Self.extensions) {
            #expect(commands.contains(method), "spdk-rpc has no subcommand \(method)")
        }
    }

    /// rpc.py's log commands: one threshold behind both pairs; an unknown
    /// level is refused by rpc.py itself (argparse choices), a lower-case one
    /// sent by hand is accepted as SPDK does.
    @Test func logLevelsThroughRpcPy() throws {
        let daemon = try startDaemon()
        defer { daemon.stop(); daemon.cleanUp() }
        try ok(daemon, "log_set_level", "ERROR")
        #expect(try json(daemon, "log_get_level") == "ERROR")
        #expect(try json(daemon, "log_get_print_level") == "ERROR")
        try ok(daemon, "log_set_print_level", "DEBUG")
        #expect(try json(daemon, "log_get_print_level") == "DEBUG")
        #expect(try json(daemon, "log_get_level") == "DEBUG")
        let (status, output) = try SPDKClient.run(daemon, ["log_set_level", "VERBOSE"])
        #expect(status != 0 && output.contains("invalid choice"), "\(output)")
        #expect(try daemon.call("log_set_level", ["level": "warning"]) == true)
        #expect(try json(daemon, "log_get_level") == "WARNING")
    }

    /// rpc.py's resize and rescan commands (docs/PROTOCOL-NOTES.md, "Live resize").
    @Test func resizeAndRescan() throws {
        let daemon = try startDaemon()
        defer { daemon.stop(); daemon.cleanUp() }
        try createBdevs(daemon)
        try ok(daemon, "bdev_null_resize", "Null0", "32")
        #expect(try json(daemon, "bdev_get_bdevs", "-b", "Null0").arrayValue?.first?["num_blocks"] == .int(65536))
        try fails(daemon, code: -22, "bdev_null_resize", "Null0", "8")
        let uring = daemon.directory.appendingPathComponent("uring.img").path
        #expect(truncate(uring, 32 << 20) == 0)
        try ok(daemon, "bdev_uring_rescan", "U0")
        #expect(try json(daemon, "bdev_get_bdevs", "-b", "U0").arrayValue?.first?["num_blocks"] == .int(65536))
        let aio = daemon.directory.appendingPathComponent("aio.img").path
        #expect(truncate(aio, 32 << 20) == 0)
        try ok(daemon, "bdev_aio_rescan", "A0")
        #expect(try json(daemon, "bdev_get_bdevs", "-b", "A0").arrayValue?.first?["num_blocks"] == .int(8192))
        try fails(daemon, code: -19, "bdev_uring_rescan", "nope")
    }

    /// rpc.py parses our stats and sets QoS limits (issue 4's shapes, issue 8's method).
    @Test func statsAndQoSThroughRpcPy() throws {
        let daemon = try startDaemon()
        defer { daemon.stop(); daemon.cleanUp() }
        try createBdevs(daemon)
        let iostat = try json(daemon, "bdev_get_iostat", "--names", "Malloc0,Null0")
        #expect(iostat["tick_rate"]?.intValue == 1_000_000_000)
        let names = Set(iostat["bdevs"]?.arrayValue?.compactMap { $0["name"]?.stringValue } ?? [])
        #expect(names == ["Malloc0", "Null0"])
        #expect(iostat["bdevs"]?.arrayValue?.first?["num_read_ops"]?.intValue == 0)
        let reset = try json(daemon, "bdev_get_iostat", "--reset-mode", "all")
        #expect(reset["bdevs"]?.arrayValue?.count == 4)
        let reactors = try json(daemon, "framework_get_reactors")
        #expect(reactors["reactors"]?.arrayValue?.count == 1)
        #expect(reactors["reactors"]?.arrayValue?.first?["lcore"]?.intValue == 0)
        let threads = try json(daemon, "thread_get_stats")
        #expect(threads["threads"]?.arrayValue?.isEmpty == false)
        try ok(daemon, "bdev_set_qos_limit", "Malloc0", "--rw-ios-per-sec", "20000", "--rw-mbytes-per-sec", "100")
        let limits = try json(daemon, "bdev_get_bdevs", "-b", "Malloc0").arrayValue?.first?["assigned_rate_limits"]
        #expect(limits?["rw_ios_per_sec"]?.intValue == 20000)
        #expect(limits?["rw_mbytes_per_sec"]?.intValue == 100)
        try fails(daemon, code: -22, "bdev_set_qos_limit", "Malloc0", "--rw-ios-per-sec", "1500")
    }

    @Test func bdevCreateListAndDelete() throws {
        let daemon = try startDaemon()
        defer { daemon.stop(); daemon.cleanUp() }
        try createBdevs(daemon)

        let all = try json(daemon, "bdev_get_bdevs").arrayValue ?? []
        #expect(Set(all.compactMap { $0["name"]?.stringValue }) == ["Malloc0", "Null0", "U0", "A0"])
        let byName = Dictionary(all.compactMap { b in b["name"]?.stringValue.map { ($0, b) } }, uniquingKeysWith: { a, _ in a })
        #expect(byName["Null0"]?["num_blocks"] == .int(32768))
        #expect(byName["U0"]?["num_blocks"] == .int(32768))
        #expect(byName["U0"]?["product_name"] == .string("URING bdev"))
        #expect(byName["A0"]?["block_size"] == .int(4096))
        #expect(byName["A0"]?["num_blocks"] == .int(4096))
        #expect(byName["A0"]?["driver_specific"]?["aio"]?["filename"]?.stringValue?.hasSuffix("/aio.img") == true)

        let malloc = try json(daemon, "bdev_get_bdevs", "-b", "Malloc0").arrayValue ?? []
        #expect(malloc.count == 1)
        #expect(malloc.first?["name"] == .string("Malloc0"))
        #expect(malloc.first?["block_size"] == .int(512))
        #expect(malloc.first?["num_blocks"] == .int(32768))
        #expect(malloc.first?["claimed"] == .bool(false))
        // rpc.py sends {"name", "timeout"} with -t.
        try fails(daemon, code: -19, "bdev_get_bdevs", "-b", "nope", "-t", "10")
        // A duplicate name is refused.
        try fails(daemon, code: -17, "bdev_null_create", "Null0", "16", "512")

        try ok(daemon, "bdev_malloc_delete", "Malloc0")
        try ok(daemon, "bdev_null_delete", "Null0")
        try ok(daemon, "bdev_uring_delete", "U0")
        try ok(daemon, "bdev_aio_delete", "A0")
        try fails(daemon, code: -19, "bdev_null_delete", "Null0")
        #expect(try json(daemon, "bdev_get_bdevs").arrayValue?.isEmpty == true)
    }

    @Test func bdevOptionalFlags() throws {
        let daemon = try startDaemon()
        defer { daemon.stop(); daemon.cleanUp() }
        let image = try makeImage(daemon, "flags.img")
        // rpc.py sends readonly/fallocate/uuid only when given; the daemon must accept them.
        #expect(try ok(daemon, "bdev_aio_create", "-r", image, "A1").trimmed == "A1")
        #expect(try ok(daemon, "bdev_aio_create", "--fallocate", image, "A2", "512").trimmed == "A2")
        #expect(try json(daemon, "bdev_get_bdevs", "-b", "A1").arrayValue?.first?["driver_specific"]?["aio"]?["readonly"] == .bool(true))
        // Without -b, rpc.py lets the daemon pick the name.
        #expect(try ok(daemon, "bdev_malloc_create", "1", "4096").trimmed == "Malloc0")
        #expect(try json(daemon, "bdev_get_bdevs", "-b", "Malloc0").arrayValue?.first?["num_blocks"] == .int(256))
        try ok(daemon, "bdev_aio_delete", "A1")
        try ok(daemon, "bdev_aio_delete", "A2")
        try ok(daemon, "bdev_malloc_delete", "Malloc0")
    }

    @Test func vhostControllersClaimsAndDelete() throws {
        let daemon = try startDaemon()
        defer { daemon.stop(); daemon.cleanUp() }
        try createBdevs(daemon)

        try ok(daemon, "vhost_create_blk_controller", "vhost.0", "Malloc0")
        try ok(daemon, "vhost_create_blk_controller", "--cpumask", "0x1", "vhost.1", "Null0")
        try ok(daemon, "vhost_create_blk_controller", "-r", "vhost.2", "U0")
        try ok(daemon, "vhost_create_blk_controller", "--cpumask", "0x1", "-r", "--transport", "vhost_user_blk", "vhost.3", "A0")

        let all = try json(daemon, "vhost_get_controllers").arrayValue ?? []
        #expect(all.compactMap { $0["ctrlr"]?.stringValue }.sorted() == ["vhost.0", "vhost.1", "vhost.2", "vhost.3"])
        let expected: [(ctrlr: String, bdev: String, readonly: Bool)] = [
            ("vhost.0", "Malloc0", false), ("vhost.1", "Null0", false), ("vhost.2", "U0", true), ("vhost.3", "A0", true),
        ]
        for (ctrlr, bdev, readonly) in expected {
            let entry = all.first { $0["ctrlr"] == .string(ctrlr) }
            let socket = daemon.socketDirectory + "/" + ctrlr
            #expect(entry?["socket"] == .string(socket))
            #expect(entry?["cpumask"] == .string("0x1"))
            #expect(entry?["backend_specific"]?["block"]?["bdev"] == .string(bdev))
            #expect(entry?["backend_specific"]?["block"]?["readonly"] == .bool(readonly))
            #expect(FileManager.default.fileExists(atPath: socket))
        }
        let one = try json(daemon, "vhost_get_controllers", "-n", "vhost.0").arrayValue ?? []
        #expect(one.count == 1)
        #expect(one.first?["ctrlr"] == .string("vhost.0"))
        #expect(one.first?["backend_specific"]?["block"]?["bdev"] == .string("Malloc0"))
        #expect(try json(daemon, "bdev_get_bdevs", "-b", "Malloc0").arrayValue?.first?["claimed"] == .bool(true))

        // Claimed: rpc.py shows the SPDK error (-EBUSY) and exits 1; the bdev stays.
        let busy = try fails(daemon, code: -16, "bdev_malloc_delete", "Malloc0")
        #expect(busy.contains("-16"))
        #expect(busy.contains("Device or resource busy"))
        #expect(try json(daemon, "bdev_get_bdevs", "-b", "Malloc0").arrayValue?.count == 1)
        // -p sends packed_ring: true; whether or not it is supported, rpc.py gets a
        // proper answer (here: Malloc0 is claimed, so a JSON-RPC error either way).
        let packed = try SPDKClient.run(daemon, ["vhost_create_blk_controller", "-p", "vhost.9", "Malloc0"])
        #expect(packed.status == 1 && packed.output.contains("Got JSON-RPC error response"), "\(packed.output)")

        for ctrlr in ["vhost.0", "vhost.1", "vhost.2", "vhost.3"] {
            try ok(daemon, "vhost_delete_controller", ctrlr)
            #expect(!FileManager.default.fileExists(atPath: daemon.socketDirectory + "/" + ctrlr))
        }
        #expect(try json(daemon, "vhost_get_controllers").arrayValue?.isEmpty == true)
        try ok(daemon, "bdev_malloc_delete", "Malloc0")
        try ok(daemon, "bdev_null_delete", "Null0")
        try ok(daemon, "bdev_uring_delete", "U0")
        try ok(daemon, "bdev_aio_delete", "A0")
        #expect(try json(daemon, "bdev_get_bdevs").arrayValue?.isEmpty == true)
        #expect(daemon.isRunning)
    }

    /// vhost_controller_set_coalescing through rpc.py's positional arguments,
    /// and vhost_get_controllers as SPDK's tooling reads it: SPDK's keys per
    /// controller and per session (SPDK lib/vhost/vhost_rpc.c,
    /// `_rpc_get_vhost_controller`; vhost.c, `vhost_session_info_json`).
    @Test func coalescingAndSPDKControllerShape() throws {
        let daemon = try startDaemon()
        defer { daemon.stop(); daemon.cleanUp() }
        #expect(try ok(daemon, "bdev_malloc_create", "16", "512", "-b", "Malloc0").trimmed == "Malloc0")
        try ok(daemon, "vhost_create_blk_controller", "vhost.0", "Malloc0")
        try ok(daemon, "vhost_controller_set_coalescing", "vhost.0", "80", "60000")
        let invalid = try fails(daemon, code: -32602, "vhost_controller_set_coalescing", "vhost.0", "80", "99")
        #expect(invalid.contains("Invalid argument"))
        try fails(daemon, code: -32602, "vhost_controller_set_coalescing", "vhost.9", "80", "60000")

        let memory = try FrontendMemory(size: 16 << 20)
        defer { memory.close() }
        let frontend = try DataPathTests.attach(daemon, "vhost.0", memory: memory, queues: 2)
        defer { frontend.close() }
        #expect(try frontend.read(queue: 1, sector: 0, count: 8).status == BlkWire.statusOK)

        let entry = try #require(try json(daemon, "vhost_get_controllers", "-n", "vhost.0").arrayValue?.first)
        for key in ["ctrlr", "cpumask", "delay_base_us", "iops_threshold", "socket", "sessions", "backend_specific"] {
            #expect(entry[key] != nil, "missing \(key) in \(entry)")
        }
        #expect(entry["delay_base_us"] == .int(80))
        #expect(entry["iops_threshold"] == .int(60000))
        #expect(entry["cpumask"]?.stringValue?.hasPrefix("0x") == true)
        #expect(entry["backend_specific"]?["block"]?["transport"] == .string("vhost_user_blk"))
        let session = try #require(entry["sessions"]?.arrayValue?.first)
        for key in ["vid", "id", "name", "started", "max_queues", "inflight_task_cnt"] {
            #expect(session[key] != nil, "missing \(key) in \(session)")
        }
        #expect(session["started"] == .bool(true))
        #expect(session["max_queues"] == .int(2))
        #expect(session["inflight_task_cnt"] == .int(0))
        #expect(session["name"] == .string("vhost.0s\(session["vid"]?.intValue ?? -1)"))

        // Saved as SPDK's save_config writes it: after the controller's create.
        let saved = try json(daemon, "framework_get_config", "vhost_blk").arrayValue ?? []
        #expect(saved.compactMap { $0["method"]?.stringValue } == ["vhost_create_blk_controller", "vhost_controller_set_coalescing"])
        #expect(daemon.isRunning)
    }
}

private extension String {
    /// Without surrounding whitespace and newlines.
    var trimmed: String { trimmingCharacters(in: .whitespacesAndNewlines) }
}
