import DaemonTestSupport
import Foundation
import JSONRPC
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Issue 22, "libvirt for real": Debian's libvirt 9.0 (`libvirtd`, started here
/// without systemd) runs a domain defined from `examples/libvirt-vhostuser-disk.xml`
/// on a vhost-blkd disk: fio verify in the guest, a daemon restart that the example's
/// `<reconnect enabled='yes' timeout='5'/>` rides through, and a vhostuser disk
/// hot-plugged with `virsh attach-device` and unplugged with `virsh detach-device`
/// (docs/OPERATIONS.md, "Sockets and permissions" and "Resize, attach and detach").
@Suite("libvirt runs the example domain", .serialized, .enabled(if: Libvirt.isEnabled, Libvirt.skipComment))
struct LibvirtGuestTests {
    /// Where the domain's files go.
    struct Paths {
        var socketDirectory: String
        var kernel: String
        var initrd: String
        var console: String
    }

    /// The example, adapted only where a test machine differs from a production host:
    /// TCG instead of KVM, the test kernel and initramfs with a serial console to read,
    /// the test's socket directory instead of /run/vhost-blkd, and a unique name. Every
    /// anchor must occur exactly once, so a change to the example breaks this loudly
    /// instead of testing something else.
    static func adaptExample(_ example: String, name: String, paths: Paths) throws -> String {
        let edits: [(String, String)] = [
            ("<domain type='kvm'>", "<domain type='qemu'>"),
            ("<name>vm1</name>", "<name>\(name)</name>"),
            ("<type arch='x86_64' machine='q35'>hvm</type>",
             "<type arch='x86_64' machine='q35'>hvm</type>\n    <kernel>\(paths.kernel)</kernel>\n"
                + "    <initrd>\(paths.initrd)</initrd>\n    <cmdline>console=ttyS0 panic=-1 quiet</cmdline>"),
            ("path='/run/vhost-blkd/vhost.vm1'", "path='\(paths.socketDirectory)/vhost.vm1'"),
            ("  </devices>", "    <serial type='file'>\n      <source path='\(paths.console)'/>\n    </serial>\n  </devices>"),
        ]
        var xml = example
        for (anchor, replacement) in edits {
            let count = xml.components(separatedBy: anchor).count - 1
            guard count == 1 else { throw E2EError.failed("examples/libvirt-vhostuser-disk.xml has \(anchor) \(count) times, expected once") }
            xml = xml.replacingOccurrences(of: anchor, with: replacement)
        }
        return xml
    }

    /// The example's `<disk>` element as a hot-plug device: another controller's socket, vdb.
    static func hotplugDisk(_ example: String, socket: String) throws -> String {
        guard let start = example.range(of: "<disk type='vhostuser'"), let end = example.range(of: "</disk>")
        else { throw E2EError.failed("no vhostuser <disk> in the example") }
        return String(example[start.lowerBound..<end.upperBound])
            .replacingOccurrences(of: "/run/vhost-blkd/vhost.vm1", with: socket)
            .replacingOccurrences(of: "dev='vda'", with: "dev='vdb'")
    }

    /// The sessions of controller `ctrlr` (vhost_get_controllers).
    static func sessions(_ daemon: DaemonProcess, _ ctrlr: String) throws -> [JSON] {
        let list = try daemon.call("vhost_get_controllers", ["name": .string(ctrlr)])
        return list.arrayValue?.first?["sessions"]?.arrayValue ?? []
    }

    /// Polls `condition` every 100 ms for `seconds`.
    static func waitUntil(_ seconds: Int, _ condition: () throws -> Bool) rethrows -> Bool {
        let deadline = ContinuousClock.now + .seconds(seconds)
        while ContinuousClock.now < deadline {
            if try condition() { return true }
            usleep(100_000)
        }
        return try condition()
    }

    static func read(_ path: String) -> String {
        FileManager.default.contents(atPath: path).map { String(decoding: $0, as: UTF8.self) } ?? ""
    }

    /// Field `key` of /proc/PID/status, split on white space.
    static func statusField(_ pid: Int32, _ key: String) -> [String] {
        for line in read("/proc/\(pid)/status").split(separator: "\n") where line.hasPrefix(key + ":") {
            return line.dropFirst(key.count + 1).split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        }
        return []
    }

