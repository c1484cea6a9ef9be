import DaemonTestSupport
import Foundation
import JSONRPC
import Testing
import VhostUser
import VhostUserFrontend
import Virtio

/// The virtio-blk data path of the real daemon, driven through the in-repo
/// vhost-user front end (virtio 1.2 §5.2.6; docs/PROTOCOL-NOTES.md, "vhost-user
/// with QEMU 7.2").
@Suite("Data path against the running daemon")
struct DataPathTests {
    enum Engine: String, CaseIterable, CustomTestStringConvertible {
        case ioUring = "io_uring", threadPool = "thread-pool"
        var arguments: [String] { self == .threadPool ? ["--engine", "thread-pool"] : [] }
        var testDescription: String { rawValue }
    }

    enum Backend: String, CaseIterable, CustomTestStringConvertible {
        /// `tmpfs`: a `uring` bdev on /dev/shm, served inline (syscalls on the reactor).
        case malloc, uring, aio, tmpfs
        var testDescription: String { rawValue }
        var isFile: Bool { self != .malloc }
    }

    static let sectors: UInt64 = 16384  // 8 MiB

    // MARK: Helpers

    static func startDaemon(_ engine: Engine = .ioUring) throws -> DaemonProcess {
        try DaemonProcess(cpumask: "0x1", extraArguments: engine.arguments)
    }

    /// Creates bdev `name` of `sectors` 512-byte blocks on `backend`.
    static func createBdev(_ daemon: DaemonProcess, _ backend: Backend, name: String, sectors: UInt64 = sectors) throws {
        switch backend {
        case .malloc:
            try daemon.call("bdev_malloc_create", ["num_blocks": .int(Int64(sectors)), "block_size": 512, "name": .string(name)])
        case .uring, .aio, .tmpfs:
            let path = backend == .tmpfs
                ? "/dev/shm/vbd-\(daemon.directory.lastPathComponent)-\(name).img"
                : daemon.directory.appendingPathComponent("\(name).img").path
            #expect(FileManager.default.createFile(atPath: path, contents: nil))
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
            try handle.truncate(atOffset: sectors * 512)
            try handle.close()
            // The daemon holds the file open: unlinked, it leaves nothing behind in /dev/shm.
            defer { if backend == .tmpfs { try? FileManager.default.removeItem(atPath: path) } }
            let method = backend == .aio ? "bdev_aio_create" : "bdev_uring_create"
            try daemon.call(method, ["filename": .string(path), "name": .string(name), "block_size": 512])
            let described = try daemon.call("bdev_get_bdevs", ["name": .string(name)])
            let inline = described.arrayValue?.first?["driver_specific"]?[backend == .aio ? "aio" : "uring"]?["inline_io"]
            #expect(inline == .bool(backend == .tmpfs), "inline_io of a \(backend) bdev")
        }
    }

    static func createController(_ daemon: DaemonProcess, _ ctrlr: String, bdev: String, readonly: Bool = false) throws {
        var params: [String: JSON] = ["ctrlr": .string(ctrlr), "dev_name": .string(bdev)]
        if readonly { params["readonly"] = .bool(true) }
        try daemon.call("vhost_create_blk_controller", .object(JSONObject(params)))
    }

    /// A front end connected to `ctrlr` with `queues` started.
    /// A daemon with bdev `bdev` on `backend` served by controller `ctrlr`.
    static func daemonServing(_ engine: Engine, _ backend: Backend, bdev: String, ctrlr: String = "vhost.0") throws -> DaemonProcess {
        let daemon = try startDaemon(engine)
        do {
            try createBdev(daemon, backend, name: bdev)
            try createController(daemon, ctrlr, bdev: bdev)
        } catch {
            daemon.stop()
            daemon.cleanUp()
            throw error
        }
        return daemon
    }

    static func attach(
        _ daemon: DaemonProcess, _ ctrlr: String, memory: FrontendMemory, queues: Int = 2
    ) throws -> VhostUserFrontend {
        let frontend = try VhostUserFrontend(socketPath: daemon.socketDirectory + "/" + ctrlr, memory: memory)
        do {
            try frontend.connect()
            try frontend.start(queueCount: queues, queueSize: 128)
        } catch {
            frontend.close()
            throw error
        }
        return frontend
    }

