import DaemonTestSupport
import Foundation
import Glibc
import JSONRPC
import Posix
import Testing
import VhostUser
import VhostUserFrontend
import Virtio

/// Seeded, randomized *stateful* fuzzing of the vhost-user control path
/// against the real daemon: each round sends a random sequence of (mostly
/// well-formed) messages in unusual orders on a fresh connection to `vhost.0`
/// (kicks before the memory table, GET_VRING_BASE on stopped queues,
/// SET_MEM_TABLE while queues run, RESET_OWNER mid-stream, call fds replaced
/// under I/O, inflight and dirty-log regions at odd times, pipelined messages
/// behind a drain, abrupt closes, a second connection...). The daemon may
/// disconnect at any point; what must hold after every round is checked by
/// `checkInvariants`.
///
/// Replay: a failure names its seed, round and step list. Run
/// `VHOST_BLKD_FUZZ_SEED=<seed> VHOST_BLKD_FUZZ_ROUNDS=<n> swift test --skip-build --filter SessionFuzzTests`
/// (the seed replaces the default list; rounds per seed default to 10). The
/// packed mode replays the same way with `--filter randomPackedSessions`; a
/// seed names a different step list in each mode. `VHOST_BLKD_FUZZ_VERBOSE=1`
/// also prints, per seed, how many chains the daemon refused and rings it found broken.
@Suite("Stateful vhost-user session fuzzing", .serialized)
struct SessionFuzzTests {
    /// Seeds run by default (CI); each starts its own daemon.
    static let defaultSeeds: [UInt64] = [1, 2, 3, 4, 5, 0x5eed]
    static let defaultRounds = 10

    static var seeds: [UInt64] {
        if let text = ProcessInfo.processInfo.environment["VHOST_BLKD_FUZZ_SEED"], let seed = UInt64(text) { return [seed] }
        return defaultSeeds
    }

    /// `VHOST_BLKD_FUZZ_VERBOSE=1` prints every round's steps and outcome.
    static var verbose: Bool { ProcessInfo.processInfo.environment["VHOST_BLKD_FUZZ_VERBOSE"] != nil }

    static var rounds: Int {
        if let text = ProcessInfo.processInfo.environment["VHOST_BLKD_FUZZ_ROUNDS"], let n = Int(text), n > 0 { return n }
        return defaultRounds
    }

    /// For every seed, a daemon (io_uring engine for even seeds, the thread
    /// pool for odd ones; two reactors for seeds divisible by 3) with two
    /// malloc controllers: `vhost.0` takes
    /// `rounds` fuzzed sessions. After each round: the daemon process lives,
    /// answers `spdk_get_version` within 2 s, a bystander on `vhost.1` does a
    /// verified write+read, and a fresh well-behaved frontend on `vhost.0`
    /// (connecting while the fuzzed session may still drain) starts a queue
    /// and does a verified round trip. At the end the daemon holds no more
    /// descriptors than before the first round, SIGTERM exits 0 and the log
    /// holds no fatal error.
    @Test(arguments: seeds)
    func randomSessionsLeaveTheDaemonServing(seed: UInt64) throws {
        try Self.fuzz(seed: seed, packed: false)
    }

    /// Seeds of the packed mode (CI); `VHOST_BLKD_FUZZ_SEED` replaces them too.
    static let defaultPackedSeeds: [UInt64] = [21, 22, 24]

    static var packedSeeds: [UInt64] {
        if let text = ProcessInfo.processInfo.environment["VHOST_BLKD_FUZZ_SEED"], let seed = UInt64(text) { return [seed] }
        return defaultPackedSeeds
    }

    /// The same rounds on a controller created with `packed_ring` (virtio 1.2
    /// §2.8): sessions usually negotiate VIRTIO_F_RING_PACKED (a random feature
    /// subset may drop it, and the daemon then reads the packed rings as split
    /// ones), SET_VRING_BASE sends packed positions, valid or out of range,
    /// queue sizes need not be powers of two, and `scribblePacked` writes
    /// random descriptors (any flags, addresses, lengths, buffer IDs, AVAIL/USED
    /// bits of either wrap counter) and random event suppression areas, then
    /// kicks. The same invariants hold after every round: the daemon lives,
    /// the bystander's verified I/O and a fresh packed frontend on `vhost.0` are served.
    @Test(arguments: packedSeeds)
    func randomPackedSessionsLeaveTheDaemonServing(seed: UInt64) throws {
        try Self.fuzz(seed: seed, packed: true)
    }

    static func fuzz(seed: UInt64, packed: Bool) throws {
        // Odd seeds run the thread-pool engine (kick reads through its epoll
        // set); seeds divisible by 3 two reactors (a controller's queues on both).
        let world = try FuzzWorld(
            cpumask: seed % 3 == 0 && ProcessInfo.processInfo.activeProcessorCount >= 2 ? "0x3" : "0x1",
            extraArguments: seed % 2 == 1 ? ["--engine", "thread-pool"] : [], packed: packed)
        defer { world.tearDown() }
        let baselineFDs = HostileRPCTests.fdCount(world.daemon.pid)
        var totalSteps = 0
        let mode = packed ? "packed " : ""
        for round in 0..<Self.rounds {
            var rng = SplitMix64(seed: seed &* 0x1000 &+ UInt64(round))
            let steps = FuzzStep.sequence(using: &rng, packed: packed)
            let outcome = FuzzSession.run(steps, world: world)
            totalSteps += outcome.executed
            let replay = "\(mode)seed \(seed) round \(round) (\(outcome.summary))\nsteps:\n"
                + steps.enumerated().map { "  \($0.offset): \($0.element)" }.joined(separator: "\n")
            if Self.verbose {
                let reasons = world.daemon.log.split(separator: "\n").filter { $0.contains("disconnecting frontend") }
                print(replay + "\nlast disconnect reason: \(reasons.last ?? "none")")
            }
            if let violation = outcome.violation {
                Issue.record("\(replay)\nin-session violation: \(violation)\nlog tail:\n\(world.daemon.log.suffix(4000))")
                break
            }
            let broken = world.checkInvariants(round: round, seed: seed)
            if !broken.isEmpty {
                Issue.record("\(replay)\ninvariants broken: \(broken.joined(separator: "; "))\nlog tail:\n\(world.daemon.log.suffix(4000))")
                break
            }
        }
        // Every fuzzed session's descriptors (socket, kick and call fds, memory, log, inflight) were closed.
        HostileRPCTests.expectFDsBack(to: baselineFDs, world.daemon)
        world.closeBystander()
        let status = world.daemon.stop()
        #expect(status == 0, "seed \(seed): SIGTERM exit status \(status)\n\(world.daemon.log.suffix(3000))")
        let log = world.daemon.log
        for marker in ["Fatal error", "fatal", "Segmentation fault", "Illegal instruction", "Stack dump", "crash"] {
            #expect(!log.localizedCaseInsensitiveContains(marker), "seed \(seed): log mentions '\(marker)'")
        }
        print("session fuzz \(mode)seed \(seed): \(Self.rounds) rounds, \(totalSteps) steps")
        if Self.verbose {
            // What the rounds reached in the data path.
            for marker in ["malformed descriptor chain", "malformed virtio-blk request", "the guest's ring is broken", "refused: packed ring", "slots in flight"] {
                print("  \(log.components(separatedBy: marker).count - 1) x '\(marker)'")
            }
        }
    }

