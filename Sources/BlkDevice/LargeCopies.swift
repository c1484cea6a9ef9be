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
/// Thread confinement: the queue's reactor.
struct LargeCopies: ~Copyable {
    /// Bytes copied per chunk; requests up to this size are copied at once.
    static let chunk: UInt64 = 64 << 10

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
