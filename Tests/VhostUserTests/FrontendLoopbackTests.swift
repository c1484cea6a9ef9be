import Glibc
import Posix
import Synchronization
import Testing
import Virtio
import VhostUser
import VhostUserFrontend

/// A minimal back end made of this module's codec and mapper, serving one
/// connection on a thread: enough to check the front end's handshake, its
/// memory table and rings end to end over a real socket. IN requests get a
/// byte pattern (sector number in every byte), everything else status OK.
final class MiniBackend: Sendable {
    let path: String
    let log = Mutex<[String]>([])
    let listener: FileDescriptor

    init() throws {
        path = "/tmp/vhostuser-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).sock"
        listener = try UnixSocket.listen(path: path)
    }

    func start() throws -> pthread_t {
        try PosixThread.start(name: "mini-backend") { [self] in serve() }
    }

    private func record(_ s: String) { log.withLock { $0.append(s) } }

    private func serve() {
        defer {
            listener.close()
            unlink(path)
        }
        var pfd = pollfd(fd: listener.rawValue, events: Int16(POLLIN), revents: 0)
        guard poll(&pfd, 1, 5000) > 0, let conn = try? UnixSocket.accept(listener) else { return record("no connection") }
        defer { conn.close() }
        var reader = VhostUserMessageReader()
        var mapping = GuestMemoryMapping()
        var call: EventFD?, kick: EventFD?
        var num: UInt16 = 0, base: UInt16 = 0
        var addr: VringAddress?
        var queue: SplitQueue?
        var buffer = [UInt8](repeating: 0, count: 4096)
        defer {
            call?.close()
            kick?.close()
            mapping.unmapAll()
            reader.takeAllFDs().closeAll()
        }
        func reply(_ bytes: [UInt8]) { try? UnixSocket.sendAll(conn, bytes) }

        while true {
            var fds = [pollfd(fd: conn.rawValue, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: kick?.fd.rawValue ?? -1, events: Int16(POLLIN), revents: 0)]
            guard poll(&fds, 2, 8000) > 0 else { return record("idle timeout") }
            if fds[1].revents != 0, var q = queue {
                kick?.drain()
                let old = q.usedIdx
                serviceQueue(&q, memory: mapping.memory)
                if q.shouldNotify(oldUsedIdx: old) { call?.signal() }
                queue = q
            }
            guard fds[0].revents != 0 else { continue }
            let received = buffer.withUnsafeMutableBytes { try? UnixSocket.receive(conn, into: $0) }
            guard let received, received.count > 0 else { return }
            buffer.withUnsafeBytes { reader.feed(UnsafeRawBufferPointer(rebasing: $0[..<received.count]), fds: received.fds) }
            while true {
                let next: VhostUserMessage?
                do { next = try reader.nextMessage() } catch { return record("decode error: \(error)") }
                guard let m = next else { break }
                record(m.request.name + (m.needsReply ? "+ack" : ""))
                switch (m.request, m.payload) {
                case (.getFeatures, _):
                    let f: VirtioFeatures = [.version1, .indirectDesc, .eventIdx, .protocolFeatures, .flush, .multiQueue, .blockSize]
                    reply(VhostUserReply.u64(.getFeatures, f.rawValue))
                case (.getProtocolFeatures, _):
                    let p: VhostUserProtocolFeatures = [.multiQueue, .replyAck, .config]
                    reply(VhostUserReply.u64(.getProtocolFeatures, p.rawValue))
                case (.getQueueNum, _):
                    reply(VhostUserReply.u64(.getQueueNum, 4))
                case (.getConfig, .config(let offset, let size, let flags, _)):
                    var cfg = [UInt8](repeating: 0, count: 60)
                    cfg[1] = 8  // capacity 2048 sectors
                    reply(VhostUserReply.config(offset: offset, size: size, flags: flags, bytes: cfg))
                case (.setMemTable, .memoryTable(let regions)):
                    let ok: Bool
                    do {
                        let new = try GuestMemoryMapping.map(regions, fds: m.fds)
                        mapping.unmapAll()
                        mapping = new
                        ok = true
                    } catch { ok = false }
                    if m.needsReply { reply(VhostUserReply.ack(.setMemTable, success: ok)) }
                case (.setVringCall, _):
                    call?.close()
                    call = m.fds.first.map { EventFD(adopting: $0) }
                case (.setVringKick, _):
                    kick?.close()
                    kick = m.fds.first.map { EventFD(adopting: $0) }
                case (.setVringNum, .vringState(_, let n)):
                    num = UInt16(truncatingIfNeeded: n)
                case (.setVringBase, .vringState(_, let n)):
                    base = UInt16(truncatingIfNeeded: n)
                case (.setVringAddr, .vringAddress(let a)):
                    addr = a
                case (.setVringEnable, .vringState(_, let on)):
                    guard on == 1 else {
                        base = queue?.lastAvailIdx ?? base
                        queue = nil
                        continue
                    }
                    let sizes = SplitQueue.layoutSizes(size: num)
                    let mem = mapping.memory
                    if let a = addr,
                       let d = mem.hostPointer(userAddr: a.desc, length: UInt64(sizes.desc)),
                       let av = mem.hostPointer(userAddr: a.avail, length: UInt64(sizes.avail)),
                       let u = mem.hostPointer(userAddr: a.used, length: UInt64(sizes.used)) {
                        queue = try? SplitQueue(size: num, desc: d, avail: av, used: u, eventIdx: true, lastAvailIdx: base)
                    }
                    if queue == nil { record("queue setup failed") }
                case (.getVringBase, .vringState(let i, _)):
                    reply(VhostUserReply.vringState(.getVringBase, index: i, num: UInt32(queue?.lastAvailIdx ?? base)))
                    queue = nil
                default:
                    m.fds.closeAll()
                }
            }
        }
    }

