import BlockIO
import DaemonTestSupport
import Glibc
import Posix
import Testing

@Suite("FileBacking")
struct FileBackingTests {
    func openError(_ path: String, readOnly: Bool = false, blockSize: UInt32? = nil) -> BdevOpenError? {
        do {
            let backing = try FileBacking.open(path: path, readOnly: readOnly, blockSize: blockSize)
            backing.close()
            return nil
        } catch {
            return error
        }
    }

    @Test("a missing file is ENOENT with the path")
    func missing() {
        let path = "/var/tmp/blockio-missing-\(getpid())"
        #expect(openError(path) == BdevOpenError(errno: ENOENT, message: "No such file or directory: \(path)"))
    }

    @Test("a directory is EISDIR")
    func directory() {
        #expect(openError("/var/tmp") == BdevOpenError(errno: EISDIR, message: "Is a directory: /var/tmp"))
    }

    @Test("a character device is refused")
    func characterDevice() {
        #expect(openError("/dev/null") == BdevOpenError(errno: EINVAL, message: "Not a regular file or block device: /dev/null"))
    }

    @Test("a FIFO is refused without blocking in open")
    func fifo() {
        let path = "/var/tmp/blockio-fifo-\(getpid())"
        #expect(mkfifo(path, 0o600) == 0)
        defer { unlink(path) }
        #expect(openError(path)?.errno == EINVAL)
    }

    @Test("an opener that reaches another file after the probe is refused (EAGAIN)")
    func swappedBetweenOpens() {
        let first = TempFile(directory: "/var/tmp", size: 65536)
        let second = TempFile(directory: "/var/tmp", size: 65536)
        var calls = 0
        let failure: BdevOpenError?
        do {
            let backing = try FileBacking.open(path: first.path, readOnly: false, blockSize: nil) { flags throws(BdevOpenError) -> FileDescriptor in
                calls += 1
                // The O_PATH probe sees the first file; the open for I/O the second.
                let fd = Glibc.open(calls == 1 ? first.path : second.path, flags)
                if fd < 0 { throw BdevOpenError(errno: errno, message: "open") }
                return FileDescriptor(fd)
            }
            backing.close()
            failure = nil
        } catch {
            failure = error
        }
        #expect(calls == 2)
        #expect(failure?.errno == EAGAIN)
        #expect(failure?.message.contains("replaced while it was being opened") == true)
    }

    @Test("a size that is not a multiple of the block size is refused")
    func oddSize() {
        let file = TempFile(directory: "/var/tmp", size: 1000)
        #expect(openError(file.path) == BdevOpenError(errno: EINVAL, message: "File size 1000 is not a multiple of the block size 512"))
        let big = TempFile(directory: "/var/tmp", size: 8192 + 512)
        #expect(openError(big.path, blockSize: 4096)?.message == "File size 8704 is not a multiple of the block size 4096")
    }

    @Test("an empty file is refused")
    func empty() {
        let file = TempFile(directory: "/var/tmp", size: 0)
        #expect(openError(file.path) == BdevOpenError(errno: EINVAL, message: "File size is 0: \(file.path)"))
    }

    @Test("block sizes must be powers of two from 512", arguments: [0, 256, 1000, 3072, 131072] as [UInt32])
    func badBlockSize(blockSize: UInt32) {
        let file = TempFile(directory: "/var/tmp", size: 1 << 20)
        #expect(openError(file.path, blockSize: blockSize)?.errno == EINVAL)
    }

    @Test("a file under /var/tmp opens O_DIRECT; refreshSize sees growth")
    func directFile() throws {
        let file = TempFile(directory: "/var/tmp", size: 1 << 20)
        let backing = try FileBacking.open(path: file.path, readOnly: false, blockSize: nil)
        defer { backing.close() }
        #expect(backing.isDirect)
        #expect(!backing.isBlockDevice)
        #expect(backing.blockSize == 512)
        #expect(backing.sizeBytes == 1 << 20)
        #expect(backing.memoryAlignment == 512)
        #expect(truncate(file.path, 2 << 20) == 0)
        #expect(try backing.refreshSize() == 2 << 20)
        #expect(backing.sizeBytes == 2 << 20)
        let flags = fcntl(backing.fd.rawValue, F_GETFL)
        #expect(flags & O_DIRECT != 0)
        #expect(flags & O_ACCMODE == O_RDWR)
    }

    @Test("read-only opens O_RDONLY with the requested block size")
    func readOnly() throws {
        let file = TempFile(directory: "/var/tmp", size: 1 << 20)
        let backing = try FileBacking.open(path: file.path, readOnly: true, blockSize: 4096)
        defer { backing.close() }
        #expect(backing.blockSize == 4096)
        #expect(backing.isReadOnly)
        #expect(fcntl(backing.fd.rawValue, F_GETFL) & O_ACCMODE == O_RDONLY)
    }