    @Test func exampleDomainWithRestartAndHotplug() throws {
        let missing = Libvirt.missingPrerequisites
        if !missing.isEmpty { throw E2EError.missingPrerequisites(missing) }
        let started = ContinuousClock.now
        guard let qemuUser = getpwnam("libvirt-qemu")?.pointee.pw_uid,
            let qemuGroup = getgrnam("libvirt-qemu")?.pointee.gr_gid,
            let kvmGroup = getgrnam("kvm")?.pointee.gr_gid
        else { throw E2EError.failed("libvirt-daemon-system made no user libvirt-qemu or groups libvirt-qemu, kvm") }

        // One folder for everything libvirt's QEMU opens, searchable by libvirt-qemu (mkdtemp
        // makes it 0700); the kernel is copied in because libvirt's DAC driver chowns the
        // kernel and initrd to libvirt-qemu while the domain runs.
        let work = try E2EEnvironment.makeWorkDirectory("libvirt")
        defer { E2EEnvironment.removeWorkDirectory(work) }
        guard chmod(work.path, 0o755) == 0 else { throw E2EError.system("chmod \(work.path)", errno) }
        let daemonDirectory = work.appendingPathComponent("d")
        try FileManager.default.createDirectory(at: daemonDirectory, withIntermediateDirectories: false,
                                                attributes: [.posixPermissions: 0o755])
        let kernel = work.appendingPathComponent("vmlinuz")
        try FileManager.default.copyItem(at: E2EEnvironment.kernel, to: kernel)
        let image = work.appendingPathComponent("vm1.img").path
        let sizeMiB = 64
        try runCommand("/usr/bin/truncate", ["-s", "\(sizeMiB)M", image])

        // vhost-blkd with --config --persist, so that a restart brings the controllers back.
        let config = work.appendingPathComponent("config.json").path
        let daemonArguments = ["--config", config, "--persist"]
        var daemon = try DaemonProcess(cpumask: "0x1", extraArguments: daemonArguments, directory: daemonDirectory)
        defer { daemon.stop() }
        try daemon.call("bdev_uring_create", ["filename": .string(image), "name": "vm1"])
        try daemon.call("bdev_malloc_create", ["num_blocks": .int(32 * 2048), "block_size": 512, "name": "hp0"])
        // QEMU's primary group for the boot disk, its supplementary group kvm for the hot-plugged one.
        try daemon.call("vhost_create_blk_controller", [
            "ctrlr": "vhost.vm1", "dev_name": "vm1", "socket_mode": "0660", "socket_group": "libvirt-qemu",
        ])
        try daemon.call("vhost_create_blk_controller", [
            "ctrlr": "vhost.hp", "dev_name": "hp0", "socket_mode": "0660", "socket_group": "kvm",
        ])

        // The guest: fio on vda, a second fio during which the daemon restarts, then waits
        // for vdb, runs fio on it, and waits for it to go.
        var jobA = FioJob(name: "e2e-before", size: "16M")
        jobA.offset = "1M"
        var jobB = FioJob(name: "e2e-restart", size: "16M")
        jobB.offset = "24M"
        let jobHotplug = FioJob(name: "e2e-hotplug", device: "/dev/vdb", size: "8M")
        let script = GuestScript().waitForDisk("vda", timeoutSeconds: 60)
            .expectSerial("vhost.vm1").expectSectors(UInt64(sizeMiB) * 2048)
            .runFio(jobA)
            .ready("restart")
            .runFio(jobB)
            .ready("hotplug")
            .waitForDisk("vdb", timeoutSeconds: 120)
            .expectSerial("vhost.hp", disk: "vdb").expectSectors(32 * 2048, disk: "vdb")
            .runFio(jobHotplug)
            .ready("unplug")
            .appending("""
                _n=0
                while [ -e /sys/block/vdb ]; do
                    _n=$((_n + 1)); [ "$_n" -gt 1200 ] && fail "vdb still present 120 s after the unplug request"
                    sleep 0.1
                done
                echo "E2E-OK: /dev/vdb gone"
                ls /sys/block
                # Without ACPI (-no-acpi) the guest re-enumerates every PCIe root port on a
                # hot-plug and releases all of them on the unplug: vda went with vdb.
                [ -b /dev/vda ] || fail "vda went with vdb"
                dd if=/dev/vda of=/dev/null bs=1M count=8 iflag=direct 2>/dev/null || fail "vda unreadable after the unplug"
                echo "E2E-OK: vda still there and readable"
                # Time for the test to check the daemon and libvirt before the guest powers off.
                sleep 15
                """)
        let initrd = work.appendingPathComponent("guest.initrd")
        try GuestInitrd.make(base: E2EEnvironment.baseInitrd, script: script.text, output: initrd)
        let console = work.appendingPathComponent("console.log").path

        // libvirt's daemons: started here unless they already run (then left alone).
        guard let virtlogdPath = Libvirt.virtlogd, let libvirtdPath = Libvirt.libvirtd else {
            throw E2EError.missingPrerequisites(["libvirtd, virtlogd"])
        }
        let virtlogd = try LibvirtDaemon(executable: virtlogdPath, socket: Libvirt.virtlogdSocket,
                                         pidFile: Libvirt.virtlogdPidFile, log: work.appendingPathComponent("virtlogd.out"))
        defer { virtlogd.stop() }
        let libvirtd = try LibvirtDaemon(executable: libvirtdPath, socket: Libvirt.libvirtdSocket,
                                         pidFile: Libvirt.libvirtdPidFile, log: work.appendingPathComponent("libvirtd.out"))
        defer { libvirtd.stop() }
        print("libvirt: \(try Libvirt.virshOK(["version"]).split(separator: "\n").joined(separator: "; "))")
        func milestone(_ what: String) { print("libvirt e2e: \(what) at \(ContinuousClock.now - started)") }
        milestone("libvirtd ready")

        let example = try String(contentsOf: E2EEnvironment.repoRoot.appendingPathComponent("examples/libvirt-vhostuser-disk.xml"),
                                 encoding: .utf8)
        let name = "vhb-e2e-\(getpid())"
        let paths = Paths(socketDirectory: daemon.socketDirectory, kernel: kernel.path, initrd: initrd.path, console: console)
        let domainXML = work.appendingPathComponent("domain.xml")
        try Data(try Self.adaptExample(example, name: name, paths: paths).utf8).write(to: domainXML)
        let diskXML = work.appendingPathComponent("hotplug-disk.xml")
        try Data(try Self.hotplugDisk(example, socket: daemon.socketDirectory + "/vhost.hp").utf8).write(to: diskXML)

        try Libvirt.virshOK(["define", domainXML.path])
        defer {
            if (try? Libvirt.virsh(["domstate", name]))?.output.contains("running") == true {
                _ = try? Libvirt.virsh(["destroy", name])
            }
            _ = try? Libvirt.virsh(["undefine", name])
        }
        var failureContext: String {
            "--- console tail ---\n\(GuestVM.tail(Self.read(console)))\n--- libvirt's QEMU log ---\n"
                + "\(GuestVM.tail(Self.read(Libvirt.qemuLog(domain: name)), lines: 15))\n--- daemon log ---\n\(daemon.log.suffix(3000))"
        }
        func waitForConsole(_ text: String, seconds: Int) throws {
            guard Self.waitUntil(seconds, { Self.read(console).contains(text) }) else {
                throw E2EError.timeout("the guest never printed \(text) in \(seconds) s\n\(failureContext)")
            }
        }

        try Libvirt.virshOK(["start", name])
        milestone("domain started")
        let qemuPid = try #require(Libvirt.livePid(inFile: Libvirt.qemuPidFile(domain: name)), "no QEMU pid for \(name)")
        // libvirt's QEMU: user libvirt-qemu, primary group libvirt-qemu, kvm supplementary.
        let uids = Self.statusField(qemuPid, "Uid"), gids = Self.statusField(qemuPid, "Gid")
        let groups = Self.statusField(qemuPid, "Groups")
        print("libvirt's QEMU pid \(qemuPid): Uid \(uids) Gid \(gids) Groups \(groups)")
        #expect(uids.first == "\(qemuUser)", "QEMU's uid")
        #expect(gids.first == "\(qemuGroup)", "QEMU's primary group is libvirt-qemu")
        #expect(groups.contains("\(kvmGroup)"), "kvm is one of QEMU's supplementary groups")
        let qemuCommand = Self.read("/proc/\(qemuPid)/cmdline").split(separator: "\0").joined(separator: " ")
        #expect(!qemuCommand.contains("-no-acpi"), "the example's <acpi/> keeps ACPI on")
        #expect(qemuCommand.contains("reconnect=5"), "the example's reconnect timeout reaches QEMU")

        // fio before the restart; then SIGTERM and a new daemon on the same sockets while
        // the second fio runs: QEMU reconnects (reconnect=5) and the guest sees a pause.
        try waitForConsole("E2E-READY: restart", seconds: 240)
        #expect(try Self.sessions(daemon, "vhost.vm1").first?["frontend_pid"]?.intValue == Int64(qemuPid))
        milestone("guest ran fio on vda")
        usleep(1_500_000)
        let consoleAtRestart = Self.read(console).count
        let restartedAt = ContinuousClock.now
        #expect(daemon.stop() == 0, "SIGTERM: a clean exit")
        daemon = try DaemonProcess(cpumask: "0x1", extraArguments: daemonArguments, directory: daemonDirectory)
        for (ctrlr, group) in [("vhost.vm1", qemuGroup), ("vhost.hp", kvmGroup)] {
            var info = stat()
            #expect(stat(daemon.socketDirectory + "/" + ctrlr, &info) == 0 && info.st_gid == group
                    && info.st_mode & 0o777 == 0o660, "\(ctrlr): the config brings back its socket mode and group")
        }
        let reconnected = Self.waitUntil(30) {
            (try? Self.sessions(daemon, "vhost.vm1").first?["queues"]?.arrayValue?.isEmpty == false) ?? false
        }
        print("QEMU reconnected to the restarted daemon after \(ContinuousClock.now - restartedAt)")
        #expect(reconnected, "QEMU did not reconnect within 30 s\n\(failureContext)")