    private func serviceQueue(_ q: inout SplitQueue, memory: GuestMemory) {
        guard let pending = try? q.pendingCount() else { return record("bad avail idx") }
        guard pending > 0 else { return }
        var iovecs = [iovec](repeating: iovec(), count: 64)
        while let head = try? q.popHead() {
            let chain = iovecs.withUnsafeMutableBufferPointer { buf in
                try? DescriptorChainWalker.walk(queue: q, head: head, memory: memory, into: buf)
            }
            guard let chain, chain.readableCount >= 1, chain.writableBytes >= 1 else {
                record("bad chain")
                q.addUsed(id: head, length: 0)
                continue
            }
            let hdr = iovecs[0].iov_base.map { UnsafeRawPointer($0) }
            let type = hdr.map { UInt32(littleEndian: $0.loadUnaligned(as: UInt32.self)) } ?? 99
            let sector = hdr.map { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self)) } ?? 0
            // Fill writable bytes (all but the status) with the sector's low byte, as one stream.
            var remaining = Int(chain.writableBytes) - 1
            var lastByte: UnsafeMutableRawPointer?
            for i in chain.readableCount..<chain.segmentCount {
                guard let p = iovecs[i].iov_base else { continue }
                let n = min(remaining, iovecs[i].iov_len)
                if type == 0 { memset(p, Int32(sector & 0xff), n) }
                remaining -= n
                if n < iovecs[i].iov_len { lastByte = p + n }
            }
            lastByte?.storeBytes(of: 0, as: UInt8.self)
            q.addUsed(id: head, length: type == 0 ? UInt32(chain.writableBytes) : 1)
        }
        q.publishUsed()
        // EVENT_IDX: ask for the next kick (avail_event), then re-check for work that raced it.
        q.enableNotifications()
        if q.hasPendingAfterEnable() { serviceQueue(&q, memory: memory) }
    }
}

