import DaemonTestSupport
import Foundation
import Glibc
import JSONRPC
import Posix
import Synchronization
import Testing
import VhostUser
import VhostUserFrontend
import Virtio

/// Packed virtqueues (virtio 1.2 §2.8, VIRTIO_F_RING_PACKED) against the
/// running daemon: a controller created with SPDK's `packed_ring` offers
/// bit 34, the in-repo frontend negotiates it and runs verified I/O on two
/// packed queues over the socket, a broken ring disconnects it, and
/// GET_VRING_BASE's two positions carry the queue across a reconnect.
@Suite("Packed rings against the running daemon")
struct PackedRingTests {
    typealias D = DataPathTests

    static var packedOptions: VhostUserFrontend.Options {
        var options = VhostUserFrontend.Options()
        options.wantedFeatures.insert(.ringPacked)
        return options
    }

    /// A daemon with malloc bdev M0 on controller vhost.0, created with `packed_ring: packed`.
    static func daemon(packed: Bool = true) throws -> DaemonProcess {
        let daemon = try DaemonProcess()
        do {
            try D.createBdev(daemon, .malloc, name: "M0")
            try daemon.call("vhost_create_blk_controller", .object([
                "ctrlr": "vhost.0", "dev_name": "M0", "packed_ring": .bool(packed),
            ]))
        } catch {
            daemon.stop()
            daemon.cleanUp()
            throw error
        }
        return daemon
    }

    /// `packedOptions` without an inflight region: its queues are a power of
    /// two in size (the vhost-user spec's layouts), and these rings need not be.
    static var packedOptionsWithoutInflight: VhostUserFrontend.Options {
        var options = packedOptions
        options.useInflight = false
        return options
    }

    /// Runs `body` with a daemon from `daemon()` and a frontend on its
    /// vhost.0 (16 MiB, `packedOptionsWithoutInflight`) with `queues` queues
    /// of `size` started; the daemon's log is shown if it fails.
    static func withPackedFrontend(
        queues: Int, size: UInt16, _ body: (DaemonProcess, VhostUserFrontend) throws -> Void
    ) throws {
        let daemon = try Self.daemon()
        defer { daemon.stop(); daemon.cleanUp() }
        try D.withLogOnError(daemon) { () throws in
            let memory = try FrontendMemory(size: 16 << 20)
            defer { memory.close() }
            let f = try VhostUserFrontend(
                socketPath: daemon.socketDirectory + "/vhost.0", memory: memory, options: packedOptionsWithoutInflight)
            defer { f.close() }
            try f.connect()
            try f.start(queueCount: queues, queueSize: size)
            try body(daemon, f)
        }
    }

    /// Bit 34 is offered only on a controller created with `packed_ring`,
    /// and `vhost_get_controllers` and `framework_get_config` say so.
    @Test func packedRingIsOfferedOnlyWhenAsked() throws {
        for packed in [false, true] {
            let daemon = try Self.daemon(packed: packed)
            defer { daemon.stop(); daemon.cleanUp() }
            let memory = try FrontendMemory(size: 4 << 20)
            defer { memory.close() }
            let f = try VhostUserFrontend(socketPath: daemon.socketDirectory + "/vhost.0", memory: memory, options: Self.packedOptions)
            defer { f.close() }
            try f.connect()
            #expect(f.deviceFeatures.contains(.ringPacked) == packed)
            let list = try daemon.call("vhost_get_controllers", .object([:]))
            let shown = list.arrayValue?.first?["backend_specific"]?["block"]?["packed_ring"]?.boolValue
            #expect(shown == packed, "\(list)")
            let config = try daemon.call("framework_get_config", .object(["name": "vhost_blk"]))
            #expect("\(config)".contains("packed_ring") == packed, "\(config)")
        }
    }

