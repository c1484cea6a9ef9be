/// xorshift64* (Vigna): a fast, seedable generator; one per queue thread.
struct XorShift64Star: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) { state = seed == 0 ? 0x9E37_79B9_7F4A_7C15 : seed }

    mutating func next() -> UInt64 {
        state ^= state >> 12
        state ^= state << 25
        state ^= state >> 27
        return state &* 0x2545_F491_4F6C_DD1D
    }
}

/// Picks block-aligned offsets (in 512-byte sectors) inside the disk: random
/// over the whole disk, or sequential through this queue's share of it.
struct OffsetGenerator {
    private var rng: XorShift64Star
    private let random: Bool
    /// Blocks of `blockSize` bytes that fit in the disk.
    private let blocks: UInt64
    private let sectorsPerBlock: UInt64
    private var nextBlock: UInt64

    /// - Parameters:
    ///   - capacitySectors: disk size in 512-byte sectors (GET_CONFIG `capacity`).
    ///   - queue, queues: sequential patterns start queue `queue` at its share of the disk.
    init?(capacitySectors: UInt64, blockSize: Int, random: Bool, queue: Int, queues: Int, seed: UInt64) {
        guard blockSize >= 512, blockSize % 512 == 0, queues > 0 else { return nil }
        sectorsPerBlock = UInt64(blockSize / 512)
        blocks = capacitySectors / sectorsPerBlock
        guard blocks > 0 else { return nil }
        self.random = random
        rng = XorShift64Star(seed: seed &+ UInt64(truncatingIfNeeded: queue) &* 0x9E37_79B9_7F4A_7C15)
        nextBlock = blocks / UInt64(queues) * UInt64(queue)
    }

    /// Blocks in this queue's share of a sequential pass (the last queue
    /// takes the remainder): what `--fill` writes.
    static func shareBlocks(capacitySectors: UInt64, blockSize: Int, queue: Int, queues: Int) -> UInt64 {
        guard blockSize >= 512, queues > 0, queue >= 0, queue < queues else { return 0 }
        let blocks = capacitySectors / UInt64(blockSize / 512)
        let share = blocks / UInt64(queues)
        return queue == queues - 1 ? share + blocks % UInt64(queues) : share
    }

    /// The sector of the next request.
    mutating func nextSector() -> UInt64 {
        let block: UInt64
        if random {
            block = rng.next() % blocks
        } else {
            block = nextBlock
            nextBlock = nextBlock + 1 >= blocks ? 0 : nextBlock + 1
        }
        return block &* sectorsPerBlock
    }

    /// A fair coin for randrw.
    mutating func coin() -> Bool { rng.next() & (1 << 40) != 0 }
}
