/// Virtio feature bits relevant to virtio-blk over vhost-user
/// (virtio 1.2 §5.2.3 and §6; what QEMU 7.2 passes through:
/// docs/PROTOCOL-NOTES.md, "What a vhost-user-blk back end offers").
public struct VirtioFeatures: OptionSet, Sendable, Hashable {
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    @inline(__always) private init(bit: UInt64) { self.rawValue = 1 << bit }

    public static let sizeMax = VirtioFeatures(bit: 1)
    public static let segMax = VirtioFeatures(bit: 2)
    public static let geometry = VirtioFeatures(bit: 4)
    public static let readOnly = VirtioFeatures(bit: 5)
    public static let blockSize = VirtioFeatures(bit: 6)
    public static let flush = VirtioFeatures(bit: 9)
    public static let topology = VirtioFeatures(bit: 10)
    public static let configWCE = VirtioFeatures(bit: 11)
    public static let multiQueue = VirtioFeatures(bit: 12)
    public static let discard = VirtioFeatures(bit: 13)
    public static let writeZeroes = VirtioFeatures(bit: 14)
    public static let lifetime = VirtioFeatures(bit: 15)
    public static let secureErase = VirtioFeatures(bit: 16)
    public static let zoned = VirtioFeatures(bit: 17)
    public static let notifyOnEmpty = VirtioFeatures(bit: 24)
    /// VHOST_F_LOG_ALL (vhost-user dirty logging for migration).
    public static let logAll = VirtioFeatures(bit: 26)
    public static let indirectDesc = VirtioFeatures(bit: 28)
    public static let eventIdx = VirtioFeatures(bit: 29)
    /// VHOST_USER_F_PROTOCOL_FEATURES.
    public static let protocolFeatures = VirtioFeatures(bit: 30)
    public static let version1 = VirtioFeatures(bit: 32)
    public static let accessPlatform = VirtioFeatures(bit: 33)
    public static let ringPacked = VirtioFeatures(bit: 34)
    public static let ringReset = VirtioFeatures(bit: 40)

    private static let knownNames: [(VirtioFeatures, String)] = [
        (.sizeMax, "SIZE_MAX"), (.segMax, "SEG_MAX"), (.geometry, "GEOMETRY"),
        (.readOnly, "RO"), (.blockSize, "BLK_SIZE"), (.flush, "FLUSH"),
        (.topology, "TOPOLOGY"), (.configWCE, "CONFIG_WCE"), (.multiQueue, "MQ"),
        (.discard, "DISCARD"), (.writeZeroes, "WRITE_ZEROES"), (.lifetime, "LIFETIME"),
        (.secureErase, "SECURE_ERASE"), (.zoned, "ZONED"),
        (.notifyOnEmpty, "NOTIFY_ON_EMPTY"), (.logAll, "LOG_ALL"),
        (.indirectDesc, "INDIRECT_DESC"), (.eventIdx, "EVENT_IDX"),
        (.protocolFeatures, "PROTOCOL_FEATURES"), (.version1, "VERSION_1"),
        (.accessPlatform, "ACCESS_PLATFORM"), (.ringPacked, "RING_PACKED"),
        (.ringReset, "RING_RESET"),
    ]

    /// Readable names of the set bits, lowest bit first; unknown bits read "bit N".
    public var names: [String] {
        var result: [String] = []
        for bit in 0..<64 {
            let flag = VirtioFeatures(rawValue: 1 << UInt64(bit))
            guard contains(flag) else { continue }
            if let name = Self.knownNames.first(where: { $0.0 == flag })?.1 {
                result.append(name)
            } else {
                result.append("bit \(bit)")
            }
        }
        return result
    }
}
