import Glibc
import VhostBlkAPI

/// The options given before the subcommand name, as rpc.py takes them
/// (`-s SOCK`, `-t TIMEOUT`). They are taken out of the argument list
/// before ArgumentParser sees it, so subcommands may reuse `-s` and `-t`
/// for their own options (as rpc.py's do).
///
/// The socket: `-s`, else `$VHOST_BLKD_RPC_SOCKET` (set and not empty), else
/// the daemon's own default (`RPCSocketDefault`).
struct GlobalOptions: Sendable {
    static let defaultSocket = RPCSocketDefault.path
    static let defaultTimeout = 60.0

    var socket: String
    var timeoutSeconds = GlobalOptions.defaultTimeout
    /// The arguments left for ArgumentParser (subcommand and its arguments).
    var remaining: [String] = []
    /// A usage error found while splitting, reported by ArgumentParser.
    var error: String?

    /// Splits `arguments` (without the program name).
    init(arguments: [String], environment: (String) -> String? = GlobalOptions.variable) {
        socket = RPCSocketDefault.resolve(environment: environment(RPCSocketDefault.environmentVariable))
        var index = 0
        scan: while index < arguments.count {
            let argument = arguments[index]
            let (flag, attached) = Self.split(argument)
            switch flag {
            case "-s", "--server", "-t", "--timeout":
                let value: String
                if let attached {
                    value = attached
                } else if index + 1 < arguments.count {
                    index += 1
                    value = arguments[index]
                } else {
                    error = "Missing value for '\(flag)'"
                    break scan
                }
                if flag == "-s" || flag == "--server" {
                    socket = value
                } else if let seconds = Double(value), seconds.isFinite, seconds > 0 {
                    timeoutSeconds = seconds
                } else {
                    error = "The value '\(value)' is invalid for '\(flag)': expected seconds > 0"
                    break scan
                }
                index += 1
            default:
                break scan
            }
        }
        remaining = Array(arguments[index...])
    }

    /// getenv.
    static func variable(_ name: String) -> String? {
        getenv(name).map { String(cString: $0) }
    }

    /// `--server=X` -> ("--server", "X"); `-sX` -> ("-s", "X").
    private static func split(_ argument: String) -> (String, String?) {
        if argument.hasPrefix("--"), let equals = argument.firstIndex(of: "=") {
            return (String(argument[..<equals]), String(argument[argument.index(after: equals)...]))
        }
        if argument.count > 2, argument.hasPrefix("-s") || argument.hasPrefix("-t"), !argument.hasPrefix("--") {
            return (String(argument.prefix(2)), String(argument.dropFirst(2)))
        }
        return (argument, nil)
    }

    var timeout: Duration {
        .milliseconds(Int64(clamping: UInt64(min(timeoutSeconds * 1000, 1e15).rounded(.up))))
    }
}

/// The global options of this process (parsed once from its arguments).
let globalOptions = GlobalOptions(arguments: Array(CommandLine.arguments.dropFirst()))
