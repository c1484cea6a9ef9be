import DaemonTestSupport
import Foundation
import JSONRPC
import Testing
import VhostUser
import VhostUserFrontend
import Virtio

/// Files on tmpfs are served inline (syscalls on the reactor) unless
/// `--tmpfs-io engine`; DataPathTests' `tmpfs` backend checks the I/O itself.
@Suite("Inline I/O for files on tmpfs")
struct InlineFileIOTests {
    /// `inline_io` of bdev `name` (a `uring` bdev) in `bdev_get_bdevs`.
    static func inlineIO(_ daemon: DaemonProcess, _ name: String) throws -> JSON? {
        try daemon.call("bdev_get_bdevs", ["name": .string(name)]).arrayValue?.first?["driver_specific"]?["uring"]?["inline_io"]
    }

    /// A 1 MiB file on tmpfs, unlinked once the daemon opened it.
    static func withTmpfsFile(_ daemon: DaemonProcess, _ body: (String) throws -> Void) throws {
        let path = "/dev/shm/vbd-\(daemon.directory.lastPathComponent)-inline.img"
        try runCommand("/usr/bin/truncate", ["-s", "1M", path])
        defer { try? FileManager.default.removeItem(atPath: path) }
        try body(path)
    }

    @Test func choiceFollowsTheFilesystemAndTheOption() throws {
        let daemon = try DaemonProcess(cpumask: "0x1")
        defer { daemon.stop(); daemon.cleanUp() }
        try Self.withTmpfsFile(daemon) { path in
            try daemon.call("bdev_uring_create", ["filename": .string(path), "name": "T0"])
            try daemon.call("bdev_aio_create", ["filename": .string(path), "name": "A0"])
        }
        let rootFile = daemon.directory.appendingPathComponent("root.img").path
        try runCommand("/usr/bin/truncate", ["-s", "1M", rootFile])
        try daemon.call("bdev_uring_create", ["filename": .string(rootFile), "name": "R0"])

        #expect(try Self.inlineIO(daemon, "T0") == .bool(true))
        #expect(try Self.inlineIO(daemon, "R0") == .bool(false), "the root filesystem is not tmpfs")
        let aio = try daemon.call("bdev_get_bdevs", ["name": "A0"]).arrayValue?.first?["driver_specific"]?["aio"]?["inline_io"]
        #expect(aio == .bool(false), "bdev_aio keeps its thread-pool engine")
        #expect(daemon.log.contains("io=inline (tmpfs)"), "\(daemon.log.suffix(2000))")

        let engine = try DaemonProcess(cpumask: "0x1", extraArguments: ["--tmpfs-io", "engine"])
        defer { engine.stop(); engine.cleanUp() }
        try Self.withTmpfsFile(engine) { path in
            try engine.call("bdev_uring_create", ["filename": .string(path), "name": "T0"])
        }
        #expect(try Self.inlineIO(engine, "T0") == .bool(false))
    }

