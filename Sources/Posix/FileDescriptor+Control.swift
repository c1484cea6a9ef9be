import CShims
import Glibc

/// The control plane's calls on descriptors (sessions, the RPC and metrics
/// sockets, config files, `--allowed-dir`): each goes through
/// `retryingEINTR` (or a CShims helper that retries EINTR itself), so no
/// module outside Posix makes a raw syscall on a descriptor.
extension FileDescriptor {
    /// Standard input (not owned: never close it).
    public static let standardInput = FileDescriptor(STDIN_FILENO)
    /// Standard error (not owned: never close it).
    public static let standardError = FileDescriptor(STDERR_FILENO)

    /// close(2), reporting its error. Never retried: Linux releases the
    /// descriptor even when close fails (close(2), "Dealing with error
    /// returns from close()").
    public func closeReportingError() throws(Errno) {
        if Glibc.close(rawValue) != 0 { throw Errno.current }
    }

    // MARK: Opening relative to a directory

    /// openat(2) of `path` relative to `directory`, with O_CLOEXEC added.
    public static func open(
        _ path: String, relativeTo directory: FileDescriptor, flags: Int32, mode: mode_t = 0
    ) throws(Errno) -> FileDescriptor {
        FileDescriptor(try retryingEINTR { openat(directory.rawValue, path, flags | O_CLOEXEC, mode) })
    }

    /// openat2(2) of `path` beneath `directory` with RESOLVE_BENEATH |
    /// RESOLVE_NO_MAGICLINKS (CShims `vb_openat2_beneath`, which retries
    /// EINTR). ENOSYS where the kernel (before 5.6) or a seccomp filter
    /// lacks openat2.
    public static func open(beneath directory: FileDescriptor, _ path: String, flags: Int32) throws(Errno) -> FileDescriptor {
        FileDescriptor(try checkNegErrno(vb_openat2_beneath(directory.rawValue, path, flags)))
    }

    /// fstatat(2) of `name` in this directory (`flags`: AT_SYMLINK_NOFOLLOW ...).
    public func stat(_ name: String, flags: Int32) throws(Errno) -> Glibc.stat {
        var st = Glibc.stat()
        _ = try retryingEINTR { fstatat(rawValue, name, &st, flags) }
        return st
    }

    /// fstatfs(2): the file system the descriptor's file lives on.
    public func fileSystemStat() throws(Errno) -> statfs {
        var fs = statfs()
        _ = try retryingEINTR { fstatfs(rawValue, &fs) }
        return fs
    }

    // MARK: Files

    /// fsync(2): the file (or directory) and its metadata reach the disk.
    public func sync() throws(Errno) {
        _ = try retryingEINTR { fsync(rawValue) }
    }

    /// fchmod(2).
    public func setMode(_ mode: mode_t) throws(Errno) {
        _ = try retryingEINTR { fchmod(rawValue, mode) }
    }

