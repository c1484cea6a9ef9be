public import JSONRPC

/// `bdev_get_bdevs {name?, timeout?}` -> array of bdev objects.
public struct BdevGetBdevsParams: RPCMethodParams {
    public static let method = "bdev_get_bdevs"
    /// Only this bdev (an unknown name is -19 "No such device").
    public var name: String?
    /// Milliseconds to wait for `name` to appear (default 0).
    public var timeout: UInt64?
    /// vhost-blkd's extension: `offset`/`limit` over all bdevs.
    public var page: ListPage?

    public init(name: String? = nil, timeout: UInt64? = nil, page: ListPage? = nil) {
        self.name = name
        self.timeout = timeout
        self.page = page
    }

    public init(params: JSON?) throws(RPCError) {
        self = try Self.decode(params) { (p: inout RPCParams) throws(RPCError) in
            Self(name: try p.optional("name"), timeout: try p.optional("timeout"), page: try ListPage.decode(&p))
        }
    }

    public var json: JSON {
        var w = ParamsWriter()
        w.set("name", name)
        w.set("timeout", timeout)
        page?.write(into: &w)
        return w.json
    }
}