    /// Runs `body` with a frontend attached (one queue, 8 MiB of memory) to
    /// a daemon serving malloc bdev M0 on controller vhost.0.
    static func withMallocFrontend(_ body: (DaemonProcess, VhostUserFrontend) throws -> Void) throws {
        let daemon = try daemonServing(.ioUring, .malloc, bdev: "M0")
        defer { daemon.stop(); daemon.cleanUp() }
        let memory = try FrontendMemory(size: 8 << 20)
        defer { memory.close() }
        let f = try attach(daemon, "vhost.0", memory: memory, queues: 1)
        defer { f.close() }
        try body(daemon, f)
    }

    static func pattern(_ count: Int, seed: Int) -> [UInt8] {
        (0..<count).map { UInt8(truncatingIfNeeded: ($0 &* 31) &+ seed &+ ($0 >> 9)) }
    }

    static func le<T: FixedWidthInteger>(_ bytes: [UInt8], at offset: Int, as: T.Type) -> T? {
        guard offset >= 0, offset + MemoryLayout<T>.size <= bytes.count else { return nil }
        return bytes.withUnsafeBytes { T(littleEndian: $0.loadUnaligned(fromByteOffset: offset, as: T.self)) }
    }

    /// Writes then reads back one sector at `sector` on `queue`.
    static func roundTrip(_ f: VhostUserFrontend, queue: Int = 0, sector: UInt64, seed: Int) throws -> Bool {
        let data = pattern(512, seed: seed)
        let w = try f.write(queue: queue, sector: sector, data: data)
        let r = try f.read(queue: queue, sector: sector, count: 1)
        return w.status == BlkWire.statusOK && r.status == BlkWire.statusOK && r.data == data
    }

    // MARK: 1. Requests and their outcomes

    @Test(arguments: Engine.allCases, Backend.allCases)
    func writeReadAndRequestTypes(engine: Engine, backend: Backend) throws {
        let daemon = try Self.startDaemon(engine)
        defer { daemon.stop(); daemon.cleanUp() }
        try Self.withLogOnError(daemon) { () throws in try requestTypes(daemon, backend: backend) }
    }

    /// `--sqpoll-idle-ms`: a kernel thread submits the reactor's io_uring entries
    /// (kick reads, and the disk I/O of a `uring` file). Every request type still
    /// completes, and framework_get_reactors and the log say polling is on.
    @Test(arguments: [Backend.uring, .malloc])
    func submissionPollingServesEveryRequestType(backend: Backend) throws {
        let daemon = try DaemonProcess(cpumask: "0x1", extraArguments: ["--sqpoll-idle-ms", "5"])
        defer { daemon.stop(); daemon.cleanUp() }
        let reactors = try daemon.call("framework_get_reactors")["reactors"]?.arrayValue ?? []
        #expect(reactors.count == 1)
        #expect(reactors.allSatisfy { $0["sqpoll"] == .bool(true) && $0["io_engine"] == .string("io_uring") })
        #expect(daemon.log.contains("engine=io_uring (sqpoll)"))
        try Self.withLogOnError(daemon) { () throws in try requestTypes(daemon, backend: backend) }
        // The thread sleeps after 5 ms without submissions; the next kick's read must wake it.
        usleep(50_000)
        let memory = try FrontendMemory(size: 8 << 20)
        defer { memory.close() }
        let f = try Self.attach(daemon, "vhost.0", memory: memory, queues: 1)
        defer { f.close() }
        usleep(50_000)
        #expect(try Self.roundTrip(f, queue: 0, sector: 16, seed: 3))
    }

