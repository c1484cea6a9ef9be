import DaemonTestSupport
import Foundation

/// Running the files of `examples/` and `scripts/` as an operator would.
enum ExamplesSupport {
    /// The package root (this file is Tests/IntegrationTests/<file>).
    static let repoRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// `<repo>/<relative>`.
    static func path(_ relative: String) -> String { repoRoot.appendingPathComponent(relative).path }

    /// The file's text.
    static func text(_ relative: String) throws -> String { try String(contentsOfFile: path(relative), encoding: .utf8) }

    /// The first executable called `name` in `PATH`.
    static func executable(named name: String) -> String? {
        let dirs = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":")
        return dirs.map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// True in CI or with `VHOST_BLKD_E2E=1`: a missing prerequisite then fails instead of skipping.
    static var isRequired: Bool {
        let env = ProcessInfo.processInfo.environment
        return env["CI"] == "true" || env["VHOST_BLKD_E2E"] == "1"
    }

    /// Runs `path` with `arguments`, extra `environment` and optional `stdin`
    /// text; returns its status, stdout and stderr (separately).
    static func run(
        _ path: String, _ arguments: [String] = [], environment: [String: String] = [:], stdin: String? = nil,
        directory: String? = nil
    ) throws -> (status: Int32, stdout: String, stderr: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        for (key, value) in environment { env[key] = value }
        process.environment = env
        if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
        let out = Pipe()
        let err = Pipe()
        let input = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = input
        try process.run()
        if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
        try input.fileHandleForWriting.close()
        // Read stderr on another thread so neither pipe fills up.
        let errorText = LockedText()
        let reader = Thread { errorText.set(String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)) }
        reader.start()
        let output = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, output, errorText.waitForValue())
    }

    /// The subcommand names of `vhost-blkctl` from its command definitions.
    static func ctlSubcommands() throws -> [String] {
        let dump = try run(DaemonProcess.ctlPath, ["--experimental-dump-help"])
        let json = try JSONSerialization.jsonObject(with: Data(dump.stdout.utf8)) as? [String: Any]
        let command = json?["command"] as? [String: Any]
        let subcommands = command?["subcommands"] as? [[String: Any]] ?? []
        return subcommands.compactMap { $0["commandName"] as? String }.filter { $0 != "help" }
    }
}

/// A string handed from a reader thread, waited for once.
final class LockedText: @unchecked Sendable {  // all state under `condition`
    private let condition = NSCondition()
    private var value: String?

    func set(_ text: String) {
        condition.lock()
        value = text
        condition.signal()
        condition.unlock()
    }

    func waitForValue() -> String {
        condition.lock()
        defer { condition.unlock() }
        while value == nil { condition.wait() }
        return value ?? ""
    }
}
