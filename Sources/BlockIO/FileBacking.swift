import Glibc
import Posix
import Synchronization
internal import CShims

/// An open regular file or block device behind a bdev (`bdev_uring_*`, `bdev_aio_*`).
///
/// Owns `fd`: opened by `open`, closed once by `close` (or deinit).
///
/// `@unchecked Sendable`: `fd`, `path`, `blockSize`, `isDirect` and
/// `isBlockDevice` are immutable; the size is an atomic (written by
/// `refreshSize` on the RPC thread, read by reactors); `close` is once-only.
public final class FileBacking: @unchecked Sendable {
    public let path: String
    public let fd: FileDescriptor
    public let isBlockDevice: Bool
    /// Opened with O_DIRECT (buffers must then be aligned to `memoryAlignment`,
    /// offsets and lengths to `blockSize`).
    public let isDirect: Bool
    public let blockSize: UInt32
    /// Alignment O_DIRECT needs for buffer addresses (1 when buffered).
    public let memoryAlignment: Int
    /// Size in bytes (the bdev has `sizeBytes / blockSize` blocks).
    public var sizeBytes: UInt64 { size.load(ordering: .acquiring) }
    public let isReadOnly: Bool
    /// A regular file on tmpfs or ramfs: its reads and writes are copies to
    /// and from the page cache that never wait for a device, and io_uring
    /// cannot do them without blocking, so it hands each one to a worker
    /// thread (io-wq), which costs more than the copy.
    public let isOnMemoryFilesystem: Bool
    /// What DISCARD and WRITE_ZEROES can do here, learned at open (`DiscardSupport`).
    public let discardSupport: DiscardSupport

    private let size: Atomic<UInt64>
    private let closed = Atomic<Bool>(false)

    private init(path: String, fd: FileDescriptor, isBlockDevice: Bool, isDirect: Bool, blockSize: UInt32,
                 memoryAlignment: Int, sizeBytes: UInt64, isReadOnly: Bool, isOnMemoryFilesystem: Bool = false,
                 discardSupport: DiscardSupport = .full) {
        self.path = path
        self.fd = fd
        self.isBlockDevice = isBlockDevice
        self.isDirect = isDirect
        self.blockSize = blockSize
        self.memoryAlignment = memoryAlignment
        self.size = Atomic(sizeBytes)
        self.isReadOnly = isReadOnly
        self.isOnMemoryFilesystem = isOnMemoryFilesystem
        self.discardSupport = discardSupport
    }

    deinit { close() }

    /// Opens the backing's path with open(2) `flags`: a descriptor, or why not.
    /// `BackingPathPolicy` passes one that opens beneath an allowed directory.
    public typealias Opener = (_ flags: Int32) throws(BdevOpenError) -> FileDescriptor

    /// Opens a regular file or a block device, read-write or read-only.
    ///
    /// Regular files: O_DIRECT when the filesystem accepts it for `blockSize`
    /// (checked with one aligned read), else buffered. Block devices: always
    /// O_DIRECT; size from BLKGETSIZE64, logical block size from BLKSSZGET.
    /// `blockSize` nil → the device's logical block size (block device) or 512
    /// (file); given → a power of two in 512...65536, at least the device's
    /// logical block size. Refuses directories, character devices, FIFOs,
    /// sockets, empty files and sizes that are not a multiple of the block size.
    ///
    /// `opener` does every open (default: open(2) of `path`). The file is
    /// first looked at through an O_PATH descriptor, which opens nothing
    /// (open(2): no FIFO wait, no device open routine); each descriptor opened
    /// for I/O must then be that same inode (st_dev, st_ino), so a path
    /// swapped in between is refused, never used.
    public static func open(path: String, readOnly: Bool, blockSize: UInt32?, opener: Opener? = nil) throws(BdevOpenError) -> FileBacking {
        if let blockSize, blockSize < 512 || blockSize > 65536 || blockSize & (blockSize - 1) != 0 {
            throw .invalid("Invalid block size \(blockSize): must be a power of two from 512 to 65536")
        }
        let open: Opener
        if let opener { open = opener } else { open = plainOpener(path) }
        let probe = try open(vb_o_path() | O_CLOEXEC)
        let st: stat
        do throws(Errno) {
            st = try probe.stat()
            probe.close()
        } catch {
            probe.close()
            throw .system(error.rawValue, path)
        }
        let kind = st.st_mode & S_IFMT
        if kind == S_IFDIR { throw .system(EISDIR, path) }
        guard kind == S_IFREG || kind == S_IFBLK else {
            throw .invalid("Not a regular file or block device: \(path)")
        }
        let opening = Opening(path: path, open: open, kind: kind, device: st.st_dev, inode: st.st_ino,
                              flags: (readOnly ? O_RDONLY : O_RDWR) | O_CLOEXEC)
        if kind == S_IFBLK {
            return try openBlockDevice(opening, blockSize: blockSize, readOnly: readOnly)
        }
        return try openRegularFile(opening, blockSize: blockSize ?? 512, readOnly: readOnly)
    }