    @Test(arguments: [
        (["--sqpoll-idle-ms", "0"], "--sqpoll-idle-ms must be 1...60000"),
        (["--sqpoll-idle-ms", "-5"], "--sqpoll-idle-ms"),
        (["--sqpoll-cpu", "1"], "--sqpoll-cpu needs --sqpoll-idle-ms"),
        (["--sqpoll-idle-ms", "10", "--sqpoll-cpu", "4096"], "--sqpoll-cpu must be 0...1023"),
    ])
    func submissionPollingOptionsAreValidated(arguments: [String], message: String) throws {
        let (status, output) = try runCommand(DaemonProcess.daemonPath, arguments + ["-r", "/nonexistent/rpc.sock"])
        #expect(status == 64, "\(output)")
        #expect(output.contains(message), "\(output)")
    }

    /// Runs `body`; on an error, records the daemon's log tail with it and rethrows.
    static func withLogOnError(_ daemon: DaemonProcess, _ body: () throws -> Void) throws {
        do {
            try body()
        } catch {
            Issue.record("\(error); daemon log tail:\n\(daemon.log.suffix(4000))")
            throw error
        }
    }

    func requestTypes(_ daemon: DaemonProcess, backend: Backend) throws {
        try Self.createBdev(daemon, backend, name: "D0")
        try Self.createController(daemon, "vhost.0", bdev: "D0")
        let memory = try FrontendMemory(size: 16 << 20)
        defer { memory.close() }
        let f = try Self.attach(daemon, "vhost.0", memory: memory)
        defer { f.close() }

        // Config space (virtio 1.2 §5.2.4): capacity @0, blk_size @20.
        let config = try f.getConfig(size: 24)
        #expect(Self.le(config, at: 0, as: UInt64.self) == Self.sectors)
        #expect(Self.le(config, at: 20, as: UInt32.self) == 512)
        #expect(f.ackedFeatures.contains(.sizeMax))
        #expect(Self.le(config, at: 8, as: UInt32.self) == 65536)

        // Several sizes and layouts on both queues.
        let cases: [(sector: UInt64, bytes: Int, layout: BlkLayout)] = [
            (0, 512, BlkLayout()),
            (8, 4096, BlkLayout()),
            (64, 128 << 10, BlkLayout()),
            (512, 8192, BlkLayout(maxSegmentBytes: 512)),
            (1024, 65536, BlkLayout(maxSegmentBytes: 4096)),
            (2048, 16384, BlkLayout(indirect: true, maxSegmentBytes: 1024)),
            (4096, 4096, BlkLayout(statusInDataBuffer: true)),
        ]
        for queue in 0..<2 {
            for (i, c) in cases.enumerated() {
                let sector = c.sector + UInt64(queue) * 8192
                let data = Self.pattern(c.bytes, seed: i * 7 + queue)
                let w = try f.write(queue: queue, sector: sector, data: data, layout: c.layout)
                #expect(w.status == BlkWire.statusOK, "write \(c.bytes) B at \(sector) q\(queue)")
                let r = try f.read(queue: queue, sector: sector, count: c.bytes / 512, layout: c.layout)
                #expect(r.status == BlkWire.statusOK, "read \(c.bytes) B at \(sector) q\(queue)")
                #expect(r.data == data, "data \(c.bytes) B at \(sector) q\(queue)")
            }
        }

        #expect(try f.flush().status == BlkWire.statusOK)
        #expect(try f.flush(queue: 1).status == BlkWire.statusOK)

        let id = try f.getID()
        #expect(id.status == BlkWire.statusOK)
        #expect(String(decoding: id.data.prefix { $0 != 0 }, as: UTF8.self) == "vhost.0")
        // virtio 1.2 §5.2.6: the 20-byte field, zero-padded, all of it counted as written.
        #expect(id.data == Array("vhost.0".utf8) + [UInt8](repeating: 0, count: 13))
        #expect(id.usedLength == 21)

        // Last sector, and beyond capacity.
        #expect(try Self.roundTrip(f, sector: Self.sectors - 1, seed: 3))
        #expect(try f.read(sector: Self.sectors, count: 1).status == BlkWire.statusIOErr)
        #expect(try f.read(sector: Self.sectors - 1, count: 2).status == BlkWire.statusIOErr)
        #expect(try f.write(sector: Self.sectors, data: Self.pattern(512, seed: 1)).status == BlkWire.statusIOErr)

        // Unknown request type.
        let unknown = try f.request(queue: 0, type: 99, sector: 0, dataOut: [], dataInLength: 0)
        #expect(unknown.status == BlkWire.statusUnsupported)

        // WRITE_ZEROES, then zeroes read back.
        let zeroStart: UInt64 = 64
        let wz = try f.writeZeroes(segments: [BlkSegment(sector: zeroStart, sectors: 16)])
        #expect(wz.status == BlkWire.statusOK)
        let afterWZ = try f.read(sector: zeroStart, count: 16)
        #expect(afterWZ.status == BlkWire.statusOK)
        #expect(afterWZ.data == [UInt8](repeating: 0, count: 16 * 512))
        // Around the zeroed range the earlier data is intact.
        let tail = try f.read(sector: zeroStart + 16, count: 1)
        #expect(tail.data == Array(Self.pattern(128 << 10, seed: 2 * 7)[(16 * 512)..<(17 * 512)]))

        // DISCARD on a file bdev punches a hole: zeroes read back.
        if backend.isFile {
            let start: UInt64 = 1024
            let d = try f.discard(segments: [BlkSegment(sector: start, sectors: 64)])
            #expect(d.status == BlkWire.statusOK)
            let afterDiscard = try f.read(sector: start, count: 64)
            #expect(afterDiscard.status == BlkWire.statusOK)
            #expect(afterDiscard.data == [UInt8](repeating: 0, count: 64 * 512))
        }
        #expect(daemon.isRunning)
    }

