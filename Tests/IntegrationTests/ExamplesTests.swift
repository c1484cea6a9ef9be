import DaemonTestSupport
import Foundation
import JSONRPC
import Testing

/// Every file in `examples/` does what its header says, against the real daemon.
@Suite("examples/")
struct ExamplesTests {
    /// The libvirt fragment is well-formed XML with a vhostuser disk that
    /// reconnects, raw with two queues, shared memfd memory and ACPI (without
    /// `<acpi/>` libvirt passes -no-acpi and disk hot-unplug fails). E2E's
    /// LibvirtGuestTests runs it under a real libvirtd.
    @Test func libvirtDomainXML() throws {
        let python = try #require(ExamplesSupport.executable(named: "python3"), "python3 is needed to parse the XML")
        let probe = """
            import json, sys, xml.etree.ElementTree as ET
            root = ET.parse(sys.argv[1]).getroot()
            disk = root.find("devices/disk[@type='vhostuser']")
            source = disk.find("source")
            print(json.dumps({
                "root": root.tag,
                "device": disk.get("device"),
                "source": source.attrib,
                "reconnect": source.find("reconnect").attrib,
                "driver": disk.find("driver").attrib,
                "target_bus": disk.find("target").get("bus"),
                "memory_source": root.find("memoryBacking/source").get("type"),
                "memory_access": root.find("memoryBacking/access").get("mode"),
                "acpi": root.find("features/acpi") is not None,
            }))
            """
        let result = try ExamplesSupport.run(python, ["-c", probe, ExamplesSupport.path("examples/libvirt-vhostuser-disk.xml")])
        #expect(result.status == 0, "\(result.stderr)")
        let found = try JSON.parse(result.stdout)
        #expect(found["root"] == "domain")
        #expect(found["device"] == "disk")
        #expect(found["source"]?["type"] == "unix")
        #expect(found["source"]?["path"]?.stringValue?.hasPrefix("/run/vhost-blkd/") == true)
        #expect(found["reconnect"] == ["enabled": "yes", "timeout": "5"])
        #expect(found["driver"] == ["name": "qemu", "type": "raw", "queues": "2"])
        #expect(found["target_bus"] == "virtio")
        #expect(found["memory_source"] == "memfd")
        #expect(found["memory_access"] == "shared")
        #expect(found["acpi"] == .bool(true))
        let text = try ExamplesSupport.text("examples/libvirt-vhostuser-disk.xml")
        #expect(text.contains("socket_mode") && text.contains("socket_group"))
    }

    /// orchestrate.py (standard library only) creates, resizes, reads stats and deletes.
    @Test func orchestrationScript() throws {
        let python = try #require(ExamplesSupport.executable(named: "python3"), "python3 is needed")
        let daemon = try DaemonProcess()
        defer { daemon.stop(); daemon.cleanUp() }
        let result = try ExamplesSupport.run(
            python, [ExamplesSupport.path("examples/orchestrate.py"), "-s", daemon.rpcSocket,
                     "--dir", daemon.directory.path, "--name", "orch1"])
        #expect(result.status == 0, "stderr: \(result.stderr)\nlog: \(daemon.log)")
        let lines = result.stdout.split(separator: "\n").map(String.init)
        #expect(lines.first?.hasPrefix("connected to vhost-blkd v") == true)
        #expect(lines.contains { $0.hasPrefix("created bdev orch1 with bdev_uring_create on ") })
        #expect(lines.contains { $0.hasPrefix("created controller vhost.orch1 on cpumask 0x1, socket \(daemon.socketDirectory)/vhost.orch1") })
        #expect(lines.contains("resized bdev orch1 to 32 MiB (65536 blocks of 512)"))
        #expect(lines.contains("iostat orch1: read_ops=0 write_ops=0 bytes_read=0 bytes_written=0")
                || lines.contains("iostat skipped: this daemon has no bdev_get_iostat"))
        #expect(lines.contains("deleted controller vhost.orch1 and bdev orch1"))
        #expect(lines.last == "done")
        // Nothing left behind.
        #expect(try daemon.call("bdev_get_bdevs").arrayValue?.isEmpty == true)
        #expect(try daemon.call("vhost_get_controllers").arrayValue?.isEmpty == true)
        #expect(!FileManager.default.fileExists(atPath: daemon.directory.appendingPathComponent("orch1.img").path))

