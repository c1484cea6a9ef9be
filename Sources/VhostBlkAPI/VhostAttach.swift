public import JSONRPC

/// `vhost_blk_attach {ctrlr, dev_name}` -> true (vhost-blkd's own): gives an
/// empty controller its bdev and tells a running guest the new capacity.
/// Refused (-16) when the controller already has one.
public struct VhostBlkAttachParams: RPCMethodParams {
    public static let method = "vhost_blk_attach"
    public var ctrlr: String
    public var devName: String

    public init(ctrlr: String, devName: String) {
        self.ctrlr = ctrlr
        self.devName = devName
    }

    public init(params: JSON?) throws(RPCError) {
        self = try Self.decode(params) { (p: inout RPCParams) throws(RPCError) in
            Self(ctrlr: try p.required("ctrlr"), devName: try p.required("dev_name"))
        }
    }

    public var json: JSON { ["ctrlr": .string(ctrlr), "dev_name": .string(devName)] }
}

/// `vhost_blk_detach {ctrlr}` -> true (vhost-blkd's own): waits for the
/// controller's in-flight I/O, then releases its bdev; new I/O fails with
/// IOERR and the guest sees capacity 0.
public struct VhostBlkDetachParams: RPCMethodParams {
    public static let method = "vhost_blk_detach"
    public var ctrlr: String

    public init(ctrlr: String) { self.ctrlr = ctrlr }

    public init(params: JSON?) throws(RPCError) {
        self = try Self.decode(params) { (p: inout RPCParams) throws(RPCError) in Self(ctrlr: try p.required("ctrlr")) }
    }

    public var json: JSON { ["ctrlr": .string(ctrlr)] }
}