    /// Linux 6.6+ gives tmpfs O_DIRECT, so the outcome depends on the kernel:
    /// isDirect must match what the filesystem accepts.
    @Test("a tmpfs file opens, O_DIRECT exactly when tmpfs accepts it")
    func tmpfsFile() throws {
        let file = TempFile(directory: "/dev/shm", size: 65536)
        let probe = file.open(O_RDWR | O_DIRECT)
        let tmpfsTakesDirect = probe >= 0
        if probe >= 0 { close(probe) }
        let backing = try FileBacking.open(path: file.path, readOnly: false, blockSize: nil)
        defer { backing.close() }
        #expect(backing.isDirect == tmpfsTakesDirect)
        #expect(backing.sizeBytes == 65536)
    }

    @Test("a filesystem without O_DIRECT (ramfs) opens buffered")
    func bufferedFallback() throws {
        let dir = "/var/tmp/blockio-ramfs-\(getpid())"
        #expect(mkdir(dir, 0o700) == 0)
        defer { rmdir(dir) }
        let tools = try TestPrerequisites.requireTools(["mount", "umount"])
        guard shell("\(tools[0]) -t ramfs ramfs \(dir)").status == 0 else {
            try TestPrerequisites.unavailable("mount -t ramfs failed (needs root)")
        }
        defer { _ = shell("\(tools[1]) \(dir)") }
        let file = TempFile(directory: dir, size: 65536)
        let backing = try FileBacking.open(path: file.path, readOnly: false, blockSize: nil)
        defer { backing.close() }
        #expect(!backing.isDirect)
        #expect(backing.memoryAlignment == 1)
        #expect(fcntl(backing.fd.rawValue, F_GETFL) & O_DIRECT == 0)
        // ramfs has no fallocate(2): neither discard nor write-zeroes (DiscardSupport.probe(file:)).
        #expect(backing.discardSupport == DiscardSupport(maxDiscardBytes: 0, writeZeroes: false))
        #expect(backing.sizeBytes == 65536)  // the probe past the end changed nothing
    }

    @Test("a loop block device: size, logical block size, O_DIRECT I/O", arguments: [512, 4096] as [UInt32])
    func loopDevice(sectorSize: UInt32) throws {
        let file = TempFile(directory: "/var/tmp", size: 16 << 20)
        let losetup = try TestPrerequisites.requireTools(["losetup"])[0]
        let attached = shell("\(losetup) -f --show -b \(sectorSize) \(file.path)")
        guard attached.status == 0, attached.output.hasPrefix("/dev/loop") else {
            try TestPrerequisites.unavailable("losetup -f failed with status \(attached.status) (a loop device needs root)")
        }
        let device = attached.output
        defer { _ = shell("\(losetup) -d \(device)") }

        let backing = try FileBacking.open(path: device, readOnly: false, blockSize: nil)
        defer { backing.close() }
        #expect(backing.isBlockDevice)
        #expect(backing.isDirect)
        #expect(backing.sizeBytes == 16 << 20)
        #expect(backing.blockSize == sectorSize)
        #expect(backing.memoryAlignment == Int(sectorSize))
        #expect(try backing.refreshSize() == 16 << 20)

        // DISCARD as the device's sysfs queue limits say (DiscardSupport.probe(blockDevice:)).
        let queue = "/sys/block/\(device.dropFirst("/dev/".count))/queue/"
        func sysfs(_ name: String) -> UInt64? {
            (try? String(contentsOfFile: queue + name, encoding: .utf8)).flatMap { UInt64($0.filter(\.isNumber)) }
        }
        let discardMax = try #require(sysfs("discard_max_bytes"))
        let zeroesMax = try #require(sysfs("write_zeroes_max_bytes"))
        #expect(backing.discardSupport.maxDiscardBytes == (zeroesMax > 0 ? discardMax : 0))
        #expect(UInt64(backing.discardSupport.discardGranularity) == sysfs("discard_granularity"))
        #expect(backing.discardSupport.writeZeroes)

        if sectorSize > 512 {
            let error = openError(device, blockSize: 512)
            #expect(error?.errno == EINVAL)
            #expect(error?.message == "Block size 512 is smaller than the logical block size \(sectorSize) of \(device)")
        } else {
            let bigger = try FileBacking.open(path: device, readOnly: true, blockSize: 4096)
            #expect(bigger.blockSize == 4096)
            bigger.close()
        }

        // O_DIRECT I/O through io_uring.
        let engine = try URingEngine(entries: 8)
        let out = AlignedBuffer(count: 8192)
        out.fill(pattern: 3)
        let outVecs = IOVecs([out])
        #expect(engine.enqueue(.writev(fd: backing.fd, iovecs: outVecs.pointer, count: 1, offset: 1 << 20), tag: 1))
        #expect(engine.enqueue(.fdatasync(fd: backing.fd), tag: 2))
        #expect(collect(engine, count: 2).results == [1: 8192, 2: 0])
        let back = AlignedBuffer(count: 8192)
        let backVecs = IOVecs([back])
        #expect(engine.enqueue(.readv(fd: backing.fd, iovecs: backVecs.pointer, count: 1, offset: 1 << 20), tag: 3))
        #expect(collect(engine, count: 1).results == [3: 8192])
        #expect(back.bytes == out.bytes)
        withExtendedLifetime((outVecs, backVecs)) {}
    }

