import DaemonTestSupport
import Foundation
import Glibc
import JSONRPC
import Posix
import Testing
import VhostUser
import VhostUserFrontend
import Virtio

/// Memory hot-plug over CONFIGURE_MEM_SLOTS (vhost-user spec,
/// "VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS", GET_MAX_MEM_SLOTS,
/// ADD_MEM_REG, REM_MEM_REG) against the running daemon, driven by the
/// in-repo frontend over its socket as QEMU drives it.
@Suite("Memory slots (ADD_MEM_REG, REM_MEM_REG) against the running daemon")
struct MemorySlotTests {
    typealias D = DataPathTests
    typealias T = TenantBudgetTests

    /// Where the test's DIMMs go in guest-physical space: above 4 GiB, one per 256 MiB.
    static func dimmBase(_ i: Int) -> UInt64 { (4 << 30) + UInt64(i) * (256 << 20) }

    static var slotOptions: VhostUserFrontend.Options {
        var options = VhostUserFrontend.Options()
        options.wantedProtocolFeatures.insert(.configureMemSlots)
        return options
    }

    /// A daemon with malloc bdev M0 on controller vhost.0, `arguments` added.
    static func daemon(_ arguments: [String] = []) throws -> DaemonProcess {
        let daemon = try DaemonProcess(extraArguments: arguments)
        do {
            try D.createBdev(daemon, .malloc, name: "M0")
            try D.createController(daemon, "vhost.0", bdev: "M0")
        } catch {
            daemon.stop()
            daemon.cleanUp()
            throw error
        }
        return daemon
    }

    /// A request on `q` whose header and status byte lie in `boot` memory and
    /// whose data buffer is `data` (anywhere in guest memory). Not waited for.
    /// The header goes back to `boot` with the used element; the status byte
    /// stays allocated until the caller read it and gave it back (`boot.release`):
    /// other threads' requests allocate from `boot` meanwhile.
    static func push(
        _ q: DriverQueue, boot: FrontendMemory, type: UInt32, sector: UInt64, data: GuestBuffer, writable: Bool
    ) throws -> (head: UInt16, status: GuestBuffer) {
        let header = try boot.allocate(16, alignment: 16)
        header.write(BlkWire.header(type: type, sector: sector))
        let status = try boot.allocate(1, alignment: 1)
        status.pointer.storeBytes(of: 0xff, as: UInt8.self)
        // 64 KiB segments: the device's size_max.
        let pieces = stride(from: 0, to: data.length, by: 64 << 10).map { off in
            ChainBuffer(gpa: data.gpa + UInt64(off), length: UInt32(min(64 << 10, data.length - off)), writable: writable)
        }
        let head = try q.addChain(
            [ChainBuffer(header, writable: false)] + pieces + [ChainBuffer(status, writable: true)],
            owning: [header])
        q.publishAndKick(force: true)
        return (head, status)
    }

    /// Writes a pattern from `buffer` to `sector`, reads it back into a
    /// second buffer of the same memory, and compares (queue `queue`).
    static func roundTrip(
        _ f: VhostUserFrontend, queue: Int, through memory: FrontendMemory, sector: UInt64, seed: Int
    ) throws -> Bool {
        let q = try f.driverQueue(queue)
        let out = try memory.allocate(8192, alignment: 4096)
        let back = try memory.allocate(8192, alignment: 4096)
        defer { memory.release(out); memory.release(back) }
        let data = D.pattern(8192, seed: seed)
        out.write(data)
        let w = try push(q, boot: f.memory, type: BlkWire.typeOut, sector: sector, data: out, writable: false)
        let wu = try q.waitUsed()
        let wStatus = w.status.pointer.load(as: UInt8.self)
        f.memory.release(w.status)
        let r = try push(q, boot: f.memory, type: BlkWire.typeIn, sector: sector, data: back, writable: true)
        let ru = try q.waitUsed()
        let rStatus = r.status.pointer.load(as: UInt8.self)
        f.memory.release(r.status)
        let ok = wu.id == UInt32(w.head) && ru.id == UInt32(r.head) && wStatus == BlkWire.statusOK
            && rStatus == BlkWire.statusOK && back.read() == data
        if !ok {
            print("memory slots: round trip through gpa 0x\(String(out.gpa, radix: 16)) failed: used \(wu) for head \(w.head), "
                + "\(ru) for head \(r.head), status \(wStatus)/\(rStatus), data \(back.read() == data ? "intact" : "differs")")
        }
        return ok
    }

