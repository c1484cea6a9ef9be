import DaemonTestSupport
import Foundation
import JSONRPC
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Issue 24, "runs unprivileged": the real daemon started as a throwaway system
/// user, with no capability in any set (setpriv(1) `--inh-caps=-all
/// --bounding-set=-all`, the example unit's empty `CapabilityBoundingSet=`),
/// serves a guest's verified fio on an image file the user owns and on a loop
/// device it reaches through the `disk` group only (docs/OPERATIONS.md,
/// "Running unprivileged").
@Suite("vhost-blkd as an unprivileged user", .serialized, .enabled(if: E2EEnvironment.isEnabled, E2EEnvironment.skipComment))
struct UnprivilegedGuestTests {
    /// A system user and its own group, made with useradd(8) for one test and
    /// removed by `remove()`; also a member of `supplementaryGroups`.
    struct ThrowawayUser {
        let name: String
        let uid: uid_t
        let gid: gid_t

        init(supplementaryGroups: [String]) throws {
            // Unique per run: other suites run in parallel, and a crashed run may have left one behind.
            name = "vbu\(getpid())\(UInt16.random(in: 0...UInt16.max))"
            var arguments = ["--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                             "--shell", "/usr/sbin/nologin"]
            if !supplementaryGroups.isEmpty { arguments += ["--groups", supplementaryGroups.joined(separator: ",")] }
            let (status, output) = try runCommand("/usr/sbin/useradd", arguments + [name])
            guard status == 0 else { throw E2EError.failed("useradd \(name): \(output)") }
            guard let entry = getpwnam(name) else {
                _ = try? runCommand("/usr/sbin/userdel", [name])
                throw E2EError.failed("useradd made no passwd entry for \(name)")
            }
            uid = entry.pointee.pw_uid
            gid = entry.pointee.pw_gid
        }

        /// userdel(8) (which takes the user's own group with it), then the group if it stayed.
        func remove() {
            _ = try? runCommand("/usr/sbin/userdel", [name])
            if getgrnam(name) != nil { _ = try? runCommand("/usr/sbin/groupdel", [name]) }
        }

        /// setpriv(1) as this user with its groups (initgroups(3): its own and `disk`),
        /// nothing inheritable, an empty bounding set and no_new_privs, then exec.
        var launcher: [String] {
            ["/usr/bin/setpriv", "--reuid=\(uid)", "--regid=\(gid)", "--init-groups",
             "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
        }
    }

    /// The lines of /proc/PID/status, keyed by field ("CapEff" -> "0000000000000000").
    static func processStatus(_ pid: Int32) throws -> [String: String] {
        let text = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        var fields: [String: String] = [:]
        for line in text.split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            fields[String(line[..<colon])] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        return fields
    }

    @Test func servesAGuestWithNoCapabilities() throws {
        try E2EEnvironment.requireReady()
        guard geteuid() == 0 else { throw E2EError.failed("needs root to create the throwaway user (useradd)") }
        let user = try ThrowawayUser(supplementaryGroups: ["disk"])
        defer { user.remove() }
        guard let disk = getgrnam("disk")?.pointee.gr_gid else { throw E2EError.failed("no group disk") }

        // The daemon's folder (sockets, --config, images) belongs to the user, as
        // /run/vhost-blkd (RuntimeDirectory=) and /var/lib/vhost-blkd (StateDirectory=) do.
        let directory = try E2EEnvironment.makeWorkDirectory("unpriv")
        defer { try? FileManager.default.removeItem(at: directory) }
        let image = directory.appendingPathComponent("vm1.img").path
        let loopImage = directory.appendingPathComponent("loop.img").path
        let sizeMiB = 64
        for file in [image, loopImage] {
            try runCommand("/usr/bin/truncate", ["-s", "\(sizeMiB)M", file])
        }
        for path in [directory.path, image] {
            guard chown(path, user.uid, user.gid) == 0 else { throw E2EError.system("chown \(path)", errno) }
        }
        chmod(directory.path, 0o755)
        chmod(image, 0o600)
        chmod(loopImage, 0o600)  // root's: the daemon reaches it only through the loop device

        // A block device as Debian's udev leaves it (root:disk 0660, 50-udev-default.rules);
        // this machine's /dev may have no udev, so the test sets that and restores it.
        let (status, output) = try runCommand("/usr/sbin/losetup", ["-f", "--show", loopImage])
        guard status == 0 else { throw E2EError.failed("losetup failed: \(output)") }
        let device = output.trimmingCharacters(in: .whitespacesAndNewlines)
        var original = stat()
        guard stat(device, &original) == 0 else { throw E2EError.system("stat \(device)", errno) }
        defer {
            _ = try? runCommand("/usr/sbin/losetup", ["-d", device])
            chown(device, original.st_uid, original.st_gid)
            chmod(device, original.st_mode & 0o7777)
        }
        guard chown(device, 0, disk) == 0, chmod(device, 0o660) == 0 else { throw E2EError.system("chown \(device)", errno) }

        let config = directory.appendingPathComponent("config.json").path
        let daemon = try DaemonProcess(
            cpumask: "0x1",
            extraArguments: ["--config", config, "--persist", "--allowed-dir", directory.path, "--allowed-dir", "/dev",
                             "--rpc-socket-mode", "0660", "--rpc-socket-group", user.name],
            directory: directory, launcher: user.launcher)
        defer { daemon.stop() }

        // Who it runs as: the user, its groups, no capability at all, no way to gain one.
        let proc = try Self.processStatus(daemon.pid)
        for key in ["Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs"] {
            print("vhost-blkd pid \(daemon.pid) \(key): \(proc[key] ?? "?")")
        }
        #expect(proc["Uid"]?.split(separator: "\t").map(String.init) == Array(repeating: "\(user.uid)", count: 4))
        #expect(proc["Gid"]?.split(separator: "\t").map(String.init) == Array(repeating: "\(user.gid)", count: 4))
        #expect(Set(proc["Groups"]?.split(separator: " ").map(String.init) ?? []) == ["\(user.gid)", "\(disk)"])
        for key in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            #expect(proc[key] == "0000000000000000", "\(key)")
        }
        #expect(proc["NoNewPrivs"] == "1")

        // The file it owns, the block device through `disk`, sockets given to its own
        // group (chown(2) to a group of the owner's needs no CAP_CHOWN).
        try daemon.call("bdev_uring_create", ["filename": .string(image), "name": "disk0"])
        try daemon.call("bdev_uring_create", ["filename": .string(device), "name": "disk1"])
        let loopBdev = try daemon.call("bdev_get_bdevs", ["name": "disk1"]).arrayValue?.first
        #expect(loopBdev?["driver_specific"]?["uring"]?["direct"] == .bool(true), "block devices are opened O_DIRECT")
        for (ctrlr, bdev) in [("vhost.0", "disk0"), ("vhost.1", "disk1")] {
            try daemon.call("vhost_create_blk_controller", [
                "ctrlr": .string(ctrlr), "dev_name": .string(bdev), "socket_mode": "0660", "socket_group": .string(user.name),
            ])
        }
        // A group the user is not in would take CAP_CHOWN: refused, and nothing is left behind.
        #expect(throws: (any Error).self) {
            try daemon.call("vhost_create_blk_controller", ["ctrlr": "vhost.root", "dev_name": "disk0", "socket_group": "root"])
        }
        for socket in [daemon.rpcSocket, daemon.socketDirectory + "/vhost.0", daemon.socketDirectory + "/vhost.1"] {
            var info = stat()
            #expect(stat(socket, &info) == 0, "\(socket)")
            #expect(info.st_uid == user.uid && info.st_gid == user.gid && info.st_mode & 0o777 == 0o660, "\(socket)")
        }
        #expect(!FileManager.default.fileExists(atPath: daemon.socketDirectory + "/vhost.root"))
        // --persist: the atomic rename in a folder the user owns.
        var saved = stat()
        #expect(stat(config, &saved) == 0 && saved.st_uid == user.uid)
        #expect(((try? String(contentsOfFile: config, encoding: .utf8)) ?? "").contains("vhost.1"))