    /// A defect the fuzzer found: a frontend that closes its connection
    /// (queue running) and reconnects at once was refused ("refusing a second
    /// frontend") when the daemon saw the new connection before the old one's
    /// hang-up. It waits in the backlog instead, like a connection made while
    /// the old session drains: each attempt gets its GET_FEATURES answered.
    @Test func immediateReconnectIsServed() throws {
        let daemon = try DaemonProcess()
        defer { daemon.stop(); daemon.cleanUp() }
        try daemon.call("bdev_malloc_create", ["num_blocks": 2048, "block_size": 512, "name": "M0"])
        try daemon.call("vhost_create_blk_controller", ["ctrlr": "vhost.0", "dev_name": "M0"])
        var refused = 0
        for _ in 0..<10 {
            let memory = try FrontendMemory(size: 8 << 20)
            defer { memory.close() }
            let f = try VhostUserFrontend(socketPath: daemon.socketDirectory + "/vhost.0", memory: memory)
            try f.connect()
            try f.start(queueCount: 1, queueSize: 128)
            f.close()
            let again = try VhostUserChannel(path: daemon.socketDirectory + "/vhost.0")
            defer { again.close() }
            if (try? again.requestU64(.getFeatures)) == nil { refused += 1 }
            usleep(50_000)  // the daemon ends the session before the next one
        }
        #expect(refused == 0, "\(refused) of 10 immediate reconnects were refused")
        #expect(daemon.stop() == 0)
    }

    /// What a frontend sent just before it closed is served even when it
    /// reconnects at once: a write-cache switch (SET_CONFIG) behind 8 KiB of
    /// SET_FEATURES, more than one read of its socket. The daemon reads the
    /// old connection to its end before it serves the new one.
    @Test func messagesSentJustBeforeAReconnectAreServed() throws {
        let daemon = try DaemonProcess()
        defer { daemon.stop(); daemon.cleanUp() }
        try daemon.call("bdev_malloc_create", ["num_blocks": 2048, "block_size": 512, "name": "M0"])
        try daemon.call("vhost_create_blk_controller", ["ctrlr": "vhost.0", "dev_name": "M0"])
        func writeCache() throws -> JSON? {
            try daemon.call("vhost_get_controllers", ["name": "vhost.0"]).arrayValue?.first?["backend_specific"]?["block"]?["write_cache"]
        }
        var enabled = true
        for round in 0..<10 {
            let memory = try FrontendMemory(size: 8 << 20)
            defer { memory.close() }
            let f = try VhostUserFrontend(socketPath: daemon.socketDirectory + "/vhost.0", memory: memory)
            try f.connect()
            let features = f.options.wantedFeatures.intersection(f.deviceFeatures)
            let setFeatures = VhostUserMessage(request: .setFeatures, payload: .u64(features.rawValue)).encoded()
            enabled.toggle()
            let wce = VhostUserPayload.config(offset: 32, size: 1, flags: 0, payload: [enabled ? 1 : 0])
            // One burst, then the close: most of it is still unread when the reconnect comes.
            let burst = Array([[UInt8]](repeating: setFeatures, count: 410).joined())  // 20 bytes each
                + VhostUserMessage(request: .setConfig, payload: wce).encoded()
            try f.channel.sendRaw(burst)
            f.close()
            let again = try VhostUserChannel(path: daemon.socketDirectory + "/vhost.0")
            defer { again.close() }
            #expect((try? again.requestU64(.getFeatures)) != nil, "round \(round): the reconnect was refused")
            #expect(try writeCache() == .bool(enabled), "round \(round): the write-cache switch was lost")
        }
        #expect(daemon.stop() == 0)
    }
}

// MARK: - Deterministic randomness

/// SplitMix64: a tiny generator whose sequence depends only on its seed
/// (so a step list is replayable across runs and toolchains).
struct SplitMix64 {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }

    /// A value in 0..<n (n > 0).
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }

    /// True with probability `percent`/100.
    mutating func chance(_ percent: Int) -> Bool { below(100) < percent }

    /// An index into `weights`, chosen in proportion to them.
    mutating func weighted(_ weights: [Int]) -> Int {
        var pick = below(weights.reduce(0, +))
        for (i, w) in weights.enumerated() {
            if pick < w { return i }
            pick -= w
        }
        return weights.count - 1
    }
}

// MARK: - Steps

/// One thing the fuzzing frontend does. Queue indices are 0 or 1 (both
/// have rings in the round's memory), or 255 (beyond the controller: the
/// daemon must disconnect).
enum FuzzAction: Equatable, CustomStringConvertible {
    enum Features: Equatable { case standard, subset(UInt64), unoffered(Int) }
    enum Memory: Equatable { case guest, smallFile, beyondFile }
    enum Rings: Equatable { case ours, oursLogged, outside }
    /// ADD_MEM_REG / REM_MEM_REG targets: a 1 MiB DIMM at 1 GiB, a region over
    /// the round's guest RAM, one past its file's end, and the guest RAM itself.
    enum Slot: Equatable { case dimm, overlapping, beyondFile, guest }

    case getFeatures, getProtocolFeatures, getQueueNum, getMaxMemSlots, setOwner, resetOwner, resetDevice
    case setFeatures(Features)
    case setProtocolFeatures(UInt64)
    case setMemTable(Memory)
    case setVringNum(UInt32, UInt32)
    case setVringBase(UInt32, UInt32)
    case setVringAddr(UInt32, Rings)
    case setVringKick(UInt32)
    case setVringCall(UInt32, noFD: Bool, fresh: Bool)
    case setVringErr(UInt32)
    case setVringEnable(UInt32, Bool)
    case getVringBase(UInt32)
    case getConfig(offset: UInt32, size: UInt32)
    case setConfig(offset: UInt32, bytes: [UInt8])
    case setLogBase(size: UInt64, offset: UInt64)
    case getInflightFD(queues: UInt16, size: UInt16)
    case setInflightFD
    /// Marks random heads in flight in the region we hold (a hostile frontend owns that memory).
    case scribbleInflight(UInt64)
    /// Packed mode: random descriptors in a queue's packed ring and random
    /// event suppression areas (seeded by the value), then a kick.
    case scribblePacked(UInt64)
    case setSlaveReqFD
    case addMemReg(Slot)
    case remMemReg(Slot)
    case unsupported(UInt32)
    /// Writes or reads `count` sectors' worth of requests on a queue, kicked, waited for briefly.
    case io(Int, count: Int)
    case harvest
    case secondConnection
    case close

