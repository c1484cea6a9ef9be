import DaemonTestSupport
import Foundation
import Glibc
import JSONRPC
import Testing
import VhostUserFrontend
import Virtio

/// DISCARD and WRITE_ZEROES are offered only when the bdev can do them
/// (issue 22 item 5; virtio 1.2 §5.2.3-4): the in-repo frontend reads the
/// offered features and the config space's limits. ramfs has no
/// fallocate(2) at all, tmpfs punches holes but cannot zero a range (the
/// daemon then punches), RAM bdevs do both.
@Suite("Discard and write-zeroes advertising", .serialized)
struct DiscardAdvertisingTests {
    typealias D = DataPathTests

    struct Advertised {
        var discard: Bool, writeZeroes: Bool
        var maxDiscardSectors: UInt32?, maxDiscardSeg: UInt32?, discardAlignment: UInt32?
        var maxWriteZeroesSectors: UInt32?, mayUnmap: UInt8?
    }

    /// Connects to `ctrlr` and reads what it offers.
    static func advertised(_ daemon: DaemonProcess, _ ctrlr: String) throws -> Advertised {
        let memory = try FrontendMemory(size: 4 << 20)
        defer { memory.close() }
        let f = try D.attach(daemon, ctrlr, memory: memory, queues: 1)
        defer { f.close() }
        let config = try f.getConfig(size: 60)
        return Advertised(
            discard: f.deviceFeatures.contains(.discard), writeZeroes: f.deviceFeatures.contains(.writeZeroes),
            maxDiscardSectors: D.le(config, at: 36, as: UInt32.self), maxDiscardSeg: D.le(config, at: 40, as: UInt32.self),
            discardAlignment: D.le(config, at: 44, as: UInt32.self),
            maxWriteZeroesSectors: D.le(config, at: 48, as: UInt32.self), mayUnmap: D.le(config, at: 56, as: UInt8.self))
    }

    @Test func offeredOnlyWhereTheBackingCanDoIt() throws {
        let daemon = try DaemonProcess()
        defer { daemon.stop(); daemon.cleanUp() }
        let mountPoint = daemon.directory.appendingPathComponent("ramfs").path
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        let (mounted, output) = try runCommand("/usr/bin/mount", ["-t", "ramfs", "ramfs", mountPoint])
        try #require(mounted == 0, "mount -t ramfs (needs root): \(output)")
        defer { _ = try? runCommand("/usr/bin/umount", ["-l", mountPoint]) }
        let shm = "/dev/shm/vbd-discard-\(getpid()).img"
        defer { unlink(shm) }
        for path in [mountPoint + "/disk.img", shm] {
            #expect(FileManager.default.createFile(atPath: path, contents: nil))
            try runCommand("/usr/bin/truncate", ["-s", "4M", path])
        }

        try D.withLogOnError(daemon) { () throws in
            try daemon.call("bdev_uring_create", ["filename": .string(mountPoint + "/disk.img"), "name": "R0"])
            try daemon.call("bdev_uring_create", ["filename": .string(shm), "name": "T0", "block_size": 4096])
            try daemon.call("bdev_malloc_create", ["name": "M0", "num_blocks": 8192, "block_size": 512])
            try D.createController(daemon, "vhost.ramfs", bdev: "R0")
            try D.createController(daemon, "vhost.tmpfs", bdev: "T0")
            try D.createController(daemon, "vhost.ram", bdev: "M0")

            // ramfs: neither; the limits say 0.
            let ramfs = try Self.advertised(daemon, "vhost.ramfs")
            #expect(!ramfs.discard)
            #expect(!ramfs.writeZeroes)
            #expect(ramfs.maxDiscardSectors == 0)
            #expect(ramfs.maxDiscardSeg == 0)
            #expect(ramfs.maxWriteZeroesSectors == 0)
            #expect(ramfs.mayUnmap == 0)

            // tmpfs: both (write-zeroes by punching), aligned to the 4 KiB blocks.
            let tmpfs = try Self.advertised(daemon, "vhost.tmpfs")
            #expect(tmpfs.discard)
            #expect(tmpfs.writeZeroes)
            #expect(tmpfs.maxDiscardSectors == 1 << 22)
            #expect(tmpfs.maxDiscardSeg == 1)
            #expect(tmpfs.discardAlignment == 8)
            #expect(tmpfs.maxWriteZeroesSectors == 1 << 22)
            #expect(tmpfs.mayUnmap == 1)

            // RAM: both.
            let ram = try Self.advertised(daemon, "vhost.ram")
            #expect(ram.discard && ram.writeZeroes)
            #expect(ram.maxDiscardSectors == 1 << 22)
            #expect(ram.discardAlignment == 1)
        }
        #expect(daemon.isRunning)
    }
}
