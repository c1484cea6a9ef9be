import Testing
import Virtio

@Suite struct PackedQueueTests {
    static let ES = PackedEventSuppression.self

    @Test func layoutSizesAndInit() throws {
        let s = PackedQueue.layoutSizes(size: 100)
        #expect(s.desc == 1600 && s.driverEvent == 4 && s.deviceEvent == 4)
        let g = try FakeGuest()
        let d = g.host(FakeGuest.descGPA), a = g.host(FakeGuest.availGPA), u = g.host(FakeGuest.usedGPA)
        for bad: UInt16 in [0, 32769, 65535] {
            #expect(throws: VirtioError.badQueueSize(bad)) {
                try PackedQueue(size: bad, desc: d, driverEvent: a, deviceEvent: u, eventIdx: false)
            }
        }
        // Any size up to 32768, powers of two or not (§2.8).
        for good: UInt16 in [1, 3, 100, 32768] {
            #expect((try? PackedQueue(size: good, desc: d, driverEvent: a, deviceEvent: u, eventIdx: false)) != nil)
        }
        #expect(throws: VirtioError.misalignedRing) {
            try PackedQueue(size: 8, desc: d + 8, driverEvent: a, deviceEvent: u, eventIdx: false)
        }
        #expect(throws: VirtioError.misalignedRing) {
            try PackedQueue(size: 8, desc: d, driverEvent: a + 2, deviceEvent: u, eventIdx: false)
        }
        #expect(throws: VirtioError.misalignedRing) {
            try PackedQueue(size: 8, desc: d, driverEvent: a, deviceEvent: u + 2, eventIdx: false)
        }
        #expect(throws: VirtioError.ringIndexOutOfRange(8)) {
            try PackedQueue(size: 8, desc: d, driverEvent: a, deviceEvent: u, eventIdx: false,
                            avail: PackedRingPosition(index: 8, wrap: true))
        }
        #expect(throws: VirtioError.ringIndexOutOfRange(9)) {
            try PackedQueue(size: 8, desc: d, driverEvent: a, deviceEvent: u, eventIdx: false,
                            avail: .start, used: PackedRingPosition(index: 9, wrap: false))
        }
    }

    @Test func ringPositionEncoding() {
        let p = PackedRingPosition(index: 0x1234, wrap: true)
        #expect(p.encoded == 0x9234)
        #expect(PackedRingPosition(encoded: 0x9234) == p)
        #expect(PackedRingPosition(encoded: 0x0005) == PackedRingPosition(index: 5, wrap: false))
        let base = PackedRingBase.encode(avail: PackedRingPosition(index: 3, wrap: false), used: PackedRingPosition(index: 7, wrap: true))
        #expect(base == 0x8007_0003)
        let decoded = PackedRingBase.decode(0x0002_8005)
        #expect(decoded.avail == PackedRingPosition(index: 5, wrap: true) && decoded.used == PackedRingPosition(index: 2, wrap: false))
    }

    @Test func popAndPushOneBuffer() throws {
        let g = try FakeGuest()
        let drv = FakePackedDriver(g)
        var q = try drv.makeQueue()
        #expect(try q.popAvail() == nil)
        #expect(!q.hasAvailable())
        drv.add([(0x10000, 16, 0), (0x11000, 512, WRITE), (0x12000, 1, WRITE)], id: 7)
        #expect(q.hasAvailable())
        let head = try #require(try q.popAvail())
        #expect(head == PackedChainHead(index: 0, id: 7, slotCount: 3))
        #expect(q.nextAvail == PackedRingPosition(index: 3, wrap: true))
        #expect(try q.popAvail() == nil)

        let chain = try PackedChainWalker.walk(queue: q, head: head, memory: g.memory, into: g.iovecs)
        #expect(chain == ChainBuffers(head: 7, readableCount: 1, writableCount: 2, readableBytes: 16, writableBytes: 513))
        #expect(g.iov(1).base == g.host(0x11000) && g.iov(1).len == 512)

        q.addUsed(id: head.id, length: 513, slotCount: head.slotCount)
        #expect(drv.takeUsed() == nil)  // not published yet
        q.publishUsed()
        let d = drv.desc(0)
        #expect(d.id == 7 && d.len == 513)
        #expect(d.flags == PackedDescriptor.flagAvail | PackedDescriptor.flagUsed)
        let used = try #require(drv.takeUsed())
        #expect(used.id == 7 && used.len == 513)
        #expect(drv.used == PackedRingPosition(index: 3, wrap: true))
        #expect(q.nextUsed == drv.used)
        #expect(drv.takeUsed() == nil)
    }

    /// Odd-sized ring, chains of 1-3 slots, many laps: both wrap counters flip
    /// at each end, chains cross the end, and the driver sees every completion.
    @Test func manyLapsAcrossTheRingEnd() throws {
        let g = try FakeGuest(queueSize: 5)
        let drv = FakePackedDriver(g)
        var q = try drv.makeQueue()
        var slotsPassed = 0
        var crossedEnd = 0
        for n in 0..<60 {
            let id = UInt16(n % 3 + 10)
            let segments = n % 3 + 1
            var descs: [(UInt64, UInt32, UInt16)] = [(0x10000, 16, 0)]
            for s in 1..<segments { descs.append((0x20000 + UInt64(s) * 0x1000, UInt32(s), WRITE)) }
            let headSlot = drv.add(descs, id: id)
            if Int(headSlot) + segments > 5 { crossedEnd += 1 }
            let head = try #require(try q.popAvail())
            #expect(head == PackedChainHead(index: headSlot, id: id, slotCount: UInt16(segments)))
            let chain = try PackedChainWalker.walk(queue: q, head: head, memory: g.memory, into: g.iovecs)
            #expect(chain.readableCount == 1 && chain.writableCount == segments - 1)
            #expect(g.iov(0).base == g.host(0x10000))
            for s in 1..<segments { #expect(g.iov(s).base == g.host(0x20000 + UInt64(s) * 0x1000)) }
            q.addUsed(id: id, length: UInt32(n), slotCount: head.slotCount)
            q.publishUsed()
            let used = try #require(drv.takeUsed())
            #expect(used.id == id && used.len == UInt32(n))
            slotsPassed += segments
            #expect(q.nextAvail == drv.avail && q.nextUsed == drv.used)
        }
        #expect(slotsPassed / 5 >= 20 && crossedEnd > 5)
        #expect(q.nextAvail.wrap == ((slotsPassed / 5) % 2 == 0))
        #expect(try q.popAvail() == nil)
    }

    /// Buffers complete in an order other than the one they were made available
    /// in; each used element advances by the slots of the buffer it completes.
    @Test func outOfOrderCompletion() throws {
        let g = try FakeGuest()
        let drv = FakePackedDriver(g)
        var q = try drv.makeQueue()
        drv.add([(0x10000, 16, 0), (0x12000, 1, WRITE)], id: 1)            // slots 0-1
        drv.add([(0x10000, 16, 0)], id: 2)                                  // slot 2
        drv.add([(0x10000, 16, 0), (0x11000, 8, WRITE), (0x12000, 1, WRITE)], id: 3)  // slots 3-5
        let heads = [try q.popAvail(), try q.popAvail(), try q.popAvail()].compactMap { $0 }
        #expect(heads.map(\.id) == [1, 2, 3] && heads.map(\.slotCount) == [2, 1, 3])
        #expect(try q.popAvail() == nil)

        // Complete 3, then 1, then 2.
        q.addUsed(id: 3, length: 9, slotCount: 3)
        q.publishUsed()
        #expect(q.nextUsed.index == 3)
        #expect(drv.desc(0).id == 3)
        q.addUsed(id: 1, length: 1, slotCount: 2)
        q.addUsed(id: 2, length: 0, slotCount: 1)
        q.publishUsed()
        #expect(drv.desc(3).id == 1 && drv.desc(5).id == 2)
        var seen: [UInt16] = []
        while let u = drv.takeUsed() { seen.append(u.id) }
        #expect(seen == [3, 1, 2])
        #expect(q.nextUsed == PackedRingPosition(index: 6, wrap: true) && drv.used == q.nextUsed)

        // The ring goes on: the freed slots are reused with a flipped counter at the end.
        drv.add([(0x10000, 16, 0), (0x12000, 1, WRITE), (0x12000, 1, WRITE)], id: 4)  // slots 6, 7, 0
        let h = try #require(try q.popAvail())
        #expect(h == PackedChainHead(index: 6, id: 4, slotCount: 3))
        #expect(q.nextAvail == PackedRingPosition(index: 1, wrap: false))
        q.addUsed(id: 4, length: 2, slotCount: 3)
        q.publishUsed()
        #expect(drv.desc(6).flags == PackedDescriptor.flagAvail | PackedDescriptor.flagUsed)
        #expect(drv.takeUsed()?.id == 4)
        #expect(q.nextUsed == PackedRingPosition(index: 1, wrap: false))
    }

    /// A batch becomes visible when its first element's flags are stored.
    @Test func batchPublishesFirstFlagsLast() throws {
        let g = try FakeGuest(queueSize: 4)
        let drv = FakePackedDriver(g)
        var q = try drv.makeQueue(avail: PackedRingPosition(index: 3, wrap: true))
        drv.avail = q.nextAvail; drv.used = q.nextUsed
        drv.add([(0x10000, 16, 0)], id: 0)  // slot 3, wrap 1
        drv.add([(0x10000, 16, 0)], id: 1)  // slot 0, wrap 0
        _ = try q.popAvail(); _ = try q.popAvail()
        #expect(q.nextAvail == PackedRingPosition(index: 1, wrap: false))
        q.addUsed(id: 0, length: 5, slotCount: 1)
        q.addUsed(id: 1, length: 6, slotCount: 1)
        // Second element written with the flipped counter: AVAIL = USED = 0.
        #expect(drv.desc(0).flags & (PackedDescriptor.flagAvail | PackedDescriptor.flagUsed) == 0)
        #expect(drv.takeUsed() == nil)
        q.publishUsed()
        #expect(drv.takeUsed()?.len == 5)
        #expect(drv.takeUsed()?.len == 6)
        #expect(drv.used == PackedRingPosition(index: 1, wrap: false))
    }

    /// A slot whose flags say used, or available in the other lap, is not taken.
    @Test func availabilityFollowsTheWrapCounter() throws {
        let g = try FakeGuest(queueSize: 4)
        let drv = FakePackedDriver(g)
        var q = try drv.makeQueue()
        let A = PackedDescriptor.flagAvail, U = PackedDescriptor.flagUsed
        for flags: UInt16 in [0, A | U, U] {  // never made available / used / available in lap 0
            drv.setDesc(0, PackedDescriptor(addr: 0x10000, len: 16, id: 0, flags: flags))
            #expect(try q.popAvail() == nil)
        }
        drv.setDesc(0, PackedDescriptor(addr: 0x10000, len: 16, id: 9, flags: A))
        #expect(try q.popAvail() == PackedChainHead(index: 0, id: 9, slotCount: 1))
        // In lap 0 the meaning flips.
        var q0 = try drv.makeQueue(avail: PackedRingPosition(index: 0, wrap: false))
        drv.setDesc(0, PackedDescriptor(addr: 0x10000, len: 16, id: 9, flags: A))
        #expect(try q0.popAvail() == nil)
        drv.setDesc(0, PackedDescriptor(addr: 0x10000, len: 16, id: 9, flags: U))
        #expect(try q0.popAvail()?.id == 9)
    }

    /// The buffer ID is the last descriptor's (§2.8.6).
    @Test func bufferIDFromLastDescriptor() throws {
        let g = try FakeGuest()
        let drv = FakePackedDriver(g)
        var q = try drv.makeQueue()
        drv.add([(0x10000, 16, 0), (0x12000, 1, WRITE)], id: 5)
        var first = drv.desc(0); first.id = 99; drv.setDesc(0, first)
        #expect(try q.popAvail()?.id == 5)
    }

    /// NEXT on every slot: the chain would never end.
    @Test func chainLongerThanTheRingIsRefused() throws {
        let g = try FakeGuest(queueSize: 4)
        let drv = FakePackedDriver(g)
        var q = try drv.makeQueue()
        for slot: UInt16 in 0..<4 {
            drv.setDesc(slot, PackedDescriptor(addr: 0x10000, len: 16, id: slot, flags: NEXT | PackedDescriptor.flagAvail))
        }
        #expect(throws: VirtioError.chainTooLong) { try q.popAvail() }
        #expect(q.nextAvail == .start)  // unchanged: the queue is broken
        // Exactly the ring's size is fine.
        drv.setDesc(3, PackedDescriptor(addr: 0x10000, len: 16, id: 3, flags: PackedDescriptor.flagAvail))
        #expect(try q.popAvail() == PackedChainHead(index: 0, id: 3, slotCount: 4))
        #expect(q.nextAvail == PackedRingPosition(index: 0, wrap: false))
    }

    /// A driver that makes available slots the device still holds (QEMU:
    /// "Virtqueue size exceeded"): refused until the device completes some.
    @Test func slotsStillInFlightAreNotTakenTwice() throws {
        let g = try FakeGuest(queueSize: 4)
        let drv = FakePackedDriver(g)
        var q = try drv.makeQueue()
        for id: UInt16 in 0..<4 { drv.add([(0x10000, 16, 0)], id: id) }
        for _ in 0..<4 { _ = try q.popAvail() }
        #expect(q.slotsInFlight == 4 && q.nextAvail == PackedRingPosition(index: 0, wrap: false))
        drv.add([(0x10000, 16, 0)], id: 9)  // slot 0 again, lap 0, before any completion
        #expect(throws: VirtioError.ringOverrun(inFlight: 5, size: 4)) { try q.popAvail() }
        #expect(q.nextAvail == PackedRingPosition(index: 0, wrap: false) && q.slotsInFlight == 4)
        q.addUsed(id: 2, length: 0, slotCount: 1)
        q.publishUsed()
        #expect(q.slotsInFlight == 3)
        // The used element went into slot 0; the driver fills it again, legitimately now.
        drv.avail = q.nextAvail
        drv.add([(0x10000, 16, 0)], id: 9)
        #expect(try q.popAvail() == PackedChainHead(index: 0, id: 9, slotCount: 1))
        #expect(q.slotsInFlight == 4)
    }

    /// The ring base's two positions fix the slots in flight; inconsistent ones are refused.
    @Test func ringBaseSetsSlotsInFlight() throws {
        let g = try FakeGuest(queueSize: 4)
        let drv = FakePackedDriver(g)
        func at(_ i: UInt16, _ w: Bool) -> PackedRingPosition { PackedRingPosition(index: i, wrap: w) }
        #expect(try drv.makeQueue(avail: at(3, true), used: at(1, true)).slotsInFlight == 2)
        #expect(try drv.makeQueue(avail: at(1, false), used: at(2, true)).slotsInFlight == 3)
        #expect(try drv.makeQueue(avail: at(2, false), used: at(2, true)).slotsInFlight == 4)
        #expect(throws: VirtioError.ringOverrun(inFlight: -1, size: 4)) {
            try drv.makeQueue(avail: at(1, true), used: at(2, true))
        }
        #expect(throws: VirtioError.ringOverrun(inFlight: 5, size: 4)) {
            try drv.makeQueue(avail: at(2, false), used: at(1, true))
        }
    }

    /// A driver and the device run 3000 steps on a 7-slot ring with buffers of
    /// 1-3 slots completed in a pseudo-random order: the driver gets back every
    /// buffer it gave, once, in the order the device completed them, and both
    /// sides agree on the positions and wrap counters throughout.
    @Test func randomCompletionOrderOverManyLaps() throws {
        let g = try FakeGuest(queueSize: 7)
        let drv = FakePackedDriver(g)
        var q = try drv.makeQueue()
        var seed: UInt64 = 0x9e37_79b9_7f4a_7c15
        func next(_ n: Int) -> Int {
            seed = seed &* 6364136223846793005 &+ 1442695040888963407
            return Int((seed >> 33) % UInt64(n))
        }
        var free = 7, nextID: UInt16 = 0
        var held: [PackedChainHead] = []
        var completed: [(UInt16, UInt32)] = []
        var returned = 0, laps = 0
        for _ in 0..<3000 {
            // The driver adds what fits; IDs are never reused while outstanding.
            let want = 1 + next(3)
            if want <= free, drv.slotsOf[nextID] == nil {
                drv.add((0..<want).map { k in (0x10000 + UInt64(k) * 0x100, UInt32(k + 1), k == 0 ? 0 : WRITE) }, id: nextID)
                free -= want
                nextID = (nextID + 1) % 32
            }
            // The device pops everything available and completes some, in any order.
            while let h = try q.popAvail() {
                let chain = try PackedChainWalker.walk(queue: q, head: h, memory: g.memory, into: g.iovecs)
                #expect(chain.segmentCount == Int(h.slotCount))
                held.append(h)
            }
            for _ in 0..<next(held.count + 1) {
                let h = held.remove(at: next(held.count))
                let length = UInt32(h.id) * 3 + UInt32(h.slotCount)
                let before = q.nextUsed
                q.addUsed(id: h.id, length: length, slotCount: h.slotCount)
                if q.nextUsed.wrap != before.wrap { laps += 1 }
                completed.append((h.id, length))
            }
            q.publishUsed()
            #expect(q.slotsInFlight == held.reduce(0) { $0 + Int($1.slotCount) })
            // The driver takes back what was published.
            while let u = drv.takeUsed() {
                let want = completed[returned]
                #expect(u.id == want.0 && u.len == want.1)
                returned += 1
            }
            #expect(returned == completed.count)
            #expect(q.nextAvail == drv.avail && q.nextUsed == drv.used)
            free = 7 - (drv.slotsOf.values.reduce(0) { $0 + Int($1) })
        }
        #expect(returned > 1000 && laps > 200)
    }

    // MARK: Event suppression

    @Test func needsEventMaths() {
        // size 8, device now at slot 2 of lap 0 after publishing 4 slots (6, 7, 0, 1).
        func needs(_ off: UInt16, _ wrap: Bool) -> Bool {
            PackedEventSuppression.needsEvent(
                offWrap: PackedEventSuppression.offWrap(index: off, wrap: wrap), size: 8, new: 2, wrap: false, published: 4)
        }
        #expect(needs(6, true) && needs(7, true) && needs(0, false) && needs(1, false))
        #expect(!needs(5, true) && !needs(2, false) && !needs(3, false))
        #expect(!needs(2, true))  // the previous lap's slot 2 was published before this span
        // Nothing published, or a whole ring.
        #expect(!PackedEventSuppression.needsEvent(offWrap: 0, size: 8, new: 2, wrap: false, published: 0))
        #expect(PackedEventSuppression.needsEvent(offWrap: 0x7fff, size: 8, new: 2, wrap: false, published: 8))
        // Hostile offsets only answer yes or no.
        #expect(!PackedEventSuppression.needsEvent(offWrap: 0x7fff, size: 8, new: 2, wrap: false, published: 4))
        #expect(!PackedEventSuppression.needsEvent(offWrap: 0xffff, size: 8, new: 2, wrap: false, published: 4))
        // Largest ring.
        #expect(PackedEventSuppression.needsEvent(
            offWrap: PackedEventSuppression.offWrap(index: 32767, wrap: true), size: 32768, new: 1, wrap: false, published: 2))
    }

    @Test func shouldNotifyFollowsDriverFlags() throws {
        let g = try FakeGuest()
        let drv = FakePackedDriver(g)
        var q = try drv.makeQueue(eventIdx: false)
        #expect(!notify(&q))  // nothing published
        drv.add([(0x10000, 16, 0)], id: 0)
        let h = try #require(try q.popAvail())
        q.addUsed(id: h.id, length: 0, slotCount: h.slotCount)
        #expect(!notify(&q))  // added, not published
        q.publishUsed()
        drv.driverFlags = Self.ES.flagDisable
        #expect(!notify(&q))
        #expect(!notify(&q))  // the span was consumed
        publishOne(drv, &q)
        drv.driverFlags = Self.ES.flagEnable
        #expect(notify(&q))
        publishOne(drv, &q)
        drv.driverFlags = Self.ES.flagDesc  // without RING_EVENT_IDX: treated as ENABLE
        drv.driverOffWrap = PackedEventSuppression.offWrap(index: 100, wrap: false)
        #expect(notify(&q))
        publishOne(drv, &q)
        drv.driverFlags = 3  // reserved
        #expect(notify(&q))
        publishOne(drv, &q)
        drv.driverFlags = 0x8000 | Self.ES.flagDisable  // reserved bits set: still DISABLE
        #expect(!notify(&q))
    }

    @Test func shouldNotifyWithEventIdxAcrossTheWrap() throws {
        let g = try FakeGuest(queueSize: 4)
        let drv = FakePackedDriver(g)
        var q = try drv.makeQueue(eventIdx: true)
        drv.driverFlags = Self.ES.flagDesc
        // Slots 0, 1, 2 (lap 1): an event at 3 (lap 1) is not reached yet.
        for _ in 0..<3 { publishOne(drv, &q, publish: false) }
        q.publishUsed()
        drv.driverOffWrap = PackedEventSuppression.offWrap(index: 3, wrap: true)
        #expect(!notify(&q))
        // Slots 3 (lap 1) and 0 (lap 0): the event at 3/1 is crossed now.
        publishOne(drv, &q, publish: false); publishOne(drv, &q, publish: false)
        q.publishUsed()
        #expect(q.nextUsed == PackedRingPosition(index: 1, wrap: false))
        #expect(notify(&q))
        // Slot 1 (lap 0): an event at 0/0 was already passed, 1/0 is this one,
        // 1/1 belongs to the previous lap.
        publishOne(drv, &q)
        drv.driverOffWrap = PackedEventSuppression.offWrap(index: 1, wrap: true)
        #expect(!notify(&q))
        publishOne(drv, &q)  // slot 2/0
        drv.driverOffWrap = PackedEventSuppression.offWrap(index: 2, wrap: false)
        #expect(notify(&q))
        publishOne(drv, &q)  // slot 3/0
        drv.driverOffWrap = PackedEventSuppression.offWrap(index: 2, wrap: false)
        #expect(!notify(&q))
        // DISABLE wins over DESC; ENABLE with EVENT_IDX still signals.
        publishOne(drv, &q)
        drv.driverFlags = Self.ES.flagDisable
        #expect(!notify(&q))
        publishOne(drv, &q)
        drv.driverFlags = Self.ES.flagEnable
        #expect(notify(&q))
    }

    @Test func deviceEventArea() throws {
        let g = try FakeGuest(queueSize: 4)
        let drv = FakePackedDriver(g)
        var q = try drv.makeQueue(eventIdx: false)
        q.disableNotifications()
        #expect(drv.deviceFlags == Self.ES.flagDisable)
        q.enableNotifications()
        #expect(drv.deviceFlags == Self.ES.flagEnable)
        #expect(!q.hasPendingAfterEnable())
        drv.add([(0x10000, 16, 0)], id: 0)
        #expect(q.hasPendingAfterEnable())

        var e = try drv.makeQueue(eventIdx: true, avail: PackedRingPosition(index: 3, wrap: false))
        e.enableNotifications()
        #expect(drv.deviceFlags == Self.ES.flagDesc)
        #expect(drv.deviceOffWrap == 3)
        drv.avail = e.nextAvail
        drv.add([(0x10000, 16, 0), (0x10000, 16, 0)], id: 1)  // slots 3, 0
        #expect(e.hasPendingAfterEnable())
        _ = try e.popAvail()
        e.enableNotifications()
        #expect(drv.deviceOffWrap == PackedEventSuppression.offWrap(index: 1, wrap: true))
        #expect(!e.hasPendingAfterEnable())
        e.disableNotifications()
        #expect(drv.deviceFlags == Self.ES.flagDisable)
    }

    /// `q.shouldNotify()` outside `#expect`, which cannot mutate its operands.
    private func notify(_ q: inout PackedQueue) -> Bool { q.shouldNotify() }

    /// Makes one single-slot buffer available, pops it and completes it.
    private func publishOne(_ drv: FakePackedDriver, _ q: inout PackedQueue, publish: Bool = true) {
        drv.add([(0x10000, 16, 0)], id: 0)
        guard let h = try? q.popAvail() else {
            Issue.record("no buffer")
            return
        }
        q.addUsed(id: h.id, length: 0, slotCount: h.slotCount)
        if publish { q.publishUsed() }
    }
}