@Suite(.serialized) struct FrontendLoopbackTests {
    @Test func handshakeReadAndStop() throws {
        let backend = try MiniBackend()
        let thread = try backend.start()
        let memory = try FrontendMemory(size: 8 << 20, splitAt: 4 << 20)
        defer { memory.close() }
        let frontend = try VhostUserFrontend(socketPath: backend.path, memory: memory)
        do { try frontend.connect() } catch {
            Issue.record("backend log: \(backend.log.withLock { $0 })")
            throw error
        }
        #expect(frontend.protocolFeatures == [.multiQueue, .replyAck, .config])
        #expect(frontend.maxQueues == 4)
        #expect(frontend.config.count == 57)
        #expect(frontend.config[1] == 8)
        do { try frontend.start(queueCount: 1, queueSize: 16) } catch {
            Issue.record("backend log: \(backend.log.withLock { $0 })")
            throw error
        }
        #expect(frontend.ackedFeatures.contains(.eventIdx))

        do {
            let r = try frontend.read(sector: 7, count: 2)
            #expect(r.status == 0)
            #expect(r.usedLength == 1025)
            #expect(r.data == [UInt8](repeating: 7, count: 1024))

            let straddle = try frontend.read(sector: 9, count: 8, layout: BlkLayout(indirect: true, maxSegmentBytes: 1000, straddleRegions: true))
            #expect(straddle.status == 0)
            #expect(straddle.data == [UInt8](repeating: 9, count: 4096))

            let w = try frontend.write(sector: 1, data: [UInt8](repeating: 1, count: 512))
            #expect(w.status == 0)
            #expect(w.usedLength == 1)
            #expect(try frontend.flush().status == 0)
        } catch {
            Issue.record("backend log: \(backend.log.withLock { $0 })")
            throw error
        }

        let bases = try frontend.stop()
        #expect(bases == [4])
        frontend.close()
        PosixThread.join(thread)

        let log = backend.log.withLock { $0 }
        #expect(log == [
            "GET_FEATURES", "GET_PROTOCOL_FEATURES", "SET_PROTOCOL_FEATURES", "GET_QUEUE_NUM", "SET_OWNER",
            "GET_CONFIG", "SET_FEATURES", "SET_MEM_TABLE+ack", "SET_VRING_CALL", "SET_VRING_NUM",
            "SET_VRING_BASE", "SET_VRING_ADDR", "SET_VRING_KICK", "SET_VRING_ENABLE", "SET_VRING_ENABLE",
            "GET_VRING_BASE",
        ])
    }

    @Test func strictReplyChecking() throws {
        // A back end that answers GET_FEATURES with NEED_REPLY echoed: the front end must refuse it.
        let path = "/tmp/vhostuser-test-bad-\(getpid()).sock"
        let listener = try UnixSocket.listen(path: path)
        defer { listener.close(); unlink(path) }
        let thread = try PosixThread.start(name: "bad-backend") {
            var pfd = pollfd(fd: listener.rawValue, events: Int16(POLLIN), revents: 0)
            guard poll(&pfd, 1, 5000) > 0, let conn = try? UnixSocket.accept(listener) else { return }
            var buf = [UInt8](repeating: 0, count: 64)
            _ = buf.withUnsafeMutableBytes { try? UnixSocket.receive(conn, into: $0) }
            var h = VhostUserHeader(request: .getFeatures, flags: 0xd, size: 8)
            try? UnixSocket.sendAll(conn, h.bytes + [UInt8](repeating: 0, count: 8))
            h.flags = 0x5
            _ = poll(&pfd, 0, 200)
            conn.close()
        }
        let memory = try FrontendMemory(size: 1 << 20)
        defer { memory.close() }
        let frontend = try VhostUserFrontend(socketPath: path, memory: memory)
        #expect(throws: FrontendError.protocolViolation("GET_FEATURES reply has flags 0xd, expected 0x5")) {
            try frontend.connect()
        }
        frontend.close()
        PosixThread.join(thread)
    }
}
