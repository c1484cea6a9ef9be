import Virtio

/// Why a vhost-user message or memory table was rejected. Every case is a
/// front-end protocol error: the session logs it and, for most, disconnects.
public enum VhostUserError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Header version bits are not 1.
    case badVersion(flags: UInt32)
    /// The header announces a payload above `VhostUserMessageReader.maxPayloadSize`.
    case payloadTooLarge(request: VhostUserRequest, size: UInt32, limit: Int)
    /// The payload length does not match what the request carries.
    case wrongPayloadSize(request: VhostUserRequest, got: Int, expected: Int)
    /// The message came with the wrong number of file descriptors.
    case wrongFDCount(request: VhostUserRequest, got: Int, expected: Int)
    /// A memory table lists more regions than the limit.
    case tooManyRegions(count: UInt32, limit: Int)
    /// A config payload's `size` exceeds 256 bytes.
    case configTooLarge(size: UInt32)
    /// A memory region is malformed (size 0, overflow, beyond its file).
    case badRegion(index: Int, reason: String)
    /// The region table failed `GuestMemory` validation (e.g. overlapping ranges).
    case invalidMemoryTable(VirtioError)
    /// A memory table whose mappings would take `mappedBytes` of address
    /// space, over the session's `limit`; nothing was mapped.
    case memoryOverLimit(mappedBytes: UInt64, limit: UInt64)
    /// mmap of region `index` failed with `errno`.
    case mapFailed(index: Int, errno: Int32)
    /// REM_MEM_REG named a region that is not mapped.
    case regionNotFound(guestPhysAddr: UInt64, size: UInt64)
    /// A request number this codec does not know.
    case unknownRequest(UInt32)
    /// More descriptors arrived than any message could carry.
    case tooManyFDs(count: Int)
    /// GET_INFLIGHT_FD / SET_INFLIGHT_FD asked for a region that cannot be served.
    case invalidInflight(String)
    /// SET_LOG_BASE described a log that cannot be mapped.
    case invalidLog(String)

    public var description: String {
        switch self {
        case .badVersion(let flags):
            return "bad vhost-user version in flags 0x\(String(flags, radix: 16))"
        case .payloadTooLarge(let r, let size, let limit):
            return "\(r.name): payload of \(size) bytes exceeds limit \(limit)"
        case .wrongPayloadSize(let r, let got, let expected):
            return "\(r.name): payload is \(got) bytes, expected \(expected)"
        case .wrongFDCount(let r, let got, let expected):
            return "\(r.name): received \(got) file descriptors, expected \(expected)"
        case .tooManyRegions(let n, let limit):
            return "memory table has \(n) regions, limit \(limit)"
        case .configTooLarge(let size):
            return "config size \(size) exceeds 256 bytes"
        case .badRegion(let i, let reason):
            return "memory region \(i): \(reason)"
        case .invalidMemoryTable(let e):
            return "invalid memory table: \(e)"
        case .memoryOverLimit(let mapped, let limit):
            return "memory table maps \(mapped) bytes, over the limit of \(limit)"
        case .mapFailed(let i, let e):
            return "mmap of memory region \(i) failed (errno \(e))"
        case .regionNotFound(let gpa, let size):
            return "no mapped region at gpa 0x\(String(gpa, radix: 16)) size 0x\(String(size, radix: 16))"
        case .unknownRequest(let n):
            return "unknown vhost-user request \(n)"
        case .tooManyFDs(let n):
            return "\(n) file descriptors pending without a message to carry them"
        case .invalidInflight(let why):
            return "inflight region refused: \(why)"
        case .invalidLog(let why):
            return "dirty log refused: \(why)"
        }
    }
}