    var description: String {
        switch self {
        case .getFeatures: "GET_FEATURES"
        case .getProtocolFeatures: "GET_PROTOCOL_FEATURES"
        case .getQueueNum: "GET_QUEUE_NUM"
        case .getMaxMemSlots: "GET_MAX_MEM_SLOTS"
        case .setOwner: "SET_OWNER"
        case .resetOwner: "RESET_OWNER"
        case .resetDevice: "RESET_DEVICE"
        case .setFeatures(let f): "SET_FEATURES \(f)"
        case .setProtocolFeatures(let v): "SET_PROTOCOL_FEATURES 0x\(String(v, radix: 16))"
        case .setMemTable(let m): "SET_MEM_TABLE \(m)"
        case .setVringNum(let q, let n): "SET_VRING_NUM q\(q) \(n)"
        case .setVringBase(let q, let n): "SET_VRING_BASE q\(q) \(n)"
        case .setVringAddr(let q, let r): "SET_VRING_ADDR q\(q) \(r)"
        case .setVringKick(let q): "SET_VRING_KICK q\(q)"
        case .setVringCall(let q, let noFD, let fresh): "SET_VRING_CALL q\(q)\(noFD ? " NOFD" : fresh ? " fresh eventfd" : "")"
        case .setVringErr(let q): "SET_VRING_ERR q\(q)"
        case .setVringEnable(let q, let on): "SET_VRING_ENABLE q\(q) \(on ? 1 : 0)"
        case .getVringBase(let q): "GET_VRING_BASE q\(q)"
        case .getConfig(let o, let s): "GET_CONFIG offset \(o) size \(s)"
        case .setConfig(let o, let b): "SET_CONFIG offset \(o) \(b)"
        case .setLogBase(let s, let o): "SET_LOG_BASE size \(s) offset \(o)"
        case .getInflightFD(let q, let s): "GET_INFLIGHT_FD \(q) queues of \(s)"
        case .setInflightFD: "SET_INFLIGHT_FD"
        case .scribbleInflight(let v): "scribble inflight region 0x\(String(v, radix: 16))"
        case .scribblePacked(let v): "scribble packed ring 0x\(String(v, radix: 16))"
        case .setSlaveReqFD: "SET_SLAVE_REQ_FD"
        case .addMemReg(let slot): "ADD_MEM_REG \(slot)"
        case .remMemReg(let slot): "REM_MEM_REG \(slot)"
        case .unsupported(let r): "unsupported request \(r)"
        case .io(let q, let n): "I/O q\(q) x\(n)"
        case .harvest: "harvest used entries"
        case .secondConnection: "second connection"
        case .close: "close"
        }
    }
}

/// An action, whether it carries NEED_REPLY, and whether the frontend reads
/// the replies owed so far before the next step (false: it pipelines).
struct FuzzStep: CustomStringConvertible {
    var action: FuzzAction
    var needReply = false
    var wait = true

    var description: String { "\(action)\(needReply ? " +NEED_REPLY" : "")\(wait ? "" : " (no wait)")" }

    /// Bits 0-13 and CONFIGURE_MEM_SLOTS (15).
    static let allProtocolFeatures: UInt64 = 0xbfff

    /// The QEMU-like opening: features, protocol features, owner.
    static let prologue: [FuzzStep] = [
        FuzzStep(action: .getFeatures), FuzzStep(action: .getProtocolFeatures),
        FuzzStep(action: .setProtocolFeatures(allProtocolFeatures)), FuzzStep(action: .getQueueNum),
        FuzzStep(action: .setOwner),
    ]

    /// A packed ring's fresh SET_VRING_BASE: both positions at slot 0, wrap counter 1.
    static let packedStart = PackedRingBase.encode(avail: .start, used: .start)

    /// QEMU's driver start for queue `q` (with the memory table and inflight region).
    static func start(_ q: UInt32, inflight: Bool, packed: Bool = false) -> [FuzzStep] {
        var steps = [FuzzStep(action: .setFeatures(.standard))]
        if inflight { steps += [FuzzStep(action: .getInflightFD(queues: 2, size: 128)), FuzzStep(action: .setInflightFD)] }
        steps += [
            FuzzStep(action: .setMemTable(.guest), needReply: true),
            FuzzStep(action: .setVringCall(q, noFD: false, fresh: false)), FuzzStep(action: .setVringNum(q, 128)),
            FuzzStep(action: .setVringBase(q, packed ? packedStart : 0)), FuzzStep(action: .setVringAddr(q, .ours)),
            FuzzStep(action: .setVringKick(q)), FuzzStep(action: .setVringEnable(q, true)),
        ]
        return steps
    }

    /// A round's steps: usually a normal opening (and often a started queue),
    /// then 5 to 40 random steps.
    static func sequence(using rng: inout SplitMix64, packed: Bool = false) -> [FuzzStep] {
        var steps: [FuzzStep] = []
        if rng.chance(85) { steps += prologue }
        if rng.chance(60) { steps += start(0, inflight: rng.chance(50), packed: packed) }
        if rng.chance(25) { steps += start(1, inflight: false, packed: packed).dropFirst() }
        let count = 5 + rng.below(36)
        for _ in 0..<count {
            let roll = rng.below(100)
            if roll < 6 {
                // Stop a queue and set it up again (QEMU after a guest reset).
                let q: UInt32 = rng.chance(70) ? 0 : 1
                steps += [FuzzStep(action: .setVringEnable(q, false)), FuzzStep(action: .getVringBase(q))]
                steps += start(q, inflight: false, packed: packed).dropFirst(2)
                continue
            }
            if roll < 10 {
                // QEMU's stop: disable, then GET_VRING_BASE.
                let q: UInt32 = rng.chance(70) ? 0 : 1
                steps += [FuzzStep(action: .setVringEnable(q, false)), FuzzStep(action: .getVringBase(q))]
                continue
            }
            if packed && roll < 16 {
                // A reconnect-style restart at random packed positions (GET_VRING_BASE
                // forgot the kick, so it comes again), then I/O.
                let q: UInt32 = rng.chance(70) ? 0 : 1
                steps += [FuzzStep(action: .setVringEnable(q, false)), FuzzStep(action: .getVringBase(q)),
                          FuzzStep(action: .setVringBase(q, randomPackedBase(using: &rng))), FuzzStep(action: .setVringKick(q)),
                          FuzzStep(action: .setVringEnable(q, true)), FuzzStep(action: .io(Int(q), count: 1 + rng.below(4)))]
                continue
            }
            var step = FuzzStep(action: packed && rng.chance(30) ? randomPackedAction(using: &rng) : randomAction(using: &rng))
            step.needReply = rng.chance(25)
            step.wait = rng.chance(85)
            steps.append(step)
            if step.action == .close { break }
        }
        return steps
    }

