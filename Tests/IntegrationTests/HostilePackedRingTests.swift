import DaemonTestSupport
import Foundation
import Glibc
import Posix
import Testing
import VhostUser
import VhostUserFrontend
import Virtio

/// The packed-ring analogues (virtio 1.2 §2.8) of the split-ring attacks
/// above, against a controller created with `packed_ring`, while the
/// bystander on `vhost.1` does verified I/O: each case has its documented
/// outcome (the request fails, or the frontend is disconnected with the
/// reason logged), the daemon stays up, the bystander sees nothing.
/// The catalogue is in docs/ARCHITECTURE.md ("Hostile input").
extension HostileFrontendTests {
    /// Data-path abuse through a started frontend whose queue 0 is a packed
    /// ring of 10 slots (not a power of two; chains wrap at its end): each
    /// case is a hand-built buffer or ring state.
    enum PackedRingCase: String, CaseIterable, CustomTestStringConvertible {
        /// A data descriptor past guest memory, and one whose addr + len overflows: IOERR (used length 0).
        case addressOutsideMemory, addressLengthOverflow
        /// A buffer whose descriptors all have length 0: no status byte, used length 0.
        case zeroLengthChain
        /// An indirect table of 300 entries: more segments than a request holds (seg_max), used length 0.
        case oversizedChain
        /// NEXT on every slot, the head mid-ring so the walk wraps: longer than
        /// the ring, nothing can complete it: disconnect (§2.8.6).
        case chainLongerThanRing
        /// Indirect tables (§2.8.7): empty, a length not a multiple of 16,
        /// too long, overflowing, outside memory, nested: used length 0.
        case indirectEmpty, indirectBadLength, indirectTooLong, indirectAddressOverflow, indirectOutsideMemory, indirectNested
        /// INDIRECT with NEXT in the ring, and INDIRECT as the second slot of a chain: used length 0.
        case indirectWithNextInRing, indirectInChain
        /// NEXT inside an indirect table is ignored (§2.8.7), so it cannot
        /// loop; a table at an address not 16-aligned is read as well: served.
        case indirectNextInsideTable, indirectMisaligned
        /// A device-writable header: IOERR in the status byte. A read-only
        /// status after writable data: used length 0, status untouched.
        case writableHeader, readOnlyStatus
        /// Buffer IDs are the driver's (§2.8.6): one not below the queue size
        /// is served and returned as is; the used element carries the last
        /// descriptor's ID, not the head's.
        case bufferIDBeyondQueueSize, usedIDIsTheLastDescriptors
        /// A head whose AVAIL and USED bits are equal (a used slot, §2.8.1) is
        /// not available: nothing is served, no disconnect, until the driver
        /// marks it properly.
        case availEqualsUsedIsIgnored
        /// A direct chain of exactly the ring's size (10 slots, wrapping), the
        /// longest there is: served.
        case chainFillingTheWholeRing
        /// Only the head's AVAIL/USED bits make a buffer available (§2.8.6):
        /// the other slots of a chain may carry any, here the other lap's. Served.
        case tailSlotsWithOtherLapBits
        /// After a lap the driver keeps the old wrap counter's bits: not
        /// available, ignored, then served once marked for this lap.
        case staleWrapCounterIsIgnored
        var testDescription: String { rawValue }
    }

