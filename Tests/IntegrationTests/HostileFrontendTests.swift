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

/// Raw vhost-user bytes from a frontend that does not play by the rules.
@Suite("Hostile frontends against the running daemon")
struct HostileFrontendTests {
    /// A 12-byte vhost-user header (request, flags = version 1, size), little endian.
    static func header(request: UInt32, size: UInt32) -> [UInt8] {
        var bytes: [UInt8] = []
        for value in [request, 1, size] { withUnsafeBytes(of: value.littleEndian) { bytes += $0 } }
        return bytes
    }

    static func startWithController() throws -> DaemonProcess {
        let daemon = try DaemonProcess()
        try daemon.call("bdev_malloc_create", ["num_blocks": 2048, "block_size": 512, "name": "M0"])
        try daemon.call("vhost_create_blk_controller", ["ctrlr": "vhost.0", "dev_name": "M0"])
        return daemon
    }

    /// Reads up to `count` bytes, waiting at most `seconds`; returns what arrived (empty on close).
    static func read(_ fd: FileDescriptor, count: Int, seconds: Int32 = 5) -> [UInt8] {
        var pfd = pollfd(fd: fd.rawValue, events: Int16(POLLIN), revents: 0)
        guard poll(&pfd, 1, seconds * 1000) == 1 else { return [] }
        var buffer = [UInt8](repeating: 0, count: count)
        let n = buffer.withUnsafeMutableBytes { Glibc.read(fd.rawValue, $0.baseAddress, count) }
        return n > 0 ? Array(buffer.prefix(n)) : []
    }

    @Test func dribbledHeaderDoesNotHoldTheControlLoop() throws {
        let daemon = try Self.startWithController()
        defer { daemon.stop(); daemon.cleanUp() }
        let fd = try UnixSocket.connect(path: daemon.socketDirectory + "/vhost.0")
        defer { fd.close() }
        let getFeatures = Self.header(request: 1, size: 0)
        try UnixSocket.sendAll(fd, Array(getFeatures.prefix(5)))
        // Half a message is pending: RPC must still answer at once.
        let start = ContinuousClock.now
        #expect(try daemon.call("spdk_get_version")["version"] != nil)
        #expect(ContinuousClock.now - start < .milliseconds(500))
        try UnixSocket.sendAll(fd, Array(getFeatures.dropFirst(5)))
        let reply = Self.read(fd, count: 20)
        #expect(reply.count == 20)
        #expect(Array(reply.prefix(4)) == [1, 0, 0, 0])   // GET_FEATURES
        #expect(Array(reply[4..<8]) == [5, 0, 0, 0])      // flags: version | REPLY
        #expect(Array(reply[8..<12]) == [8, 0, 0, 0])     // a u64 payload
    }

    @Test(arguments: [
        ("oversized payload", header(request: 5, size: 1 << 20)),
        ("wrong payload size", header(request: 8, size: 3) + [0, 0, 0]),
        ("queue index beyond the controller", header(request: 8, size: 8) + [0xff, 0, 0, 0, 128, 0, 0, 0]),
        ("bad version", [1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]),
    ])
    func protocolErrorsDisconnectOnlyThatFrontend(label: String, bytes: [UInt8]) throws {
        let daemon = try Self.startWithController()
        defer { daemon.stop(); daemon.cleanUp() }
        try daemon.call("bdev_malloc_create", ["num_blocks": 2048, "block_size": 512, "name": "M1"])
        try daemon.call("vhost_create_blk_controller", ["ctrlr": "vhost.1", "dev_name": "M1"])
        let bystander = try UnixSocket.connect(path: daemon.socketDirectory + "/vhost.1")
        defer { bystander.close() }

        let fd = try UnixSocket.connect(path: daemon.socketDirectory + "/vhost.0")
        defer { fd.close() }
        try UnixSocket.sendAll(fd, bytes)
        #expect(Self.read(fd, count: 64).isEmpty, "\(label): the daemon should close the connection")
        #expect(daemon.log.contains("disconnecting frontend"), "\(label)")
        #expect(daemon.isRunning)
        // The other controller's frontend is still served.
        try UnixSocket.sendAll(bystander, Self.header(request: 1, size: 0))
        #expect(Self.read(bystander, count: 20).count == 20)
        // And a new frontend may connect to the controller that dropped the bad one.
        let again = try UnixSocket.connect(path: daemon.socketDirectory + "/vhost.0")
        defer { again.close() }
        try UnixSocket.sendAll(again, Self.header(request: 17, size: 0))  // GET_QUEUE_NUM
        #expect(Self.read(again, count: 20).count == 20)
    }

    // MARK: Hostile sessions while another controller does verified I/O

