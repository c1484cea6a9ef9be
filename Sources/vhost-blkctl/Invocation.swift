import ArgumentParser
import Glibc
import JSONRPC
import Posix
import VhostBlkAPI

/// How a subcommand prints its result (rpc.py's helpers).
enum ResultStyle {
    /// Print nothing (rpc.py's delete and create-controller commands).
    case none
    /// `print_json`: pretty JSON with surrounding quotes stripped, so a
    /// string result prints as plain text.
    case plain
    /// `print_dict`: pretty JSON.
    case pretty
}

/// Sends `params` to the daemon and prints the result as rpc.py would.
/// Errors go to stderr and exit 1.
func invoke<P: RPCMethodParams>(_ params: P, style: ResultStyle) throws {
    let client: RPCClient
    do {
        client = try RPCClient(path: globalOptions.socket, timeout: globalOptions.timeout)
    } catch {
        printError(error.description)
        throw ExitCode(1)
    }
    do {
        let result = try client.call(P.method, params: params.json)
        switch style {
        case .none:
            break
        case .plain:
            print(trimQuotes(result.encoded(pretty: true)))
        case .pretty:
            print(result.encoded(pretty: true))
        }
    } catch .rpc(let error) {
        var request = params.json.objectValue ?? JSONObject()
        request["method"] = .string(P.method)
        request["req_id"] = 1
        printError(
            ["request:", JSON.object(request).encoded(pretty: true), "Got JSON-RPC error response", "response:",
             error.json.encoded(pretty: true)].joined(separator: "\n"))
        throw ExitCode(1)
    } catch {
        printError(error.description)
        throw ExitCode(1)
    }
}

/// Python's `str.strip('"')`.
func trimQuotes(_ text: String) -> String {
    var slice = Substring(text)
    while slice.first == "\"" { slice = slice.dropFirst() }
    while slice.last == "\"" { slice = slice.dropLast() }
    return String(slice)
}

func printError(_ message: String) {
    var stderr = StandardError()
    print(message, to: &stderr)
}

struct StandardError: TextOutputStream {
    mutating func write(_ string: String) {
        try? FileDescriptor.standardError.writeAll(Array(string.utf8))
    }
}