    static func queue(using rng: inout SplitMix64) -> UInt32 {
        let roll = rng.below(100)
        return roll < 60 ? 0 : roll < 99 ? 1 : 255
    }

    /// Packed mode's own steps: scribbled rings, packed ring bases (valid,
    /// out of range, or any 32 bits), sizes that are not powers of two, and I/O.
    static func randomPackedAction(using rng: inout SplitMix64) -> FuzzAction {
        switch rng.below(10) {
        case 0..<4: return .scribblePacked(rng.next())
        case 4: return .setVringBase(queue(using: &rng), randomPackedBase(using: &rng))
        case 5: return .setVringNum(queue(using: &rng), [1, 3, 100, 127, 32768, 32769][rng.below(6)])
        default: return .io(rng.chance(65) ? 0 : 1, count: 1 + rng.below(4))
        }
    }

    /// A packed SET_VRING_BASE: both positions equal (a clean stop), apart
    /// (buffers left in flight), indices in or beyond a ring of 128, or any 32 bits.
    static func randomPackedBase(using rng: inout SplitMix64) -> UInt32 {
        let avail = PackedRingPosition(index: UInt16(rng.below(rng.chance(70) ? 128 : 0x8000)), wrap: rng.chance(50))
        let used = rng.chance(50) ? avail : PackedRingPosition(index: UInt16(rng.below(160)), wrap: rng.chance(50))
        return rng.chance(85) ? PackedRingBase.encode(avail: avail, used: used) : UInt32(truncatingIfNeeded: rng.next())
    }

    static func randomAction(using rng: inout SplitMix64) -> FuzzAction {
        let weights = [
            18, 5, 8, 6, 6, 6, 2, 2, 4, 6,  // io, harvest, enable, get base, kick, call, num, base, addr, mem table
            5, 2, 3, 4, 3, 2, 3, 2, 1, 3,  // features, protocol features, reset, config, log, get/set/scribble inflight, slave, gets
            1, 1, 2, 2,  // err, unsupported, second connection, close
            3, 2,  // add and remove memory regions
        ]
        switch rng.weighted(weights) {
        case 0: return .io(rng.chance(65) ? 0 : 1, count: 1 + rng.below(4))
        case 1: return .harvest
        case 2: return .setVringEnable(queue(using: &rng), rng.chance(55))
        case 3: return .getVringBase(queue(using: &rng))
        case 4: return .setVringKick(queue(using: &rng))
        case 5: return .setVringCall(queue(using: &rng), noFD: rng.chance(15), fresh: rng.chance(50))
        case 6: return .setVringNum(queue(using: &rng), rng.chance(85) ? 128 : [64, 256][rng.below(2)])
        case 7: return .setVringBase(queue(using: &rng), rng.chance(70) ? 0 : UInt32(rng.below(300)))
        case 8: return .setVringAddr(queue(using: &rng), rng.chance(80) ? .ours : rng.chance(60) ? .oursLogged : .outside)
        case 9:
            let roll = rng.below(100)
            return .setMemTable(roll < 85 ? .guest : roll < 95 ? .smallFile : .beyondFile)
        case 10:
            let roll = rng.below(100)
            return .setFeatures(roll < 40 ? .standard : roll < 97 ? .subset(rng.next()) : .unoffered(rng.chance(50) ? 34 : 15))
        case 11: return .setProtocolFeatures(rng.chance(50) ? allProtocolFeatures : rng.next() & allProtocolFeatures)
        case 12: return rng.chance(70) ? .resetOwner : .resetDevice
        case 13:
            if rng.chance(50) {
                return [FuzzAction.getConfig(offset: 0, size: 57), .getConfig(offset: 32, size: 1),
                        .getConfig(offset: 250, size: 60), .getConfig(offset: 0, size: 0)][rng.below(4)]
            }
            return [FuzzAction.setConfig(offset: 32, bytes: [0]), .setConfig(offset: 32, bytes: [1]),
                    .setConfig(offset: 0, bytes: [1, 2, 3, 4, 5, 6, 7, 8])][rng.below(3)]
        case 14:
            return .setLogBase(size: [256, 1, 4096, 1 << 20][rng.below(4)], offset: rng.chance(90) ? 0 : 4096)
        case 15: return .getInflightFD(queues: rng.chance(80) ? 2 : 1, size: rng.chance(80) ? 128 : 64)
        case 16: return .setInflightFD
        case 17: return .scribbleInflight(rng.next())
        case 18: return .setSlaveReqFD
        case 19: return [FuzzAction.getFeatures, .getProtocolFeatures, .getQueueNum, .getMaxMemSlots, .setOwner][rng.below(5)]
        case 20: return .setVringErr(queue(using: &rng))
        case 21: return .unsupported([19, 23, 28, 39, 40][rng.below(5)])
        case 22: return .secondConnection
        case 23: return .close
        case 24:
            let roll = rng.below(100)
            return .addMemReg(roll < 70 ? .dimm : roll < 85 ? .overlapping : .beyondFile)
        default: return .remMemReg(rng.chance(80) ? .dimm : .guest)
        }
    }
}

// MARK: - The daemon under test

/// The daemon, its bystander frontend on `vhost.1`, and the checks run after each round.
final class FuzzWorld {
    let daemon: DaemonProcess
    private var bystanderMemory: FrontendMemory?
    private var bystander: VhostUserFrontend?
    static let sectors: UInt64 = 4096

    /// `vhost.0` offers packed rings, and the fresh frontends there use them.
    let packed: Bool

