import Posix
import Testing
@testable import VhostUser

/// Builds a body of `n` bytes.
func zeros(_ n: Int) -> [UInt8] { [UInt8](repeating: 0, count: n) }

func header(_ r: VhostUserRequest, size: Int, flags: UInt32 = 1) -> VhostUserHeader {
    VhostUserHeader(request: r, flags: flags, size: UInt32(size))
}

@Suite struct HeaderTests {
    @Test func roundTrip() throws {
        let h = VhostUserHeader(request: .setMemTable, flags: 0x9, size: 264)
        let bytes = h.bytes
        #expect(bytes == [5, 0, 0, 0, 9, 0, 0, 0, 8, 1, 0, 0])
        let parsed = try #require(VhostUserHeader(parsing: bytes))
        #expect(parsed == h)
        #expect(parsed.needsReply)
        #expect(!parsed.isReply)
        #expect(parsed.version == 1)
        #expect(VhostUserHeader(parsing: Array(bytes.prefix(11))) == nil)
    }

    @Test func requestNamesAndUnknownValues() {
        #expect(VhostUserRequest.getFeatures.name == "GET_FEATURES")
        #expect(VhostUserRequest.setSlaveReqFD.name == "SET_SLAVE_REQ_FD")
        #expect(VhostUserRequest.getStatus.name == "GET_STATUS")
        #expect(VhostUserRequest(40).isKnown)
        #expect(!VhostUserRequest(41).isKnown)
        #expect(!VhostUserRequest(0).isKnown)
        #expect(VhostUserRequest(0xffff_ffff).name == "UNKNOWN(4294967295)")
    }

    @Test func protocolFeatureNames() {
        let f: VhostUserProtocolFeatures = [.multiQueue, .replyAck, .config, .status]
        #expect(f.names == ["MQ", "REPLY_ACK", "CONFIG", "STATUS"])
        #expect(VhostUserProtocolFeatures.status.rawValue == 1 << 16)
        #expect(VhostUserProtocolFeatures(rawValue: 1 << 40).names == ["bit 40"])
    }
}

@Suite struct DecodeTests {
    /// Every request with a fixed payload size, the size, and the fds it needs.
    static let fixed: [(VhostUserRequest, Int, Int)] = [
        (.getFeatures, 0, 0), (.setFeatures, 8, 0), (.setOwner, 0, 0), (.resetOwner, 0, 0),
        (.setLogBase, 16, 1), (.setLogFD, 0, 1), (.setVringNum, 8, 0), (.setVringAddr, 40, 0),
        (.setVringBase, 8, 0), (.getVringBase, 8, 0), (.getProtocolFeatures, 0, 0),
        (.setProtocolFeatures, 8, 0), (.getQueueNum, 0, 0), (.setVringEnable, 8, 0),
        (.setSlaveReqFD, 0, 1), (.getInflightFD, 24, 0), (.setInflightFD, 24, 1),
        (.resetDevice, 0, 0), (.getMaxMemSlots, 0, 0), (.addMemReg, 40, 1), (.remMemReg, 40, 0),
        (.setStatus, 8, 0), (.getStatus, 0, 0), (.vringKick, 8, 0), (.setVringEndian, 8, 0),
    ]

