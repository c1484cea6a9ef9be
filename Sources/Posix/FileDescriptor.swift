import Glibc

/// A raw file descriptor with Swift names for the calls the daemon makes.
/// Ownership is explicit: whoever opened it calls `close()` exactly once.
public struct FileDescriptor: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int32
    public init(_ rawValue: Int32) { self.rawValue = rawValue }
    public var description: String { "fd \(rawValue)" }

    public static func open(_ path: String, flags: Int32, mode: mode_t = 0o644) throws(Errno) -> FileDescriptor {
        let fd = try retryingEINTR { Glibc.open(path, flags | O_CLOEXEC, mode) }
        return FileDescriptor(fd)
    }

    public func close() { _ = Glibc.close(rawValue) }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws(Errno) -> Int {
        try retryingEINTR { Glibc.read(rawValue, buffer.baseAddress, buffer.count) }
    }

    public func write(_ buffer: UnsafeRawBufferPointer) throws(Errno) -> Int {
        try retryingEINTR { Glibc.write(rawValue, buffer.baseAddress, buffer.count) }
    }

    /// Writes all of `bytes`, looping on short writes.
    public func writeAll(_ bytes: [UInt8]) throws(Errno) {
        var offset = 0
        while offset < bytes.count {
            let result = bytes.withUnsafeBytes { raw in
                Result { () throws(Errno) -> Int in try write(UnsafeRawBufferPointer(rebasing: raw[offset...])) }
            }
            offset += try result.get()
        }
    }

    public func stat() throws(Errno) -> Glibc.stat {
        var st = Glibc.stat()
        _ = try retryingEINTR { fstat(rawValue, &st) }
        return st
    }

    public func setNonBlocking() throws(Errno) {
        let flags = try retryingEINTR { fcntl(rawValue, F_GETFL) }
        _ = try retryingEINTR { fcntl(rawValue, F_SETFL, flags | O_NONBLOCK) }
    }

    public func duplicate() throws(Errno) -> FileDescriptor {
        FileDescriptor(try retryingEINTR { fcntl(rawValue, F_DUPFD_CLOEXEC, 0) })
    }
}
