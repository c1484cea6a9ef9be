import Glibc

/// Why an `RPCClient` call failed.
public enum RPCClientError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The socket could not be reached.
    case connect(path: String, errno: Int32)
    /// A send or receive failed.
    case io(operation: String, errno: Int32)
    /// No complete response within the timeout.
    case timeout
    /// The server closed the connection; `partial` is what was left unparsed.
    case closed(partial: Int)
    /// The server sent something that is not a valid response.
    case protocolError(String)
    /// The server answered with a JSON-RPC error.
    case rpc(RPCError)

    public var description: String {
        switch self {
        case .connect(let path, let code):
            return "Error while connecting to \(path)\nIs vhost-blkd running?\nError details: \(RPCError.errorText(code))"
        case .io(let operation, let code):
            return "\(operation) failed: \(RPCError.errorText(code))"
        case .timeout:
            return "Timeout while waiting for response"
        case .closed(let partial):
            return partial == 0
                ? "Connection closed without a response"
                : "Connection closed with partial response (\(partial) bytes)"
        case .protocolError(let message):
            return "Invalid response: \(message)"
        case .rpc(let error):
            return "Got JSON-RPC error response: code \(error.code), message \(error.message)"
        }
    }
}
