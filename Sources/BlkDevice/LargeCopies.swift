import Glibc

/// Reads and writes over `chunk` bytes on backends served inline (RAM,
/// files on tmpfs), copied on the reactor one chunk per queue per
/// iteration, so a queue with 16 MiB requests holds the queues beside it
/// for one chunk's memcpy (about 5-20 us) at a time, not for milliseconds.
///
/// A thread pool would take the copy off the reactor but not off its CPU:
/// its workers run on the reactors' CPUs and took most of one from its
/// reactor (IsolationTests, 16 MiB reads beside a 4 KiB neighbour: the
/// neighbour fell to 25-27 % of its rate). Chunks keep the reactor in
/// charge of how much of its time one queue gets.
///
/// DISCARD and WRITE_ZEROES over `chunk` bytes (MADV_DONTNEED on RAM, a
/// punched hole in a tmpfs file) go the same way. What a clear costs
/// follows the resident pages it frees, not its length: on the 2-CPU test
/// machine (busy) 1 MiB of resident pages took 1.2-1.8 ms, an empty 2 GiB
/// range 0.1 ms. So a clear's chunk adapts to about 20 us of reactor time
/// (`AdaptiveChunk`), from 4 KiB to 1 MiB, its chunks ending on multiples
/// of their size (whole pages). The ceiling bounds the one chunk that finds
/// resident pages after a run of empty ones (before the size halves again)
/// to what 1 MiB costs; a 2 GiB DISCARD of an empty range then takes 2,048
/// iterations, a few milliseconds.
///
/// Thread confinement: the queue's reactor.
struct LargeCopies: ~Copyable {
    /// Requests up to this size are copied or cleared at once.
    static let chunk: UInt64 = 64 << 10
    /// The largest chunk of a clear.
    static let maxClearChunk: UInt64 = 1 << 20

    /// This queue's chunk of clears.
    var clearChunk = AdaptiveChunk(start: chunk, floor: 4096, ceiling: maxClearChunk)

    /// Slots whose copy is under way, served round-robin.
    var pending: [UInt32] = []
    /// The iovecs of the chunk being copied.
    let scratch: UnsafeMutablePointer<iovec>
    let scratchCount = RequestSlots.iovecsPerSlot

    init() {
        scratch = .allocate(capacity: scratchCount)
    }

    deinit { scratch.deallocate() }

    /// Points `scratch` at bytes `from ..< from + length` of the `count`
    /// iovecs at `data`; returns how many entries it used (fewer bytes than
    /// asked only if the iovecs end first).
    static func slice(_ data: UnsafePointer<iovec>, count: Int, from: UInt64, length: UInt64,
                      into scratch: UnsafeMutablePointer<iovec>, capacity: Int) -> Int {
        var skip = from, left = length, used = 0
        for i in 0..<count where left > 0 && used < capacity {
            let vec = data[i]
            let size = UInt64(vec.iov_len)
            if skip >= size {
                skip -= size
                continue
            }
            guard let base = vec.iov_base else { continue }
            let take = min(size - skip, left)
            scratch[used] = iovec(iov_base: base + Int(skip), iov_len: Int(take))
            used += 1
            left -= take
            skip = 0
        }
        return used
    }
}