    /// A DISCARD or WRITE_ZEROES over 64 KiB on a backend served on the
    /// reactor is made in chunks (`LargeCopies`): exactly its range reads
    /// back zeroes, from an offset and to an end that are not page-aligned,
    /// and the sectors around it keep their data.
    @Test(arguments: [Backend.malloc, .tmpfs, .uring])
    func largeClearsZeroExactlyTheirRange(backend: Backend) throws {
        let daemon = try Self.startDaemon()
        defer { daemon.stop(); daemon.cleanUp() }
        try Self.createBdev(daemon, backend, name: "D0", sectors: 16384)  // 8 MiB
        try Self.createController(daemon, "vhost.0", bdev: "D0")
        let memory = try FrontendMemory(size: 24 << 20)
        defer { memory.close() }
        let f = try Self.attach(daemon, "vhost.0", memory: memory, queues: 1)
        defer { f.close() }
        let data = Self.pattern(6 << 20, seed: 5)
        for (index, clear) in [(start: UInt64(7), sectors: UInt32(6147)), (start: 2001, sectors: 8191)].enumerated() {
            #expect(try f.write(sector: 0, data: data).status == BlkWire.statusOK)
            let segment = [BlkSegment(sector: clear.start, sectors: clear.sectors)]
            let status = index == 0 ? try f.discard(segments: segment).status : try f.writeZeroes(segments: segment).status
            #expect(status == BlkWire.statusOK)
            let back = try f.read(sector: 0, count: data.count / 512)
            #expect(back.status == BlkWire.statusOK)
            let from = Int(clear.start) * 512, to = from + Int(clear.sectors) * 512
            #expect(back.data[..<from] == data[..<from], "before the range (\(index))")
            #expect(back.data[from..<to].allSatisfy { $0 == 0 }, "the range (\(index))")
            #expect(back.data[to...] == data[to...], "after the range (\(index))")
        }
    }

