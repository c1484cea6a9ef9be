import JSONRPC
import Logging
import VhostBlkAPI

/// SPDK's log RPCs (lib/log/log_rpc.c upstream): the daemon's log threshold,
/// changed at runtime. SPDK keeps two (syslog: `log_set_level`; console:
/// `log_set_print_level`); vhost-blkd writes one log, to standard error (the
/// journal under systemd), so both pairs set and read that one threshold
/// (`LogControl`), which starts at `--log-level`. Not saved: a restart
/// goes back to `--log-level` (docs/OPERATIONS.md, "Log lines").
extension VhostTarget {
    static let logRPCMethods: [RPCMethod] = [
        .immediate(LogSetLevelParams.self, .log, mutatesConfig: false) { t, p in t.setLogLevel(p.level, by: LogSetLevelParams.method) },
        .immediate(LogGetLevelParams.self, .log, mutatesConfig: false) { t, _ in t.logLevelName() },
        .immediate(LogSetPrintLevelParams.self, .log, mutatesConfig: false) { t, p in
            t.setLogLevel(p.level, by: LogSetPrintLevelParams.method)
        },
        .immediate(LogGetPrintLevelParams.self, .log, mutatesConfig: false) { t, _ in t.logLevelName() },
    ]

    /// The threshold as SPDK names it.
    func logLevelName() -> JSON { .string(Self.spdkLevel(configuration.logControl.level).rawValue) }

    func setLogLevel(_ level: SPDKLogLevel, by method: String) -> JSON {
        let control = configuration.logControl
        let before = Self.spdkLevel(control.level)
        let new = Self.swiftLogLevel(level)
        // The line is written under whichever threshold lets it through (a notice).
        if new > .notice { logger.notice("log level \(before.rawValue) -> \(level.rawValue) (\(method))") }
        control.set(new)
        if new <= .notice { logger.notice("log level \(before.rawValue) -> \(level.rawValue) (\(method))") }
        return .bool(true)
    }

    /// SPDK's level -> swift-log's (same names; SPDK's WARNING is `.warning`).
    static func swiftLogLevel(_ level: SPDKLogLevel) -> Logger.Level {
        switch level {
        case .error: .error
        case .warning: .warning
        case .notice: .notice
        case .info: .info
        case .debug: .debug
        }
    }

    /// swift-log's level -> SPDK's: `trace` (finer than SPDK has) reads as
    /// DEBUG, `critical` as ERROR.
    static func spdkLevel(_ level: Logger.Level) -> SPDKLogLevel {
        switch level {
        case .trace, .debug: .debug
        case .info: .info
        case .notice: .notice
        case .warning: .warning
        case .error, .critical: .error
        }
    }
}