    init(cpumask: String = "0x1", extraArguments: [String] = [], packed: Bool = false) throws {
        self.packed = packed
        daemon = try HostileFrontendTests.Bystander.twoControllers(cpumask: cpumask, extraArguments: extraArguments, packed: packed)
        let memory = try FrontendMemory(size: 8 << 20)
        bystanderMemory = memory
        let f = try VhostUserFrontend(socketPath: daemon.socketDirectory + "/vhost.1", memory: memory)
        bystander = f
        try f.connect()
        try f.start(queueCount: 1, queueSize: 128)
        // Once a request completed, the daemon holds the queue's kick and call fds (the baseline).
        if let why = Self.roundTrip(f, sector: 0, data: Self.pattern(seed: 0, round: 0, salt: 9)) {
            throw FrontendError.invalidArgument("the bystander's first round trip: \(why)")
        }
    }

    var fuzzedSocket: String { daemon.socketDirectory + "/vhost.0" }

    /// GET_FEATURES as the bystander read it (both controllers offer the
    /// same, but for VIRTIO_F_RING_PACKED on a packed `vhost.0`).
    var offeredFeatures: UInt64 {
        (bystander?.deviceFeatures.rawValue ?? 0) | (packed ? VirtioFeatures.ringPacked.rawValue : 0)
    }

    func closeBystander() {
        bystander?.close()
        bystander = nil
        bystanderMemory?.close()
        bystanderMemory = nil
    }

    func tearDown() {
        closeBystander()
        daemon.stop()
        daemon.cleanUp()
    }

    /// A pattern unique to the seed, round and controller.
    static func pattern(seed: UInt64, round: Int, salt: UInt8) -> [UInt8] {
        var rng = SplitMix64(seed: seed &+ UInt64(round) &* 7919 &+ UInt64(salt))
        return (0..<512).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
    }

    /// Writes `data` at `sector` and reads it back; nil when it matched, else what went wrong.
    static func roundTrip(_ f: VhostUserFrontend, sector: UInt64, data: [UInt8]) -> String? {
        do {
            let w = try f.write(sector: sector, data: data)
            guard w.status == BlkWire.statusOK else { return "write status \(w.status)" }
            let r = try f.read(sector: sector, count: 1)
            guard r.status == BlkWire.statusOK else { return "read status \(r.status)" }
            return r.data == data ? nil : "read back different data"
        } catch {
            return "\(error)"
        }
    }

    /// Every invariant that must hold between rounds; returns the broken ones.
    func checkInvariants(round: Int, seed: UInt64) -> [String] {
        var broken: [String] = []
        guard daemon.isRunning else { return ["the daemon process exited"] }
        let start = ContinuousClock.now
        do {
            let client = try RPCClient(path: daemon.rpcSocket, timeout: .seconds(2))
            let version = try client.call("spdk_get_version", params: nil)
            if version["version"] == nil { broken.append("spdk_get_version without a version") }
        } catch {
            broken.append("spdk_get_version failed: \(error)")
        }
        if ContinuousClock.now - start > .seconds(2) { broken.append("RPC took \(ContinuousClock.now - start)") }
        let sector = UInt64(1 + round % 64)
        if let f = bystander {
            if let why = Self.roundTrip(f, sector: sector, data: Self.pattern(seed: seed, round: round, salt: 1)) {
                broken.append("bystander on vhost.1: \(why)")
            }
        } else {
            broken.append("no bystander")
        }
        if let why = freshFrontendRoundTrip(sector: sector, data: Self.pattern(seed: seed, round: round, salt: 0)) {
            broken.append("fresh frontend on vhost.0: \(why)\(refusedReconnect() ? " (refused as a second frontend)" : "")")
        }
        return broken
    }

    private var refusalsSeen = 0

    /// Marks refusals logged so far as expected (the fuzzer's own second connections).
    func noteExpectedRefusals() -> Bool {
        usleep(20_000)
        return refusedReconnect()
    }

    /// Whether the daemon logged a new "refusing a second frontend" since the last call.
    private func refusedReconnect() -> Bool {
        let count = daemon.log.components(separatedBy: "refusing a second frontend").count - 1
        defer { refusalsSeen = count }
        return count > refusalsSeen
    }

    /// A well-behaved frontend on the fuzzed controller: connect (the fuzzed
    /// session may still drain: it waits in the backlog), start a queue
    /// (packed in packed mode), verified round trip, orderly stop
    /// (GET_VRING_BASE answers 2, or for a packed ring the driver's positions).
    private func freshFrontendRoundTrip(sector: UInt64, data: [UInt8]) -> String? {
        let memory: FrontendMemory
        do { memory = try FrontendMemory(size: 8 << 20) } catch { return "\(error)" }
        defer { memory.close() }
        let f: VhostUserFrontend
        let options = packed ? PackedRingTests.packedOptions : VhostUserFrontend.Options()
        do { f = try VhostUserFrontend(socketPath: fuzzedSocket, memory: memory, options: options) } catch { return "connect: \(error)" }
        defer { f.close() }
        do {
            try f.connect()
            try f.start(queueCount: 1, queueSize: 128)
        } catch {
            return "start: \(error)"
        }
        if let why = Self.roundTrip(f, sector: sector, data: data) { return why }
        if packed {
            do {
                let q = try f.driverQueue(0)
                guard q.packed else { return "the fresh frontend did not get a packed ring" }
                try f.setVringEnable(0, false)
                let base = try f.getVringBaseRaw(0)
                let expected = PackedRingBase.encode(avail: q.packedAvail, used: q.packedUsed)
                if base != expected { return "GET_VRING_BASE answered 0x\(String(base, radix: 16)), expected 0x\(String(expected, radix: 16))" }
            } catch {
                return "stop: \(error)"
            }
            return nil
        }
        do {
            let bases = try f.stop()
            if bases != [2] { return "GET_VRING_BASE answered \(bases), expected [2]" }
        } catch {
            return "stop: \(error)"
        }
        return nil
    }
}

// MARK: - One fuzzed session

/// Executes a step list on a fresh connection to `vhost.0`, tracking what
/// the daemon owes (replies) and what we hold (rings, eventfds, regions).
final class FuzzSession {
    struct Outcome {
        var executed = 0
        var disconnectedAt: Int?
        /// Something the daemon did that no input excuses (no reply in time, a malformed reply).
        var violation: String?
        var completions = 0

        var summary: String {
            "\(executed) steps run, \(completions) I/O completions, "
                + (disconnectedAt.map { "daemon disconnected at step \($0)" } ?? "frontend closed")
        }
    }

    /// A reply the daemon owes, in order.
    private enum Owed { case reply(VhostUserRequest), inflight }