    /// A request over the advertised size_max * seg_max (16 MiB) fails with
    /// IOERR instead of holding the reactor for a copy of any size; one of
    /// exactly that size, in one descriptor as SeaBIOS sends it, is served.
    @Test(arguments: [Backend.malloc, .tmpfs])
    func requestsOverTheAdvertisedMaximumFail(backend: Backend) throws {
        let daemon = try Self.startDaemon()
        defer { daemon.stop(); daemon.cleanUp() }
        let sectors: UInt64 = 65536  // 32 MiB
        try Self.createBdev(daemon, backend, name: "D0", sectors: sectors)
        try Self.createController(daemon, "vhost.0", bdev: "D0")
        let memory = try FrontendMemory(size: 48 << 20)
        defer { memory.close() }
        let f = try Self.attach(daemon, "vhost.0", memory: memory, queues: 1)
        defer { f.close() }
        // virtio 1.2 §5.2.4: size_max @8, seg_max @12, max_discard_sectors @36.
        let config = try f.getConfig(size: 40)
        let sizeMax = try #require(Self.le(config, at: 8, as: UInt32.self))
        let segMax = try #require(Self.le(config, at: 12, as: UInt32.self))
        let most = Int(sizeMax) * Int(segMax)
        #expect(most == 16 << 20)
        #expect(try f.read(sector: 0, count: most / 512).status == BlkWire.statusOK)
        #expect(try f.read(sector: 0, count: most / 512 + 1).status == BlkWire.statusIOErr)
        #expect(try f.write(sector: 8, data: [UInt8](repeating: 3, count: most + 4096)).status == BlkWire.statusIOErr)
        let maxDiscard = try #require(Self.le(config, at: 36, as: UInt32.self))
        #expect(try f.discard(segments: [BlkSegment(sector: 0, sectors: maxDiscard + 1)]).status == BlkWire.statusIOErr)
        #expect(try Self.roundTrip(f, sector: 8, seed: 4))  // the queue goes on
    }

    @Test(arguments: Engine.allCases)
    func readOnlyControllerRefusesWrites(engine: Engine) throws {
        let daemon = try Self.startDaemon(engine)
        defer { daemon.stop(); daemon.cleanUp() }
        try Self.createBdev(daemon, .malloc, name: "M0")
        try Self.createController(daemon, "ro.0", bdev: "M0", readonly: true)
        let memory = try FrontendMemory(size: 8 << 20)
        defer { memory.close() }
        let f = try Self.attach(daemon, "ro.0", memory: memory, queues: 1)
        defer { f.close() }
        #expect(f.deviceFeatures.contains(.readOnly))
        #expect(try f.write(sector: 0, data: Self.pattern(512, seed: 9)).status == BlkWire.statusIOErr)
        #expect(try f.writeZeroes(segments: [BlkSegment(sector: 0, sectors: 8)]).status != BlkWire.statusOK)
        let r = try f.read(sector: 0, count: 1)
        #expect(r.status == BlkWire.statusOK)
        #expect(r.data == [UInt8](repeating: 0, count: 512))
    }

    // MARK: 2. Malformed chains

    enum Malformed: String, CaseIterable, CustomTestStringConvertible {
        case loop, nextOutOfRange, addressOutsideMemory, nestedIndirect
        var testDescription: String { rawValue }
    }

