import DaemonTestSupport
import Foundation
import JSONRPC
import Testing

/// The JSON-RPC socket of the real daemon: framing, errors, methods
/// (docs/PROTOCOL-NOTES.md, "The JSON-RPC socket").
@Suite("JSON-RPC against the running daemon")
struct RPCTests {
    @Test func versionMethodsAndSocketMode() throws {
        let daemon = try DaemonProcess()
        defer { daemon.stop(); daemon.cleanUp() }
        let version = try daemon.call("spdk_get_version")
        #expect(version["version"]?.stringValue?.hasPrefix("vhost-blkd") == true)
        #expect(version["fields"]?["major"]?.intValue != nil)
        let methods = try daemon.call("rpc_get_methods")
        let names = Set(methods.arrayValue?.compactMap(\.stringValue) ?? [])
        for m in ["bdev_uring_create", "bdev_aio_create", "bdev_malloc_create", "bdev_null_create", "bdev_get_bdevs",
                  "vhost_create_blk_controller", "vhost_get_controllers", "vhost_delete_controller", "spdk_get_version"] {
            #expect(names.contains(m), "missing \(m)")
        }
        let attributes = try FileManager.default.attributesOfItem(atPath: daemon.rpcSocket)
        #expect((attributes[.posixPermissions] as? NSNumber)?.intValue == 0o600)
    }

    /// `bdev_get_bdevs {name, timeout}` (SPDK's): waits up to `timeout` ms
    /// for the bdev to appear, and other clients are served meanwhile;
    /// without it, or past it, ENODEV.
    @Test func getBdevsWaitsForTheNamedBdevUpToItsTimeout() throws {
        let daemon = try DaemonProcess()
        defer { daemon.stop(); daemon.cleanUp() }
        let path = daemon.rpcSocket
        let waiting = BackgroundCall("bdev_get_bdevs later, 5 s") { () throws -> JSON in
            try RPCClient(path: path, timeout: .seconds(10)).call("bdev_get_bdevs", params: ["name": "later", "timeout": 5000])
        }
        usleep(300_000)
        #expect(waiting.result == nil, "answered before the bdev existed")
        #expect(throws: RPCClientError.self) { try daemon.call("bdev_get_bdevs", ["name": "later"]) }
        try daemon.call("bdev_malloc_create", ["num_blocks": 2048, "block_size": 512, "name": "later"])
        switch waiting.join(timeout: .seconds(2)) {
        case .success(let answer): #expect(answer.arrayValue?.first?["name"] == "later", "\(answer)")
        case .failure(let error): Issue.record("bdev_get_bdevs with a timeout failed: \(error)")
        case nil: Issue.record("bdev_get_bdevs with a timeout did not answer once the bdev existed")
        }
        let start = ContinuousClock.now
        #expect(throws: RPCClientError.self) { try daemon.call("bdev_get_bdevs", ["name": "never", "timeout": 300]) }
        #expect(ContinuousClock.now - start >= .milliseconds(300))
    }

    @Test func secondDaemonOnSameSocketRefuses() throws {
        let daemon = try DaemonProcess()
        defer { daemon.stop(); daemon.cleanUp() }
        let (status, output) = try runCommand(DaemonProcess.daemonPath, ["-r", daemon.rpcSocket, "-S", daemon.socketDirectory, "-m", "0x1"])
        #expect(status != 0)
        #expect(output.contains("another vhost-blkd"))
        // The first one still answers.
        #expect(try daemon.call("spdk_get_version")["version"] != nil)
    }

    @Test func sigtermExitsZeroAndRemovesSockets() throws {
        let daemon = try DaemonProcess()
        defer { daemon.cleanUp() }
        try daemon.call("bdev_malloc_create", ["num_blocks": 2048, "block_size": 512, "name": "M0"])
        try daemon.call("vhost_create_blk_controller", ["ctrlr": "vhost.0", "dev_name": "M0"])
        let controllerSocket = daemon.socketDirectory + "/vhost.0"
        #expect(FileManager.default.fileExists(atPath: controllerSocket))
        #expect(daemon.stop() == 0)
        #expect(!FileManager.default.fileExists(atPath: daemon.rpcSocket))
        #expect(!FileManager.default.fileExists(atPath: controllerSocket))
    }

