import DaemonTestSupport
import Foundation
import Glibc
import JSONRPC
import Posix
import Testing
import VhostUser
import VhostUserFrontend
import Virtio

/// A daemon killed with requests popped but not completed: its successor
/// serves them again from the inflight region, each exactly once, and then
/// goes on with the ring (vhost-user spec, "Inflight I/O tracking";
/// docs/PROTOCOL-NOTES.md, "Inflight tracking across restarts").
@Suite("Inflight resubmission across a daemon crash")
struct ResubmitTests {
    typealias D = DataPathTests

    @Test func crashedRequestsAreServedOnceByTheNextDaemon() throws {
        let folder = PersistentDaemonFolder()
        defer { folder.remove() }
        var daemon = try folder.start()
        defer { daemon.stop() }
        try D.createBdev(daemon, .uring, name: "D0")
        try D.createController(daemon, "vhost.0", bdev: "D0")
        let memory = try FrontendMemory(size: 16 << 20)
        defer { memory.close() }
        let first = try D.attach(daemon, "vhost.0", memory: memory, queues: 1)
        defer { first.close() }
        #expect(try D.roundTrip(first, sector: 0, seed: 1))
        let q = try first.driverQueue(0)
        let usedBefore = q.lastUsedIdx

        // The daemon "pops" three writes and dies before completing them: it is
        // stopped, the heads go into the avail ring and are marked in flight in
        // the region as the daemon would have, then it is killed.
        kill(daemon.pid, SIGSTOP)
        var statuses: [GuestBuffer] = []
        var heads: [UInt16] = []
        for i in 0..<3 {
            let header = try memory.allocate(16, alignment: 16)
            header.write(BlkWire.header(type: BlkWire.typeOut, sector: UInt64(100 + 8 * i)))
            let data = try memory.allocate(4096, alignment: 512)
            data.write(D.pattern(4096, seed: 40 + i))
            let status = try memory.allocate(1, alignment: 1)
            status.pointer.storeBytes(of: 0xFF, as: UInt8.self)
            statuses.append(status)
            heads.append(try q.addChain([
                ChainBuffer(header, writable: false), ChainBuffer(data, writable: false), ChainBuffer(status, writable: true),
            ]))
        }
        q.publish()
        let inflightFD = try #require(first.inflightFD)
        let region = try SharedMapping(fd: inflightFD, length: Int(first.inflightSize))
        defer { region.unmap() }
        var area = InflightQueue(base: region.base, queueSize: q.size)
        #expect(area.isInitialized)
        for head in heads { area.markInFlight(head) }
        daemon.crash()

        daemon = try folder.start()
        let second = try VhostUserFrontend(socketPath: daemon.socketDirectory + "/vhost.0", memory: memory)
        defer { second.close() }
        try second.connect()
        // QEMU's guess of the base after a crash is the used index.
        try second.resume(from: first, bases: [usedBefore])

        var completed: [UInt32] = []
        for _ in 0..<3 { completed.append(try q.waitUsed(timeout: .seconds(5)).id) }
        #expect(Set(completed) == Set(heads.map(UInt32.init)))
        #expect(statuses.allSatisfy { $0.pointer.load(as: UInt8.self) == BlkWire.statusOK })
        usleep(200_000)
        #expect(q.popUsed() == nil, "a resubmitted request completed twice")
        #expect(daemon.log.contains("resubmit=3"))

        // The ring goes on from after the resubmitted heads, and the data landed.
        let queues = first.queues
        for i in 0..<3 {
            let r = try readAgain(q: queues[0], memory: memory, sector: UInt64(100 + 8 * i))
            #expect(r == D.pattern(4096, seed: 40 + i), "write \(i)")
        }
    }

    /// One 4 KiB read through `q` by hand (the old frontend object owns the queue).
    func readAgain(q: DriverQueue, memory: FrontendMemory, sector: UInt64) throws -> [UInt8] {
        let header = try memory.allocate(16, alignment: 16)
        header.write(BlkWire.header(type: BlkWire.typeIn, sector: sector))
        let data = try memory.allocate(4096, alignment: 512)
        let status = try memory.allocate(1, alignment: 1)
        defer { [header, data, status].forEach(memory.release) }
        _ = try q.addChain([
            ChainBuffer(header, writable: false), ChainBuffer(data, writable: true), ChainBuffer(status, writable: true),
        ])
        _ = q.publishAndKick()
        _ = try q.waitUsed(timeout: .seconds(5))
        #expect(status.pointer.load(as: UInt8.self) == BlkWire.statusOK)
        return data.read(count: 4096)
    }
}

/// After a restart or a reconnect no completion goes unsignalled (issue 19):
/// a queue signals its call eventfd when it starts, since a daemon that died
/// between publishing used elements and signalling them left a guest waiting
/// for an interrupt (libvirt 9.0, kill -9, reconnect=5: 16 completions sat in
/// the used ring), and again when SET_VRING_CALL replaces the eventfd, for
/// what was published while the frontend had none or watched the old one.
@Suite("Interrupts across reconnects")
struct InterruptAfterReconnectTests {
    /// Waits up to `milliseconds` for `fd` to be signalled; drains it.
    static func signalled(_ fd: EventFD, within milliseconds: Int32 = 2000) -> Bool {
        var pfd = pollfd(fd: fd.fd.rawValue, events: Int16(POLLIN), revents: 0)
        return poll(&pfd, 1, milliseconds) == 1 && fd.drain() > 0
    }

    @Test func aStartingQueueAndANewCallEventfdAreSignalled() throws {
        let daemon = try DataPathTests.daemonServing(.ioUring, .malloc, bdev: "M0")
        defer { daemon.stop(); daemon.cleanUp() }
        let memory = try FrontendMemory(size: 8 << 20)
        defer { memory.close() }
        let f = try DataPathTests.attach(daemon, "vhost.0", memory: memory, queues: 1)
        defer { f.close() }
        let q = try f.driverQueue(0)
        #expect(f.replyAck, "SET_VRING_CALL is acked, so each step below follows the one before")
        // Started: one signal, though nothing completed yet.
        #expect(Self.signalled(q.callFD))
        #expect(try DataPathTests.roundTrip(f, sector: 1, seed: 1))
        _ = q.callFD.drain()

        // A new call eventfd while the queue runs: signalled at once.
        let replacement = try EventFD()
        defer { replacement.close() }
        try f.channel.send(VhostUserMessage(request: .setVringCall, payload: .u64(0), fds: [replacement.fd]), ack: f.replyAck)
        #expect(Self.signalled(replacement))
        #expect(!Self.signalled(q.callFD, within: 100), "the old eventfd is no longer used")

        // No call eventfd (VHOST_USER_VRING_NOFD_MASK): completions published meanwhile are
        // signalled on the eventfd that comes next.
        try f.channel.send(VhostUserMessage(request: .setVringCall, payload: .u64(1 << 8), fds: []), ack: f.replyAck)
        _ = replacement.drain()
        let write = try f.write(sector: 2, data: DataPathTests.pattern(512, seed: 2), layout: BlkLayout(busyPoll: true))
        #expect(write.status == BlkWire.statusOK)
        #expect(!Self.signalled(replacement, within: 100))
        let next = try EventFD()
        defer { next.close() }
        try f.channel.send(VhostUserMessage(request: .setVringCall, payload: .u64(0), fds: [next.fd]), ack: f.replyAck)
        #expect(Self.signalled(next))
    }
}
