import DaemonTestSupport
import Foundation
import JSONRPC
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// One RPC socket default for the daemon and the CLI, and the variable both
/// read (`VHOST_BLKD_RPC_SOCKET`; docs/OPERATIONS.md, "Sockets and permissions").
@Suite("RPC socket default and VHOST_BLKD_RPC_SOCKET")
struct SocketDefaultTests {
    /// The real daemon started with only the variable (no `-r`) listens there,
    /// creating the missing directory; the real CLI with only the variable
    /// reaches it; `-s` overrides the variable either way.
    @Test func variableAndOverride() throws {
        let base = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: base) }
        let rpc = "\(base)/run/rpc.sock"  // run/ does not exist yet
        let variable = ["VHOST_BLKD_RPC_SOCKET": rpc]

        let process = Process()
        process.executableURL = URL(fileURLWithPath: DaemonProcess.daemonPath)
        process.arguments = ["-S", "\(base)/ctrl", "-m", "0x1", "--log-level", "info"]
        var environment = ProcessInfo.processInfo.environment
        environment["VHOST_BLKD_RPC_SOCKET"] = rpc
        process.environment = environment
        let logPath = "\(base)/daemon.log"
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        process.standardError = log
        process.standardOutput = log
        try process.run()
        defer {
            if process.isRunning {
                kill(process.processIdentifier, SIGTERM)  // only the daemon this test started
                process.waitUntilExit()
            }
        }
        let deadline = Date().addingTimeInterval(15)
        var up = false
        while Date() < deadline && process.isRunning && !up {
            up = (try? RPCClient(path: rpc, timeout: .seconds(5)).call("spdk_get_version", params: nil)) != nil
            if !up { usleep(20_000) }
        }
        let daemonLog = { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }
        try #require(up, "the daemon did not listen on $VHOST_BLKD_RPC_SOCKET:\n\(daemonLog())")

        // The CLI with the variable alone.
        let plain = try ExamplesSupport.run(DaemonProcess.ctlPath, ["spdk_get_version"], environment: variable)
        #expect(plain.status == 0, "\(plain.stderr)")
        #expect(plain.stdout.contains("vhost-blkd v"))
        // -s wins over the variable: a wrong variable with the right -s works...
        let override = try ExamplesSupport.run(
            DaemonProcess.ctlPath, ["-s", rpc, "bdev_get_bdevs"],
            environment: ["VHOST_BLKD_RPC_SOCKET": "\(base)/elsewhere.sock"])
        #expect(override.status == 0, "\(override.stderr)")
        // ...and the right variable with a wrong -s fails, naming the -s path.
        let wrong = try ExamplesSupport.run(
            DaemonProcess.ctlPath, ["-s", "\(base)/elsewhere.sock", "bdev_get_bdevs"], environment: variable)
        #expect(wrong.status == 1 && wrong.stderr.contains("elsewhere.sock"), "\(wrong.stderr)")
        // An empty variable is unset: the built-in default, which is not this daemon's socket.
        let empty = try ExamplesSupport.run(
            DaemonProcess.ctlPath, ["spdk_get_version"], environment: ["VHOST_BLKD_RPC_SOCKET": ""])
        #expect(empty.status == 0 || empty.stderr.contains("/run/vhost-blkd/rpc.sock"), "\(empty.stderr)")

        // The daemon's -r wins over the variable too: a second daemon on its own -r.
        let second = try DaemonProcess(environment: variable)
        defer { second.stop(); second.cleanUp() }
        #expect(second.rpcSocket != rpc)
        #expect((try? second.call("spdk_get_version")) != nil)

        kill(process.processIdentifier, SIGTERM)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "\(daemonLog())")
        #expect(!FileManager.default.fileExists(atPath: rpc), "the socket outlived the daemon")
        #expect(!FileManager.default.fileExists(atPath: "\(base)/run"), "the directory the daemon created outlived it")
    }
}