    @Test func framingBackToBackPrettyAndNotifications() throws {
        let daemon = try DaemonProcess()
        defer { daemon.stop(); daemon.cleanUp() }
        let client = try daemon.client()
        // Two pretty-printed requests and a notification in one write, no newline at the end.
        let text = """
            {
              "jsonrpc": "2.0",
              "method": "spdk_get_version",
              "id": 1
            }{"jsonrpc":"2.0","method":"bdev_null_create","params":{"name":"N0","num_blocks":8,"block_size":512}}  {
              "jsonrpc": "2.0", "method": "bdev_get_bdevs", "id": "two"}
            """
        try client.sendRaw(Array(text.utf8))
        let first = try client.readResponse()
        #expect(first["id"] == .int(1))
        #expect(first["result"]?["version"] != nil)
        let second = try client.readResponse()
        #expect(second["id"] == .string("two"))
        // The notification created N0 without answering.
        #expect(second["result"]?.arrayValue?.first?["name"] == .string("N0"))
    }

    @Test func malformedJSONGetsParseErrorThenClose() throws {
        let daemon = try DaemonProcess()
        defer { daemon.stop(); daemon.cleanUp() }
        let client = try daemon.client()
        try client.sendRaw(Array("{\"jsonrpc\":\"2.0\",\"method\":]".utf8))
        let response = try client.readResponse()
        #expect(response["error"]?["code"] == .int(-32700))
        #expect(throws: RPCClientError.self) { try client.readResponse() }
        #expect(try daemon.call("spdk_get_version")["version"] != nil)
    }

    @Test func oversizedRequestIsRefusedAndDaemonStaysHealthy() throws {
        let daemon = try DaemonProcess()
        defer { daemon.stop(); daemon.cleanUp() }
        let client = try daemon.client()
        var huge = Array("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"bdev_get_bdevs\",\"params\":{\"name\":\"".utf8)
        huge += [UInt8](repeating: UInt8(ascii: "a"), count: 2 << 20)
        try? client.sendRaw(huge)
        let response = try client.readResponse()
        #expect(response["error"]?["code"]?.intValue != nil)
        #expect(throws: RPCClientError.self) { try client.readResponse() }
        #expect(try daemon.call("spdk_get_version")["version"] != nil)
    }