    /// A full tmpfs under an inline bdev: writes that need a new page fail
    /// with IOERR (pwritev's ENOSPC), everything else goes on. A memory
    /// mapping of the file would have taken SIGBUS here instead.
    @Test func fullTmpfsFailsWritesNotTheDaemon() throws {
        let daemon = try DaemonProcess(cpumask: "0x1")
        defer { daemon.stop(); daemon.cleanUp() }
        let mountPoint = daemon.directory.appendingPathComponent("small").path
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        let (mounted, output) = try runCommand("/usr/bin/mount", ["-t", "tmpfs", "-o", "size=64k", "tmpfs", mountPoint])
        try #require(mounted == 0, "mount tmpfs (needs root): \(output)")
        defer { _ = try? runCommand("/usr/bin/umount", ["-l", mountPoint]) }
        let image = mountPoint + "/disk.img"
        try runCommand("/usr/bin/truncate", ["-s", "1M", image])
        try daemon.call("bdev_uring_create", ["filename": .string(image), "name": "T0"])
        #expect(try Self.inlineIO(daemon, "T0") == .bool(true))
        try daemon.call("vhost_create_blk_controller", ["ctrlr": "vhost.0", "dev_name": "T0"])
        let memory = try FrontendMemory(size: 16 << 20)
        defer { memory.close() }
        let f = try DataPathTests.attach(daemon, "vhost.0", memory: memory)
        defer { f.close() }

        // 64 KiB of tmpfs, a 1 MiB disk: 4 KiB writes fill it, then fail.
        var statuses: [UInt8] = []
        for page in 0..<32 {
            let data = DataPathTests.pattern(4096, seed: page)
            statuses.append(try f.write(sector: UInt64(page * 8), data: data).status)
        }
        let firstFailure = try #require(statuses.firstIndex(of: BlkWire.statusIOErr), "\(statuses)")
        #expect(firstFailure >= 8, "\(statuses)")
        #expect(statuses.allSatisfy { $0 == BlkWire.statusOK || $0 == BlkWire.statusIOErr }, "\(statuses)")
        // What was written reads back; a never-written page reads as zeroes.
        let back = try f.read(sector: 0, count: 8)
        #expect(back.status == BlkWire.statusOK)
        #expect(back.data == DataPathTests.pattern(4096, seed: 0))
        let hole = try f.read(sector: 2040, count: 8)
        #expect(hole.status == BlkWire.statusOK)
        #expect(hole.data == [UInt8](repeating: 0, count: 4096))
        #expect(try f.flush().status == BlkWire.statusOK)
        #expect(daemon.isRunning)
        f.close()
        #expect(daemon.stop() == 0)
    }

    @Test func unknownValueIsAUsageError() throws {
        let (status, output) = try runCommand(DaemonProcess.daemonPath, ["--tmpfs-io", "mmap", "-r", "/nonexistent/rpc.sock"])
        #expect(status == 64, "\(output)")
        #expect(output.contains("unknown --tmpfs-io 'mmap' (inline or engine)"), "\(output)")
    }
}

/// Requests served inline copy at most 64 KiB per reactor iteration
/// (`LargeCopies`): larger ones, up to the advertised 16 MiB, are copied a
/// chunk at a time between the other queues' turns. The data must be the
/// same, whatever the chunk boundaries and the iovec layout.
@Suite("Large requests on inline backends")
struct LargeInlineRequestTests {
    @Test(arguments: [DataPathTests.Backend.malloc, .tmpfs], [DataPathTests.Engine.ioUring, .threadPool])
    func largeCopiesAreChunkedAndKeepTheData(backend: DataPathTests.Backend, engine: DataPathTests.Engine) throws {
        let daemon = try DataPathTests.startDaemon(engine)
        defer { daemon.stop(); daemon.cleanUp() }
        try DataPathTests.createBdev(daemon, backend, name: "D0", sectors: 65536)
        try DataPathTests.createController(daemon, "vhost.0", bdev: "D0")
        let memory = try FrontendMemory(size: 48 << 20)
        defer { memory.close() }
        let f = try DataPathTests.attach(daemon, "vhost.0", memory: memory, queues: 1)
        defer { f.close() }
        for (sector, bytes) in [(UInt64(0), 64 << 10), (128, (64 << 10) + 512), (4096, 1 << 20), (16384, 4 << 20)] {
            let data = DataPathTests.pattern(bytes, seed: Int(sector))
            #expect(try f.write(sector: sector, data: data).status == BlkWire.statusOK, "\(bytes) bytes")
            let back = try f.read(sector: sector, count: bytes / 512)
            #expect(back.status == BlkWire.statusOK && back.usedLength == UInt32(bytes + 1))
            #expect(back.data == data, "\(bytes) bytes at sector \(sector)")
        }
        #expect(try DataPathTests.roundTrip(f, sector: 9, seed: 9))
    }
}