        // Hot-plug: the guest sees vdb with the controller's serial and runs fio on it.
        try waitForConsole("E2E-READY: hotplug", seconds: 240)
        let afterRestart = String(Self.read(console).dropFirst(consoleAtRestart))
        #expect(afterRestart.contains("E2E-OK: fio passed"), "the second fio finished after the restart began")
        #expect(try Self.sessions(daemon, "vhost.hp").isEmpty)
        try Libvirt.virshOK(["attach-device", name, diskXML.path, "--live"])
        milestone("vdb attached")
        try waitForConsole("E2E-READY: unplug", seconds: 180)
        #expect(try Self.sessions(daemon, "vhost.hp").first?["frontend_pid"]?.intValue == Int64(qemuPid))
        #expect(try Libvirt.virshOK(["domblklist", name]).contains("vdb"))

        // Unplug: the guest sees vdb go, QEMU closes the socket, libvirt drops the disk.
        try Libvirt.virshOK(["detach-device", name, diskXML.path, "--live"])
        milestone("vdb detached")
        try waitForConsole("E2E-OK: /dev/vdb gone", seconds: 60)
        try waitForConsole("E2E-OK: vda still there and readable", seconds: 30)
        #expect(Self.waitUntil(10) { (try? Self.sessions(daemon, "vhost.hp").isEmpty) ?? false },
                "vhost.hp still has a session after the unplug")
        #expect(try !Libvirt.virshOK(["domblklist", name]).contains("vdb"))

        // The guest powers off when its script ends.
        let shutOff = Self.waitUntil(60) { (try? Libvirt.virsh(["domstate", name]))?.output.contains("shut off") == true }
        #expect(shutOff, "the domain did not shut off\n\(failureContext)")
        let text = Self.read(console)
        #expect(GuestVM.exitStatus(in: text) == 0, "\(failureContext)")
        #expect(!text.contains("E2E-FAIL"))
        #expect(!text.contains("I/O error"), "the guest logged I/O errors\n\(failureContext)")
        let fioLines = text.split(whereSeparator: \.isNewline).filter { $0.contains("groupid=") && $0.contains("err=") }
        print("guest fio: " + fioLines.joined(separator: " | "))
        #expect(fioLines.count == 3 && fioLines.allSatisfy { $0.contains("err= 0") || $0.contains("err=0") }, "\(fioLines)")
        #expect(daemon.stop() == 0)
        print("libvirt e2e took \(ContinuousClock.now - started)")
    }
}