    @Test(arguments: fixed.indices)
    func fixedSizeValidation(_ i: Int) throws {
        let (r, size, nfds) = Self.fixed[i]
        let fds = [FileDescriptor](repeating: 99, count: nfds)
        let ok = try VhostUserMessage.decode(header: header(r, size: size), body: zeros(size), fds: fds)
        #expect(ok.request == r)
        #expect(ok.fds == fds)
        #expect(throws: VhostUserError.wrongPayloadSize(request: r, got: size + 1, expected: size)) {
            try VhostUserMessage.decode(header: header(r, size: size + 1), body: zeros(size + 1), fds: fds)
        }
        if size > 0 {
            #expect(throws: VhostUserError.wrongPayloadSize(request: r, got: size - 1, expected: size)) {
                try VhostUserMessage.decode(header: header(r, size: size - 1), body: zeros(size - 1), fds: fds)
            }
        }
        // Too many fds is always an error (REM_MEM_REG tolerates one, see below).
        let extra: [FileDescriptor] = r == .remMemReg ? [7, 8] : [7]
        #expect(throws: VhostUserError.wrongFDCount(request: r, got: nfds + extra.count, expected: r == .remMemReg ? 1 : nfds)) {
            try VhostUserMessage.decode(header: header(r, size: size), body: zeros(size), fds: fds + extra)
        }
        if nfds > 0 {
            #expect(throws: VhostUserError.wrongFDCount(request: r, got: 0, expected: nfds)) {
                try VhostUserMessage.decode(header: header(r, size: size), body: zeros(size), fds: [])
            }
        }
    }

    @Test func remMemRegAcceptsTheFdOldQEMUSent() throws {
        let m = try VhostUserMessage.decode(header: header(.remMemReg, size: 40), body: zeros(40), fds: [5])
        #expect(m.fds == [5])
    }

    @Test func payloadValues() throws {
        let addr = VringAddress(index: 1, flags: 0, desc: 0x1000, used: 0x3000, avail: 0x2000, log: 0)
        let msgs: [VhostUserPayload] = [
            .u64(0x1234_5678_9abc_def0), .vringState(index: 3, num: 256), .vringAddress(addr),
            .inflight(mmapSize: 4096, mmapOffset: 0, numQueues: 4, queueSize: 128), .log(size: 8192, offset: 64),
        ]
        let requests: [VhostUserRequest] = [.setFeatures, .setVringNum, .setVringAddr, .getInflightFD, .setLogBase]
        for (payload, r) in zip(msgs, requests) {
            let body = payload.encoded
            let fds: [FileDescriptor] = r == .setLogBase ? [3] : []
            let m = try VhostUserMessage.decode(header: header(r, size: body.count), body: body, fds: fds)
            #expect(m.payload == payload)
        }
    }

    @Test func vringFileNOFD() throws {
        for r in [VhostUserRequest.setVringKick, .setVringCall, .setVringErr] {
            let withFD = VringFile(index: 5, noFD: false).rawValue
            let m = try VhostUserMessage.decode(header: header(r, size: 8), body: VhostUserPayload.u64(withFD).encoded, fds: [9])
            #expect(m.u64.map(VringFile.init) == VringFile(index: 5, noFD: false))
            #expect(throws: VhostUserError.wrongFDCount(request: r, got: 0, expected: 1)) {
                try VhostUserMessage.decode(header: header(r, size: 8), body: VhostUserPayload.u64(withFD).encoded, fds: [])
            }
            let noFD = VringFile(index: 5, noFD: true).rawValue
            #expect(noFD == 0x105)
            let n = try VhostUserMessage.decode(header: header(r, size: 8), body: VhostUserPayload.u64(noFD).encoded, fds: [])
            #expect(n.u64.map(VringFile.init)?.noFD == true)
            #expect(throws: VhostUserError.wrongFDCount(request: r, got: 1, expected: 0)) {
                try VhostUserMessage.decode(header: header(r, size: 8), body: VhostUserPayload.u64(noFD).encoded, fds: [9])
            }
        }
    }

    @Test func memoryTable() throws {
        let regions = (0..<3).map {
            MemoryRegionDescriptor(guestPhysAddr: UInt64($0) << 20, size: 1 << 20, userAddr: 0x7f00_0000_0000 + (UInt64($0) << 20), mmapOffset: UInt64($0) * 4096)
        }
        let body = VhostUserPayload.memoryTable(regions).encoded
        #expect(body.count == 8 + 3 * 32)
        let m = try VhostUserMessage.decode(header: header(.setMemTable, size: body.count), body: body, fds: [3, 4, 5])
        #expect(m.payload == .memoryTable(regions))
        // Region count must equal fd count.
        #expect(throws: VhostUserError.wrongFDCount(request: .setMemTable, got: 2, expected: 3)) {
            try VhostUserMessage.decode(header: header(.setMemTable, size: body.count), body: body, fds: [3, 4])
        }
        // Size must match nregions exactly.
        #expect(throws: VhostUserError.wrongPayloadSize(request: .setMemTable, got: body.count + 32, expected: body.count)) {
            try VhostUserMessage.decode(header: header(.setMemTable, size: body.count + 32), body: body + zeros(32), fds: [3, 4, 5])
        }
        #expect(throws: VhostUserError.wrongPayloadSize(request: .setMemTable, got: 4, expected: 8)) {
            try VhostUserMessage.decode(header: header(.setMemTable, size: 4), body: zeros(4), fds: [])
        }
        // More than 8 regions.
        var nine = VhostUserPayload.memoryTable([]).encoded
        nine[0] = 9
        #expect(throws: VhostUserError.tooManyRegions(count: 9, limit: 8)) {
            try VhostUserMessage.decode(header: header(.setMemTable, size: 8 + 9 * 32), body: nine + zeros(9 * 32), fds: [])
        }
        // An empty table is well-formed.
        let empty = try VhostUserMessage.decode(header: header(.setMemTable, size: 8), body: zeros(8), fds: [])
        #expect(empty.payload == .memoryTable([]))
    }

    @Test func singleRegion() throws {
        let r = MemoryRegionDescriptor(guestPhysAddr: 0x10_0000, size: 0x20_0000, userAddr: 0x7000_0000, mmapOffset: 0x1000)
        let body = VhostUserPayload.singleRegion(r).encoded
        #expect(body.count == 40)
        let m = try VhostUserMessage.decode(header: header(.addMemReg, size: 40), body: body, fds: [4])
        #expect(m.payload == .singleRegion(r))
    }

    @Test func config() throws {
        let payload = VhostUserPayload.config(offset: 0, size: 57, flags: 0, payload: zeros(57))
        let body = payload.encoded
        let m = try VhostUserMessage.decode(header: header(.getConfig, size: body.count), body: body, fds: [])
        #expect(m.payload == payload)
        // size field disagrees with the bytes present.
        #expect(throws: VhostUserError.wrongPayloadSize(request: .setConfig, got: body.count - 1, expected: body.count)) {
            try VhostUserMessage.decode(header: header(.setConfig, size: body.count - 1), body: Array(body.dropLast()), fds: [])
        }
        #expect(throws: VhostUserError.wrongPayloadSize(request: .getConfig, got: 11, expected: 12)) {
            try VhostUserMessage.decode(header: header(.getConfig, size: 11), body: zeros(11), fds: [])
        }
        let big = VhostUserPayload.config(offset: 0, size: 257, flags: 0, payload: zeros(257)).encoded
        #expect(throws: VhostUserError.configTooLarge(size: 257)) {
            try VhostUserMessage.decode(header: header(.getConfig, size: big.count), body: big, fds: [])
        }
        let max = VhostUserPayload.config(offset: 0, size: 256, flags: 0, payload: zeros(256)).encoded
        _ = try VhostUserMessage.decode(header: header(.setConfig, size: max.count), body: max, fds: [])
    }

    @Test func unknownRequest() {
        for n: UInt32 in [0, 41, 1000, .max] {
            #expect(throws: VhostUserError.unknownRequest(n)) {
                try VhostUserMessage.decode(header: header(VhostUserRequest(n), size: 0), body: [], fds: [])
            }
        }
    }

    @Test func frontEndEncodingSetsSizeAndNeedReply() throws {
        let m = VhostUserMessage(request: .setMemTable, needsReply: true, payload: .memoryTable([]))
        let bytes = m.encoded()
        let h = try #require(VhostUserHeader(parsing: bytes))
        #expect(h.flags == 0x9)
        #expect(h.size == 8)
        #expect(bytes.count == 20)
    }
}

