public import JSONRPC

/// `bdev_set_qos_limit {name, rw_ios_per_sec?, rw_mbytes_per_sec?,
/// r_mbytes_per_sec?, w_mbytes_per_sec?}` -> true, with SPDK's semantics:
/// a limit left out keeps its current value, 0 removes it, at least one
/// must be given, and an IOPS limit must be a multiple of 1000 (SPDK's
/// `SPDK_BDEV_QOS_MIN_IOS_PER_SEC`; others are refused with -EINVAL).
/// Byte limits are in MiB per second (SPDK multiplies by 1024 * 1024).
public struct BdevSetQosLimitParams: RPCMethodParams {
    public static let method = "bdev_set_qos_limit"
    public var name: String
    public var rwIOsPerSec: UInt64?
    public var rwMBytesPerSec: UInt64?
    public var rMBytesPerSec: UInt64?
    public var wMBytesPerSec: UInt64?

    public init(name: String, rwIOsPerSec: UInt64? = nil, rwMBytesPerSec: UInt64? = nil,
                rMBytesPerSec: UInt64? = nil, wMBytesPerSec: UInt64? = nil) {
        self.name = name
        self.rwIOsPerSec = rwIOsPerSec
        self.rwMBytesPerSec = rwMBytesPerSec
        self.rMBytesPerSec = rMBytesPerSec
        self.wMBytesPerSec = wMBytesPerSec
    }

    public init(params: JSON?) throws(RPCError) {
        self = try Self.decode(params) { (p: inout RPCParams) throws(RPCError) in
            Self(name: try p.required("name"), rwIOsPerSec: try p.optional("rw_ios_per_sec"),
                 rwMBytesPerSec: try p.optional("rw_mbytes_per_sec"), rMBytesPerSec: try p.optional("r_mbytes_per_sec"),
                 wMBytesPerSec: try p.optional("w_mbytes_per_sec"))
        }
    }

    public var json: JSON {
        var w = ParamsWriter()
        w.set("name", name)
        w.set("rw_ios_per_sec", rwIOsPerSec)
        w.set("rw_mbytes_per_sec", rwMBytesPerSec)
        w.set("r_mbytes_per_sec", rMBytesPerSec)
        w.set("w_mbytes_per_sec", wMBytesPerSec)
        return w.json
    }
}
