import DaemonTestSupport
import Foundation
import Synchronization
import JSONRPC
import Posix
import Testing
import VhostUser
import VhostUserFrontend
import Virtio

/// Ceph RBD bdevs (bdev_rbd_*, SPDK's methods) against the real daemon and a
/// real single-node cluster (scripts/ceph-test-cluster.sh): what the guest
/// writes through the in-repo front end is read back through the daemon and
/// through `rbd export`, straight from the cluster.
@Suite("Ceph RBD bdevs against a real cluster", .serialized, .cephCluster)
struct RBDTests {
    typealias D = DataPathTests
    static let imageMiB = 16

    /// A daemon with cluster `c1` registered (over vhost-blkctl) and a new image `name` of `imageMiB`.
    static func daemonWithCluster(_ cluster: CephTestCluster, image name: String) throws -> DaemonProcess {
        try cluster.rbd("create", "--size", "\(imageMiB)", "rbd/\(name)")
        let daemon = try DaemonProcess(cpumask: "0x1")
        let (status, output) = try runCommand(
            DaemonProcess.ctlPath, ["-s", daemon.rpcSocket, "bdev_rbd_register_cluster", "c1", "--config-file", cluster.configPath])
        #expect(status == 0, "bdev_rbd_register_cluster: \(output)")
        #expect(output.contains("\"c1\""))
        return daemon
    }

    /// Writes `count` requests of 4 KiB at once on `queue` (all in flight
    /// together), then reads each back and compares.
    static func deepRoundTrip(_ f: VhostUserFrontend, queue: Int, firstSector: UInt64, count: Int, seed: Int) throws -> Bool {
        let q = try f.driverQueue(queue)
        var statuses: [GuestBuffer] = []
        var owned: [GuestBuffer] = []
        defer { owned.forEach(f.memory.release) }
        for i in 0..<count {
            let header = try f.memory.allocate(16, alignment: 16)
            header.write(BlkWire.header(type: BlkWire.typeOut, sector: firstSector + UInt64(i * 8)))
            let data = try f.memory.allocate(4096, alignment: 512)
            data.write(D.pattern(4096, seed: seed + i))
            let status = try f.memory.allocate(1, alignment: 1)
            status.pointer.storeBytes(of: 0xff, as: UInt8.self)
            owned += [header, data, status]
            statuses.append(status)
            _ = try q.addChain([ChainBuffer(header, writable: false), ChainBuffer(data, writable: false), ChainBuffer(status, writable: true)])
        }
        q.publishAndKick()
        for _ in 0..<count { _ = try q.waitUsed(timeout: .seconds(30)) }
        guard statuses.allSatisfy({ $0.pointer.load(as: UInt8.self) == BlkWire.statusOK }) else { return false }
        for i in 0..<count {
            let r = try f.read(queue: queue, sector: firstSector + UInt64(i * 8), count: 8)
            guard r.status == BlkWire.statusOK, r.data == D.pattern(4096, seed: seed + i) else { return false }
        }
        return true
    }

