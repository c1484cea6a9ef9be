import Glibc

/// Why a backing could not be opened, with the errno the RPC layer reports
/// (`{"code": -errno, "message": ...}`, docs/PROTOCOL-NOTES.md, "Envelope and
/// errors") and a precise message,
/// e.g. "No such file or directory: /x" or
/// "File size 1000 is not a multiple of the block size 512".
public struct BdevOpenError: Error, Equatable, Sendable, CustomStringConvertible {
    public let errno: Int32
    public let message: String

    public init(errno: Int32, message: String) {
        self.errno = errno
        self.message = message
    }

    /// "<strerror>: <path>".
    static func system(_ errno: Int32, _ path: String) -> BdevOpenError {
        BdevOpenError(errno: errno, message: "\(String(cString: strerror(errno))): \(path)")
    }

    static func invalid(_ message: String) -> BdevOpenError {
        BdevOpenError(errno: EINVAL, message: message)
    }

    public var description: String { "\(message) (errno \(errno))" }
}