    private let world: FuzzWorld
    private let channel: VhostUserChannel
    private let memory: FrontendMemory
    private var queues: [DriverQueue] = []
    private var owed: [Owed] = []
    private var protocolFeatures: VhostUserProtocolFeatures = []
    private var offered: UInt64 = 0
    private var inflightFD: FileDescriptor?
    private var inflightSize: UInt64 = 0
    private var inflightQueues: UInt16 = 0
    private var inflightQueueSize: UInt16 = 0
    private var held: [FileDescriptor] = []
    private var strayFDs: [FileDescriptor] = []
    private var nextSector: UInt64 = 1024
    private var completions = 0

    private init(world: FuzzWorld, channel: VhostUserChannel, memory: FrontendMemory) {
        self.world = world
        self.channel = channel
        self.memory = memory
    }

    private struct Disconnected: Error {}
    private struct Violation: Error { let what: String }

    static func run(_ steps: [FuzzStep], world: FuzzWorld) -> Outcome {
        var outcome = Outcome()
        let channel: VhostUserChannel
        let memory: FrontendMemory
        do {
            channel = try VhostUserChannel(path: world.fuzzedSocket, timeout: .seconds(3))
            memory = try FrontendMemory(size: 8 << 20)
        } catch {
            outcome.violation = "cannot set up the round: \(error)"
            return outcome
        }
        let session = FuzzSession(world: world, channel: channel, memory: memory)
        defer { session.finish() }
        do {
            // Both queues' rings exist from the start, so any step may name them.
            for i in 0..<2 {
                session.queues.append(try DriverQueue(memory: memory, index: i, size: 128, eventIdx: false, packed: world.packed))
            }
            session.offered = world.offeredFeatures
        } catch {
            outcome.violation = "cannot set up the round: \(error)"
            return outcome
        }
        for (i, step) in steps.enumerated() {
            outcome.executed = i + 1
            do {
                if step.action == .close { break }
                try session.execute(step)
                if step.wait { try session.collectOwed() }
                session.harvest(wait: .zero)
            } catch is Disconnected {
                outcome.disconnectedAt = i
                break
            } catch let v as Violation {
                outcome.violation = "step \(i) (\(step)): \(v.what)"
                break
            } catch {
                outcome.violation = "step \(i) (\(step)): \(error)"
                break
            }
        }
        outcome.completions = session.completions
        return outcome
    }

    /// Closes the connection and everything the round held.
    private func finish() {
        channel.close()
        for q in queues { q.close() }
        inflightFD?.close()
        for fd in held { fd.close() }
        strayFDs.closeAll()
        memory.close()
    }

    // MARK: Sending and replies

    private func send(_ message: VhostUserMessage, step: FuzzStep, owes: Owed? = nil) throws {
        var m = message
        if step.needReply { m.header.flags |= VhostUserHeader.flagNeedReply }
        do throws(FrontendError) {
            try channel.send(m)
        } catch {
            if case .peerClosed = error { throw Disconnected() }
            throw Violation(what: "send failed: \(error)")
        }
        if let owes {
            owed.append(owes)
        } else if step.needReply && protocolFeatures.contains(.replyAck) {
            owed.append(.reply(message.request))
        }
    }

