import DaemonTestSupport
import Foundation
import JSONRPC
import Synchronization
import Testing
import VhostUser
import VhostUserFrontend
import Virtio

/// Controllers changing under a running front end: live resize, attach,
/// detach and forced delete (docs/PROTOCOL-NOTES.md, "Live resize"), against the real
/// daemon through the in-repo front end.
@Suite("Live resize, attach, detach and delete")
struct LifecycleTests {
    typealias D = DataPathTests

    /// The JSON-RPC error `body` fails with, or nil (recorded) when it succeeds.
    static func rpcError(_ body: () throws -> JSON, sourceLocation: SourceLocation = #_sourceLocation) -> RPCError? {
        do {
            let result = try body()
            Issue.record("expected an RPC error, got \(result)", sourceLocation: sourceLocation)
        } catch RPCClientError.rpc(let error) {
            return error
        } catch {
            Issue.record("expected an RPC error, got \(error)", sourceLocation: sourceLocation)
        }
        return nil
    }

    /// Capacity in sectors from a fresh GET_CONFIG.
    static func capacity(_ f: VhostUserFrontend) throws -> UInt64? {
        D.le(try f.getConfig(size: 8), at: 0, as: UInt64.self)
    }

    /// Waits for CONFIG_CHANGE_MSG on the back-end channel; returns how long it took.
    @discardableResult
    static func expectConfigChange(_ f: VhostUserFrontend, sourceLocation: SourceLocation = #_sourceLocation) throws -> Duration {
        let start = ContinuousClock.now
        let header = try f.receiveBackendRequest(timeout: .seconds(5))
        #expect(header.request.rawValue == VhostUserBackendRequest.configChange.rawValue, sourceLocation: sourceLocation)
        #expect(!header.needsReply, "the daemon must not wait for an ack", sourceLocation: sourceLocation)
        return ContinuousClock.now - start
    }

    static func numBlocks(_ daemon: DaemonProcess, _ bdev: String) throws -> Int64? {
        try daemon.call("bdev_get_bdevs", ["name": .string(bdev)]).arrayValue?.first?["num_blocks"]?.intValue
    }

    static func truncate(_ path: String, sectors: UInt64) throws {
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.truncate(atOffset: sectors * 512)
        try handle.close()
    }

    // MARK: Grow

    enum GrowPath: String, CaseIterable, CustomTestStringConvertible {
        case mallocResize, uringRescan, uringResize, aioRescan, nullResize
        var testDescription: String { rawValue }
    }

    @Test(arguments: GrowPath.allCases)
    func growIsVisibleToTheRunningFrontend(path: GrowPath) throws {
        let daemon = try D.startDaemon()
        defer { daemon.stop(); daemon.cleanUp() }
        try D.withLogOnError(daemon) { () throws in
            let old = D.sectors, new = D.sectors * 2
            switch path {
            case .mallocResize: try D.createBdev(daemon, .malloc, name: "D0")
            case .uringRescan, .uringResize: try D.createBdev(daemon, .uring, name: "D0")
            case .aioRescan: try D.createBdev(daemon, .aio, name: "D0")
            case .nullResize: try daemon.call("bdev_null_create", ["name": "D0", "num_blocks": .int(Int64(old)), "block_size": 512])
            }
            try D.createController(daemon, "vhost.0", bdev: "D0")
            let memory = try FrontendMemory(size: 16 << 20)
            defer { memory.close() }
            let f = try D.attach(daemon, "vhost.0", memory: memory)
            defer { f.close() }
            #expect(try Self.capacity(f) == old)
            let lastOld = D.pattern(512, seed: 9)
            #expect(try f.write(sector: old - 1, data: lastOld).status == BlkWire.statusOK)
            #expect(try f.read(sector: old, count: 1).status == BlkWire.statusIOErr)

            let image = daemon.directory.appendingPathComponent("D0.img").path
            let start = ContinuousClock.now
            switch path {
            case .mallocResize, .uringResize:
                try daemon.call("bdev_resize", ["name": "D0", "new_size_mib": .int(Int64(new / 2048))])
            case .uringRescan:
                try Self.truncate(image, sectors: new)
                try daemon.call("bdev_uring_rescan", ["name": "D0"])
            case .aioRescan:
                try Self.truncate(image, sectors: new)
                try daemon.call("bdev_aio_rescan", ["name": "D0"])
            case .nullResize:
                try daemon.call("bdev_null_resize", ["name": "D0", "new_size": .int(Int64(new / 2048))])
            }
            try Self.expectConfigChange(f)
            print("resize -> CONFIG_CHANGE_MSG (\(path.rawValue)): \(ContinuousClock.now - start)")
            #expect(try Self.capacity(f) == new)
            #expect(try Self.numBlocks(daemon, "D0") == Int64(new))
            if path == .uringResize {
                let size = try FileManager.default.attributesOfItem(atPath: image)[.size] as? NSNumber
                #expect(size?.uint64Value == new * 512)
            }
            // The new space works on both queues; the old data is intact.
            if path != .nullResize {
                #expect(try D.roundTrip(f, queue: 0, sector: new - 1, seed: 4))
                #expect(try D.roundTrip(f, queue: 1, sector: old, seed: 5))
                #expect(try f.read(sector: old - 1, count: 1).data == lastOld)
            } else {
                #expect(try f.read(sector: new - 1, count: 1).status == BlkWire.statusOK)
            }
            #expect(try f.read(sector: new, count: 1).status == BlkWire.statusIOErr)
        }
    }

