// libFuzzer target: a packed virtqueue in fake guest memory, driven the way a
// device drives it (PackedQueue, PackedChainWalker, then BlkRequestParser and
// BlkExecutor through Support/BlkRequestChecks.swift; virtio 1.2 §2.8, §5.2.6).
//
// Input layout (little endian, missing bytes read as 0):
//   0      flags: bit 0 RING_EVENT_IDX, bits 1-2 extra regions (0...3),
//          bit 3 complete in reverse order (out of order), bit 4 publish each
//          used element on its own
//   1-2    queue size = 1 + u16 % 512
//   3-4    ring base (avail and used position): bits 0-14 index % size, bit 15 wrap
//   5      iovec capacity = 1 + b % 64
//   6-7    reserved
//   8...   3 extra regions, 8 bytes each: u32 gpa, u16 size-1, u16 fill byte
//   32...  contents of region 0 (gpa 0x1000, 16 KiB): the descriptor ring at
//          its start (16 bytes a slot), the driver event suppression area
//          right after it, the device's after that; the rest is data.
// Every region is its own exactly-sized heap block, so ASan flags any access
// outside guest memory. Checks: positions advance by exactly the slots popped
// and never more than one ring per lap; every iovec lies inside one region
// and the byte counts match; used elements land where the driver looks for
// them, with AVAIL and USED equal to the used wrap counter.
import Glibc
import Virtio

private let region0GPA: UInt64 = 0x1000
private let region0Size = 16 << 10

private struct Input {
    let bytes: UnsafeBufferPointer<UInt8>
    func u8(_ at: Int) -> UInt8 { at < bytes.count ? bytes[at] : 0 }
    func u16(_ at: Int) -> UInt16 { UInt16(u8(at)) | UInt16(u8(at + 1)) << 8 }
    func u32(_ at: Int) -> UInt32 { UInt32(u16(at)) | UInt32(u16(at + 2)) << 16 }
}

private struct HostBlock {
    let base: UnsafeMutableRawPointer
    let size: Int
    func contains(_ p: UnsafeRawPointer, _ n: Int) -> Bool {
        let a = UInt(bitPattern: p), b = UInt(bitPattern: base)
        return a >= b && n >= 0 && a - b <= UInt(size) && UInt(n) <= UInt(size) - (a - b)
    }
}

/// `p` moved `count` slots on in a ring of `size`, computed independently of `PackedQueue`.
private func advanced(_ p: PackedRingPosition, by count: Int, size: Int) -> PackedRingPosition {
    var q = p
    for _ in 0..<count {
        q.index += 1
        if Int(q.index) == size { q.index = 0; q.wrap.toggle() }
    }
    return q
}

