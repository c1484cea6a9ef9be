public import JSONRPC

/// `framework_get_subsystems` (no params) -> `[{subsystem, depends_on}]` in
/// initialization order: "bdev", then "vhost_blk" (which depends on "bdev").
public struct FrameworkGetSubsystemsParams: RPCMethodParams {
    public static let method = "framework_get_subsystems"

    public init() {}

    public init(params: JSON?) throws(RPCError) {
        self = try Self.decode(params) { (_: inout RPCParams) throws(RPCError) in Self() }
    }

    public var json: JSON { .object(JSONObject()) }
}

/// `framework_get_config {name, with_batches?}` -> `[{method, params}]`: the
/// calls that rebuild the subsystem's current state (what `save_config`
/// writes). rpc.py always sends `with_batches`; entries are never batched.
public struct FrameworkGetConfigParams: RPCMethodParams {
    public static let method = "framework_get_config"
    /// Subsystem name: "bdev" or "vhost_blk".
    public var name: String
    /// Group entries into batch arrays (accepted; the list is always flat).
    public var withBatches: Bool

    public init(name: String, withBatches: Bool = false) {
        self.name = name
        self.withBatches = withBatches
    }

    public init(params: JSON?) throws(RPCError) {
        self = try Self.decode(params) { (p: inout RPCParams) throws(RPCError) in
            Self(name: try p.required("name"), withBatches: try p.optional("with_batches", default: false))
        }
    }

    public var json: JSON { ["name": .string(name), "with_batches": .bool(withBatches)] }
}

/// `framework_start_init` (no params) -> true. The daemon is always
/// initialized, so this is a no-op (what `load_config` calls last).
public struct FrameworkStartInitParams: RPCMethodParams {
    public static let method = "framework_start_init"

    public init() {}

    public init(params: JSON?) throws(RPCError) {
        self = try Self.decode(params) { (_: inout RPCParams) throws(RPCError) in Self() }
    }

    public var json: JSON { .object(JSONObject()) }
}

/// vhost-blkd extension. `framework_get_failed_config` (no params) ->
/// `[{subsystem, method, params, error: {code, message}}]`: the `--config`
/// entries that failed at start (or on the last
/// `framework_retry_failed_config`), in config order, each as
/// `framework_get_config` lists an entry plus why it failed. The daemon
/// serves everything else; a persisted config keeps these entries.
public struct FrameworkGetFailedConfigParams: RPCMethodParams {
    public static let method = "framework_get_failed_config"

    public init() {}

    public init(params: JSON?) throws(RPCError) {
        self = try Self.decode(params) { (_: inout RPCParams) throws(RPCError) in Self() }
    }

    public var json: JSON { .object(JSONObject()) }
}

/// vhost-blkd extension. `framework_retry_failed_config` (no params) ->
/// `{recovered, failed}`: replays every failed `--config` entry again, in
/// config order (a controller whose bdev fails again fails with it);
/// `recovered` counts those that now succeeded, `failed` lists the rest as
/// `framework_get_failed_config` does.
public struct FrameworkRetryFailedConfigParams: RPCMethodParams {
    public static let method = "framework_retry_failed_config"

    public init() {}

    public init(params: JSON?) throws(RPCError) {
        self = try Self.decode(params) { (_: inout RPCParams) throws(RPCError) in Self() }
    }

    public var json: JSON { .object(JSONObject()) }
}

/// The file `save_config` writes and `vhost-blkd --config` reads:
/// `{"subsystems": [{"subsystem": NAME, "config": [{"method", "params"}]}]}`.
public struct SavedConfig: Sendable, Equatable {
    /// One call to replay.
    public struct Entry: Sendable, Equatable {
        public var method: String
        public var params: JSON?

        public init(method: String, params: JSON?) {
            self.method = method
            self.params = params
        }

        public var json: JSON {
            var object: JSONObject = ["method": .string(method)]
            if let params { object["params"] = params }
            return .object(object)
        }
    }

    /// One subsystem's calls, in order.
    public struct Subsystem: Sendable, Equatable {
        public var name: String
        public var entries: [Entry]

        public init(name: String, entries: [Entry]) {
            self.name = name
            self.entries = entries
        }
    }

    public var subsystems: [Subsystem]

    public init(subsystems: [Subsystem]) { self.subsystems = subsystems }

    /// Why a config file could not be read, in words naming where.
    public struct FormatError: Error, Sendable, Equatable, CustomStringConvertible {
        public var description: String
        public init(_ description: String) { self.description = description }
    }

    /// Reads the format, accepting SPDK's variants: a null or missing
    /// `config`, and batch arrays (flattened in order).
    public init(json: JSON) throws(FormatError) {
        guard let list = json["subsystems"]?.arrayValue else {
            throw FormatError("the top level must be an object with a \"subsystems\" array")
        }
        var subsystems: [Subsystem] = []
        for (index, item) in list.enumerated() {
            guard let name = item["subsystem"]?.stringValue else {
                throw FormatError("subsystems[\(index)] has no \"subsystem\" name")
            }
            var entries: [Entry] = []
            switch item["config"] {
            case nil, .null?:
                break
            case .array(let raw)?:
                for (position, element) in raw.enumerated() {
                    let members = element.arrayValue ?? [element]
                    for member in members {
                        guard let method = member["method"]?.stringValue else {
                            throw FormatError("subsystem \(name) entry \(position) has no \"method\" string")
                        }
                        let params = member["params"]
                        if let params, params.objectValue == nil, !params.isNull {
                            throw FormatError("subsystem \(name) entry \(position) (\(method)): \"params\" must be an object")
                        }
                        entries.append(Entry(method: method, params: params))
                    }
                }
            case let other?:
                throw FormatError("subsystem \(name): \"config\" must be an array, not \(other.typeName)")
            }
            subsystems.append(Subsystem(name: name, entries: entries))
        }
        self.subsystems = subsystems
    }

    /// The file's JSON.
    public var json: JSON {
        [
            "subsystems": .array(subsystems.map { subsystem in
                ["subsystem": .string(subsystem.name), "config": .array(subsystem.entries.map(\.json))]
            }),
        ]
    }
}
