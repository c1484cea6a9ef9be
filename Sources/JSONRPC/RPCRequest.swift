/// One JSON-RPC 2.0 request, validated as SPDK's server does
/// (lib/jsonrpc/jsonrpc_server.c `parse_single_request`).
///
/// Rules: the value must be an object whose only members are `jsonrpc`
/// (exactly "2.0"), `method` (a string), `params` (optional object or
/// array) and `id` (optional string, number or null). Anything else is
/// -32600. A missing or null `id` makes a notification.
public struct RPCRequest: Sendable, Equatable {
    /// The request id; nil for a notification (no id, or id null).
    public var id: JSON?
    public var method: String
    /// The params member as sent: nil, an object or an array.
    public var params: JSON?

    public init(id: JSON?, method: String, params: JSON? = nil) {
        self.id = id
        self.method = method
        self.params = params
    }

    /// True when no success reply is sent.
    public var isNotification: Bool { id == nil }

    private static let members: Set<String> = ["jsonrpc", "method", "params", "id"]

    /// Validates the envelope; throws -32600 for anything that is not a
    /// 2.0 request. Use `responseID(for:)` for the id of the error reply.
    public init(_ json: JSON) throws(RPCError) {
        guard case .object(let object) = json else {
            throw .invalidRequest(json.arrayValue != nil ? "Batch requests are not supported" : "Request must be an object")
        }
        for key in object.keys where !Self.members.contains(key) {
            throw .invalidRequest("Unknown member '\(key)'")
        }
        guard object["jsonrpc"] == .string("2.0") else {
            throw .invalidRequest("'jsonrpc' must be \"2.0\"")
        }
        guard let method = object["method"]?.stringValue else {
            throw .invalidRequest("'method' must be a string")
        }
        switch object["id"] {
        case nil, .null?:
            id = nil
        case .string?, .int?, .double?:
            id = object["id"]
        default:
            throw .invalidRequest("'id' must be a string, a number or null")
        }
        switch object["params"] {
        case nil, .object?, .array?:
            params = object["params"]
        default:
            throw .invalidRequest("'params' must be an object or an array")
        }
        self.method = method
    }

    /// The id to put in the reply to `json`, even when the request was
    /// invalid: its `id` if that is a string or number, else null.
    public static func responseID(for json: JSON) -> JSON {
        switch json["id"] {
        case let id? where id.stringValue != nil || id.doubleValue != nil: return id
        default: return .null
        }
    }

    /// The request as JSON (what a client sends).
    public var json: JSON {
        var object: JSONObject = ["jsonrpc": "2.0", "method": .string(method)]
        if let id { object["id"] = id }
        if let params { object["params"] = params }
        return .object(object)
    }
}
