import Testing
import Virtio

@Suite struct SplitQueueTests {
    @Test func layoutSizes() {
        let s = SplitQueue.layoutSizes(size: 128)
        #expect(s.desc == 2048 && s.avail == 262 && s.used == 1030)
    }

    @Test func rejectsBadSizesAndAlignment() throws {
        let g = try FakeGuest()
        let d = g.host(FakeGuest.descGPA), a = g.host(FakeGuest.availGPA), u = g.host(FakeGuest.usedGPA)
        for bad: UInt16 in [0, 3, 96, 65535] {
            #expect(throws: VirtioError.badQueueSize(bad)) {
                try SplitQueue(size: bad, desc: d, avail: a, used: u, eventIdx: false)
            }
        }
        #expect((try? SplitQueue(size: 32768, desc: d, avail: a, used: u, eventIdx: false)) != nil)
        #expect(throws: VirtioError.misalignedRing) {
            try SplitQueue(size: 8, desc: d + 8, avail: a, used: u, eventIdx: false)
        }
        #expect(throws: VirtioError.misalignedRing) {
            try SplitQueue(size: 8, desc: d, avail: a + 1, used: u, eventIdx: false)
        }
        #expect(throws: VirtioError.misalignedRing) {
            try SplitQueue(size: 8, desc: d, avail: a, used: u + 2, eventIdx: false)
        }
    }

    @Test func popsHeadsInOrder() throws {
        let g = try FakeGuest()
        var q = try g.makeQueue()
        #expect(try q.pendingCount() == 0)
        #expect(try q.popHead() == nil)
        g.pushAvail(3); g.pushAvail(5)
        #expect(try q.pendingCount() == 2)
        #expect(try q.popHead() == 3)
        #expect(try q.popHead() == 5)
        #expect(try q.popHead() == nil)
        #expect(q.lastAvailIdx == 2)
        g.setDesc(5, Descriptor(addr: 0x9000, len: 77, flags: WRITE, next: 0))
        #expect(q.descriptor(at: 5) == Descriptor(addr: 0x9000, len: 77, flags: WRITE, next: 0))
    }

    @Test func availIndexWrapsAround() throws {
        let g = try FakeGuest()
        g.availIdx = 65534
        var q = try g.makeQueue(lastAvailIdx: 65534)
        g.pushAvail(1); g.pushAvail(2); g.pushAvail(4)
        #expect(g.availIdx == 1)
        #expect(try q.pendingCount() == 3)
        #expect(try q.popHead() == 1)
        #expect(try q.popHead() == 2)
        #expect(try q.popHead() == 4)
        #expect(q.lastAvailIdx == 1)
    }

    @Test func rejectsAvailIndexJump() throws {
        let g = try FakeGuest()
        var q = try g.makeQueue(lastAvailIdx: 65530)
        g.availIdx = 65530 &+ 8
        #expect(try q.pendingCount() == 8)
        g.availIdx = 65530 &+ 9
        #expect(throws: VirtioError.availIndexOutOfRange(availIdx: 3, lastAvailIdx: 65530)) { try q.pendingCount() }
        g.availIdx = 65529  // behind: appears as 65535 ahead
        #expect(throws: VirtioError.availIndexOutOfRange(availIdx: 65529, lastAvailIdx: 65530)) { try q.pendingCount() }
    }

    @Test func rejectsHeadOutOfRange() throws {
        let g = try FakeGuest()
        var q = try g.makeQueue()
        g.pushAvail(8)
        g.pushAvail(2)
        _ = try q.pendingCount()
        #expect(throws: VirtioError.headOutOfRange(8)) { try q.popHead() }
        #expect(try q.popHead() == 2)  // the bad entry was consumed
    }

    @Test func usedRingPublishes() throws {
        let g = try FakeGuest()
        g.usedIdx = 65535
        var q = try g.makeQueue()
        #expect(q.usedIdx == 65535)
        q.addUsed(id: 3, length: 4097)
        q.addUsed(id: 6, length: 1)
        #expect(g.usedIdx == 65535)  // not yet visible
        q.publishUsed()
        #expect(g.usedIdx == 1)
        #expect(g.usedElement(7) == (3, 4097))
        #expect(g.usedElement(0) == (6, 1))
    }

    @Test func needsEventMaths() {
        // Plain cases.
        #expect(SplitQueue.needsEvent(eventIdx: 0, new: 1, old: 0))
        #expect(!SplitQueue.needsEvent(eventIdx: 1, new: 1, old: 0))
        #expect(SplitQueue.needsEvent(eventIdx: 4, new: 10, old: 2))
        #expect(!SplitQueue.needsEvent(eventIdx: 10, new: 10, old: 2))
        #expect(!SplitQueue.needsEvent(eventIdx: 1, new: 10, old: 2))  // event before old
        // Wraparound.
        #expect(SplitQueue.needsEvent(eventIdx: 65535, new: 1, old: 65535))
        #expect(SplitQueue.needsEvent(eventIdx: 0, new: 1, old: 65535))
        #expect(!SplitQueue.needsEvent(eventIdx: 1, new: 1, old: 65535))
        #expect(SplitQueue.needsEvent(eventIdx: 65534, new: 2, old: 65530))
        #expect(!SplitQueue.needsEvent(eventIdx: 65529, new: 2, old: 65530))
    }

    @Test func shouldNotifyWithEventIdx() throws {
        let g = try FakeGuest()
        var q = try g.makeQueue(eventIdx: true)
        #expect(!q.shouldNotify(oldUsedIdx: 0))  // nothing published
        q.addUsed(id: 0, length: 1); q.addUsed(id: 1, length: 1); q.publishUsed()
        g.usedEvent = 0
        #expect(q.shouldNotify(oldUsedIdx: 0))
        g.usedEvent = 1
        #expect(q.shouldNotify(oldUsedIdx: 0))
        g.usedEvent = 2  // driver wants a signal only after the 3rd entry
        #expect(!q.shouldNotify(oldUsedIdx: 0))
        g.availFlags = 1  // ignored with EVENT_IDX
        g.usedEvent = 0
        #expect(q.shouldNotify(oldUsedIdx: 0))
    }

    @Test func shouldNotifyHonoursNoInterrupt() throws {
        let g = try FakeGuest()
        var q = try g.makeQueue(eventIdx: false)
        q.addUsed(id: 0, length: 1); q.publishUsed()
        #expect(q.shouldNotify(oldUsedIdx: 0))
        g.availFlags = SplitQueue.availFlagNoInterrupt
        #expect(!q.shouldNotify(oldUsedIdx: 0))
    }

    @Test func notificationFlags() throws {
        let g = try FakeGuest()
        var q = try g.makeQueue(eventIdx: false)
        q.disableNotifications()
        #expect(g.usedFlags == SplitQueue.usedFlagNoNotify)
        q.enableNotifications()
        #expect(g.usedFlags == 0)
        #expect(!q.hasPendingAfterEnable())
        g.pushAvail(0)
        #expect(q.hasPendingAfterEnable())
    }

    @Test func notificationAvailEvent() throws {
        let g = try FakeGuest()
        var q = try g.makeQueue(eventIdx: true)
        g.pushAvail(0); g.pushAvail(1); g.pushAvail(2)
        _ = try q.pendingCount()
        _ = try q.popHead(); _ = try q.popHead()
        q.disableNotifications()
        #expect(g.usedFlags == 0)
        q.enableNotifications()
        #expect(g.availEvent == 2)
        #expect(q.hasPendingAfterEnable())  // head 2 still waiting
        _ = try q.popHead()
        q.enableNotifications()
        #expect(g.availEvent == 3)
        #expect(!q.hasPendingAfterEnable())
    }
}
