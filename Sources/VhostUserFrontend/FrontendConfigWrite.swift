import VhostUser

extension VhostUserFrontend {
    /// SET_CONFIG as QEMU 7.2 sends a guest's config write (only the changed
    /// bytes, flags 0 = from the front-end), acked when REPLY_ACK is on:
    /// a refusal throws `.nack`.
    public func setConfig(offset: UInt32, bytes: [UInt8]) throws(FrontendError) {
        let payload = VhostUserPayload.config(offset: offset, size: UInt32(bytes.count), flags: 0, payload: bytes)
        try channel.send(VhostUserMessage(request: .setConfig, payload: payload), ack: replyAck)
    }
}