    /// A daemon with two malloc controllers: `vhost.0` for the hostile
    /// frontend, `vhost.1` for a bystander doing verified I/O throughout.
    final class Bystander {
        let daemon: DaemonProcess
        let memory: FrontendMemory
        let frontend: VhostUserFrontend
        let load: VerifiedIOLoad

        /// A daemon with malloc controllers `vhost.0` (on M0) and `vhost.1` (on M1), 2 MiB each;
        /// with `packed`, `vhost.0` is created with `packed_ring` (it offers VIRTIO_F_RING_PACKED).
        static func twoControllers(cpumask: String = "0x1", extraArguments: [String] = [], packed: Bool = false) throws -> DaemonProcess {
            let daemon = try DaemonProcess(cpumask: cpumask, extraArguments: extraArguments)
            for i in 0..<2 {
                try daemon.call("bdev_malloc_create", ["num_blocks": 4096, "block_size": 512, "name": .string("M\(i)")])
                try daemon.call("vhost_create_blk_controller", .object([
                    "ctrlr": .string("vhost.\(i)"), "dev_name": .string("M\(i)"), "packed_ring": .bool(packed && i == 0),
                ]))
            }
            return daemon
        }

        /// With `packed`, the hostile controller `vhost.0` offers packed rings
        /// (the bystander on `vhost.1` keeps its split ring).
        init(packed: Bool = false) throws {
            daemon = try Self.twoControllers(packed: packed)
            memory = try FrontendMemory(size: 8 << 20)
            frontend = try VhostUserFrontend(socketPath: daemon.socketDirectory + "/vhost.1", memory: memory)
            try frontend.connect()
            try frontend.start(queueCount: 1, queueSize: 128)
            load = try VerifiedIOLoad(frontend: frontend)
            #expect(load.waitForRounds(20), "the bystander's I/O does not run")
        }

        /// The daemon lives, logged `reason`, and the bystander saw no error.
        func finish(_ label: String, reason: String, sourceLocation: SourceLocation = #_sourceLocation) {
            #expect(load.waitForRounds(20), "\(label): bystander stalled", sourceLocation: sourceLocation)
            let outcome = load.stop()
            #expect(outcome.errors == 0, "\(label): bystander saw \(outcome.firstError ?? "")", sourceLocation: sourceLocation)
            #expect(daemon.isRunning, "\(label): daemon died", sourceLocation: sourceLocation)
            let log = daemon.log
            // Requests that are well formed but out of range fail with IOERR
            // and no log line (reason ""): not a protocol error.
            #expect(reason.isEmpty || log.contains(reason), "\(label): log lacks '\(reason)':\n\(log.suffix(3000))", sourceLocation: sourceLocation)
            #expect((try? daemon.call("spdk_get_version"))?["version"] != nil, sourceLocation: sourceLocation)
        }

        deinit {
            load.stop()
            frontend.close()
            daemon.stop()
            memory.close()
            daemon.cleanUp()
        }
    }

    static func message(_ request: VhostUserRequest, _ payload: VhostUserPayload = .none, fds: [FileDescriptor] = []) -> VhostUserMessage {
        VhostUserMessage(request: request, payload: payload, fds: fds)
    }

    /// Control-path abuse: each case is a list of messages sent on a fresh
    /// connection to vhost.0 (after GET_FEATURES, SET_OWNER), which must end
    /// in a disconnect whose log line contains the reason.
    enum ControlCase: String, CaseIterable, CustomTestStringConvertible {
        case truncatedHeaderThenClose, truncatedPayloadThenClose
        case wrongSizeVringAddr, configTooLarge, tooManyRegions
        case memTableWithoutFD, kickWithTwoFDs, featuresWithFD, tenFDs
        case queueSizeZero, queueSizeNotPowerOfTwo, queueSizeHuge, queueIndexHuge, kickIndexBeyond
        case overlappingRegions, regionBeyondFile, regionSizeZero, regionAddressOverflow, mmapOffsetOverflow
        case ringsOutsideMemory, kickIsAFile, callIsAPipe
        var testDescription: String { rawValue }
    }

    static func region(gpa: UInt64, size: UInt64, user: UInt64 = 0x7000_0000_0000, offset: UInt64 = 0) -> MemoryRegionDescriptor {
        MemoryRegionDescriptor(guestPhysAddr: gpa, size: size, userAddr: user, mmapOffset: offset)
    }

    /// Sends `messages`, then `raw` with `fds`; nil if all went or the peer hung up, else why not.
    static func send(_ messages: [VhostUserMessage], raw: [UInt8], fds: [FileDescriptor], on channel: VhostUserChannel) -> String? {
        do throws(FrontendError) {
            for message in messages { try channel.send(message) }
            if !raw.isEmpty { try channel.sendRaw(raw, fds: fds) }
            return nil
        } catch {
            if case .peerClosed = error { return nil }
            return "\(error)"
        }
    }

