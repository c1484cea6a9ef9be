import BlockIO
import Dispatch
import Glibc
import Logging
import Posix
import Reactor
import Synchronization
import Testing
import Virtio
@testable import BlkDevice

/// A `VirtqueueServer` serving a packed ring (virtio 1.2 §2.8) on a running
/// reactor, with a RAM backend: the driver here writes descriptors as a
/// virtio driver does (§2.8.21), kicks the eventfd and reads used elements
/// back. Checks verified data, out-of-order-safe buffer IDs, ring wrap on a
/// size that is not a power of two, the GET_VRING_BASE answer, and that a
/// hostile ring stops the queue through `onRingBroken`.
@Suite struct PackedServerTests {
    static let descGPA: UInt64 = 0x1000, driverEventGPA: UInt64 = 0x2000, deviceEventGPA: UInt64 = 0x3000
    static let buffersGPA: UInt64 = 0x10000

    final class Rig: @unchecked Sendable {
        let size: UInt16
        let reactor: Reactor
        let server: VirtqueueServer
        let ram: UnsafeMutableRawPointer
        let kick: EventFD
        let call: EventFD
        let broken = Mutex<[String]>([])
        var avail = PackedRingPosition.start
        var used = PackedRingPosition.start
        var slotsOf: [UInt16: UInt16] = [:]

        init(size: UInt16, eventIdx: Bool = false) throws {
            self.size = size
            ram = .allocate(byteCount: 0x80000, alignment: 4096)
            memset(ram, 0, 0x80000)
            let memory = try GuestMemory(regions: [
                GuestMemoryRegion(guestPhysAddr: 0, size: 0x80000, userAddr: 0x7f00_0000_0000, host: ram),
            ])
            let queue = try PackedQueue(
                size: size, desc: ram + Int(PackedServerTests.descGPA), driverEvent: ram + Int(PackedServerTests.driverEventGPA),
                deviceEvent: ram + Int(PackedServerTests.deviceEventGPA), eventIdx: eventIdx)
            kick = try EventFD()
            call = try EventFD()
            let logger = Logger(label: "packed-server-test")
            reactor = try Reactor(index: 0, cpu: 0, useURing: URingEngine.probe() == nil, logger: logger)
            try reactor.start()
            let backend = DeviceBackend(
                storage: .memory(try MemoryBacking(sizeBytes: 1 << 20)), capacitySectors: 2048,
                readOnly: false, blockSize: 512, serial: [])
            server = VirtqueueServer(
                queueIndex: 0, ring: .packed(PackedRing(queue)), memory: memory, kickFD: kick.fd, callFD: call.fd,
                backend: backend, reactor: reactor, logger: logger)
            let server = self.server
            server.onRingBroken = { [weak self] error in self?.broken.withLock { $0.append("\(error)") } }
            reactor.postAndWait { server.start() }
        }

        /// Stops the queue and returns its GET_VRING_BASE answer.
        func stop() -> UInt32 {
            let stopped = DispatchSemaphore(value: 0)
            let base = BaseBox()
            let server = self.server
            reactor.post { server.stop { b in base.value = b; stopped.signal() } }
            stopped.wait()
            return base.value  // written before the signal
        }

        func close() {
            reactor.stop()
            kick.close()
            call.close()
            ram.deallocate()
        }

        func flagsPointer(_ slot: UInt16) -> UnsafeMutablePointer<Atomic<UInt16>> {
            (ram + Int(PackedServerTests.descGPA) + 16 * Int(slot) + 14).assumingMemoryBound(to: Atomic<UInt16>.self)
        }

        func step(_ p: inout PackedRingPosition) {
            p.index += 1
            if p.index == size { p.index = 0; p.wrap.toggle() }
        }

        /// Makes a buffer available (§2.8.21): descriptors in consecutive
        /// slots, the head's flags stored last with release.
        func add(_ descs: [(gpa: UInt64, len: UInt32, write: Bool)], id: UInt16) {
            var pos = avail
            var headFlags: UInt16 = 0
            for (k, d) in descs.enumerated() {
                let wrapBits = pos.wrap ? PackedDescriptor.flagAvail : PackedDescriptor.flagUsed
                let flags = (d.write ? PackedDescriptor.flagWrite : 0)
                    | (k < descs.count - 1 ? PackedDescriptor.flagNext : 0) | wrapBits
                let at = ram + Int(PackedServerTests.descGPA) + 16 * Int(pos.index)
                at.storeBytes(of: d.gpa.littleEndian, toByteOffset: 0, as: UInt64.self)
                at.storeBytes(of: d.len.littleEndian, toByteOffset: 8, as: UInt32.self)
                at.storeBytes(of: id.littleEndian, toByteOffset: 12, as: UInt16.self)
                if k == 0 {
                    headFlags = flags
                } else {
                    flagsPointer(pos.index).pointee.store(flags.littleEndian, ordering: .relaxed)
                }
                step(&pos)
            }
            flagsPointer(avail.index).pointee.store(headFlags.littleEndian, ordering: .releasing)
            slotsOf[id] = UInt16(descs.count)
            avail = pos
        }