    @Test func errorsForBadRequests() throws {
        let daemon = try DaemonProcess()
        defer { daemon.stop(); daemon.cleanUp() }
        expectRPCError(-32601) { try daemon.call("no_such_method") }
        let message = expectRPCError(-32602) { try daemon.call("bdev_null_create", ["name": "N", "num_blocks": 8, "block_size": 512, "bogus": 1]) }
        #expect(message.contains("bogus"))
        expectRPCError(-32602) { try daemon.call("bdev_null_create", ["name": "N", "num_blocks": "eight", "block_size": 512]) }
        expectRPCError(-32602) { try daemon.call("bdev_malloc_create", ["block_size": 512]) }
        // Invalid request envelope.
        let client = try daemon.client()
        try client.sendRaw(Array("{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":7}".utf8))
        #expect(try client.readResponse()["error"]?["code"] == .int(-32600))
    }

    @Test func bdevLifecycleAndErrors() throws {
        let daemon = try DaemonProcess()
        defer { daemon.stop(); daemon.cleanUp() }
        let dir = daemon.directory.path
        // Files: missing, a directory, a size not a multiple of the block size, a good one.
        expectRPCError(-2) { try daemon.call("bdev_uring_create", ["filename": .string("\(dir)/missing.img"), "name": "U0"]) }
        expectRPCError(-21) { try daemon.call("bdev_uring_create", ["filename": .string(dir), "name": "U0"]) }
        let odd = "\(dir)/odd.img"
        #expect(FileManager.default.createFile(atPath: odd, contents: Data(count: 1000)))
        let oddMessage = expectRPCError(-22) { try daemon.call("bdev_uring_create", ["filename": .string(odd), "name": "U0"]) }
        #expect(oddMessage.contains("multiple"))
        let image = "\(dir)/disk.img"
        #expect(FileManager.default.createFile(atPath: image, contents: nil))
        try FileHandle(forWritingTo: URL(fileURLWithPath: image)).truncate(atOffset: 8 << 20)
        #expect(try daemon.call("bdev_uring_create", ["filename": .string(image), "name": "U0"]) == .string("U0"))
        #expect(try daemon.call("bdev_aio_create", ["filename": .string(image), "name": "A0", "block_size": 4096]) == .string("A0"))
        expectRPCError(-17) { try daemon.call("bdev_uring_create", ["filename": .string(image), "name": "U0"]) }
        #expect(try daemon.call("bdev_malloc_create", ["num_blocks": 4096, "block_size": 512]) == .string("Malloc0"))
        #expect(try daemon.call("bdev_null_create", ["name": "Null0", "num_blocks": 100, "block_size": 4096]) == .string("Null0"))

        let all = try daemon.call("bdev_get_bdevs").arrayValue ?? []
        #expect(all.compactMap { $0["name"]?.stringValue } == ["U0", "A0", "Malloc0", "Null0"])
        let u0 = try daemon.call("bdev_get_bdevs", ["name": "U0"]).arrayValue?.first
        #expect(u0?["num_blocks"] == .int(16384))
        #expect(u0?["block_size"] == .int(512))
        #expect(u0?["product_name"] == .string("URING bdev"))
        #expect(u0?["claimed"] == .bool(false))
        let a0 = try daemon.call("bdev_get_bdevs", ["name": "A0"]).arrayValue?.first
        #expect(a0?["num_blocks"] == .int(2048))
        expectRPCError(-19) { try daemon.call("bdev_get_bdevs", ["name": "nope"]) }

        // Claimed by a controller: delete is refused with -16.
        try daemon.call("vhost_create_blk_controller", ["ctrlr": "c0", "dev_name": "Malloc0"])
        #expect(try daemon.call("bdev_get_bdevs", ["name": "Malloc0"]).arrayValue?.first?["claimed"] == .bool(true))
        let busy = expectRPCError(-16) { try daemon.call("bdev_malloc_delete", ["name": "Malloc0"]) }
        #expect(busy.contains("Device or resource busy"))
        try daemon.call("vhost_delete_controller", ["ctrlr": "c0"])
        #expect(try daemon.call("bdev_malloc_delete", ["name": "Malloc0"]) == .bool(true))
        #expect(try daemon.call("bdev_uring_delete", ["name": "U0"]) == .bool(true))
        #expect(try daemon.call("bdev_aio_delete", ["name": "A0"]) == .bool(true))
        #expect(try daemon.call("bdev_null_delete", ["name": "Null0"]) == .bool(true))
        expectRPCError(-19) { try daemon.call("bdev_null_delete", ["name": "Null0"]) }
        #expect(try daemon.call("bdev_get_bdevs").arrayValue?.isEmpty == true)
    }

    @Test func controllerErrorsAndShape() throws {
        let daemon = try DaemonProcess(cpumask: "0x1")
        defer { daemon.stop(); daemon.cleanUp() }
        try daemon.call("bdev_malloc_create", ["num_blocks": 2048, "block_size": 512, "name": "M0"])
        try daemon.call("bdev_malloc_create", ["num_blocks": 2048, "block_size": 512, "name": "M1"])
        expectRPCError(-32602) { try daemon.call("vhost_create_blk_controller", ["ctrlr": "c0", "dev_name": "nope"]) }
        let mask = expectRPCError(-32602) { try daemon.call("vhost_create_blk_controller", ["ctrlr": "c0", "dev_name": "M0", "cpumask": "0x2"]) }
        #expect(mask.contains("cpumask"))
        #expect(try daemon.call("vhost_create_blk_controller", ["ctrlr": "c0", "dev_name": "M0", "cpumask": "0x1"]) == .bool(true))
        let exists = expectRPCError(-32602) { try daemon.call("vhost_create_blk_controller", ["ctrlr": "c0", "dev_name": "M1"]) }
        #expect(exists.contains("File exists"))
        let claimed = expectRPCError(-32602) { try daemon.call("vhost_create_blk_controller", ["ctrlr": "c1", "dev_name": "M0"]) }
        #expect(claimed.contains("busy"))
        try daemon.call("vhost_create_blk_controller", ["ctrlr": "c1", "dev_name": "M1", "readonly": true])

        let list = try daemon.call("vhost_get_controllers").arrayValue ?? []
        #expect(list.count == 2)
        let c1 = try daemon.call("vhost_get_controllers", ["name": "c1"]).arrayValue?.first
        #expect(c1?["ctrlr"] == .string("c1"))
        #expect(c1?["cpumask"] == .string("0x1"))
        #expect(c1?["socket"] == .string(daemon.socketDirectory + "/c1"))
        #expect(c1?["backend_specific"]?["block"]?["readonly"] == .bool(true))
        #expect(c1?["backend_specific"]?["block"]?["bdev"] == .string("M1"))
        expectRPCError(-32602) { try daemon.call("vhost_get_controllers", ["name": "zzz"]) }
        expectRPCError(-32602) { try daemon.call("vhost_delete_controller", ["ctrlr": "zzz"]) }
        #expect(try daemon.call("vhost_delete_controller", ["ctrlr": "c0"]) == .bool(true))
        #expect(!FileManager.default.fileExists(atPath: daemon.socketDirectory + "/c0"))
    }
}
