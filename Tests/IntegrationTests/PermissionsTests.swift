import DaemonTestSupport
import Foundation
import JSONRPC
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Who may do what (issue 5 part 5): socket modes and groups, and which
/// files a bdev may open.
@Suite("Permissions")
struct PermissionsTests {
    static func mode(_ path: String) -> mode_t? {
        var st = stat()
        return lstat(path, &st) == 0 ? st.st_mode & 0o7777 : nil
    }

    static func group(_ path: String) -> gid_t? {
        var st = stat()
        return lstat(path, &st) == 0 ? st.st_gid : nil
    }

    /// A group this process may give files to: an unused gid when root, else its primary group.
    static var otherGroup: gid_t { getuid() == 0 ? 54321 : getgid() }

    /// The name of this process's primary group.
    static var primaryGroupName: String? {
        guard let entry = getgrgid(getgid()) else { return nil }
        return String(cString: entry.pointee.gr_name)
    }


    static func makeFile(_ path: String, size: UInt64 = 1 << 20) throws {
        #expect(FileManager.default.createFile(atPath: path, contents: nil))
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        try handle.truncate(atOffset: size)
    }

    @Test func socketsDefaultTo0600() throws {
        let daemon = try DaemonProcess()
        defer { daemon.stop(); daemon.cleanUp() }
        #expect(Self.mode(daemon.rpcSocket) == 0o600)
        #expect(Self.group(daemon.rpcSocket) == getegid())
        try daemon.call("bdev_null_create", ["name": "N0", "num_blocks": 64, "block_size": 512])
        try daemon.call("vhost_create_blk_controller", ["ctrlr": "vhost.0", "dev_name": "N0"])
        #expect(Self.mode(daemon.socketDirectory + "/vhost.0") == 0o600)
    }

    @Test func rpcSocketModeAndGroup() throws {
        let group = Self.otherGroup
        let daemon = try DaemonProcess(extraArguments: ["--rpc-socket-mode", "0660", "--rpc-socket-group", String(group)])
        defer { daemon.stop(); daemon.cleanUp() }
        #expect(Self.mode(daemon.rpcSocket) == 0o660)
        #expect(Self.group(daemon.rpcSocket) == group)

        if let name = Self.primaryGroupName {
            let named = try DaemonProcess(extraArguments: ["--rpc-socket-mode", "0640", "--rpc-socket-group", name])
            defer { named.stop(); named.cleanUp() }
            #expect(Self.mode(named.rpcSocket) == 0o640)
            #expect(Self.group(named.rpcSocket) == getgid())
        }

        // Bad values are usage errors; nothing is created.
        let dir = daemon.directory.path
        for arguments in [["--rpc-socket-mode", "0999"], ["--rpc-socket-mode", "01777"], ["--rpc-socket-group", "no-such-group-vbd"]] {
            let result = try runCommand(DaemonProcess.daemonPath, ["-r", dir + "/bad.sock", "-S", dir + "/bad"] + arguments)
            #expect(result.status != 0, "\(arguments)")
            #expect(!FileManager.default.fileExists(atPath: dir + "/bad.sock"))
        }
    }

    @Test func controllerSocketModeAndGroup() throws {
        let daemon = try DaemonProcess()
        defer { daemon.stop(); daemon.cleanUp() }
        let group = Self.otherGroup
        for name in ["N0", "N1", "N2", "N3"] {
            try daemon.call("bdev_null_create", ["name": .string(name), "num_blocks": 64, "block_size": 512])
        }
        try daemon.call("vhost_create_blk_controller", [
            "ctrlr": "vhost.0", "dev_name": "N0", "socket_mode": "0660", "socket_group": .int(Int64(group)),
        ])
        let socket0 = daemon.socketDirectory + "/vhost.0"
        #expect(Self.mode(socket0) == 0o660)
        #expect(Self.group(socket0) == group)
        // An integer mode is the mode's value (0o666 = 438).
        try daemon.call("vhost_create_blk_controller", ["ctrlr": "vhost.1", "dev_name": "N1", "socket_mode": 438])
        #expect(Self.mode(daemon.socketDirectory + "/vhost.1") == 0o666)
        if let name = Self.primaryGroupName {
            try daemon.call("vhost_create_blk_controller", ["ctrlr": "vhost.2", "dev_name": "N2", "socket_group": .string(name)])
            #expect(Self.group(daemon.socketDirectory + "/vhost.2") == getgid())
            #expect(Self.mode(daemon.socketDirectory + "/vhost.2") == 0o600)
        }
        // Refused: bad modes, unknown groups; no socket is left and the bdev stays free.
        for params: JSON in [
            ["ctrlr": "vhost.3", "dev_name": "N3", "socket_mode": "0999"],
            ["ctrlr": "vhost.3", "dev_name": "N3", "socket_mode": 660],
            ["ctrlr": "vhost.3", "dev_name": "N3", "socket_mode": "04755"],
            ["ctrlr": "vhost.3", "dev_name": "N3", "socket_group": "no-such-group-vbd"],
        ] {
            expectRPCError(-32602) { try daemon.call("vhost_create_blk_controller", params) }
            #expect(!FileManager.default.fileExists(atPath: daemon.socketDirectory + "/vhost.3"))
        }
        #expect(try daemon.call("bdev_get_bdevs", ["name": "N3"]).arrayValue?.first?["claimed"] == false)
        // The permissions are part of the saved config.
        let config = try daemon.call("framework_get_config", ["name": "vhost_blk"]).arrayValue ?? []
        #expect(config.first?["params"]?["socket_mode"] == "0660")
        #expect(config.first?["params"]?["socket_group"] == .int(Int64(group)))
    }