    /// open(2) of `path`.
    private static func plainOpener(_ path: String) -> Opener {
        return { flags throws(BdevOpenError) -> FileDescriptor in
            do throws(Errno) {
                return try FileDescriptor.open(path, flags: flags)
            } catch {
                throw .system(error.rawValue, path)
            }
        }
    }

    /// The open in progress: how to open, and which inode the opens must reach.
    private struct Opening {
        let path: String
        let open: Opener
        let kind: mode_t
        let device: dev_t
        let inode: ino_t
        let flags: Int32

        /// Opens for I/O with `extra` flags and checks it is the inode the
        /// probe saw. O_NONBLOCK makes the open itself return at once even
        /// if a FIFO was swapped in (open(2)); it is cleared before any I/O
        /// (io_uring would return EAGAIN for a non-blocking file). O_NOCTTY:
        /// a terminal swapped in never becomes the controlling one. Returns
        /// the descriptor and its stat, or -errno when the open itself failed.
        func openChecked(_ extra: Int32 = 0) throws(BdevOpenError) -> (fd: FileDescriptor, stat: stat) {
            let fd = try open(flags | extra | O_NONBLOCK | O_NOCTTY)
            let st: stat
            do throws(Errno) {
                st = try fd.stat()
            } catch {
                fd.close()
                throw .system(error.rawValue, path)
            }
            guard st.st_mode & S_IFMT == kind, st.st_dev == device, st.st_ino == inode else {
                fd.close()
                throw BdevOpenError(errno: EAGAIN, message: "\(String(cString: strerror(EAGAIN))): \(path) was replaced while it was being opened; retry")
            }
            do throws(Errno) {
                try fd.setBlocking()
            } catch {
                fd.close()
                throw .system(error.rawValue, path)
            }
            return (fd, st)
        }
    }

    private static func openBlockDevice(_ opening: Opening, blockSize: UInt32?, readOnly: Bool) throws(BdevOpenError) -> FileBacking {
        let path = opening.path
        let opened = try opening.openChecked(vb_o_direct())
        let fd = opened.fd
        let bytes: UInt64
        let logical: Int32
        do throws(Errno) {
            bytes = try fd.blockDeviceSize()
            logical = try fd.logicalBlockSize()
        } catch {
            fd.close()
            throw .system(error.rawValue, path)
        }
        let deviceBlock = UInt32(clamping: max(logical, 512))
        let chosen = blockSize ?? deviceBlock
        do throws(BdevOpenError) {
            if chosen < deviceBlock {
                throw .invalid("Block size \(chosen) is smaller than the logical block size \(deviceBlock) of \(path)")
            }
            try checkSize(bytes, blockSize: chosen, path: path)
        } catch {
            fd.close()
            throw error
        }
        return FileBacking(path: path, fd: fd, isBlockDevice: true, isDirect: true, blockSize: chosen,
                           memoryAlignment: Int(deviceBlock), sizeBytes: bytes, isReadOnly: readOnly,
                           discardSupport: DiscardSupport.probe(blockDevice: opened.stat.st_rdev))
    }

