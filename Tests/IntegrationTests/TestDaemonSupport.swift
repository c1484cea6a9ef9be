import DaemonTestSupport
import Foundation
import JSONRPC
import Testing

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