    @Test(arguments: ControlCase.allCases)
    func controlPathAbuseDisconnectsOnlyThatFrontend(_ kind: ControlCase) throws {
        let world = try Bystander()
        let channel = try VhostUserChannel(path: world.daemon.socketDirectory + "/vhost.0")
        defer { channel.close() }
        _ = try channel.requestU64(.getFeatures)
        try channel.send(Self.message(.setOwner))
        let memfd = try Memfd.create(name: "hostile", size: 1 << 20)
        defer { memfd.close() }
        let event = try EventFD()
        defer { event.close() }
        let m = memfd

        var reason = "disconnecting frontend"
        var raw: [UInt8] = []
        var rawFDs: [FileDescriptor] = []
        var messages: [VhostUserMessage] = []
        var pipeEnds: [Int32] = []
        defer { for fd in pipeEnds where fd >= 0 { Glibc.close(fd) } }
        switch kind {
        case .truncatedHeaderThenClose:
            raw = Array(Self.header(request: 8, size: 8).prefix(7))
            reason = "frontend disconnected"
        case .truncatedPayloadThenClose:
            raw = Self.header(request: 9, size: 40) + [UInt8](repeating: 0, count: 10)
            reason = "frontend disconnected"
        case .wrongSizeVringAddr:
            raw = Self.header(request: 9, size: 39) + [UInt8](repeating: 0, count: 39)
            reason = "payload is 39 bytes, expected 40"
        case .configTooLarge:
            raw = Self.header(request: 24, size: 12 + 300) + [0, 0, 0, 0, 0x2c, 1, 0, 0] + [UInt8](repeating: 0, count: 304)
            reason = "config size 300 exceeds"
        case .tooManyRegions:
            raw = Self.header(request: 5, size: 8 + 9 * 32) + [9, 0, 0, 0, 0, 0, 0, 0] + [UInt8](repeating: 0, count: 9 * 32)
            reason = "memory table has 9 regions"
        case .memTableWithoutFD:
            messages = [Self.message(.setMemTable, .memoryTable([Self.region(gpa: 0, size: 1 << 20)]))]
            reason = "received 0 file descriptors, expected 1"
        case .kickWithTwoFDs:
            messages = [Self.message(.setVringKick, .u64(0), fds: [event.fd, event.fd])]
            reason = "received 2 file descriptors, expected 1"
        case .featuresWithFD:
            messages = [Self.message(.getFeatures, fds: [m])]
            reason = "received 1 file descriptors, expected 0"
        case .tenFDs:
            raw = Self.header(request: 1, size: 0)
            rawFDs = [FileDescriptor](repeating: m, count: 10)
            reason = "more file descriptors than any message carries"
        case .queueSizeZero:
            messages = [Self.message(.setVringNum, .vringState(index: 0, num: 0))]
            reason = "SET_VRING_NUM 0"
        case .queueSizeNotPowerOfTwo:
            messages = [Self.message(.setVringNum, .vringState(index: 0, num: 100))]
            reason = "SET_VRING_NUM 100"
        case .queueSizeHuge:
            messages = [Self.message(.setVringNum, .vringState(index: 0, num: 0xffff_ffff))]
            reason = "SET_VRING_NUM 4294967295"
        case .queueIndexHuge:
            messages = [Self.message(.setVringAddr, .vringAddress(VringAddress(index: 0xffff_ffff, desc: 0, used: 0, avail: 0)))]
            reason = "queue index 4294967295 beyond"
        case .kickIndexBeyond:
            messages = [Self.message(.setVringKick, .u64(0xff), fds: [event.fd])]
            reason = "queue index 255 beyond"
        case .overlappingRegions:
            messages = [Self.message(.setMemTable, .memoryTable([
                Self.region(gpa: 0, size: 1 << 19), Self.region(gpa: 1 << 18, size: 1 << 19, offset: 1 << 19),
            ]), fds: [m, m])]
            reason = "overlap"
        case .regionBeyondFile:
            messages = [Self.message(.setMemTable, .memoryTable([Self.region(gpa: 0, size: 4 << 20)]), fds: [m])]
            reason = "exceeds the file size"
        case .regionSizeZero:
            messages = [Self.message(.setMemTable, .memoryTable([Self.region(gpa: 0, size: 0)]), fds: [m])]
            reason = "size is 0"
        case .regionAddressOverflow:
            messages = [Self.message(.setMemTable, .memoryTable([Self.region(gpa: UInt64.max - 4095, size: 1 << 20)]), fds: [m])]
            reason = "guest_phys_addr + size overflows"
        case .mmapOffsetOverflow:
            messages = [Self.message(.setMemTable, .memoryTable([Self.region(gpa: 0, size: 1 << 20, offset: UInt64.max - 10)]), fds: [m])]
            reason = "mmap_offset + size overflows"
        case .ringsOutsideMemory:
            messages = [
                Self.message(.setMemTable, .memoryTable([Self.region(gpa: 0, size: 1 << 20)]), fds: [m]),
                Self.message(.setVringNum, .vringState(index: 0, num: 128)),
                Self.message(.setVringBase, .vringState(index: 0, num: 0)),
                Self.message(.setVringAddr, .vringAddress(VringAddress(
                    index: 0, desc: 0x7000_0000_0000 + (1 << 20) - 64, used: 0x1000, avail: 0x7000_0000_2000))),
                Self.message(.setVringKick, .u64(0), fds: [event.fd]),
            ]
            reason = "rings are outside guest memory"
        case .kickIsAFile:
            messages = [Self.message(.setVringKick, .u64(0), fds: [m])]
            reason = "SET_VRING_KICK: the descriptor is not an eventfd"
        case .callIsAPipe:
            // Nobody reads it: a daemon writing a signal per completion would block once it is full.
            var ends: [Int32] = [-1, -1]
            #expect(pipe(&ends) == 0)
            pipeEnds = ends
            messages = [Self.message(.setVringCall, .u64(0), fds: [FileDescriptor(ends[1])])]
            reason = "SET_VRING_CALL: the descriptor is not an eventfd"
        }
        // The daemon may hang up before the last message is sent.
        var sent = Self.send(messages, raw: raw.count > 0 && rawFDs.count > 8 ? [] : raw, fds: rawFDs, on: channel)
        if rawFDs.count > 8 {
            do { _ = try ManyFDSender.send(channel.socket, raw, fds: rawFDs) } catch { sent = "\(error)" }
        }
        #expect(sent == nil, "\(kind): \(sent ?? "")")
        if reason == "frontend disconnected" {
            _ = shutdown(channel.socket.rawValue, Int32(SHUT_RDWR))
        } else {
            #expect(channel.waitForClose(timeout: .seconds(5)), "\(kind): the daemon kept the connection")
        }
        // The log line may land a moment after the close.
        let deadline = ContinuousClock.now + .seconds(3)
        while !reason.isEmpty && !world.daemon.log.contains(reason) && ContinuousClock.now < deadline { usleep(20_000) }
        world.finish(kind.rawValue, reason: reason)
    }

