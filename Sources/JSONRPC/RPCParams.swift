/// Typed access to a request's `params`, as SPDK's
/// `spdk_json_decode_object` does it: every key must be known, required
/// keys must be present, each value must have the declared type.
///
/// ```swift
/// var p = try RPCParams(request.params)
/// let name: String = try p.required("name")
/// let size: UInt32? = try p.optional("block_size")
/// try p.finish()   // rejects keys nobody asked for
/// ```
///
/// Params given as an array (positional) are accepted only by methods that
/// take no parameters: asking such params for any key throws -32602.
public struct RPCParams: Sendable {
    private let object: JSONObject
    private let positional: Bool
    private var consumed: Set<String> = []

    /// Wraps `params`: nil is an empty object; an empty array too.
    public init(_ params: JSON?) throws(RPCError) {
        switch params {
        case nil, .null?:
            object = JSONObject()
            positional = false
        case .object(let members)?:
            object = members
            positional = false
        case .array(let items)?:
            object = JSONObject()
            positional = !items.isEmpty
        case let other?:
            throw .invalidParams("Parameters must be an object, not \(other.typeName)")
        }
    }

    /// The keys present, in the order sent.
    public var keys: [String] { object.keys }

    /// The value for `key`; throws -32602 when it is missing or mistyped.
    public mutating func required<T: RPCParamValue>(_ key: String, as type: T.Type = T.self) throws(RPCError) -> T {
        guard let value: T = try optional(key) else {
            throw .invalidParams("Missing required parameter '\(key)'")
        }
        return value
    }

    /// The value for `key`, nil when absent; throws -32602 when mistyped.
    /// An explicit `null` counts as absent.
    public mutating func optional<T: RPCParamValue>(_ key: String, as type: T.Type = T.self) throws(RPCError) -> T? {
        if positional { throw .invalidParams("Parameters must be an object with named members") }
        consumed.insert(key)
        guard let raw = object[key], !raw.isNull || T.self == JSON.self else { return nil }
        guard let value = T(rpcJSON: raw) else {
            if T.isInteger, raw.intValue != nil {
                throw .invalidParams("Parameter '\(key)' is out of range for \(T.rpcTypeName)")
            }
            throw .invalidParams("Parameter '\(key)' must be of type \(T.rpcTypeName), not \(raw.typeName)")
        }
        return value
    }

    /// The value for `key`, or `defaultValue` when absent.
    public mutating func optional<T: RPCParamValue>(_ key: String, default defaultValue: T) throws(RPCError) -> T {
        try optional(key) ?? defaultValue
    }

    /// Throws -32602 naming the first key that no `required`/`optional`
    /// call asked for. (Positional params pass only if nothing was asked.)
    public func finish() throws(RPCError) {
        for key in object.keys where !consumed.contains(key) {
            throw .invalidParams("Unknown parameter '\(key)'")
        }
    }
}
