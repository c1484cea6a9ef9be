public import JSONRPC

/// A window into a long listing (vhost-blkd's extension to `bdev_get_bdevs`,
/// `bdev_get_iostat` and `vhost_get_controllers`): `offset` entries are
/// skipped, at most `limit` returned, in creation order. With a thousand
/// controllers a full listing takes tens of milliseconds; pages of a hundred
/// stay under a few.
public struct ListPage: Sendable, Equatable {
    public var offset: Int
    public var limit: Int?

    public init(offset: Int = 0, limit: Int? = nil) {
        self.offset = offset
        self.limit = limit
    }

    /// Reads `offset` and `limit` (both optional; negative values are refused).
    public static func decode(_ p: inout RPCParams) throws(RPCError) -> ListPage? {
        let offset: Int64? = try p.optional("offset")
        let limit: Int64? = try p.optional("limit")
        guard offset != nil || limit != nil else { return nil }
        guard (offset ?? 0) >= 0, (limit ?? 0) >= 0, let o = Int(exactly: offset ?? 0) else {
            throw .invalidParams("offset and limit must be non-negative")
        }
        return ListPage(offset: o, limit: limit.flatMap { Int(exactly: $0) })
    }

    /// The page of `items`.
    public func slice<T>(_ items: [T]) -> ArraySlice<T> {
        let start = min(offset, items.count)
        let end = limit.map { min(items.count, start + min($0, items.count)) } ?? items.count
        return items[start..<end]
    }

    func write(into w: inout ParamsWriter) {
        if offset != 0 { w.set("offset", Int64(offset)) }
        if let limit { w.set("limit", Int64(limit)) }
    }
}