    // MARK: Shrink

    @Test(arguments: [D.Backend.malloc, D.Backend.uring, D.Backend.tmpfs])
    func shrinkNeedsAllowShrink(backend: D.Backend) throws {
        let daemon = try D.startDaemon()
        defer { daemon.stop(); daemon.cleanUp() }
        try D.withLogOnError(daemon) { () throws in
            try D.createBdev(daemon, backend, name: "D0")
            try D.createController(daemon, "vhost.0", bdev: "D0")
            let memory = try FrontendMemory(size: 16 << 20)
            defer { memory.close() }
            let f = try D.attach(daemon, "vhost.0", memory: memory)
            defer { f.close() }
            let half = D.sectors / 2
            let refused = Self.rpcError { try daemon.call("bdev_resize", ["name": "D0", "new_size_mib": .int(Int64(half / 2048))]) }
            #expect(refused?.code == -16)
            #expect(refused?.message.contains("allow_shrink") == true)
            #expect(try Self.capacity(f) == D.sectors)

            #expect(try D.roundTrip(f, sector: half - 1, seed: 1))
            try daemon.call("bdev_resize", ["name": "D0", "new_size_mib": .int(Int64(half / 2048)), "allow_shrink": true])
            try Self.expectConfigChange(f)
            #expect(try Self.capacity(f) == half)
            #expect(try f.read(sector: half, count: 1).status == BlkWire.statusIOErr)
            #expect(try f.write(sector: D.sectors - 1, data: D.pattern(512, seed: 2)).status == BlkWire.statusIOErr)
            #expect(try D.roundTrip(f, sector: half - 1, seed: 3))
            if backend == .uring {
                let image = daemon.directory.appendingPathComponent("D0.img").path
                let size = try FileManager.default.attributesOfItem(atPath: image)[.size] as? NSNumber
                #expect(size?.uint64Value == half * 512)
            }
            // Growing again reads zeroes where the cut data was.
            try daemon.call("bdev_resize", ["name": "D0", "new_size_mib": .int(Int64(D.sectors / 2048))])
            try Self.expectConfigChange(f)
            let regrown = try f.read(sector: D.sectors - 1, count: 1)
            #expect(regrown.status == BlkWire.statusOK)
            #expect(regrown.data == [UInt8](repeating: 0, count: 512))
        }
    }