    /// Reads every reply owed so far, in order.
    private func collectOwed() throws {
        while !owed.isEmpty {
            let next = owed.removeFirst()
            let request: VhostUserRequest
            switch next {
            case .reply(let r): request = r
            case .inflight: request = .getInflightFD
            }
            let reply: RawReply
            do throws(FrontendError) {
                reply = try channel.receiveReply(to: request, timeout: .seconds(3))
            } catch {
                switch error {
                case .peerClosed:
                    throw Disconnected()
                case .timeout:
                    // The daemon might have hung up just now: that is allowed.
                    if channel.waitForClose(timeout: .milliseconds(200)) { throw Disconnected() }
                    throw Violation(what: "no \(request.name) reply within 3 s")
                default:
                    throw Violation(what: "bad \(request.name) reply: \(error)")
                }
            }
            // A recvmsg may return a reply glued to the one before it, and the
            // channel hands the fds to the first: keep them for GET_INFLIGHT_FD.
            strayFDs += reply.fds
            if case .inflight = next {
                guard let fd = strayFDs.popLast(), reply.body.count == 24 else {
                    throw Violation(what: "GET_INFLIGHT_FD reply of \(reply.body.count) bytes without an fd")
                }
                inflightFD?.close()
                inflightFD = fd
                reply.body.withUnsafeBytes {
                    inflightSize = UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))
                    inflightQueues = UInt16(littleEndian: $0.loadUnaligned(fromByteOffset: 16, as: UInt16.self))
                    inflightQueueSize = UInt16(littleEndian: $0.loadUnaligned(fromByteOffset: 18, as: UInt16.self))
                }
            } else if request == .getFeatures, reply.body.count == 8,
                      reply.body.withUnsafeBytes({ UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }) != offered {
                throw Violation(what: "GET_FEATURES answered a different feature set")
            }
        }
        strayFDs.closeAll()
        strayFDs = []
    }

    private func message(_ request: VhostUserRequest, _ payload: VhostUserPayload = .none, fds: [FileDescriptor] = []) -> VhostUserMessage {
        VhostUserMessage(request: request, payload: payload, fds: fds)
    }

    /// The DIMM ADD_MEM_REG adds: 1 MiB at 1 GiB, at a frontend address no other region uses.
    static let dimm = MemoryRegionDescriptor(guestPhysAddr: 1 << 30, size: 1 << 20, userAddr: 0x7e00_0000_0000, mmapOffset: 0)

    private func memfd(_ size: Int) throws -> FileDescriptor {
        let fd = try Memfd.create(name: "fuzz", size: size)
        held.append(fd)
        return fd
    }

    // MARK: Steps

    private func execute(_ step: FuzzStep) throws {
        switch step.action {
        case .getFeatures:
            try send(message(.getFeatures), step: step, owes: .reply(.getFeatures))
        case .getProtocolFeatures:
            try send(message(.getProtocolFeatures), step: step, owes: .reply(.getProtocolFeatures))
        case .getQueueNum:
            try send(message(.getQueueNum), step: step, owes: .reply(.getQueueNum))
        case .getMaxMemSlots:
            try send(message(.getMaxMemSlots), step: step, owes: .reply(.getMaxMemSlots))
        case .setOwner:
            try send(message(.setOwner), step: step)
        case .resetOwner:
            try send(message(.resetOwner), step: step)
        case .resetDevice:
            try send(message(.resetDevice), step: step)
        case .setFeatures(let pick):
            var value = offered & (VhostUserFrontend.Options().wantedFeatures.rawValue | (world.packed ? VirtioFeatures.ringPacked.rawValue : 0))
            if case .subset(let mask) = pick { value = offered & mask }
            if case .unoffered(let bit) = pick { value = offered | (1 << UInt64(bit)) }
            try send(message(.setFeatures, .u64(value)), step: step)
        case .setProtocolFeatures(let value):
            // The daemon keeps what it offers of it (its offer is fixed), and
            // acks this very message by the new set.
            protocolFeatures = VhostUserProtocolFeatures(rawValue: value).intersection([
                .multiQueue, .logSHMFD, .replyAck, .config, .slaveReq, .inflightSHMFD,
            ])
            try send(message(.setProtocolFeatures, .u64(value)), step: step)
        case .setMemTable(let kind):
            switch kind {
            case .guest:
                let fds = [FileDescriptor](repeating: memory.fd, count: memory.regions.count)
                try send(message(.setMemTable, .memoryTable(memory.regions), fds: fds), step: step)
            case .smallFile, .beyondFile:
                // A 1 MiB file at the same addresses: rings fit, data buffers past 1 MiB do not.
                let fd = try memfd(1 << 20)
                let size: UInt64 = kind == .smallFile ? 1 << 20 : 4 << 20
                let region = MemoryRegionDescriptor(guestPhysAddr: 0, size: size, userAddr: memory.userAddr(of: memory.base), mmapOffset: 0)
                try send(message(.setMemTable, .memoryTable([region]), fds: [fd]), step: step)
            }
        case .setVringNum(let q, let n):
            try send(message(.setVringNum, .vringState(index: q, num: n)), step: step)
        case .setVringBase(let q, let n):
            try send(message(.setVringBase, .vringState(index: q, num: n)), step: step)
        case .setVringAddr(let q, let rings):
            let ring = queues[Int(q == 1 ? 1 : 0)]
            var address = VringAddress(
                index: q, desc: memory.userAddr(of: ring.desc.pointer), used: memory.userAddr(of: ring.used.pointer),
                avail: memory.userAddr(of: ring.avail.pointer))
            switch rings {
            case .ours: break
            case .oursLogged:
                address.flags = VringAddress.flagLog
                address.log = ring.used.gpa
            case .outside: address.desc = memory.userAddr(of: memory.base) + UInt64(memory.size) + 4096
            }
            try send(message(.setVringAddr, .vringAddress(address)), step: step)
        case .setVringKick(let q):
            let kick = queues[Int(q == 1 ? 1 : 0)].kickFD.fd
            try send(message(.setVringKick, .u64(UInt64(q)), fds: [kick]), step: step)
        case .setVringCall(let q, let noFD, let fresh):
            if noFD {
                try send(message(.setVringCall, .u64(VringFile(index: q, noFD: true).rawValue)), step: step)
            } else if fresh {
                let event = try EventFD()
                held.append(event.fd)
                try send(message(.setVringCall, .u64(UInt64(q)), fds: [event.fd]), step: step)
            } else {
                let call = queues[Int(q == 1 ? 1 : 0)].callFD.fd
                try send(message(.setVringCall, .u64(UInt64(q)), fds: [call]), step: step)
            }
        case .setVringErr(let q):
            let event = try EventFD()
            held.append(event.fd)
            try send(message(.setVringErr, .u64(UInt64(q)), fds: [event.fd]), step: step)
        case .setVringEnable(let q, let on):
            try send(message(.setVringEnable, .vringState(index: q, num: on ? 1 : 0)), step: step)
        case .getVringBase(let q):
            try send(message(.getVringBase, .vringState(index: q, num: 0)), step: step, owes: .reply(.getVringBase))
        case .getConfig(let offset, let size):
            let payload = VhostUserPayload.config(offset: offset, size: size, flags: 0, payload: [UInt8](repeating: 0, count: Int(size)))
            // Past the config space the daemon disconnects instead of answering.
            let answered = offset <= 256
            try send(message(.getConfig, payload), step: step, owes: answered ? .reply(.getConfig) : nil)
        case .setConfig(let offset, let bytes):
            let payload = VhostUserPayload.config(offset: offset, size: UInt32(bytes.count), flags: 0, payload: bytes)
            try send(message(.setConfig, payload), step: step)
        case .setLogBase(let size, let offset):
            let fd = try memfd(max(4096, Int(size)))
            // With LOG_SHMFD the daemon answers it whatever the flags say.
            let owes: Owed? = protocolFeatures.contains(.logSHMFD) ? .reply(.setLogBase) : nil
            try send(message(.setLogBase, .log(size: size, offset: offset), fds: [fd]), step: step, owes: owes)
        case .getInflightFD(let n, let size):
            try send(message(.getInflightFD, .inflight(mmapSize: 0, mmapOffset: 0, numQueues: n, queueSize: size)), step: step, owes: .inflight)
        case .setInflightFD:
            if let fd = inflightFD {
                let payload = VhostUserPayload.inflight(mmapSize: inflightSize, mmapOffset: 0, numQueues: inflightQueues, queueSize: inflightQueueSize)
                try send(message(.setInflightFD, payload, fds: [fd]), step: step)
            } else {
                // A region the daemon never made, sized for 2 queues of 128.
                let size = 2 * InflightQueue.areaSize(queueSize: 128)
                let fd = try memfd(size)
                let payload = VhostUserPayload.inflight(mmapSize: UInt64(size), mmapOffset: 0, numQueues: 2, queueSize: 128)
                try send(message(.setInflightFD, payload, fds: [fd]), step: step)
            }
        case .scribbleInflight(let bits):
            scribble(bits)
        case .scribblePacked(let bits):
            scribblePacked(bits)
        case .addMemReg(let slot):
            let fd = try memfd(1 << 20)
            var region = Self.dimm
            switch slot {
            case .dimm, .guest: break
            case .overlapping: region.guestPhysAddr = 0
            case .beyondFile: region.size = 4 << 20
            }
            try send(message(.addMemReg, .singleRegion(region), fds: [fd]), step: step)
        case .remMemReg(let slot):
            let region = slot == .guest ? memory.regions[0] : Self.dimm
            try send(message(.remMemReg, .singleRegion(region)), step: step)
        case .setSlaveReqFD:
            var pair: [Int32] = [-1, -1]
            guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0 else {
                throw Violation(what: "socketpair failed")
            }
            held.append(FileDescriptor(pair[0]))
            held.append(FileDescriptor(pair[1]))
            try send(message(.setSlaveReqFD, fds: [FileDescriptor(pair[1])]), step: step)
        case .unsupported(let number):
            let request = VhostUserRequest(number)
            var payload = VhostUserPayload.none
            if number == 19 || number == 39 { payload = .u64(0) }
            if number == 23 { payload = .vringState(index: 0, num: 0) }
            try send(message(request, payload), step: step)
        case .io(let q, let count):
            try submitIO(queue: q, count: count)
        case .harvest:
            harvest(wait: .milliseconds(50))
        case .secondConnection:
            secondConnection()
        case .close:
            break
        }
    }

    /// Queues `count` one-sector requests (alternately writes and reads) on
    /// queue `q`, kicks, and waits a little for completions: the queue may
    /// be in any state, so nothing is required to complete.
    private func submitIO(queue q: Int, count: Int) throws {
        let ring = queues[q]
        for i in 0..<count {
            do {
                let header = try memory.allocate(16, alignment: 16)
                let data = try memory.allocate(512, alignment: 512)
                let status = try memory.allocate(1, alignment: 1)
                let write = i % 2 == 0
                header.write(BlkWire.header(type: write ? BlkWire.typeOut : BlkWire.typeIn, sector: nextSector))
                nextSector = 1024 + (nextSector + 1) % 1024
                status.pointer.storeBytes(of: 0xff, as: UInt8.self)
                try ring.addChain([
                    ChainBuffer(header, writable: false), ChainBuffer(data, writable: !write), ChainBuffer(status, writable: true),
                ], owning: [header, data, status])
            } catch FrontendError.queueFull {
                break
            } catch FrontendError.outOfGuestMemory {
                break
            }
        }
        ring.publishAndKick(force: true)
        harvest(wait: .milliseconds(30))
    }

    /// Collects used entries on both queues, waiting up to `wait` for the first.
    private func harvest(wait: Duration) {
        let deadline = ContinuousClock.now + wait
        repeat {
            var got = 0
            for q in queues {
                while q.popUsed() != nil { got += 1 }
            }
            completions += got
            if got > 0 || queues.allSatisfy({ $0.inFlightCount == 0 }) { return }
            usleep(2000)
        } while ContinuousClock.now < deadline
    }

    /// A second frontend while this one is connected: refused (EOF), or, if
    /// this session just ended, served. Either is fine; it must not hang.
    private func secondConnection() {
        defer { _ = world.noteExpectedRefusals() }
        guard let other = try? VhostUserChannel(path: world.fuzzedSocket, timeout: .seconds(1)) else { return }
        defer { other.close() }
        _ = try? other.requestU64(.getQueueNum)
    }

    /// Writes 1 to 12 random descriptors into a queue's packed ring (usually
    /// at and after the driver's next slot, so the device looks at them):
    /// addresses in guest memory, past it or any 64 bits; lengths small, odd
    /// or huge; any of NEXT, WRITE, INDIRECT; AVAIL/USED bits of the current
    /// lap, the other lap, or equal; buffer IDs below or beyond the size.
    /// Sometimes an indirect table of random entries, and random driver and
    /// device event suppression areas (off_wrap, flags). Then a kick.
    private func scribblePacked(_ bits: UInt64) {
        var rng = SplitMix64(seed: bits)
        let q = queues[rng.below(queues.count)]
        guard q.packed else { return }
        func address() -> UInt64 {
            switch rng.below(10) {
            case 0: return rng.next()
            case 1: return UInt64(memory.size) + UInt64(rng.below(1 << 20))
            default: return UInt64(4096 + rng.below(memory.size - 8192))
            }
        }
        func descriptor() -> PackedDescriptor {
            let len: UInt32 = [0, 1, 15, 16, 17, 48, 512, 4096, 1 << 20, UInt32.max][rng.below(10)]
            var flags = UInt16(rng.below(8))  // NEXT, WRITE, INDIRECT
            switch rng.below(10) {
            case 0: flags |= PackedDescriptor.flagAvail | PackedDescriptor.flagUsed
            case 1: break
            case 2: flags = UInt16(truncatingIfNeeded: rng.next())
            case 3: flags |= DriverQueue.availBits(wrap: !q.packedAvail.wrap)
            default: flags |= DriverQueue.availBits(wrap: q.packedAvail.wrap)
            }
            let id = rng.chance(80) ? UInt16(rng.below(Int(q.size))) : UInt16(truncatingIfNeeded: rng.next())
            return PackedDescriptor(addr: address(), len: len, id: id, flags: flags)
        }
        let count = 1 + rng.below(12)
        let first = rng.chance(75) ? Int(q.packedAvail.index) : rng.below(Int(q.size))
        for k in 0..<count {
            var d = descriptor()
            if d.isIndirect && rng.chance(50), let table = try? memory.allocate(16 * (1 + rng.below(8)), alignment: 16) {
                // A table of random entries (never released: the round's memory goes with it).
                for i in 0..<(table.length / 16) { descriptor().store(to: table.pointer + 16 * i) }
                d.addr = table.gpa
                d.len = rng.chance(80) ? UInt32(table.length) : UInt32(rng.below(300))
            }
            // The head last, as a driver makes a chain available.
            q.writePackedDescriptor(d, at: UInt16((first + count - 1 - k) % Int(q.size)))
        }
        if rng.chance(40) {
            q.avail.pointer.storeBytes(of: UInt32(truncatingIfNeeded: rng.next()), as: UInt32.self)
        }
        if rng.chance(20) {
            q.used.pointer.storeBytes(of: UInt32(truncatingIfNeeded: rng.next()), as: UInt32.self)
        }
        q.kickFD.signal()
    }

    /// Marks random heads in flight in the inflight region we hold (with
    /// random counters) and scrambles its header's used index.
    private func scribble(_ bits: UInt64) {
        guard let fd = inflightFD, inflightSize > 0, let length = Int(exactly: inflightSize),
              let mapping = try? SharedMapping(fd: fd, length: length) else { return }
        defer { mapping.unmap() }
        var rng = SplitMix64(seed: bits)
        let area = InflightQueue.areaSize(queueSize: inflightQueueSize)
        for _ in 0..<(1 + rng.below(8)) {
            let q = rng.below(max(1, Int(inflightQueues)))
            let head = rng.below(max(1, Int(inflightQueueSize)))
            let entry = q * area + InflightQueue.headerSize + head * InflightQueue.entrySize
            guard entry + InflightQueue.entrySize <= length else { continue }
            mapping.base.storeBytes(of: UInt8(1), toByteOffset: entry, as: UInt8.self)
            mapping.base.storeBytes(of: rng.next(), toByteOffset: entry + 8, as: UInt64.self)
        }
        if rng.chance(30) {
            let q = rng.below(max(1, Int(inflightQueues)))
            if q * area + 16 <= length {
                mapping.base.storeBytes(of: UInt16(truncatingIfNeeded: rng.next()), toByteOffset: q * area + 14, as: UInt16.self)
            }
        }
    }
}