        // A failure exits 1 with the daemon's error and undoes what it made.
        _ = try daemon.call("bdev_malloc_create", ["name": "orch2", "num_blocks": 64, "block_size": 512])
        _ = try daemon.call("vhost_create_blk_controller", ["ctrlr": "vhost.orch2", "dev_name": "orch2"])
        let clash = try ExamplesSupport.run(
            python, [ExamplesSupport.path("examples/orchestrate.py"), "-s", daemon.rpcSocket,
                     "--dir", daemon.directory.path, "--name", "orch2"])
        #expect(clash.status == 1)
        #expect(clash.stderr.contains("orchestrate.py: bdev_uring_create: error"))
        #expect(try daemon.call("bdev_get_bdevs").arrayValue?.count == 1)
    }

    /// The systemd unit has the keys the docs promise (user vhost-blkd, no
    /// capabilities), no syscall filter that would block io_uring, passes `systemd-analyze verify` where present, and
    /// its ExecStart options start the real daemon.
    @Test func systemdUnit() throws {
        let unit = try SystemdUnit(text: ExamplesSupport.text("examples/vhost-blkd.service"))
        #expect(unit.sections == ["Unit", "Service", "Install"])
        #expect(unit["Service", "RuntimeDirectory"] == ["vhost-blkd"])
        #expect(unit["Service", "Restart"] == ["on-failure"])
        #expect(unit["Service", "Type"] == ["notify"], "READY=1 once the sockets exist (docs/OPERATIONS.md)")
        #expect(unit["Install", "WantedBy"] == ["multi-user.target"])
        #expect(unit["Service", "SystemCallFilter"].isEmpty, "a syscall filter would block io_uring_setup")
        #expect(unit["Service", "MemoryDenyWriteExecute"].isEmpty)
        // Runs unprivileged (docs/OPERATIONS.md, "Running unprivileged"; UnprivilegedGuestTests
        // runs a guest that way): its own user and group, no capability in any set.
        #expect(unit["Service", "User"] == ["vhost-blkd"])
        #expect(unit["Service", "Group"] == ["vhost-blkd"])
        #expect(unit["Service", "CapabilityBoundingSet"] == [""], "an empty bounding set")
        #expect(unit["Service", "AmbientCapabilities"] == [""])
        #expect(unit["Service", "NoNewPrivileges"] == ["yes"])
        #expect(unit["Service", "StateDirectory"] == ["vhost-blkd"])
        #expect(unit["Service", "SupplementaryGroups"].isEmpty, "a group named there must exist: left commented out")
        let postinst = try ExamplesSupport.text("packaging/postinst")
        #expect(postinst.contains("useradd --system --gid vhost-blkd"))
        #expect(postinst.contains("chown vhost-blkd:vhost-blkd /etc/vhost-blkd /var/lib/vhost-blkd"))
        let exec = try #require(unit["Service", "ExecStart"].first).split(separator: " ").map(String.init)
        #expect(exec.first == "/usr/sbin/vhost-blkd")  // where the Debian package installs it
        #expect(exec.last == "$VHOST_BLKD_OPTS")
        #expect(unit["Service", "EnvironmentFile"] == ["-/etc/default/vhost-blkd"])
        for (flag, value) in [("--config", "/etc/vhost-blkd/config.json")] {
            let index = try #require(exec.firstIndex(of: flag), "ExecStart lacks \(flag)")
            #expect(exec.indices.contains(index + 1) && exec[index + 1] == value)
        }
        #expect(exec.contains("--persist"))
        // One socket default: the unit leaves -r and -S out, and the daemon's and the
        // CLI's defaults are both in the unit's RuntimeDirectory (/run/vhost-blkd).
        for flag in ["-r", "--rpc-socket", "-S", "--socket-dir"] {
            #expect(!exec.contains(flag), "ExecStart sets \(flag): the CLI would not find the socket without -s")
        }
        func words(_ text: String) -> String { text.split(whereSeparator: { $0 == " " || $0 == "\n" }).joined(separator: " ") }
        let daemonHelp = words(try ExamplesSupport.run(DaemonProcess.daemonPath, ["--help"]).stdout)
        #expect(daemonHelp.contains("--rpc-socket /run/vhost-blkd/rpc.sock, --socket-dir /run/vhost-blkd,"), "\(daemonHelp)")
        let ctlHelp = words(try ExamplesSupport.run(DaemonProcess.ctlPath, ["--help"]).stdout)
        #expect(ctlHelp.contains("else /run/vhost-blkd/rpc.sock"), "\(ctlHelp)")

        if let analyze = ExamplesSupport.executable(named: "systemd-analyze") {
            // verify checks that ExecStart exists: point it at the built daemon.
            let directory = try makeTemporaryDirectory()
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let copy = "\(directory)/vhost-blkd.service"
            try ExamplesSupport.text("examples/vhost-blkd.service")
                .replacingOccurrences(of: "/usr/sbin/vhost-blkd", with: DaemonProcess.daemonPath)
                .write(toFile: copy, atomically: true, encoding: .utf8)
            let verify = try ExamplesSupport.run(analyze, ["verify", copy])
            let complaints = (verify.stdout + verify.stderr).split(separator: "\n")
                .filter { $0.contains("vhost-blkd.service") }
            #expect(verify.status == 0 && complaints.isEmpty, "\(verify.stdout)\(verify.stderr)")
        }

        // The daemon accepts ExecStart's options: a first boot with --persist writes the config.
        let base = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: base) }
        var options: [String] = []
        var index = 1
        while index < exec.count {
            if exec[index] == "$VHOST_BLKD_OPTS" { index += 1; continue }  // empty in /etc/default/vhost-blkd
            options.append(exec[index]
                .replacingOccurrences(of: "/etc/vhost-blkd", with: base)
                .replacingOccurrences(of: "/var/lib/vhost-blkd", with: base))
            index += 1
        }
        let daemon = try DaemonProcess(extraArguments: options)
        defer { daemon.stop(); daemon.cleanUp() }
        _ = try daemon.call("bdev_malloc_create", ["name": "unit0", "num_blocks": 64, "block_size": 512])
        let saved = try String(contentsOfFile: "\(base)/config.json", encoding: .utf8)
        #expect(saved.contains("unit0"))
        #expect(daemon.stop() == 0)
    }

    /// save-config.sh: save_config, restart with --config, load_config, --persist
    /// (and SPDK's own client, when its venv is there).
    @Test func saveConfigScript() throws {
        var environment = ["VHOST_BLKD_BIN": DaemonProcess.binaryDirectory.path]
        if case .success(let spdkRPC) = SPDKClient.setup { environment["SPDK_RPC"] = spdkRPC }
        let result = try ExamplesSupport.run(ExamplesSupport.path("examples/save-config.sh"), environment: environment)
        #expect(result.status == 0, "stdout:\n\(result.stdout)\nstderr:\n\(result.stderr)")
        for line in ["bdevs: 2 controllers: 1", "vhost.0 serves Malloc0 again",
                     "persist.json lists Malloc1 after bdev_malloc_create", "== save-config example passed"] {
            #expect(result.stdout.contains(line), "missing: \(line)")
        }
        if environment["SPDK_RPC"] != nil {
            #expect(result.stdout.contains("spdk-rpc save_config wrote the same configuration"))
        }
    }

    /// quickstart.sh boots a guest that runs verified fio on a vhost-blkd disk.
    @Test(.enabled(if: QuickstartGuest.isEnabled, "needs qemu-system-x86_64 and the guest from scripts/build-guest.sh"))
    func quickstartScript() throws {
        let guest = try QuickstartGuest.directory()
        let result = try ExamplesSupport.run(
            ExamplesSupport.path("examples/quickstart.sh"),
            environment: [
                "VHOST_BLKD_BIN": DaemonProcess.binaryDirectory.path,
                "GUEST_KERNEL": "\(guest)/vmlinuz", "GUEST_INITRD": "\(guest)/initramfs.cpio.gz",
                "FIO_SIZE": "16M", "QEMU_TIMEOUT": "400",
            ])
        #expect(result.status == 0, "stdout:\n\(result.stdout)\nstderr:\n\(result.stderr)")
        #expect(result.stdout.contains("guest: /dev/vda has 2097152 sectors and 2 queues"))
        #expect(result.stdout.contains("== quickstart passed"))
        #expect(result.stdout.contains("\"num_write_ops\": 4096") || !result.stdout.contains("num_write_ops"))
    }
}

