public import JSONRPC

/// `bdev_aio_create {filename, name, block_size?, readonly?, fallocate?,
/// uuid?, nowait?}` -> the bdev name. rpc.py always sends the three booleans.
public struct BdevAioCreateParams: RPCMethodParams {
    public static let method = "bdev_aio_create"
    public var filename: String
    public var name: String
    public var blockSize: UInt32?
    /// Expose the bdev read-only (default false).
    public var readonly: Bool
    /// Implement unmap and write-zeroes with fallocate (default false).
    public var fallocate: Bool
    public var uuid: String?
    /// SPDK's RWF_NOWAIT option for block devices (default false).
    public var nowait: Bool

    public init(
        filename: String, name: String, blockSize: UInt32? = nil, readonly: Bool = false,
        fallocate: Bool = false, uuid: String? = nil, nowait: Bool = false
    ) {
        self.filename = filename
        self.name = name
        self.blockSize = blockSize
        self.readonly = readonly
        self.fallocate = fallocate
        self.uuid = uuid
        self.nowait = nowait
    }

    public init(params: JSON?) throws(RPCError) {
        self = try Self.decode(params) { (p: inout RPCParams) throws(RPCError) in
            Self(
                filename: try p.required("filename"), name: try p.required("name"),
                blockSize: try p.optional("block_size"),
                readonly: try p.optional("readonly", default: false),
                fallocate: try p.optional("fallocate", default: false),
                uuid: try p.optional("uuid"),
                nowait: try p.optional("nowait", default: false))
        }
    }

    public var json: JSON {
        var w = ParamsWriter()
        w.set("filename", filename)
        w.set("name", name)
        w.set("block_size", blockSize)
        w.set("readonly", readonly)
        w.set("fallocate", fallocate)
        w.set("uuid", uuid)
        w.set("nowait", nowait)
        return w.json
    }
}

/// `bdev_aio_delete {name}` -> true.
public struct BdevAioDeleteParams: RPCMethodParams {
    public static let method = "bdev_aio_delete"
    public var name: String

    public init(name: String) { self.name = name }

    public init(params: JSON?) throws(RPCError) {
        self = try Self.decode(params) { (p: inout RPCParams) throws(RPCError) in Self(name: try p.required("name")) }
    }

    public var json: JSON { ["name": .string(name)] }
}
