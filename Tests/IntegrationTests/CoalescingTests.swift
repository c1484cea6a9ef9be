import DaemonTestSupport
import Foundation
import Glibc
import JSONRPC
import Posix
import Testing
import VhostUserFrontend
import Virtio

/// `vhost_controller_set_coalescing` (issue 22) against the running daemon:
/// SPDK's checks and errors, the settings in `vhost_get_controllers` and the
/// saved config, live on running queues, and no interrupt lost to a delay.
@Suite("Interrupt coalescing against the running daemon")
struct CoalescingTests {
    typealias D = DataPathTests

    static func set(_ daemon: DaemonProcess, _ ctrlr: String, _ delay: Int64, _ iops: Int64) throws -> JSON {
        try daemon.call("vhost_controller_set_coalescing", [
            "ctrlr": .string(ctrlr), "delay_base_us": .int(delay), "iops_threshold": .int(iops),
        ])
    }

    static func controller(_ daemon: DaemonProcess, _ ctrlr: String = "vhost.0") throws -> JSON? {
        try daemon.call("vhost_get_controllers", ["name": .string(ctrlr)]).arrayValue?.first
    }

    @Test func checksErrorsAndReportsLikeSPDK() throws {
        let daemon = try D.daemonServing(.ioUring, .malloc, bdev: "M0")
        defer { daemon.stop(); daemon.cleanUp() }
        // SPDK's defaults before any call.
        #expect(try Self.controller(daemon)?["delay_base_us"] == .int(0))
        #expect(try Self.controller(daemon)?["iops_threshold"] == .int(60000))

        let unknown = LifecycleTests.rpcError { try Self.set(daemon, "nope", 100, 1000) }
        #expect(unknown?.code == -32602)
        #expect(unknown?.message.contains("No such device") == true)
        let tooBig = LifecycleTests.rpcError { try Self.set(daemon, "vhost.0", 4_294_968, 1000) }
        #expect(tooBig?.code == -32602)
        #expect(tooBig?.message.contains("Invalid argument") == true)
        let tooLow = LifecycleTests.rpcError { try Self.set(daemon, "vhost.0", 100, 99) }
        #expect(tooLow?.code == -32602)
        #expect(tooLow?.message.contains("iops_threshold 99") == true)
        let negative = LifecycleTests.rpcError { try Self.set(daemon, "vhost.0", -1, 1000) }
        #expect(negative?.code == -32602)
        let overflow = LifecycleTests.rpcError { try Self.set(daemon, "vhost.0", 1, 1 << 32) }
        #expect(overflow?.code == -32602)
        let missing = LifecycleTests.rpcError {
            try daemon.call("vhost_controller_set_coalescing", ["ctrlr": "vhost.0", "delay_base_us": 10])
        }
        #expect(missing?.code == -32602)
        // Refused calls changed nothing.
        #expect(try Self.controller(daemon)?["delay_base_us"] == .int(0))

        #expect(try Self.set(daemon, "vhost.0", 4_294_967, 100) == .bool(true))
        #expect(try Self.set(daemon, "vhost.0", 250, 20000) == .bool(true))
        let entry = try Self.controller(daemon)
        #expect(entry?["delay_base_us"] == .int(250))
        #expect(entry?["iops_threshold"] == .int(20000))
        let saved = try daemon.call("framework_get_config", ["name": "vhost_blk"]).arrayValue ?? []
        #expect(saved.compactMap { $0["method"]?.stringValue } == ["vhost_create_blk_controller", "vhost_controller_set_coalescing"])
        #expect(saved.last?["params"] == ["ctrlr": "vhost.0", "delay_base_us": 250, "iops_threshold": 20000])

        // Back to the defaults: nothing more to save.
        #expect(try Self.set(daemon, "vhost.0", 0, 60000) == .bool(true))
        let plain = try daemon.call("framework_get_config", ["name": "vhost_blk"]).arrayValue ?? []
        #expect(plain.compactMap { $0["method"]?.stringValue } == ["vhost_create_blk_controller"])
        #expect(daemon.isRunning)
    }

