import DaemonTestSupport
import Foundation
import Glibc
import JSONRPC
import Posix
import Testing
import VhostUser
import VhostUserFrontend
import Virtio

/// Dirty-page logging for live migration (vhost-user spec, "Migration"):
/// with LOG_ALL on and a log set, every guest page the daemon writes is
/// marked; nothing is marked while it is off.
@Suite("Dirty logging against the running daemon")
struct DirtyLogTests {
    typealias D = DataPathTests

    /// The log as QEMU keeps it: a memfd, one bit per 4 KiB page.
    final class Log {
        let fd: FileDescriptor
        let mapping: SharedMapping
        init(guestBytes: Int) throws {
            let size = (guestBytes / 4096 + 7) / 8 + 4096
            fd = try Memfd.create(name: "test-log", size: size)
            mapping = try SharedMapping(fd: fd, length: size)
        }
        deinit {
            mapping.unmap()
            fd.close()
        }
        func isDirty(gpa: UInt64) -> Bool {
            let page = Int(gpa / 4096)
            return mapping.base.load(fromByteOffset: page / 8, as: UInt8.self) & (1 << (page % 8)) != 0
        }
        func dirtyPages() -> Int {
            (0..<mapping.length).reduce(0) { $0 + mapping.base.load(fromByteOffset: $1, as: UInt8.self).nonzeroBitCount }
        }
        func clear() { mapping.base.initializeMemory(as: UInt8.self, repeating: 0, count: mapping.length) }
    }

    @Test func writesIntoGuestMemoryAreLoggedOnlyWhileLogAllIsOn() throws {
        let daemon = try D.daemonServing(.ioUring, .malloc, bdev: "M0")
        defer { daemon.stop(); daemon.cleanUp() }
        try D.withLogOnError(daemon) { () throws in
            let memory = try FrontendMemory(size: 16 << 20)
            defer { memory.close() }
            var options = VhostUserFrontend.Options()
            options.wantedFeatures.insert(.logAll)
            options.wantedProtocolFeatures.insert(.logSHMFD)
            let f = try VhostUserFrontend(socketPath: daemon.socketDirectory + "/vhost.0", memory: memory, options: options)
            defer { f.close() }
            try f.connect()
            #expect(f.deviceFeatures.contains(.logAll))
            #expect(f.protocolFeatures.contains(.logSHMFD))
            // The guest runs without logging first, as before a migration.
            try f.start(queueCount: 1, features: f.deviceFeatures.intersection(options.wantedFeatures).subtracting(.logAll))
            #expect(try D.roundTrip(f, sector: 3, seed: 1))

            // Migration starts: SET_LOG_BASE (replied with LOG_SHMFD), LOG_ALL on, the used ring's log address.
            let log = try Log(guestBytes: 16 << 20)
            try f.channel.send(VhostUserMessage(
                request: .setLogBase, payload: .log(size: UInt64(log.mapping.length), offset: 0), fds: [log.fd]))
            let reply = try f.channel.receiveReply(to: .setLogBase, expectedSize: 8)
            reply.fds.closeAll()
            // Acked (REPLY_ACK), so the daemon has applied each before the test goes on.
            try f.channel.send(VhostUserMessage(request: .setFeatures, payload: .u64(f.ackedFeatures.union(.logAll).rawValue)), ack: true)
            let q = try f.driverQueue(0)
            let usedGPA = q.used.gpa
            try f.channel.send(VhostUserMessage(request: .setVringAddr, payload: .vringAddress(VringAddress(
                index: 0, flags: VringAddress.flagLog, desc: memory.userAddr(of: q.desc.pointer),
                used: memory.userAddr(of: q.used.pointer), avail: memory.userAddr(of: q.avail.pointer), log: usedGPA))),
                ack: true)
            log.clear()

            // A read: the daemon writes the data buffers, the status byte and the used ring.
            let header = try memory.allocate(16, alignment: 16)
            header.write(BlkWire.header(type: BlkWire.typeIn, sector: 3))
            let data = try memory.allocate(3 * 4096, alignment: 4096)
            let status = try memory.allocate(1, alignment: 1)
            _ = try q.addChain([
                ChainBuffer(header, writable: false), ChainBuffer(data, writable: true), ChainBuffer(status, writable: true),
            ])
            _ = q.publishAndKick()
            _ = try q.waitUsed(timeout: .seconds(5))
            #expect(status.pointer.load(as: UInt8.self) == BlkWire.statusOK)
            for page in 0..<3 { #expect(log.isDirty(gpa: data.gpa + UInt64(page) * 4096), "data page \(page)") }
            #expect(log.isDirty(gpa: status.gpa))
            #expect(log.isDirty(gpa: usedGPA))
            #expect(!log.isDirty(gpa: header.gpa) || header.gpa / 4096 == status.gpa / 4096 || header.gpa / 4096 == usedGPA / 4096)
            let afterRead = log.dirtyPages()
            #expect(afterRead <= 6, "only what the device wrote: \(afterRead) pages")

            // A write: the device reads the data buffer; only the status and used ring change.
            log.clear()
            let out = try memory.allocate(8 * 4096, alignment: 4096)
            out.write(D.pattern(8 * 4096, seed: 9))
            let outStatus = try memory.allocate(1, alignment: 1)
            let outHeader = try memory.allocate(16, alignment: 16)
            outHeader.write(BlkWire.header(type: BlkWire.typeOut, sector: 64))
            _ = try q.addChain([
                ChainBuffer(outHeader, writable: false), ChainBuffer(out, writable: false), ChainBuffer(outStatus, writable: true),
            ])
            _ = q.publishAndKick()
            _ = try q.waitUsed(timeout: .seconds(5))
            #expect(log.isDirty(gpa: outStatus.gpa))
            #expect(log.isDirty(gpa: usedGPA))
            let untouched = (0..<8).filter { !log.isDirty(gpa: out.gpa + UInt64($0) * 4096) }
            #expect(untouched.count >= 7, "a write must not mark the pages the device only read")

            // LOG_ALL off: nothing more is marked.
            try f.channel.send(VhostUserMessage(request: .setFeatures, payload: .u64(f.ackedFeatures.subtracting(.logAll).rawValue)), ack: true)
            log.clear()
            #expect(try D.roundTrip(f, sector: 5, seed: 2))
            #expect(log.dirtyPages() == 0)
            #expect(daemon.log.contains("dirty logging on"))
        }
    }

    /// A log that cannot be mapped disconnects the front-end; others keep going.
    @Test func badLogIsRefused() throws {
        let daemon = try D.daemonServing(.ioUring, .malloc, bdev: "M0")
        defer { daemon.stop(); daemon.cleanUp() }
        let memory = try FrontendMemory(size: 16 << 20)
        defer { memory.close() }
        var options = VhostUserFrontend.Options()
        options.wantedProtocolFeatures.insert(.logSHMFD)
        let f = try VhostUserFrontend(socketPath: daemon.socketDirectory + "/vhost.0", memory: memory, options: options)
        defer { f.close() }
        try f.connect()
        let fd = try Memfd.create(name: "small", size: 4096)
        defer { fd.close() }
        try f.channel.send(VhostUserMessage(request: .setLogBase, payload: .log(size: 1 << 20, offset: 4096), fds: [fd]))
        #expect(f.channel.waitForClose(timeout: .seconds(5)))
        #expect(daemon.log.contains("SET_LOG_BASE refused"))
        #expect(daemon.isRunning)
    }
}
