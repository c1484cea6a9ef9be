public import JSONRPC

/// `vhost_create_blk_controller {ctrlr, dev_name, cpumask?, readonly?,
/// packed_ring?, transport?}` -> true. rpc.py always sends `readonly` and
/// `packed_ring`; the daemon refuses `packed_ring: true`.
public struct VhostCreateBlkControllerParams: RPCMethodParams {
    public static let method = "vhost_create_blk_controller"
    /// Controller name; its socket is `<socket dir>/<ctrlr>`.
    public var ctrlr: String
    /// The bdev to expose.
    public var devName: String
    /// Reactor CPUs, e.g. "0x2"; nil = all of the daemon's.
    public var cpumask: String?
    public var readonly: Bool
    public var packedRing: Bool
    /// SPDK transport name (default "vhost_user_blk").
    public var transport: String?

    public init(
        ctrlr: String, devName: String, cpumask: String? = nil, readonly: Bool = false,
        packedRing: Bool = false, transport: String? = nil
    ) {
        self.ctrlr = ctrlr
        self.devName = devName
        self.cpumask = cpumask
        self.readonly = readonly
        self.packedRing = packedRing
        self.transport = transport
    }

    public init(params: JSON?) throws(RPCError) {
        self = try Self.decode(params) { (p: inout RPCParams) throws(RPCError) in
            Self(
                ctrlr: try p.required("ctrlr"), devName: try p.required("dev_name"),
                cpumask: try p.optional("cpumask"),
                readonly: try p.optional("readonly", default: false),
                packedRing: try p.optional("packed_ring", default: false),
                transport: try p.optional("transport"))
        }
    }

    public var json: JSON {
        var w = ParamsWriter()
        w.set("ctrlr", ctrlr)
        w.set("dev_name", devName)
        w.set("cpumask", cpumask)
        w.set("transport", transport)
        w.set("readonly", readonly)
        w.set("packed_ring", packedRing)
        return w.json
    }
}

/// `vhost_get_controllers {name?}` -> array of controller objects.
public struct VhostGetControllersParams: RPCMethodParams {
    public static let method = "vhost_get_controllers"
    /// Only this controller (unknown: -32602 "No such device").
    public var name: String?

    public init(name: String? = nil) { self.name = name }

    public init(params: JSON?) throws(RPCError) {
        self = try Self.decode(params) { (p: inout RPCParams) throws(RPCError) in Self(name: try p.optional("name")) }
    }

    public var json: JSON {
        var w = ParamsWriter()
        w.set("name", name)
        return w.json
    }
}

/// `vhost_delete_controller {ctrlr}` -> true.
public struct VhostDeleteControllerParams: RPCMethodParams {
    public static let method = "vhost_delete_controller"
    public var ctrlr: String

    public init(ctrlr: String) { self.ctrlr = ctrlr }

    public init(params: JSON?) throws(RPCError) {
        self = try Self.decode(params) { (p: inout RPCParams) throws(RPCError) in Self(ctrlr: try p.required("ctrlr")) }
    }

    public var json: JSON { ["ctrlr": .string(ctrlr)] }
}
