/// The size of the next chunk of a large DISCARD or WRITE_ZEROES on the
/// reactor (`LargeCopies`), adapted to the reactor time a chunk took: it
/// halves when one took over `budgetNanoseconds` and doubles when a full
/// one took under a quarter of it, staying a power of two between `floor`
/// and `ceiling`. A clear costs what it frees (a page at a time), not its
/// length, and the range may be anything from empty to all resident.
struct AdaptiveChunk {
    /// The reactor time one chunk should take: a neighbour's request waits
    /// at most about this long behind it.
    static let budgetNanoseconds: UInt64 = 20_000

    private(set) var bytes: UInt64
    let floor: UInt64
    let ceiling: UInt64

    /// Starts at `start`; all three are powers of two, `floor <= start <= ceiling`.
    init(start: UInt64, floor: UInt64, ceiling: UInt64) {
        self.bytes = start
        self.floor = floor
        self.ceiling = ceiling
    }

    /// A chunk of `length` bytes took `nanoseconds`.
    mutating func took(_ nanoseconds: UInt64, length: UInt64) {
        if nanoseconds > Self.budgetNanoseconds {
            bytes = max(floor, bytes / 2)
        } else if nanoseconds < Self.budgetNanoseconds / 4 && length >= bytes {
            bytes = min(ceiling, bytes * 2)
        }
    }

    /// Where the chunk from `position` ends: at the next multiple of the
    /// chunk size (so clears cover whole pages), or at `end`.
    func end(from position: UInt64, to end: UInt64) -> UInt64 {
        let (boundary, overflow) = (position & ~(bytes &- 1)).addingReportingOverflow(bytes)
        return overflow ? end : min(boundary, end)
    }
}