    @Test func persistedAcrossARestart() throws {
        let directory = URL(fileURLWithPath: "/tmp").appendingPathComponent("vbd-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let configPath = directory.appendingPathComponent("vhost-blkd.json").path
        let arguments = ["--config", configPath, "--persist"]
        let daemon = try DaemonProcess(extraArguments: arguments, directory: directory)
        defer { daemon.cleanUp() }
        try daemon.call("bdev_malloc_create", ["name": "M0", "num_blocks": 256, "block_size": 512])
        try daemon.call("vhost_create_blk_controller", ["ctrlr": "vhost.0", "dev_name": "M0"])
        #expect(try Self.set(daemon, "vhost.0", 50, 5000) == .bool(true))
        let file = try ConfigPersistenceTests.readJSON(configPath)
        #expect(ConfigPersistenceTests.methods(file, "vhost_blk") == ["vhost_create_blk_controller", "vhost_controller_set_coalescing"])
        #expect(daemon.stop() == 0)

        let restarted = try DaemonProcess(extraArguments: arguments, directory: directory)
        defer { restarted.stop() }
        let entry = try Self.controller(restarted)
        #expect(entry?["delay_base_us"] == .int(50))
        #expect(entry?["iops_threshold"] == .int(5000))
    }

    /// Submits `depth` reads on queue 0 and collects them waiting only on the
    /// call eventfd (a used entry counts only after an interrupt arrived):
    /// a delayed interrupt that never came would time out.
    static func roundTrip(_ f: VhostUserFrontend, memory: FrontendMemory, depth: Int, round: Int) throws {
        let q = try f.driverQueue(0)
        var statuses: [GuestBuffer] = []
        for i in 0..<depth {
            let header = try memory.allocate(16, alignment: 16)
            header.write(BlkWire.header(type: BlkWire.typeIn, sector: UInt64((round * depth + i) % 1024) * 8))
            let data = try memory.allocate(4096, alignment: 512)
            let status = try memory.allocate(1, alignment: 1)
            status.pointer.storeBytes(of: 0xff, as: UInt8.self)
            statuses.append(status)
            _ = try q.addChain(
                [ChainBuffer(header, writable: false), ChainBuffer(data, writable: true), ChainBuffer(status, writable: true)],
                owning: [header, data, status])
        }
        q.publishAndKick()
        var collected = 0
        let deadline = Self.now() + 5_000_000_000
        while collected < depth {
            let left = deadline > Self.now() ? Int32(clamping: (deadline - Self.now()) / 1_000_000) : 0
            guard left > 0 else {
                Issue.record("round \(round): \(depth - collected) of \(depth) requests never signalled")
                throw FrontendError.timeout("interrupt")
            }
            guard (try? q.callFD.fd.poll(Int16(POLLIN), timeoutMilliseconds: left)) ?? 0 > 0 else { continue }
            _ = q.callFD.drain()
            while q.popUsed() != nil { collected += 1 }
        }
        for status in statuses { #expect(status.pointer.load(as: UInt8.self) == BlkWire.statusOK) }
    }

    static func now() -> UInt64 { StatsTests.now() }

    static func queue0(_ daemon: DaemonProcess) throws -> JSON? {
        try controller(daemon)?["sessions"]?.arrayValue?.first?["queues"]?.arrayValue?.first
    }

    @Test func delayedInterruptsAreNeverLostAndApplyLive() throws {
        let daemon = try D.daemonServing(.ioUring, .malloc, bdev: "M0")
        defer { daemon.stop(); daemon.cleanUp() }
        try D.withLogOnError(daemon) { () throws in
            let memory = try FrontendMemory(size: 16 << 20)
            defer { memory.close() }
            let f = try D.attach(daemon, "vhost.0", memory: memory, queues: 1)
            defer { f.close() }
            // Off: every completion batch interrupts, none is delayed.
            for round in 0..<5 { try Self.roundTrip(f, memory: memory, depth: 32, round: round) }
            #expect(try Self.queue0(daemon)?["interrupts_delayed"] == .int(0))

            // On, live: 100 IOPS threshold (one request per 10 ms window) and
            // a 2 ms base, so any burst delays the interrupts after the first.
            #expect(try Self.set(daemon, "vhost.0", 2000, 100) == .bool(true))
            for round in 5..<45 { try Self.roundTrip(f, memory: memory, depth: 32, round: round) }
            let on = try #require(try Self.queue0(daemon))
            let delayed = on["interrupts_delayed"]?.intValue ?? 0
            #expect(delayed > 0, "\(on)")
            #expect((on["interrupts_sent"]?.intValue ?? 0) < (on["requests"]?.intValue ?? 0), "\(on)")

            // Off again, live: no more delays, and a pending one was sent.
            #expect(try Self.set(daemon, "vhost.0", 0, 60000) == .bool(true))
            for round in 45..<50 { try Self.roundTrip(f, memory: memory, depth: 32, round: round) }
            #expect(try Self.queue0(daemon)?["interrupts_delayed"]?.intValue == delayed)

            // SPDK's session keys, with the queue running.
            let session = try #require(try Self.controller(daemon)?["sessions"]?.arrayValue?.first)
            #expect(session["vid"]?.intValue != nil)
            #expect(session["id"] == .int(0))
            #expect(session["name"] == .string("vhost.0s\(session["vid"]?.intValue ?? -1)"))
            #expect(session["started"] == .bool(true))
            #expect(session["max_queues"] == .int(1))
            #expect(session["inflight_task_cnt"] == .int(0))
        }
        #expect(daemon.isRunning)
    }
}
