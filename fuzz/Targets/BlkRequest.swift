// libFuzzer target: BlkRequestParser, then BlkExecutor (the daemon's code), over a
// hand-made, consistent chain (what DescriptorChainWalker hands it; virtio 1.2 §5.2.6).
//
// Input: byte 0 = segments (1...16), byte 1 = how many are device-readable,
// then one length byte per segment (length = b + 1), then the bytes that
// fill the segments in order (zeros once the input runs out). Each segment
// is its own exactly-sized heap block, so ASan flags any stray access.
// Checks (BlkRequestChecks): data range, data length and status byte stay
// inside the chain; the status byte is never data; the executor keeps every
// operation on the disk and never reports more bytes written than the chain holds.
import Glibc
import Virtio

@_cdecl("LLVMFuzzerTestOneInput")
public func blkRequestFuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size >= 2 else { return 0 }
    let count = 1 + Int(data[0] % 16)
    let readable = min(count, Int(data[1]) % (count + 1))
    var at = 2
    var lengths: [Int] = []
    for _ in 0..<count {
        lengths.append(at < size ? Int(data[at]) + 1 : 1)
        at += 1
    }
    var blocks: [(UnsafeMutableRawPointer, Int)] = []
    defer { for b in blocks { b.0.deallocate() } }
    let iovecs = UnsafeMutableBufferPointer<iovec>.allocate(capacity: count)
    defer { iovecs.deallocate() }
    var readableBytes: UInt64 = 0, writableBytes: UInt64 = 0
    for (i, n) in lengths.enumerated() {
        let p = UnsafeMutableRawPointer.allocate(byteCount: n, alignment: 1)
        memset(p, 0, n)
        let available = max(0, min(n, size - at))
        if available > 0 { memcpy(p, data + at, available) }
        at += n
        blocks.append((p, n))
        iovecs[i] = iovec(iov_base: p, iov_len: n)
        if i < readable { readableBytes += UInt64(n) } else { writableBytes += UInt64(n) }
    }
    let chain = ChainBuffers(
        head: 0, readableCount: readable, writableCount: count - readable,
        readableBytes: readableBytes, writableBytes: writableBytes)
    _ = BlkRequestChecks.perform(chain, iovecs: iovecs) { p, n in
        blocks.contains { b in
            let a = UInt(bitPattern: p), s = UInt(bitPattern: b.0)
            return a >= s && n >= 0 && a - s <= UInt(b.1) && UInt(n) <= UInt(b.1) - (a - s)
        }
    }
    return 0
}
