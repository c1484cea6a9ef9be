public import JSONRPC

/// A `{"key": "value", ...}` parameter of librados options (SPDK's
/// `config_param` and `config`), in the order given.
public struct RBDConfigOptions: Sendable, Equatable {
    public var pairs: [(key: String, value: String)]

    public init(_ pairs: [(key: String, value: String)]) { self.pairs = pairs }

    public static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.pairs.map(\.key) == rhs.pairs.map(\.key) && lhs.pairs.map(\.value) == rhs.pairs.map(\.value)
    }

    /// Decodes `value` (null: none); throws -32602 unless an object of strings.
    static func decode(_ value: JSON?, key: String) throws(RPCError) -> RBDConfigOptions? {
        guard let value, !value.isNull else { return nil }
        guard let object = value.objectValue else {
            throw .invalidParams("Parameter '\(key)' must be an object of strings, not \(value.typeName)")
        }
        var pairs: [(key: String, value: String)] = []
        for (k, v) in object {
            guard let s = v.stringValue else { throw .invalidParams("Parameter '\(key).\(k)' must be a string, not \(v.typeName)") }
            pairs.append((k, s))
        }
        return RBDConfigOptions(pairs)
    }

    public var json: JSON { .object(JSONObject(pairs.map { ($0.key, JSON.string($0.value)) })) }
}

/// `bdev_rbd_register_cluster {name, user_id?, config_param?, config_file?,
/// key_file?, core_mask?}` -> the cluster name (SPDK's).
public struct BdevRbdRegisterClusterParams: RPCMethodParams {
    public static let method = "bdev_rbd_register_cluster"
    public var name: String
    public var userID: String?
    public var configParam: RBDConfigOptions?
    public var configFile: String?
    public var keyFile: String?
    /// SPDK pins librbd's threads to it; recorded and reported only.
    public var coreMask: String?

    public init(name: String, userID: String? = nil, configParam: RBDConfigOptions? = nil, configFile: String? = nil,
                keyFile: String? = nil, coreMask: String? = nil) {
        self.name = name
        self.userID = userID
        self.configParam = configParam
        self.configFile = configFile
        self.keyFile = keyFile
        self.coreMask = coreMask
    }

    public init(params: JSON?) throws(RPCError) {
        self = try Self.decode(params) { (p: inout RPCParams) throws(RPCError) in
            Self(name: try p.required("name"), userID: try p.optional("user_id"),
                 configParam: try RBDConfigOptions.decode(try p.optional("config_param", as: JSON.self), key: "config_param"),
                 configFile: try p.optional("config_file"), keyFile: try p.optional("key_file"),
                 coreMask: try p.optional("core_mask"))
        }
    }

    public var json: JSON {
        var w = ParamsWriter()
        w.set("name", name)
        w.set("user_id", userID)
        w.set("config_param", configParam?.json)
        w.set("config_file", configFile)
        w.set("key_file", keyFile)
        w.set("core_mask", coreMask)
        return w.json
    }
}

/// `bdev_rbd_unregister_cluster {name}` -> true; refused while a bdev uses it.
public struct BdevRbdUnregisterClusterParams: RPCMethodParams {
    public static let method = "bdev_rbd_unregister_cluster"
    public var name: String

    public init(name: String) { self.name = name }

    public init(params: JSON?) throws(RPCError) {
        self = try Self.decode(params) { (p: inout RPCParams) throws(RPCError) in Self(name: try p.required("name")) }
    }

    public var json: JSON { ["name": .string(name)] }
}

/// `bdev_rbd_get_clusters_info {name?}` -> one cluster's entry, or all of them.
public struct BdevRbdGetClustersInfoParams: NameFilterParams {
    public static let method = "bdev_rbd_get_clusters_info"
    public var name: String?

    public init(name: String? = nil) { self.name = name }
}

/// `bdev_rbd_create {pool_name, rbd_name, block_size, name?, user_id?,
/// config?, cluster_name?, uuid?, read_only?}` -> the bdev name (SPDK's).
public struct BdevRbdCreateParams: RPCMethodParams {
    public static let method = "bdev_rbd_create"
    public var poolName: String
    public var rbdName: String
    public var blockSize: UInt32
    public var name: String?
    public var userID: String?
    public var config: RBDConfigOptions?
    public var clusterName: String?
    public var uuid: String?
    public var readOnly: Bool

    public init(poolName: String, rbdName: String, blockSize: UInt32, name: String? = nil, userID: String? = nil,
                config: RBDConfigOptions? = nil, clusterName: String? = nil, uuid: String? = nil, readOnly: Bool = false) {
        self.poolName = poolName
        self.rbdName = rbdName
        self.blockSize = blockSize
        self.name = name
        self.userID = userID
        self.config = config
        self.clusterName = clusterName
        self.uuid = uuid
        self.readOnly = readOnly
    }

    public init(params: JSON?) throws(RPCError) {
        self = try Self.decode(params) { (p: inout RPCParams) throws(RPCError) in
            Self(poolName: try p.required("pool_name"), rbdName: try p.required("rbd_name"),
                 blockSize: try p.required("block_size"), name: try p.optional("name"), userID: try p.optional("user_id"),
                 config: try RBDConfigOptions.decode(try p.optional("config", as: JSON.self), key: "config"),
                 clusterName: try p.optional("cluster_name"), uuid: try p.optional("uuid"),
                 readOnly: try p.optional("read_only", default: false))
        }
    }

    public var json: JSON {
        var w = ParamsWriter()
        w.set("pool_name", poolName)
        w.set("rbd_name", rbdName)
        w.set("block_size", blockSize)
        w.set("name", name)
        w.set("user_id", userID)
        w.set("config", config?.json)
        w.set("cluster_name", clusterName)
        w.set("uuid", uuid)
        w.set("read_only", readOnly)
        return w.json
    }
}

/// `bdev_rbd_delete {name}` -> true.
public struct BdevRbdDeleteParams: RPCMethodParams {
    public static let method = "bdev_rbd_delete"
    public var name: String

    public init(name: String) { self.name = name }

    public init(params: JSON?) throws(RPCError) {
        self = try Self.decode(params) { (p: inout RPCParams) throws(RPCError) in Self(name: try p.required("name")) }
    }

    public var json: JSON { ["name": .string(name)] }
}

/// `bdev_rbd_resize {name, new_size}` (MiB) -> true.
public struct BdevRbdResizeParams: RPCMethodParams {
    public static let method = "bdev_rbd_resize"
    public var name: String
    public var newSizeMiB: UInt64

    public init(name: String, newSizeMiB: UInt64) {
        self.name = name
        self.newSizeMiB = newSizeMiB
    }

    public init(params: JSON?) throws(RPCError) {
        self = try Self.decode(params) { (p: inout RPCParams) throws(RPCError) in
            Self(name: try p.required("name"), newSizeMiB: try p.required("new_size"))
        }
    }

    public var json: JSON { ["name": .string(name), "new_size": .int(Int64(clamping: newSizeMiB))] }
}
