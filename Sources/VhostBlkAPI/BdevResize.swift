public import JSONRPC

/// `bdev_uring_rescan {name}` -> true: re-reads the size of the file or block
/// device behind a uring bdev (grown with `truncate` or `losetup -c`) and
/// tells every guest using it.
public struct BdevUringRescanParams: RPCMethodParams {
    public static let method = "bdev_uring_rescan"
    public var name: String

    public init(name: String) { self.name = name }

    public init(params: JSON?) throws(RPCError) {
        self = try Self.decode(params) { (p: inout RPCParams) throws(RPCError) in Self(name: try p.required("name")) }
    }

    public var json: JSON { ["name": .string(name)] }
}

/// `bdev_aio_rescan {name}` -> true: as `bdev_uring_rescan`, for aio bdevs.
public struct BdevAioRescanParams: RPCMethodParams {
    public static let method = "bdev_aio_rescan"
    public var name: String

    public init(name: String) { self.name = name }

    public init(params: JSON?) throws(RPCError) {
        self = try Self.decode(params) { (p: inout RPCParams) throws(RPCError) in Self(name: try p.required("name")) }
    }

    public var json: JSON { ["name": .string(name)] }
}

/// `bdev_null_resize {name, new_size}` -> true; `new_size` is in MiB, as SPDK.
public struct BdevNullResizeParams: RPCMethodParams {
    public static let method = "bdev_null_resize"
    public var name: String
    /// New size in MiB.
    public var newSize: UInt64

    public init(name: String, newSize: UInt64) {
        self.name = name
        self.newSize = newSize
    }

    public init(params: JSON?) throws(RPCError) {
        self = try Self.decode(params) { (p: inout RPCParams) throws(RPCError) in
            Self(name: try p.required("name"), newSize: try p.required("new_size"))
        }
    }

    public var json: JSON { ["name": .string(name), "new_size": .int(Int64(clamping: newSize))] }
}

/// `bdev_resize {name, new_size_mib, allow_shrink?}` -> true (vhost-blkd's own):
/// grows a file-backed or malloc bdev itself. Block devices refuse (resize the
/// device, then `bdev_uring_rescan`). Shrinking a bdev a controller uses needs
/// `allow_shrink`.
public struct BdevResizeParams: RPCMethodParams {
    public static let method = "bdev_resize"
    public var name: String
    /// New size in MiB.
    public var newSizeMiB: UInt64
    /// Permit shrinking a bdev that a controller uses: requests beyond the new end fail.
    public var allowShrink: Bool

    public init(name: String, newSizeMiB: UInt64, allowShrink: Bool = false) {
        self.name = name
        self.newSizeMiB = newSizeMiB
        self.allowShrink = allowShrink
    }

    public init(params: JSON?) throws(RPCError) {
        self = try Self.decode(params) { (p: inout RPCParams) throws(RPCError) in
            Self(name: try p.required("name"), newSizeMiB: try p.required("new_size_mib"),
                 allowShrink: try p.optional("allow_shrink", default: false))
        }
    }

    public var json: JSON {
        var w = ParamsWriter()
        w.set("name", name)
        w.set("new_size_mib", newSizeMiB)
        if allowShrink { w.set("allow_shrink", true) }
        return w.json
    }
}
