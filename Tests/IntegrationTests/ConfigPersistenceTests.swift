import DaemonTestSupport
import Foundation
import JSONRPC
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Config persistence (issue 5 part 1): framework_get_config, `--config`,
/// `--persist`, and SPDK's own save_config/load_config.
@Suite("Config persistence")
struct ConfigPersistenceTests {
    /// A sparse file of `size` bytes in `directory`.
    static func makeImage(_ directory: URL, _ name: String, size: UInt64 = 16 << 20) throws -> String {
        let path = directory.appendingPathComponent(name).path
        #expect(FileManager.default.createFile(atPath: path, contents: nil))
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        try handle.truncate(atOffset: size)
        return path
    }

    /// Bdevs of every driver and controllers with and without a bdev, read-only, a cpumask and a socket mode.
    static func buildState(_ daemon: DaemonProcess) throws {
        let uring = try makeImage(daemon.directory, "u.img")
        let aio = try makeImage(daemon.directory, "a.img")
        try daemon.call("bdev_malloc_create", ["name": "M0", "num_blocks": 2048, "block_size": 4096])
        try daemon.call("bdev_null_create", ["name": "N0", "num_blocks": 1024, "block_size": 512])
        try daemon.call("bdev_uring_create", ["name": "U0", "filename": .string(uring)])
        try daemon.call("bdev_aio_create", ["name": "A0", "filename": .string(aio), "block_size": 4096, "readonly": true])
        try daemon.call("vhost_create_blk_controller", ["ctrlr": "vhost.0", "dev_name": "M0", "cpumask": "0x1", "socket_mode": "0660"])
        try daemon.call("vhost_create_blk_controller", ["ctrlr": "vhost.1", "dev_name": "A0", "readonly": true])
        try daemon.call("vhost_create_blk_controller", ["ctrlr": "vhost.2"])
    }

    /// What a restart must reproduce.
    static func snapshot(_ daemon: DaemonProcess) throws -> [JSON] {
        [
            try daemon.call("bdev_get_bdevs"), try daemon.call("vhost_get_controllers"),
            try daemon.call("framework_get_config", ["name": "bdev"]),
            try daemon.call("framework_get_config", ["name": "vhost_blk"]),
        ]
    }

    /// The save_config document built from framework_get_config.
    static func savedConfig(_ daemon: DaemonProcess) throws -> JSON {
        let subsystems = try daemon.call("framework_get_subsystems").arrayValue ?? []
        var list: [JSON] = []
        for subsystem in subsystems {
            let name = subsystem["subsystem"] ?? .null
            list.append(["subsystem": name, "config": try daemon.call("framework_get_config", ["name": name])])
        }
        return ["subsystems": .array(list)]
    }

    static func write(_ json: JSON, to path: String) throws {
        try Data(json.encoded(pretty: true).utf8).write(to: URL(fileURLWithPath: path))
    }

    static func readJSON(_ path: String) throws -> JSON {
        try JSON.parse(Array(try Data(contentsOf: URL(fileURLWithPath: path))))
    }

    static func inode(_ path: String) -> UInt64 {
        var st = stat()
        return stat(path, &st) == 0 ? UInt64(st.st_ino) : 0
    }

    /// Methods of one subsystem's entries in `config`.
    static func methods(_ config: JSON, _ subsystem: String) -> [String] {
        let entry = config["subsystems"]?.arrayValue?.first { $0["subsystem"] == .string(subsystem) }
        return entry?["config"]?.arrayValue?.compactMap { $0["method"]?.stringValue } ?? []
    }

