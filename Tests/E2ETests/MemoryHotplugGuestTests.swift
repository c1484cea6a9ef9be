import DaemonTestSupport
import Foundation
import JSONRPC
import Testing

/// Memory hot-plug under a running guest (issue 22): QEMU 7.2 negotiates
/// CONFIGURE_MEM_SLOTS and sends ADD_MEM_REG / REM_MEM_REG as DIMMs come and
/// go (vhost-user spec, "VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS";
/// docs/OPERATIONS.md, "Memory hot-plug").
@Suite("Memory hot-plug on vhost-blkd", .serialized, .enabled(if: E2EEnvironment.isEnabled, E2EEnvironment.skipComment))
struct MemoryHotplugGuestTests {
    static let dimms = 10
    static let dimmMiB = 128
    /// The script's stop signal: the test writes it into block 0 of the disk.
    static let doneMarker = "E2E-HOTPLUG-DONE"

    /// A guest started with `-m 512M,slots=16,maxmem=4G` (memfd, share=on)
    /// runs fio verify rounds on its vhost-blkd disk while ten 128 MiB memfd
    /// `pc-dimm`s are hot-plugged through QMP: QEMU accepts all ten, the
    /// daemon maps each (ADD_MEM_REG), and the guest onlines them (movable).
    /// Then each is unplugged with `device_del`: every DIMM the guest
    /// releases (DEVICE_DELETED) is removed from the daemon (REM_MEM_REG).
    /// fio's verification stays clean throughout.
    @Test func tenDimmsPluggedAndUnpluggedUnderFioVerify() throws {
        try E2EEnvironment.requireReady()
        let daemon = try DaemonProcess(cpumask: "0x1")
        defer { daemon.stop(); daemon.cleanUp() }
        let image = daemon.directory.appendingPathComponent("disk0.img").path
        try runCommand("/usr/bin/truncate", ["-s", "256M", image])
        try daemon.call("bdev_uring_create", ["filename": .string(image), "name": "disk0"])
        try daemon.call("vhost_create_blk_controller", ["ctrlr": "vhost.0", "dev_name": "disk0"])

        let script = GuestScript()
            .waitForDisk("vda")
            .appending("""
                mem_kb() { awk '/MemTotal/ { print $2 }' /proc/meminfo; }
                online_blocks() { cat /sys/devices/system/memory/memory*/state 2>/dev/null | grep -c online; }
                echo "E2E-MEM: start MemTotal $(mem_kb) kB, $(online_blocks) memory blocks online"
                round=0
                while [ "$(dd if=/dev/vda bs=4096 count=1 iflag=direct 2>/dev/null | head -c \(Self.doneMarker.count))" != "\(Self.doneMarker)" ]; do
                    round=$((round + 1))
                    [ "$round" -gt 300 ] && fail "no stop signal after 300 rounds"
                    run_fio --name=round$round --filename=/dev/vda --rw=randrw --bsrange=4k-64k --size=16M \\
                        --offset=$((1 + 16 * (round % 14)))M --ioengine=libaio --direct=1 --iodepth=8 --runtime=120 \\
                        --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_dump=0 >/dev/null
                    echo "E2E-ROUND: $round MemTotal $(mem_kb) kB, $(online_blocks) memory blocks online"
                done
                echo "E2E-MEM: end MemTotal $(mem_kb) kB, $(online_blocks) memory blocks online, $round fio rounds"
                dmesg | grep -i -E 'memory|dimm|acpi' | tail -n 20
                """)

        let work = try E2EEnvironment.makeWorkDirectory("memory-hotplug")
        defer { E2EEnvironment.removeWorkDirectory(work) }
        let vm = try GuestVM(
            name: "hotplug", script: script,
            disks: [GuestDisk(socketPath: daemon.socketDirectory + "/vhost.0", numQueues: 2)],
            workDirectory: work, memoryMiB: 512, hotplugMemory: (slots: 16, maxMiB: 4096), qmp: true,
            kernelAppend: "console=ttyS0 panic=-1 quiet memhp_default_state=online_movable")
        try vm.start()
        defer { vm.kill() }
        try vm.waitForConsole("E2E-ROUND: 1 ", timeout: .seconds(240))
        let qmp = try QMPClient(socketPath: vm.qmpSocketPath ?? "")
        let added = { daemon.log.components(separatedBy: "memory region added").count - 1 }
        let removed = { daemon.log.components(separatedBy: "memory region removed").count - 1 }
        let bootRegions = added()
        #expect(bootRegions > 0, "QEMU did not use ADD_MEM_REG:\n\(daemon.log.suffix(3000))")
        #expect(!daemon.log.contains("SET_MEM_TABLE"))

        // Plug, one DIMM every half second, while fio runs.
        var accepted = 0
        for i in 0..<Self.dimms {
            do {
                try qmp.execute("object-add", arguments: [
                    "qom-type": "memory-backend-memfd", "id": "dimm-mem\(i)", "size": Self.dimmMiB << 20, "share": true,
                ])
                try qmp.execute("device_add", arguments: ["driver": "pc-dimm", "id": "dimm\(i)", "memdev": "dimm-mem\(i)"])
                accepted += 1
            } catch {
                Issue.record("DIMM \(i): \(error)")
            }
            usleep(500_000)
        }
        #expect(accepted == Self.dimms)
        #expect(added() == bootRegions + Self.dimms, "\(daemon.log.suffix(3000))")
        // The guest onlines them (memhp_default_state=online_movable) and goes on verifying.
        let rounds = { GuestVM.count("E2E-ROUND:", in: vm.console()) }
        let afterPlug = rounds()
        try vm.waitForConsole("E2E-ROUND: \(afterPlug + 2) ", timeout: .seconds(180))
        let pluggedLine = Self.lastRoundLine(vm.console())
        let startKiB = Self.memTotalKiB(in: Self.line("E2E-MEM: start", in: vm.console()))
        let pluggedKiB = Self.memTotalKiB(in: pluggedLine)
        #expect(startKiB > 0 && pluggedKiB >= startKiB + (Self.dimms * Self.dimmMiB - 16) << 10,
                "the guest did not online the DIMMs: \(startKiB) kB, then \(pluggedLine)")