        /// The next used element, waiting up to 5 s for it.
        func takeUsed() -> (id: UInt16, len: UInt32)? {
            for _ in 0..<5000 {
                let flags = UInt16(littleEndian: flagsPointer(used.index).pointee.load(ordering: .acquiring))
                let a = flags & PackedDescriptor.flagAvail != 0, u = flags & PackedDescriptor.flagUsed != 0
                if a == used.wrap, u == used.wrap {
                    let at = ram + Int(PackedServerTests.descGPA) + 16 * Int(used.index)
                    let id = UInt16(littleEndian: at.load(fromByteOffset: 12, as: UInt16.self))
                    let len = UInt32(littleEndian: at.load(fromByteOffset: 8, as: UInt32.self))
                    for _ in 0..<(slotsOf[id] ?? 1) { step(&used) }
                    slotsOf[id] = nil
                    return (id, len)
                }
                usleep(1000)
            }
            return nil
        }

        func header(_ gpa: UInt64, type: UInt32, sector: UInt64) {
            (ram + Int(gpa)).storeBytes(of: type.littleEndian, toByteOffset: 0, as: UInt32.self)
            (ram + Int(gpa)).storeBytes(of: UInt32(0), toByteOffset: 4, as: UInt32.self)
            (ram + Int(gpa)).storeBytes(of: sector.littleEndian, toByteOffset: 8, as: UInt64.self)
        }

        func byte(_ gpa: UInt64) -> UInt8 { (ram + Int(gpa)).load(as: UInt8.self) }
    }

    /// The base `stop` reports, handed over through a semaphore.
    final class BaseBox: @unchecked Sendable { var value: UInt32 = 0 }

    /// Per request `r`: header at buffers + r*0x2000, status at +0x10, data (512 bytes) at +0x1000.
    static func layout(_ r: Int) -> (header: UInt64, status: UInt64, data: UInt64) {
        let base = buffersGPA + UInt64(r) * 0x2000
        return (base, base + 0x10, base + 0x1000)
    }

    /// Writes then reads back sectors in batches of 3-slot chains on a ring
    /// of 7 slots, so the positions wrap many times mid-chain.
    @Test func verifiedWritesAndReadsWrapTheRing() throws {
        let rig = try Rig(size: 7)
        defer { rig.close() }
        var nextID: UInt16 = 0
        for round in 0..<20 {
            // Two writes in flight at once (6 of 7 slots), then two reads.
            for (kind, isRead) in [(UInt32(1), false), (UInt32(0), true)] {
                var ids: [UInt16: Int] = [:]
                for r in 0..<2 {
                    let l = Self.layout(r)
                    rig.header(l.header, type: kind, sector: UInt64(round * 2 + r))
                    if !isRead { memset(rig.ram + Int(l.data), Int32((round * 2 + r) & 0xff), 512) }
                    else { memset(rig.ram + Int(l.data), 0xee, 512) }
                    (rig.ram + Int(l.status)).storeBytes(of: UInt8(0xff), as: UInt8.self)
                    let id = nextID % 5 + 10  // IDs are the driver's to choose (§2.8.6)
                    nextID &+= 1
                    ids[id] = r
                    rig.add([(l.header, 16, false), (l.data, 512, isRead), (l.status, 1, true)], id: id)
                }
                rig.kick.signal()
                for _ in 0..<2 {
                    let element = try #require(rig.takeUsed(), "no used element in round \(round)")
                    let removed = ids.removeValue(forKey: element.id)
                    let r = try #require(removed, "unknown buffer id \(element.id)")
                    let l = Self.layout(r)
                    #expect(rig.byte(l.status) == 0, "status of round \(round) request \(r)")
                    #expect(element.len == (isRead ? 513 : 1))
                    if isRead {
                        let expected = UInt8((round * 2 + r) & 0xff)
                        let data = UnsafeRawBufferPointer(start: rig.ram + Int(l.data), count: 512)
                        #expect(data.allSatisfy { $0 == expected }, "read back round \(round) request \(r)")
                    }
                }
            }
        }
        let base = PackedRingBase.decode(rig.stop())
        // 20 rounds x 4 requests x 3 slots = 240 slots: 240 % 7 = 2, 34 laps (even: wrap 1).
        #expect(base.avail == PackedRingPosition(index: 2, wrap: true))
        #expect(base.used == base.avail, "nothing in flight after a stop")
        #expect(rig.broken.withLock { $0.isEmpty })
    }

    /// A chain whose every slot has NEXT cannot end: the ring is broken, the
    /// queue stops and says why; nothing is completed.
    @Test func aChainLongerThanTheRingBreaksIt() throws {
        let rig = try Rig(size: 4)
        defer { rig.close() }
        let l = Self.layout(0)
        rig.add([(l.header, 16, false), (l.data, 512, false), (l.status, 1, true), (l.status, 1, true)], id: 1)
        // Set NEXT on the last slot too.
        let last = rig.flagsPointer(3)
        last.pointee.store(last.pointee.load(ordering: .relaxed) | PackedDescriptor.flagNext, ordering: .relaxed)
        rig.kick.signal()
        var reasons: [String] = []
        for _ in 0..<500 where reasons.isEmpty {
            usleep(10_000)
            reasons = rig.broken.withLock { $0 }
        }
        #expect(reasons.count == 1)
        #expect(reasons.first?.contains("chain") == true, "\(reasons)")
        _ = rig.stop()
    }
}