@Suite struct ReplyTests {
    @Test func flagsAreExactlyVersionAndReply() throws {
        let replies = [
            VhostUserReply.u64(.getFeatures, 1 << 32),
            VhostUserReply.ack(.setMemTable, success: false),
            VhostUserReply.vringState(.getVringBase, index: 2, num: 77),
            VhostUserReply.config(offset: 0, size: 57, flags: 0, bytes: zeros(60)),
            VhostUserReply.inflight(mmapSize: 8192, mmapOffset: 0, numQueues: 2, queueSize: 128),
        ]
        for r in replies {
            let h = try #require(VhostUserHeader(parsing: r))
            #expect(h.flags == 0x5)
            #expect(Int(h.size) == r.count - 12)
        }
        let ack = try #require(VhostUserHeader(parsing: replies[1]))
        #expect(ack.request == .setMemTable)
        #expect(Array(replies[1].suffix(8)) == [1, 0, 0, 0, 0, 0, 0, 0])
        #expect(Array(replies[2].suffix(8)) == [2, 0, 0, 0, 77, 0, 0, 0])
    }

    @Test func configReplyHasExactlyTheRequestedSize() throws {
        let short = VhostUserReply.config(offset: 0, size: 57, flags: 0, bytes: [1, 2, 3])
        #expect(short.count == 12 + 12 + 57)
        #expect(Array(short[24..<27]) == [1, 2, 3])
        #expect(short[27] == 0)
        let cut = VhostUserReply.config(offset: 0, size: 8, flags: 0, bytes: zeros(96))
        let h = try #require(VhostUserHeader(parsing: cut))
        #expect(h.size == 20)
        #expect(Array(cut[16..<20]) == [8, 0, 0, 0])
    }
}