    @Test func verifiedIOThroughTheFrontEndReachesTheCluster() throws {
        let cluster = try CephTestCluster.required()
        let daemon = try Self.daemonWithCluster(cluster, image: "io")
        defer { daemon.stop(); daemon.cleanUp() }
        try D.withLogOnError(daemon) { () throws in
            let (status, output) = try runCommand(
                DaemonProcess.ctlPath, ["-s", daemon.rpcSocket, "bdev_rbd_create", "rbd", "io", "512", "-c", "c1", "-b", "R0"])
            #expect(status == 0, "bdev_rbd_create: \(output)")
            let bdev = try daemon.call("bdev_get_bdevs", ["name": "R0"]).arrayValue?.first
            #expect(bdev?["product_name"] == .string("Ceph Rbd Disk"))
            #expect(bdev?["num_blocks"] == .int(Int64(Self.imageMiB) << 11))
            let rbd = bdev?["driver_specific"]?["rbd"]
            #expect(rbd?["pool_name"] == .string("rbd"))
            #expect(rbd?["rbd_name"] == .string("io"))
            #expect(rbd?["cluster_name"] == .string("c1"))
            #expect(rbd?["config_file"] == .string(cluster.configPath))
            try D.createController(daemon, "vhost.r", bdev: "R0")

            let memory = try FrontendMemory(size: 16 << 20)
            defer { memory.close() }
            let f = try D.attach(daemon, "vhost.r", memory: memory)
            defer { f.close() }
            #expect(try LifecycleTests.capacity(f) == UInt64(Self.imageMiB) << 11)
            // One request at a time on each queue, then 40 in flight on each (3 descriptors
            // a request fill 120 of the 128-entry rings): librbd completes them in any order.
            #expect(try D.roundTrip(f, queue: 0, sector: 3, seed: 1))
            #expect(try D.roundTrip(f, queue: 1, sector: 4, seed: 2))
            #expect(try Self.deepRoundTrip(f, queue: 0, firstSector: 1024, count: 40, seed: 10))
            #expect(try Self.deepRoundTrip(f, queue: 1, firstSector: 4096, count: 40, seed: 200))
            #expect(try f.flush().status == BlkWire.statusOK)

            // The bytes are in the cluster: rbd export reads them without the daemon.
            #expect(try cluster.exported("io", offset: 3 * 512, length: 512) == D.pattern(512, seed: 1))
            #expect(try cluster.exported("io", offset: 4096 * 512 + 4096 * 39, length: 4096) == D.pattern(4096, seed: 239))

            // Write-zeroes reads back as zeroes, on the cluster too; discard is a hint
            // (librbd skips partial-object discards by default, rbd_skip_partial_discard).
            #expect(try f.writeZeroes(segments: [BlkSegment(sector: 3, sectors: 1)]).status == BlkWire.statusOK)
            #expect(try f.read(sector: 3, count: 1).data == [UInt8](repeating: 0, count: 512))
            #expect(try cluster.exported("io", offset: 3 * 512, length: 512) == [UInt8](repeating: 0, count: 512))
            #expect(try f.discard(segments: [BlkSegment(sector: 1024, sectors: 8)]).status == BlkWire.statusOK)
            // Past the end: IOERR, nothing reaches the cluster.
            #expect(try f.read(sector: UInt64(Self.imageMiB) << 11, count: 1).status == BlkWire.statusIOErr)

            let load = try VerifiedIOLoad(frontend: f, sectors: 2048)
            #expect(load.waitForRounds(50, timeout: .seconds(30)))
            let outcome = load.stop()
            #expect(outcome.errors == 0, "\(outcome.firstError ?? "")")
        }
        // The queues stop once librbd has completed everything they started.
        try Self.deleteController(daemon, "vhost.r")
        #expect(try daemon.call("bdev_rbd_delete", ["name": "R0"]) == .bool(true))
        // Closed: the image has no watcher left, so Ceph lets it be removed.
        try cluster.rbd("rm", "rbd/io")
        try daemon.call("bdev_rbd_unregister_cluster", ["name": "c1"])
        #expect(try daemon.call("bdev_rbd_get_clusters_info") == .array([]))
    }

    /// A stopping queue that wrote flushes its image before it answers
    /// GET_VRING_BASE (librbd's writearound cache acknowledges a write as it
    /// sends it, and a live migration's destination reads without the lock);
    /// a queue that only read answers without one.
    @Test func aStoppingQueueThatWroteFlushesTheImage() throws {
        let cluster = try CephTestCluster.required()
        let daemon = try Self.daemonWithCluster(cluster, image: "stopflush")
        defer { daemon.stop(); daemon.cleanUp() }
        try daemon.call("bdev_rbd_create", [
            "pool_name": "rbd", "rbd_name": "stopflush", "block_size": 512, "cluster_name": "c1", "name": "R0",
        ])
        try D.createController(daemon, "vhost.r", bdev: "R0")
        let marker = "queue stop: RBD image flushed"
        do {
            let memory = try FrontendMemory(size: 16 << 20)
            defer { memory.close() }
            let f = try D.attach(daemon, "vhost.r", memory: memory)
            defer { f.close() }
            // A flush first takes librbd's cache out of writethrough (rbd_cache_writethrough_until_flush).
            #expect(try f.flush(queue: 1).status == BlkWire.statusOK)
            #expect(try D.roundTrip(f, queue: 0, sector: 8, seed: 3))
            #expect(try f.read(queue: 1, sector: 8, count: 1).data == D.pattern(512, seed: 3))
            #expect(!daemon.log.contains(marker))
            _ = try f.stop()
            var flushes: [Substring] = []
            let start = ContinuousClock.now
            while flushes.isEmpty, ContinuousClock.now - start < .seconds(2) {
                flushes = daemon.log.split(whereSeparator: \.isNewline).filter { $0.contains(marker) }
                if flushes.isEmpty { usleep(20_000) }
            }
            #expect(flushes.count == 1, "\(flushes)")
            #expect(flushes.first?.contains("vq.index=0") == true, "\(flushes)")
        }
        #expect(try cluster.exported("stopflush", offset: 8 * 512, length: 512) == D.pattern(512, seed: 3))
        try Self.deleteController(daemon, "vhost.r")
        #expect(try daemon.call("bdev_rbd_delete", ["name": "R0"]) == .bool(true))
        try cluster.rbd("rm", "rbd/stopflush")
    }

