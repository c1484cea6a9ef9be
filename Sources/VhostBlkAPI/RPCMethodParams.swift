public import JSONRPC

/// The parameters of one JSON-RPC method, shared by the daemon (which
/// decodes them) and the CLI (which encodes them), so key names live in one
/// place. Names, types and defaults follow SPDK and what its `rpc.py` sends.
public protocol RPCMethodParams: Sendable, Equatable {
    /// The JSON-RPC method name.
    static var method: String { get }
    /// Decodes and validates request params; -32602 on any mismatch,
    /// including keys the method does not know.
    init(params: JSON?) throws(RPCError)
    /// The params object to send.
    var json: JSON { get }
}

extension RPCMethodParams {
    /// Runs `body` over `params`, then rejects keys it did not read.
    static func decode(
        _ params: JSON?, _ body: (inout RPCParams) throws(RPCError) -> Self
    ) throws(RPCError) -> Self {
        var reader = try RPCParams(params)
        let value = try body(&reader)
        try reader.finish()
        return value
    }
}

/// Builds a params object, leaving out absent optional members (rpc.py
/// drops `None` values the same way).
struct ParamsWriter {
    private(set) var object = JSONObject()

    mutating func set<T: RPCParamValue>(_ key: String, _ value: T?) {
        if let value { object[key] = value.rpcJSON }
    }

    var json: JSON { .object(object) }
}

extension RPCParams {
    /// Reads `key`, accepting only its default: for SPDK options this
    /// daemon does not implement (metadata, protection information). rpc.py
    /// sends some of them with their default value on every call.
    mutating func onlyDefault<T: RPCParamValue & Equatable>(_ key: String, _ defaultValue: T, feature: String)
        throws(RPCError)
    {
        guard let value: T = try optional(key), value != defaultValue else { return }
        throw .invalidParams("Parameter '\(key)' = \(value.rpcJSON.encoded()) is not supported (\(feature)); only \(defaultValue.rpcJSON.encoded()) is accepted")
    }

    /// SPDK's metadata and protection-information options, which must stay
    /// at their defaults here.
    mutating func noMetadata(interleave: Bool) throws(RPCError) {
        try onlyDefault("md_size", UInt32(0), feature: "separate metadata")
        if interleave { try onlyDefault("md_interleave", false, feature: "interleaved metadata") }
        try onlyDefault("dif_type", Int32(0), feature: "protection information")
        try onlyDefault("dif_is_head_of_md", false, feature: "protection information")
        try onlyDefault("dif_pi_format", Int32(0), feature: "protection information")
    }
}
