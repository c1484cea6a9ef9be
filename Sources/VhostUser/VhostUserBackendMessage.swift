/// Back-end → front-end requests, sent on the channel the front-end hands
/// over with SET_SLAVE_REQ_FD (vhost-user spec, "Back-end message types").
/// Their codes are a namespace of their own.
public enum VhostUserBackendRequest: UInt32, Sendable {
    case iotlbMessage = 1
    /// The device's config space changed (live resize): the front-end
    /// re-reads it with GET_CONFIG (docs/PROTOCOL-NOTES.md, "Live resize").
    case configChange = 2
    case vringHostNotifier = 3
}

/// Encodes back-end requests.
public enum VhostUserBackendMessage {
    /// CONFIG_CHANGE_MSG: a bare header. Without `needReply` the front-end
    /// sends nothing back; QEMU 7.2 answers a NEED_REPLY one only after its
    /// own GET_CONFIG round trip on the main socket, so the thread serving
    /// that socket must never wait for it.
    public static func configChange(needReply: Bool = false) -> [UInt8] {
        var writer = ByteWriter()
        writer.u32(VhostUserBackendRequest.configChange.rawValue)
        writer.u32(VhostUserHeader.version | (needReply ? VhostUserHeader.flagNeedReply : 0))
        writer.u32(0)
        return writer.bytes
    }
}
