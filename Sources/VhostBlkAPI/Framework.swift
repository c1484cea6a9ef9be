public import JSONRPC

/// `rpc_get_methods {current?, include_aliases?}` -> array of names.
/// rpc.py always sends both.
public struct RpcGetMethodsParams: RPCMethodParams {
    public static let method = "rpc_get_methods"
    /// Only methods callable in the current state (default false).
    public var current: Bool
    /// Include deprecated aliases (default false).
    public var includeAliases: Bool

    public init(current: Bool = false, includeAliases: Bool = false) {
        self.current = current
        self.includeAliases = includeAliases
    }

    public init(params: JSON?) throws(RPCError) {
        self = try Self.decode(params) { (p: inout RPCParams) throws(RPCError) in
            Self(
                current: try p.optional("current", default: false),
                includeAliases: try p.optional("include_aliases", default: false))
        }
    }

    public var json: JSON { ["current": .bool(current), "include_aliases": .bool(includeAliases)] }
}

/// `spdk_get_version` (no params) -> {version, fields{major, minor, patch, suffix}}.
public struct SpdkGetVersionParams: RPCMethodParams {
    public static let method = "spdk_get_version"

    public init() {}

    public init(params: JSON?) throws(RPCError) {
        self = try Self.decode(params) { (_: inout RPCParams) throws(RPCError) in Self() }
    }

    public var json: JSON { .object(JSONObject()) }
}