    /// The frontend negotiates CONFIGURE_MEM_SLOTS, is offered QEMU's 512
    /// slots, sends its boot RAM as ADD_MEM_REG, and hot-plugs ten DIMMs
    /// while queue 0 runs verified I/O: each DIMM serves I/O on queue 1 as
    /// soon as its ADD_MEM_REG is acked; then all ten are removed, and the
    /// verified I/O never saw an error.
    @Test func tenDimmsHotPluggedAndRemovedDuringVerifiedIO() throws {
        let daemon = try Self.daemon()
        defer { daemon.stop(); daemon.cleanUp() }
        try D.withLogOnError(daemon) { () throws in
            let boot = try FrontendMemory(size: 16 << 20, splitAt: 8 << 20, gap: 1 << 30)
            defer { boot.close() }
            let f = try VhostUserFrontend(socketPath: daemon.socketDirectory + "/vhost.0", memory: boot, options: Self.slotOptions)
            defer { f.close() }
            try f.connect()
            #expect(f.protocolFeatures.contains(.configureMemSlots))
            #expect(f.maxMemSlots == 512)
            try f.start(queueCount: 2, queueSize: 128)  // two ADD_MEM_REG, no SET_MEM_TABLE
            #expect(!daemon.log.contains("SET_MEM_TABLE"))
            let load = try VerifiedIOLoad(frontend: f, sectors: 256)
            #expect(load.waitForRounds(3))

            var dimms: [FrontendMemory] = []
            defer { dimms.forEach { $0.close() } }
            for i in 0..<10 {
                let dimm = try FrontendMemory(size: 4 << 20, guestBase: Self.dimmBase(i))
                dimms.append(dimm)
                try f.addMemRegion(dimm.regions[0], fd: dimm.fd)
                #expect(try Self.roundTrip(f, queue: 1, through: dimm, sector: 1024 + UInt64(i) * 16, seed: i), "DIMM \(i)")
            }
            #expect(load.waitForRounds(3))
            // Every DIMM still serves after the last one came.
            for (i, dimm) in dimms.enumerated() {
                #expect(try Self.roundTrip(f, queue: 1, through: dimm, sector: 2048 + UInt64(i) * 16, seed: 100 + i), "DIMM \(i)")
            }
            for dimm in dimms {
                try f.removeMemRegion(dimm.regions[0])
            }
            #expect(load.waitForRounds(3))
            // A buffer in a removed DIMM is outside guest memory now: the chain is
            // malformed, so it is returned with used length 0 and nothing written
            // (not even its status byte); the session goes on.
            let q = try f.driverQueue(1)
            let gone = try Self.push(q, boot: boot, type: BlkWire.typeIn, sector: 0, data: dimms[3].allocate(4096, alignment: 4096), writable: true)
            let goneUsed = try q.waitUsed()
            #expect(goneUsed.id == UInt32(gone.head) && goneUsed.length == 0)
            #expect(gone.status.pointer.load(as: UInt8.self) == 0xff)
            let outcome = load.stop()
            #expect(outcome.errors == 0, "\(outcome.firstError ?? "")")
            #expect(outcome.rounds > 9)
            #expect(try D.roundTrip(f, queue: 1, sector: 7, seed: 7))
            #expect(daemon.log.components(separatedBy: "memory region added").count - 1 == 12, "\(daemon.log.suffix(3000))")
            #expect(daemon.log.components(separatedBy: "memory region removed").count - 1 == 10)
            #expect(!daemon.log.contains("disconnecting frontend"))
        }
    }