    @Test(arguments: Engine.allCases, Malformed.allCases)
    func malformedChainGetsUsedEntryAndServingGoesOn(engine: Engine, kind: Malformed) throws {
        let daemon = try Self.startDaemon(engine)
        defer { daemon.stop(); daemon.cleanUp() }
        try Self.createBdev(daemon, .malloc, name: "M0")
        try Self.createBdev(daemon, .malloc, name: "M1")
        try Self.createController(daemon, "vhost.0", bdev: "M0")
        try Self.createController(daemon, "vhost.1", bdev: "M1")
        let memory = try FrontendMemory(size: 8 << 20)
        defer { memory.close() }
        let f = try Self.attach(daemon, "vhost.0", memory: memory, queues: 1)
        defer { f.close() }
        let otherMemory = try FrontendMemory(size: 8 << 20)
        defer { otherMemory.close() }
        let other = try Self.attach(daemon, "vhost.1", memory: otherMemory, queues: 1)
        defer { other.close() }

        let q = try f.driverQueue(0)
        let header = try memory.allocate(16, alignment: 16)
        header.write(BlkWire.header(type: BlkWire.typeIn, sector: 0))
        let data = try memory.allocate(512, alignment: 512)
        let status = try memory.allocate(1, alignment: 1)
        status.pointer.storeBytes(of: 0xff, as: UInt8.self)
        let owned = [header, data, status]
        let head: UInt16
        switch kind {
        case .loop:
            let d = try q.takeDescriptors(3)
            q.writeDescriptor(Descriptor(addr: header.gpa, len: 16, flags: Descriptor.flagNext, next: d[1]), at: d[0])
            q.writeDescriptor(Descriptor(addr: data.gpa, len: 512, flags: Descriptor.flagNext | Descriptor.flagWrite, next: d[2]), at: d[1])
            q.writeDescriptor(Descriptor(addr: status.gpa, len: 1, flags: Descriptor.flagNext | Descriptor.flagWrite, next: d[0]), at: d[2])
            q.track(head: d[0], descriptors: d, owning: owned)
            head = d[0]
        case .nextOutOfRange:
            let d = try q.takeDescriptors(2)
            q.writeDescriptor(Descriptor(addr: header.gpa, len: 16, flags: Descriptor.flagNext, next: d[1]), at: d[0])
            q.writeDescriptor(Descriptor(addr: data.gpa, len: 512, flags: Descriptor.flagNext | Descriptor.flagWrite, next: 500), at: d[1])
            q.track(head: d[0], descriptors: d, owning: owned)
            head = d[0]
        case .addressOutsideMemory:
            let d = try q.takeDescriptors(3)
            q.writeDescriptor(Descriptor(addr: header.gpa, len: 16, flags: Descriptor.flagNext, next: d[1]), at: d[0])
            q.writeDescriptor(Descriptor(addr: 1 << 40, len: 512, flags: Descriptor.flagNext | Descriptor.flagWrite, next: d[2]), at: d[1])
            q.writeDescriptor(Descriptor(addr: status.gpa, len: 1, flags: Descriptor.flagWrite, next: 0), at: d[2])
            q.track(head: d[0], descriptors: d, owning: owned)
            head = d[0]
        case .nestedIndirect:
            let inner = try memory.allocate(2 * Descriptor.byteSize, alignment: 16)
            Descriptor(addr: data.gpa, len: 512, flags: Descriptor.flagNext | Descriptor.flagWrite, next: 1)
                .store(to: inner.pointer)
            Descriptor(addr: status.gpa, len: 1, flags: Descriptor.flagWrite, next: 0)
                .store(to: inner.pointer + Descriptor.byteSize)
            let outer = try memory.allocate(2 * Descriptor.byteSize, alignment: 16)
            Descriptor(addr: header.gpa, len: 16, flags: Descriptor.flagNext, next: 1).store(to: outer.pointer)
            Descriptor(addr: inner.gpa, len: UInt32(inner.length), flags: Descriptor.flagIndirect, next: 0)
                .store(to: outer.pointer + Descriptor.byteSize)
            let d = try q.takeDescriptors(1)
            q.writeDescriptor(Descriptor(addr: outer.gpa, len: UInt32(outer.length), flags: Descriptor.flagIndirect, next: 0), at: d[0])
            q.track(head: d[0], descriptors: d, owning: owned + [inner, outer])
            head = d[0]
        }
        q.pushAvail(head: head)
        q.publishAndKick(force: true)
        let used = try q.waitUsed(timeout: .seconds(5))
        #expect(used.id == UInt32(head))
        // The chain is rejected before any data moves: nothing counted as written.
        #expect(used.length == 0)
        #expect(q.inFlightCount == 0, "the malformed chain's descriptors came back")
        #expect(daemon.log.contains("malformed descriptor chain"), "log:\n\(daemon.log.suffix(2000))")

        // Same session keeps serving.
        #expect(try Self.roundTrip(f, sector: 10, seed: 5))
        #expect(daemon.isRunning)
        // Another controller keeps serving.
        #expect(try Self.roundTrip(other, sector: 20, seed: 6))
    }

    // MARK: 3. Stop, restart, reconnect, second frontend

