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
            let fd: FileDescriptor
            do {
                fd = try FileDescriptor.open(real, flags: vb_o_path() | O_DIRECTORY)
            } catch {
                let code = error.rawValue
                throw TargetStartError("--allowed-dir \(dir): \(code == ENOTDIR ? "not a directory" : RPCError.errorText(code))")
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
        let st: Glibc.stat
        do {
            st = try FileSystem.status(real)
        } catch {
            throw RPCError(code: -Int(error.rawValue), message: "\(RPCError.errorText(error.rawValue)): \(filename)")
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
    /// Owned: closed when the last reference goes.
    let fd: FileDescriptor

    init(path: String, fd: FileDescriptor) {
        self.path = path
        self.fd = fd
    }

    deinit { fd.close() }
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
            let code: Int32
            do throws(Errno) {
                return try Self.open(relative, beneath: directory.fd, flags: flags)  // FileBacking takes ownership
            } catch {
                code = error.rawValue
            }
            switch code {
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
                throw BdevOpenError(errno: code, message: "\(RPCError.errorText(code)): \(filename)")
            }
        }
    }

    /// openat2(2) RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS of `relative`
    /// under `directory`; where openat2 is missing (ENOSYS: kernel before
    /// 5.6, or a seccomp filter that predates it), a walk of O_PATH |
    /// O_NOFOLLOW opens, one component at a time, that refuses every
    /// symlink (ELOOP). The caller owns the descriptor returned.
    static func open(_ relative: String, beneath directory: FileDescriptor, flags: Int32) throws(Errno) -> FileDescriptor {
        do {
            return try FileDescriptor.open(beneath: directory, relative, flags: flags)
        } catch where error.rawValue == ENOSYS {
            return try walk(relative, beneath: directory, flags: flags)
        }
    }

    /// The O_NOFOLLOW walk. `relative` is a real path's tail: no ".", "..",
    /// empty component or symlink unless someone changed it since.
    static func walk(_ relative: String, beneath directory: FileDescriptor, flags: Int32) throws(Errno) -> FileDescriptor {
        let components = relative.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        guard let last = components.last, !components.contains("..") else { throw Errno(EXDEV) }
        var current = directory
        defer { if current != directory { current.close() } }
        for component in components.dropLast() {
            let next: FileDescriptor
            do {
                next = try FileDescriptor.open(component, relativeTo: current, flags: vb_o_path() | O_DIRECTORY | O_NOFOLLOW)
            } catch {
                // A symlink opened O_PATH | O_NOFOLLOW | O_DIRECTORY fails ENOTDIR.
                throw error.rawValue == ENOTDIR && isSymlink(current, component) ? Errno(ELOOP) : error
            }
            if current != directory { current.close() }
            current = next
        }
        let fd = try FileDescriptor.open(last, relativeTo: current, flags: flags | O_NOFOLLOW)
        // With O_PATH, O_NOFOLLOW opens a final symlink itself (open(2)).
        if let st = try? fd.stat(), st.st_mode & S_IFMT == S_IFLNK {
            fd.close()
            throw Errno(ELOOP)
        }
        return fd
    }

    private static func isSymlink(_ directory: FileDescriptor, _ name: String) -> Bool {
        guard let st = try? directory.stat(name, flags: AT_SYMLINK_NOFOLLOW) else { return false }
        return st.st_mode & S_IFMT == S_IFLNK
    }
}