    /// A read whose data buffer lies in a DIMM is in flight (held by the
    /// bdev's QoS limit) when REM_MEM_REG removes that DIMM: the daemon
    /// completes it, data and status, before it acks the removal (and
    /// unmaps the region); the queue then runs on.
    @Test func requestInFlightOnARemovedRegionCompletesBeforeTheAck() throws {
        let daemon = try Self.daemon()
        defer { daemon.stop(); daemon.cleanUp() }
        try D.withLogOnError(daemon) { () throws in
            let boot = try FrontendMemory(size: 16 << 20)
            defer { boot.close() }
            let f = try VhostUserFrontend(socketPath: daemon.socketDirectory + "/vhost.0", memory: boot, options: Self.slotOptions)
            defer { f.close() }
            try f.connect()
            try f.start(queueCount: 1, queueSize: 128)
            let dimm = try FrontendMemory(size: 4 << 20, guestBase: Self.dimmBase(0))
            defer { dimm.close() }
            try f.addMemRegion(dimm.regions[0], fd: dimm.fd)
            let data = D.pattern(1 << 20, seed: 9)
            #expect(try f.write(sector: 4096, data: data, layout: BlkLayout(maxSegmentBytes: 64 << 10)).status == BlkWire.statusOK)

            // 1 MB/s: the first 1 MiB read takes the budget, the second waits about a second.
            try QoSTests.setLimit(daemon, "M0", ["rw_mbytes_per_sec": 1])
            let q = try f.driverQueue(0)
            let first = try dimm.allocate(1 << 20, alignment: 4096)
            _ = try Self.push(q, boot: boot, type: BlkWire.typeIn, sector: 4096, data: first, writable: true)
            _ = try q.waitUsed()
            let held = try dimm.allocate(1 << 20, alignment: 4096)
            let request = try Self.push(q, boot: boot, type: BlkWire.typeIn, sector: 4096, data: held, writable: true)
            usleep(200_000)  // popped and held by QoS: in flight
            #expect(q.peekUsedID() == nil, "the read was not held")
            let started = ContinuousClock.now
            try f.removeMemRegion(dimm.regions[0])  // acked
            // Done before the ack, without waiting: its used element and data are there.
            #expect(q.peekUsedID() == UInt32(request.head))
            #expect(request.status.pointer.load(as: UInt8.self) == BlkWire.statusOK)
            // A Bool, not the arrays: swift-testing would diff 1 MiB arrays for a failure message.
            let intact = held.read() == data
            #expect(intact, "the held read's data differs")
            print("memory slots: REM_MEM_REG acked \(ContinuousClock.now - started) after it was sent, the held read completed first")
            _ = q.popUsed()
            try QoSTests.setLimit(daemon, "M0", ["rw_mbytes_per_sec": 0])
            #expect(try D.roundTrip(f, sector: 5, seed: 5))
            #expect(!daemon.log.contains("disconnecting frontend"))
        }
    }

    /// A hot-plugged region is guarded against SIGBUS like the boot RAM
    /// (docs/ARCHITECTURE.md, "Memory a frontend shrinks"): the frontend
    /// shrinks the DIMM's memfd under a read whose buffer lies in it; the
    /// daemon survives on zero pages and disconnects it with the reason.
    @Test func shrunkDimmIsGuarded() throws {
        let daemon = try Self.daemon()
        defer { daemon.stop(); daemon.cleanUp() }
        let boot = try FrontendMemory(size: 16 << 20)
        defer { boot.close() }
        let f = try VhostUserFrontend(socketPath: daemon.socketDirectory + "/vhost.0", memory: boot, options: Self.slotOptions)
        defer { f.close() }
        try f.connect()
        try f.start(queueCount: 1, queueSize: 128)
        let dimm = try FrontendMemory(size: 4 << 20, guestBase: Self.dimmBase(0))
        defer { dimm.close() }
        try f.addMemRegion(dimm.regions[0], fd: dimm.fd)
        #expect(try Self.roundTrip(f, queue: 0, through: dimm, sector: 64, seed: 1))
        let buffer = try dimm.allocate(64 << 10, alignment: 4096)
        // From here on this process must not touch the DIMM's pages either.
        #expect(ftruncate(dimm.fd.rawValue, 0) == 0)
        _ = try Self.push(f.driverQueue(0), boot: boot, type: BlkWire.typeIn, sector: 64, data: buffer, writable: true)
        #expect(f.channel.waitForClose(timeout: .seconds(5)), "the daemon kept the connection")
        let reason = "the frontend shrank memory it shares with the daemon"
        let deadline = ContinuousClock.now + .seconds(3)
        while !daemon.log.contains(reason) && ContinuousClock.now < deadline { usleep(20_000) }
        #expect(T.logLine(daemon, containing: T.names("vhost.0") + ["disconnecting frontend", reason]), "\(daemon.log.suffix(2000))")
        #expect(daemon.isRunning)
    }

