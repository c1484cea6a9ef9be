/// The 12-byte vhost-user message header: `u32 request, u32 flags, u32 size`,
/// little-endian on every host we build for (vhost-user spec "Header").
public struct VhostUserHeader: Hashable, Sendable {
    public static let byteSize = 12
    /// Bits 0-1: protocol version.
    public static let versionMask: UInt32 = 0x3
    /// The only protocol version.
    public static let version: UInt32 = 0x1
    /// Bit 2: this message is a reply.
    public static let flagReply: UInt32 = 0x4
    /// Bit 3: the sender wants a REPLY_ACK u64 reply.
    public static let flagNeedReply: UInt32 = 0x8
    /// Flags of every reply: exactly version | REPLY (docs/PROTOCOL-NOTES.md, "Replies").
    public static let replyFlags: UInt32 = version | flagReply

    public var request: VhostUserRequest
    public var flags: UInt32
    /// Payload length in bytes.
    public var size: UInt32

    public init(request: VhostUserRequest, flags: UInt32 = VhostUserHeader.version, size: UInt32) {
        self.request = request
        self.flags = flags
        self.size = size
    }

    /// Parses the first 12 bytes of `bytes`; nil if fewer are present.
    public init?(parsing bytes: UnsafeRawBufferPointer) {
        guard bytes.count >= Self.byteSize else { return nil }
        request = VhostUserRequest(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 0, as: UInt32.self)))
        flags = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
        size = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 8, as: UInt32.self))
    }

    /// Parses the first 12 bytes of `bytes`; nil if fewer are present.
    public init?(parsing bytes: [UInt8]) {
        guard let header = bytes.withUnsafeBytes({ VhostUserHeader(parsing: $0) }) else { return nil }
        self = header
    }

    /// The protocol version in bits 0-1.
    public var version: UInt32 { flags & Self.versionMask }
    public var isReply: Bool { flags & Self.flagReply != 0 }
    public var needsReply: Bool { flags & Self.flagNeedReply != 0 }

    /// The 12 wire bytes.
    public var bytes: [UInt8] {
        var writer = ByteWriter()
        writer.u32(request.rawValue)
        writer.u32(flags)
        writer.u32(size)
        return writer.bytes
    }
}