    @Test func bdevPathsAreChecked() throws {
        let daemon = try DaemonProcess()
        defer { daemon.stop(); daemon.cleanUp() }
        let image = daemon.directory.appendingPathComponent("ok.img").path
        try Self.makeFile(image)
        for method in ["bdev_uring_create", "bdev_aio_create"] {
            var message = expectRPCError(-22) { try daemon.call(method, ["name": "X", "filename": "ok.img"]) }
            #expect(message.contains("relative path"))
            message = expectRPCError(-21) { try daemon.call(method, ["name": "X", "filename": .string(daemon.directory.path)]) }
            #expect(message.contains("is a directory"))
            message = expectRPCError(-22) { try daemon.call(method, ["name": "X", "filename": "/dev/null"]) }
            #expect(message.contains("character device"))
            expectRPCError(-2) { try daemon.call(method, ["name": "X", "filename": "/nonexistent/vbd.img"]) }
        }
        // Without --allowed-dir any absolute path to a file works.
        #expect(try daemon.call("bdev_uring_create", ["name": "U0", "filename": .string(image)]) == "U0")
        #expect(try daemon.call("bdev_get_bdevs").arrayValue?.count == 1)
    }

    @Test func allowedDirectories() throws {
        let base = URL(fileURLWithPath: "/tmp").appendingPathComponent("vbd-\(UUID().uuidString.prefix(8))")
        let allowed = base.appendingPathComponent("images").path
        let outside = base.appendingPathComponent("secret").path
        try FileManager.default.createDirectory(atPath: allowed, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: outside, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: base.appendingPathComponent("more"), withIntermediateDirectories: true)
        try Self.makeFile(allowed + "/vm1.img")
        try Self.makeFile(outside + "/other.img")
        try FileManager.default.createSymbolicLink(atPath: allowed + "/escape.img", withDestinationPath: outside + "/other.img")
        try FileManager.default.createSymbolicLink(atPath: allowed + "/alias.img", withDestinationPath: allowed + "/vm1.img")
        try FileManager.default.createSymbolicLink(atPath: base.appendingPathComponent("link-to-images").path, withDestinationPath: allowed)

        let daemon = try DaemonProcess(extraArguments: ["--allowed-dir", allowed, "--allowed-dir", base.appendingPathComponent("more").path], directory: base)
        defer { daemon.stop(); daemon.cleanUp() }
        for (method, name) in [("bdev_uring_create", "U"), ("bdev_aio_create", "A")] {
            for escape in [outside + "/other.img", allowed + "/escape.img", allowed + "/../secret/other.img", "/etc/passwd"] {
                let message = expectRPCError(-1) { try daemon.call(method, ["name": "X", "filename": .string(escape)]) }
                #expect(message.contains("outside the allowed directories"), "\(escape): \(message)")
            }
            expectRPCError(-22) { try daemon.call(method, ["name": "X", "filename": "images/vm1.img"]) }
            expectRPCError(-21) { try daemon.call(method, ["name": "X", "filename": .string(allowed)]) }
            expectRPCError(-22) { try daemon.call(method, ["name": "X", "filename": "/dev/null"]) }
            // Inside, directly, through a symlink inside, or through a symlinked parent.
            #expect(try daemon.call(method, ["name": .string(name + "0"), "filename": .string(allowed + "/vm1.img")]) == .string(name + "0"))
            #expect(try daemon.call(method, ["name": .string(name + "1"), "filename": .string(allowed + "/alias.img")]) == .string(name + "1"))
            let viaLink = base.appendingPathComponent("link-to-images").path + "/vm1.img"
            #expect(try daemon.call(method, ["name": .string(name + "2"), "filename": .string(viaLink)]) == .string(name + "2"))
        }
        #expect(try daemon.call("bdev_get_bdevs").arrayValue?.count == 6)

        // A missing --allowed-dir is a usage error.
        let result = try runCommand(DaemonProcess.daemonPath, [
            "-r", base.path + "/bad.sock", "-S", base.path + "/bad", "--allowed-dir", base.path + "/missing",
        ])
        #expect(result.status != 0)
        #expect(result.output.contains("missing"))
    }
}
