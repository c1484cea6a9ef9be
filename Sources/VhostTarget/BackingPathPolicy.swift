import BlockIO
import CShims
import Glibc
import JSONRPC
import Posix

/// Which paths `bdev_uring_create` and `bdev_aio_create` may open (issue 5,
/// "who may do what"): absolute paths only, never a directory or a character
/// device, and, when `--allowed-dir` is given, only files whose real path
/// (symlinks and `..` resolved) lies inside one of those directories.
///
/// The check and the open are not two lookups of the same name: a tenant who
/// can write in an allowed directory could swap a directory on the way for a
/// symlink between them. So each allowed directory is held open (O_PATH) from
/// the start, and the file is opened relative to that descriptor with
/// openat2(2) RESOLVE_BENEATH: the kernel refuses (EXDEV) any resolution,
/// through symlinks or `..`, that leaves the directory at the moment of the
/// open. Symlinks that stay inside keep working.
public struct BackingPathPolicy: Sendable, Equatable {
    /// Canonical (realpath) directories; empty allows any absolute path.
    public var allowedDirectories: [String] { directories.map(\.path) }
    private var directories: [AllowedDirectory] = []

    /// No directory restriction.
    public init() {}

    /// Resolves each directory with realpath and opens it (O_PATH); throws
    /// naming one that does not exist or is not a directory.
    public init(allowedDirectories: [String]) throws(TargetStartError) {
        for dir in allowedDirectories {
            guard dir.hasPrefix("/") else { throw TargetStartError("--allowed-dir \(dir): must be an absolute path") }
            guard let real = Self.realPath(dir) else {
                throw TargetStartError("--allowed-dir \(dir): \(RPCError.errorText(errno))")
            }
            if self.allowedDirectories.contains(real) { continue }
            var fd: Int32
            repeat { fd = open(real, vb_o_path() | O_DIRECTORY | O_CLOEXEC) } while fd < 0 && errno == EINTR
            guard fd >= 0 else {
                let error = errno
                throw TargetStartError("--allowed-dir \(dir): \(error == ENOTDIR ? "not a directory" : RPCError.errorText(error))")
            }
            directories.append(AllowedDirectory(path: real, fd: fd))
        }
    }

    public static func == (a: BackingPathPolicy, b: BackingPathPolicy) -> Bool {
        a.allowedDirectories == b.allowedDirectories
    }

    /// Checks `filename` and says how to open it. Throws -EINVAL for a
    /// relative path or a character device, -EISDIR for a directory, -EPERM
    /// outside the allowed directories, -errno when the path cannot be
    /// resolved. The check names the error; the open (`BackingTarget.open`)
    /// is what enforces the directories.
    func target(for filename: String) throws(RPCError) -> BackingTarget {
        guard filename.hasPrefix("/") else {
            throw RPCError(code: -Int(EINVAL), message: "\(RPCError.errorText(EINVAL)): relative path '\(filename)' refused; give an absolute path")
        }
        guard let real = Self.realPath(filename) else {
            let error = errno
            throw RPCError(code: -Int(error), message: "\(RPCError.errorText(error)): \(filename)")
        }
        var st = stat()
        guard stat(real, &st) == 0 else {
            let error = errno
            throw RPCError(code: -Int(error), message: "\(RPCError.errorText(error)): \(filename)")
        }
        switch st.st_mode & S_IFMT {
        case S_IFDIR:
            throw RPCError(code: -Int(EISDIR), message: "\(RPCError.errorText(EISDIR)): \(filename) is a directory, not a file or block device")
        case S_IFCHR:
            throw RPCError(code: -Int(EINVAL), message: "\(RPCError.errorText(EINVAL)): \(filename) is a character device, not a file or block device")
        default:
            break
        }
        guard !directories.isEmpty else { return BackingTarget(filename: filename, path: filename, beneath: nil) }
        guard let dir = directories.first(where: { Self.path(real, isInside: $0.path) }) else {
            throw RPCError(code: -Int(EPERM),
                           message: "\(RPCError.errorText(EPERM)): \(filename) (real path \(real)) is outside the allowed directories \(allowedDirectories.joined(separator: ", "))")
        }
        let relative = real == dir.path ? "." : String(real.dropFirst(dir.path == "/" ? 1 : dir.path.count + 1))
        return BackingTarget(filename: filename, path: real, beneath: (dir, relative))
    }

