import Posix

/// One vhost-user message: header, decoded payload and the descriptors that
/// came with it (vhost-user spec, "Message Specification").
///
/// fd ownership: `fds` are open descriptors owned by whoever holds the
/// message. The handler keeps the ones it needs and closes every other one
/// (the spec requires closing fds that are not kept).
public struct VhostUserMessage: Sendable {
    public var header: VhostUserHeader
    public var payload: VhostUserPayload
    public var fds: [FileDescriptor]

    public init(header: VhostUserHeader, payload: VhostUserPayload, fds: [FileDescriptor] = []) {
        self.header = header
        self.payload = payload
        self.fds = fds
    }

    /// A front-end → back-end message with `size` computed from the payload.
    public init(request: VhostUserRequest, needsReply: Bool = false, payload: VhostUserPayload = .none, fds: [FileDescriptor] = []) {
        let flags = VhostUserHeader.version | (needsReply ? VhostUserHeader.flagNeedReply : 0)
        let size = UInt32(truncatingIfNeeded: payload.encoded.count)
        self.init(header: VhostUserHeader(request: request, flags: flags, size: size), payload: payload, fds: fds)
    }

    public var request: VhostUserRequest { header.request }
    /// NEED_REPLY is set (answer with a u64 when REPLY_ACK was negotiated).
    public var needsReply: Bool { header.needsReply }

    /// Header and payload bytes, `size` taken from the payload (fds travel separately).
    public func encoded() -> [UInt8] {
        let body = payload.encoded
        var header = self.header
        header.size = UInt32(truncatingIfNeeded: body.count)
        return header.bytes + body
    }

    /// The u64 payload, if any.
    public var u64: UInt64? {
        if case .u64(let v) = payload { return v }
        return nil
    }

    /// Decodes and validates `body` for `header.request`: exact payload size,
    /// region and config limits, and the number of fds (vhost-user spec,
    /// "Payload" and "Front-end message types"; docs/PROTOCOL-NOTES.md,
    /// "Payloads" and "File descriptors").
    ///
    /// fd ownership: on success the returned message owns `fds`; on a throw
    /// the caller still owns them and must close them all.
    public static func decode(header: VhostUserHeader, body: [UInt8], fds: [FileDescriptor]) throws(VhostUserError) -> VhostUserMessage {
        let request = header.request
        guard let layout = PayloadLayout(request) else { throw .unknownRequest(request.rawValue) }
        var reader = ByteReader(body)
        let payload: VhostUserPayload
        var expectedFDs = 0...0

        func expectSize(_ n: Int) throws(VhostUserError) {
            guard body.count == n else { throw .wrongPayloadSize(request: request, got: body.count, expected: n) }
        }

        switch layout {
        case .none(let fdCount):
            try expectSize(0)
            payload = .none
            expectedFDs = fdCount...fdCount
        case .u64:
            try expectSize(8)
            payload = .u64(reader.u64())
        case .vringFile:
            try expectSize(8)
            let value = reader.u64()
            payload = .u64(value)
            expectedFDs = VringFile(value).noFD ? 0...0 : 1...1
        case .vringState:
            try expectSize(8)
            payload = .vringState(index: reader.u32(), num: reader.u32())
        case .vringAddress:
            try expectSize(40)
            payload = .vringAddress(VringAddress(
                index: reader.u32(), flags: reader.u32(), desc: reader.u64(), used: reader.u64(),
                avail: reader.u64(), log: reader.u64()))
        case .memoryTable:
            guard body.count >= 8 else { throw .wrongPayloadSize(request: request, got: body.count, expected: 8) }
            let count = reader.u32()
            reader.skip(4)
            guard count <= UInt32(VhostUserPayload.maxMemTableRegions) else {
                throw .tooManyRegions(count: count, limit: VhostUserPayload.maxMemTableRegions)
            }
            let n = Int(count)
            try expectSize(8 + n * MemoryRegionDescriptor.byteSize)
            payload = .memoryTable((0..<n).map { _ in VhostUserPayload.readRegion(&reader) })
            expectedFDs = n...n
        case .singleRegion(let fdRange):
            try expectSize(8 + MemoryRegionDescriptor.byteSize)
            reader.skip(8)
            payload = .singleRegion(VhostUserPayload.readRegion(&reader))
            expectedFDs = fdRange
        case .config:
            guard body.count >= 12 else { throw .wrongPayloadSize(request: request, got: body.count, expected: 12) }
            let offset = reader.u32(), size = reader.u32(), flags = reader.u32()
            guard size <= UInt32(VhostUserPayload.maxConfigSize) else { throw .configTooLarge(size: size) }
            try expectSize(12 + Int(size))
            payload = .config(offset: offset, size: size, flags: flags, payload: reader.rest())
        case .inflight(let fdCount):
            try expectSize(24)
            payload = .inflight(mmapSize: reader.u64(), mmapOffset: reader.u64(), numQueues: reader.u16(), queueSize: reader.u16())
            expectedFDs = fdCount...fdCount
        case .log:
            try expectSize(16)
            payload = .log(size: reader.u64(), offset: reader.u64())
            expectedFDs = 1...1
        case .raw:
            payload = .raw(body)
        }

        guard expectedFDs.contains(fds.count) else {
            let expected = fds.count < expectedFDs.lowerBound ? expectedFDs.lowerBound : expectedFDs.upperBound
            throw .wrongFDCount(request: request, got: fds.count, expected: expected)
        }
        return VhostUserMessage(header: header, payload: payload, fds: fds)
    }
}

/// The payload shape and fd count of each known request.
enum PayloadLayout {
    case none(fds: Int)
    case u64
    case vringFile
    case vringState
    case vringAddress
    case memoryTable
    case singleRegion(fds: ClosedRange<Int>)
    case config
    case inflight(fds: Int)
    case log
    case raw

    init?(_ request: VhostUserRequest) {
        switch request {
        case .getFeatures, .setOwner, .resetOwner, .getProtocolFeatures, .getQueueNum,
             .postcopyAdvise, .postcopyListen, .postcopyEnd, .resetDevice, .getMaxMemSlots, .getStatus:
            self = .none(fds: 0)
        case .setLogFD, .setSlaveReqFD, .gpuSetSocket:
            self = .none(fds: 1)
        case .setFeatures, .setProtocolFeatures, .sendRARP, .netSetMTU, .setStatus:
            self = .u64
        case .setVringKick, .setVringCall, .setVringErr:
            self = .vringFile
        case .setVringNum, .setVringBase, .getVringBase, .setVringEnable, .setVringEndian, .vringKick:
            self = .vringState
        case .setVringAddr:
            self = .vringAddress
        case .setMemTable:
            self = .memoryTable
        case .addMemReg:
            self = .singleRegion(fds: 1...1)
        case .remMemReg:
            // QEMU before 7.1 attached the region's fd; accept and close it.
            self = .singleRegion(fds: 0...1)
        case .getConfig, .setConfig:
            self = .config
        case .getInflightFD:
            self = .inflight(fds: 0)
        case .setInflightFD:
            self = .inflight(fds: 1)
        case .setLogBase:
            self = .log
        case .iotlbMsg, .createCryptoSession, .closeCryptoSession:
            self = .raw
        default:
            return nil
        }
    }
}