    /// Data-path abuse through a started frontend on vhost.0: each case is
    /// a hand-built chain or ring state; the bad request fails (or the ring
    /// stops) with a log line, the bystander sees nothing.
    enum RingCase: String, CaseIterable, CustomTestStringConvertible {
        case addressLengthOverflow, indirectAddressOverflow, indirectBadLength, indirectTooLong
        case indirectLoop, headOutOfRange, availIndexFarAhead
        var testDescription: String { rawValue }
    }

    /// Which ring layout a hostile frontend drives (virtio 1.2 §2.7 split,
    /// §2.8 packed): the tests that do not build rings by hand run on both.
    enum Layout: String, CaseIterable, CustomTestStringConvertible {
        case split, packed
        var testDescription: String { rawValue }
    }

    /// Well-formed requests out of the disk's range: each fails with IOERR
    /// and no log line (not a protocol error), the session goes on serving.
    enum RangeCase: String, CaseIterable, CustomTestStringConvertible {
        case sectorBeyondDisk, sectorTimesSizeOverflows, readCrossingTheEnd, discardBeyondDisk
        var testDescription: String { rawValue }
    }

    @Test(arguments: RangeCase.allCases, Layout.allCases)
    func outOfRangeRequestsFailWithIOErr(_ kind: RangeCase, _ layout: Layout) throws {
        let world = try Bystander(packed: layout == .packed)
        let f = try Self.startedFrontend(world.daemon.socketDirectory + "/vhost.0", layout: layout)
        defer { f.close(); f.memory.close() }
        #expect(try f.driverQueue(0).packed == (layout == .packed))
        let sectors: UInt64 = 4096
        switch kind {
        case .sectorBeyondDisk:
            #expect(try f.read(sector: sectors, count: 1).status == BlkWire.statusIOErr)
            #expect(try f.write(sector: sectors + 1, data: [UInt8](repeating: 1, count: 512)).status == BlkWire.statusIOErr)
        case .sectorTimesSizeOverflows:
            #expect(try f.read(sector: UInt64.max / 256, count: 1).status == BlkWire.statusIOErr)
            #expect(try f.write(sector: UInt64.max, data: [UInt8](repeating: 1, count: 512)).status == BlkWire.statusIOErr)
        case .readCrossingTheEnd:
            #expect(try f.read(sector: sectors - 1, count: 2).status == BlkWire.statusIOErr)
            #expect(try f.write(sector: sectors - 2, data: [UInt8](repeating: 1, count: 2048)).status == BlkWire.statusIOErr)
        case .discardBeyondDisk:
            #expect(try f.discard(segments: [BlkSegment(sector: sectors, sectors: 8)]).status != BlkWire.statusOK)
            #expect(try f.writeZeroes(segments: [BlkSegment(sector: UInt64.max - 2, sectors: 8)]).status != BlkWire.statusOK)
        }
        // The session goes on serving after a failed request.
        let sample = [UInt8](repeating: 0x5a, count: 512)
        #expect(try f.write(sector: 3, data: sample).status == BlkWire.statusOK)
        #expect(try f.read(sector: 3, count: 1).data == sample)
        world.finish("\(kind) on \(layout)", reason: "")
    }

