/// Back-end → front-end replies (vhost-user spec, "Header"). Flags are exactly
/// version | REPLY (0x5): QEMU drops the connection on anything else
/// (docs/PROTOCOL-NOTES.md, "Replies").
public enum VhostUserReply {
    /// Header with flags 0x5 and `payload`'s bytes.
    public static func encode(request: VhostUserRequest, payload: VhostUserPayload) -> [UInt8] {
        encode(request: request, raw: payload.encoded)
    }

    /// Header with flags 0x5 and `raw` as the payload.
    public static func encode(request: VhostUserRequest, raw: [UInt8]) -> [UInt8] {
        let header = VhostUserHeader(
            request: request, flags: VhostUserHeader.replyFlags, size: UInt32(truncatingIfNeeded: raw.count))
        return header.bytes + raw
    }

    /// A u64 reply (GET_FEATURES, GET_QUEUE_NUM, REPLY_ACK acks, ...).
    public static func u64(_ request: VhostUserRequest, _ value: UInt64) -> [UInt8] {
        encode(request: request, payload: .u64(value))
    }

    /// A REPLY_ACK answer: 0 for success, non-zero for failure.
    public static func ack(_ request: VhostUserRequest, success: Bool) -> [UInt8] {
        u64(request, success ? 0 : 1)
    }

    /// A vring state reply (GET_VRING_BASE).
    public static func vringState(_ request: VhostUserRequest, index: UInt32, num: UInt32) -> [UInt8] {
        encode(request: request, payload: .vringState(index: index, num: num))
    }

    /// A GET_CONFIG reply: the request's offset/size/flags echoed, then `bytes`
    /// cut or zero-padded to exactly `size` bytes.
    public static func config(offset: UInt32, size: UInt32, flags: UInt32, bytes: [UInt8]) -> [UInt8] {
        let n = min(Int(size), VhostUserPayload.maxConfigSize)
        var data = Array(bytes.prefix(n))
        if data.count < n { data.append(contentsOf: repeatElement(0, count: n - data.count)) }
        return encode(
            request: .getConfig,
            payload: .config(offset: offset, size: UInt32(n), flags: flags, payload: data))
    }

    /// A GET_INFLIGHT_FD reply (the memfd travels as SCM_RIGHTS with it).
    public static func inflight(mmapSize: UInt64, mmapOffset: UInt64, numQueues: UInt16, queueSize: UInt16) -> [UInt8] {
        encode(
            request: .getInflightFD,
            payload: .inflight(mmapSize: mmapSize, mmapOffset: mmapOffset, numQueues: numQueues, queueSize: queueSize))
    }
}
