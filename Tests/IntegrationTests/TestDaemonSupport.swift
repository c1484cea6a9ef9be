import DaemonTestSupport
import Foundation
import JSONRPC
import Testing
import VhostUserFrontend

/// Expects `body` to fail with a JSON-RPC error of `code`; returns its message.
@discardableResult
func expectRPCError(_ code: Int, _ body: () throws -> JSON, sourceLocation: SourceLocation = #_sourceLocation) -> String {
    do {
        let result = try body()
        Issue.record("expected error \(code), got result \(result)", sourceLocation: sourceLocation)
    } catch RPCClientError.rpc(let error) {
        #expect(error.code == code, "message: \(error.message)", sourceLocation: sourceLocation)
        return error.message
    } catch {
        Issue.record("expected RPC error \(code), got \(error)", sourceLocation: sourceLocation)
    }
    return ""
}

/// A folder for a daemon that persists its config (`--config`, `--persist`),
/// so a daemon started again there, after `crash()` or `stop()`, comes back
/// with every bdev and controller.
struct PersistentDaemonFolder {
    let directory = URL(fileURLWithPath: "/tmp").appendingPathComponent("vbd-\(UUID().uuidString.prefix(8))")

    var arguments: [String] { ["--config", directory.appendingPathComponent("config.json").path, "--persist"] }

    /// A daemon on this folder's config and sockets.
    func start() throws -> DaemonProcess { try DaemonProcess(extraArguments: arguments, directory: directory) }

    func remove() { try? FileManager.default.removeItem(at: directory) }
}

extension PersistentDaemonFolder {
    /// Runs `body` with a new folder, a daemon started there serving uring
    /// bdev D0 on controller vhost.0, and 16 MiB of frontend memory. `body`
    /// may start the daemon again; the one it leaves is stopped.
    static func withDaemonServingD0(
        _ body: (PersistentDaemonFolder, inout DaemonProcess, FrontendMemory) throws -> Void
    ) throws {
        let folder = PersistentDaemonFolder()
        defer { folder.remove() }
        var daemon = try folder.start()
        defer { daemon.stop() }
        try DataPathTests.createBdev(daemon, .uring, name: "D0")
        try DataPathTests.createController(daemon, "vhost.0", bdev: "D0")
        let memory = try FrontendMemory(size: 16 << 20)
        defer { memory.close() }
        try body(folder, &daemon, memory)
    }
}
