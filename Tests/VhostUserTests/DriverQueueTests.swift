import Glibc
import Posix
import Testing
import Virtio
import VhostUserFrontend

/// The front end's driver-side ring writer checked against Virtio's device-side view.
@Suite struct DriverQueueTests {
    func deviceView(_ q: DriverQueue) throws -> SplitQueue {
        try SplitQueue(size: q.size, desc: q.desc.pointer, avail: q.avail.pointer, used: q.used.pointer, eventIdx: q.eventIdx)
    }

    @Test func directChainStraddlingRegionsRoundTrips() throws {
        let memory = try FrontendMemory(size: 4 << 20, splitAt: 1 << 20)
        defer { memory.close() }
        let freeAtStart = memory.freeBytes
        let q = try DriverQueue(memory: memory, index: 0, size: 8, eventIdx: true)
        var device = try deviceView(q)
        let guestMemory = try memory.guestMemory()

        let header = try memory.allocate(16)
        let data = try memory.allocateStraddlingSplit(4096)
        let status = try memory.allocate(1)
        #expect(data.gpa == UInt64((1 << 20) - 2048))
        let head = try q.addChain([
            ChainBuffer(header, writable: false), ChainBuffer(data, writable: true), ChainBuffer(status, writable: true),
        ])
        #expect(try device.pendingCount() == 0)  // not yet published
        q.publish()
        #expect(try device.pendingCount() == 1)
        #expect(try device.popHead() == head)

        var iovecs = [iovec](repeating: iovec(), count: 8)
        let chain = try iovecs.withUnsafeMutableBufferPointer { buf in
            try DescriptorChainWalker.walk(queue: device, head: head, memory: guestMemory, into: buf)
        }
        #expect(chain.readableCount == 1)
        #expect(chain.writableCount == 3)  // the data buffer splits at the region boundary
        #expect(chain.readableBytes == 16)
        #expect(chain.writableBytes == 4097)
        #expect(iovecs[1].iov_len == 2048)
        #expect(iovecs[1].iov_base == data.pointer)
        #expect(iovecs[3].iov_base == status.pointer)

        device.addUsed(id: head, length: 4097)
        device.publishUsed()
        #expect(device.shouldNotify(oldUsedIdx: 0))
        #expect(q.freeDescriptorCount == 5)
        let used = try #require(q.popUsed())
        #expect(used == UsedElement(id: UInt32(head), length: 4097))
        #expect(q.freeDescriptorCount == 8)
        #expect(q.popUsed() == nil)
        // used_event now asks for the next entry only.
        device.addUsed(id: 0, length: 0)
        device.publishUsed()
        #expect(device.shouldNotify(oldUsedIdx: 1))

        memory.release(header)
        memory.release(data)
        memory.release(status)
        q.close()
        #expect(memory.freeBytes == freeAtStart)
    }

    @Test func indirectChain() throws {
        let memory = try FrontendMemory(size: 1 << 20)
        defer { memory.close() }
        let q = try DriverQueue(memory: memory, index: 0, size: 4, eventIdx: false)
        var device = try deviceView(q)
        let a = try memory.allocate(16), b = try memory.allocate(512), c = try memory.allocate(1)
        let head = try q.addIndirectChain([
            ChainBuffer(a, writable: false), ChainBuffer(b, writable: false), ChainBuffer(c, writable: true),
        ])
        #expect(q.freeDescriptorCount == 3)
        q.publishAndKick()
        #expect(q.kickFD.drain() == 1)
        _ = try device.pendingCount()
        let popped = try #require(try device.popHead())
        #expect(device.descriptor(at: popped).isIndirect)
        var iovecs = [iovec](repeating: iovec(), count: 8)
        let chain = try iovecs.withUnsafeMutableBufferPointer { buf in
            try DescriptorChainWalker.walk(queue: device, head: popped, memory: try memory.guestMemory(), into: buf)
        }
        #expect(chain.readableBytes == 528)
        #expect(chain.writableBytes == 1)
        device.addUsed(id: head, length: 1)
        device.publishUsed()
        #expect(try q.waitUsed(timeout: .milliseconds(500)).length == 1)
        #expect(q.freeDescriptorCount == 4)
    }

    @Test func kickSuppression() throws {
        let memory = try FrontendMemory(size: 1 << 20)
        defer { memory.close() }
        let q = try DriverQueue(memory: memory, index: 0, size: 8, eventIdx: true)
        var device = try deviceView(q)
        let buf = try memory.allocate(64)
        try q.addChain([ChainBuffer(buf, writable: true)])
        #expect(q.publishAndKick())  // avail_event 0: crossing 0 -> 1 kicks
        _ = try device.pendingCount()
        _ = try device.popHead()
        // Device does not re-enable: avail_event stays 0, so 1 -> 2 does not kick.
        try q.addChain([ChainBuffer(buf, writable: true)])
        #expect(!q.publishAndKick())
        _ = try device.pendingCount()
        _ = try device.popHead()
        device.enableNotifications()  // avail_event = 2
        try q.addChain([ChainBuffer(buf, writable: true)])
        #expect(q.publishAndKick())
        #expect(q.publishAndKick(force: true))

        // Without EVENT_IDX, NO_NOTIFY in used->flags suppresses kicks.
        let plain = try DriverQueue(memory: memory, index: 1, size: 8, eventIdx: false)
        var dev2 = try deviceView(plain)
        dev2.disableNotifications()
        try plain.addChain([ChainBuffer(buf, writable: true)])
        #expect(!plain.publishAndKick())
        dev2.enableNotifications()
        #expect(plain.publishAndKick())
    }

    @Test func waitUsedTimesOut() throws {
        let memory = try FrontendMemory(size: 1 << 20)
        defer { memory.close() }
        let q = try DriverQueue(memory: memory, index: 0, size: 2, eventIdx: false)
        #expect(throws: FrontendError.timeout("a used entry on queue 0")) {
            try q.waitUsed(timeout: .milliseconds(60))
        }
        #expect(throws: FrontendError.queueFull) {
            let b = ChainBuffer(gpa: 0x1000, length: 1, writable: false)
            try q.addChain([b, b, b])
        }
    }

    @Test func allocatorRespectsTheSplit() throws {
        let memory = try FrontendMemory(size: 2 << 20, splitAt: 1 << 20, gap: 0x100000)
        defer { memory.close() }
        #expect(memory.regions[1].guestPhysAddr == 0x200000)
        #expect(throws: FrontendError.self) { try memory.allocateStraddlingSplit(4096) }
        let big = try memory.allocate((1 << 20) - 8192, alignment: 4096)
        let next = try memory.allocate(8192, alignment: 4096)  // does not fit below the split
        #expect(next.gpa == 0x200000)
        #expect(memory.pointer(gpa: next.gpa) == next.pointer)
        #expect(memory.gpa(of: next.pointer) == next.gpa)
        #expect(memory.pointer(gpa: 0x100000) == nil)
        memory.release(big)
        memory.release(next)
        #expect(memory.freeBytes == (2 << 20) - 4096)
    }
}
