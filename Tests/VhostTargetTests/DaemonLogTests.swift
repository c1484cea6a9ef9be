import JSONRPC
import Logging
import Testing
import VhostBlkAPI
@testable import VhostTarget

/// The daemon's log threshold (`LogControl`) and handler, and the SPDK level
/// names of the log RPCs (LogMethods.swift).
@Suite struct DaemonLogTests {
    /// Every logger, copies included, reads the one threshold, whichever
    /// thread changed it.
    @Test func oneThresholdForEveryLoggerAndThread() async {
        let control = LogControl(level: .info)
        let logger = Logger(label: "test") { DaemonLogHandler(label: $0, format: .text, control: control) }
        var copy = logger
        copy[metadataKey: "controller.name"] = "c0"
        #expect(logger.logLevel == .info && copy.logLevel == .info)
        control.set(.debug)
        #expect(logger.logLevel == .debug && copy.logLevel == .debug)
        await Task.detached { control.set(.error) }.value
        #expect(logger.logLevel == .error && copy.logLevel == .error)
        for level in Logger.Level.allCases {
            control.set(level)
            #expect(control.level == level)
        }
    }

    @Test func spdkLevelNames() {
        for level in SPDKLogLevel.allCases {
            #expect(SPDKLogLevel(name: level.rawValue.lowercased()) == level)
            #expect(VhostTarget.spdkLevel(VhostTarget.swiftLogLevel(level)) == level)
        }
        #expect(SPDKLogLevel(name: "WARN") == nil && SPDKLogLevel(name: "trace") == nil)
        #expect(VhostTarget.spdkLevel(.trace) == .debug && VhostTarget.spdkLevel(.critical) == .error)
        #expect(SPDKLogLevel.choices == "ERROR, WARNING, NOTICE, INFO or DEBUG")
        #expect(throws: RPCError.self) { try LogSetLevelParams(params: ["level": "VERBOSE"]) }
        #expect(throws: RPCError.self) { try LogSetPrintLevelParams(params: ["level": 3]) }
        #expect(throws: RPCError.self) { try LogGetLevelParams(params: ["level": "INFO"]) }
        #expect((try? LogSetLevelParams(params: ["level": "debug"])) == LogSetLevelParams(level: .debug))
        #expect(LogSetPrintLevelParams(level: .notice).json == ["level": "NOTICE"])
    }

    @Test func metadataAsJSON() {
        let value: Logger.MetadataValue = .dictionary([
            "b": .array(["x", .stringConvertible(3)]), "a": .string("y"), "c": .dictionary(["d": "e"]),
        ])
        #expect(DaemonLogHandler.json(value).encoded() == #"{"a":"y","b":["x","3"],"c":{"d":"e"}}"#)
        let stamp = LogClock.utcTimestamp()
        #expect(stamp.count == 27 && stamp.hasSuffix("Z"), "\(stamp)")
    }
}
