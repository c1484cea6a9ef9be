import Testing
import VhostUser
import Virtio

/// Inflight tracking of packed rings (vhost-user spec, "Inflight I/O
/// tracking", packed layout): the device's bookkeeping, and restarts at
/// every point of it, checked from the driver's side: after any number of
/// crashes every buffer comes back exactly once (virtio 1.2 §2.8.6).
@Suite struct PackedInflightQueueTests {
    /// A packed ring, its driver's side, and an inflight area, in memory
    /// that outlives the "process" (the `PackedInflightQueue` and
    /// `PackedQueue` views), as QEMU's memfds outlive a killed daemon.
    final class Rig {
        let size: UInt16
        let ring: UnsafeMutableRawPointer
        let events: UnsafeMutableRawPointer
        let area: UnsafeMutableRawPointer
        // The driver (virtio 1.2 §2.8.21-23).
        var driverAvail = PackedRingPosition.start
        var driverUsed = PackedRingPosition.start
        var outstanding: [UInt16: UInt16] = [:]  // id -> slots
        var freeIDs: [UInt16]
        var returned: [UInt16] = []
        // The device.
        var queue: PackedQueue
        var tracking: PackedInflightQueue
        var inFlight: [(entry: UInt16, head: PackedChainHead)] = []

        init(size: UInt16) throws {
            self.size = size
            ring = .allocate(byteCount: 16 * Int(size), alignment: 16)
            ring.initializeMemory(as: UInt8.self, repeating: 0, count: 16 * Int(size))
            events = .allocate(byteCount: 8, alignment: 8)
            events.initializeMemory(as: UInt8.self, repeating: 0, count: 8)
            area = .allocate(byteCount: PackedInflightQueue.areaSize(queueSize: size), alignment: 64)
            area.initializeMemory(as: UInt8.self, repeating: 0x5A, count: PackedInflightQueue.areaSize(queueSize: size))
            freeIDs = Array((0..<size).reversed())
            queue = try PackedQueue(size: size, desc: ring, driverEvent: events, deviceEvent: events + 4, eventIdx: false)
            tracking = PackedInflightQueue(base: area, queueSize: size)
            tracking.initialize(used: .start)
        }

        deinit {
            ring.deallocate()
            events.deallocate()
            area.deallocate()
        }

        var freeSlots: Int { Int(size) - outstanding.values.reduce(0) { $0 + Int($1) } }

        /// The driver makes a buffer of `count` descriptors available (head flags last).
        func add(count: UInt16) {
            guard let id = freeIDs.popLast() else { return }
            let head = driverAvail
            var pos = driverAvail
            for k in 0..<count {
                let availBits = pos.wrap ? PackedDescriptor.flagAvail : PackedDescriptor.flagUsed
                let next = k + 1 < count ? PackedDescriptor.flagNext : 0
                let d = PackedDescriptor(addr: 0x1000 * UInt64(id) + UInt64(k), len: 512 + UInt32(k), id: id,
                                         flags: availBits | next)
                if k > 0 { d.store(to: ring + 16 * Int(pos.index)) }
                pos.step(size: size)
            }
            let availBits = head.wrap ? PackedDescriptor.flagAvail : PackedDescriptor.flagUsed
            PackedDescriptor(addr: 0x1000 * UInt64(id), len: 512, id: id,
                             flags: availBits | (count > 1 ? PackedDescriptor.flagNext : 0)).store(to: ring + 16 * Int(head.index))
            driverAvail = pos
            outstanding[id] = count
        }

        /// The driver takes the used elements the device made visible.
        func reap() {
            while true {
                let slot = ring + 16 * Int(driverUsed.index)
                let flags = slot.loadUnaligned(fromByteOffset: 14, as: UInt16.self)
                let avail = flags & PackedDescriptor.flagAvail != 0, used = flags & PackedDescriptor.flagUsed != 0
                guard avail == driverUsed.wrap, used == driverUsed.wrap else { return }
                let id = slot.loadUnaligned(fromByteOffset: 12, as: UInt16.self)
                guard let slots = outstanding.removeValue(forKey: id) else {
                    Issue.record("used element for id \(id), which the driver does not have outstanding")
                    return
                }
                returned.append(id)
                freeIDs.insert(id, at: 0)
                driverUsed.step(by: slots, size: size)
            }
        }

