import DaemonTestSupport
import Foundation
import JSONRPC
import Testing

/// SPDK's log RPCs against the real daemon, and `--log-format json`
/// (docs/OPERATIONS.md, "Log lines").
@Suite("Log level at runtime and JSON log lines")
struct LogControlTests {
    /// Makes the daemon log one debug line naming `marker`: a failing call
    /// (here an unknown parameter) is logged at debug.
    static func failingCall(_ daemon: DaemonProcess, _ marker: String) {
        _ = try? daemon.call("bdev_malloc_delete", ["name": "none", marker: 1])
    }

    /// Waits up to 5 s for `text` in the daemon's log.
    static func logContains(_ daemon: DaemonProcess, _ text: String) -> Bool {
        let deadline = Date().addingTimeInterval(5)
        while Date() < deadline {
            if daemon.log.contains(text) { return true }
            usleep(20_000)
        }
        return false
    }

    @Test func setAndGetTheLevelAtRuntime() throws {
        let daemon = try DaemonProcess(extraArguments: ["--log-level", "info"])
        defer { daemon.stop(); daemon.cleanUp() }
        #expect(try daemon.call("log_get_level") == "INFO")
        #expect(try daemon.call("log_get_print_level") == "INFO")

        Self.failingCall(daemon, "beforeDebug")
        _ = try daemon.call("spdk_get_version")  // the failure's line, if any, is written by now
        #expect(!daemon.log.contains("beforeDebug"), "a debug line at --log-level info:\n\(daemon.log)")

        #expect(try daemon.call("log_set_level", ["level": "DEBUG"]) == true)
        #expect(try daemon.call("log_get_level") == "DEBUG")
        #expect(try daemon.call("log_get_print_level") == "DEBUG")
        Self.failingCall(daemon, "afterDebug")
        #expect(Self.logContains(daemon, "RPC bdev_malloc_delete failed: Unknown parameter 'afterDebug'"), "\(daemon.log)")
        #expect(Self.logContains(daemon, "afterDebug"))
        #expect(daemon.log.contains("log level INFO -> DEBUG (log_set_level)"))

        // The print level is the same threshold; lower case is accepted, as SPDK does.
        #expect(try daemon.call("log_set_print_level", ["level": "error"]) == true)
        #expect(try daemon.call("log_get_level") == "ERROR")
        Self.failingCall(daemon, "afterError")
        try daemon.call("bdev_malloc_create", ["name": "quiet", "num_blocks": 64, "block_size": 512])
        _ = try daemon.call("spdk_get_version")
        #expect(!daemon.log.contains("afterError"))
        #expect(!daemon.log.contains("bdev created"), "an info line at ERROR")

        // Invalid levels: -32602 naming the choices; the level is unchanged.
        for bad: JSON in ["VERBOSE", "", 5] {
            let message = expectRPCError(-32602) { try daemon.call("log_set_level", ["level": bad]) }
            if bad.stringValue != nil {
                #expect(message.contains("Invalid log level") && message.contains("ERROR, WARNING, NOTICE, INFO or DEBUG"), "\(message)")
            }
        }
        _ = expectRPCError(-32602) { try daemon.call("log_set_print_level", ["level": "TRACE"]) }
        _ = expectRPCError(-32602) { try daemon.call("log_set_level") }
        _ = expectRPCError(-32602) { try daemon.call("log_get_level", ["level": "INFO"]) }
        #expect(try daemon.call("log_get_level") == "ERROR")
    }

    /// vhost-blkctl's subcommands, with rpc.py's output (print_dict of a string).
    @Test func throughVhostBlkctl() throws {
        let daemon = try DaemonProcess(extraArguments: ["--log-level", "warning"])
        defer { daemon.stop(); daemon.cleanUp() }
        func ctl(_ args: String...) throws -> (status: Int32, output: String) {
            try runCommand(DaemonProcess.ctlPath, ["-s", daemon.rpcSocket] + args)
        }
        #expect(try ctl("log_get_level") == (0, "\"WARNING\"\n"))
        #expect(try ctl("log_set_level", "debug") == (0, ""))
        #expect(try ctl("log_get_print_level") == (0, "\"DEBUG\"\n"))
        #expect(try ctl("log_set_print_level", "NOTICE") == (0, ""))
        #expect(try ctl("log_get_level") == (0, "\"NOTICE\"\n"))
        let bad = try ctl("log_set_level", "VERBOSE")
        #expect(bad.status == 64 && bad.output.contains("ERROR"), "\(bad.output)")
    }

    /// `--log-format json`: every line is one JSON object with the fields
    /// OPERATIONS.md lists; metadata nests; a runtime level change applies.
    @Test func jsonLines() throws {
        let daemon = try DaemonProcess(extraArguments: ["--log-format", "json", "--log-level", "info"])
        defer { daemon.cleanUp() }
        try daemon.call("bdev_malloc_create", ["name": "J0", "num_blocks": 64, "block_size": 512])
        #expect(try daemon.call("log_set_level", ["level": "DEBUG"]) == true)
        Self.failingCall(daemon, "jsonDebug")
        #expect(daemon.stop() == 0)

        let lines = daemon.log.split(separator: "\n")
        #expect(lines.count >= 4, "\(daemon.log)")
        var messages: [String] = []
        for line in lines {
            let object = try JSON.parse(String(line))
            for key in ["timestamp", "level", "label", "source", "message"] {
                #expect(object[key]?.stringValue != nil, "\(key) missing: \(line)")
            }
            let timestamp = object["timestamp"]?.stringValue ?? ""
            #expect(timestamp.count == 27 && timestamp.hasSuffix("Z") && timestamp.contains("T"), "\(timestamp)")
            #expect(object["label"] == "vhost-blkd")
            if let metadata = object["metadata"] { #expect(metadata.objectValue != nil, "\(line)") }
            messages.append(object["message"]?.stringValue ?? "")
        }
        let listening = try #require(lines.first { $0.contains("vhost-blkd listening") }).description
        let parsed = try JSON.parse(listening)
        #expect(parsed["level"] == "info")
        #expect(parsed["metadata"]?["rpc.socket"]?.stringValue == daemon.rpcSocket)
        #expect(messages.contains { $0.contains("RPC bdev_malloc_delete failed") && $0.contains("jsonDebug") })
        #expect(messages.contains("vhost-blkd stopped"))
    }

    /// The default text format keeps swift-log's StreamLogHandler line.
    @Test func textLinesByDefault() throws {
        let daemon = try DaemonProcess(extraArguments: ["--log-level", "info"])
        defer { daemon.stop(); daemon.cleanUp() }
        let line = try #require(daemon.log.split(separator: "\n").first { $0.contains("vhost-blkd listening") })
        #expect(line.contains(" info vhost-blkd: ") && line.contains("rpc.socket=\(daemon.rpcSocket)") && line.contains("] vhost-blkd listening"), "\(line)")
        let bad = try runCommand(DaemonProcess.daemonPath, ["--log-format", "xml", "-r", "/nonexistent/rpc.sock"])
        #expect(bad.status == 64 && bad.output.contains("unknown --log-format 'xml'"), "\(bad.output)")
    }
}
