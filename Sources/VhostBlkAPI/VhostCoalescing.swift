public import JSONRPC

/// `vhost_controller_set_coalescing {ctrlr, delay_base_us, iops_threshold}`
/// -> true (SPDK JSON-RPC, "vhost_controller_set_coalescing"; SPDK's
/// parameters, checks and meaning): a queue completing more than
/// `iops_threshold` requests per second delays its interrupts by
/// `delay_base_us` scaled by how far above the threshold it is;
/// `delay_base_us` 0 turns coalescing off. Applies to running queues at once
/// and is saved with the controller. Unknown controller, a delay above
/// 4294967 us or a threshold below 100: -32602.
public struct VhostControllerSetCoalescingParams: RPCMethodParams {
    public static let method = "vhost_controller_set_coalescing"
    public var ctrlr: String
    /// Base delay in microseconds; 0: coalescing off.
    public var delayBaseUs: UInt32
    /// IOPS above which interrupts are delayed (at least 100).
    public var iopsThreshold: UInt32

    public init(ctrlr: String, delayBaseUs: UInt32, iopsThreshold: UInt32) {
        self.ctrlr = ctrlr
        self.delayBaseUs = delayBaseUs
        self.iopsThreshold = iopsThreshold
    }

    public init(params: JSON?) throws(RPCError) {
        self = try Self.decode(params) { (p: inout RPCParams) throws(RPCError) in
            Self(
                ctrlr: try p.required("ctrlr"), delayBaseUs: try p.required("delay_base_us"),
                iopsThreshold: try p.required("iops_threshold"))
        }
    }

    public var json: JSON {
        var w = ParamsWriter()
        w.set("ctrlr", ctrlr)
        w.set("delay_base_us", delayBaseUs)
        w.set("iops_threshold", iopsThreshold)
        return w.json
    }
}