    @Test func resizeRefusals() throws {
        let daemon = try D.startDaemon()
        defer { daemon.stop(); daemon.cleanUp() }
        try daemon.call("bdev_null_create", ["name": "N0", "num_blocks": 20480, "block_size": 512])
        #expect(Self.rpcError { try daemon.call("bdev_null_resize", ["name": "N0", "new_size": 5]) }?.code == -22)
        #expect(Self.rpcError { try daemon.call("bdev_null_resize", ["name": "nope", "new_size": 50]) }?.code == -19)
        #expect(Self.rpcError { try daemon.call("bdev_resize", ["name": "N0", "new_size_mib": 0]) }?.code == -22)
        #expect(Self.rpcError { try daemon.call("bdev_resize", ["name": "N0", "new_size_mib": .int(Int64.max)]) }?.code == -22)
        #expect(Self.rpcError { try daemon.call("bdev_uring_rescan", ["name": "N0"]) }?.code == -19)
        try D.createBdev(daemon, .malloc, name: "M0")
        // A malloc bdev grows in place, within the address space it reserved.
        let tooBig = Self.rpcError { try daemon.call("bdev_resize", ["name": "M0", "new_size_mib": .int(1 << 29)]) }
        #expect(tooBig?.code == -22)
        #expect(tooBig?.message.contains("grows in place") == true)

        // A block device is resized by its owner, then rescanned.
        let image = daemon.directory.appendingPathComponent("loop.img").path
        #expect(FileManager.default.createFile(atPath: image, contents: nil))
        try Self.truncate(image, sectors: 8192)
        let losetup = try TestPrerequisites.requireTools(["losetup"])[0]
        let (status, output) = try runCommand(losetup, ["-f", "--show", image])
        guard status == 0 else {
            try TestPrerequisites.unavailable("losetup -f failed (a loop device needs root): \(output)")
        }
        let device = output.trimmingCharacters(in: .whitespacesAndNewlines)
        defer { _ = try? runCommand(losetup, ["-d", device]) }
        try daemon.call("bdev_uring_create", ["filename": .string(device), "name": "B0"])
        let refused = Self.rpcError { try daemon.call("bdev_resize", ["name": "B0", "new_size_mib": 8]) }
        #expect(refused?.code == -22)
        #expect(refused?.message.contains("rescan") == true)
        try Self.truncate(image, sectors: 16384)
        #expect(try runCommand(losetup, ["-c", device]).status == 0)
        try daemon.call("bdev_uring_rescan", ["name": "B0"])
        #expect(try Self.numBlocks(daemon, "B0") == 16384)
        try daemon.call("bdev_uring_delete", ["name": "B0"])
    }

    /// A resize while no guest driver runs is reported by the next GET_CONFIG.
    @Test func resizeWithoutRunningDriver() throws {
        let daemon = try D.startDaemon()
        defer { daemon.stop(); daemon.cleanUp() }
        try D.createBdev(daemon, .malloc, name: "D0")
        try D.createController(daemon, "vhost.0", bdev: "D0")
        try daemon.call("bdev_resize", ["name": "D0", "new_size_mib": 16])
        let memory = try FrontendMemory(size: 16 << 20)
        defer { memory.close() }
        let f = try VhostUserFrontend(socketPath: daemon.socketDirectory + "/vhost.0", memory: memory)
        defer { f.close() }
        try f.connect()
        #expect(D.le(f.config, at: 0, as: UInt64.self) == 32768)
        // Connected, queues not started: the message still goes out, GET_CONFIG agrees.
        try daemon.call("bdev_resize", ["name": "D0", "new_size_mib": 24])
        try Self.expectConfigChange(f)
        #expect(try Self.capacity(f) == 49152)
        try f.start(queueCount: 1)
        #expect(try D.roundTrip(f, sector: 49151, seed: 1))
    }

    // MARK: Attach and detach

