public import JSONRPC

/// `bdev_uring_create {filename, name, block_size?, uuid?}` -> the bdev name.
public struct BdevUringCreateParams: RPCMethodParams {
    public static let method = "bdev_uring_create"
    /// Path of the file or block device.
    public var filename: String
    /// Name of the new bdev.
    public var name: String
    /// Logical block size; nil lets the daemon detect it.
    public var blockSize: UInt32?
    /// UUID to report; nil generates one.
    public var uuid: String?

    public init(filename: String, name: String, blockSize: UInt32? = nil, uuid: String? = nil) {
        self.filename = filename
        self.name = name
        self.blockSize = blockSize
        self.uuid = uuid
    }

    public init(params: JSON?) throws(RPCError) {
        self = try Self.decode(params) { (p: inout RPCParams) throws(RPCError) in
            Self(
                filename: try p.required("filename"), name: try p.required("name"),
                blockSize: try p.optional("block_size"), uuid: try p.optional("uuid"))
        }
    }

    public var json: JSON {
        var w = ParamsWriter()
        w.set("filename", filename)
        w.set("name", name)
        w.set("block_size", blockSize)
        w.set("uuid", uuid)
        return w.json
    }
}

/// `bdev_uring_delete {name}` -> true.
public struct BdevUringDeleteParams: RPCMethodParams {
    public static let method = "bdev_uring_delete"
    public var name: String

    public init(name: String) { self.name = name }

    public init(params: JSON?) throws(RPCError) {
        self = try Self.decode(params) { (p: inout RPCParams) throws(RPCError) in Self(name: try p.required("name")) }
    }

    public var json: JSON { ["name": .string(name)] }
}
