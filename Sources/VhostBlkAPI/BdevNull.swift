public import JSONRPC

/// `bdev_null_create {name, num_blocks, block_size, uuid?,
/// physical_block_size?, preferred_write_alignment?,
/// preferred_write_granularity?, optimal_write_size?,
/// preferred_unmap_alignment?, preferred_unmap_granularity?}` -> the name.
///
/// rpc.py sends `dif_is_head_of_md` (false) on every call; `md_size`,
/// `dif_type`, `dif_is_head_of_md` and `dif_pi_format` are accepted at
/// their defaults only.
public struct BdevNullCreateParams: RPCMethodParams {
    public static let method = "bdev_null_create"
    public var name: String
    public var numBlocks: UInt64
    public var blockSize: UInt32
    public var uuid: String?
    public var physicalBlockSize: UInt32?
    /// Hints reported to the guest, in blocks.
    public var preferredWriteAlignment: UInt32?
    public var preferredWriteGranularity: UInt32?
    public var optimalWriteSize: UInt32?
    public var preferredUnmapAlignment: UInt32?
    public var preferredUnmapGranularity: UInt32?

    public init(
        name: String, numBlocks: UInt64, blockSize: UInt32, uuid: String? = nil,
        physicalBlockSize: UInt32? = nil, preferredWriteAlignment: UInt32? = nil,
        preferredWriteGranularity: UInt32? = nil, optimalWriteSize: UInt32? = nil,
        preferredUnmapAlignment: UInt32? = nil, preferredUnmapGranularity: UInt32? = nil
    ) {
        self.name = name
        self.numBlocks = numBlocks
        self.blockSize = blockSize
        self.uuid = uuid
        self.physicalBlockSize = physicalBlockSize
        self.preferredWriteAlignment = preferredWriteAlignment
        self.preferredWriteGranularity = preferredWriteGranularity
        self.optimalWriteSize = optimalWriteSize
        self.preferredUnmapAlignment = preferredUnmapAlignment
        self.preferredUnmapGranularity = preferredUnmapGranularity
    }

    public init(params: JSON?) throws(RPCError) {
        self = try Self.decode(params) { (p: inout RPCParams) throws(RPCError) in
            let value = Self(
                name: try p.required("name"), numBlocks: try p.required("num_blocks"),
                blockSize: try p.required("block_size"), uuid: try p.optional("uuid"),
                physicalBlockSize: try p.optional("physical_block_size"),
                preferredWriteAlignment: try p.optional("preferred_write_alignment"),
                preferredWriteGranularity: try p.optional("preferred_write_granularity"),
                optimalWriteSize: try p.optional("optimal_write_size"),
                preferredUnmapAlignment: try p.optional("preferred_unmap_alignment"),
                preferredUnmapGranularity: try p.optional("preferred_unmap_granularity"))
            try p.noMetadata(interleave: false)
            return value
        }
    }

    public var json: JSON {
        var w = ParamsWriter()
        w.set("name", name)
        w.set("num_blocks", numBlocks)
        w.set("block_size", blockSize)
        w.set("uuid", uuid)
        w.set("physical_block_size", physicalBlockSize)
        w.set("preferred_write_alignment", preferredWriteAlignment)
        w.set("preferred_write_granularity", preferredWriteGranularity)
        w.set("optimal_write_size", optimalWriteSize)
        w.set("preferred_unmap_alignment", preferredUnmapAlignment)
        w.set("preferred_unmap_granularity", preferredUnmapGranularity)
        return w.json
    }
}

/// `bdev_null_delete {name}` -> true.
public struct BdevNullDeleteParams: RPCMethodParams {
    public static let method = "bdev_null_delete"
    public var name: String

    public init(name: String) { self.name = name }

    public init(params: JSON?) throws(RPCError) {
        self = try Self.decode(params) { (p: inout RPCParams) throws(RPCError) in Self(name: try p.required("name")) }
    }

    public var json: JSON { ["name": .string(name)] }
}