    @Test func subsystemsConfigAndMethods() throws {
        let daemon = try DaemonProcess()
        defer { daemon.stop(); daemon.cleanUp() }
        let subsystems = try daemon.call("framework_get_subsystems")
        #expect(subsystems == [["subsystem": "bdev", "depends_on": []], ["subsystem": "vhost_blk", "depends_on": ["bdev"]]])
        try Self.buildState(daemon)
        try daemon.call("bdev_null_resize", ["name": "N0", "new_size": 2])
        let resized = try daemon.call("bdev_get_bdevs", ["name": "N0"]).arrayValue?.first?["num_blocks"]

        let bdevConfig = try daemon.call("framework_get_config", ["name": "bdev", "with_batches": false]).arrayValue ?? []
        #expect(bdevConfig.compactMap { $0["method"]?.stringValue } ==
                ["bdev_malloc_create", "bdev_null_create", "bdev_uring_create", "bdev_aio_create"])
        let null = bdevConfig.first { $0["params"]?["name"] == "N0" }
        #expect(null?["params"]?["num_blocks"] == resized, "current size, not the created one")
        #expect(bdevConfig.first { $0["params"]?["name"] == "A0" }?["params"]?["readonly"] == true)

        let vhost = try daemon.call("framework_get_config", ["name": "vhost_blk"]).arrayValue ?? []
        #expect(vhost.count == 3)
        #expect(vhost[0] == ["method": "vhost_create_blk_controller",
                             "params": ["ctrlr": "vhost.0", "dev_name": "M0", "cpumask": "0x1", "readonly": false, "socket_mode": "0660"]])
        #expect(vhost[1]["params"]?["readonly"] == true)
        #expect(vhost[2]["params"]?["dev_name"] == nil, "a controller without a bdev has no dev_name")

        #expect(throws: RPCClientError.rpc(RPCError(code: -32602, message: "Subsystem 'nvmf' not found"))) {
            try daemon.call("framework_get_config", ["name": "nvmf"])
        }
        #expect(try daemon.call("framework_start_init") == true)
        let all = try daemon.call("rpc_get_methods", ["current": false, "include_aliases": true]).arrayValue ?? []
        let current = try daemon.call("rpc_get_methods", ["current": true]).arrayValue ?? []
        #expect(all.contains("framework_start_init"))
        #expect(!current.contains("framework_start_init"), "initialized: load_config must not loop on it")
        #expect(current.contains("framework_get_config"))
    }

    @Test func restartWithConfigRestoresState() throws {
        let first = try DaemonProcess()
        defer { first.stop(); first.cleanUp() }
        try Self.buildState(first)
        let before = try Self.snapshot(first)
        let configPath = first.directory.appendingPathComponent("saved.json").path
        try Self.write(Self.savedConfig(first), to: configPath)
        #expect(first.stop() == 0)

        let second = try DaemonProcess(extraArguments: ["--config", configPath], directory: first.directory)
        defer { second.stop() }
        #expect(try Self.snapshot(second) == before)
        #expect(FileManager.default.fileExists(atPath: second.socketDirectory + "/vhost.2"))
    }

    @Test func persistRewritesAtomicallyAfterEachChange() throws {
        let directory = URL(fileURLWithPath: "/tmp").appendingPathComponent("vbd-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let configDirectory = directory.appendingPathComponent("etc")
        try FileManager.default.createDirectory(at: configDirectory, withIntermediateDirectories: true)
        let configPath = configDirectory.appendingPathComponent("vhost-blkd.json").path
        let arguments = ["--config", configPath, "--persist"]

        // First boot: no file yet; the daemon starts empty and writes one.
        let daemon = try DaemonProcess(extraArguments: arguments, directory: directory)
        defer { daemon.stop(); daemon.cleanUp() }
        #expect(try Self.readJSON(configPath) == ["subsystems": [["subsystem": "bdev", "config": []], ["subsystem": "vhost_blk", "config": []]]])

        var inode = Self.inode(configPath)
        func expectRewritten(_ rewritten: Bool, _ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
            let now = Self.inode(configPath)
            #expect((now != inode) == rewritten, "\(what)", sourceLocation: sourceLocation)
            inode = now
            let leftovers = (try? FileManager.default.contentsOfDirectory(atPath: configDirectory.path)) ?? []
            #expect(leftovers == ["vhost-blkd.json"], "temporary files left: \(leftovers)", sourceLocation: sourceLocation)
        }

        try daemon.call("bdev_malloc_create", ["name": "M0", "num_blocks": 256, "block_size": 512])
        expectRewritten(true, "after bdev_malloc_create")
        #expect(Self.methods(try Self.readJSON(configPath), "bdev") == ["bdev_malloc_create"])

        try daemon.call("vhost_create_blk_controller", ["ctrlr": "vhost.0", "dev_name": "M0", "readonly": true])
        expectRewritten(true, "after vhost_create_blk_controller")
        let saved = try Self.readJSON(configPath)
        #expect(Self.methods(saved, "vhost_blk") == ["vhost_create_blk_controller"])
        #expect(saved == (try Self.savedConfig(daemon)))

        _ = try daemon.call("bdev_get_bdevs")
        _ = try daemon.call("vhost_get_controllers")
        _ = try daemon.call("framework_get_config", ["name": "bdev"])
        expectRewritten(false, "read-only methods do not rewrite")
        #expect(throws: RPCClientError.self) { try daemon.call("bdev_malloc_create", ["name": "M0", "num_blocks": 8, "block_size": 512]) }
        expectRewritten(false, "a failed change does not rewrite")

        try daemon.call("bdev_null_create", ["name": "N0", "num_blocks": 64, "block_size": 512])
        expectRewritten(true, "after bdev_null_create")
        try daemon.call("vhost_delete_controller", ["ctrlr": "vhost.0"])
        expectRewritten(true, "after vhost_delete_controller")
        #expect(Self.methods(try Self.readJSON(configPath), "vhost_blk").isEmpty)
        try daemon.call("vhost_create_blk_controller", ["ctrlr": "vhost.1", "dev_name": "N0"])
        expectRewritten(true, "after the second controller")
        let before = try Self.snapshot(daemon)
        #expect(daemon.stop() == 0)

        // A restart with the same arguments comes back with everything.
        let restarted = try DaemonProcess(extraArguments: arguments, directory: directory)
        defer { restarted.stop() }
        let after = try Self.snapshot(restarted)
        #expect(after[0].arrayValue?.compactMap { $0["name"]?.stringValue } == ["M0", "N0"])
        #expect(after == before)
    }

    /// With `--persist`, only a call whose success changes what save_config
    /// writes rewrites the file: stats resets, rescans of an unchanged file and
    /// queries leave it alone. Before each call the file is replaced by a
    /// marker, which a rewrite would overwrite.
    @Test func persistRewritesOnlyAfterCallsThatChangeTheConfig() throws {
        let directory = URL(fileURLWithPath: "/tmp").appendingPathComponent("vbd-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let configPath = directory.appendingPathComponent("vhost-blkd.json").path
        let arguments = ["--config", configPath, "--persist"]
        let daemon = try DaemonProcess(extraArguments: arguments, directory: directory)
        defer { daemon.stop(); daemon.cleanUp() }
        let image = try Self.makeImage(directory, "u.img")
        try daemon.call("bdev_malloc_create", ["name": "M0", "num_blocks": 256, "block_size": 512])
        try daemon.call("bdev_null_create", ["name": "N0", "num_blocks": 64, "block_size": 512])
        try daemon.call("bdev_uring_create", ["name": "U0", "filename": .string(image)])
        try daemon.call("vhost_create_blk_controller", ["ctrlr": "vhost.0", "dev_name": "M0"])

        let marker = "not rewritten\n"
        func expectCall(_ method: String, _ params: JSON? = nil, rewrites: Bool, sourceLocation: SourceLocation = #_sourceLocation) throws {
            try Data(marker.utf8).write(to: URL(fileURLWithPath: configPath))
            _ = try daemon.call(method, params)
            let text = String(decoding: try Data(contentsOf: URL(fileURLWithPath: configPath)), as: UTF8.self)
            #expect((text != marker) == rewrites, "\(method) \(rewrites ? "did not rewrite" : "rewrote") the file",
                    sourceLocation: sourceLocation)
            if rewrites {
                #expect(try Self.readJSON(configPath) == (try Self.savedConfig(daemon)), "\(method)", sourceLocation: sourceLocation)
            }
        }

        // Statistics, queries and an unchanged file's rescan (a file bdev's size is not saved).
        try expectCall("bdev_reset_iostat", rewrites: false)
        try expectCall("bdev_reset_iostat", ["name": "M0", "mode": "maxmin"], rewrites: false)
        try expectCall("bdev_get_iostat", ["reset_mode": "all"], rewrites: false)
        try expectCall("bdev_get_latency", rewrites: false)
        try expectCall("bdev_get_bdevs", rewrites: false)
        try expectCall("bdev_uring_rescan", ["name": "U0"], rewrites: false)
        try expectCall("vhost_get_controllers", rewrites: false)
        try expectCall("framework_get_config", ["name": "bdev"], rewrites: false)
        try expectCall("framework_get_subsystems", rewrites: false)
        try expectCall("framework_get_reactors", rewrites: false)
        try expectCall("framework_start_init", rewrites: false)
        try expectCall("thread_get_stats", rewrites: false)
        try expectCall("rpc_get_methods", rewrites: false)
        try expectCall("spdk_get_version", rewrites: false)

        // Changes to what save_config writes.
        try expectCall("bdev_set_qos_limit", ["name": "M0", "rw_ios_per_sec": 2000], rewrites: true)
        #expect(Self.methods(try Self.readJSON(configPath), "bdev").contains("bdev_set_qos_limit"))
        try expectCall("bdev_null_resize", ["name": "N0", "new_size": 1], rewrites: true)
        try expectCall("bdev_resize", ["name": "M0", "new_size_mib": 1], rewrites: true)
        try expectCall("vhost_blk_detach", ["ctrlr": "vhost.0"], rewrites: true)
        try expectCall("vhost_blk_attach", ["ctrlr": "vhost.0", "dev_name": "N0"], rewrites: true)
        try expectCall("bdev_uring_delete", ["name": "U0"], rewrites: true)
        try expectCall("bdev_reset_iostat", rewrites: false)

        // The last rewrite holds everything: a restart from it comes back the same.
        try expectCall("vhost_delete_controller", ["ctrlr": "vhost.0"], rewrites: true)
        let before = try Self.snapshot(daemon)
        #expect(daemon.stop() == 0)
        let restarted = try DaemonProcess(extraArguments: arguments, directory: directory)
        defer { restarted.stop() }
        #expect(try Self.snapshot(restarted) == before)
    }

    @Test func badConfigNamesTheEntryAndLeavesNothing() throws {
        let directory = URL(fileURLWithPath: "/tmp").appendingPathComponent("vbd-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let configPath = directory.appendingPathComponent("bad.json").path
        let config: JSON = ["subsystems": [
            ["subsystem": "bdev", "config": [["method": "bdev_malloc_create", "params": ["name": "M0", "num_blocks": 64, "block_size": 512]]]],
            ["subsystem": "vhost_blk", "config": [
                ["method": "vhost_create_blk_controller", "params": ["ctrlr": "vhost.0", "dev_name": "M0"]],
                ["method": "vhost_create_blk_controller", "params": ["ctrlr": "vhost.1", "dev_name": "missing"]],
            ]],
        ]]
        let cases: [(text: String, expected: [String])] = [
            (config.encoded(pretty: true), ["subsystem vhost_blk entry 1 (vhost_create_blk_controller)", "No such device"]),
            (#"{"subsystems":[{"subsystem":"bdev","config":[{"method":"bdev_frobnicate","params":{}}]}]}"#,
             ["subsystem bdev entry 0 (bdev_frobnicate): unknown method"]),
            (#"{"subsystems":[{"subsystem":"bdev","config":[{"method":"bdev_null_create","params":{"name":"N0"}}]}]}"#,
             ["subsystem bdev entry 0 (bdev_null_create)", "num_blocks"]),
            (#"{"subsystems": ["#, ["is not valid JSON"]),
        ]
        for (text, expected) in cases {
            try Data(text.utf8).write(to: URL(fileURLWithPath: configPath))
            do {
                // --strict-config: today's behaviour, the first failing entry stops the start
                // (without it the daemon serves the rest: BootDegradationTests).
                let daemon = try DaemonProcess(extraArguments: ["--config", configPath, "--strict-config"], directory: directory)
                daemon.stop()
                Issue.record("the daemon started with a bad config: \(text)")
            } catch DaemonError.exited(let status, let log) {
                #expect(status != 0)
                for phrase in expected { #expect(log.contains(phrase), "log lacks '\(phrase)':\n\(log)") }
            }
            let left = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
            #expect(Set(left) == ["bad.json", "daemon.log"], "left behind: \(left)")
        }

        // --persist needs --config; a missing --config file without --persist is an error.
        let usage = try runCommand(DaemonProcess.daemonPath, ["-r", directory.path + "/r.sock", "-S", directory.path + "/c", "--persist"])
        #expect(usage.status != 0)
        #expect(usage.output.contains("--persist needs --config"))
        let missing = try runCommand(DaemonProcess.daemonPath, [
            "-r", directory.path + "/r.sock", "-S", directory.path + "/c", "-m", "0x1", "--config", directory.path + "/none.json",
        ])
        #expect(missing.status != 0)
        #expect(missing.output.contains("none.json"))
        #expect(!FileManager.default.fileExists(atPath: directory.path + "/r.sock"))
    }

    @Test(.enabled(if: SPDKClient.isEnabled, SPDKClient.skipComment))
    func spdkRpcSaveConfigAndLoadConfig() throws {
        _ = try SPDKClient.executable()
        let source = try DaemonProcess()
        defer { source.stop(); source.cleanUp() }
        try Self.buildState(source)
        let save = try SPDKClient.run(source, ["save_config"])
        #expect(save.status == 0, "\(save.output)")
        let savedPath = source.directory.appendingPathComponent("spdk-saved.json").path
        try Data(save.output.utf8).write(to: URL(fileURLWithPath: savedPath))
        #expect(try Self.readJSON(savedPath) == (try Self.savedConfig(source)))

        // load_config replays it into a fresh daemon.
        let target = try DaemonProcess()
        defer { target.stop(); target.cleanUp() }
        let load = try SPDKClient.run(target, ["load_config", "-j", savedPath])
        #expect(load.status == 0, "\(load.output)")
        #expect(!load.output.contains("skipped"), "\(load.output)")
        #expect(try Self.snapshot(target) == (try Self.snapshot(source)).map(Self.withSocketDirectory(target, from: source)))

        // And vhost-blkd --config reads the same file.
        let booted = try DaemonProcess(extraArguments: ["--config", savedPath])
        defer { booted.stop(); booted.cleanUp() }
        #expect(try booted.call("framework_get_config", ["name": "bdev"]) == (try source.call("framework_get_config", ["name": "bdev"])))
        #expect(try booted.call("vhost_get_controllers").arrayValue?.count == 3)
    }

    /// `json` with `source`'s socket directory replaced by `target`'s (controllers report their socket path).
    static func withSocketDirectory(_ target: DaemonProcess, from source: DaemonProcess) -> (JSON) -> JSON {
        { json in
            (try? JSON.parse(json.encoded().replacingOccurrences(of: source.socketDirectory, with: target.socketDirectory))) ?? json
        }
    }
}