    @Test func resizeGrowsTheImageAndTheGuestIsTold() throws {
        let cluster = try CephTestCluster.required()
        let daemon = try Self.daemonWithCluster(cluster, image: "grow")
        defer { daemon.stop(); daemon.cleanUp() }
        try D.withLogOnError(daemon) { () throws in
            try daemon.call("bdev_rbd_create", ["pool_name": "rbd", "rbd_name": "grow", "block_size": 4096, "cluster_name": "c1"])
            #expect(try LifecycleTests.numBlocks(daemon, "Ceph0") == Int64(Self.imageMiB) << 8)
            try D.createController(daemon, "vhost.g", bdev: "Ceph0")
            let memory = try FrontendMemory(size: 16 << 20)
            defer { memory.close() }
            let f = try D.attach(daemon, "vhost.g", memory: memory)
            defer { f.close() }
            #expect(try daemon.call("bdev_rbd_resize", ["name": "Ceph0", "new_size": 32]) == .bool(true))
            try LifecycleTests.expectConfigChange(f)
            #expect(try LifecycleTests.capacity(f) == 32 << 11)
            #expect(try LifecycleTests.numBlocks(daemon, "Ceph0") == 32 << 8)
            #expect(try cluster.rbd("info", "rbd/grow").contains("size 32 MiB"))
            // The new end is writable.
            #expect(try D.roundTrip(f, sector: (32 << 11) - 1, seed: 5))
            // SPDK refuses to shrink an rbd bdev.
            let message = expectRPCError(-Int(EINVAL)) { try daemon.call("bdev_rbd_resize", ["name": "Ceph0", "new_size": 16]) }
            #expect(message.contains("must not be smaller"))
            _ = expectRPCError(-Int(ENODEV)) { try daemon.call("bdev_rbd_resize", ["name": "nope", "new_size": 64]) }
        }
    }

    /// `rbd resize` outside the daemon: librbd's update watch reports it,
    /// the guest gets CONFIG_CHANGE and the new capacity, bdev_get_bdevs
    /// the new size; a shrink too (blocks past the new end: IOERR). The
    /// watch is gone with the bdev: Ceph then lets the image be removed.
    @Test func resizeOutsideTheDaemonReachesTheGuest() throws {
        let cluster = try CephTestCluster.required()
        let daemon = try Self.daemonWithCluster(cluster, image: "ext")
        defer { daemon.stop(); daemon.cleanUp() }
        try D.withLogOnError(daemon) { () throws in
            try daemon.call("bdev_rbd_create", ["pool_name": "rbd", "rbd_name": "ext", "block_size": 512, "cluster_name": "c1", "name": "E0"])
            try D.createController(daemon, "vhost.e", bdev: "E0")
            let memory = try FrontendMemory(size: 16 << 20)
            defer { memory.close() }
            do {
                let f = try D.attach(daemon, "vhost.e", memory: memory)
                defer { f.close() }
                #expect(try LifecycleTests.capacity(f) == UInt64(Self.imageMiB) << 11)
                #expect(try D.roundTrip(f, sector: 100, seed: 3))

                let grown = ContinuousClock.now
                try cluster.rbd("resize", "--size", "24", "rbd/ext")
                let grow = try LifecycleTests.expectConfigChange(f)
                #expect(try LifecycleTests.capacity(f) == 24 << 11)
                #expect(try LifecycleTests.numBlocks(daemon, "E0") == 24 << 11)
                #expect(try D.roundTrip(f, sector: (24 << 11) - 1, seed: 6))
                print("rbd resize 16 -> 24 MiB: CONFIG_CHANGE \(grow) after the resize returned, \(ContinuousClock.now - grown) in all")

                try cluster.rbd("resize", "--size", "8", "--allow-shrink", "rbd/ext")
                let shrink = try LifecycleTests.expectConfigChange(f)
                #expect(try LifecycleTests.capacity(f) == 8 << 11)
                #expect(try LifecycleTests.numBlocks(daemon, "E0") == 8 << 11)
                #expect(try f.read(sector: 8 << 11, count: 1).status == BlkWire.statusIOErr)
                #expect(try f.read(sector: 100, count: 1).data == D.pattern(512, seed: 3))
                print("rbd resize 24 -> 8 MiB (shrink): CONFIG_CHANGE \(shrink) after the resize returned")
                #expect(daemon.log.contains("was resized outside the daemon"))
            }
            try Self.deleteController(daemon, "vhost.e")
            #expect(try daemon.call("bdev_rbd_delete", ["name": "E0"]) == .bool(true))
            try cluster.rbd("rm", "rbd/ext")
        }
    }

    /// Adds one 4 KiB write of `D.pattern(4096, seed:)` at `sector` to
    /// `queue` and kicks; returns its status byte's buffer. Its buffers go
    /// with the frontend's memory.
    static func startWrite(_ f: VhostUserFrontend, queue: Int = 0, sector: UInt64, seed: Int) throws -> GuestBuffer {
        let q = try f.driverQueue(queue)
        let header = try f.memory.allocate(16, alignment: 16)
        header.write(BlkWire.header(type: BlkWire.typeOut, sector: sector))
        let data = try f.memory.allocate(4096, alignment: 512)
        data.write(D.pattern(4096, seed: seed))
        let status = try f.memory.allocate(1, alignment: 1)
        status.pointer.storeBytes(of: 0xff, as: UInt8.self)
        _ = try q.addChain([ChainBuffer(header, writable: false), ChainBuffer(data, writable: false), ChainBuffer(status, writable: true)])
        q.publishAndKick()
        return status
    }

    /// Seconds since `start`.
    static func seconds(since start: ContinuousClock.Instant) -> Double {
        let elapsed = ContinuousClock.now - start
        return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    }