        /// The device pops and records one buffer.
        func pop() throws -> Bool {
            guard let head = try queue.popAvail() else { return false }
            let entry = try #require(tracking.record(head, ring: queue))
            #expect(tracking.buffer(at: entry).descriptors.count == Int(head.slotCount))
            inFlight.append((entry, head))
            return true
        }

        /// The device completes in-flight buffer `k`.
        func complete(_ k: Int) {
            let b = inFlight.remove(at: k)
            tracking.publish(entry: b.entry, id: b.head.id, length: 1, slotCount: b.head.slotCount, queue: &queue)
        }

        /// How far a crash got into `publish` of in-flight buffer `k`:
        /// 1 = journal written, 2 = entry cleared too, 3 = flags stored too.
        func crashDuringPublish(_ k: Int, stage: Int) {
            let b = inFlight[k]
            let at = queue.nextUsed
            var copy = queue
            _ = copy.writeUsedElement(id: b.head.id, length: 1, slotCount: b.head.slotCount)
            let next = copy.nextUsed
            var word = UInt64(next.index) | UInt64(at.index) << 16
            word |= UInt64(next.wrap ? 1 : 0) << 32 | UInt64(at.wrap ? 1 : 0) << 40 | UInt64(b.entry) << 48
            area.storeBytes(of: word, toByteOffset: 16, as: UInt64.self)
            if stage >= 2 { area.storeBytes(of: UInt8(0), toByteOffset: 32 + 32 * Int(b.entry), as: UInt8.self) }
            if stage >= 3 { copy.storeUsedFlags(at: at) }
        }

        /// kill -9 and restart: new views over the same memory; the
        /// in-flight buffers are what recovery resubmits.
        func restart() throws -> PackedInflightQueue.Recovery {
            let restarted = PackedInflightQueue(base: area, queueSize: size)
            #expect(restarted.isInitialized)
            let probe = try PackedQueue(size: size, desc: ring, driverEvent: events, deviceEvent: events + 4, eventIdx: false)
            let recovery = try restarted.recover { probe.finishUsedElement(at: $0) }
            queue = try PackedQueue(size: size, desc: ring, driverEvent: events, deviceEvent: events + 4, eventIdx: false,
                                    avail: recovery.avail, used: recovery.used)
            tracking = restarted
            inFlight = recovery.resubmit.map { entry in
                let buffer = restarted.buffer(at: entry)
                return (entry, PackedChainHead(index: 0, id: buffer.id, slotCount: UInt16(buffer.descriptors.count)))
            }
            return recovery
        }
    }

    @Test func areaSizeIsTheSpecsLayout() {
        #expect(PackedInflightQueue.areaSize(queueSize: 1) == 64)
        #expect(PackedInflightQueue.areaSize(queueSize: 128) == 4160)  // 32 + 32 * 128, rounded up to 64
        #expect(PackedInflightQueue.areaSize(queueSize: 3) == 128)
    }

