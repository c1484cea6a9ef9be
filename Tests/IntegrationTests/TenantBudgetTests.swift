import DaemonTestSupport
import Foundation
import Glibc
import JSONRPC
import Posix
import Testing
import VhostUser
import VhostUserFrontend
import Virtio

/// Per-session budgets (issue 19 item 4): a frontend that asks the daemon to
/// map more guest memory, dirty log or inflight region than its session may
/// have is disconnected with a log line naming the controller, its pid, what
/// it asked and the limit; its neighbours and the next tenant never notice.
@Suite("Per-session budgets against the running daemon")
struct TenantBudgetTests {
    typealias Bystander = HostileFrontendTests.Bystander
    typealias D = DataPathTests

    static let slice: UInt64 = 25 << 39  // 12.5 TiB

    /// Whether one line of the daemon's log contains every one of `parts`.
    static func logLine(_ daemon: DaemonProcess, containing parts: [String]) -> Bool {
        daemon.log.split(separator: "\n").contains { line in parts.allSatisfy { line.contains($0) } }
    }

    /// The session's log metadata: the controller and this process as the frontend.
    static func names(_ controller: String) -> [String] {
        ["controller.name=\(controller)", "frontend.pid=\(getpid())"]
    }

    /// A frontend connected to `ctrlr` with one started queue on `memory`.
    static func tenant(
        _ daemon: DaemonProcess, _ ctrlr: String, memory: FrontendMemory, options: VhostUserFrontend.Options = .init()
    ) throws -> VhostUserFrontend {
        let f = try VhostUserFrontend(socketPath: daemon.socketDirectory + "/" + ctrlr, memory: memory, options: options)
        do {
            try f.connect()
            try f.start(queueCount: 1, queueSize: 128)
        } catch {
            f.close()
            throw error
        }
        return f
    }