    /// The OSD stopped under I/O (scripts/ceph-test-cluster.sh stop-osd):
    /// on a cluster registered as it comes (no `rados_osd_op_timeout`) a
    /// write waits; on one registered with `rados_osd_op_timeout=3` it fails
    /// with IOERR after about 3 s; a malloc controller of the same reactor
    /// serves verified I/O and the RPC socket answers meanwhile; deleting the
    /// waiting bdev or controller is refused at once, a forced controller
    /// delete answers once librbd gave the requests back. With the OSD back
    /// the waiting write completes and reads back.
    @Test func stoppedOSDWaitsOrTimesOutAndOthersKeepServing() throws {
        let cluster = try CephTestCluster.required()
        for image in ["wait", "tmo", "del"] { try cluster.rbd("create", "--size", "16", "rbd/\(image)") }
        let daemon = try DaemonProcess(cpumask: "0x1")
        defer { daemon.stop(); daemon.cleanUp() }
        var osdStopped = false
        defer { if osdStopped { try? cluster.startOSD() } }
        try D.withLogOnError(daemon) { () throws in
            try daemon.call("bdev_rbd_register_cluster", ["name": "c1", "config_file": .string(cluster.configPath)])
            try daemon.call("bdev_rbd_register_cluster", [
                "name": "c2", "config_file": .string(cluster.configPath), "config_param": ["rados_osd_op_timeout": "3"],
            ])
            try daemon.call("bdev_rbd_create", ["pool_name": "rbd", "rbd_name": "wait", "block_size": 512, "cluster_name": "c1", "name": "W0"])
            try daemon.call("bdev_rbd_create", ["pool_name": "rbd", "rbd_name": "tmo", "block_size": 512, "cluster_name": "c2", "name": "T0"])
            try daemon.call("bdev_rbd_create", ["pool_name": "rbd", "rbd_name": "del", "block_size": 512, "cluster_name": "c1", "name": "X0"])
            try D.createBdev(daemon, .malloc, name: "M0")
            for (ctrlr, bdev) in [("vhost.w", "W0"), ("vhost.t", "T0"), ("vhost.x", "X0"), ("vhost.m", "M0")] {
                try D.createController(daemon, ctrlr, bdev: bdev)
            }
            let memories = try (0..<4).map { _ in try FrontendMemory(size: 16 << 20) }
            defer { memories.forEach { $0.close() } }
            let fw = try D.attach(daemon, "vhost.w", memory: memories[0])
            defer { fw.close() }
            let ft = try D.attach(daemon, "vhost.t", memory: memories[1])
            defer { ft.close() }
            let fx = try D.attach(daemon, "vhost.x", memory: memories[2])
            defer { fx.close() }
            let fm = try D.attach(daemon, "vhost.m", memory: memories[3])
            defer { fm.close() }
            // Each image's exclusive lock taken while the OSD is up.
            for (i, f) in [fw, ft, fx, fm].enumerated() { #expect(try D.roundTrip(f, sector: 1, seed: i)) }

            try cluster.stopOSD()
            osdStopped = true
            let stopped = ContinuousClock.now
            let waiting = try Self.startWrite(fw, sector: 200, seed: 7)
            let timingOut = try Self.startWrite(ft, sector: 200, seed: 8)
            let deleted = try Self.startWrite(fx, sector: 200, seed: 9)

            // The forced delete of vhost.x waits for its request, on a thread of its own.
            let forced = Mutex<(ok: Bool, seconds: Double)?>(nil)
            let forceStart = ContinuousClock.now
            let forceThread = Thread {
                let ok = (try? daemon.call("vhost_delete_controller", ["ctrlr": "vhost.x", "force": true])) == .bool(true)
                forced.withLock { $0 = (ok, Self.seconds(since: forceStart)) }
            }
            forceThread.start()

            // Meanwhile: malloc I/O verified, the RPC socket prompt, deletes of what waits refused at once.
            var mallocRounds = 0
            var slowestRPC = 0.0
            var timedOutAfter: Double?
            let ftQueue = try ft.driverQueue(0)
            while Self.seconds(since: stopped) < 6 {
                #expect(try D.roundTrip(fm, queue: mallocRounds % 2, sector: UInt64(8 + mallocRounds % 64), seed: 100 + mallocRounds))
                mallocRounds += 1
                if mallocRounds % 20 == 0 {
                    let before = ContinuousClock.now
                    #expect(try daemon.call("spdk_get_version")["version"] != nil)
                    slowestRPC = max(slowestRPC, Self.seconds(since: before))
                }
                if timedOutAfter == nil, ftQueue.popUsed() != nil { timedOutAfter = Self.seconds(since: stopped) }
            }
            let before = ContinuousClock.now
            _ = expectRPCError(-Int(EBUSY)) { try daemon.call("bdev_rbd_delete", ["name": "W0"]) }
            _ = expectRPCError(-Int(EBUSY)) { try daemon.call("vhost_delete_controller", ["ctrlr": "vhost.w"]) }
            #expect(Self.seconds(since: before) < 1)
            #expect(forced.withLock { $0 } == nil, "a forced delete answers once librbd gave its requests back")
            if timedOutAfter == nil, (try? ftQueue.waitUsed(timeout: .seconds(10))) != nil { timedOutAfter = Self.seconds(since: stopped) }
            #expect(timedOutAfter != nil, "rados_osd_op_timeout=3: the write fails")
            #expect(timingOut.pointer.load(as: UInt8.self) == BlkWire.statusIOErr)
            #expect(waiting.pointer.load(as: UInt8.self) == 0xff, "no rados_osd_op_timeout: the write waits")
            #expect(deleted.pointer.load(as: UInt8.self) == 0xff)
            let outage = Self.seconds(since: stopped)

            let restarting = ContinuousClock.now
            try cluster.startOSD()
            osdStopped = false
            let startOSDSeconds = Self.seconds(since: restarting)
            _ = try fw.driverQueue(0).waitUsed(timeout: .seconds(60))
            let resumedAfter = Self.seconds(since: restarting)
            #expect(waiting.pointer.load(as: UInt8.self) == BlkWire.statusOK)
            #expect(try fw.read(sector: 200, count: 8).data == D.pattern(4096, seed: 7))
            #expect(try D.roundTrip(fw, sector: 300, seed: 11))
            #expect(try D.roundTrip(ft, sector: 300, seed: 12), "the timed-out bdev serves again")
            let deadline = ContinuousClock.now + .seconds(60)
            while forced.withLock({ $0 }) == nil && ContinuousClock.now < deadline { usleep(50_000) }
            let forceResult = forced.withLock { $0 }
            #expect(forceResult?.ok == true)
            #expect(try daemon.call("bdev_rbd_delete", ["name": "X0"]) == .bool(true))
            print("""
                OSD stopped \(String(format: "%.1f", outage)) s: \(mallocRounds) verified malloc round trips, \
                slowest spdk_get_version \(String(format: "%.3f", slowestRPC)) s, \
                rados_osd_op_timeout=3 write IOERR after \(timedOutAfter.map { String(format: "%.1f", $0) } ?? "-") s; \
                start-osd took \(String(format: "%.1f", startOSDSeconds)) s, the waiting write completed \(String(format: "%.1f", resumedAfter)) s after it began, \
                forced controller delete answered after \(forceResult.map { String(format: "%.1f", $0.seconds) } ?? "-") s
                """)
        }
    }

    @Test func refusalsAndErrors() throws {
        let cluster = try CephTestCluster.required()
        let daemon = try Self.daemonWithCluster(cluster, image: "busy")
        defer { daemon.stop(); daemon.cleanUp() }
        try D.withLogOnError(daemon) { () throws in
            // A cluster that is not registered; an image that does not exist.
            var message = expectRPCError(-Int(ENOENT)) {
                try daemon.call("bdev_rbd_create", ["pool_name": "rbd", "rbd_name": "busy", "block_size": 512, "cluster_name": "nope"])
            }
            #expect(message.contains("nope"))
            message = expectRPCError(-Int(ENOENT)) {
                try daemon.call("bdev_rbd_create", ["pool_name": "rbd", "rbd_name": "missing", "block_size": 512, "cluster_name": "c1"])
            }
            #expect(message.contains("rbd/missing"))
            _ = expectRPCError(-Int(EINVAL)) {
                try daemon.call("bdev_rbd_create", ["pool_name": "rbd", "rbd_name": "busy", "block_size": 1000, "cluster_name": "c1"])
            }
            _ = expectRPCError(-32602) {
                try daemon.call("bdev_rbd_register_cluster", ["name": "x", "config_param": ["mon_host": 5]])
            }
            _ = expectRPCError(-Int(EEXIST)) {
                try daemon.call("bdev_rbd_register_cluster", ["name": "c1", "config_file": .string(cluster.configPath)])
            }
            _ = expectRPCError(-Int(ENOENT)) { try daemon.call("bdev_rbd_get_clusters_info", ["name": "nope"]) }
            _ = expectRPCError(-Int(ENOENT)) { try daemon.call("bdev_rbd_unregister_cluster", ["name": "nope"]) }

            // In use: the cluster by a bdev, the bdev by a controller.
            try daemon.call("bdev_rbd_create", ["pool_name": "rbd", "rbd_name": "busy", "block_size": 512, "cluster_name": "c1", "name": "B0"])
            try D.createController(daemon, "vhost.b", bdev: "B0")
            message = expectRPCError(-Int(EBUSY)) { try daemon.call("bdev_rbd_unregister_cluster", ["name": "c1"]) }
            #expect(message.contains("B0"))
            _ = expectRPCError(-Int(EBUSY)) { try daemon.call("bdev_rbd_delete", ["name": "B0"]) }
            _ = expectRPCError(-Int(ENODEV)) { try daemon.call("bdev_rbd_delete", ["name": "nope"]) }
            // A read-only bdev of its own connection (user_id and config, no registered cluster).
            let mon = try Self.monHost(cluster)
            try daemon.call("bdev_rbd_create", [
                "pool_name": "rbd", "rbd_name": "busy", "block_size": 512, "name": "B1", "read_only": true,
                "config": ["mon_host": .string(mon), "auth_client_required": "none"],
            ])
            let rbd = try daemon.call("bdev_get_bdevs", ["name": "B1"]).arrayValue?.first?["driver_specific"]?["rbd"]
            #expect(rbd?["config"]?["mon_host"] == .string(mon))
            #expect(rbd?["cluster_name"] == nil)
            try D.createController(daemon, "vhost.ro", bdev: "B1")
            let memory = try FrontendMemory(size: 16 << 20)
            defer { memory.close() }
            let f = try D.attach(daemon, "vhost.ro", memory: memory)
            defer { f.close() }
            #expect(try f.write(sector: 0, data: D.pattern(512, seed: 1)).status == BlkWire.statusIOErr)
            #expect(try f.read(sector: 0, count: 1).status == BlkWire.statusOK)
        }
    }

    /// SPDK's `core_mask`: the threads librados and librbd start for a
    /// cluster registered with one run only on its CPUs (the registering
    /// and opening threads are pinned meanwhile, then given their CPUs
    /// back), while the daemon's own threads keep theirs; a mask that does
    /// not parse, or names CPUs the daemon may not use, is refused.
    @Test func coreMaskPinsTheClustersThreads() throws {
        let cluster = try CephTestCluster.required()
        try cluster.rbd("create", "--size", "\(Self.imageMiB)", "rbd/pinned")
        let daemon = try DaemonProcess(cpumask: "0x1")
        defer { daemon.stop(); daemon.cleanUp() }
        try D.withLogOnError(daemon) { () throws in
            _ = expectRPCError(-Int(EINVAL)) {
                try daemon.call("bdev_rbd_register_cluster", ["name": "c0", "config_file": .string(cluster.configPath), "core_mask": "0xZZ"])
            }
            let message = expectRPCError(-Int(EINVAL)) {
                try daemon.call("bdev_rbd_register_cluster", ["name": "c0", "config_file": .string(cluster.configPath), "core_mask": "[1023]"])
            }
            #expect(message.contains("may not use"), "\(message)")
            // CPU 0, the reactor's: not one of the control threads' CPUs, which
            // the method must not take for all the process may use.
            let target = CPUSet.allowed().cpus.first ?? 0
            let before = Self.threads(daemon.pid)
            try daemon.call("bdev_rbd_register_cluster", [
                "name": "c1", "config_file": .string(cluster.configPath), "core_mask": .string(CPUSet([target]).hexMask),
            ])
            try daemon.call("bdev_rbd_create", ["pool_name": "rbd", "rbd_name": "pinned", "block_size": 512, "cluster_name": "c1", "name": "P0"])
            try D.createController(daemon, "vhost.p", bdev: "P0")
            let memory = try FrontendMemory(size: 16 << 20)
            defer { memory.close() }
            let f = try D.attach(daemon, "vhost.p", memory: memory)
            defer { f.close() }
            #expect(try D.roundTrip(f, sector: 8, seed: 3))
            let after = Self.threads(daemon.pid)
            let started = after.filter { before[$0.key] == nil }
            #expect(started.count >= 5, "librados starts its messenger, timer and finisher threads: \(started)")
            print("core_mask CPU \(target): \(started.count) threads started: "
                + started.values.map { "\($0.name)@\($0.cpus)" }.sorted().joined(separator: " "))
            for (tid, thread) in started.sorted(by: { $0.key < $1.key }) where !Self.daemonThreadPrefixes.contains(where: thread.name.hasPrefix) {
                #expect(thread.cpus == "\(target)", "thread \(tid) '\(thread.name)' runs on \(thread.cpus), core_mask is CPU \(target)")
            }
            for (tid, thread) in before {
                guard let now = after[tid] else { continue }
                #expect(now.cpus == thread.cpus, "the daemon's thread \(tid) '\(thread.name)' went from \(thread.cpus) to \(now.cpus)")
            }
            let info = try daemon.call("bdev_rbd_get_clusters_info", ["name": "c1"])
            #expect("\(info)".contains(CPUSet([target]).hexMask), "\(info)")
        }
    }

    /// Threads the daemon starts itself (named by it), not librados' or librbd's.
    static let daemonThreadPrefixes = ["reactor", "vhost", "control", "storage", "vb-", "pool", "uring", "iou-"]

    /// Each thread of `pid`: its name and `Cpus_allowed_list` (proc(5)).
    static func threads(_ pid: Int32) -> [Int: (name: String, cpus: String)] {
        let dir = "/proc/\(pid)/task"
        var result: [Int: (name: String, cpus: String)] = [:]
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] {
            guard let tid = Int(entry),
                  let status = try? String(contentsOfFile: "\(dir)/\(entry)/status", encoding: .utf8) else { continue }
            var name = "", cpus = ""
            for line in status.split(separator: "\n") {
                if line.hasPrefix("Name:") { name = line.dropFirst(5).trimmingCharacters(in: .whitespaces) }
                if line.hasPrefix("Cpus_allowed_list:") { cpus = line.dropFirst(18).trimmingCharacters(in: .whitespaces) }
            }
            result[tid] = (name, cpus)
        }
        return result
    }