    @Test(arguments: RingCase.allCases)
    func dataPathAbuseFailsOnlyThatRequest(_ kind: RingCase) throws {
        let world = try Bystander()
        let f = try Self.startedFrontend(world.daemon.socketDirectory + "/vhost.0")
        defer { f.close(); f.memory.close() }
        let memory = f.memory
        let q = try f.driverQueue(0)
        let header = try memory.allocate(16, alignment: 16)
        header.write(BlkWire.header(type: BlkWire.typeIn, sector: 0))
        let data = try memory.allocate(512, alignment: 512)
        let status = try memory.allocate(1, alignment: 1)
        status.pointer.storeBytes(of: 0xff, as: UInt8.self)
        let owned = [header, data, status]

        func submit(_ head: UInt16) throws -> UsedElement {
            q.pushAvail(head: head)
            q.publishAndKick(force: true)
            return try q.waitUsed(timeout: .seconds(5))
        }
        func indirect(_ entries: [Descriptor], length: UInt32? = nil, addr: UInt64? = nil) throws -> UsedElement {
            let table = try memory.allocate(max(1, entries.count) * Descriptor.byteSize, alignment: 16)
            for (i, e) in entries.enumerated() { e.store(to: table.pointer + i * Descriptor.byteSize) }
            let d = try q.takeDescriptors(1)
            q.writeDescriptor(Descriptor(addr: addr ?? table.gpa, len: length ?? UInt32(table.length), flags: Descriptor.flagIndirect, next: 0), at: d[0])
            q.track(head: d[0], descriptors: d, owning: owned + [table])
            return try submit(d[0])
        }

        var reason = "malformed descriptor chain"
        switch kind {
        case .addressLengthOverflow:
            let d = try q.takeDescriptors(3)
            q.writeDescriptor(Descriptor(addr: header.gpa, len: 16, flags: Descriptor.flagNext, next: d[1]), at: d[0])
            q.writeDescriptor(Descriptor(addr: UInt64.max - 100, len: 512, flags: Descriptor.flagNext | Descriptor.flagWrite, next: d[2]), at: d[1])
            q.writeDescriptor(Descriptor(addr: status.gpa, len: 1, flags: Descriptor.flagWrite, next: 0), at: d[2])
            q.track(head: d[0], descriptors: d, owning: owned)
            let used = try submit(d[0])
            #expect(used.length == 0)
            reason = "overflows"
        case .indirectAddressOverflow:
            #expect(try indirect([], length: 64, addr: UInt64.max - 16).length == 0)
            reason = "overflows"
        case .indirectBadLength:
            #expect(try indirect([Descriptor(addr: header.gpa, len: 16, flags: 0, next: 0)], length: 15).length == 0)
            reason = "not a multiple of 16"
        case .indirectTooLong:
            #expect(try indirect([], length: 16 * 2048, addr: header.gpa).length == 0)
            reason = "indirect table too long"
        case .indirectLoop:
            let used = try indirect([
                Descriptor(addr: header.gpa, len: 16, flags: Descriptor.flagNext, next: 1),
                Descriptor(addr: data.gpa, len: 512, flags: Descriptor.flagNext | Descriptor.flagWrite, next: 2),
                Descriptor(addr: status.gpa, len: 1, flags: Descriptor.flagNext | Descriptor.flagWrite, next: 0),
            ])
            #expect(used.length == 0)
            reason = "loop"
        case .headOutOfRange:
            q.pushAvail(head: 4000)
            q.publishAndKick(force: true)
            reason = "disconnecting frontend: queue 0: the guest's ring is broken"
        case .availIndexFarAhead:
            q.setAvailIdx(q.availIdx &+ 1000)
            q.kickFD.signal()
            reason = "disconnecting frontend: queue 0: the guest's ring is broken"
        }
        if kind == .headOutOfRange || kind == .availIndexFarAhead {
            // Nothing more is popped, and the frontend is disconnected with the reason.
            #expect(throws: FrontendError.self) { try q.waitUsed(timeout: .milliseconds(500)) }
            try StatsTests.waitForNoSession(world.daemon, "vhost.0")
        } else {
            // The session goes on serving after a failed request.
            let sample = [UInt8](repeating: 0x5a, count: 512)
            #expect(try f.write(sector: 3, data: sample).status == BlkWire.statusOK)
            #expect(try f.read(sector: 3, count: 1).data == sample)
        }
        let deadline = ContinuousClock.now + .seconds(3)
        while !world.daemon.log.contains(reason) && ContinuousClock.now < deadline { usleep(20_000) }
        world.finish(kind.rawValue, reason: reason)
    }

