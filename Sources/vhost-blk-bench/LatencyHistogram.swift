/// A log-linear latency histogram in nanoseconds: exact below 64 ns, then 64
/// linear sub-buckets per power of two (at most ~1.6 % error), like HdrHistogram.
struct LatencyHistogram: Sendable {
    private static let subBits = 6
    private static let subCount = 1 << subBits
    private static let bucketCount = (64 - subBits + 1) * subCount

    private var counts = [UInt64](repeating: 0, count: LatencyHistogram.bucketCount)
    private(set) var total: UInt64 = 0
    private(set) var sumNanos: UInt64 = 0
    private(set) var maxNanos: UInt64 = 0

    mutating func record(_ nanos: UInt64) {
        counts[Self.index(nanos)] &+= 1
        total &+= 1
        sumNanos &+= nanos
        if nanos > maxNanos { maxNanos = nanos }
    }

    mutating func merge(_ other: LatencyHistogram) {
        for i in counts.indices { counts[i] &+= other.counts[i] }
        total &+= other.total
        sumNanos &+= other.sumNanos
        maxNanos = max(maxNanos, other.maxNanos)
    }

    /// The value at quantile `q` (0...1), as the midpoint of its bucket; 0 when empty.
    func quantile(_ q: Double) -> UInt64 {
        guard total > 0 else { return 0 }
        let rank = max(1, UInt64((Double(total) * min(max(q, 0), 1)).rounded(.up)))
        var seen: UInt64 = 0
        for (i, c) in counts.enumerated() where c > 0 {
            seen &+= c
            if seen >= rank { return min(Self.midpoint(i), maxNanos) }
        }
        return maxNanos
    }

    var meanNanos: Double { total == 0 ? 0 : Double(sumNanos) / Double(total) }

    static func index(_ v: UInt64) -> Int {
        if v < UInt64(subCount) { return Int(v) }
        let exp = 63 - v.leadingZeroBitCount  // >= subBits
        let sub = Int((v >> UInt64(exp - subBits)) & UInt64(subCount - 1))
        return (exp - subBits + 1) * subCount + sub
    }

    static func midpoint(_ index: Int) -> UInt64 {
        if index < subCount { return UInt64(index) }
        let exp = index / subCount + subBits - 1
        let sub = UInt64(index % subCount)
        let width = UInt64(1) << UInt64(exp - subBits)
        let low = (UInt64(subCount) + sub) << UInt64(exp - subBits)
        return low &+ width / 2
    }
}