    /// A monitor that does not answer: register and create answer with an
    /// error within the daemon's connect timeout, and the RPC socket serves
    /// other calls meanwhile.
    @Test func unreachableClusterAnswersInBoundedTime() throws {
        _ = try CephTestCluster.required()
        let daemon = try DaemonProcess(cpumask: "0x1")
        defer { daemon.stop(); daemon.cleanUp() }
        try D.withLogOnError(daemon) { () throws in
            let dead = "127.0.0.1:9"  // discard port: nothing listens
            let outcome = Mutex<(code: Int?, seconds: Double)?>(nil)
            let start = ContinuousClock.now
            let thread = Thread {
                var code: Int?
                do {
                    _ = try daemon.call("bdev_rbd_register_cluster", ["name": "dead", "config_param": ["mon_host": .string(dead)]])
                } catch let error as RPCClientError {
                    if case .rpc(let e) = error { code = e.code }
                } catch {}
                let elapsed = ContinuousClock.now - start
                outcome.withLock { $0 = (code, Double(elapsed.components.seconds)) }
            }
            thread.start()
            // Meanwhile the socket answers at once.
            usleep(300_000)
            let before = ContinuousClock.now
            #expect(try daemon.call("bdev_rbd_get_clusters_info") == .array([]))
            #expect(ContinuousClock.now - before < .seconds(2))
            let deadline = ContinuousClock.now + .seconds(40)
            while outcome.withLock({ $0 }) == nil && ContinuousClock.now < deadline { usleep(100_000) }
            let result = outcome.withLock { $0 }
            #expect(result != nil, "bdev_rbd_register_cluster did not answer within 40 s")
            if let result {
                #expect(result.code != nil && result.code != 0, "an error, not success")
                #expect(result.seconds < 30, "answered after \(result.seconds) s")
            }
            #expect(try daemon.call("bdev_rbd_get_clusters_info") == .array([]))
            // The same for a bdev with a connection of its own.
            let before2 = ContinuousClock.now
            _ = expectRPCError(-Int(ETIMEDOUT)) {
                try daemon.call("bdev_rbd_create", ["pool_name": "rbd", "rbd_name": "x", "block_size": 512,
                                                    "config": ["mon_host": .string(dead)]])
            }
            #expect(ContinuousClock.now - before2 < .seconds(30))
            #expect(try daemon.call("bdev_get_bdevs") == .array([]))
        }
    }