    /// A frontend that shrinks (ftruncate) the memfd its guest memory lives in,
    /// under a running queue: the daemon's next access there would take SIGBUS
    /// and end every controller. `SharedMemoryGuard` puts zero pages in, and the
    /// daemon disconnects that frontend; the bystander sees nothing.
    enum ShrinkCase: String, CaseIterable, CustomTestStringConvertible {
        /// The daemon copies a read's data into pages that are gone.
        case readIntoLostPages
        /// The daemon copies a write's data out of pages that are gone.
        case writeFromLostPages
        /// The rings themselves are gone when the kick arrives.
        case ringsLost
        var testDescription: String { rawValue }
    }

    @Test(arguments: ShrinkCase.allCases, Layout.allCases)
    func shrunkGuestMemoryDisconnectsOnlyThatFrontend(_ kind: ShrinkCase, _ layout: Layout) throws {
        let world = try Bystander(packed: layout == .packed)
        try Self.shrinkUnderARunningQueue(world, kind, layout: layout)
    }

    /// A frontend on vhost.0 of `world` shrinks its memory as `kind` says:
    /// it is disconnected with the reason in the log, the bystander and the
    /// daemon go on.
    static func shrinkUnderARunningQueue(
        _ world: Bystander, _ kind: ShrinkCase, layout: Layout = .split, sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        let f = try Self.startedFrontend(world.daemon.socketDirectory + "/vhost.0", layout: layout)
        defer { f.close(); f.memory.close() }
        let memory = f.memory
        #expect(try Self.roundTrip(f), sourceLocation: sourceLocation)  // served before the shrink
        let (q, _) = try Self.pushRequestWithDataAbove4MiB(f, write: kind == .writeFromLostPages)
        usleep(20_000)  // the reactor's polling phase after the round trip is over: it waits for a kick
        // From here on this process must not touch the pages past the new end either.
        if kind == .ringsLost {
            q.publish()
            #expect(ftruncate(memory.fd.rawValue, 0) == 0, sourceLocation: sourceLocation)
        } else {
            #expect(ftruncate(memory.fd.rawValue, 4 << 20) == 0, sourceLocation: sourceLocation)
            q.publish()  // the rings are below the new end
        }
        q.kickFD.signal()
        #expect(f.channel.waitForClose(timeout: .seconds(5)), "\(kind): the daemon kept the connection", sourceLocation: sourceLocation)
        let reason = "the frontend shrank memory it shares with the daemon"
        let deadline = ContinuousClock.now + .seconds(3)
        while !world.daemon.log.contains(reason) && ContinuousClock.now < deadline { usleep(20_000) }
        world.finish("\(kind) on \(layout)", reason: reason, sourceLocation: sourceLocation)
        #expect(world.daemon.log.contains("session ended"), sourceLocation: sourceLocation)
    }

    /// `kill -BUS` (SI_USER) and sigqueue(3) (SI_QUEUE) at the daemon: no
    /// memory faulted, so the guard ignores them and logs the sender; the
    /// daemon keeps serving, and a frontend that shrinks its memory
    /// afterwards is still caught. (The handler once put back SIGBUS's
    /// previous action for any signal outside its ranges, for good: the
    /// next shrink, or the next `kill -BUS`, ended the daemon.)
    @Test func sentBusSignalsNeitherKillTheDaemonNorSwitchTheGuardOff() throws {
        let world = try Bystander()
        for _ in 0..<3 {
            #expect(kill(world.daemon.pid, SIGBUS) == 0)
            usleep(50_000)
        }
        #expect(sigqueue(world.daemon.pid, SIGBUS, sigval(sival_int: 7)) == 0)
        let line = "SIGBUS signal(s) sent by a process (last sender: pid \(getpid())"
        let deadline = ContinuousClock.now + .seconds(3)
        while !world.daemon.log.contains(line) && world.daemon.isRunning && ContinuousClock.now < deadline { usleep(20_000) }
        #expect(world.daemon.isRunning, "kill -BUS ended the daemon")
        #expect(world.daemon.log.contains(line), "log lacks '\(line)':\n\(world.daemon.log.suffix(2000))")
        try Self.shrinkUnderARunningQueue(world, .readIntoLostPages)
    }