        // A guest (QEMU as root here; under libvirt, a member of the socket's group) with
        // verified fio on both disks.
        let work = try E2EEnvironment.makeWorkDirectory("unpriv-vm")
        defer { E2EEnvironment.removeWorkDirectory(work) }
        let script = GuestScript.diskCheck(sectors: UInt64(sizeMiB) * 2048, serial: "vhost.0", fio: FioJob(size: "16M"))
            .waitForDisk("vdb").expectSectors(UInt64(sizeMiB) * 2048, disk: "vdb").expectSerial("vhost.1", disk: "vdb")
            .runFio(FioJob(name: "e2e-loop", device: "/dev/vdb", size: "16M"))
        let disks = ["vhost.0", "vhost.1"].map { GuestDisk(socketPath: daemon.socketDirectory + "/" + $0, numQueues: 2) }
        let vm = try GuestVM(name: "unpriv", script: script, disks: disks, workDirectory: work)
        try vm.start()
        defer { vm.kill() }
        let result = try vm.waitForExit(timeout: .seconds(240))
        #expect(result.succeeded, "\(result.summary)\n--- daemon log ---\n\(daemon.log.suffix(3000))")
        let fioLines = result.console.split(whereSeparator: \.isNewline).filter { $0.contains("groupid=") && $0.contains("err=") }
        print("guest fio: " + fioLines.joined(separator: " | "))
        #expect(fioLines.count == 2 && fioLines.allSatisfy { $0.contains("err= 0") || $0.contains("err=0") }, "\(fioLines)")
        #expect(daemon.isRunning)
        #expect(daemon.stop() == 0)
        #expect(!FileManager.default.fileExists(atPath: daemon.rpcSocket))
    }
}
