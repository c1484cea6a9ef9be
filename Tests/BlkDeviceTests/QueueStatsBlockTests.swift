import Testing
import Virtio
@testable import BlkDevice

/// The raw per-queue counters: what one request adds, the reset modes, and
/// the snapshot's values against a plain reference model.
@Suite struct QueueStatsBlockTests {
    /// Begins and completes one request on `slot`.
    private func run(_ block: borrowing QueueStatsBlock, slot: UInt32 = 0, type: BlkRequestType, bytes: UInt64,
                     start: UInt64, latency: UInt64, status: BlkStatus = .ok) {
        block.begin(slot, type, bytes: bytes, at: start)
        block.complete(slot, status, at: start &+ latency)
    }

    @Test func aSuccessfulReadCountsBytesLatencyAndItsHistogram() {
        let block = QueueStatsBlock(slotCount: 128)
        run(block, slot: 3, type: .in, bytes: 4096, start: 1_000, latency: 250)
        run(block, slot: 4, type: .in, bytes: 8192, start: 2_000, latency: 50)
        run(block, slot: 3, type: .in, bytes: 512, start: 3_000, latency: 900)
        let s = block.snapshot()
        #expect(s.requests == 3)
        #expect(s.io.read == OpStats(ops: 3, bytes: 4096 + 8192 + 512, latencySum: 1200, latencyMin: 50, latencyMax: 900))
        #expect(s.io.write == OpStats())
        #expect(s.io.failed == 0 && s.io.unsupported == 0)
        var reference = LatencyHistogram()
        for v: UInt64 in [250, 50, 900] { reference.record(v) }
        #expect(s.io.histograms.read == reference)
        #expect(s.io.histograms.write.counts.isEmpty)
    }

    @Test func everyClassHasItsOwnRowAndFlushMovesNoBytes() {
        let block = QueueStatsBlock(slotCount: 8)
        run(block, type: .out, bytes: 4096, start: 0, latency: 10)
        run(block, type: .flush, bytes: 77, start: 0, latency: 20)
        block.begin(1, .discard, bytes: 16, at: 0)
        block.setBytes(1, 1 << 20)
        block.complete(1, .ok, at: 30)
        block.begin(2, .writeZeroes, bytes: 16, at: 5)
        block.setBytes(2, 4096)
        block.complete(2, .ok, at: 45)
        // GET_ID, an unknown type and a huge one: requests, never I/O.
        run(block, type: .getID, bytes: 20, start: 0, latency: 1)
        run(block, type: BlkRequestType(rawValue: 15), bytes: 20, start: 0, latency: 1)
        run(block, type: BlkRequestType(rawValue: .max), bytes: 20, start: 0, latency: 1)
        let s = block.snapshot()
        #expect(s.requests == 7)
        #expect(s.io.write == OpStats(ops: 1, bytes: 4096, latencySum: 10, latencyMin: 10, latencyMax: 10))
        #expect(s.io.flush == OpStats(ops: 1, bytes: 0, latencySum: 20, latencyMin: 20, latencyMax: 20))
        #expect(s.io.unmap == OpStats(ops: 1, bytes: 1 << 20, latencySum: 30, latencyMin: 30, latencyMax: 30))
        #expect(s.io.writeZeroes == OpStats(ops: 1, bytes: 4096, latencySum: 40, latencyMin: 40, latencyMax: 40))
        #expect(s.io.read == OpStats())
        for op in IOStatOp.counted {
            #expect(s.io.histograms[op]?.totalCount == (op == .read ? 0 : 1), "\(op)")
        }
    }

    @Test func failuresCountAsErrorsNotIO() {
        let block = QueueStatsBlock(slotCount: 4)
        run(block, type: .in, bytes: 4096, start: 0, latency: 5, status: .ioErr)
        run(block, type: .out, bytes: 4096, start: 0, latency: 5, status: .unsupported)
        run(block, type: .out, bytes: 4096, start: 0, latency: 5, status: BlkStatus(rawValue: 7))
        // A malformed chain never begins: it completes as a failure.
        block.complete(2, .ioErr, at: 9)
        let s = block.snapshot()
        #expect(s.requests == 4)
        #expect(s.io.failed == 3 && s.io.unsupported == 1)
        #expect(s.io.read.ops == 0 && s.io.write.ops == 0)
    }