    @Test func emptyControllerAttachDetach() throws {
        let daemon = try D.startDaemon()
        defer { daemon.stop(); daemon.cleanUp() }
        try D.withLogOnError(daemon) { () throws in
            try D.createBdev(daemon, .uring, name: "D0")
            try D.createBdev(daemon, .malloc, name: "D1", sectors: 4096)
            try daemon.call("vhost_create_blk_controller", ["ctrlr": "vhost.0"])
            let listed = try daemon.call("vhost_get_controllers", ["name": "vhost.0"])
            #expect(listed.arrayValue?.first?["backend_specific"]?["block"]?["bdev"] == .null)

            let memory = try FrontendMemory(size: 16 << 20)
            defer { memory.close() }
            let f = try D.attach(daemon, "vhost.0", memory: memory)
            defer { f.close() }
            #expect(try Self.capacity(f) == 0)
            #expect(try f.read(sector: 0, count: 1).status == BlkWire.statusIOErr)
            #expect(try f.flush().status == BlkWire.statusIOErr)
            #expect(try f.getID().status == BlkWire.statusOK)

            #expect(Self.rpcError { try daemon.call("vhost_blk_attach", ["ctrlr": "vhost.0", "dev_name": "nope"]) }?.code == -32602)
            #expect(Self.rpcError { try daemon.call("vhost_blk_attach", ["ctrlr": "nope", "dev_name": "D0"]) }?.code == -32602)
            try daemon.call("vhost_blk_attach", ["ctrlr": "vhost.0", "dev_name": "D0"])
            try Self.expectConfigChange(f)
            #expect(try Self.capacity(f) == D.sectors)
            #expect(try D.roundTrip(f, sector: 100, seed: 1))
            #expect(try D.roundTrip(f, queue: 1, sector: D.sectors - 1, seed: 2))
            #expect(Self.rpcError { try daemon.call("vhost_blk_attach", ["ctrlr": "vhost.0", "dev_name": "D1"]) }?.code == -16)
            #expect(Self.rpcError { try daemon.call("bdev_uring_delete", ["name": "D0"]) }?.code == -16)

            try daemon.call("vhost_blk_detach", ["ctrlr": "vhost.0"])
            try Self.expectConfigChange(f)
            #expect(try Self.capacity(f) == 0)
            #expect(try f.read(sector: 100, count: 1).status == BlkWire.statusIOErr)
            #expect(try f.write(sector: 0, data: D.pattern(512, seed: 3)).status == BlkWire.statusIOErr)
            #expect(Self.rpcError { try daemon.call("vhost_blk_detach", ["ctrlr": "vhost.0"]) }?.code == -19)

            // Another bdev, then the first again: its data is still there.
            try daemon.call("vhost_blk_attach", ["ctrlr": "vhost.0", "dev_name": "D1"])
            try Self.expectConfigChange(f)
            #expect(try Self.capacity(f) == 4096)
            #expect(try D.roundTrip(f, sector: 4095, seed: 4))
            try daemon.call("vhost_blk_detach", ["ctrlr": "vhost.0"])
            try Self.expectConfigChange(f)
            try daemon.call("vhost_blk_attach", ["ctrlr": "vhost.0", "dev_name": "D0"])
            try Self.expectConfigChange(f)
            #expect(try f.read(sector: 100, count: 1).data == D.pattern(512, seed: 1))
            try daemon.call("bdev_malloc_delete", ["name": "D1"])
        }
    }