    /// Dirty logging follows the table (vhost-user spec, "Migration"): with
    /// LOG_ALL on and a log that covers a DIMM (QEMU grows the log first), a
    /// read into the DIMM added during the migration marks its page.
    @Test func writesIntoAHotPluggedDimmAreLogged() throws {
        let daemon = try Self.daemon()
        defer { daemon.stop(); daemon.cleanUp() }
        try D.withLogOnError(daemon) { () throws in
            let boot = try FrontendMemory(size: 16 << 20)
            defer { boot.close() }
            var options = Self.slotOptions
            options.wantedFeatures.insert(.logAll)
            options.wantedProtocolFeatures.insert(.logSHMFD)
            let f = try VhostUserFrontend(socketPath: daemon.socketDirectory + "/vhost.0", memory: boot, options: options)
            defer { f.close() }
            try f.connect()
            try f.start(queueCount: 1, features: f.deviceFeatures.intersection(options.wantedFeatures).subtracting(.logAll))
            let dimm = try FrontendMemory(size: 4 << 20, guestBase: Self.dimmBase(0))
            defer { dimm.close() }
            let log = try DirtyLogTests.Log(guestBytes: Int(Self.dimmBase(0)) + (4 << 20))
            try f.channel.send(VhostUserMessage(
                request: .setLogBase, payload: .log(size: UInt64(log.mapping.length), offset: 0), fds: [log.fd]))
            try f.channel.receiveReply(to: .setLogBase, expectedSize: 8).fds.closeAll()
            try f.channel.send(VhostUserMessage(request: .setFeatures, payload: .u64(f.ackedFeatures.union(.logAll).rawValue)), ack: true)
            try f.addMemRegion(dimm.regions[0], fd: dimm.fd)
            log.clear()

            let q = try f.driverQueue(0)
            let buffer = try dimm.allocate(8192, alignment: 4096)
            let request = try Self.push(q, boot: boot, type: BlkWire.typeIn, sector: 8, data: buffer, writable: true)
            _ = try q.waitUsed()
            #expect(request.status.pointer.load(as: UInt8.self) == BlkWire.statusOK)
            #expect(log.isDirty(gpa: buffer.gpa) && log.isDirty(gpa: buffer.gpa + 4096), "the DIMM's pages were not logged")
            #expect(!log.isDirty(gpa: buffer.gpa + 8192))
            #expect(log.isDirty(gpa: request.status.gpa))
        }
    }

    /// What a hostile frontend may send: each case ends its session with a
    /// log line naming the controller and the reason; the daemon lives and
    /// serves the next frontend.
    enum Hostile: String, CaseIterable, CustomTestStringConvertible {
        case withoutNegotiation, zeroSize, gpaOverflow, offsetOverflow, pastFileEnd
        case overlappingGuestPhysical, overlappingUserAddress, duplicate
        case removeUnknown, removeWrongSize, overBudget, ringsRemoved
        var testDescription: String { rawValue }
    }