    /// `--persist` writes the cluster before its bdevs; a daemon killed with
    /// SIGKILL comes back from the file with both, and the flushed data.
    @Test func clustersAndBdevsSurviveACrash() throws {
        let cluster = try CephTestCluster.required()
        try cluster.rbd("create", "--size", "8", "rbd/persist")
        defer { _ = try? cluster.rbd("rm", "rbd/persist") }
        let folder = PersistentDaemonFolder()
        defer { folder.remove() }
        var daemon = try folder.start()
        defer { daemon.stop() }
        try daemon.call("bdev_rbd_register_cluster", [
            "name": "p1", "config_file": .string(cluster.configPath), "config_param": ["rados_osd_op_timeout": "0"],
        ])
        try daemon.call("bdev_rbd_create", ["pool_name": "rbd", "rbd_name": "persist", "block_size": 512, "cluster_name": "p1",
                                            "name": "P0", "uuid": "11111111-2222-3333-4444-555555555555"])
        try D.createController(daemon, "vhost.p", bdev: "P0")
        let config = try String(contentsOfFile: folder.directory.appendingPathComponent("config.json").path, encoding: .utf8)
        let register = try #require(config.range(of: "bdev_rbd_register_cluster"))
        let create = try #require(config.range(of: "bdev_rbd_create"))
        #expect(register.lowerBound < create.lowerBound)
        let memory = try FrontendMemory(size: 16 << 20)
        defer { memory.close() }
        do {
            let f = try D.attach(daemon, "vhost.p", memory: memory)
            defer { f.close() }
            #expect(try f.write(sector: 100, data: D.pattern(4096, seed: 9)).status == BlkWire.statusOK)
            #expect(try f.flush().status == BlkWire.statusOK)
            daemon.crash()
        }
        daemon = try folder.start()
        try D.withLogOnError(daemon) { () throws in
            let info = try daemon.call("bdev_rbd_get_clusters_info", ["name": "p1"])
            #expect(info["config_param"]?["rados_osd_op_timeout"] == .string("0"))
            let bdev = try daemon.call("bdev_get_bdevs", ["name": "P0"]).arrayValue?.first
            #expect(bdev?["uuid"] == .string("11111111-2222-3333-4444-555555555555"))
            #expect(bdev?["driver_specific"]?["rbd"]?["cluster_name"] == .string("p1"))
            let f = try D.attach(daemon, "vhost.p", memory: memory)
            defer { f.close() }
            #expect(try f.read(sector: 100, count: 8).data == D.pattern(4096, seed: 9))
        }
    }