    /// Detach and attach while two threads keep requests in flight: every
    /// request completes (OK before, IOERR while detached), none is lost.
    @Test func detachAndAttachUnderLoad() throws {
        let daemon = try D.startDaemon()
        defer { daemon.stop(); daemon.cleanUp() }
        try D.withLogOnError(daemon) { () throws in
            try D.createBdev(daemon, .uring, name: "D0")
            try D.createBdev(daemon, .malloc, name: "D1")
            try D.createController(daemon, "vhost.0", bdev: "D0")
            let memory = try FrontendMemory(size: 32 << 20)
            defer { memory.close() }
            let f = try D.attach(daemon, "vhost.0", memory: memory)
            defer { f.close() }

            let stop = Atomic<Bool>(false)
            let counts = Mutex<(ok: Int, ioErr: Int, other: Int, failures: [String])>((0, 0, 0, []))
            let group = DispatchGroup()
            for queue in 0..<2 {
                DispatchQueue.global().async(group: group) {
                    var sector: UInt64 = UInt64(queue) * 4096
                    while !stop.load(ordering: .relaxed) {
                        do {
                            let c = queue == 0
                                ? try f.read(queue: queue, sector: sector, count: 64)
                                : try f.write(queue: queue, sector: sector, data: D.pattern(8192, seed: Int(sector)))
                            counts.withLock {
                                switch c.status {
                                case BlkWire.statusOK: $0.ok += 1
                                case BlkWire.statusIOErr: $0.ioErr += 1
                                default: $0.other += 1
                                }
                            }
                        } catch {
                            counts.withLock { $0.failures.append("\(error)") }
                            return
                        }
                        sector = (sector + 16) % 8192
                    }
                }
            }
            /// Waits (bounded) until the workers counted `enough` more of `status`.
            func waitFor(_ enough: Int, _ status: UInt8) {
                let read = { counts.withLock { status == BlkWire.statusOK ? $0.ok : $0.ioErr } }
                let target = read() + enough
                let deadline = ContinuousClock.now + .seconds(20)
                while read() < target && ContinuousClock.now < deadline && counts.withLock({ $0.failures.isEmpty }) {
                    usleep(10_000)
                }
            }
            waitFor(20, BlkWire.statusOK)
            try daemon.call("vhost_blk_detach", ["ctrlr": "vhost.0"])
            // Nothing the detached bdev served is in flight any more: it may go.
            try daemon.call("bdev_uring_delete", ["name": "D0"])
            waitFor(20, BlkWire.statusIOErr)
            let okBeforeAttach = counts.withLock { $0.ok }
            try daemon.call("vhost_blk_attach", ["ctrlr": "vhost.0", "dev_name": "D1"])
            waitFor(20, BlkWire.statusOK)
            stop.store(true, ordering: .relaxed)
            group.wait()
            let result = counts.withLock { $0 }
            print("detach under load: \(result.ok) OK, \(result.ioErr) IOERR")
            #expect(result.failures.isEmpty, "lost or late requests: \(result.failures.prefix(3))")
            #expect(result.ok >= okBeforeAttach + 20, "I/O works again after attach")
            #expect(result.ioErr >= 20, "I/O fails while detached")
            #expect(result.other == 0)
            #expect(try D.roundTrip(f, sector: 1, seed: 7))
        }
    }

    // MARK: Delete

    @Test func deleteWithFrontendNeedsForce() throws {
        let daemon = try D.startDaemon()
        defer { daemon.stop(); daemon.cleanUp() }
        try D.createBdev(daemon, .uring, name: "D0")
        try D.createController(daemon, "vhost.0", bdev: "D0")
        let memory = try FrontendMemory(size: 16 << 20)
        defer { memory.close() }
        let f = try D.attach(daemon, "vhost.0", memory: memory)
        defer { f.close() }
        #expect(try D.roundTrip(f, sector: 3, seed: 3))

        let busy = Self.rpcError { try daemon.call("vhost_delete_controller", ["ctrlr": "vhost.0"]) }
        #expect(busy?.code == -16)
        #expect(busy?.message.contains("pid \(getpid())") == true, "\(busy?.message ?? "")")
        #expect(Self.rpcError { try daemon.call("bdev_uring_delete", ["name": "D0"]) }?.code == -16)

        try daemon.call("vhost_delete_controller", ["ctrlr": "vhost.0", "force": true])
        #expect(f.channel.waitForClose(timeout: .seconds(5)), "the frontend is disconnected")
        #expect(!FileManager.default.fileExists(atPath: daemon.socketDirectory + "/vhost.0"))
        #expect(try daemon.call("vhost_get_controllers").arrayValue?.isEmpty == true)
        try daemon.call("bdev_uring_delete", ["name": "D0"])
        #expect(daemon.isRunning)
    }

    // MARK: Soak

