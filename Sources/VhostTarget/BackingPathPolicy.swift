import Glibc
import JSONRPC

/// Which paths `bdev_uring_create` and `bdev_aio_create` may open (issue 5,
/// "who may do what"): absolute paths only, never a directory or a character
/// device, and, when `--allowed-dir` is given, only files whose real path
/// (symlinks and `..` resolved) lies inside one of those directories.
public struct BackingPathPolicy: Sendable, Equatable {
    /// Canonical (realpath) directories; empty allows any absolute path.
    public private(set) var allowedDirectories: [String] = []

    /// No directory restriction.
    public init() {}

    /// Resolves each directory with realpath; throws naming one that does
    /// not exist or is not a directory.
    public init(allowedDirectories: [String]) throws(TargetStartError) {
        for dir in allowedDirectories {
            guard dir.hasPrefix("/") else { throw TargetStartError("--allowed-dir \(dir): must be an absolute path") }
            guard let real = Self.realPath(dir) else {
                throw TargetStartError("--allowed-dir \(dir): \(RPCError.errorText(errno))")
            }
            var st = stat()
            guard stat(real, &st) == 0, st.st_mode & S_IFMT == S_IFDIR else {
                throw TargetStartError("--allowed-dir \(dir): not a directory")
            }
            if !self.allowedDirectories.contains(real) { self.allowedDirectories.append(real) }
        }
    }

    /// The path to open for `filename`: its real path when directories are
    /// restricted (so a symlink swapped afterwards cannot redirect the open
    /// outside), else `filename` itself. Throws -EINVAL for a relative path
    /// or a character device, -EISDIR for a directory, -EPERM outside the allowed
    /// directories, -errno when the path cannot be resolved.
    func pathToOpen(_ filename: String) throws(RPCError) -> String {
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
        guard !allowedDirectories.isEmpty else { return filename }
        guard allowedDirectories.contains(where: { Self.path(real, isInside: $0) }) else {
            throw RPCError(code: -Int(EPERM),
                           message: "\(RPCError.errorText(EPERM)): \(filename) (real path \(real)) is outside the allowed directories \(allowedDirectories.joined(separator: ", "))")
        }
        return real
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