    /// SPDK's own client drives every rbd method.
    @Test(.enabled(if: SPDKClient.isEnabled, SPDKClient.skipComment))
    func spdkRPCDrivesEveryMethod() throws {
        let cluster = try CephTestCluster.required()
        try cluster.rbd("create", "--size", "8", "rbd/spdk")
        let daemon = try DaemonProcess(cpumask: "0x1")
        defer { daemon.stop(); daemon.cleanUp() }
        func rpc(_ args: String...) throws -> String {
            let (status, output) = try SPDKClient.run(daemon, args)
            #expect(status == 0, "spdk-rpc \(args.joined(separator: " ")): \(output)")
            return output
        }
        try D.withLogOnError(daemon) { () throws in
            #expect(try rpc("bdev_rbd_register_cluster", "s1", "--config-file", cluster.configPath, "--user", "admin",
                            "--config-param", "rados_osd_op_timeout=0", "--core-mask", "0x1").contains("s1"))
            let info = try rpc("bdev_rbd_get_clusters_info", "-b", "s1")
            #expect(info.contains("\"rados_osd_op_timeout\": \"0\"") && info.contains("\"core_mask\": \"0x1\""))
            #expect(try rpc("bdev_rbd_create", "rbd", "spdk", "512", "-c", "s1", "-b", "S0", "-u",
                            "11111111-2222-3333-4444-555555555555").contains("S0"))
            #expect(try daemon.call("bdev_get_bdevs", ["name": "S0"]).arrayValue?.first?["uuid"]
                    == .string("11111111-2222-3333-4444-555555555555"))
            _ = try rpc("bdev_rbd_resize", "S0", "16")
            #expect(try LifecycleTests.numBlocks(daemon, "S0") == 16 << 11)
            _ = try rpc("bdev_rbd_delete", "S0")
            _ = try rpc("bdev_rbd_unregister_cluster", "s1")
            #expect(try daemon.call("bdev_rbd_get_clusters_info") == .array([]))
        }
        try cluster.rbd("rm", "rbd/spdk")
    }

    /// The rbd methods, in the order their contract examples run (ContractTests leaves them to this suite).
    static let contractMethods = [
        "bdev_rbd_register_cluster", "bdev_rbd_get_clusters_info", "bdev_rbd_create", "bdev_rbd_resize",
        "bdev_rbd_delete", "bdev_rbd_unregister_cluster",
    ]

    /// Every example of the rbd methods in api/vhost-blkd.openrpc.json
    /// succeeds against the cluster, and its result matches the method's schema.
    @Test func documentedExamplesSucceed() throws {
        let cluster = try CephTestCluster.required()
        try cluster.rbd("create", "--size", "1024", "rbd/vm1")
        defer { _ = try? cluster.rbd("rm", "rbd/vm1") }
        let contract = try Contract.load()
        let daemon = try DaemonProcess(cpumask: "0x1")
        defer { daemon.stop(); daemon.cleanUp() }
        func substitute(_ value: JSON) -> JSON {
            switch value {
            case .string("/etc/ceph/ceph.conf"): return .string(cluster.configPath)
            case .object(let object): return .object(JSONObject(object.pairs.map { ($0.key, substitute($0.value)) }))
            default: return value
            }
        }
        let examples = contract.allExamples.filter { Self.contractMethods.contains($0.method) }
        #expect(Set(examples.map(\.method)) == Set(Self.contractMethods))
        for method in Self.contractMethods {
            for id in examples where id.method == method {
                let (params, documented) = try contract.example(id)
                let result = try daemon.call(id.method, substitute(.object(params)))
                let schema = try contract.resultSchema(id.method)
                #expect(contract.validator.violations(of: result, against: schema).isEmpty, "\(id) returned \(result)")
                if let documented {
                    #expect(contract.validator.violations(of: documented, against: schema).isEmpty, "\(id) documents \(documented)")
                }
            }
        }
    }

    /// Deletes `ctrlr` once its disconnected front end's queues have stopped (EBUSY until then).
    static func deleteController(_ daemon: DaemonProcess, _ ctrlr: String) throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while true {
            do {
                try daemon.call("vhost_delete_controller", ["ctrlr": .string(ctrlr)])
                return
            } catch RPCClientError.rpc(let error) where error.code == -Int(EBUSY) && ContinuousClock.now < deadline {
                usleep(50_000)
            }
        }
    }

    /// `mon host` from the cluster's config file.
    static func monHost(_ cluster: CephTestCluster) throws -> String {
        let text = try String(contentsOfFile: cluster.configPath, encoding: .utf8)
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("mon host = ") }) else {
            throw CephClusterError(message: "no mon host in \(cluster.configPath)")
        }
        return String(line.dropFirst("mon host = ".count))
    }
}