    /// Three buffers popped, the middle one completed: a restart resubmits
    /// the other two in pop order from the copies of their descriptors,
    /// and resumes popping past all three.
    @Test func restartResubmitsFromTheCopies() throws {
        let rig = try Rig(size: 8)
        rig.add(count: 2)
        rig.add(count: 1)
        rig.add(count: 3)
        for _ in 0..<3 { #expect(try rig.pop()) }
        rig.complete(1)
        rig.reap()
        #expect(rig.returned == [rig.returned.first ?? 0xFFFF])
        let recovery = try rig.restart()
        #expect(recovery.resubmit.count == 2)
        #expect(!recovery.finishedElement)
        #expect(recovery.used == PackedRingPosition(index: 1, wrap: true))
        #expect(recovery.avail == PackedRingPosition(index: 6, wrap: true))
        let first = rig.tracking.buffer(at: recovery.resubmit[0])
        #expect(first.descriptors.map(\.len) == [512, 513])
        #expect(first.descriptors.map(\.addr) == [0x1000 * UInt64(first.id), 0x1000 * UInt64(first.id) + 1])
        #expect(rig.tracking.buffer(at: recovery.resubmit[1]).descriptors.count == 3)
        #expect(try !rig.pop())  // nothing new is available
    }

    /// A crash at each point of publishing an element: the restarted device
    /// finishes it (stores its flags unless they were stored), does not
    /// resubmit it, and the driver gets every buffer back exactly once.
    @Test(arguments: [1, 2, 3]) func crashWhilePublishing(stage: Int) throws {
        let rig = try Rig(size: 8)
        for count: UInt16 in [1, 2, 1] { rig.add(count: count) }
        for _ in 0..<3 { #expect(try rig.pop()) }
        let victim = rig.inFlight[2].head.id
        rig.crashDuringPublish(2, stage: stage)
        let recovery = try rig.restart()
        #expect(recovery.finishedElement == (stage < 3))
        #expect(recovery.resubmit.count == 2)
        #expect(!rig.inFlight.contains { $0.head.id == victim })
        rig.reap()
        #expect(rig.returned == [victim])
        while !rig.inFlight.isEmpty { rig.complete(0) }
        rig.reap()
        #expect(rig.outstanding.isEmpty)
        #expect(Set(rig.returned).count == 3)
        // A second restart with nothing in flight changes nothing.
        let again = try rig.restart()
        #expect(again.resubmit.isEmpty && !again.finishedElement)
        #expect(again.used == again.avail)
    }

    /// Random traffic, out-of-order completion, chains of 1-4 slots across
    /// many laps of the ring, and restarts at random points (between
    /// operations and inside publishing): no buffer is lost or returned twice.
    @Test func randomTrafficAndCrashes() throws {
        var rng = SplitMix(seed: 0x5EED)
        let rig = try Rig(size: 16)
        var crashes = 0
        for _ in 0..<20_000 {
            switch rng.next() % 10 {
            case 0...2:
                let count = UInt16(1 + rng.next() % 4)
                if rig.freeSlots >= Int(count), !rig.freeIDs.isEmpty { rig.add(count: count) }
            case 3...5:
                _ = try rig.pop()
            case 6...7:
                if !rig.inFlight.isEmpty { rig.complete(Int(rng.next() % UInt64(rig.inFlight.count))) }
            case 8:
                rig.reap()
            default:
                if rng.next() % 20 == 0 {
                    if !rig.inFlight.isEmpty, rng.next() % 2 == 0 {
                        rig.crashDuringPublish(Int(rng.next() % UInt64(rig.inFlight.count)), stage: Int(1 + rng.next() % 3))
                    }
                    _ = try rig.restart()
                    crashes += 1
                }
            }
        }
        while try rig.pop() {}
        while !rig.inFlight.isEmpty { rig.complete(0) }
        rig.reap()
        #expect(rig.outstanding.isEmpty, "\(rig.outstanding)")
        #expect(crashes > 20)
        #expect(rig.returned.count > 2000)
    }

    /// An area a front-end scribbled on is refused, and left as it was.
    @Test func inconsistentAreasAreRefused() throws {
        func refused(_ scribble: (Rig) -> Void) throws -> Bool {
            let rig = try Rig(size: 8)
            rig.add(count: 2)
            #expect(try rig.pop())
            scribble(rig)
            do {
                _ = try rig.restart()
                return false
            } catch is PackedInflightQueue.Inconsistency {
                return true
            }
        }
        let head = { (rig: Rig) in 32 + 32 * Int(rig.inFlight[0].entry) }
        #expect(try refused { rig in rig.area.storeBytes(of: UInt16(0), toByteOffset: head(rig) + 6, as: UInt16.self) })  // num 0
        #expect(try refused { rig in rig.area.storeBytes(of: UInt16(9), toByteOffset: head(rig) + 6, as: UInt16.self) })  // num > size
        #expect(try refused { rig in  // a chain that links to itself
            rig.area.storeBytes(of: rig.inFlight[0].entry, toByteOffset: head(rig) + 2, as: UInt16.self)
        })
        #expect(try refused { rig in rig.area.storeBytes(of: UInt16(8), toByteOffset: 16, as: UInt16.self) })  // used index
        #expect(try refused { rig in  // every entry claims a buffer of 2 slots
            for e in 0..<8 {
                rig.area.storeBytes(of: UInt8(1), toByteOffset: 32 + 32 * e, as: UInt8.self)
                rig.area.storeBytes(of: UInt16(2), toByteOffset: 32 + 32 * e + 6, as: UInt16.self)
                rig.area.storeBytes(of: UInt16((e + 1) % 8), toByteOffset: 32 + 32 * e + 2, as: UInt16.self)
            }
        })
        #expect(try !refused { _ in })
    }
}

/// A small deterministic generator (SplitMix64) for reproducible traffic.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
