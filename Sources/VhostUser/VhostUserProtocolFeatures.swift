/// vhost-user protocol feature bits (GET/SET_PROTOCOL_FEATURES; vhost-user
/// spec, "Protocol features").
public struct VhostUserProtocolFeatures: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    @inline(__always) private init(bit: UInt64) { self.rawValue = 1 << bit }

    public static let multiQueue = Self(bit: 0)
    public static let logSHMFD = Self(bit: 1)
    public static let rarp = Self(bit: 2)
    public static let replyAck = Self(bit: 3)
    public static let netMTU = Self(bit: 4)
    /// SLAVE_REQ, a.k.a. BACKEND_REQ.
    public static let slaveReq = Self(bit: 5)
    public static let crossEndian = Self(bit: 6)
    public static let cryptoSession = Self(bit: 7)
    public static let pagefault = Self(bit: 8)
    public static let config = Self(bit: 9)
    public static let slaveSendFD = Self(bit: 10)
    public static let hostNotifier = Self(bit: 11)
    public static let inflightSHMFD = Self(bit: 12)
    public static let resetDevice = Self(bit: 13)
    public static let inbandNotifications = Self(bit: 14)
    public static let configureMemSlots = Self(bit: 15)
    public static let status = Self(bit: 16)

    private static let bitNames = [
        "MQ", "LOG_SHMFD", "RARP", "REPLY_ACK", "NET_MTU", "SLAVE_REQ", "CROSS_ENDIAN",
        "CRYPTO_SESSION", "PAGEFAULT", "CONFIG", "SLAVE_SEND_FD", "HOST_NOTIFIER",
        "INFLIGHT_SHMFD", "RESET_DEVICE", "INBAND_NOTIFICATIONS", "CONFIGURE_MEM_SLOTS", "STATUS",
    ]

    /// Names of the set bits, lowest first; unknown bits read "bit N".
    public var names: [String] {
        (0..<64).compactMap { bit -> String? in
            guard rawValue & (1 << UInt64(bit)) != 0 else { return nil }
            return bit < Self.bitNames.count ? Self.bitNames[bit] : "bit \(bit)"
        }
    }

    public var description: String { "[" + names.joined(separator: ", ") + "]" }
}
