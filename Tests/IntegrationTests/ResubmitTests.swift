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
        try PersistentDaemonFolder.withDaemonServingD0 { folder, daemon, memory in
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
    }

    /// The same on a packed ring (virtio 1.2 §2.8), with the daemon killed
    /// for real while three writes wait on a frozen filesystem, popped and
    /// recorded: the next daemon resumes from the packed inflight area
    /// (`PackedInflightQueue`), not from the stale base QEMU sends for a
    /// packed ring after a crash, serves each write once from the copies of
    /// its descriptors, and goes on with the ring.
    @Test func crashedPackedRequestsAreServedOnceByTheNextDaemon() throws {
        typealias S = StalledBackendTests
        let fs = try FreezableFilesystem.make()
        defer { fs.remove() }
        let folder = PersistentDaemonFolder()
        defer { folder.remove() }
        var daemon = try folder.start()
        defer { daemon.stop() }
        try D.withLogOnError(daemon) { () throws in
            try daemon.call("bdev_uring_create", ["filename": .string(fs.diskPath), "name": .string(S.bdevA), "block_size": 512])
            try daemon.call("vhost_create_blk_controller", ["ctrlr": .string(S.ctrlrA), "dev_name": .string(S.bdevA), "packed_ring": true])
        }
        let memory = try FrontendMemory(size: 8 << 20)
        defer { memory.close() }
        var options = PackedRingTests.packedOptions
        options.timeout = S.stallTimeout
        let first = try VhostUserFrontend(socketPath: daemon.socketDirectory + "/" + S.ctrlrA, memory: memory, options: options)
        defer { first.close() }
        try first.connect()
        try first.start(queueCount: 1, queueSize: 16)
        let q = try first.driverQueue(0)
        try #require(q.packed && first.inflightFD != nil)
        #expect(try D.roundTrip(first, sector: 0, seed: 1))

        try fs.freeze()
        let writes = try (1...3).map { i in try S.addWrite(on: q, memory: memory, sector: UInt64(8 * i)) }
        q.publishAndKick(force: true)
        try S.waitUntilInFlight(3, daemon, q)
        #expect(q.peekUsedID() == nil, "a write completed on a frozen filesystem")
        kill(daemon.pid, SIGKILL)  // the process goes once its writes are cancelled or done
        fs.thaw()
        daemon.crash()

        daemon = try folder.start()
        try D.withLogOnError(daemon) { () throws in
            let second = try VhostUserFrontend(socketPath: daemon.socketDirectory + "/" + S.ctrlrA, memory: memory, options: options)
            defer { second.close() }
            try second.connect()
            // QEMU's packed base after a crash: where the ring was when it last started.
            try second.resume(from: first, rawBases: [PackedRingBase.encode(avail: .start, used: .start)])
            var completed: [UInt16: UInt8] = [:]
            let until = ContinuousClock.now + .seconds(10)
            while completed.count < 3, ContinuousClock.now < until {
                // The status is read before popUsed gives the chain's buffers back.
                guard let id = q.peekUsedID() else {
                    usleep(5_000)
                    continue
                }
                let write = writes.first { UInt32($0.head) == id }
                #expect(completed[UInt16(truncatingIfNeeded: id)] == nil, "buffer \(id) completed twice")
                completed[UInt16(truncatingIfNeeded: id)] = write?.status.pointer.load(as: UInt8.self) ?? 0xEE
                _ = q.popUsed()
            }
            #expect(Set(completed.keys) == Set(writes.map(\.head)), "\(completed)")
            #expect(completed.values.allSatisfy { $0 == BlkWire.statusOK }, "\(completed)")
            usleep(200_000)
            #expect(q.popUsed() == nil, "a resubmitted request completed twice")
            #expect(daemon.log.contains("resubmit=3"))
            for write in writes { try S.expectOnDisk(write, fs: fs, sourceLocation: #_sourceLocation) }
            // The ring goes on after them, at the position the area gave.
            #expect(try D.roundTrip(first, sector: 64, seed: 7))
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
        try DataPathTests.withMallocFrontend { _, f in
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
}
