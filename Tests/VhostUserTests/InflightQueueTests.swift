import Testing
import VhostUser

/// Inflight tracking's bookkeeping and recovery (vhost-user spec, "Inflight I/O
/// tracking").
@Suite struct InflightQueueTests {
    /// An 8-aligned area for `queueSize` and a fake used ring of ids.
    final class Area {
        let base: UnsafeMutableRawPointer
        let size: Int
        var usedIDs: [UInt32]
        init(queueSize: UInt16) {
            size = InflightQueue.areaSize(queueSize: queueSize)
            base = .allocate(byteCount: size, alignment: 64)
            base.initializeMemory(as: UInt8.self, repeating: 0xAB, count: size)
            usedIDs = Array(repeating: 0, count: Int(queueSize))
        }
        deinit { base.deallocate() }
    }

    @Test func areaSizeIsHeaderPlusEntriesRoundedTo64() {
        #expect(InflightQueue.areaSize(queueSize: 128) == 2112)
        #expect(InflightQueue.areaSize(queueSize: 1) == 64)
        #expect(InflightQueue.areaSize(queueSize: 256) % 64 == 0)
    }

    @Test func initializeWritesTheHeader() {
        let a = Area(queueSize: 16)
        var q = InflightQueue(base: a.base, queueSize: 16)
        #expect(!q.isInitialized)
        q.initialize(usedIdx: 7)
        #expect(q.isInitialized)
        #expect(q.storedVersion == 1)
        #expect(q.descNum == 16)
        #expect(q.usedIdx == 7)
        // Another queue size does not match the area.
        #expect(!InflightQueue(base: a.base, queueSize: 32).isInitialized)
    }

    /// Pops 0...4, completes 1 and 3 (published); a restart resubmits 0, 2, 4 in pop order.
    @Test func restartResubmitsUnfinishedHeadsInPopOrder() throws {
        let a = Area(queueSize: 8)
        var q = InflightQueue(base: a.base, queueSize: 8)
        q.initialize(usedIdx: 0)
        for head: UInt16 in [4, 0, 2, 1, 3] { q.markInFlight(head) }
        q.noteUsed(1)
        q.noteUsed(3)
        a.usedIDs[0] = 1
        a.usedIDs[1] = 3
        [UInt16(1), 3].withUnsafeBufferPointer { q.published($0, usedIdx: 2) }

        var restarted = InflightQueue(base: a.base, queueSize: 8)
        #expect(restarted.isInitialized)
        let ids = a.usedIDs
        let result = restarted.recover(ringUsedIdx: 2, usedID: { ids[Int($0)] })
        let recovery = try #require(result)
        #expect(recovery.resubmit == [4, 0, 2])
        #expect(recovery.lastAvailIdx == 5)
    }

    /// A crash after `used->idx` was stored but before the batch was cleared:
    /// the used ring's ids finish the batch, nothing completes twice.
    @Test func halfRecordedBatchIsFinishedFromTheUsedRing() throws {
        let a = Area(queueSize: 8)
        var q = InflightQueue(base: a.base, queueSize: 8)
        q.initialize(usedIdx: 6)
        for head: UInt16 in [5, 6, 7] { q.markInFlight(head) }
        // Used elements for 6 and 7 were written and used->idx became 8, then the daemon died.
        a.usedIDs[6] = 6
        a.usedIDs[7] = 7
        let ids = a.usedIDs
        var restarted = InflightQueue(base: a.base, queueSize: 8)
        let result = restarted.recover(ringUsedIdx: 8, usedID: { ids[Int($0)] })
        let recovery = try #require(result)
        #expect(recovery.resubmit == [5])
        #expect(recovery.lastAvailIdx == 9)
        #expect(restarted.usedIdx == 8)
    }

    /// Index arithmetic wraps at 65536 like the ring's.
    @Test func recoveryAcrossTheIndexWrap() throws {
        let a = Area(queueSize: 4)
        var q = InflightQueue(base: a.base, queueSize: 4)
        q.initialize(usedIdx: 65535)
        q.markInFlight(2)
        q.markInFlight(3)
        a.usedIDs[3] = 3  // slot 65535 & 3
        let ids = a.usedIDs
        var restarted = InflightQueue(base: a.base, queueSize: 4)
        let result = restarted.recover(ringUsedIdx: 0, usedID: { ids[Int($0)] })
        let recovery = try #require(result)
        #expect(recovery.resubmit == [2])
        #expect(recovery.lastAvailIdx == 1)
    }

    /// A used ring more than a ring ahead of the record is another ring: refused.
    @Test func inconsistentRegionIsRefused() {
        let a = Area(queueSize: 8)
        var q = InflightQueue(base: a.base, queueSize: 8)
        q.initialize(usedIdx: 5)
        #expect(q.recover(ringUsedIdx: 0, usedID: { _ in 0 }) == nil)
        #expect(q.recover(ringUsedIdx: 14, usedID: { _ in 0 }) == nil)
    }

    /// Hostile used-ring ids out of range are ignored, never written through.
    @Test func outOfRangeUsedIDsAreIgnored() throws {
        let a = Area(queueSize: 8)
        var q = InflightQueue(base: a.base, queueSize: 8)
        q.initialize(usedIdx: 0)
        q.markInFlight(1)
        var restarted = InflightQueue(base: a.base, queueSize: 8)
        let result = restarted.recover(ringUsedIdx: 3, usedID: { _ in 0xFFFF_FFFF })
        let recovery = try #require(result)
        #expect(recovery.resubmit == [1])
    }
}
