import Foundation
import JSONRPC

/// The real `vhost-blkd` binary, started in a private temporary directory,
/// for integration and end-to-end tests. Stopped with SIGTERM on `stop()`.
public final class DaemonProcess: @unchecked Sendable {  // used from one test at a time
    public let directory: URL
    public let rpcSocket: String
    public let socketDirectory: String
    public let logPath: String
    private let process = Process()
    private var stopped = false

    /// Where `swift build` put the executables (next to the test bundle), or $VHOST_BLKD_BIN's folder.
    public static var binaryDirectory: URL {
        if let path = ProcessInfo.processInfo.environment["VHOST_BLKD_BIN"] {
            return URL(fileURLWithPath: path).deletingLastPathComponent()
        }
        var url = Bundle.main.bundleURL
        for _ in 0..<3 where !FileManager.default.fileExists(atPath: url.appendingPathComponent("vhost-blkd").path) {
            url = url.deletingLastPathComponent()
        }
        return url
    }

    public static var daemonPath: String { binaryDirectory.appendingPathComponent("vhost-blkd").path }
    public static var ctlPath: String { binaryDirectory.appendingPathComponent("vhost-blkctl").path }

    /// Starts the daemon and waits until its RPC socket answers. `directory`
    /// reuses a folder (a restart with the same sockets and files); nil makes
    /// a fresh one under /tmp. The log is appended to. `launcher` (a command
    /// and its options, e.g. setpriv(1) with a user) runs the daemon: it must
    /// exec it, so that `pid` stays the daemon's.
    public init(cpumask: String = "0x1", extraArguments: [String] = [], environment: [String: String] = [:],
                directory reuse: URL? = nil, launcher: [String] = []) throws {
        // Unix socket paths must stay short: use /tmp directly.
        let base = reuse ?? URL(fileURLWithPath: "/tmp").appendingPathComponent("vbd-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: base, withIntermediateDirectories: true)
        directory = base
        rpcSocket = base.appendingPathComponent("rpc.sock").path
        socketDirectory = base.appendingPathComponent("ctrl").path
        logPath = base.appendingPathComponent("daemon.log").path
        if !FileManager.default.fileExists(atPath: logPath) {
            _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        }
        let arguments = ["-r", rpcSocket, "-S", socketDirectory, "-m", cpumask, "--log-level", "debug"] + extraArguments
        if let command = launcher.first {
            process.executableURL = URL(fileURLWithPath: command)
            process.arguments = Array(launcher.dropFirst()) + [Self.daemonPath] + arguments
        } else {
            process.executableURL = URL(fileURLWithPath: Self.daemonPath)
            process.arguments = arguments
        }
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        process.environment = env
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        try log.seekToEnd()
        process.standardError = log
        process.standardOutput = log
        do {
            try process.run()
        } catch {
            stopped = true  // never launched: Process traps on terminationStatus
            throw error
        }
        try waitForSocket()
    }

    deinit { stop() }

    public var pid: Int32 { process.processIdentifier }
    public var isRunning: Bool { process.isRunning }

    private func waitForSocket() throws {
        let deadline = Date().addingTimeInterval(15)
        while Date() < deadline {
            if !process.isRunning {
                throw DaemonError.exited(status: process.terminationStatus, log: log)
            }
            if let client = try? RPCClient(path: rpcSocket, timeout: .seconds(5)),
               (try? client.call("spdk_get_version", params: nil)) != nil {
                return
            }
            usleep(20_000)
        }
        throw DaemonError.timeout(log: log)
    }

    /// A new RPC connection.
    public func client() throws -> RPCClient { try RPCClient(path: rpcSocket, timeout: .seconds(30)) }

    /// Calls `method` on a fresh connection.
    @discardableResult
    public func call(_ method: String, _ params: JSON? = nil) throws -> JSON {
        try client().call(method, params: params)
    }

    /// The daemon's log so far.
    public var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// SIGTERM, then waits; returns the exit status (SIGKILL after 20 s).
    @discardableResult
    public func stop() -> Int32 {
        guard !stopped else { return process.isRunning || process.processIdentifier == 0 ? -1 : process.terminationStatus }
        stopped = true
        if process.isRunning {
            kill(process.processIdentifier, SIGTERM)
            let deadline = Date().addingTimeInterval(20)
            while process.isRunning && Date() < deadline { usleep(10_000) }
            if process.isRunning {
                kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
                return -9
            }
        }
        return process.terminationStatus
    }

    /// SIGKILL, then reaps it: a crash, with no cleanup by the daemon.
    public func crash() {
        guard !stopped else { return }
        stopped = true
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    /// Removes the temporary directory (after `stop()`).
    public func cleanUp() {
        try? FileManager.default.removeItem(at: directory)
    }
}

public enum DaemonError: Error, CustomStringConvertible {
    case exited(status: Int32, log: String)
    case timeout(log: String)

    public var description: String {
        switch self {
        case .exited(let status, let log): return "vhost-blkd exited with \(status):\n\(log)"
        case .timeout(let log): return "vhost-blkd did not answer on its RPC socket:\n\(log)"
        }
    }
}

/// Runs a command and returns (status, combined output).
@discardableResult
public func runCommand(_ path: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: path)
    p.arguments = arguments
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = pipe
    try p.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    // Closed here, on this thread, not whenever the handle is deallocated:
    // a late close on another thread can hit a descriptor number that a
    // concurrent test's Process.run has just been given (swiftlang/swift
    // issue 57827; a fresh-clone CI run crashed in Process.run with EBADF).
    try? pipe.fileHandleForReading.close()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: data, as: UTF8.self))
}
