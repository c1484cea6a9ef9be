import ArgumentParser
import VhostBlkAPI

/// ERROR ... DEBUG in any case (the daemon, like SPDK, ignores case).
extension SPDKLogLevel: ExpressibleByArgument {
    public init?(argument: String) { self.init(name: argument) }
    public static var allValueStrings: [String] { allCases.map(\.rawValue) }
}

/// vhost-blkd has one log (standard error): the level and the print level are
/// the same threshold, as the daemon's docs say (docs/vhost-blkd.8).
private let oneLog = "vhost-blkd has one log, standard error: log_set_level and log_set_print_level set the same threshold, which holds until the daemon restarts (then --log-level)."

struct LogSetLevel: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: LogSetLevelParams.method, abstract: "set log level", discussion: oneLog)
    @Argument(help: "Log level: ERROR, WARNING, NOTICE, INFO or DEBUG") var level: SPDKLogLevel

    func run() throws { try invoke(LogSetLevelParams(level: level), style: .none) }
}

struct LogGetLevel: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: LogGetLevelParams.method, abstract: "get log level", discussion: oneLog)

    func run() throws { try invoke(LogGetLevelParams(), style: .pretty) }
}

struct LogSetPrintLevel: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: LogSetPrintLevelParams.method, abstract: "set log print level", discussion: oneLog)
    @Argument(help: "Log print level: ERROR, WARNING, NOTICE, INFO or DEBUG") var level: SPDKLogLevel

    func run() throws { try invoke(LogSetPrintLevelParams(level: level), style: .none) }
}

struct LogGetPrintLevel: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: LogGetPrintLevelParams.method, abstract: "get log print level", discussion: oneLog)

    func run() throws { try invoke(LogGetPrintLevelParams(), style: .pretty) }
}
