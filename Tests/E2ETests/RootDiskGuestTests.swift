import DaemonTestSupport
import Foundation
import JSONRPC
import Testing

/// The demo's flow (scripts/demo.sh, issue 24): a guest boots its root
/// filesystem from a vhost-blkd disk. scripts/make-rootfs.sh builds a raw ext4
/// image; the daemon serves it as `vhost.root` and a second disk as
/// `vhost.data`; the kernel boots with `root=/dev/vda`, the initramfs switches
/// to the image's /sbin/init, which runs the script from the image.
@Suite("A guest whose root filesystem is on vhost-blkd", .serialized, .enabled(if: E2EEnvironment.isEnabled, E2EEnvironment.skipComment))
struct RootDiskGuestTests {
    @Test func bootsFromAVhostBlkdRootDisk() throws {
        try E2EEnvironment.requireReady()
        let work = try E2EEnvironment.makeWorkDirectory("rootdisk")
        defer { E2EEnvironment.removeWorkDirectory(work) }

        // The script in the root image: / is ext4 on /dev/vda (vhost.root), read-write;
        // verified fio on a file in it and on /dev/vdb (vhost.data); a stamp the host reads back.
        var rootJob = FioJob(name: "rootfs", device: "/var/e2e.fio", size: "8M", offset: "0")
        rootJob.extraArguments = ["--eta=never"]
        var dataJob = FioJob(name: "data", device: "/dev/vdb", size: "16M")
        dataJob.extraArguments = ["--eta=never"]
        let rootScript = GuestScript()
            .appending("""
                root=$(awk '$2 == "/" { print $1 " " $3 }' /proc/mounts)
                echo "E2E-OK: root is $root"
                [ "$root" = "/dev/vda ext4" ] || { echo "E2E-FAIL: / is $root, not /dev/vda ext4"; exit 1; }
                """)
            .expectFile("/sys/block/vda/serial", equals: "vhost.root")
            .waitForDisk("vdb")
            .expectFile("/sys/block/vdb/serial", equals: "vhost.data")
            .runFio(rootJob)
            .appending("rm -f /var/e2e.fio")
            .runFio(dataJob)
            .appending("echo written-by-the-guest > /var/e2e.stamp && sync")
            .appending("echo 'E2E-OK: ROOTDISK PASS'")
        let scriptURL = work.appendingPathComponent("root-test.sh")
        try Data(rootScript.text.utf8).write(to: scriptURL)
        let image = work.appendingPathComponent("root.img").path
        let made = try runCommand(
            "/bin/sh",
            [E2EEnvironment.repoRoot.appendingPathComponent("scripts/make-rootfs.sh").path,
             E2EEnvironment.baseInitrd.path, scriptURL.path, image, "192M"])
        try #require(made.status == 0, "make-rootfs.sh: \(made.output)")

        let daemon = try DaemonProcess(cpumask: "0x1")
        defer { daemon.stop(); daemon.cleanUp() }
        try daemon.call("bdev_uring_create", ["filename": .string(image), "name": "root"])
        try daemon.call("bdev_malloc_create", ["num_blocks": .int(32 * 2048), "block_size": 512, "name": "data"])
        try daemon.call("vhost_create_blk_controller", ["ctrlr": "vhost.root", "dev_name": "root"])
        try daemon.call("vhost_create_blk_controller", ["ctrlr": "vhost.data", "dev_name": "data"])

        // The initramfs's own /test.sh must not run: root= hands over to the image.
        let initrdScript = GuestScript().appending(
            "echo 'E2E-FAIL: the initramfs ran its /test.sh, ignoring root= (rebuild it: scripts/build-guest.sh)'; exit 1")
        let vm = try GuestVM(
            name: "rootdisk", script: initrdScript,
            disks: [
                GuestDisk(socketPath: daemon.socketDirectory + "/vhost.root", numQueues: 2, deviceProperties: ["bootindex=1"]),
                GuestDisk(socketPath: daemon.socketDirectory + "/vhost.data", numQueues: 2),
            ],
            workDirectory: work, kernelAppend: "root=/dev/vda rootfstype=ext4 console=ttyS0 panic=-1 quiet")
        try vm.start()
        let result = try vm.waitForExit(timeout: .seconds(300))
        #expect(result.succeeded, "\(result.summary)\n--- daemon log ---\n\(daemon.log.suffix(3000))")
        #expect(result.console.contains("E2E-ROOT: /dev/vda (ext4) mounted"))
        #expect(result.console.contains("E2E-OK: root is /dev/vda ext4"))
        #expect(result.console.contains("E2E-OK: ROOTDISK PASS"))
        #expect(daemon.stop() == 0)

        // What the guest wrote to its root filesystem is in the image (debugfs reads it without a mount).
        if let debugfs = ["/usr/sbin/debugfs", "/sbin/debugfs"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) {
            let stamp = try runCommand(debugfs, ["-R", "cat /var/e2e.stamp", image])
            #expect(stamp.output.contains("written-by-the-guest"), "\(stamp.output)")
        }
    }
}
