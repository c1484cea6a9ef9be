import Testing
@testable import BlkDevice

/// The stats' latency histogram: bucket layout, percentiles, merging.
@Suite struct LatencyHistogramTests {
    @Test func everyValueLandsInABucketThatHoldsIt() {
        var previousTop: UInt64 = 0
        for index in 0..<LatencyHistogram.bucketCount {
            let top = LatencyHistogram.highestValue(at: index)
            #expect(index == 0 || top > previousTop, "bucket \(index)")
            #expect(LatencyHistogram.index(of: top) == index)
            previousTop = top
        }
        #expect(LatencyHistogram.highestValue(at: LatencyHistogram.bucketCount - 1) == UInt64.max)
        for value: UInt64 in [0, 1, 31, 32, 33, 63, 64, 1000, 123_456_789, 1 << 40, UInt64.max] {
            let index = LatencyHistogram.index(of: value)
            #expect(index >= 0 && index < LatencyHistogram.bucketCount)
            #expect(LatencyHistogram.highestValue(at: index) >= value)
            // Within 1/32 of the value: about 3 %.
            #expect(Double(LatencyHistogram.highestValue(at: index) - value) <= Double(value) / 32 + 1)
        }
    }

    @Test func percentilesOfAKnownDistribution() {
        var h = LatencyHistogram()
        #expect(h.valueAtPercentile(50) == 0)
        #expect(h.counts.isEmpty, "nothing allocated before the first record")
        for v in 1...1000 { h.record(UInt64(v) * 1000) }  // 1 µs ... 1 ms
        #expect(h.totalCount == 1000)
        let p50 = h.valueAtPercentile(50), p99 = h.valueAtPercentile(99), p100 = h.valueAtPercentile(100)
        #expect(p50 >= 500_000 && p50 <= 500_000 + 500_000 / 32)
        #expect(p99 >= 990_000 && p99 <= 990_000 + 990_000 / 32)
        #expect(p100 >= 1_000_000 && p100 <= 1_000_000 + 1_000_000 / 32)
        #expect(h.count(within: 0...1_000_000_000) == 1000)
        #expect(h.count(within: 0...LatencyHistogram.highestValue(at: LatencyHistogram.index(of: 1000))) == 1)
        #expect(h.count(within: 0...999) == 0)
    }

    @Test func mergeAddsCounts() {
        var a = LatencyHistogram(), b = LatencyHistogram(), empty = LatencyHistogram()
        for _ in 0..<10 { a.record(100) }
        for _ in 0..<30 { b.record(10_000) }
        a.add(b)
        a.add(empty)
        #expect(a.totalCount == 40)
        #expect(a.valueAtPercentile(25) < 110)
        #expect(a.valueAtPercentile(26) >= 10_000)
        empty.add(a)
        #expect(empty == a)
    }
}