    /// Create, connect, I/O, resize, detach, attach, force-delete, many times:
    /// the daemon's descriptors and memory come back to where they started.
    @Test func soakLeavesNothingBehind() throws {
        let cycles = Int(ProcessInfo.processInfo.environment["VHOST_BLKD_SOAK_CYCLES"] ?? "") ?? 1000
        let daemon = try D.startDaemon()
        defer { daemon.stop(); daemon.cleanUp() }
        let client = try daemon.client()
        let memory = try FrontendMemory(size: 8 << 20)
        defer { memory.close() }

        func cycle(_ i: Int) throws {
            _ = try client.call("bdev_malloc_create", params: ["name": "S0", "num_blocks": 2048, "block_size": 512])
            _ = try client.call("bdev_malloc_create", params: ["name": "S1", "num_blocks": 2048, "block_size": 512])
            _ = try client.call("vhost_create_blk_controller", params: ["ctrlr": "soak", "dev_name": "S0"])
            let f = try VhostUserFrontend(socketPath: daemon.socketDirectory + "/soak", memory: memory)
            defer { f.close() }
            try f.connect()
            try f.start(queueCount: 1, queueSize: 64)
            guard try D.roundTrip(f, sector: 5, seed: i) else { throw SoakError.io("round trip \(i)") }
            _ = try client.call("bdev_resize", params: ["name": "S0", "new_size_mib": 2])
            _ = try f.receiveBackendRequest()
            _ = try client.call("vhost_blk_detach", params: ["ctrlr": "soak"])
            _ = try f.receiveBackendRequest()
            _ = try client.call("vhost_blk_attach", params: ["ctrlr": "soak", "dev_name": "S1"])
            _ = try f.receiveBackendRequest()
            guard try D.roundTrip(f, sector: 7, seed: i) else { throw SoakError.io("after attach \(i)") }
            _ = try client.call("vhost_delete_controller", params: ["ctrlr": "soak", "force": true])
            _ = try client.call("bdev_malloc_delete", params: ["name": "S0"])
            _ = try client.call("bdev_malloc_delete", params: ["name": "S1"])
        }

        try D.withLogOnError(daemon) { () throws in
            for i in 0..<20 { try cycle(i) }  // warm up allocator and caches
            let fdsBefore = try Self.openFDs(daemon.pid)
            let rssBefore = try Self.rssKiB(daemon.pid)
            let threadsBefore = try Self.statusField("Threads", daemon.pid)
            let mapsBefore = try Self.mappings(daemon.pid)
            let start = ContinuousClock.now
            for i in 0..<cycles { try cycle(i) }
            let elapsed = ContinuousClock.now - start
            let fdsAfter = try Self.openFDs(daemon.pid)
            let rssAfter = try Self.rssKiB(daemon.pid)
            let threadsAfter = try Self.statusField("Threads", daemon.pid)
            let mapsAfter = try Self.mappings(daemon.pid)
            print("""
                soak: \(cycles) cycles in \(elapsed); fds \(fdsBefore) -> \(fdsAfter); RSS \(rssBefore) KiB -> \(rssAfter) KiB; \
                threads \(threadsBefore) -> \(threadsAfter); mappings \(mapsBefore) -> \(mapsAfter)
                """)
            #expect(fdsAfter == fdsBefore)
            #expect(threadsAfter == threadsBefore)
            #expect(mapsAfter <= mapsBefore + 2, "mappings \(mapsBefore) -> \(mapsAfter)")
            #expect(rssAfter < rssBefore + 4096, "RSS grew by \(rssAfter - rssBefore) KiB over \(cycles) cycles")
            #expect(try daemon.call("vhost_get_controllers").arrayValue?.isEmpty == true)
            #expect(try daemon.call("bdev_get_bdevs").arrayValue?.isEmpty == true)
        }
    }

    enum SoakError: Error { case io(String) }

    static func openFDs(_ pid: Int32) throws -> Int {
        try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count
    }

    static func rssKiB(_ pid: Int32) throws -> Int { try statusField("VmRSS", pid) }

    /// A number from /proc/PID/status (`VmRSS` in KiB, `Threads`, ...); -1 if absent.
    static func statusField(_ name: String, _ pid: Int32) throws -> Int {
        let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        let line = status.split(separator: "\n").first { $0.hasPrefix(name + ":") } ?? ""
        return Int(line.split(whereSeparator: { $0 == " " || $0 == "\t" }).dropFirst().first ?? "") ?? -1
    }

    static func mappings(_ pid: Int32) throws -> Int {
        try String(contentsOfFile: "/proc/\(pid)/maps", encoding: .utf8).split(separator: "\n").count
    }
}