    /// Reads to end of file; EFBIG once more than `limit` bytes came.
    public func readToEnd(limit: Int) throws(Errno) -> [UInt8] {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = try chunk.withUnsafeMutableBytes { raw in
                Result { () throws(Errno) -> Int in try read(into: raw) }
            }.get()
            if n == 0 { return bytes }
            bytes.append(contentsOf: chunk[0..<n])
            guard bytes.count <= limit else { throw Errno(EFBIG) }
        }
    }

    /// Where /proc/self/fd/<n> points (readlink(2)): a path, or for
    /// anonymous inodes a name such as `anon_inode:[eventfd]`.
    public func procLink() throws(Errno) -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        let n = try buffer.withUnsafeMutableBufferPointer { raw in
            Result { () throws(Errno) -> Int in
                guard let base = raw.baseAddress else { throw Errno.EINVAL }
                return try retryingEINTR { readlink("/proc/self/fd/\(rawValue)", base, raw.count - 1) }
            }
        }.get()
        return String(decoding: buffer.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    // Status flags (fcntl F_GETFL/F_SETFL, setBlocking): FileDescriptor+Storage.swift.

    // MARK: Sockets

    /// socket(2) with SOCK_CLOEXEC added to `type`.
    public static func socket(domain: Int32, type: Int32, protocol: Int32 = 0) throws(Errno) -> FileDescriptor {
        FileDescriptor(try retryingEINTR { Glibc.socket(domain, type | Int32(SOCK_CLOEXEC.rawValue), `protocol`) })
    }

    /// socketpair(2) of connected Unix stream sockets (SOCK_CLOEXEC).
    public static func socketPair() throws(Errno) -> (FileDescriptor, FileDescriptor) {
        var pair: [Int32] = [-1, -1]
        _ = try retryingEINTR { socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) }
        return (FileDescriptor(pair[0]), FileDescriptor(pair[1]))
    }

    /// bind(2) to an IPv4 address.
    public func bind(_ address: sockaddr_in) throws(Errno) {
        var address = address
        _ = try retryingEINTR {
            withUnsafePointer(to: &address) { pointer in
                Glibc.bind(rawValue, __CONST_SOCKADDR_ARG(__sockaddr_in__: pointer), socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
    }

    /// listen(2).
    public func listen(backlog: Int32) throws(Errno) {
        _ = try retryingEINTR { Glibc.listen(rawValue, backlog) }
    }

    /// setsockopt(2) of an integer option.
    public func setOption(level: Int32, _ name: Int32, _ value: Int32) throws(Errno) {
        var value = value
        _ = try retryingEINTR { setsockopt(rawValue, level, name, &value, socklen_t(MemoryLayout<Int32>.size)) }
    }

    /// SO_SNDTIMEO (socket(7)): a blocking send gives up after `timeout`.
    public func setSendTimeout(_ timeout: timeval) throws(Errno) {
        var value = timeout
        _ = try retryingEINTR { setsockopt(rawValue, SOL_SOCKET, SO_SNDTIMEO, &value, socklen_t(MemoryLayout<timeval>.size)) }
    }

    /// send(2) with `flags` (MSG_NOSIGNAL, MSG_DONTWAIT ...).
    public func send(_ buffer: UnsafeRawBufferPointer, flags: Int32) throws(Errno) -> Int {
        try retryingEINTR { Glibc.send(rawValue, buffer.baseAddress, buffer.count, flags) }
    }

    /// recv(2) with `flags` (MSG_DONTWAIT ...); 0 is end of file.
    public func receive(into buffer: UnsafeMutableRawBufferPointer, flags: Int32) throws(Errno) -> Int {
        try retryingEINTR { recv(rawValue, buffer.baseAddress, buffer.count, flags) }
    }

    /// shutdown(2) (`how`: SHUT_RD, SHUT_WR, SHUT_RDWR).
    public func shutdown(_ how: Int32) throws(Errno) {
        _ = try retryingEINTR { Glibc.shutdown(rawValue, how) }
    }

    /// poll(2) of this descriptor alone: the events that came (`revents`),
    /// empty when `timeoutMilliseconds` (-1: none) passed first. An EINTR
    /// polls again with the same timeout.
    public func poll(_ events: Int16, timeoutMilliseconds: Int32) throws(Errno) -> Int16 {
        var entry = pollfd(fd: rawValue, events: events, revents: 0)
        let ready = try retryingEINTR { Glibc.poll(&entry, 1, timeoutMilliseconds) }
        return ready > 0 ? entry.revents : 0
    }
}

extension FileDescriptor {
    /// A non-blocking signalfd(2) for `signals` (which the caller has
    /// blocked): each delivery reads as one `signalfd_siginfo`.
    public static func signalFD(_ signals: [Int32]) throws(Errno) -> FileDescriptor {
        var set = sigset_t()
        sigemptyset(&set)
        for s in signals { sigaddset(&set, s) }
        return FileDescriptor(try retryingEINTR { signalfd(-1, &set, Int32(SFD_CLOEXEC | SFD_NONBLOCK)) })
    }
}

extension Sequence where Element == FileDescriptor {
    /// Closes every descriptor (the caller owned them all).
    public func closeAll() {
        for fd in self { fd.close() }
    }
}

extension EventFD {
    /// Whether `fd` is an eventfd (its /proc/self/fd link reads
    /// `anon_inode:[eventfd]`). A descriptor a peer sends as one may be
    /// anything: a pipe nobody reads would block its writer once full, a
    /// regular file would grow with every signal.
    public static func isEventFD(_ fd: FileDescriptor) -> Bool {
        (try? fd.procLink()) == "anon_inode:[eventfd]"
    }
}

/// Calls on paths, not descriptors, through the same funnel.
public enum FileSystem {
    /// stat(2) of `path` (symlinks followed).
    public static func status(_ path: String) throws(Errno) -> Glibc.stat {
        var st = Glibc.stat()
        _ = try retryingEINTR { () -> Int32 in stat(path, &st) }
        return st
    }

    /// unlink(2); a name that is already gone is not an error to the callers
    /// that remove sockets and temporary files, so this reports nothing.
    public static func removeFile(_ path: String) {
        _ = try? retryingEINTR { unlink(path) }
    }

    /// mkdir(2).
    public static func makeDirectory(_ path: String, mode: mode_t) throws(Errno) {
        _ = try retryingEINTR { mkdir(path, mode) }
    }

    /// rmdir(2), reporting nothing (only an empty directory goes).
    public static func removeDirectory(_ path: String) {
        _ = try? retryingEINTR { rmdir(path) }
    }

    /// chown(2) to group `gid`, keeping the owner.
    public static func setGroup(_ path: String, gid: gid_t) throws(Errno) {
        _ = try retryingEINTR { chown(path, uid_t.max, gid) }
    }

    /// rename(2).
    public static func rename(_ from: String, to: String) throws(Errno) {
        _ = try retryingEINTR { Glibc.rename(from, to) }
    }

    /// fsync(2) of a directory, so that a rename or create in it survives a crash.
    public static func syncDirectory(_ path: String) throws(Errno) {
        let fd = try FileDescriptor.open(path, flags: O_RDONLY | O_DIRECTORY)
        defer { fd.close() }
        try fd.sync()
    }
}
