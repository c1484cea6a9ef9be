import DaemonTestSupport
import Foundation
import JSONRPC
import Testing

/// vhost-blkctl as a tool: a subcommand per method, help, completion, man
/// pages, and the client-side save_config / load_config.
@Suite("vhost-blkctl tooling")
struct CLIToolingTests {
    /// Every method the daemon serves has a subcommand of the same name with
    /// an abstract, and `--help` works for each.
    @Test func everyMethodHasASubcommand() throws {
        let daemon = try DaemonProcess()
        defer { daemon.stop(); daemon.cleanUp() }
        let methods = try #require(daemon.call("rpc_get_methods").arrayValue).compactMap(\.stringValue)
        #expect(methods.count >= 20)
        let subcommands = try ExamplesSupport.ctlSubcommands()
        let missing = methods.filter { !subcommands.contains($0) }
        #expect(missing.isEmpty, "methods without a vhost-blkctl subcommand: \(missing)")
        for name in ["save_config", "load_config"] { #expect(subcommands.contains(name)) }

        for name in subcommands {
            let help = try ExamplesSupport.run(DaemonProcess.ctlPath, [name, "--help"])
            #expect(help.status == 0, "\(name) --help: \(help.stderr)")
            #expect(help.stdout.contains("OVERVIEW: ") && help.stdout.contains("USAGE: vhost-blkctl \(name)"),
                    "\(name) --help:\n\(help.stdout)")
        }
        // The global options come before the method, and --help still works after them.
        let global = try ExamplesSupport.run(DaemonProcess.ctlPath, ["-s", daemon.rpcSocket, "-t", "5", "bdev_resize", "--help"])
        #expect(global.status == 0 && global.stdout.contains("--allow-shrink"))
        let top = try ExamplesSupport.run(DaemonProcess.ctlPath, ["--help"])
        #expect(top.status == 0 && top.stdout.contains("-s, --server SOCK"))
    }

    /// `--generate-completion-script` works for each shell (also after the
    /// global options) and offers every subcommand.
    @Test(arguments: ["bash", "zsh", "fish"])
    func completionScript(shell: String) throws {
        let subcommands = try ExamplesSupport.ctlSubcommands()
        for prefix in [[], ["-s", "/tmp/none.sock"]] {
            let result = try ExamplesSupport.run(DaemonProcess.ctlPath, prefix + ["--generate-completion-script", shell])
            #expect(result.status == 0, "\(shell): \(result.stderr)")
            let missing = subcommands.filter { !result.stdout.contains($0) }
            #expect(missing.isEmpty, "\(shell) completion lacks \(missing)")
        }
        if shell == "bash", let bash = ExamplesSupport.executable(named: "bash") {
            // The script loads into bash without errors.
            let result = try ExamplesSupport.run(DaemonProcess.ctlPath, ["--generate-completion-script", "bash"])
            let load = try ExamplesSupport.run(bash, ["-c", "source /dev/stdin && complete -p vhost-blkctl"], stdin: result.stdout)
            #expect(load.status == 0 && load.stdout.contains("vhost-blkctl"), "\(load.stderr)")
        }
    }