    @Test func extremesMatchAReferenceModel() {
        let block = QueueStatsBlock(slotCount: 256)
        var generator = SystemRandomNumberGenerator()
        var sum: UInt64 = 0, low = UInt64.max, high: UInt64 = 0
        var reference = LatencyHistogram()
        // Zero, repeats of the minimum and maximum, and wide values.
        var latencies: [UInt64] = [0, 0, 7, 7, 1 << 40, 1 << 40, 31, 32, 33]
        for _ in 0..<2000 { latencies.append(UInt64.random(in: 0...(1 << UInt64.random(in: 1...45, using: &generator)), using: &generator)) }
        for (i, latency) in latencies.enumerated() {
            run(block, slot: UInt32(i % 256), type: .in, bytes: 512, start: UInt64(i) * 1_000_000, latency: latency)
            sum &+= latency
            low = min(low, latency)
            high = max(high, latency)
            reference.record(latency)
        }
        let s = block.snapshot()
        #expect(s.io.read == OpStats(ops: UInt64(latencies.count), bytes: 512 * UInt64(latencies.count),
                                     latencySum: sum, latencyMin: low, latencyMax: high))
        #expect(s.io.histograms.read == reference)
    }

    /// Successes with equal latency and type are recorded as runs: runs of
    /// every length, broken by type, latency, failures, snapshots and resets,
    /// give exactly what recording each success alone gives.
    @Test func runsMatchAReferenceModel() {
        let block = QueueStatsBlock(slotCount: 64)
        var generator = SystemRandomNumberGenerator()
        let types: [BlkRequestType] = [.in, .out, .flush]
        let ops: [IOStatOp] = [.read, .write, .flush]
        var expected = IOStats()
        var failed: UInt64 = 0
        for step in 0..<5000 {
            let t = Int.random(in: 0..<3, using: &generator)
            let choices: [UInt64] = [0, 5, 5_000, 1 << 33]
            let latency = choices[Int.random(in: 0..<choices.count, using: &generator)]
            let repeats = Int.random(in: 1...6, using: &generator)
            for r in 0..<repeats {
                let bytes = UInt64.random(in: 0...8, using: &generator) * 512
                let fails = Int.random(in: 0..<50, using: &generator) == 0
                run(block, slot: UInt32((step + r) % 64), type: types[t], bytes: bytes, start: UInt64(step) * 1000,
                    latency: latency, status: fails ? .ioErr : .ok)
                if fails { failed += 1; continue }
                var o = expected[ops[t]]
                o.ops += 1
                o.bytes += ops[t] == .flush ? 0 : bytes
                o.latencySum &+= latency
                o.latencyMin = min(o.latencyMin, latency)
                o.latencyMax = max(o.latencyMax, latency)
                expected[ops[t]] = o
                var h = expected.histograms[ops[t]] ?? LatencyHistogram()
                h.record(latency)
                expected.histograms[ops[t]] = h
            }
            if step % 997 == 0 {  // a read in the middle of a run
                let s = block.snapshot()
                for op in ops {
                    #expect(s.io[op] == expected[op], "\(op) at step \(step)")
                    #expect(s.io.histograms[op] == expected.histograms[op], "\(op) histogram at step \(step)")
                }
                #expect(s.io.failed == failed)
            }
            if step == 2500 {  // maxmin mid-run: only the extremes restart
                block.reset(.maxmin)
                for op in ops { expected[op].resetMinMax() }
            }
        }
        let s = block.snapshot()
        for op in ops {
            #expect(s.io[op] == expected[op], "\(op)")
            #expect(s.io.histograms[op] == expected.histograms[op], "\(op) histogram")
        }
        block.reset(.ioOnly)
        let cleared = block.snapshot()
        #expect(cleared.io.read == OpStats() && cleared.io.write == OpStats() && cleared.io.flush == OpStats())
        #expect(cleared.requests == s.requests)
    }

    @Test func queueCounters() {
        let block = QueueStatsBlock(slotCount: 4)
        block.countKick()
        block.countKick()
        block.countBatch()
        block.countNotification(sent: true)
        block.countNotification(sent: false)
        block.countNotification(sent: false)
        let s = block.snapshot()
        #expect(s.kicks == 2 && s.batches == 1)
        #expect(s.interruptsSent == 1 && s.interruptsSuppressed == 2)
        #expect(s.requests == 0)
    }

    @Test func resetModes() {
        let block = QueueStatsBlock(slotCount: 4)
        func fill() {
            run(block, type: .in, bytes: 4096, start: 0, latency: 100)
            run(block, type: .in, bytes: 4096, start: 0, latency: 300)
            run(block, type: .out, bytes: 4096, start: 0, latency: 5, status: .ioErr)
            run(block, type: .out, bytes: 4096, start: 0, latency: 5, status: .unsupported)
            block.countKick()
            block.countBatch()
            block.countNotification(sent: true)
        }
        fill()

        block.reset(.maxmin)
        var s = block.snapshot()
        #expect(s.io.read == OpStats(ops: 2, bytes: 8192, latencySum: 400, latencyMin: .max, latencyMax: 0))
        run(block, type: .in, bytes: 0, start: 0, latency: 200)
        s = block.snapshot()
        #expect(s.io.read.latencyMin == 200 && s.io.read.latencyMax == 200 && s.io.read.ops == 3)

        block.reset(.error)
        s = block.snapshot()
        #expect(s.io.failed == 0 && s.io.unsupported == 0)
        #expect(s.requests == 5, "an error reset keeps the request count")
        #expect(s.io.read.ops == 3)

        block.reset(.ioOnly)
        s = block.snapshot()
        #expect(s.io.read == OpStats() && s.io.histograms.read.counts.isEmpty)
        #expect(s.requests == 5 && s.kicks == 1 && s.batches == 1 && s.interruptsSent == 1)
        fill()
        s = block.snapshot()
        #expect(s.requests == 9)
        #expect(s.io.read == OpStats(ops: 2, bytes: 8192, latencySum: 400, latencyMin: 100, latencyMax: 300))

        block.reset(.none)
        #expect(block.snapshot().requests == 9)
        block.reset(.all)
        s = block.snapshot()
        #expect(s.requests == 0 && s.kicks == 0 && s.batches == 0 && s.interruptsSent == 0 && s.interruptsSuppressed == 0)
        #expect(s.io.failed == 0 && s.io.read == OpStats() && s.io.histograms.read.counts.isEmpty)
    }

    @Test func slotsOutsideTheRingStayInsideTheBlock() {
        let block = QueueStatsBlock(slotCount: 3)  // stamps for 4
        run(block, slot: .max, type: .in, bytes: 1, start: 10, latency: 1)
        run(block, slot: 4, type: .in, bytes: 1, start: 10, latency: 2)
        block.setBytes(.max, 9)
        #expect(block.snapshot().io.read.ops == 2)
    }

    @Test func bucketIndexMatchesTheLogLinearDefinition() {
        func definition(_ value: UInt64) -> Int {
            guard value >= 32 else { return Int(value) }
            let shift = (63 - value.leadingZeroBitCount) - 5
            return 32 + shift * 32 + Int((value >> UInt64(shift)) & 31)
        }
        var values: [UInt64] = [0, 1, 31, 32, 33, 63, 64, 65, .max, .max - 1, 1 << 63]
        for bit in 0..<64 { values += [1 << UInt64(bit), (1 << UInt64(bit)) &- 1, (1 << UInt64(bit)) &+ 1] }
        for _ in 0..<1000 { values.append(UInt64.random(in: 0 ... .max) >> UInt64.random(in: 0...63)) }
        for value in values { #expect(LatencyHistogram.index(of: value) == definition(value), "\(value)") }
    }
}
