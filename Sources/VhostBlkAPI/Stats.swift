public import JSONRPC

/// A JSON array of bdev names (`names` of `bdev_get_iostat`).
public struct BdevNameList: RPCParamValue, Equatable {
    public var names: [String]
    public init(_ names: [String]) { self.names = names }

    public static var rpcTypeName: String { "array of strings" }
    public init?(rpcJSON json: JSON) {
        guard let items = json.arrayValue else { return nil }
        var names: [String] = []
        for item in items {
            guard let name = item.stringValue else { return nil }
            names.append(name)
        }
        self.names = names
    }
    public var rpcJSON: JSON { .array(names.map { .string($0) }) }
}

/// SPDK's statistics reset modes (`reset_mode`, `mode`).
public enum IOStatResetModeName: String, RPCParamValue, CaseIterable {
    case all, maxmin, error, none

    public static var rpcTypeName: String { "one of all, maxmin, error, none" }
    public init?(rpcJSON json: JSON) {
        guard let text = json.stringValue, let mode = Self(rawValue: text) else { return nil }
        self = mode
    }
    public var rpcJSON: JSON { .string(rawValue) }
}

/// `bdev_get_iostat {name?, names?, per_channel?, reset_mode?}` ->
/// `{tick_rate, ticks, bdevs:[...]}`, or with `per_channel` (one bdev)
/// `{tick_rate, ticks, name, channels:[...]}` with one channel per
/// virtqueue. Ticks are nanoseconds (`tick_rate` 1e9). rpc.py always sends
/// `per_channel`.
public struct BdevGetIostatParams: RPCMethodParams {
    public static let method = "bdev_get_iostat"
    public var name: String?
    public var names: [String]?
    public var perChannel: Bool
    public var resetMode: IOStatResetModeName?
    /// vhost-blkd's extension: `offset`/`limit` over the selected bdevs.
    public var page: ListPage?

    public init(
        name: String? = nil, names: [String]? = nil, perChannel: Bool = false, resetMode: IOStatResetModeName? = nil,
        page: ListPage? = nil
    ) {
        self.name = name
        self.names = names
        self.perChannel = perChannel
        self.resetMode = resetMode
        self.page = page
    }

    public init(params: JSON?) throws(RPCError) {
        self = try Self.decode(params) { (p: inout RPCParams) throws(RPCError) in
            let list: BdevNameList? = try p.optional("names")
            return Self(
                name: try p.optional("name"), names: list?.names,
                perChannel: try p.optional("per_channel", default: false),
                resetMode: try p.optional("reset_mode"), page: try ListPage.decode(&p))
        }
    }

    public var json: JSON {
        var w = ParamsWriter()
        w.set("name", name)
        w.set("names", names.map(BdevNameList.init))
        w.set("per_channel", perChannel)
        w.set("reset_mode", resetMode)
        page?.write(into: &w)
        return w.json
    }
}

/// `bdev_reset_iostat {name?, mode?}` -> true (default mode `all`).
public struct BdevResetIostatParams: RPCMethodParams {
    public static let method = "bdev_reset_iostat"
    public var name: String?
    public var mode: IOStatResetModeName?

    public init(name: String? = nil, mode: IOStatResetModeName? = nil) {
        self.name = name
        self.mode = mode
    }

    public init(params: JSON?) throws(RPCError) {
        self = try Self.decode(params) { (p: inout RPCParams) throws(RPCError) in
            Self(name: try p.optional("name"), mode: try p.optional("mode"))
        }
    }

    public var json: JSON {
        var w = ParamsWriter()
        w.set("name", name)
        w.set("mode", mode)
        return w.json
    }
}

/// `bdev_get_latency {name?}` (vhost-blkd's extension) -> `{unit: "ns",
/// bdevs:[{name, read:{count, min, mean, p50, p90, p99, p99_9, max}, write,
/// unmap, flush, write_zeroes}]}` from per-queue log-linear histograms (about 3 % resolution).
public struct BdevGetLatencyParams: NameFilterParams {
    public static let method = "bdev_get_latency"
    public var name: String?

    public init(name: String? = nil) { self.name = name }
}

/// `framework_get_reactors` (no params) -> `{tick_rate, pid, reactors:[{lcore,
/// tid, busy, idle, in_interrupt, lw_threads:[...], controllers:[...]}]}`.
public struct FrameworkGetReactorsParams: RPCMethodParams {
    public static let method = "framework_get_reactors"
    public init() {}
    public init(params: JSON?) throws(RPCError) {
        self = try Self.decode(params) { (_: inout RPCParams) throws(RPCError) in Self() }
    }
    public var json: JSON { .object(JSONObject()) }
}

/// `thread_get_stats` (no params) -> `{tick_rate, threads:[{name, id,
/// cpumask, busy, idle, active_pollers_count, timed_pollers_count,
/// paused_pollers_count}]}`: one thread per reactor.
public struct ThreadGetStatsParams: RPCMethodParams {
    public static let method = "thread_get_stats"
    public init() {}
    public init(params: JSON?) throws(RPCError) {
        self = try Self.decode(params) { (_: inout RPCParams) throws(RPCError) in Self() }
    }
    public var json: JSON { .object(JSONObject()) }
}
