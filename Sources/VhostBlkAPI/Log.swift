public import JSONRPC

/// SPDK's log levels, as its log RPCs name them (lib/log/log_rpc.c upstream:
/// matched without regard to case, answered in capitals).
public enum SPDKLogLevel: String, Sendable, CaseIterable {
    case error = "ERROR"
    case warning = "WARNING"
    case notice = "NOTICE"
    case info = "INFO"
    case debug = "DEBUG"

    /// `name` in any case; nil for anything else.
    public init?(name: String) {
        guard let level = Self.allCases.first(where: { $0.rawValue == name.uppercased() }) else { return nil }
        self = level
    }

    /// "ERROR, WARNING, NOTICE, INFO or DEBUG".
    public static let choices = allCases.dropLast().map(\.rawValue).joined(separator: ", ") + " or " + (allCases.last?.rawValue ?? "")

    /// Decodes `level` (required) from `params`; -32602 naming the choices for any other value.
    static func decode(_ p: inout RPCParams) throws(RPCError) -> SPDKLogLevel {
        let name: String = try p.required("level")
        guard let level = SPDKLogLevel(name: name) else {
            throw .invalidParams("Invalid log level '\(name)': expected \(choices)")
        }
        return level
    }
}

/// `log_set_level {level}` -> true. SPDK: the level of messages sent to
/// syslog; vhost-blkd has one log (standard error), so this and
/// `log_set_print_level` set the same threshold.
public struct LogSetLevelParams: RPCMethodParams {
    public static let method = "log_set_level"
    public var level: SPDKLogLevel

    public init(level: SPDKLogLevel) { self.level = level }

    public init(params: JSON?) throws(RPCError) {
        self = try Self.decode(params) { (p: inout RPCParams) throws(RPCError) in Self(level: try SPDKLogLevel.decode(&p)) }
    }

    public var json: JSON { ["level": .string(level.rawValue)] }
}

/// `log_get_level` (no params) -> "ERROR" ... "DEBUG".
public struct LogGetLevelParams: RPCMethodParams {
    public static let method = "log_get_level"

    public init() {}

    public init(params: JSON?) throws(RPCError) {
        self = try Self.decode(params) { (_: inout RPCParams) throws(RPCError) in Self() }
    }

    public var json: JSON { .object(JSONObject()) }
}

/// `log_set_print_level {level}` -> true. SPDK: the level of messages
/// printed to the console; here the same threshold as `log_set_level`.
public struct LogSetPrintLevelParams: RPCMethodParams {
    public static let method = "log_set_print_level"
    public var level: SPDKLogLevel

    public init(level: SPDKLogLevel) { self.level = level }

    public init(params: JSON?) throws(RPCError) {
        self = try Self.decode(params) { (p: inout RPCParams) throws(RPCError) in Self(level: try SPDKLogLevel.decode(&p)) }
    }

    public var json: JSON { ["level": .string(level.rawValue)] }
}

/// `log_get_print_level` (no params) -> "ERROR" ... "DEBUG".
public struct LogGetPrintLevelParams: RPCMethodParams {
    public static let method = "log_get_print_level"

    public init() {}

    public init(params: JSON?) throws(RPCError) {
        self = try Self.decode(params) { (_: inout RPCParams) throws(RPCError) in Self() }
    }

    public var json: JSON { .object(JSONObject()) }
}
