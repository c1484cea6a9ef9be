/// A vhost-user front-end request number (vhost-user spec, "Front-end message
/// types"). A raw wire value: unknown numbers are data, never a trap.
public struct VhostUserRequest: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public init(_ rawValue: UInt32) { self.rawValue = rawValue }

    public static let getFeatures = Self(1)
    public static let setFeatures = Self(2)
    public static let setOwner = Self(3)
    public static let resetOwner = Self(4)
    public static let setMemTable = Self(5)
    public static let setLogBase = Self(6)
    public static let setLogFD = Self(7)
    public static let setVringNum = Self(8)
    public static let setVringAddr = Self(9)
    public static let setVringBase = Self(10)
    public static let getVringBase = Self(11)
    public static let setVringKick = Self(12)
    public static let setVringCall = Self(13)
    public static let setVringErr = Self(14)
    public static let getProtocolFeatures = Self(15)
    public static let setProtocolFeatures = Self(16)
    public static let getQueueNum = Self(17)
    public static let setVringEnable = Self(18)
    public static let sendRARP = Self(19)
    public static let netSetMTU = Self(20)
    /// SET_SLAVE_REQ_FD, a.k.a. SET_BACKEND_REQ_FD.
    public static let setSlaveReqFD = Self(21)
    public static let iotlbMsg = Self(22)
    public static let setVringEndian = Self(23)
    public static let getConfig = Self(24)
    public static let setConfig = Self(25)
    public static let createCryptoSession = Self(26)
    public static let closeCryptoSession = Self(27)
    public static let postcopyAdvise = Self(28)
    public static let postcopyListen = Self(29)
    public static let postcopyEnd = Self(30)
    public static let getInflightFD = Self(31)
    public static let setInflightFD = Self(32)
    public static let gpuSetSocket = Self(33)
    public static let resetDevice = Self(34)
    public static let vringKick = Self(35)
    public static let getMaxMemSlots = Self(36)
    public static let addMemReg = Self(37)
    public static let remMemReg = Self(38)
    public static let setStatus = Self(39)
    public static let getStatus = Self(40)

    private static let names: [String] = [
        "GET_FEATURES", "SET_FEATURES", "SET_OWNER", "RESET_OWNER", "SET_MEM_TABLE",
        "SET_LOG_BASE", "SET_LOG_FD", "SET_VRING_NUM", "SET_VRING_ADDR", "SET_VRING_BASE",
        "GET_VRING_BASE", "SET_VRING_KICK", "SET_VRING_CALL", "SET_VRING_ERR",
        "GET_PROTOCOL_FEATURES", "SET_PROTOCOL_FEATURES", "GET_QUEUE_NUM", "SET_VRING_ENABLE",
        "SEND_RARP", "NET_SET_MTU", "SET_SLAVE_REQ_FD", "IOTLB_MSG", "SET_VRING_ENDIAN",
        "GET_CONFIG", "SET_CONFIG", "CREATE_CRYPTO_SESSION", "CLOSE_CRYPTO_SESSION",
        "POSTCOPY_ADVISE", "POSTCOPY_LISTEN", "POSTCOPY_END", "GET_INFLIGHT_FD",
        "SET_INFLIGHT_FD", "GPU_SET_SOCKET", "RESET_DEVICE", "VRING_KICK", "GET_MAX_MEM_SLOTS",
        "ADD_MEM_REG", "REM_MEM_REG", "SET_STATUS", "GET_STATUS",
    ]

    /// Whether this is one of the requests 1...40 this codec knows.
    public var isKnown: Bool { rawValue >= 1 && rawValue <= UInt32(Self.names.count) }

    /// Spec name for logs, e.g. "SET_MEM_TABLE"; "UNKNOWN(n)" otherwise.
    public var name: String {
        isKnown ? Self.names[Int(rawValue) - 1] : "UNKNOWN(\(rawValue))"
    }

    public var description: String { name }
}
