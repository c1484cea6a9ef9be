import Foundation
import Glibc
import Testing

/// The throw-away Ceph cluster of scripts/ceph-test-cluster.sh (one mon, one
/// memstore OSD, auth off), started once for a suite by the `.cephCluster`
/// trait and stopped after it by the script's pid files. Where the cluster
/// cannot start (no Ceph packages and not root to install them), the suite's
/// tests are `TestPrerequisites.unavailable`: a failure under CI=true.
public struct CephTestCluster: Sendable {
    public let directory: URL
    public let configPath: String

    @TaskLocal public static var current: CephTestCluster?

    /// scripts/ceph-test-cluster.sh, found from this file's path (Sources/DaemonTestSupport/<file>).
    static let script = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("scripts/ceph-test-cluster.sh").path

    /// Starts the cluster in a new directory; nil and why not when it cannot.
    public static func start() -> Result<CephTestCluster, CephClusterError> {
        let directory = URL(fileURLWithPath: "/tmp").appendingPathComponent("vbd-ceph-\(UUID().uuidString.prefix(8))")
        do {
            let (status, output) = try runScript(["start", directory.path])
            guard status == 0 else {
                _ = try? runScript(["stop", directory.path])
                return .failure(CephClusterError(message: "scripts/ceph-test-cluster.sh start failed (\(status)): \(output.suffix(2000))"))
            }
            return .success(CephTestCluster(directory: directory, configPath: directory.appendingPathComponent("ceph.conf").path))
        } catch {
            return .failure(CephClusterError(message: "cannot run scripts/ceph-test-cluster.sh: \(error)"))
        }
    }

    public func stop() {
        _ = try? Self.runScript(["stop", directory.path])
        try? FileManager.default.removeItem(at: directory)
    }

    /// Runs the script with `arguments`, its output in a file, and waits
    /// with waitpid(2): Foundation's `Process.waitUntilExit` was seen to miss
    /// the exit of a script whose children (ceph-mon, ceph-osd) daemonize.
    public static func runScript(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let log = "/tmp/vbd-ceph-script-\(UUID().uuidString.prefix(8)).log"
        defer { try? FileManager.default.removeItem(atPath: log) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let argv = (["/bin/bash", script] + arguments).map { strdup($0) }
        defer { argv.forEach { free($0) } }
        // No signal blocked or ignored in the script and the daemons it starts,
        // whatever the test runner's thread has: ceph-osd must see stop-osd's SIGTERM.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigmask(&attributes, &none)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGTERM, SIGINT, SIGHUP, SIGPIPE, SIGCHLD] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var pid: pid_t = 0
        var args = argv + [nil]
        let rc = posix_spawn(&pid, "/bin/bash", &actions, &attributes, &args, environ)
        guard rc == 0 else { throw CephClusterError(message: "posix_spawn of \(script): \(String(cString: strerror(rc)))") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        let exited = status & 0x7f == 0
        return (exited ? (status >> 8) & 0xff : 128 + (status & 0x7f), output)
    }

    /// Stops the OSD (SIGTERM by its pid file; memstore keeps the objects).
    public func stopOSD() throws {
        let (status, output) = try Self.runScript(["stop-osd", directory.path])
        guard status == 0 else { throw CephClusterError(message: "stop-osd failed (\(status)): \(output)") }
    }

    /// Starts the OSD again; returns once an object can be written.
    public func startOSD() throws {
        let (status, output) = try Self.runScript(["start-osd", directory.path])
        guard status == 0 else { throw CephClusterError(message: "start-osd failed (\(status)): \(output)") }
    }

    /// Runs Ceph's `rbd` tool against this cluster.
    @discardableResult
    public func rbd(_ arguments: String...) throws -> String {
        let (status, output) = try runCommand("/usr/bin/timeout", ["60", "rbd", "-c", configPath] + arguments)
        guard status == 0 else { throw CephClusterError(message: "rbd \(arguments.joined(separator: " ")) failed (\(status)): \(output)") }
        return output
    }

    /// The image's bytes `offset ..< offset + length`, read by `rbd export` (not through the daemon).
    public func exported(_ image: String, offset: Int, length: Int) throws -> [UInt8] {
        let file = directory.appendingPathComponent("export-\(UUID().uuidString.prefix(8)).raw").path
        defer { try? FileManager.default.removeItem(atPath: file) }
        try rbd("export", "rbd/\(image)", file)
        let data = try Data(contentsOf: URL(fileURLWithPath: file))
        guard offset + length <= data.count else { return [] }
        return [UInt8](data[offset..<(offset + length)])
    }
}

public struct CephClusterError: Error, CustomStringConvertible {
    public let message: String
    public init(message: String) { self.message = message }
    public var description: String { message }
}

/// Runs a suite with a cluster of its own (`CephTestCluster.current`).
public struct CephClusterTrait: SuiteTrait, TestScoping {
    public init() {}
    public var isRecursive: Bool { false }

    public func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        switch CephTestCluster.start() {
        case .success(let cluster):
            defer { cluster.stop() }
            try await CephTestCluster.$current.withValue(cluster) { try await function() }
        case .failure(let error):
            // Each test then finds no cluster and reports it (a failure under CI=true).
            FileHandle.standardError.write(Data("Ceph test cluster unavailable: \(error)\n".utf8))
            try await CephTestCluster.$unavailableReason.withValue(error.message) { try await function() }
        }
    }
}

extension CephTestCluster {
    @TaskLocal public static var unavailableReason: String?

    /// The suite's cluster; `TestPrerequisites.unavailable` when there is none.
    public static func required(sourceLocation: SourceLocation = #_sourceLocation) throws -> CephTestCluster {
        if let current { return current }
        try TestPrerequisites.unavailable(unavailableReason ?? "no Ceph test cluster (run under the .cephCluster trait)",
                                          sourceLocation: sourceLocation)
    }
}

extension Trait where Self == CephClusterTrait {
    public static var cephCluster: Self { CephClusterTrait() }
}
