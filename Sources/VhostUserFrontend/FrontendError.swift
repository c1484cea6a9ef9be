import Posix
import VhostUser
import Virtio

/// Why a front-end operation failed. Every wait has a deadline, so a
/// misbehaving back end shows up as `.timeout`, never as a hang.
public enum FrontendError: Error, Equatable, Sendable, CustomStringConvertible {
    case system(Errno)
    /// `what` did not happen before the deadline.
    case timeout(String)
    /// The back end closed the socket.
    case peerClosed
    /// The back end broke the protocol (bad reply flags, request or size).
    case protocolViolation(String)
    case vhostUser(VhostUserError)
    case virtio(VirtioError)
    /// A REPLY_ACK answer was non-zero.
    case nack(VhostUserRequest, UInt64)
    /// The guest memory allocator has no room for `bytes`.
    case outOfGuestMemory(bytes: Int)
    /// Not enough free descriptors for a chain.
    case queueFull
    case invalidArgument(String)

    public var description: String {
        switch self {
        case .system(let e): return "system error: \(e)"
        case .timeout(let what): return "timed out waiting for \(what)"
        case .peerClosed: return "back end closed the connection"
        case .protocolViolation(let s): return "protocol violation: \(s)"
        case .vhostUser(let e): return "vhost-user: \(e)"
        case .virtio(let e): return "virtio: \(e)"
        case .nack(let r, let v): return "\(r.name) was refused (ack \(v))"
        case .outOfGuestMemory(let n): return "no guest memory for \(n) bytes"
        case .queueFull: return "no free descriptors"
        case .invalidArgument(let s): return "invalid argument: \(s)"
        }
    }
}

/// A monotonic deadline for waits.
struct Deadline {
    let end: ContinuousClock.Instant

    init(_ timeout: Duration) { end = ContinuousClock.now.advanced(by: timeout) }

    /// Milliseconds left for poll(2), at least 0 (rounded up so we never spin at 0 early).
    var remainingMilliseconds: Int32 {
        let left = ContinuousClock.now.duration(to: end)
        if left <= .zero { return 0 }
        let (seconds, attos) = left.components
        let ms = seconds * 1000 + attos / 1_000_000_000_000_000 + 1
        return Int32(clamping: ms)
    }

    var expired: Bool { ContinuousClock.now >= end }
}
