public import JSONRPC

/// `vhost_create_blk_controller {ctrlr, dev_name?, cpumask?, readonly?,
/// packed_ring?, transport?}` -> true. rpc.py always sends `readonly` and
/// `packed_ring` (true offers packed virtqueues, VIRTIO_F_RING_PACKED). Without `dev_name`
/// (vhost-blkd's extension) the controller starts empty, capacity 0, until
/// `vhost_blk_attach`. `socket_mode` (octal string or integer) and
/// `socket_group` (name or gid) are vhost-blkd's extensions too, and so is
/// `write_cache` (false: the disk starts write-through, CONFIG_WCE writeback 0;
/// saved configs carry it after the guest turned its cache off).
public struct VhostCreateBlkControllerParams: RPCMethodParams {
    public static let method = "vhost_create_blk_controller"
    /// Controller name; its socket is `<socket dir>/<ctrlr>`.
    public var ctrlr: String
    /// The bdev to expose; nil creates an empty controller.
    public var devName: String?
    /// Reactor CPUs, e.g. "0x2"; nil = all of the daemon's.
    public var cpumask: String?
    public var readonly: Bool
    public var packedRing: Bool
    /// SPDK transport name (default "vhost_user_blk").
    public var transport: String?
    /// vhost-blkd's extension: the socket's permission bits (default 0600).
    public var socketMode: SocketMode?
    /// vhost-blkd's extension: the socket's group, so e.g. libvirt's QEMU user can connect.
    public var socketGroup: SocketGroup?
    /// vhost-blkd's extension: false starts the disk write-through (each write
    /// durable when it completes); nil or true: write-back, the guest flushes.
    public var writeCache: Bool?

    public init(
        ctrlr: String, devName: String?, cpumask: String? = nil, readonly: Bool = false,
        packedRing: Bool = false, transport: String? = nil,
        socketMode: SocketMode? = nil, socketGroup: SocketGroup? = nil, writeCache: Bool? = nil
    ) {
        self.ctrlr = ctrlr
        self.devName = devName
        self.cpumask = cpumask
        self.readonly = readonly
        self.packedRing = packedRing
        self.transport = transport
        self.socketMode = socketMode
        self.socketGroup = socketGroup
        self.writeCache = writeCache
    }

    public init(params: JSON?) throws(RPCError) {
        self = try Self.decode(params) { (p: inout RPCParams) throws(RPCError) in
            Self(
                ctrlr: try p.required("ctrlr"), devName: try p.optional("dev_name"),
                cpumask: try p.optional("cpumask"),
                readonly: try p.optional("readonly", default: false),
                packedRing: try p.optional("packed_ring", default: false),
                transport: try p.optional("transport"),
                socketMode: try p.optional("socket_mode"),
                socketGroup: try p.optional("socket_group"),
                writeCache: try p.optional("write_cache"))
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
        w.set("socket_mode", socketMode)
        w.set("socket_group", socketGroup)
        w.set("write_cache", writeCache)
        return w.json
    }
}

/// `vhost_get_controllers {name?}` -> array of controller objects.
public struct VhostGetControllersParams: RPCMethodParams {
    public static let method = "vhost_get_controllers"
    /// Only this controller (unknown: -32602 "No such device").
    public var name: String?
    /// vhost-blkd's extension: `offset`/`limit` over all controllers.
    public var page: ListPage?

    public init(name: String? = nil, page: ListPage? = nil) {
        self.name = name
        self.page = page
    }

    public init(params: JSON?) throws(RPCError) {
        self = try Self.decode(params) { (p: inout RPCParams) throws(RPCError) in
            Self(name: try p.optional("name"), page: try ListPage.decode(&p))
        }
    }

    public var json: JSON {
        var w = ParamsWriter()
        w.set("name", name)
        page?.write(into: &w)
        return w.json
    }
}

/// `vhost_delete_controller {ctrlr, force?}` -> true. A controller with a
/// connected frontend is refused (-16) unless `force` (vhost-blkd's
/// extension): then its queues stop, in-flight requests complete and the
/// frontend is disconnected.
public struct VhostDeleteControllerParams: RPCMethodParams {
    public static let method = "vhost_delete_controller"
    public var ctrlr: String
    public var force: Bool

    public init(ctrlr: String, force: Bool = false) {
        self.ctrlr = ctrlr
        self.force = force
    }

    public init(params: JSON?) throws(RPCError) {
        self = try Self.decode(params) { (p: inout RPCParams) throws(RPCError) in
            Self(ctrlr: try p.required("ctrlr"), force: try p.optional("force", default: false))
        }
    }

    public var json: JSON {
        var w = ParamsWriter()
        w.set("ctrlr", ctrlr)
        if force { w.set("force", true) }
        return w.json
    }
}
