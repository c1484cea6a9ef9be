import Posix
import Testing
@testable import VhostUser

@Suite struct ReaderTests {
    func message(_ r: VhostUserRequest, _ payload: VhostUserPayload = .none, flags: UInt32 = 1) -> [UInt8] {
        var m = VhostUserMessage(request: r, payload: payload)
        m.header.flags = flags
        return m.encoded()
    }

    @Test func byteByByte() throws {
        let bytes = message(.setVringAddr, .vringAddress(VringAddress(index: 0, desc: 1, used: 2, avail: 3)))
        var reader = VhostUserMessageReader()
        for (i, b) in bytes.enumerated() {
            #expect(try reader.nextMessage() == nil)
            reader.feed([b], fds: i == 0 ? [] : [])
        }
        let m = try #require(try reader.nextMessage())
        #expect(m.request == .setVringAddr)
        #expect(m.payload == .vringAddress(VringAddress(index: 0, desc: 1, used: 2, avail: 3)))
        #expect(try reader.nextMessage() == nil)
        #expect(reader.bufferedByteCount == 0)
    }

    @Test func dribbledMessageKeepsItsFds() throws {
        let bytes = message(.setVringKick, .u64(1))
        var reader = VhostUserMessageReader()
        reader.feed(Array(bytes.prefix(3)), fds: [42])
        #expect(try reader.nextMessage() == nil)
        reader.feed(Array(bytes[3..<15]))
        #expect(try reader.nextMessage() == nil)
        reader.feed(Array(bytes[15...]))
        let m = try #require(try reader.nextMessage())
        #expect(m.fds == [42])
    }

    @Test func twoMessagesInOneChunk() throws {
        let a = message(.getFeatures)
        let b = message(.setVringCall, .u64(0))
        var reader = VhostUserMessageReader()
        // Linux glues the fd-less message before the fd-carrying one into one read.
        reader.feed(a + b, fds: [7])
        let first = try #require(try reader.nextMessage())
        #expect(first.request == .getFeatures)
        #expect(first.fds.isEmpty)
        let second = try #require(try reader.nextMessage())
        #expect(second.request == .setVringCall)
        #expect(second.fds == [7])
        #expect(try reader.nextMessage() == nil)

        var one = VhostUserMessageReader()
        one.feed(a + message(.setOwner))
        #expect(try one.nextMessage()?.request == .getFeatures)
        #expect(try one.nextMessage()?.request == .setOwner)
        #expect(try one.nextMessage() == nil)
    }

    @Test func fdsGoToTheLastMessageStartingInTheChunk() throws {
        let a = message(.setFeatures, .u64(1))
        let b = message(.setMemTable, .memoryTable([MemoryRegionDescriptor(guestPhysAddr: 0, size: 1, userAddr: 0, mmapOffset: 0)]))
        let c = message(.setVringKick, .u64(0))
        var reader = VhostUserMessageReader()
        // Chunk 1: a and the first 20 bytes of b, with b's fd; chunk 2: rest of b and c's header start, with c's fd.
        let stream = a + b + c
        let cut1 = a.count + 20, cut2 = a.count + b.count + 5
        reader.feed(Array(stream[..<cut1]), fds: [30])
        reader.feed(Array(stream[cut1..<cut2]), fds: [31])
        reader.feed(Array(stream[cut2...]))
        let ma = try #require(try reader.nextMessage())
        #expect(ma.fds.isEmpty)
        let mb = try #require(try reader.nextMessage())
        #expect(mb.fds == [30])
        let mc = try #require(try reader.nextMessage())
        #expect(mc.fds == [31])
    }

    @Test func oversizedBodyFailsTheStream() throws {
        var reader = VhostUserMessageReader()
        let h = VhostUserHeader(request: .setMemTable, size: UInt32(VhostUserMessageReader.maxPayloadSize + 1))
        reader.feed(h.bytes, fds: [11])
        let expected = VhostUserError.payloadTooLarge(request: .setMemTable, size: 4097, limit: 4096)
        #expect(throws: expected) { try reader.nextMessage() }
        #expect(throws: expected) { try reader.nextMessage() }
        reader.feed([1, 2, 3], fds: [12])
        #expect(reader.takeAllFDs().sorted() == [11, 12])
    }

    @Test func hugeSizeFieldNeverTraps() {
        var reader = VhostUserMessageReader()
        reader.feed(VhostUserHeader(request: VhostUserRequest(.max), flags: 1, size: .max).bytes)
        #expect(throws: VhostUserError.self) { try reader.nextMessage() }
    }

    @Test func badVersion() {
        var reader = VhostUserMessageReader()
        reader.feed(message(.getFeatures, flags: 2))
        #expect(throws: VhostUserError.badVersion(flags: 2)) { try reader.nextMessage() }
    }

    @Test func decodeErrorKeepsFramingAndRejectsFds() throws {
        var reader = VhostUserMessageReader()
        // GET_FEATURES with an fd: wrong fd count; the next message still decodes.
        reader.feed(message(.getFeatures), fds: [20, 21])
        reader.feed(message(VhostUserRequest(99)))
        reader.feed(message(.setOwner))
        #expect(throws: VhostUserError.wrongFDCount(request: .getFeatures, got: 2, expected: 0)) { try reader.nextMessage() }
        #expect(reader.takeRejectedFDs() == [20, 21])
        #expect(throws: VhostUserError.unknownRequest(99)) { try reader.nextMessage() }
        #expect(try reader.nextMessage()?.request == .setOwner)
        #expect(reader.takeAllFDs().isEmpty)
    }

    @Test func tooManyPendingFds() {
        var reader = VhostUserMessageReader()
        for i in 0..<9 { reader.feed([1], fds: (0..<8).map { FileDescriptor(Int32(100 + i * 8 + $0)) }) }
        #expect(throws: VhostUserError.tooManyFDs(count: 72)) { try reader.nextMessage() }
        #expect(reader.takeAllFDs().count == 72)
    }
}
