import DaemonTestSupport
import Foundation
import JSONRPC
import Testing

/// `vhost-blkctl` against the running daemon, with rpc.py's argument forms.
@Suite("vhost-blkctl against the running daemon")
struct CLITests {
    /// `--offset`/`--limit` page the full listings (vhost-blkd's extension);
    /// negative values are refused before any call.
    @Test func listingsArePaged() throws {
        let daemon = try DaemonProcess()
        defer { daemon.stop(); daemon.cleanUp() }
        func ctl(_ args: String...) throws -> (status: Int32, output: String) {
            try runCommand(DaemonProcess.ctlPath, ["-s", daemon.rpcSocket] + args)
        }
        for i in 0..<5 {
            try daemon.call("bdev_null_create", ["name": .string("N\(i)"), "num_blocks": 64, "block_size": 512])
            try daemon.call("vhost_create_blk_controller", ["ctrlr": .string("c\(i)"), "dev_name": .string("N\(i)")])
        }
        func names(_ output: String, key: String) throws -> [String] {
            try JSON.parse(Array(output.utf8)).arrayValue?.compactMap { $0[key]?.stringValue } ?? []
        }
        let bdevs = try ctl("bdev_get_bdevs", "--offset", "1", "--limit", "2")
        #expect(bdevs.status == 0, "\(bdevs.output)")
        #expect(try names(bdevs.output, key: "name") == ["N1", "N2"])
        let controllers = try ctl("vhost_get_controllers", "--offset", "3")
        #expect(controllers.status == 0, "\(controllers.output)")
        #expect(try names(controllers.output, key: "ctrlr") == ["c3", "c4"])
        let negative = try ctl("vhost_get_controllers", "--limit=-1")
        #expect(negative.status != 0 && negative.output.contains("must not be negative"), "\(negative.output)")
    }

    @Test func subcommandsWithRPCPyForms() throws {
        let daemon = try DaemonProcess()
        defer { daemon.stop(); daemon.cleanUp() }
        func ctl(_ args: String...) throws -> (status: Int32, output: String) {
            try runCommand(DaemonProcess.ctlPath, ["-s", daemon.rpcSocket] + args)
        }
        let image = daemon.directory.appendingPathComponent("disk.img").path
        try runCommand("/usr/bin/truncate", ["-s", "4M", image])

        #expect(try ctl("bdev_malloc_create", "16", "512", "-b", "M0") == (0, "M0\n"))
        #expect(try ctl("bdev_null_create", "N0", "8", "4096") == (0, "N0\n"))
        #expect(try ctl("bdev_uring_create", image, "U0") == (0, "U0\n"))
        #expect(try ctl("vhost_create_blk_controller", "vhost.0", "M0", "--cpumask", "0x1").status == 0)
        #expect(try ctl("vhost_create_blk_controller", "vhost.1", "U0", "-r").status == 0)

        let bdevs = try JSON.parse(try ctl("bdev_get_bdevs", "-b", "M0").output)
        #expect(bdevs.arrayValue?.first?["num_blocks"] == .int(32768))
        let controllers = try JSON.parse(try ctl("vhost_get_controllers", "-n", "vhost.1").output)
        #expect(controllers.arrayValue?.first?["backend_specific"]?["block"]?["readonly"] == .bool(true))
        #expect(controllers.arrayValue?.first?["backend_specific"]?["block"]?["write_cache"] == .bool(true))
        #expect(try ctl("vhost_create_blk_controller", "vhost.2", "N0", "--no-write-cache").status == 0)
        let writeThrough = try JSON.parse(try ctl("vhost_get_controllers", "-n", "vhost.2").output)
        #expect(writeThrough.arrayValue?.first?["backend_specific"]?["block"]?["write_cache"] == .bool(false))
        #expect(try ctl("vhost_delete_controller", "vhost.2").status == 0)

        // Interrupt coalescing, rpc.py's positional form.
        #expect(try ctl("vhost_controller_set_coalescing", "vhost.0", "80", "60000") == (0, ""))
        let coalescing = try JSON.parse(try ctl("vhost_get_controllers", "-n", "vhost.0").output).arrayValue?.first
        #expect(coalescing?["delay_base_us"] == .int(80))
        #expect(coalescing?["iops_threshold"] == .int(60000))
        let tooLow = try ctl("vhost_controller_set_coalescing", "vhost.0", "80", "99")
        #expect(tooLow.status == 1 && tooLow.output.contains("-32602") && tooLow.output.contains("Invalid argument"))
        #expect(try ctl("vhost_controller_set_coalescing", "vhost.0", "-1", "60000").status == 64)

        // Errors: exit 1 with the JSON-RPC error, like rpc.py.
        let busy = try ctl("bdev_malloc_delete", "M0")
        #expect(busy.status == 1)
        #expect(busy.output.contains("-16") && busy.output.contains("Device or resource busy"))
        let missing = try ctl("bdev_uring_create", daemon.directory.appendingPathComponent("nope").path, "X")
        #expect(missing.status == 1 && missing.output.contains("No such file or directory"))
        // Bad arguments: a usage error, nothing sent.
        #expect(try ctl("bdev_malloc_create", "many", "512").status == 64)
        // No daemon at that socket.
        let nowhere = try runCommand(DaemonProcess.ctlPath, ["-s", daemon.directory.appendingPathComponent("none.sock").path, "spdk_get_version"])
        #expect(nowhere.status == 1)

        #expect(try ctl("vhost_delete_controller", "vhost.0").status == 0)
        #expect(try ctl("vhost_delete_controller", "vhost.1").status == 0)
        for (method, name) in [("bdev_malloc_delete", "M0"), ("bdev_null_delete", "N0"), ("bdev_uring_delete", "U0")] {
            #expect(try ctl(method, name).status == 0)
        }
        #expect(try JSON.parse(try ctl("bdev_get_bdevs").output).arrayValue?.isEmpty == true)
    }

    /// `--version` of the three binaries and spdk_get_version report the same build
    /// (scripts/version.sh's text, compiled in from $VHOST_BLKD_VERSION), in
    /// SPDK's reply shape; with VHOST_BLKD_EXPECT_VERSION set, that text.
    @Test func versionsAgree() throws {
        let daemonVersion = try ExamplesSupport.run(DaemonProcess.daemonPath, ["--version"])
        let ctlVersion = try ExamplesSupport.run(DaemonProcess.ctlPath, ["--version"])
        let benchVersion = try ExamplesSupport.run(
            DaemonProcess.binaryDirectory.appendingPathComponent("vhost-blk-bench").path, ["--version"])
        #expect(daemonVersion.status == 0 && ctlVersion.status == 0 && benchVersion.status == 0)
        let text = daemonVersion.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(!text.isEmpty)
        #expect(ctlVersion.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == text)
        #expect(benchVersion.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == text)
        if let expected = ProcessInfo.processInfo.environment["VHOST_BLKD_EXPECT_VERSION"] {
            #expect(text == expected)
        }
        let daemon = try DaemonProcess()
        defer { daemon.stop(); daemon.cleanUp() }
        let reply = try daemon.call("spdk_get_version")
        #expect(reply["version"] == .string("vhost-blkd v\(text)"))
        let fields = try #require(reply["fields"])
        let numbers = (text.split(separator: "-", maxSplits: 1).first ?? "").split(separator: ".").compactMap { Int64($0) }
        #expect(numbers.count == 3)
        #expect([fields["major"], fields["minor"], fields["patch"]] == numbers.map { JSON.int($0) })
        #expect(fields["suffix"]?.stringValue.map { text.hasSuffix($0) } == true)
    }
}