    /// The guard's range table once had 4,096 slots, and a mapping made past
    /// them was silently left unguarded: with 520 sessions holding 8 guest
    /// memory regions each (4,160 ranges, plus the bystander's), a shrink
    /// under the next frontend killed the daemon. It must be caught like
    /// any other.
    @Test func aShrinkPastFourThousandGuardedRangesIsCaught() throws {
        let world = try Bystander()
        let sessions = 520
        let client = try world.daemon.client()
        // Eight one-page regions, each its own mapping in the daemon, all in one memfd.
        let memfd = try Memfd.create(name: "eight-regions", size: 8 << 12)
        defer { memfd.close() }
        let regions = (0..<8).map { i in
            Self.region(gpa: UInt64(i) << 12, size: 1 << 12, user: 0x7000_0000_0000 + UInt64(i << 12), offset: UInt64(i) << 12)
        }
        let unused = try FrontendMemory(size: 4096)  // these sessions send their own table
        var frontends: [VhostUserFrontend] = []
        defer {
            for f in frontends { f.close() }
            unused.close()
        }
        var options = VhostUserFrontend.Options()
        options.useBackendChannel = false
        options.useInflight = false
        for i in 0..<sessions {
            _ = try client.call("bdev_null_create", params: ["name": .string("G\(i)"), "num_blocks": 2048, "block_size": 512])
            _ = try client.call("vhost_create_blk_controller", params: ["ctrlr": .string("g\(i)"), "dev_name": .string("G\(i)")])
            let f = try VhostUserFrontend(socketPath: world.daemon.socketDirectory + "/g\(i)", memory: unused, options: options)
            frontends.append(f)
            try f.connect()
            #expect(f.replyAck)
            try f.channel.send(
                Self.message(.setMemTable, .memoryTable(regions), fds: [FileDescriptor](repeating: memfd, count: 8)), ack: true)
        }
        #expect(world.daemon.isRunning)
        // Every table was mapped (debug log), the bystander's too.
        #expect(world.daemon.log.components(separatedBy: "memory table set").count - 1 >= sessions + 1)
        try Self.shrinkUnderARunningQueue(world, .readIntoLostPages)
        // The 520 sessions are still there, their memory tables intact.
        #expect(!world.daemon.log.contains("SET_MEM_TABLE refused"))
    }

    /// The kernel, not the daemon, touches the lost pages of a request on a
    /// file (io_uring): it fails with EFAULT, the guest gets IOERR, nothing dies.
    @Test func shrunkGuestMemoryUnderFileIOFailsTheRequest() throws {
        let daemon = try DaemonProcess()
        defer { daemon.stop(); daemon.cleanUp() }
        let path = daemon.directory.appendingPathComponent("disk.img").path
        #expect(FileManager.default.createFile(atPath: path, contents: Data(count: 1 << 20)))
        try daemon.call("bdev_uring_create", ["filename": .string(path), "name": "F0", "block_size": 512])
        try daemon.call("vhost_create_blk_controller", ["ctrlr": "vhost.0", "dev_name": "F0"])
        let f = try Self.startedFrontend(daemon.socketDirectory + "/vhost.0")
        defer { f.close(); f.memory.close() }
        let memory = f.memory
        #expect(try Self.roundTrip(f))
        let (q, status) = try Self.pushRequestWithDataAbove4MiB(f, write: false)
        #expect(ftruncate(memory.fd.rawValue, 4 << 20) == 0)
        q.publishAndKick(force: true)
        _ = try q.waitUsed(timeout: .seconds(5))
        #expect(status.pointer.load(as: UInt8.self) == BlkWire.statusIOErr)
        #expect(daemon.isRunning)
        #expect(!daemon.log.contains("shrank memory"))
    }

