import Testing
import VhostUser
import Virtio
@testable import VhostTarget

/// `SessionMessageValidator`: the checks a frontend's message passes before
/// the session applies it, without a socket or a daemon.
@Suite struct SessionMessageValidatorTests {
    static let rings = VringAddress(index: 0, desc: 0x1000, used: 0x3000, avail: 0x2000)

    /// Two queues: 0 stopped, 1 running on `rings` (index 1).
    static func validator(offered: VirtioFeatures = [.version1, .flush, .logAll]) -> SessionMessageValidator {
        var running = rings
        running.index = 1
        return SessionMessageValidator(
            queues: [.init(), .init(running: true, address: running)], offeredFeatures: offered)
    }

    /// The reason `body` was refused for, or nil when it passed.
    static func refusal(_ body: () throws -> Void) -> String? {
        do {
            try body()
            return nil
        } catch let refusal as SessionRefusal {
            return refusal.reason
        } catch {
            return "not a SessionRefusal: \(error)"
        }
    }

    @Test func queueIndexWithinTheController() throws {
        let v = Self.validator()
        #expect(try v.queueIndex(0) == 0)
        #expect(try v.queueIndex(1) == 1)
        #expect(Self.refusal { _ = try v.queueIndex(2) } == "queue index 2 beyond the controller's 2 queues")
        #expect(Self.refusal { _ = try v.queueIndex(.max) } == "queue index 4294967295 beyond the controller's 2 queues")
    }

    @Test(arguments: [UInt32(1), 2, 128, 256, 1024, 32768])
    func setVringNumAcceptsPowersOfTwoUpTo32768(num: UInt32) throws {
        #expect(try Self.validator().setVringNum(index: 0, num: num) == 0)
    }

    @Test(arguments: [UInt32(0), 3, 100, 65536, 0xffff_ffff])
    func setVringNumRefusesOtherSizes(num: UInt32) {
        let reason = Self.refusal { _ = try Self.validator().setVringNum(index: 0, num: num) }
        #expect(reason == "SET_VRING_NUM \(num) for queue 0 is not a power of two up to 32768")
    }

    @Test func setVringNumAndBaseRefuseARunningQueueOrOneBeyond() {
        let v = Self.validator()
        #expect(Self.refusal { _ = try v.setVringNum(index: 1, num: 128) } == "SET_VRING_NUM on running queue 1")
        #expect(Self.refusal { _ = try v.setVringBase(index: 1) } == "SET_VRING_BASE on running queue 1")
        #expect(Self.refusal { _ = try v.setVringBase(index: 0) } == nil)
        #expect(Self.refusal { _ = try v.setVringNum(index: 7, num: 128) } == "queue index 7 beyond the controller's 2 queues")
        // The index is checked before the size.
        #expect(Self.refusal { _ = try v.setVringNum(index: 7, num: 3) } == "queue index 7 beyond the controller's 2 queues")
    }

    @Test func setVringAddrMayMoveTheRingsOfAStoppedQueueOnly() throws {
        let v = Self.validator()
        var moved = Self.rings
        moved.desc = 0x8000
        let stopped = try v.setVringAddr(moved)
        #expect(stopped.queue == 0 && !stopped.running)

        // Running queue 1: the log flag and address may change (migration starts)...
        var logging = Self.rings
        logging.index = 1
        logging.flags = VringAddress.flagLog
        logging.log = 0x9000
        let running = try v.setVringAddr(logging)
        #expect(running.queue == 1 && running.running)
        // ...the rings may not.
        for change in [\VringAddress.desc, \.avail, \.used] {
            var address = logging
            address[keyPath: change] += 0x10
            #expect(Self.refusal { _ = try v.setVringAddr(address) } == "SET_VRING_ADDR moves the rings of running queue 1")
        }
    }

    @Test func setVringAddrOnARunningQueueWithoutRingsIsRefused() {
        let v = SessionMessageValidator(queues: [.init(running: true, address: nil)], offeredFeatures: [])
        #expect(Self.refusal { _ = try v.setVringAddr(Self.rings) } == "SET_VRING_ADDR moves the rings of running queue 0")
    }