    /// docs/vhost-blkctl.1 (scripts/make-manpage.sh) lists every subcommand
    /// and docs/vhost-blkd.8 every daemon option: regenerate them when these fail.
    @Test func manPagesAreCurrent() throws {
        let page = try ExamplesSupport.text("docs/vhost-blkctl.1")
        #expect(page.contains(".Dt VHOST-BLKCTL 1"))
        let missing = try ExamplesSupport.ctlSubcommands().filter { !page.contains(".It Em \($0)\n") }
        #expect(missing.isEmpty, "docs/vhost-blkctl.1 lacks \(missing): run scripts/make-manpage.sh")

        let daemonPage = try ExamplesSupport.text("docs/vhost-blkd.8")
        #expect(daemonPage.contains(".Dt VHOST-BLKD 8"))
        let help = try ExamplesSupport.run(DaemonProcess.daemonPath, ["--help"])
        let options = help.stdout.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "," })
            .filter { $0.hasPrefix("--") && $0 != "--help" }
            .map { String($0.dropFirst(2).prefix { $0.isLetter || $0.isNumber || $0 == "-" }) }  // "--x);" in prose
        #expect(options.count >= 10)
        let absent = Set(options).filter { !daemonPage.contains("Fl -\($0)") }
        #expect(absent.isEmpty, "docs/vhost-blkd.8 lacks \(absent.sorted()): run scripts/make-manpage.sh")
        // The daemon has no subcommands: its synopsis shows none (make-manpage.sh drops them).
        #expect(!daemonPage.contains(".Ar subcommand") && !daemonPage.contains(".It Em help"),
                "docs/vhost-blkd.8 shows a subcommand: run scripts/make-manpage.sh")
        #expect(daemonPage.contains("/run/vhost-blkd/rpc.sock"), "docs/vhost-blkd.8: an old socket default")

        // Options accepted for rpc.py's sake and ignored say so, in --help and the page:
        // bdev_aio_create --no-wait, bdev_malloc_create's -p, -o and -n, bdev_null_create's six hints.
        let ignored = " (accepted for rpc.py; ignored by vhost-blkd)"
        let expected = [("bdev_aio_create", 1), ("bdev_malloc_create", 3), ("bdev_null_create", 6)]
        for (command, count) in expected {
            let help = try ExamplesSupport.run(DaemonProcess.ctlPath, [command, "--help"]).stdout
                .split(whereSeparator: { $0 == " " || $0 == "\n" }).joined(separator: " ")
            #expect(help.components(separatedBy: ignored).count - 1 == count, "\(command) --help:\n\(help)")
        }
        #expect(page.components(separatedBy: ignored).count - 1 == 10, "docs/vhost-blkctl.1: run scripts/make-manpage.sh")
    }

    /// save_config writes what framework_get_config holds; load_config (file
    /// or stdin) rebuilds it in an empty daemon; an unknown method is refused
    /// before anything is applied.
    @Test func saveAndLoadConfig() throws {
        let first = try DaemonProcess()
        defer { first.stop(); first.cleanUp() }
        func ctl(_ daemon: DaemonProcess, _ args: [String], stdin: String? = nil) throws -> (status: Int32, stdout: String, stderr: String) {
            try ExamplesSupport.run(DaemonProcess.ctlPath, ["-s", daemon.rpcSocket] + args, stdin: stdin)
        }
        #expect(try ctl(first, ["bdev_malloc_create", "8", "4096", "-b", "M0"]).status == 0)
        #expect(try ctl(first, ["bdev_null_create", "N0", "16", "512"]).status == 0)
        #expect(try ctl(first, ["vhost_create_blk_controller", "vhost.0", "M0", "--socket-mode", "0660"]).status == 0)
        #expect(try ctl(first, ["vhost_create_blk_controller", "vhost.empty"]).status == 0)
        let attributes = try FileManager.default.attributesOfItem(atPath: "\(first.socketDirectory)/vhost.0")
        #expect((attributes[.posixPermissions] as? NSNumber)?.intValue == 0o660)

        let subsystems = try JSON.parse(try ctl(first, ["framework_get_subsystems"]).stdout)
        #expect(subsystems.arrayValue?.compactMap { $0["subsystem"]?.stringValue } == ["bdev", "vhost_blk"])
        let bdevConfig = try JSON.parse(try ctl(first, ["framework_get_config", "bdev"]).stdout)
        #expect(bdevConfig.arrayValue?.count == 2)
        #expect(try ctl(first, ["framework_start_init"]) == (0, "", ""))

        let saved = try ctl(first, ["save_config"])
        #expect(saved.status == 0, "\(saved.stderr)")
        let config = try JSON.parse(saved.stdout)
        #expect(config["subsystems"]?.arrayValue?.first?["subsystem"] == "bdev")
        #expect(config["subsystems"]?.arrayValue?.first?["config"] == bdevConfig)
        let compact = try ctl(first, ["save_config", "--indent", "-1"])
        #expect(!compact.stdout.dropLast().contains("\n"))
        #expect(try JSON.parse(compact.stdout) == config)
        let file = first.directory.appendingPathComponent("saved.json").path
        try saved.stdout.write(toFile: file, atomically: true, encoding: .utf8)

        for useStdin in [false, true] {
            let second = try DaemonProcess()
            defer { second.stop(); second.cleanUp() }
            let load = useStdin ? try ctl(second, ["load_config"], stdin: saved.stdout)
                                : try ctl(second, ["load_config", "-j", file])
            #expect(load.status == 0, "\(load.stderr)")
            #expect(try ctl(second, ["save_config"]).stdout == saved.stdout)
        }

        // Unknown method: refused up front, nothing applied.
        let bad = #"{"subsystems":[{"subsystem":"bdev","config":[{"method":"bdev_malloc_create","params":{"name":"X","num_blocks":8,"block_size":512}},{"method":"bdev_nvme_attach_controller","params":{}}]}]}"#
        let third = try DaemonProcess()
        defer { third.stop(); third.cleanUp() }
        let refused = try ctl(third, ["load_config"], stdin: bad)
        #expect(refused.status == 1 && refused.stderr.contains("bdev_nvme_attach_controller"))
        #expect(try third.call("bdev_get_bdevs").arrayValue?.isEmpty == true)
        // A failing entry stops the replay with the daemon's error.
        let clash = #"{"subsystems":[{"subsystem":"vhost_blk","config":[{"method":"vhost_create_blk_controller","params":{"ctrlr":"c","dev_name":"nope"}}]}]}"#
        let failed = try ctl(third, ["load_config"], stdin: clash)
        #expect(failed.status == 1 && failed.stderr.contains("Got JSON-RPC error response"))
        let garbage = try ctl(third, ["load_config"], stdin: "{not json")
        #expect(garbage.status == 1 && garbage.stderr.contains("load_config: stdin"))
    }
}