    /// A frontend may read its own kick eventfd (it is its fd): one that
    /// does so in a loop takes away any signal the daemon writes there. The
    /// queue must stop anyway: GET_VRING_BASE is answered, the next session
    /// is served, and SIGTERM ends the daemon. Both engines wait for kicks.
    @Test(arguments: [[], ["--engine", "thread-pool"]])
    func frontendReadingItsOwnKicksCannotKeepAQueueRunning(engine: [String]) throws {
        let daemon = try DaemonProcess(extraArguments: engine)
        defer { daemon.stop(); daemon.cleanUp() }
        try daemon.call("bdev_malloc_create", ["num_blocks": 2048, "block_size": 512, "name": "M0"])
        try daemon.call("vhost_create_blk_controller", ["ctrlr": "vhost.0", "dev_name": "M0"])
        for round in 0..<5 {
            // The previous round's close reaches the daemon late when a daemon
            // that a parallel test spawns inherited the socket until its exec.
            try StatsTests.waitForNoSession(daemon, "vhost.0")
            let f = try Self.startedFrontend(daemon.socketDirectory + "/vhost.0")
            defer { f.close(); f.memory.close() }
            #expect(try Self.roundTrip(f))
            let thief = try KickThief(f.driverQueue(0).kickFD)
            usleep(20_000)  // past the reactor's polling phase: its kick read is armed
            let base = Result { try f.getVringBase(0) }
            let stolen = thief.finish()
            guard case .success(let value) = base else {
                Issue.record("round \(round): GET_VRING_BASE failed (\(base)); the thief read \(stolen) signals")
                break
            }
            #expect(value == 2, "round \(round): the write and the read were popped")
        }
        try StatsTests.waitForNoSession(daemon, "vhost.0")
        let final = try Self.startedFrontend(daemon.socketDirectory + "/vhost.0")
        #expect(try Self.roundTrip(final))
        final.close()
        final.memory.close()
        #expect(daemon.stop() == 0)
    }

    /// A frontend with 8 MiB of memory, connected to `socketPath`, one queue of
    /// `queueSize` started (a packed ring with `.packed`: the controller must
    /// offer it; no inflight region, which covers split rings only and whose
    /// GET_INFLIGHT_FD needs a power of two). The caller closes it, then its memory.
    static func startedFrontend(_ socketPath: String, layout: Layout = .split, queueSize: UInt16 = 128) throws -> VhostUserFrontend {
        let memory = try FrontendMemory(size: 8 << 20)
        do {
            var options = VhostUserFrontend.Options()
            if layout == .packed {
                options = PackedRingTests.packedOptions
                options.useInflight = false
            }
            let f = try VhostUserFrontend(socketPath: socketPath, memory: memory, options: options)
            do {
                try f.connect()
                try f.start(queueCount: 1, queueSize: queueSize)
                return f
            } catch {
                f.close()
                throw error
            }
        } catch {
            memory.close()
            throw error
        }
    }

    /// Puts a 4 KiB read (or write) of sector 8 in queue 0's avail ring, not
    /// yet published: header and status in the first MiB of the frontend's
    /// 8 MiB memory, next to the rings; the data past 5 MiB, where a shrink to
    /// 4 MiB takes it away. Returns the queue and the status byte (0xff until
    /// the device writes it).
    static func pushRequestWithDataAbove4MiB(_ f: VhostUserFrontend, write: Bool) throws -> (DriverQueue, GuestBuffer) {
        let memory = f.memory
        let q = try f.driverQueue(0)
        let header = try memory.allocate(16, alignment: 16)
        let status = try memory.allocate(1, alignment: 1)
        let filler = try memory.allocate(5 << 20, alignment: 4096)
        let data = try memory.allocate(4096, alignment: 4096)
        #expect(data.offset >= 5 << 20 && header.offset < 1 << 20 && status.offset < 1 << 20)
        header.write(BlkWire.header(type: write ? BlkWire.typeOut : BlkWire.typeIn, sector: 8))
        status.pointer.storeBytes(of: 0xff, as: UInt8.self)
        // Split or packed: written, not yet published.
        try q.addChain([
            ChainBuffer(header, writable: false), ChainBuffer(data, writable: !write), ChainBuffer(status, writable: true),
        ], owning: [header, filler, data, status])
        return (q, status)
    }

    /// Writes then reads back one sector through the frontend's own requests.
    static func roundTrip(_ f: VhostUserFrontend) throws -> Bool {
        let sample = [UInt8](repeating: 0xa5, count: 512)
        return try f.write(sector: 1, data: sample).status == BlkWire.statusOK && f.read(sector: 1, count: 1).data == sample
    }
}

/// A thread that spins on non-blocking reads of a kick eventfd, as a hostile
/// frontend may, until `finish()`; it counts the signals it took.
final class KickThief: Sendable {
    private let running = Mutex(true)
    private let taken = Mutex<UInt64>(0)
    private let done = Mutex(false)

    init(_ kick: EventFD) {
        let thread = Thread { [self] in
            while running.withLock({ $0 }) {
                let value = kick.drain()
                if value > 0 { taken.withLock { $0 += value } }
            }
            done.withLock { $0 = true }
        }
        thread.name = "kick-thief"
        thread.start()
    }

    /// Stops the thread; returns how many signals it read.
    func finish() -> UInt64 {
        running.withLock { $0 = false }
        while !done.withLock({ $0 }) { usleep(1000) }
        return taken.withLock { $0 }
    }
}
