public import JSONRPC

/// Params whose one member is an optional `name`: `{name?}` asks for that
/// one, `{}` for all of them.
public protocol NameFilterParams: RPCMethodParams {
    var name: String? { get }
    init(name: String?)
}

extension NameFilterParams {
    public init(params: JSON?) throws(RPCError) {
        self = try Self.decode(params) { (p: inout RPCParams) throws(RPCError) in Self(name: try p.optional("name")) }
    }

    public var json: JSON {
        var w = ParamsWriter()
        w.set("name", name)
        return w.json
    }
}
