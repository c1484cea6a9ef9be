import ArgumentParser
import JSONRPC
import VhostBlkAPI

struct FrameworkGetSubsystems: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: FrameworkGetSubsystemsParams.method,
        abstract: "Print subsystems array in initialization order. Each subsystem entry contain (unsorted) array of subsystems it depends on.")

    func run() throws { try invoke(FrameworkGetSubsystemsParams(), style: .pretty) }
}

struct FrameworkGetConfig: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: FrameworkGetConfigParams.method,
        abstract: "Print the calls that rebuild one subsystem's current state (bdev or vhost_blk)")
    @Argument(help: "Name of subsystem to query") var name: String

    func run() throws { try invoke(FrameworkGetConfigParams(name: name), style: .pretty) }
}

struct FrameworkStartInit: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: FrameworkStartInitParams.method,
        abstract: "Start initialization of subsystems (a no-op: vhost-blkd is always initialized)")

    func run() throws { try invoke(FrameworkStartInitParams(), style: .none) }
}

struct FrameworkGetFailedConfig: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: FrameworkGetFailedConfigParams.method,
        abstract: "Print the --config entries that failed at start (or on the last retry), each with its error",
        discussion: "vhost-blkd extension. The daemon serves the rest of its config; a --persist file keeps these entries.")

    func run() throws { try invoke(FrameworkGetFailedConfigParams(), style: .pretty) }
}

struct FrameworkRetryFailedConfig: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: FrameworkRetryFailedConfigParams.method,
        abstract: "Replay the failed --config entries again, in config order, once their cause is fixed",
        discussion: "vhost-blkd extension. Prints how many entries recovered and those that still fail.")

    func run() throws { try invoke(FrameworkRetryFailedConfigParams(), style: .pretty) }
}

/// rpc.py's client-side `save_config`: framework_get_subsystems, then
/// framework_get_config for each, written as one `{"subsystems": [...]}` file.
struct SaveConfig: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "save_config",
        abstract: "Write current (live) configuration of the daemon's subsystems to stdout.",
        discussion: """
            The output is the file `vhost-blkd --config FILE` replays at start and \
            `load_config` replays into a running daemon (the same as `spdk-rpc save_config`).
            """)
    @Option(name: [.customShort("i"), .long], parsing: .unconditional, help: "Indent level. Value less than 0 mean compact mode.")
    var indent = 2

    func run() throws {
        try withClient { client throws(RPCCall.Failure) in
            var subsystems: [SavedConfig.Subsystem] = []
            let list = try RPCCall.run(client, FrameworkGetSubsystemsParams.method, nil)
            for item in list.arrayValue ?? [] {
                guard let name = item["subsystem"]?.stringValue else { continue }
                let config = try RPCCall.run(
                    client, FrameworkGetConfigParams.method, FrameworkGetConfigParams(name: name).json)
                let entries = (config.arrayValue ?? []).compactMap { entry -> SavedConfig.Entry? in
                    entry["method"]?.stringValue.map { SavedConfig.Entry(method: $0, params: entry["params"]) }
                }
                subsystems.append(SavedConfig.Subsystem(name: name, entries: entries))
            }
            print(SavedConfig(subsystems: subsystems).json.encoded(pretty: indent >= 0))
        }
    }
}

/// rpc.py's client-side `load_config`: replays a `save_config` file call by
/// call, then `framework_start_init`. Methods the daemon does not list in
/// `rpc_get_methods` are refused before anything is sent.
struct LoadConfig: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "load_config",
        abstract: "Configure the daemon's subsystems using JSON RPC read from stdin (or --json-conf FILE).",
        discussion: """
            Replays each entry of a save_config file in order; the first failing call stops \
            it with the daemon's error (exit 1), leaving the entries before it applied.
            """)
    @Option(name: [.customShort("j"), .long], help: "Valid JSON configuration (default: stdin)") var jsonConf: String?
    @Flag(name: [.customShort("i"), .long], help: "Include RPC aliases (accepted; vhost-blkd has none)") var includeAliases = false

    func run() throws {
        let text: String
        do {
            text = try readFile(jsonConf)
        } catch {
            printError(error.description)
            throw ExitCode(1)
        }
        let config: SavedConfig
        do {
            config = try SavedConfig(json: try JSON.parse(text))
        } catch {
            printError("load_config: \(jsonConf ?? "stdin"): \(error)")
            throw ExitCode(1)
        }
        try withClient { client throws(RPCCall.Failure) in
            let known = try RPCCall.run(
                client, RpcGetMethodsParams.method, RpcGetMethodsParams(includeAliases: includeAliases).json)
            let methods = Set((known.arrayValue ?? []).compactMap(\.stringValue))
            let entries = config.subsystems.flatMap(\.entries)
            if let unknown = entries.first(where: { !methods.contains($0.method) }) {
                throw .message("Unknown method was included in the config file: \(unknown.method)")
            }
            for entry in entries {
                _ = try RPCCall.run(client, entry.method, entry.params)
            }
            if methods.contains(FrameworkStartInitParams.method) {
                _ = try RPCCall.run(client, FrameworkStartInitParams.method, nil)
            }
        }
    }
}