    @Test(arguments: Engine.allCases)
    func stopReturnsBasesAndRestartServes(engine: Engine) throws {
        let daemon = try Self.daemonServing(engine, .malloc, bdev: "M0")
        defer { daemon.stop(); daemon.cleanUp() }
        let memory = try FrontendMemory(size: 8 << 20)
        defer { memory.close() }
        let f = try Self.attach(daemon, "vhost.0", memory: memory)
        defer { f.close() }

        for i in 0..<5 { #expect(try f.write(queue: 0, sector: UInt64(i), data: Self.pattern(512, seed: i)).status == 0) }
        for i in 0..<3 { #expect(try f.read(queue: 1, sector: UInt64(i), count: 1).status == 0) }
        let bases = try f.stop()
        #expect(bases == [5, 3])

        try f.start(queueCount: 2, queueSize: 128)
        for queue in 0..<2 {
            let r = try f.read(queue: queue, sector: 4, count: 1)
            #expect(r.status == BlkWire.statusOK)
            #expect(r.data == Self.pattern(512, seed: 4))
            #expect(try Self.roundTrip(f, queue: queue, sector: 100 + UInt64(queue), seed: 11))
        }
        #expect(try f.stop() == [3, 3])
    }

    @Test(arguments: Engine.allCases)
    func reconnectAndSecondFrontendRefused(engine: Engine) throws {
        let daemon = try Self.daemonServing(engine, .malloc, bdev: "M0")
        defer { daemon.stop(); daemon.cleanUp() }
        let memory = try FrontendMemory(size: 8 << 20)
        defer { memory.close() }

        do {
            let first = try Self.attach(daemon, "vhost.0", memory: memory)
            defer { first.close() }
            #expect(try first.write(sector: 7, data: Self.pattern(512, seed: 7)).status == 0)
        }

        // A new front end on the same controller (the old session may take a moment to go).
        let reconnectMemory = try FrontendMemory(size: 8 << 20)
        defer { reconnectMemory.close() }
        var second: VhostUserFrontend?
        let deadline = Date().addingTimeInterval(5)
        while second == nil && Date() < deadline {
            second = try? Self.attach(daemon, "vhost.0", memory: reconnectMemory)
            if second == nil { usleep(50_000) }
        }
        let f = try #require(second)
        defer { f.close() }
        let r = try f.read(sector: 7, count: 1)
        #expect(r.status == BlkWire.statusOK)
        #expect(r.data == Self.pattern(512, seed: 7))

        // A third front end while `f` is connected is refused.
        let intruderMemory = try FrontendMemory(size: 8 << 20)
        defer { intruderMemory.close() }
        var refusedOptions = VhostUserFrontend.Options()
        refusedOptions.timeout = .seconds(3)
        #expect(throws: (any Error).self) {
            let intruder = try VhostUserFrontend(
                socketPath: daemon.socketDirectory + "/vhost.0", memory: intruderMemory, options: refusedOptions)
            defer { intruder.close() }
            try intruder.connect()
            try intruder.start(queueCount: 1, queueSize: 128)
            _ = try intruder.read(sector: 0, count: 1, layout: BlkLayout(timeout: .seconds(2)))
        }
        #expect(daemon.log.contains("refusing a second frontend"))
        // The connected one keeps working.
        #expect(try Self.roundTrip(f, queue: 1, sector: 30, seed: 8))
        #expect(try Self.roundTrip(f, queue: 0, sector: 31, seed: 9))
    }

    // MARK: 4. Shutdown with a connected front end

    @Test(arguments: Engine.allCases)
    func shutdownWithConnectedFrontendExitsZero(engine: Engine) throws {
        let daemon = try Self.daemonServing(engine, .uring, bdev: "F0")
        defer { daemon.cleanUp() }
        let memory = try FrontendMemory(size: 8 << 20)
        defer { memory.close() }
        let f = try Self.attach(daemon, "vhost.0", memory: memory)
        defer { f.close() }
        #expect(try Self.roundTrip(f, sector: 1, seed: 1))
        let status = daemon.stop()
        #expect(status == 0, "log:\n\(daemon.log.suffix(2000))")
        #expect(!FileManager.default.fileExists(atPath: daemon.socketDirectory + "/vhost.0"))
    }
}