    @Test func setFeaturesOnlyWhatWasOffered() throws {
        let v = Self.validator()
        #expect(try v.setFeatures(VirtioFeatures([.version1, .flush]).rawValue) == [.version1, .flush])
        #expect(try v.setFeatures(0) == [])
        let extra = VirtioFeatures([.version1, .discard])
        let reason = Self.refusal { _ = try v.setFeatures(extra.rawValue) }
        #expect(reason == "SET_FEATURES asks for features not offered: \(VirtioFeatures.discard.names)")
    }

    @Test func kickNeedsAnEventFDAndCallMayHaveNone() throws {
        let v = Self.validator()
        #expect(try v.setVringKick(VringFile(index: 1, noFD: false), fdCount: 1) == 1)
        #expect(Self.refusal { _ = try v.setVringKick(VringFile(index: 0, noFD: true), fdCount: 0) }
            == "polling mode (NOFD kick) is not supported")
        #expect(Self.refusal { _ = try v.setVringKick(VringFile(index: 0, noFD: false), fdCount: 0) }
            == "SET_VRING_KICK without a descriptor")
        #expect(Self.refusal { _ = try v.setVringKick(VringFile(index: 255, noFD: true), fdCount: 0) }
            == "queue index 255 beyond the controller's 2 queues")

        #expect(try v.setVringCall(VringFile(index: 0, noFD: true), fdCount: 0) == 0)
        #expect(try v.setVringCall(VringFile(index: 1, noFD: false), fdCount: 1) == 1)
        #expect(Self.refusal { _ = try v.setVringCall(VringFile(index: 0, noFD: false), fdCount: 0) }
            == "SET_VRING_CALL without a descriptor")
    }

    @Test func getConfigWithinTheConfigSpace() {
        let v = Self.validator()
        #expect(Self.refusal { try v.getConfig(offset: 0, size: 256) } == nil)
        #expect(Self.refusal { try v.getConfig(offset: 256, size: 0) } == nil)
        #expect(Self.refusal { try v.getConfig(offset: 257, size: 0) } == "GET_CONFIG beyond the config space")
        #expect(Self.refusal { try v.getConfig(offset: 0, size: 257) } == "GET_CONFIG beyond the config space")
    }

    @Test func inflightAndChannelMessages() {
        let v = Self.validator()
        #expect(Self.refusal { try v.noQueueRunning(.getInflightFD) } == "GET_INFLIGHT_FD while queues run")
        let idle = SessionMessageValidator(queues: [.init(), .init()], offeredFeatures: [])
        #expect(Self.refusal { try idle.noQueueRunning(.setInflightFD) } == nil)
        #expect(Self.refusal { try v.hasDescriptor(.setSlaveReqFD, fdCount: 0) } == "SET_SLAVE_REQ_FD without a descriptor")
        #expect(Self.refusal { try v.hasDescriptor(.setLogBase, fdCount: 1) } == nil)
    }

    /// GET/SET_INFLIGHT_FD: the region's layout is bounded by the controller.
    @Test func inflightLayoutWithinTheController() {
        let v = Self.validator()  // two queues
        #expect(Self.refusal { try v.inflightLayout(.getInflightFD, numQueues: 2, queueSize: 32768) } == nil)
        #expect(Self.refusal { try v.inflightLayout(.setInflightFD, numQueues: 1, queueSize: 1) } == nil)
        #expect(Self.refusal { try v.inflightLayout(.getInflightFD, numQueues: 3, queueSize: 128) }
            == "GET_INFLIGHT_FD for 3 queues; the controller has 2")
        #expect(Self.refusal { try v.inflightLayout(.setInflightFD, numQueues: 0, queueSize: 128) }
            == "SET_INFLIGHT_FD for 0 queues; the controller has 2")
        for size in [UInt16(0), 3, 65535] {
            #expect(Self.refusal { try v.inflightLayout(.getInflightFD, numQueues: 1, queueSize: size) }
                == "GET_INFLIGHT_FD for queues of \(size) entries, not a power of two up to 32768")
        }
    }
}
