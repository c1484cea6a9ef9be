import ArgumentParser
import Glibc
import JSONRPC
import Posix

/// Several calls on one connection, for the client-side commands
/// (`save_config`, `load_config`); errors print as `invoke` prints them.
enum RPCCall {
    /// Why a sequence of calls stopped.
    enum Failure: Error {
        /// The daemon answered with a JSON-RPC error.
        case rpc(method: String, params: JSON?, error: RPCError)
        /// The connection failed or a response was malformed.
        case client(RPCClientError)
        /// A check of the client itself failed.
        case message(String)
    }

    /// Calls `method` on `client`.
    static func run(_ client: RPCClient, _ method: String, _ params: JSON?) throws(Failure) -> JSON {
        do {
            return try client.call(method, params: params)
        } catch .rpc(let error) {
            throw .rpc(method: method, params: params, error: error)
        } catch {
            throw .client(error)
        }
    }

    /// Prints `failure` to stderr in rpc.py's words.
    static func report(_ failure: Failure) {
        switch failure {
        case .rpc(let method, let params, let error):
            var request = params?.objectValue ?? JSONObject()
            request["method"] = .string(method)
            printError(
                ["request:", JSON.object(request).encoded(pretty: true), "Got JSON-RPC error response", "response:",
                 error.json.encoded(pretty: true)].joined(separator: "\n"))
        case .client(let error):
            printError(error.description)
        case .message(let text):
            printError(text)
        }
    }
}

/// Connects to the daemon (global `-s`, `-t`) and runs `body`; any failure
/// is printed and exits 1.
func withClient(_ body: (RPCClient) throws(RPCCall.Failure) -> Void) throws {
    let client: RPCClient
    do {
        client = try RPCClient(path: globalOptions.socket, timeout: globalOptions.timeout)
    } catch {
        printError(error.description)
        throw ExitCode(1)
    }
    do {
        try body(client)
    } catch {
        RPCCall.report(error)
        throw ExitCode(1)
    }
}

/// Why a file could not be read.
struct ReadFileError: Error, CustomStringConvertible {
    var description: String
}

/// The whole of `path` (nil: standard input) as UTF-8 text, at most 64 MiB.
func readFile(_ path: String?) throws(ReadFileError) -> String {
    let limit = 64 << 20
    let fd: FileDescriptor
    if let path {
        do {
            fd = try FileDescriptor.open(path, flags: O_RDONLY)
        } catch {
            throw ReadFileError(description: "\(path): \(error.message)")
        }
    } else {
        fd = .standardInput
    }
    defer { if path != nil { fd.close() } }
    let bytes: [UInt8]
    do {
        bytes = try fd.readToEnd(limit: limit)
    } catch {
        if error.rawValue == EFBIG { throw ReadFileError(description: "\(path ?? "stdin"): larger than 64 MiB") }
        throw ReadFileError(description: "\(path ?? "stdin"): \(error.message)")
    }
    return String(decoding: bytes, as: UTF8.self)
}
