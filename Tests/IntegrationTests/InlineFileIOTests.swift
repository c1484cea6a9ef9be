import DaemonTestSupport
import Foundation
import JSONRPC
import Testing

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

    @Test func unknownValueIsAUsageError() throws {
        let (status, output) = try runCommand(DaemonProcess.daemonPath, ["--tmpfs-io", "mmap", "-r", "/nonexistent/rpc.sock"])
        #expect(status == 64, "\(output)")
        #expect(output.contains("unknown --tmpfs-io 'mmap' (inline or engine)"), "\(output)")
    }
}