    @Test(arguments: Hostile.allCases)
    func hostileRegionsDisconnectWithTheReason(_ kind: Hostile) throws {
        let daemon = try Self.daemon(["--max-session-memory", "32M"])
        defer { daemon.stop(); daemon.cleanUp() }
        let boot = try FrontendMemory(size: 16 << 20)
        defer { boot.close() }
        let dimm = try FrontendMemory(size: 8 << 20, guestBase: Self.dimmBase(1))
        defer { dimm.close() }
        var options = Self.slotOptions
        if kind == .withoutNegotiation { options.wantedProtocolFeatures.remove(.configureMemSlots) }
        let f = try VhostUserFrontend(socketPath: daemon.socketDirectory + "/vhost.0", memory: boot, options: options)
        defer { f.close() }
        try f.connect()
        try f.start(queueCount: 1, queueSize: 128)
        #expect(try D.roundTrip(f, sector: 1, seed: 1))

        let good = dimm.regions[0]
        func region(gpa: UInt64? = nil, size: UInt64? = nil, user: UInt64? = nil, offset: UInt64? = nil) -> MemoryRegionDescriptor {
            MemoryRegionDescriptor(
                guestPhysAddr: gpa ?? good.guestPhysAddr, size: size ?? good.size,
                userAddr: user ?? good.userAddr, mmapOffset: offset ?? good.mmapOffset)
        }
        let reason: String
        switch kind {
        case .withoutNegotiation:
            try? f.channel.send(VhostUserMessage(request: .addMemReg, payload: .singleRegion(good), fds: [dimm.fd]))
            reason = "ADD_MEM_REG without CONFIGURE_MEM_SLOTS negotiated"
        case .zeroSize:
            try? f.addMemRegion(region(size: 0), fd: dimm.fd)
            reason = "ADD_MEM_REG refused: memory region 1: size is 0"
        case .gpaOverflow:
            try? f.addMemRegion(region(gpa: UInt64.max - 4095), fd: dimm.fd)
            reason = "guest_phys_addr + size overflows"
        case .offsetOverflow:
            try? f.addMemRegion(region(offset: UInt64.max - 10), fd: dimm.fd)
            reason = "mmap_offset + size overflows"
        case .pastFileEnd:
            try? f.addMemRegion(region(offset: 4096), fd: dimm.fd)
            reason = "exceeds the file size"
        case .overlappingGuestPhysical:
            // The DIMM's own memory at a user address of its own, but over the boot RAM's guest addresses.
            try? f.addMemRegion(region(gpa: 8 << 20), fd: dimm.fd)
            reason = "guest-physical range overlaps the region at gpa 0x0"
        case .overlappingUserAddress:
            try? f.addMemRegion(region(user: boot.regions[0].userAddr + 4096), fd: dimm.fd)
            reason = "userspace_addr range overlaps the region at gpa 0x0"
        case .duplicate:
            try f.addMemRegion(good, fd: dimm.fd)
            try? f.addMemRegion(good, fd: dimm.fd)
            reason = "guest-physical range overlaps the region at gpa 0x\(String(good.guestPhysAddr, radix: 16))"
        case .removeUnknown:
            try? f.removeMemRegion(good)
            reason = "REM_MEM_REG refused: no such region is mapped (gpa 0x\(String(good.guestPhysAddr, radix: 16))"
        case .removeWrongSize:
            try f.addMemRegion(good, fd: dimm.fd)
            try? f.removeMemRegion(region(size: good.size - 4096))
            reason = "REM_MEM_REG refused: no such region is mapped"
        case .overBudget:
            // 16 MiB + 8 MiB fit the 32 MiB limit; another 16 MiB does not.
            try f.addMemRegion(good, fd: dimm.fd)
            let big = try FrontendMemory(size: 16 << 20, guestBase: Self.dimmBase(2))
            defer { big.close() }
            try? f.addMemRegion(big.regions[0], fd: big.fd)
            reason = "ADD_MEM_REG asks to map 40.0 MiB (41943040 bytes) of guest memory in 3 regions, over the session limit of 32.0 MiB"
        case .ringsRemoved:
            // The queue's rings are in the boot RAM: the queue cannot run without it.
            try? f.removeMemRegion(boot.regions[0])
            reason = "queue 0 rings are outside guest memory"
        }
        #expect(f.channel.waitForClose(timeout: .seconds(5)), "\(kind): the daemon kept the connection")
        let deadline = ContinuousClock.now + .seconds(3)
        while !T.logLine(daemon, containing: ["disconnecting frontend", reason]) && ContinuousClock.now < deadline { usleep(20_000) }
        #expect(T.logLine(daemon, containing: T.names("vhost.0") + ["disconnecting frontend", reason]), "\(kind):\n\(daemon.log.suffix(3000))")
        #expect(daemon.isRunning)

        // The next frontend is served, with memory slots.
        let again = try VhostUserFrontend(socketPath: daemon.socketDirectory + "/vhost.0", memory: boot, options: Self.slotOptions)
        defer { again.close() }
        try again.connect()
        try again.start(queueCount: 1, queueSize: 128)
        #expect(try D.roundTrip(again, sector: 2, seed: 2))
    }

    /// More regions than the slots offered: the 513th ADD_MEM_REG ends the
    /// session with the limit named.
    @Test func slotLimitIsEnforced() throws {
        let daemon = try Self.daemon()
        defer { daemon.stop(); daemon.cleanUp() }
        let boot = try FrontendMemory(size: 4 << 20)
        defer { boot.close() }
        let f = try VhostUserFrontend(socketPath: daemon.socketDirectory + "/vhost.0", memory: boot, options: Self.slotOptions)
        defer { f.close() }
        try f.connect()
        try f.start(queueCount: 1, queueSize: 128)
        // 511 one-page slices of one memfd, each at its own guest and user address.
        let slices = try FrontendMemory(size: 512 * 4096, guestBase: 1 << 32)
        defer { slices.close() }
        let base = slices.regions[0]
        for i in 0..<511 {
            let offset = UInt64(i) * 4096
            try f.addMemRegion(MemoryRegionDescriptor(
                guestPhysAddr: base.guestPhysAddr + offset, size: 4096, userAddr: base.userAddr + offset, mmapOffset: offset),
                fd: slices.fd)
        }
        #expect(try D.roundTrip(f, sector: 3, seed: 3))
        let last = UInt64(511) * 4096
        try? f.addMemRegion(MemoryRegionDescriptor(
            guestPhysAddr: base.guestPhysAddr + last, size: 4096, userAddr: base.userAddr + last, mmapOffset: last),
            fd: slices.fd)
        #expect(f.channel.waitForClose(timeout: .seconds(5)))
        let reason = "memory table has 513 regions, limit 512"
        let deadline = ContinuousClock.now + .seconds(3)
        while !daemon.log.contains(reason) && ContinuousClock.now < deadline { usleep(20_000) }
        #expect(T.logLine(daemon, containing: T.names("vhost.0") + ["disconnecting frontend", reason]), "\(daemon.log.suffix(2000))")
        #expect(daemon.isRunning)
    }
}