/// Where the quick start finds its guest: `$VHOST_BLKD_GUEST_DIR` or `<repo>/.guest`.
enum QuickstartGuest {
    static var path: String {
        ProcessInfo.processInfo.environment["VHOST_BLKD_GUEST_DIR"].flatMap { $0.isEmpty ? nil : $0 }
            ?? ExamplesSupport.path(".guest")
    }

    static var isReady: Bool {
        ExamplesSupport.executable(named: "qemu-system-x86_64") != nil
            && FileManager.default.isReadableFile(atPath: "\(path)/vmlinuz")
            && FileManager.default.isReadableFile(atPath: "\(path)/initramfs.cpio.gz")
    }

    static var isEnabled: Bool { isReady || ExamplesSupport.isRequired }

    struct Missing: Error, CustomStringConvertible {
        var description: String
    }

    static func directory() throws -> String {
        guard isReady else { throw Missing(description: "qemu-system-x86_64 or the guest in \(path) is missing") }
        return path
    }
}

/// A systemd unit file's sections and keys, in order (no line continuations).
struct SystemdUnit {
    var sections: [String] = []
    private var values: [String: [String]] = [:]

    struct ParseError: Error, CustomStringConvertible {
        var description: String
    }

    init(text: String) throws {
        var current: String?
        for (number, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
            if line.hasPrefix("[") && line.hasSuffix("]") {
                let name = String(line.dropFirst().dropLast())
                sections.append(name)
                current = name
                continue
            }
            guard let section = current, let equals = line.firstIndex(of: "="), !line.hasSuffix("\\") else {
                throw ParseError(description: "line \(number + 1) is not KEY=VALUE in a section: \(line)")
            }
            let key = line[..<equals].trimmingCharacters(in: .whitespaces)
            let value = line[line.index(after: equals)...].trimmingCharacters(in: .whitespaces)
            values["\(section)/\(key)", default: []].append(value)
        }
    }

    subscript(section: String, key: String) -> [String] { values["\(section)/\(key)"] ?? [] }
}

/// A fresh folder under /tmp.
func makeTemporaryDirectory() throws -> String {
    let path = "/tmp/vbx-\(UUID().uuidString.prefix(8))"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}