@_cdecl("LLVMFuzzerTestOneInput")
public func packedChainFuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = Input(bytes: UnsafeBufferPointer(start: data, count: size))
    let eventIdx = input.u8(0) & 1 != 0
    let extra = Int(input.u8(0) >> 1) & 3
    let reverse = input.u8(0) & 8 != 0
    let publishEach = input.u8(0) & 16 != 0
    let queueSize = 1 + input.u16(1) % 512
    var base = PackedRingPosition(encoded: input.u16(3))
    base.index %= queueSize
    let iovCapacity = 1 + Int(input.u8(5) % 64)

    var blocks: [HostBlock] = []
    defer { for b in blocks { b.base.deallocate() } }
    var regions: [GuestMemoryRegion] = []

    let main = UnsafeMutableRawPointer.allocate(byteCount: region0Size, alignment: 4096)
    memset(main, 0, region0Size)
    let contentCount = max(0, min(region0Size, size - 32))
    if contentCount > 0 { memcpy(main, data + 32, contentCount) }
    blocks.append(HostBlock(base: main, size: region0Size))
    regions.append(GuestMemoryRegion(guestPhysAddr: region0GPA, size: UInt64(region0Size), userAddr: 0x7f00_0000_0000, host: main))

    for i in 0..<extra {
        let at = 8 + 8 * i
        let gpa = UInt64(input.u32(at))
        let length = Int(input.u16(at + 4)) + 1
        let p = UnsafeMutableRawPointer.allocate(byteCount: length, alignment: 16)
        memset(p, Int32(input.u8(at + 6)), length)
        blocks.append(HostBlock(base: p, size: length))
        regions.append(GuestMemoryRegion(
            guestPhysAddr: gpa, size: UInt64(length), userAddr: 0x7e00_0000_0000 + UInt64(i) << 32, host: p))
    }

    let memory: GuestMemory
    do { memory = try GuestMemory(regions: regions) } catch { return 0 }

    let sizes = PackedQueue.layoutSizes(size: queueSize)
    let driverEventGPA = region0GPA + UInt64(sizes.desc)
    let deviceEventGPA = driverEventGPA + UInt64(sizes.driverEvent)
    guard let desc = memory.hostPointer(gpa: region0GPA, length: UInt64(sizes.desc)),
          let driverEvent = memory.hostPointer(gpa: driverEventGPA, length: 4),
          let deviceEvent = memory.hostPointer(gpa: deviceEventGPA, length: 4)
    else { return 0 }
    var queue: PackedQueue
    do {
        queue = try PackedQueue(size: queueSize, desc: desc, driverEvent: driverEvent, deviceEvent: deviceEvent,
                                eventIdx: eventIdx, avail: base)
    } catch { return 0 }

    let iovecs = UnsafeMutableBufferPointer<iovec>.allocate(capacity: iovCapacity)
    defer { iovecs.deallocate() }

    var taken: [(head: PackedChainHead, length: UInt32)] = []
    var slots = 0
    for _ in 0..<Int(queueSize) {
        let before = queue.nextAvail
        let head: PackedChainHead
        do {
            guard let h = try queue.popAvail() else { break }
            head = h
        } catch {
            guard queue.nextAvail == before else { fatalError("a refused chain moved the avail position") }
            break  // broken queue: the daemon stops serving it
        }
        guard head.index == before.index, head.slotCount >= 1, head.slotCount <= queueSize,
              queue.nextAvail == advanced(before, by: Int(head.slotCount), size: Int(queueSize))
        else { fatalError("popAvail at \(before) returned \(head), now at \(queue.nextAvail)") }
        slots += Int(head.slotCount)
        guard slots <= Int(queueSize) else { fatalError("popped \(slots) slots of a \(queueSize)-slot ring in one lap") }
        taken.append((head, serve(queue: queue, head: head, memory: memory, iovecs: iovecs, blocks: blocks)))
    }

    let usedStart = queue.nextUsed
    var expected = usedStart
    for (head, length) in reverse ? taken.reversed() : taken {
        let at = expected
        queue.addUsed(id: head.id, length: length, slotCount: head.slotCount)
        if publishEach { queue.publishUsed() }
        expected = advanced(expected, by: Int(head.slotCount), size: Int(queueSize))
        let written = queue.descriptor(at: at.index)
        guard written.id == head.id, written.len == length else {
            fatalError("used element at \(at) is \(written), want id \(head.id) len \(length)")
        }
    }
    queue.publishUsed()
    guard queue.nextUsed == expected else { fatalError("used position \(queue.nextUsed), want \(expected)") }
    var at = usedStart
    for (head, _) in reverse ? taken.reversed() : taken {
        let flags = queue.descriptor(at: at.index).flags
        let mask = PackedDescriptor.flagAvail | PackedDescriptor.flagUsed
        guard flags & mask == PackedDescriptor.usedFlags(wrap: at.wrap) else {
            fatalError("used element at \(at) has flags \(flags)")
        }
        at = advanced(at, by: Int(head.slotCount), size: Int(queueSize))
    }
    let notify = queue.shouldNotify()
    if taken.isEmpty && notify { fatalError("notify with nothing published") }
    queue.enableNotifications()
    _ = queue.hasPendingAfterEnable()
    queue.disableNotifications()
    return 0
}

/// Walks, parses and "performs" one request; returns the used length.
private func serve(
    queue: PackedQueue, head: PackedChainHead, memory: GuestMemory, iovecs: UnsafeMutableBufferPointer<iovec>, blocks: [HostBlock]
) -> UInt32 {
    let chain: ChainBuffers
    do {
        chain = try PackedChainWalker.walk(queue: queue, head: head, memory: memory, into: iovecs)
    } catch {
        _ = error.description
        return 0
    }
    guard chain.head == head.id, chain.segmentCount <= iovecs.count, chain.readableCount >= 0, chain.writableCount >= 0 else {
        fatalError("walker reported \(chain) for \(head) and \(iovecs.count) iovecs")
    }
    var readable: UInt64 = 0, writable: UInt64 = 0
    for i in 0..<chain.segmentCount {
        let v = iovecs[i]
        guard let base = v.iov_base, v.iov_len > 0, blocks.contains(where: { $0.contains(base, v.iov_len) }) else {
            fatalError("iovec \(i) (\(String(describing: v.iov_base)), \(v.iov_len)) is not inside guest memory")
        }
        if i < chain.readableCount { readable += UInt64(v.iov_len) } else { writable += UInt64(v.iov_len) }
    }
    guard readable == chain.readableBytes, writable == chain.writableBytes else {
        fatalError("byte counts \(chain.readableBytes)/\(chain.writableBytes) but iovecs hold \(readable)/\(writable)")
    }
    return BlkRequestChecks.perform(chain, iovecs: iovecs, blocks: { p, n in blocks.contains { $0.contains(p, n) } })
}
