// libFuzzer target: a split virtqueue in fake guest memory, driven the way
// the daemon's VirtqueueServer drives it (SplitQueue, DescriptorChainWalker,
// BlkRequestParser, then BlkExecutor, the device's step function; virtio 1.2
// §2.7, §5.2.6).
//
// Input layout (little endian, missing bytes read as 0):
//   0      flags: bit 0 EVENT_IDX, bits 1-2 extra regions (0...3)
//   1      queue size = 1 << (b % 9)
//   2-3    last avail idx (SET_VRING_BASE)
//   4      iovec capacity = 1 + b % 64
//   5-7    reserved
//   8...   3 extra regions, 8 bytes each: u32 gpa, u16 size-1, u16 fill byte
//   32...  contents of region 0 (gpa 0x1000, 16 KiB): the descriptor table
//          at its start, the avail ring right after, the used ring after that
//          (4-byte aligned); the rest is data the descriptors may point at.
// Every region is its own exactly-sized heap block, so ASan flags any access
// outside guest memory. Checks: every iovec lies inside one region; the
// parsed request's data range and status byte lie inside the chain.
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

@_cdecl("LLVMFuzzerTestOneInput")
public func descriptorChainFuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = Input(bytes: UnsafeBufferPointer(start: data, count: size))
    let eventIdx = input.u8(0) & 1 != 0
    let extra = Int(input.u8(0) >> 1) & 3
    let queueSize = UInt16(1) << UInt16(input.u8(1) % 9)
    let lastAvail = input.u16(2)
    let iovCapacity = 1 + Int(input.u8(4) % 64)

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

    let sizes = SplitQueue.layoutSizes(size: queueSize)
    let descGPA = region0GPA
    let availGPA = descGPA + UInt64(sizes.desc)
    let usedGPA = (availGPA + UInt64(sizes.avail) + 3) & ~3
    guard let desc = memory.hostPointer(gpa: descGPA, length: UInt64(sizes.desc)),
          let avail = memory.hostPointer(gpa: availGPA, length: UInt64(sizes.avail)),
          let used = memory.hostPointer(gpa: usedGPA, length: UInt64(sizes.used))
    else { return 0 }
    var queue: SplitQueue
    do {
        queue = try SplitQueue(size: queueSize, desc: desc, avail: avail, used: used, eventIdx: eventIdx, lastAvailIdx: lastAvail)
    } catch { return 0 }

    let iovecs = UnsafeMutableBufferPointer<iovec>.allocate(capacity: iovCapacity)
    defer { iovecs.deallocate() }
    let oldUsed = queue.usedIdx

    let pending: UInt16
    do { pending = try queue.pendingCount() } catch { return 0 }
    for _ in 0..<Int(pending) {
        let head: UInt16
        do {
            guard let h = try queue.popHead() else { break }
            head = h
        } catch { break }  // broken queue: the daemon stops serving it
        let used = serve(queue: queue, head: head, memory: memory, iovecs: iovecs, blocks: blocks)
        queue.addUsed(id: head, length: used)
    }
    queue.publishUsed()
    _ = queue.shouldNotify(oldUsedIdx: oldUsed)
    queue.enableNotifications()
    _ = queue.hasPendingAfterEnable()
    queue.disableNotifications()
    return 0
}

/// Walks, parses and "performs" one request; returns the used length.
private func serve(
    queue: SplitQueue, head: UInt16, memory: GuestMemory, iovecs: UnsafeMutableBufferPointer<iovec>, blocks: [HostBlock]
) -> UInt32 {
    let chain: ChainBuffers
    do {
        chain = try DescriptorChainWalker.walk(queue: queue, head: head, memory: memory, into: iovecs)
    } catch {
        _ = error.description
        return 0
    }
    guard chain.segmentCount <= iovecs.count, chain.readableCount >= 0, chain.writableCount >= 0 else {
        fatalError("walker reported \(chain.segmentCount) segments for \(iovecs.count) iovecs")
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