    private static func openRegularFile(_ opening: Opening, blockSize: UInt32, readOnly: Bool) throws(BdevOpenError) -> FileBacking {
        let path = opening.path
        var opened: (fd: FileDescriptor, stat: stat)
        var direct = true
        do throws(BdevOpenError) {
            opened = try opening.openChecked(vb_o_direct())
        } catch where error.errno == EINVAL {
            // The filesystem refuses O_DIRECT (open(2) EINVAL).
            opened = try opening.openChecked()
            direct = false
        }
        var fd = opened.fd
        let bytes = UInt64(clamping: opened.stat.st_size)
        do throws(BdevOpenError) {
            try checkSize(bytes, blockSize: blockSize, path: path)
        } catch {
            fd.close()
            throw error
        }
        if direct && !directReadWorks(fd: fd, blockSize: blockSize) {
            // The filesystem's direct-I/O alignment is coarser than blockSize.
            fd.close()
            fd = try opening.openChecked().fd
            direct = false
        }
        return FileBacking(path: path, fd: fd, isBlockDevice: false, isDirect: direct, blockSize: blockSize,
                           memoryAlignment: direct ? 512 : 1, sizeBytes: bytes, isReadOnly: readOnly,
                           isOnMemoryFilesystem: isMemoryFilesystem(fd),
                           discardSupport: DiscardSupport.probe(file: fd, sizeBytes: bytes, blockSize: blockSize))
    }

    /// statfs(2) f_type of tmpfs (also shmem behind memfd) and ramfs.
    static let memoryFilesystemTypes: Set<Int> = [0x0102_1994, 0x8584_58f6]

    private static func isMemoryFilesystem(_ fd: FileDescriptor) -> Bool {
        guard let fs = try? fd.fileSystemStatus() else { return false }
        return memoryFilesystemTypes.contains(Int(truncatingIfNeeded: fs.f_type))
    }

    /// One O_DIRECT read of `blockSize` bytes at offset 0 into a 512-aligned buffer.
    private static func directReadWorks(fd: FileDescriptor, blockSize: UInt32) -> Bool {
        var buffer: UnsafeMutableRawPointer?
        guard posix_memalign(&buffer, 512, Int(blockSize)) == 0, let buffer else { return false }
        defer { free(buffer) }
        return (try? fd.pread(into: buffer, length: Int(blockSize), offset: 0)) != nil
    }

    private static func checkSize(_ bytes: UInt64, blockSize: UInt32, path: String) throws(BdevOpenError) {
        if bytes == 0 { throw .invalid("File size is 0: \(path)") }
        if bytes % UInt64(blockSize) != 0 {
            throw .invalid("File size \(bytes) is not a multiple of the block size \(blockSize)")
        }
    }

    /// Re-reads the size (bdev rescan / resize) and stores it in `sizeBytes`.
    /// A size that is not a multiple of the block size is kept as is: the bdev
    /// uses `sizeBytes / blockSize` whole blocks.
    @discardableResult
    public func refreshSize() throws(BdevOpenError) -> UInt64 {
        if closed.load(ordering: .acquiring) { throw .system(EBADF, path) }
        let bytes: UInt64
        if isBlockDevice {
            do throws(Errno) {
                bytes = try fd.blockDeviceSize()
            } catch {
                throw .system(error.rawValue, path)
            }
        } else {
            do throws(Errno) {
                bytes = UInt64(clamping: try fd.stat().st_size)
            } catch {
                throw .system(error.rawValue, path)
            }
        }
        size.store(bytes, ordering: .releasing)
        return bytes
    }

    /// Sets a regular file's length (bdev_resize); block devices refuse:
    /// resize the device, then rescan. Callers shrink only once no request
    /// beyond the new end is in flight.
    public func resize(to newSize: UInt64) throws(BdevOpenError) {
        if closed.load(ordering: .acquiring) { throw .system(EBADF, path) }
        guard !isBlockDevice else {
            throw .invalid("\(path) is a block device: resize the device itself, then rescan the bdev")
        }
        guard !isReadOnly else { throw .invalid("\(path) is open read-only") }
        guard let length = off_t(exactly: newSize), newSize > 0 else { throw .invalid("Invalid size \(newSize)") }
        do throws(Errno) {
            try fd.truncate(to: length)
        } catch {
            throw .system(error.rawValue, path)
        }
        try refreshSize()
    }

    /// Closes the descriptor (once; later calls do nothing). No I/O may be in flight.
    public func close() {
        let (exchanged, _) = closed.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing)
        if exchanged { fd.close() }
    }
}