    /// True when `path` is `dir` or below it (both canonical).
    static func path(_ path: String, isInside dir: String) -> Bool {
        if dir == "/" { return true }
        return path == dir || path.hasPrefix(dir + "/")
    }

    /// realpath(3), nil with errno set on failure.
    static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }
}

/// An `--allowed-dir`, held open (O_PATH | O_DIRECTORY) for the daemon's life.
final class AllowedDirectory: Sendable {
    /// Its canonical path when the daemon started.
    let path: String
    let fd: Int32

    init(path: String, fd: Int32) {
        self.path = path
        self.fd = fd
    }

    deinit { close(fd) }
}

/// A checked backing path and how `FileBacking` opens it.
struct BackingTarget: Sendable {
    /// As the RPC named it (for messages).
    let filename: String
    /// The path the bdev reports: the real path under `--allowed-dir`, else `filename`.
    let path: String
    /// The allowed directory and the real path relative to it; nil: no restriction.
    let beneath: (directory: AllowedDirectory, relative: String)?

    /// `FileBacking.open`'s opener: nil (open(2) of `path`) without
    /// `--allowed-dir`; else openat2(2) beneath the directory's descriptor.
    var opener: FileBacking.Opener? {
        guard let (directory, relative) = beneath.map({ ($0.directory, $0.relative) }) else { return nil }
        let filename = filename
        let path = path
        return { flags throws(BdevOpenError) -> FileDescriptor in
            let fd = Self.open(relative, beneath: directory.fd, flags: flags)
            if fd >= 0 { return FileDescriptor(fd) }
            switch -fd {
            case EXDEV, ELOOP:
                // EXDEV: the resolution left the directory (a component
                // became a symlink leading out, or ".." climbing out);
                // ELOOP: a /proc magic link, or (O_NOFOLLOW walk) any
                // symlink, which the checked real path did not have.
                throw BdevOpenError(
                    errno: EPERM,
                    message: "\(RPCError.errorText(EPERM)): \(filename) resolved outside the allowed directories "
                        + "while it was being opened (\(path) was changed after the check)")
            default:
                throw BdevOpenError(errno: -fd, message: "\(RPCError.errorText(-fd)): \(filename)")
            }
        }
    }

    /// openat2(2) RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS of `relative`
    /// under `dirfd`; where openat2 is missing (ENOSYS: kernel before 5.6,
    /// or a seccomp filter that predates it), a walk of O_PATH | O_NOFOLLOW
    /// opens, one component at a time, that refuses every symlink (ELOOP).
    /// Returns the fd or -errno.
    static func open(_ relative: String, beneath dirfd: Int32, flags: Int32) -> Int32 {
        let fd = vb_openat2_beneath(dirfd, relative, flags)
        guard fd == -ENOSYS else { return fd }
        return walk(relative, beneath: dirfd, flags: flags)
    }

    /// The O_NOFOLLOW walk. `relative` is a real path's tail: no ".", "..",
    /// empty component or symlink unless someone changed it since.
    static func walk(_ relative: String, beneath dirfd: Int32, flags: Int32) -> Int32 {
        let components = relative.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        guard let last = components.last, !components.contains("..") else { return -EXDEV }
        var current = dirfd
        defer { if current != dirfd { close(current) } }
        for component in components.dropLast() {
            let next = retrying { openat(current, component, vb_o_path() | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
            // A symlink opened O_PATH | O_NOFOLLOW | O_DIRECTORY fails ENOTDIR.
            if next < 0 { return next == -ENOTDIR && isSymlink(current, component) ? -ELOOP : next }
            if current != dirfd { close(current) }
            current = next
        }
        let fd = retrying { openat(current, last, flags | O_NOFOLLOW) }
        guard fd >= 0 else { return fd }
        var st = stat()
        // With O_PATH, O_NOFOLLOW opens a final symlink itself (open(2)).
        if fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFLNK {
            close(fd)
            return -ELOOP
        }
        return fd
    }

    private static func isSymlink(_ dirfd: Int32, _ name: String) -> Bool {
        var st = stat()
        return fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_mode & S_IFMT == S_IFLNK
    }

    private static func retrying(_ call: () -> Int32) -> Int32 {
        var fd: Int32
        repeat { fd = call() } while fd < 0 && errno == EINTR
        return fd < 0 ? -errno : fd
    }
}