    @Test(arguments: PackedRingCase.allCases)
    func packedDataPathAbuseFailsOnlyThatRequest(_ kind: PackedRingCase) throws {
        let world = try Bystander(packed: true)
        let f = try Self.startedFrontend(world.daemon.socketDirectory + "/vhost.0", layout: .packed, queueSize: 10)
        defer { f.close(); f.memory.close() }
        let memory = f.memory
        let q = try f.driverQueue(0)
        #expect(q.packed)
        #expect(try Self.roundTrip(f))  // 6 slots: the next buffer starts at slot 6 and wraps
        let header = try memory.allocate(16, alignment: 16)
        header.write(BlkWire.header(type: BlkWire.typeIn, sector: 0))
        let data = try memory.allocate(512, alignment: 512)
        let status = try memory.allocate(1, alignment: 1)
        status.pointer.storeBytes(of: 0xff, as: UInt8.self)
        let owned = [header, data, status]
        let r: UInt16 = 0, w = PackedDescriptor.flagWrite, next = PackedDescriptor.flagNext
        let ind = PackedDescriptor.flagIndirect

        func submit(_ descs: [PackedDescriptor], extra: [GuestBuffer] = []) throws -> UsedElement {
            try q.addPackedRaw(descs, owning: owned + extra)
            q.publishAndKick(force: true)
            return try q.waitUsed(timeout: .seconds(5))
        }
        func d(_ addr: UInt64, _ len: UInt32, _ flags: UInt16, id: UInt16 = 3) -> PackedDescriptor {
            PackedDescriptor(addr: addr, len: len, id: id, flags: flags)
        }
        /// The request as a normal direct chain (header, data, status), ids `id`.
        func chain(id: UInt16 = 3) -> [PackedDescriptor] {
            [d(header.gpa, 16, r | next, id: id), d(data.gpa, 512, w | next, id: id), d(status.gpa, 1, w, id: id)]
        }
        /// One INDIRECT slot pointing at `entries` (written at `offset` in a fresh table).
        func indirect(_ entries: [PackedDescriptor], length: UInt32? = nil, addr: UInt64? = nil, offset: Int = 0) throws -> UsedElement {
            let table = try memory.allocate(max(1, entries.count) * PackedDescriptor.byteSize + 16, alignment: 16)
            for (i, e) in entries.enumerated() { e.store(to: table.pointer + offset + i * PackedDescriptor.byteSize) }
            let len = length ?? UInt32(entries.count * PackedDescriptor.byteSize)
            return try submit([d(addr ?? table.gpa + UInt64(offset), len, ind)], extra: [table])
        }

        /// Writes `head` at the driver's next slot and kicks: whether the
        /// device left it alone (a used element would rewrite its id, len and flags).
        func untouched(_ head: PackedDescriptor) -> Bool {
            let slot = q.packedAvail.index
            q.writePackedDescriptor(head, at: slot)
            q.kickFD.signal()
            usleep(100_000)
            return PackedDescriptor(loadingFrom: q.desc.pointer + PackedDescriptor.byteSize * Int(slot)) == head
                && status.pointer.load(as: UInt8.self) == 0xff
        }

        var reason = "malformed descriptor chain"
        var disconnects = false
        var served = false
        switch kind {
        case .addressOutsideMemory:
            #expect(try submit([d(header.gpa, 16, next), d(1 << 40, 512, w | next), d(status.gpa, 1, w)]).length == 0)
            reason = "not mapped"
        case .addressLengthOverflow:
            #expect(try submit([d(header.gpa, 16, next), d(UInt64.max - 100, 512, w | next), d(status.gpa, 1, w)]).length == 0)
            reason = "overflows"
        case .zeroLengthChain:
            #expect(try submit([d(header.gpa, 0, next), d(data.gpa, 0, w | next), d(status.gpa, 0, w)]).length == 0)
            #expect(status.pointer.load(as: UInt8.self) == 0xff)
            reason = "no device-writable byte for the status"
        case .oversizedChain:
            let entries = [d(header.gpa, 16, 0)] + (0..<298).map { _ in d(data.gpa, 512, w) } + [d(status.gpa, 1, w)]
            #expect(try indirect(entries).length == 0)
            reason = "chain needs more than"
        case .chainLongerThanRing:
            // Slots 0-5 hold used elements; every slot but the head (6) says NEXT.
            for slot: UInt16 in [7, 8, 9, 0, 1, 2, 3, 4, 5] {
                q.writePackedDescriptor(d(data.gpa, 512, w | next | DriverQueue.availBits(wrap: slot > 6)), at: slot)
            }
            try q.addPackedRaw([d(header.gpa, 16, next)], owning: owned)
            q.publishAndKick(force: true)
            disconnects = true
            reason = "the guest's ring is broken: descriptor chain longer than its table"
        case .indirectEmpty:
            #expect(try indirect([], length: 0, addr: header.gpa).length == 0)
            reason = "empty indirect table"
        case .indirectBadLength:
            #expect(try indirect([d(header.gpa, 16, 0)], length: 15).length == 0)
            reason = "not a multiple of 16"
        case .indirectTooLong:
            #expect(try indirect([], length: 16 * 2048, addr: header.gpa).length == 0)
            reason = "indirect table too long"
        case .indirectAddressOverflow:
            #expect(try indirect([], length: 64, addr: UInt64.max - 16).length == 0)
            reason = "overflows"
        case .indirectOutsideMemory:
            #expect(try indirect([], length: 64, addr: 1 << 40).length == 0)
            reason = "not mapped"
        case .indirectNested:
            #expect(try indirect([d(header.gpa, 16, 0), d(data.gpa, 48, ind), d(status.gpa, 1, w)]).length == 0)
            reason = "nested indirect descriptor"
        case .indirectWithNextInRing:
            let table = try memory.allocate(48, alignment: 16)
            chain().enumerated().forEach { $0.element.store(to: table.pointer + 16 * $0.offset) }
            #expect(try submit([d(table.gpa, 48, ind | next), d(status.gpa, 1, w)], extra: [table]).length == 0)
            reason = "descriptor has both INDIRECT and NEXT"
        case .indirectInChain:
            let table = try memory.allocate(32, alignment: 16)
            d(data.gpa, 512, w).store(to: table.pointer)
            d(status.gpa, 1, w).store(to: table.pointer + 16)
            #expect(try submit([d(header.gpa, 16, next), d(table.gpa, 32, ind)], extra: [table]).length == 0)
            reason = "indirect descriptor inside a multi-descriptor packed chain"
        case .indirectNextInsideTable:
            // NEXT everywhere in the table, as if the last entry led back to the first.
            let used = try indirect([d(header.gpa, 16, next), d(data.gpa, 512, w | next), d(status.gpa, 1, w | next)])
            #expect(used.length == 513)
            served = true
        case .indirectMisaligned:
            let used = try indirect([d(header.gpa, 16, 0), d(data.gpa, 512, w), d(status.gpa, 1, w)], offset: 8)
            #expect(used.length == 513)
            served = true
        case .writableHeader:
            _ = try submit([d(header.gpa, 16, w | next), d(data.gpa, 512, w | next), d(status.gpa, 1, w)])
            #expect(status.pointer.load(as: UInt8.self) == BlkWire.statusIOErr)
            reason = "malformed virtio-blk request"
        case .readOnlyStatus:
            #expect(try submit([d(header.gpa, 16, next), d(data.gpa, 512, w | next), d(status.gpa, 1, r)]).length == 0)
            #expect(status.pointer.load(as: UInt8.self) == 0xff)
            reason = "device-readable descriptor after a device-writable one"
        case .bufferIDBeyondQueueSize:
            let used = try submit(chain(id: 4000))
            #expect(used.id == 4000 && used.length == 513, "\(used)")
            served = true
        case .usedIDIsTheLastDescriptors:
            let used = try submit([d(header.gpa, 16, next, id: 5), d(data.gpa, 512, w | next, id: 6), d(status.gpa, 1, w, id: 9)])
            #expect(used.id == 9 && used.length == 513, "\(used)")
            served = true
        case .availEqualsUsedIsIgnored:
            for bits in [PackedDescriptor.flagAvail | PackedDescriptor.flagUsed, 0] {
                #expect(untouched(d(header.gpa, 16, next | bits, id: 0x7777)), "flags 0x\(String(bits, radix: 16)) made the slot available")
            }
            let used = try submit(chain())
            #expect(used.length == 513)
            served = true
        case .chainFillingTheWholeRing:
            let middle = (0..<8).map { k in d(data.gpa + UInt64(64 * k), 64, w | next) }
            let used = try submit([d(header.gpa, 16, next)] + middle + [d(status.gpa, 1, w)])
            #expect(used.length == 513, "\(used)")
            #expect(q.packedAvail == PackedRingPosition(index: 6, wrap: false))
            served = true
        case .tailSlotsWithOtherLapBits:
            let other = DriverQueue.availBits(wrap: !q.packedAvail.wrap)
            try q.addPackedRaw([
                d(header.gpa, 16, next | DriverQueue.availBits(wrap: q.packedAvail.wrap)),
                d(data.gpa, 512, w | next | other), d(status.gpa, 1, w | PackedDescriptor.flagAvail | PackedDescriptor.flagUsed),
            ], exactFlags: true, owning: owned)
            q.publishAndKick(force: true)
            #expect(try q.waitUsed(timeout: .seconds(5)).length == 513)
            served = true
        case .staleWrapCounterIsIgnored:
            #expect(try Self.roundTrip(f))  // 12 slots: the second lap, wrap counter 0, at slot 2
            #expect(q.packedAvail == PackedRingPosition(index: 2, wrap: false))
            #expect(untouched(d(header.gpa, 16, next | DriverQueue.availBits(wrap: true), id: 0x7777)),
                    "a slot marked for the previous lap was taken")
            let used = try submit(chain())
            #expect(used.length == 513)
            served = true
        }
        if disconnects {
            #expect(f.channel.waitForClose(timeout: .seconds(5)), "\(kind): the daemon kept the connection")
            try StatsTests.waitForNoSession(world.daemon, "vhost.0")
        } else {
            // The session goes on serving after the bad buffer, on both laps.
            for i in 0..<4 {
                let sample = [UInt8](repeating: UInt8(0x50 + i), count: 512)
                #expect(try f.write(sector: UInt64(3 + i), data: sample).status == BlkWire.statusOK)
                #expect(try f.read(sector: UInt64(3 + i), count: 1).data == sample)
            }
        }
        if served {
            #expect(!world.daemon.log.contains("malformed"), "\(kind) was refused:\n\(world.daemon.log.suffix(2000))")
            reason = ""
        }
        let deadline = ContinuousClock.now + .seconds(3)
        while !reason.isEmpty && !world.daemon.log.contains(reason) && ContinuousClock.now < deadline { usleep(20_000) }
        world.finish("packed \(kind)", reason: reason)
    }

    /// Control-path abuse of a packed queue's setup (SET_VRING_NUM, BASE,
    /// ADDR): each case must end in a disconnect with the reason logged,
    /// never a queue started on positions or memory outside the ring.
    enum PackedControlCase: String, CaseIterable, CustomTestStringConvertible {
        /// The descriptor ring ends past guest memory.
        case ringsOutsideMemory
        /// A descriptor ring not 16-aligned (§2.8.10).
        case misalignedDescriptorRing
        /// More than 32768 slots.
        case queueSizeTooLarge
        /// SET_VRING_BASE positions whose index (bits 0-14) is not below the size.
        case availIndexBeyondSize, usedIndexBeyondSize
        /// The used position ahead of the avail one.
        case usedAheadOfAvail
        /// A whole ring in flight at start (used a lap behind avail): the
        /// first buffer the driver adds overruns it.
        case wholeRingInFlight
        var testDescription: String { rawValue }
    }

    @Test(arguments: PackedControlCase.allCases)
    func packedSetupAbuseDisconnectsOnlyThatFrontend(_ kind: PackedControlCase) throws {
        let world = try Bystander(packed: true)
        let memory = try FrontendMemory(size: 4 << 20)
        defer { memory.close() }
        let f = try VhostUserFrontend(socketPath: world.daemon.socketDirectory + "/vhost.0", memory: memory, options: PackedRingTests.packedOptions)
        defer { f.close() }
        try f.connect()
        let features = f.deviceFeatures.intersection(PackedRingTests.packedOptions.wantedFeatures)
        #expect(features.contains(.ringPacked))
        try f.setFeatures(features)
        try f.setMemTable()
        let size: UInt16 = 128
        let q = try DriverQueue(memory: memory, index: 0, size: size, eventIdx: features.contains(.eventIdx), packed: true)
        defer { q.close() }
        let start = PackedRingBase.encode(avail: .start, used: .start)
        var num = UInt32(size), base = start
        var address = VringAddress(
            index: 0, desc: memory.userAddr(of: q.desc.pointer), used: memory.userAddr(of: q.used.pointer),
            avail: memory.userAddr(of: q.avail.pointer))
        let reason: String
        switch kind {
        case .ringsOutsideMemory:
            address.desc = memory.userAddr(of: memory.base) + UInt64(memory.size) - 64
            reason = "queue 0 rings are outside guest memory"
        case .misalignedDescriptorRing:
            address.desc += 8
            reason = "queue 0 refused: ring address misaligned"
        case .queueSizeTooLarge:
            num = 40000
            reason = "SET_VRING_NUM 40000 for packed queue 0 is not in 1...32768"
        case .availIndexBeyondSize:
            base = PackedRingBase.encode(avail: PackedRingPosition(index: 200, wrap: true), used: .start)
            reason = "queue 0 refused: packed ring index 200 out of range"
        case .usedIndexBeyondSize:
            base = PackedRingBase.encode(avail: .start, used: PackedRingPosition(index: 0x7fff, wrap: true))
            reason = "queue 0 refused: packed ring index 32767 out of range"
        case .usedAheadOfAvail:
            base = PackedRingBase.encode(avail: .start, used: PackedRingPosition(index: 5, wrap: true))
            reason = "queue 0 refused: the used position is 5 slots ahead of the avail position in a ring of 128"
        case .wholeRingInFlight:
            base = PackedRingBase.encode(avail: .start, used: PackedRingPosition(index: 0, wrap: false))
            reason = "the guest's ring is broken: 131 slots in flight in a ring of 128"
        }
        let messages = [
            Self.message(.setVringCall, .u64(0), fds: [q.callFD.fd]),
            Self.message(.setVringNum, .vringState(index: 0, num: num)),
            Self.message(.setVringBase, .vringState(index: 0, num: base)),
            Self.message(.setVringAddr, .vringAddress(address)),
            Self.message(.setVringKick, .u64(0), fds: [q.kickFD.fd]),
            Self.message(.setVringEnable, .vringState(index: 0, num: 1)),
        ]
        let sent = Self.send(messages, raw: [], fds: [], on: f.channel)
        #expect(sent == nil, "\(kind): \(sent ?? "")")
        if kind == .wholeRingInFlight {
            // The queue starts; the first buffer would put 131 slots in flight.
            let header = try memory.allocate(16, alignment: 16)
            header.write(BlkWire.header(type: BlkWire.typeIn, sector: 0))
            let data = try memory.allocate(512, alignment: 512)
            let status = try memory.allocate(1, alignment: 1)
            try q.addChain([ChainBuffer(header, writable: false), ChainBuffer(data, writable: true), ChainBuffer(status, writable: true)],
                           owning: [header, data, status])
            q.publishAndKick(force: true)
        }
        #expect(f.channel.waitForClose(timeout: .seconds(5)), "\(kind): the daemon kept the connection")
        let deadline = ContinuousClock.now + .seconds(3)
        while !world.daemon.log.contains(reason) && ContinuousClock.now < deadline { usleep(20_000) }
        world.finish("packed \(kind)", reason: reason)
        // The controller serves the next frontend.
        try StatsTests.waitForNoSession(world.daemon, "vhost.0")
        let again = try Self.startedFrontend(world.daemon.socketDirectory + "/vhost.0", layout: .packed)
        defer { again.close(); again.memory.close() }
        #expect(try Self.roundTrip(again))
    }
}