        // Unplug: the guest offlines and ejects what it can (ACPI); QEMU then drops the DIMM.
        for i in 0..<Self.dimms {
            do {
                try qmp.execute("device_del", arguments: ["id": "dimm\(i)"])
            } catch {
                Issue.record("device_del dimm\(i): \(error)")
            }
        }
        var deleted: Set<String> = []
        let deadline = ContinuousClock.now + .seconds(120)
        while deleted.count < Self.dimms && ContinuousClock.now < deadline {
            guard let event = try? qmp.waitForEvent("DEVICE_DELETED", timeout: .seconds(5)) else { continue }
            if let id = event["device"] as? String, id.hasPrefix("dimm") { deleted.insert(id) }
        }
        // A released DIMM's memory backend can go too.
        for id in deleted.sorted() {
            do {
                try qmp.execute("object-del", arguments: ["id": "dimm-mem\(id.dropFirst("dimm".count))"])
            } catch {
                Issue.record("object-del for \(id): \(error)")
            }
        }
        // Each DIMM QEMU dropped was removed from the daemon's table, none other.
        let removeDeadline = ContinuousClock.now + .seconds(10)
        while removed() < deleted.count && ContinuousClock.now < removeDeadline { usleep(100_000) }
        #expect(removed() == deleted.count, "\(daemon.log.suffix(3000))")
        // The test kernel offlines movable DIMMs and ejects them (ACPI memory hot-unplug).
        #expect(deleted.count == Self.dimms, "released: \(deleted.sorted())")
        let afterUnplug = rounds()
        try vm.waitForConsole("E2E-ROUND: \(afterUnplug + 2) ", timeout: .seconds(180))

        // Stop the guest's loop: the marker in block 0 (fio stays above 1 MiB).
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: image))
        try handle.write(contentsOf: Data(Self.doneMarker.utf8))
        try handle.synchronize()
        try handle.close()
        let result = try vm.waitForExit(timeout: .seconds(300))
        #expect(result.succeeded, "\(result.summary)\n--- daemon log ---\n\(daemon.log.suffix(3000))")
        #expect(!result.console.contains("E2E-FAIL"))
        #expect(!daemon.log.contains("disconnecting frontend"))
        #expect(daemon.isRunning)
        let startLine = Self.line("E2E-MEM: start", in: result.console)
        let endLine = Self.line("E2E-MEM: end", in: result.console)
        #expect(Self.memTotalKiB(in: endLine) == startKiB, "\(endLine)")
        print("""
            memory hot-plug: \(accepted) of \(Self.dimms) DIMMs of \(Self.dimmMiB) MiB accepted by QEMU, \
            \(added() - bootRegions) ADD_MEM_REG on the daemon (\(bootRegions) boot regions)
            memory hot-plug: \(startLine)
            memory hot-plug: after plugging: \(pluggedLine)
            memory hot-plug: device_del: \(deleted.count) of \(Self.dimms) DIMMs released by the guest \
            (DEVICE_DELETED), \(removed()) REM_MEM_REG on the daemon
            memory hot-plug: \(endLine)
            """)
    }

    /// The console's last `E2E-ROUND:` line. (The serial console ends lines
    /// with CR LF, one Character in Swift: split on `isNewline`.)
    static func lastRoundLine(_ console: String) -> String {
        String(console.split(whereSeparator: \.isNewline).last { $0.contains("E2E-ROUND:") } ?? "")
    }

    /// The console's first line containing `marker`.
    static func line(_ marker: String, in console: String) -> String {
        String(console.split(whereSeparator: \.isNewline).first { $0.contains(marker) } ?? "")
    }

    /// N in a line's `MemTotal N kB` (0 when absent).
    static func memTotalKiB(in line: String) -> Int {
        guard let range = line.range(of: "MemTotal ") else { return 0 }
        return Int(line[range.upperBound...].prefix { $0.isNumber }) ?? 0
    }
}