    /// Verified writes and reads on two packed queues of a size that is not
    /// a power of two, each from its own thread, many laps of the ring.
    @Test func verifiedIOOnTwoPackedQueues() throws {
        try Self.withPackedFrontend(queues: 2, size: 100) { daemon, f in
            #expect(f.ackedFeatures.contains(.ringPacked))
            #expect(try f.driverQueue(0).packed && f.driverQueue(1).packed)
            let failures = Mutex<[String]>([])
            DispatchQueue.concurrentPerform(iterations: 2) { q in
                for round in 0..<150 {
                    let sector = UInt64(q * 1000 + round % 50)
                    let count = 1 + round % 8
                    let data = (0..<(count * 512)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ round &* 13 &+ q) }
                    do {
                        let w = try f.write(queue: q, sector: sector, data: data)
                        let r = try f.read(queue: q, sector: sector, count: count)
                        if w.status != BlkWire.statusOK || r.status != BlkWire.statusOK || r.data != data {
                            failures.withLock { $0.append("queue \(q) round \(round): status \(w.status)/\(r.status)") }
                        }
                    } catch {
                        failures.withLock { $0.append("queue \(q) round \(round): \(error)") }
                    }
                }
            }
            #expect(failures.withLock { $0 }.isEmpty, "\(failures.withLock { $0 }.prefix(3))")
            // GET_VRING_BASE: both positions where the driver's are, after several laps.
            let q0 = try f.driverQueue(0)
            let base = PackedRingBase.decode(try f.getVringBaseRaw(0))
            #expect(base.avail == q0.packedAvail && base.used == q0.packedUsed, "\(base)")
            #expect(daemon.log.contains("broken") == false)
        }
    }

    /// A chain whose every slot says NEXT is a broken ring: the daemon logs
    /// why and disconnects the frontend.
    @Test func aBrokenPackedRingDisconnects() throws {
        let daemon = try Self.daemon()
        defer { daemon.stop(); daemon.cleanUp() }
        let memory = try FrontendMemory(size: 4 << 20)
        defer { memory.close() }
        let f = try VhostUserFrontend(socketPath: daemon.socketDirectory + "/vhost.0", memory: memory, options: Self.packedOptions)
        defer { f.close() }
        try f.connect()
        try f.start(queueCount: 1, queueSize: 8)
        let q = try f.driverQueue(0)
        let buffer = try memory.allocate(512, alignment: 512)
        // Slots 1-7 say NEXT too: the chain from slot 0 never ends.
        for slot: UInt16 in 1..<8 {
            q.writePackedDescriptor(PackedDescriptor(
                addr: buffer.gpa, len: 512, id: 0,
                flags: PackedDescriptor.flagNext | DriverQueue.availBits(wrap: true)), at: slot)
        }
        _ = try q.addPacked([(buffer.gpa, 512, PackedDescriptor.flagNext)])
        q.publishAndKick(force: true)
        var disconnected = false
        for _ in 0..<250 where !disconnected {
            usleep(20_000)
            disconnected = daemon.log.contains("the guest's ring is broken")
        }
        #expect(disconnected, "\(daemon.log)")
        #expect(daemon.log.contains("descriptor chain longer than its table"))
        // The session is gone: the socket reads end of file.
        var byte: UInt8 = 0
        var pfd = pollfd(fd: f.channel.socket.rawValue, events: Int16(POLLIN), revents: 0)
        #expect(poll(&pfd, 1, 5000) == 1)
        let n = recv(f.channel.socket.rawValue, &byte, 1, Int32(MSG_DONTWAIT))
        #expect(n == 0, "recv returned \(n)")
    }

    /// One request by hand on `q` (after a reconnect the old frontend object owns the queue).
    static func request(_ q: DriverQueue, memory: FrontendMemory, type: UInt32, sector: UInt64, data: [UInt8]?) throws -> (status: UInt8, data: [UInt8]) {
        let header = try memory.allocate(16, alignment: 16)
        header.write(BlkWire.header(type: type, sector: sector))
        let buffer = try memory.allocate(512, alignment: 512)
        if let data { buffer.write(data) }
        let status = try memory.allocate(1, alignment: 1)
        status.pointer.storeBytes(of: 0xff, as: UInt8.self)
        defer { [header, buffer, status].forEach(memory.release) }
        _ = try q.addChain([
            ChainBuffer(header, writable: false), ChainBuffer(buffer, writable: data == nil), ChainBuffer(status, writable: true),
        ])
        _ = q.publishAndKick()
        _ = try q.waitUsed(timeout: .seconds(5))
        return (status.pointer.load(as: UInt8.self), buffer.read(count: 512))
    }

    /// GET_VRING_BASE answers both positions; after the frontend hangs up, a
    /// new session resumes the same rings from them (QEMU's reconnect) and
    /// reads back what the first wrote.
    @Test func vringBaseRoundTripAcrossAReconnect() throws {
        try Self.withPackedFrontend(queues: 1, size: 10) { daemon, first in
            let memory = first.memory, options = Self.packedOptionsWithoutInflight
            let q = try first.driverQueue(0)
            for i in 0..<7 {  // 21 slots on 10: slot 1 of the third lap (wrap 1)
                let w = try Self.request(q, memory: memory, type: BlkWire.typeOut, sector: UInt64(i),
                                         data: [UInt8](repeating: UInt8(i + 1), count: 512))
                #expect(w.status == BlkWire.statusOK)
            }
            let raw = try first.getVringBaseRaw(0)
            let base = PackedRingBase.decode(raw)
            #expect(base.avail == PackedRingPosition(index: 1, wrap: true), "\(base)")
            #expect(base.avail == q.packedAvail && base.used == q.packedUsed)
            shutdown(first.channel.socket.rawValue, Int32(SHUT_RDWR))
            var reconnected: VhostUserFrontend?
            for _ in 0..<100 where reconnected == nil {
                usleep(20_000)  // until the daemon let the first session go
                let second = try VhostUserFrontend(socketPath: daemon.socketDirectory + "/vhost.0", memory: memory, options: options)
                do {
                    try second.connect()
                    reconnected = second
                } catch {
                    second.close()
                }
            }
            let second = try #require(reconnected)
            defer { second.close() }
            try second.resume(from: first, rawBases: [raw])
            for i in 0..<7 {
                let r = try Self.request(q, memory: memory, type: BlkWire.typeIn, sector: UInt64(i), data: nil)
                #expect(r.status == BlkWire.statusOK && r.data == [UInt8](repeating: UInt8(i + 1), count: 512), "sector \(i)")
            }
        }
    }

    /// `vhost-blk-bench --packed` (its own lean driver-side packed ring, not
    /// `DriverQueue`'s) in both client modes, at depth 1 and 32, on two queues
    /// whose size is no multiple of the three slots a request takes (QD1: 4,
    /// QD32: 101), so chains cross the ring's end and a batch's head often
    /// lands on a slot last written as the tail of a chain that crossed it (a
    /// driver that kept the head's wrap counter for that tail had the server
    /// read it as available two laps on: malformed requests, lost ones):
    /// every request completes OK, and the bench reports packed rings.
    @Test(arguments: [("interrupt", 1), ("interrupt", 32), ("poll", 1), ("poll", 32)])
    func benchDrivesPackedRings(mode: String, iodepth: Int) throws {
        let daemon = try Self.daemon()
        defer { daemon.stop(); daemon.cleanUp() }
        let bench = DaemonProcess.binaryDirectory.appendingPathComponent("vhost-blk-bench").path
        let (status, output) = try runCommand(bench, [
            "--socket", daemon.socketDirectory + "/vhost.0", "--packed", "--mode", mode, "--iodepth", "\(iodepth)",
            "--queues", "2", "--queue-size", iodepth == 1 ? "4" : "101", "--rw", "randrw",
            "--runtime", "1", "--warmup", "0.2", "--json",
        ])
        #expect(status == 0, "\(output)\n--- daemon log ---\n\(daemon.log.suffix(2000))")
        let line = output.split(separator: "\n").last { $0.hasPrefix("{") }.map(String.init) ?? ""
        let report = try JSON.parse(line)
        #expect(report["ring"]?.stringValue == "packed", "\(output)")
        #expect(report["errors"]?.intValue == 0, "\(output)")
        #expect((report["ios"]?.intValue ?? 0) > 100, "\(output)")
        #expect(report["failures"]?.arrayValue?.isEmpty == true, "\(output)")
        #expect(!daemon.log.contains("malformed"), "\(daemon.log.suffix(2000))")
        #expect(daemon.stop() == 0)
    }

    /// `--packed` against a controller without `packed_ring` fails at once
    /// (exit 2) and says why; the split client runs on a packed controller.
    @Test func benchPackedNeedsTheOffer() throws {
        let bench = DaemonProcess.binaryDirectory.appendingPathComponent("vhost-blk-bench").path
        for packed in [false, true] {
            let daemon = try Self.daemon(packed: packed)
            defer { daemon.stop(); daemon.cleanUp() }
            let socket = daemon.socketDirectory + "/vhost.0"
            let args = ["--socket", socket, "--iodepth", "4", "--runtime", "0.3", "--warmup", "0", "--json"]
            let (status, output) = try runCommand(bench, args + (packed ? [] : ["--packed"]))
            if packed {
                #expect(status == 0, "split client on a packed controller: \(output)")
                #expect(output.contains("\"ring\":\"split\""), "\(output)")
            } else {
                #expect(status == 2, "\(output)")
                #expect(output.contains("VIRTIO_F_RING_PACKED"), "\(output)")
            }
        }
    }

    /// A daemon restart (SIGTERM) under a packed queue, resumed as QEMU 7.2
    /// resumes it with `reconnect=N`: its GET_VRING_BASE failed once the back
    /// end had gone, and for a packed ring QEMU then keeps the positions of
    /// the session's start (`virtio_queue_packed_restore_last_avail_idx` does
    /// nothing: a packed ring has no used index in guest memory to read back,
    /// virtio 1.2 §2.8), so SET_VRING_BASE says slot 0, wrap 1 (0x80008000,
    /// what `PackedGuestTests.restartUnderLoad` saw QEMU send), beside
    /// the first session's inflight region. The restarted daemon serves the
    /// queue from where the first one stopped, which only the packed inflight
    /// region (vhost-user spec, "Inflight I/O tracking": `used_idx`,
    /// `used_wrap_counter`; `PackedInflightQueue`) can tell it.
    @Test func daemonRestartResumedWithQEMUsStalePositions() throws {
        let directory = URL(fileURLWithPath: "/tmp").appendingPathComponent("vbd-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: directory) }
        let arguments = ["--config", directory.appendingPathComponent("vhost-blkd.json").path, "--persist"]
        var daemon = try DaemonProcess(extraArguments: arguments, directory: directory)
        defer { daemon.stop() }
        try D.createBdev(daemon, .uring, name: "M0")
        try daemon.call("vhost_create_blk_controller", .object(["ctrlr": "vhost.0", "dev_name": "M0", "packed_ring": true]))
        let memory = try FrontendMemory(size: 16 << 20)
        defer { memory.close() }
        let first = try VhostUserFrontend(socketPath: daemon.socketDirectory + "/vhost.0", memory: memory, options: Self.packedOptions)
        defer { first.close() }
        try first.connect()
        try first.start(queueCount: 1, queueSize: 16)
        #expect(first.inflightFD != nil, "QEMU keeps the inflight region across the restart")
        let q = try first.driverQueue(0)
        for i in 0..<7 {  // 21 slots on 16: slot 5 of the second lap (wrap 0)
            let w = try Self.request(q, memory: memory, type: BlkWire.typeOut, sector: UInt64(i),
                                     data: [UInt8](repeating: UInt8(i + 1), count: 512))
            #expect(w.status == BlkWire.statusOK)
        }
        #expect(q.packedAvail == PackedRingPosition(index: 5, wrap: false))
        #expect(daemon.stop() == 0)  // drains: nothing is in flight
        daemon = try DaemonProcess(extraArguments: arguments, directory: directory)
        let second = try VhostUserFrontend(socketPath: daemon.socketDirectory + "/vhost.0", memory: memory, options: Self.packedOptions)
        defer { second.close() }
        try second.connect()
        try second.resume(from: first, rawBases: [PackedRingBase.encode(avail: .start, used: .start)])
        for i in 0..<7 {
            let r = try Self.request(q, memory: memory, type: BlkWire.typeIn, sector: UInt64(i), data: nil)
            #expect(r.status == BlkWire.statusOK && r.data == [UInt8](repeating: UInt8(i + 1), count: 512), "sector \(i)")
        }
        #expect(daemon.log.contains("recovered from the inflight region"))
    }
}
