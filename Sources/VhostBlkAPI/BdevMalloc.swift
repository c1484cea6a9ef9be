public import JSONRPC

/// `bdev_malloc_create {num_blocks, block_size, name?, uuid?,
/// physical_block_size?, optimal_io_boundary?, numa_id?}` -> the bdev name.
///
/// rpc.py computes `num_blocks` from its TOTAL_SIZE (MiB) argument and also
/// sends `md_interleave` and `dif_is_head_of_md` (false). The metadata and
/// protection-information keys (`md_size`, `md_interleave`, `dif_type`,
/// `dif_is_head_of_md`, `dif_pi_format`) are accepted at their defaults
/// only; other values get -32602.
public struct BdevMallocCreateParams: RPCMethodParams {
    public static let method = "bdev_malloc_create"
    public var numBlocks: UInt64
    public var blockSize: UInt32
    /// Name of the bdev; nil lets the daemon pick one (SPDK: "MallocN").
    public var name: String?
    public var uuid: String?
    public var physicalBlockSize: UInt32?
    /// Split I/O on this boundary, in blocks (0 = none).
    public var optimalIoBoundary: UInt32
    /// NUMA node for the memory (-1 = any).
    public var numaId: Int32

    public init(
        numBlocks: UInt64, blockSize: UInt32, name: String? = nil, uuid: String? = nil,
        physicalBlockSize: UInt32? = nil, optimalIoBoundary: UInt32 = 0, numaId: Int32 = -1
    ) {
        self.numBlocks = numBlocks
        self.blockSize = blockSize
        self.name = name
        self.uuid = uuid
        self.physicalBlockSize = physicalBlockSize
        self.optimalIoBoundary = optimalIoBoundary
        self.numaId = numaId
    }

    public init(params: JSON?) throws(RPCError) {
        self = try Self.decode(params) { (p: inout RPCParams) throws(RPCError) in
            let value = Self(
                numBlocks: try p.required("num_blocks"), blockSize: try p.required("block_size"),
                name: try p.optional("name"), uuid: try p.optional("uuid"),
                physicalBlockSize: try p.optional("physical_block_size"),
                optimalIoBoundary: try p.optional("optimal_io_boundary", default: 0),
                numaId: try p.optional("numa_id", default: -1))
            try p.noMetadata(interleave: true)
            return value
        }
    }

    public var json: JSON {
        var w = ParamsWriter()
        w.set("num_blocks", numBlocks)
        w.set("block_size", blockSize)
        w.set("name", name)
        w.set("uuid", uuid)
        w.set("physical_block_size", physicalBlockSize)
        w.set("optimal_io_boundary", optimalIoBoundary == 0 ? nil : optimalIoBoundary)
        w.set("numa_id", numaId == -1 ? nil : numaId)
        return w.json
    }
}

/// `bdev_malloc_delete {name}` -> true.
public struct BdevMallocDeleteParams: RPCMethodParams {
    public static let method = "bdev_malloc_delete"
    public var name: String

    public init(name: String) { self.name = name }

    public init(params: JSON?) throws(RPCError) {
        self = try Self.decode(params) { (p: inout RPCParams) throws(RPCError) in Self(name: try p.required("name")) }
    }

    public var json: JSON { ["name": .string(name)] }
}