    @Test("close is idempotent")
    func closeTwice() throws {
        let file = TempFile(directory: "/var/tmp", size: 4096)
        let backing = try FileBacking.open(path: file.path, readOnly: false, blockSize: nil)
        backing.close()
        backing.close()
        #expect(throws: BdevOpenError.self) { try backing.refreshSize() }
    }
}

@Suite("MemoryBacking")
struct MemoryBackingTests {
    @Test("round trip and zero fill")
    func roundTrip() throws {
        let memory = try MemoryBacking(sizeBytes: 1 << 20)
        defer { memory.release() }
        let out = [AlignedBuffer(count: 1000), AlignedBuffer(count: 3096)]
        out[0].fill(pattern: 1)
        out[1].fill(pattern: 2)
        let outVecs = IOVecs(out)
        #expect(memory.write(from: outVecs.pointer, count: 2, offset: 4096) == 4096)
        let back = [AlignedBuffer(count: 4096), AlignedBuffer(count: 512, fill: 9)]
        let backVecs = IOVecs(back)
        #expect(memory.read(into: backVecs.pointer, count: 2, offset: 4096) == 4608)
        #expect(back[0].bytes == out[0].bytes + out[1].bytes)
        #expect(back[1].bytes.allSatisfy { $0 == 0 })
    }

    @Test("bounds are checked")
    func bounds() throws {
        let memory = try MemoryBacking(sizeBytes: 65536)
        let buffer = AlignedBuffer(count: 4096)
        let vecs = IOVecs([buffer])
        #expect(memory.read(into: vecs.pointer, count: 1, offset: 65536 - 4096) == 4096)
        #expect(memory.read(into: vecs.pointer, count: 1, offset: 65536 - 4095) == -EINVAL)
        #expect(memory.write(from: vecs.pointer, count: 1, offset: 65536) == -EINVAL)
        #expect(memory.write(from: vecs.pointer, count: 1, offset: UInt64.max - 100) == -EINVAL)
        #expect(memory.read(into: vecs.pointer, count: -1, offset: 0) == -EINVAL)
        #expect(memory.discard(offset: 60000, length: 6000) == -EINVAL)
        #expect(memory.discard(offset: UInt64.max, length: 2) == -EINVAL)
        let null = UnsafeMutablePointer<iovec>.allocate(capacity: 1)
        defer { null.deallocate() }
        null.initialize(to: iovec(iov_base: nil, iov_len: 16))
        #expect(memory.read(into: null, count: 1, offset: 0) == -EFAULT)
        memory.release()
        memory.release()
        #expect(memory.read(into: vecs.pointer, count: 1, offset: 0) == -ENXIO)
    }

    @Test("discard zeroes partial and whole pages")
    func discard() throws {
        let memory = try MemoryBacking(sizeBytes: 65536)
        defer { memory.release() }
        memset(memory.base, 0x77, 65536)
        #expect(memory.discard(offset: 1000, length: 20000) == 0)
        let bytes = UnsafeRawBufferPointer(start: memory.base, count: 65536)
        #expect(bytes[0..<1000].allSatisfy { $0 == 0x77 })
        #expect(bytes[1000..<21000].allSatisfy { $0 == 0 })
        #expect(bytes[21000...].allSatisfy { $0 == 0x77 })
        #expect(memory.discard(offset: 30000, length: 10) == 0)
        #expect(bytes[30000..<30010].allSatisfy { $0 == 0 })
        #expect(bytes[30010] == 0x77)
    }

    @Test("a zero size is refused")
    func zeroSize() {
        #expect(throws: BdevOpenError.self) { try MemoryBacking(sizeBytes: 0) }
    }
}