    /// One tenant asks for 100 TiB of guest memory (eight 12.5 TiB regions
    /// over one sparse memfd: nothing to pay), another for a 1 TiB dirty
    /// log. Each is disconnected with its log line, the neighbour's verified
    /// I/O on the same reactor goes on, and the next tenant's SET_MEM_TABLE
    /// succeeds. Before the budgets, the daemon mapped both.
    @Test func oversizedMemoryTableAndDirtyLogDisconnectOnlyTheirFrontend() throws {
        let world = try Bystander()
        let daemon = world.daemon

        // 100 TiB of guest memory.
        let sparse = try Memfd.create(name: "sparse-guest", size: Int(Self.slice))
        defer { sparse.close() }
        let table = (0..<8).map {
            MemoryRegionDescriptor(
                guestPhysAddr: UInt64($0) * Self.slice, size: Self.slice, userAddr: UInt64($0 + 1) << 44, mmapOffset: 0)
        }
        let tiny = try FrontendMemory(size: 1 << 20)
        defer { tiny.close() }
        do {
            let greedy = try VhostUserFrontend(socketPath: daemon.socketDirectory + "/vhost.0", memory: tiny)
            defer { greedy.close() }
            try greedy.connect()
            try greedy.setFeatures(greedy.deviceFeatures.intersection(greedy.options.wantedFeatures))
            var setMemTable = VhostUserMessage(
                request: .setMemTable, payload: .memoryTable(table), fds: [FileDescriptor](repeating: sparse, count: 8))
            setMemTable.header.flags |= VhostUserHeader.flagNeedReply
            try greedy.channel.send(setMemTable)
            #expect(greedy.channel.waitForClose(timeout: .seconds(5)), "a 100 TiB memory table was accepted")
            #expect(Self.logLine(daemon, containing: Self.names("vhost.0") + [
                "disconnecting frontend: SET_MEM_TABLE asks to map 100.0 TiB (109951162777600 bytes) of guest memory in 8 regions",
                "over the session limit of 64.0 GiB (68719476736 bytes)",
            ]), "\(daemon.log.suffix(3000))")
        }

        // A 1 TiB dirty log beside a 16 MiB memory table.
        let memory = try FrontendMemory(size: 16 << 20)
        defer { memory.close() }
        var options = VhostUserFrontend.Options()
        options.wantedFeatures.insert(.logAll)
        options.wantedProtocolFeatures.insert(.logSHMFD)
        let log = try Memfd.create(name: "sparse-log", size: 1 << 40)
        defer { log.close() }
        do {
            let migrating = try Self.tenant(daemon, "vhost.0", memory: memory, options: options)
            defer { migrating.close() }
            #expect(try D.roundTrip(migrating, sector: 1, seed: 1))
            try migrating.channel.send(VhostUserMessage(
                request: .setLogBase, payload: .log(size: 1 << 40, offset: 0), fds: [log]))
            #expect(migrating.channel.waitForClose(timeout: .seconds(5)), "a 1 TiB dirty log was accepted")
            #expect(Self.logLine(daemon, containing: Self.names("vhost.0") + [
                "disconnecting frontend: SET_LOG_BASE asks for a dirty log of 1.0 TiB (1099511627776 bytes), more than the memory table needs",
                "guest-physical end 0x1000000", "session limit of 64.0 GiB",
            ]), "\(daemon.log.suffix(3000))")
        }

        // The next tenant of that controller maps its memory and does verified I/O.
        let next = try FrontendMemory(size: 64 << 20)
        defer { next.close() }
        let f = try Self.tenant(daemon, "vhost.0", memory: next)
        defer { f.close() }
        for sector in 0..<8 { #expect(try D.roundTrip(f, sector: UInt64(sector), seed: sector)) }
        world.finish("budgets", reason: "")
    }

    /// `--max-session-memory`: a table up to the limit maps (QEMU's split of
    /// one memfd below and above 4 GiB counts once), one byte more is
    /// refused with the option named, and a refused frontend may come back
    /// within it.
    @Test func memoryLimitIsTheOption() throws {
        let daemon = try DaemonProcess(extraArguments: ["--max-session-memory", "32M"])
        defer { daemon.stop(); daemon.cleanUp() }
        try D.createBdev(daemon, .malloc, name: "M0")
        try D.createController(daemon, "vhost.0", bdev: "M0")

        let atLimit = try FrontendMemory(size: 32 << 20, splitAt: 16 << 20, gap: 1 << 30)
        defer { atLimit.close() }
        do {
            let f = try Self.tenant(daemon, "vhost.0", memory: atLimit)
            defer { f.close() }
            #expect(try D.roundTrip(f, sector: 2, seed: 2))
        }

        let over = try FrontendMemory(size: (32 << 20) + 4096)
        defer { over.close() }
        #expect(throws: FrontendError.self) { _ = try Self.tenant(daemon, "vhost.0", memory: over) }
        #expect(Self.logLine(daemon, containing: Self.names("vhost.0") + [
            "SET_MEM_TABLE asks to map 32.0 MiB (33558528 bytes) of guest memory in 1 region",
            "over the session limit of 32.0 MiB (33554432 bytes) (--max-session-memory)",
        ]), "\(daemon.log.suffix(3000))")

        let again = try FrontendMemory(size: 8 << 20)
        defer { again.close() }
        let f = try Self.tenant(daemon, "vhost.0", memory: again)
        defer { f.close() }
        #expect(try D.roundTrip(f, sector: 3, seed: 3))
        #expect(daemon.isRunning)
    }

    /// SET_LOG_BASE as QEMU sizes it passes, including the larger log QEMU
    /// sends before a table grown by hot-plug; one byte beyond what the
    /// table and hot-plug within the limit can need is refused.
    @Test func dirtyLogMustFitTheMemoryTable() throws {
        let daemon = try DaemonProcess(extraArguments: ["--max-session-memory", "64M"])
        defer { daemon.stop(); daemon.cleanUp() }
        try D.createBdev(daemon, .malloc, name: "M0")
        try D.createController(daemon, "vhost.0", bdev: "M0")
        let memory = try FrontendMemory(size: 16 << 20)
        defer { memory.close() }
        var options = VhostUserFrontend.Options()
        options.wantedFeatures.insert(.logAll)
        options.wantedProtocolFeatures.insert(.logSHMFD)
        let f = try Self.tenant(daemon, "vhost.0", memory: memory, options: options)
        defer { f.close() }

        // Covering 16 MiB + 64 MiB of hot-plug, plus QEMU's 4 KiB: 2560 + 4096 bytes.
        let most = DirtyLog.bytesCovering(guestPhysicalEnd: (16 << 20) + (64 << 20)) + DirtyLog.frontendSlackBytes
        #expect(most == 6656)
        let log = try Memfd.create(name: "log", size: 1 << 20)
        defer { log.close() }
        for size in [DirtyLog.bytesCovering(guestPhysicalEnd: 16 << 20), most] {
            try f.channel.send(VhostUserMessage(request: .setLogBase, payload: .log(size: size, offset: 0), fds: [log]))
            let reply = try f.channel.receiveReply(to: .setLogBase, expectedSize: 8)
            reply.fds.closeAll()
        }
        try f.channel.send(VhostUserMessage(request: .setFeatures, payload: .u64(f.ackedFeatures.union(.logAll).rawValue)), ack: true)
        #expect(try D.roundTrip(f, sector: 4, seed: 4))

        try f.channel.send(VhostUserMessage(request: .setLogBase, payload: .log(size: most + 1, offset: 0), fds: [log]))
        #expect(f.channel.waitForClose(timeout: .seconds(5)))
        #expect(Self.logLine(daemon, containing: Self.names("vhost.0") + [
            "SET_LOG_BASE asks for a dirty log of 6.5 KiB (6657 bytes), more than the memory table needs: 6.5 KiB (6656 bytes)",
        ]), "\(daemon.log.suffix(3000))")
        #expect(daemon.isRunning)
    }

    /// GET_INFLIGHT_FD for more queues than the controller has: refused, not
    /// a region as large as the frontend claims.
    @Test func inflightRegionForMoreQueuesThanTheControllerIsRefused() throws {
        let daemon = try DaemonProcess(extraArguments: ["--max-queues", "4"])
        defer { daemon.stop(); daemon.cleanUp() }
        try D.createBdev(daemon, .malloc, name: "M0")
        try D.createController(daemon, "vhost.0", bdev: "M0")
        for (queues, accepted) in [(4, true), (5, false)] {
            let channel = try VhostUserChannel(path: daemon.socketDirectory + "/vhost.0")
            defer { channel.close() }
            try channel.send(VhostUserMessage(
                request: .getInflightFD, payload: .inflight(mmapSize: 0, mmapOffset: 0, numQueues: UInt16(queues), queueSize: 32768)))
            if accepted {
                let reply = try channel.receiveReply(to: .getInflightFD, expectedSize: 24)
                reply.fds.closeAll()
                #expect(reply.fds.count == 1)
            } else {
                #expect(channel.waitForClose(timeout: .seconds(5)))
            }
        }
        #expect(Self.logLine(daemon, containing: Self.names("vhost.0") + ["GET_INFLIGHT_FD for 5 queues; the controller has 4"]))
    }
}
