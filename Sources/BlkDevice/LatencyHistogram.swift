/// Latencies in nanoseconds, counted in log-linear buckets: exact below 32,
/// then 32 buckets per power of two (each within 1/32, about 3 %, of its
/// values). The reactor counts into raw buckets (`QueueStatsBlock`); this
/// value is what snapshots, bdev totals and reports use. Its counts are
/// allocated only when something was counted, so an idle bdev holds none.
package struct LatencyHistogram: Sendable, Equatable {
    // Computed, so the hot path sees constants rather than lazy globals.
    package static var subBucketBits: Int { 5 }
    package static var subBuckets: Int { 1 << subBucketBits }
    /// Values 0..<32, then 59 octaves (2^5 ... 2^63) of 32.
    package static var bucketCount: Int { subBuckets + (64 - subBucketBits) * subBuckets }

    package private(set) var counts: [UInt64] = []
    package private(set) var totalCount: UInt64 = 0

    /// Branch-free: with `shift` = (highest set bit) - 5, clamped at 0 by
    /// or-ing in 32, the bucket is `shift * 32 + value >> shift` (the shifted
    /// value lies in 32..<64 above the exact range, in 0..<32 within it).
    @inline(__always)
    package static func index(of value: UInt64) -> Int {
        let shift = (63 &- subBucketBits) &- (value | UInt64(subBuckets)).leadingZeroBitCount
        return shift &<< subBucketBits &+ Int(truncatingIfNeeded: value &>> UInt64(truncatingIfNeeded: shift))
    }

    /// The largest value bucket `index` holds.
    package static func highestValue(at index: Int) -> UInt64 {
        guard index >= subBuckets else { return UInt64(index) }
        let shift = (index - subBuckets) / subBuckets
        let sub = UInt64((index - subBuckets) % subBuckets)
        let low = (UInt64(subBuckets) | sub) << UInt64(shift)
        return low &+ ((1 << UInt64(shift)) &- 1)
    }

    package init() {}

    /// A copy of `bucketCount` raw counts (fewer are padded with zeros);
    /// empty when they are all zero.
    package init(buckets: UnsafeBufferPointer<UInt64>) {
        var total: UInt64 = 0
        for count in buckets.prefix(Self.bucketCount) { total &+= count }
        guard total > 0 else { return }
        counts = Array(buckets.prefix(Self.bucketCount))
        if counts.count < Self.bucketCount { counts += repeatElement(0, count: Self.bucketCount - counts.count) }
        totalCount = total
    }

    package mutating func record(_ value: UInt64) {
        if counts.isEmpty { counts = Array(repeating: 0, count: Self.bucketCount) }
        counts[Self.index(of: value)] &+= 1
        totalCount &+= 1
    }

    /// The smallest bucket top at or below which `percentile` % of the values lie (0 when empty).
    package func valueAtPercentile(_ percentile: Double) -> UInt64 {
        guard totalCount > 0 else { return 0 }
        let wanted = max(1, UInt64((min(max(percentile, 0), 100) / 100 * Double(totalCount)).rounded(.up)))
        var seen: UInt64 = 0
        for (index, count) in counts.enumerated() where count > 0 {
            seen &+= count
            if seen >= wanted { return Self.highestValue(at: index) }
        }
        return Self.highestValue(at: counts.count - 1)
    }

    /// Values in buckets whose top lies in `range` (Prometheus `le` buckets).
    package func count(within range: ClosedRange<UInt64>) -> UInt64 {
        var total: UInt64 = 0
        for (index, count) in counts.enumerated() where count > 0 {
            let top = Self.highestValue(at: index)
            if range.contains(top) { total &+= count }
        }
        return total
    }

    package mutating func add(_ other: LatencyHistogram) {
        guard other.totalCount > 0 else { return }
        if counts.isEmpty {
            self = other
            return
        }
        for index in 0..<min(counts.count, other.counts.count) { counts[index] &+= other.counts[index] }
        totalCount &+= other.totalCount
    }
}
