import Glibc

/// A JSON-RPC error object, with codes as SPDK uses them (SPDK JSON-RPC,
/// "Error response message"; docs/PROTOCOL-NOTES.md, "Envelope and errors").
public struct RPCError: Error, Sendable, Equatable, CustomStringConvertible {
    public var code: Int
    public var message: String

    public init(code: Int, message: String) {
        self.code = code
        self.message = message
    }

    /// -32700: the request is not JSON. The connection closes after it.
    public static let parseError = RPCError(code: -32700, message: "Parse error")

    /// -32600: valid JSON, but not a JSON-RPC 2.0 request.
    public static func invalidRequest(_ message: String = "Invalid request") -> RPCError {
        RPCError(code: -32600, message: message)
    }

    /// -32601, with SPDK's message "Method not found"; the name is not echoed.
    public static func methodNotFound(_ name: String) -> RPCError {
        RPCError(code: -32601, message: "Method not found")
    }

    /// -32602: parameters missing, unknown, of the wrong type or out of range.
    public static func invalidParams(_ message: String) -> RPCError {
        RPCError(code: -32602, message: message)
    }

    /// -32603: the server failed for reasons of its own.
    public static func internalError(_ message: String = "Internal error") -> RPCError {
        RPCError(code: -32603, message: message)
    }

    /// `{code: -errno, message: strerror(errno)}`, as SPDK's bdev methods answer.
    public static func errno(_ code: Int32) -> RPCError {
        RPCError(code: -Int(code), message: errorText(code))
    }

    /// strerror's text for `code`.
    public static func errorText(_ code: Int32) -> String {
        guard let text = strerror(code) else { return "Unknown error \(code)" }
        return String(cString: text)
    }

    /// The wire form: `{"code":..,"message":..}`.
    public var json: JSON {
        ["code": .int(Int64(code)), "message": .string(message)]
    }

    /// The error object from a response's `"error"` member.
    public init?(json: JSON) {
        guard let code = json["code"]?.intValue, let value = Int(exactly: code) else { return nil }
        self.init(code: value, message: json["message"]?.stringValue ?? "")
    }

    public var description: String { "JSON-RPC error \(code): \(message)" }
}
