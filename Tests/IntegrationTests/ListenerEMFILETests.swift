import DaemonTestSupport
import Foundation
import Glibc
import JSONRPC
import Posix
import Testing
import VhostUserFrontend

/// Controller listeners when the daemon is out of file descriptors (issue
/// 19, item 7): accept(2) fails with EMFILE and the connection stays queued,
/// so a level-triggered listener that only logs is reported readable again
/// at once and the control loop spins. With the reserve descriptor the
/// daemon closes such connections at once, stays idle, and serves frontends
/// again once descriptors are free.
@Suite("Controller listeners out of descriptors")
struct ListenerEMFILETests {
    /// Controllers, each taken by a frontend that only connects (one daemon descriptor each).
    static let controllers = 16
    /// Descriptors left to the daemon under its lowered limit: fewer than the controllers.
    static let room = 8
    /// Extra connections to one controller while the daemon has none left.
    static let burst = 100

    /// The numbers of the daemon's open descriptors.
    static func descriptors(_ pid: Int32) -> Set<Int> {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []
        return Set(names.compactMap { Int($0) })
    }

    /// The RLIMIT_NOFILE that leaves exactly `room` free numbers below it
    /// (a descriptor inherited at a high number does not count against it).
    static func limit(leaving room: Int, open: Set<Int>) -> Int {
        var free = 0
        var number = 0
        while true {
            if !open.contains(number) { free += 1 }
            number += 1
            if free == room { return number }
        }
    }

    /// utime + stime of `pid` in clock ticks (proc(5) /proc/PID/stat fields 14 and 15).
    static func cpuTicks(_ pid: Int32) -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let paren = text.lastIndex(of: ")")
        else { return nil }
        // After "pid (comm)": field 3 (state) is index 0, so field N is index N - 3.
        let fields = text[text.index(after: paren)...].split(separator: " ")
        guard fields.count > 12, let user = Int(fields[11]), let system = Int(fields[12]) else { return nil }
        return user + system
    }

    @Test func listenersDoNotSpinAndRecover() throws {
        let daemon = try DaemonProcess()
        defer { daemon.stop(); daemon.cleanUp() }
        for i in 0..<Self.controllers {
            try daemon.call("bdev_malloc_create", ["num_blocks": 4096, "block_size": 512, "name": .string("M\(i)")])
            try daemon.call("vhost_create_blk_controller", ["ctrlr": .string("vhost.\(i)"), "dev_name": .string("M\(i)")])
        }
        usleep(100_000)  // the last RPC connection is closed
        let pid = daemon.pid
        let before = Self.descriptors(pid)
        let limit = Self.limit(leaving: Self.room, open: before)
        let lowered = try runCommand("/usr/bin/prlimit", ["--pid", "\(pid)", "--nofile=\(limit):\(limit)"])
        try #require(lowered.status == 0, "prlimit: \(lowered.output)")

        // Every controller gets a frontend; the daemon has room for `room` of them.
        var held: [FileDescriptor] = []
        defer { for fd in held { fd.close() } }
        for i in 0..<Self.controllers {
            held.append(try UnixSocket.connect(path: daemon.socketDirectory + "/vhost.\(i)"))
        }
        // And a burst on the last controller.
        for _ in 0..<Self.burst {
            if let fd = try? UnixSocket.connect(path: daemon.socketDirectory + "/vhost.\(Self.controllers - 1)") { fd.close() }
        }
        usleep(200_000)
        let start = Self.cpuTicks(pid)
        usleep(1_000_000)
        let end = Self.cpuTicks(pid)
        let ticksPerSecond = Int(sysconf(Int32(_SC_CLK_TCK)))
        let busy = (end ?? 0) - (start ?? 0)
        let during = Self.descriptors(pid).filter { $0 < limit }.count
        print("EMFILE: limit \(limit), daemon held \(during) descriptors below it; \(busy) of \(ticksPerSecond) CPU ticks in 1 s")
        #expect(start != nil && end != nil)
        #expect(during >= limit - 1, "the daemon was not out of descriptors: \(during) of \(limit)")
        #expect(busy * 10 < ticksPerSecond, "the daemon used \(busy) ticks in 1 s: it spins")
        #expect(daemon.isRunning)
        // A frontend that connects meanwhile is closed at once (end of file), not left waiting.
        let late = try UnixSocket.connect(path: daemon.socketDirectory + "/vhost.\(Self.controllers - 1)")
        defer { late.close() }
        var pfd = pollfd(fd: late.rawValue, events: Int16(POLLIN), revents: 0)
        let ready = poll(&pfd, 1, 2000) == 1
        #expect(ready, "a connection made while out of descriptors was neither served nor closed")
        var byte: UInt8 = 0
        if ready { #expect(recv(late.rawValue, &byte, 1, Int32(MSG_DONTWAIT)) == 0) }
        let log = daemon.log
        for line in log.split(separator: "\n") where line.contains("out of file descriptors") { print(line) }
        let warnings = log.components(separatedBy: "out of file descriptors").count - 1
        #expect(warnings >= 1 && warnings <= 3, "\(warnings) warnings:\n\(log.suffix(2000))")

        // Once the frontends leave, descriptors are free again and a new one is served.
        for fd in held { fd.close() }
        held.removeAll()
        let deadline = ContinuousClock.now + .seconds(5)
        while Self.descriptors(pid).count > before.count && ContinuousClock.now < deadline { usleep(20_000) }
        #expect(Self.descriptors(pid).count <= before.count, "descriptors the sessions held were not released")
        let memory = try FrontendMemory(size: 8 << 20)
        defer { memory.close() }
        let frontend = try VhostUserFrontend(socketPath: daemon.socketDirectory + "/vhost.\(Self.controllers - 1)", memory: memory)
        defer { frontend.close() }
        try frontend.connect()
        try frontend.start(queueCount: 1, queueSize: 128)
        let load = try VerifiedIOLoad(frontend: frontend)
        #expect(load.waitForRounds(50), "no verified I/O after the descriptors came back")
        let outcome = load.stop()
        #expect(outcome.errors == 0, "\(outcome.firstError ?? "")")
        #expect((try? daemon.call("spdk_get_version"))?["version"] != nil)
    }

    /// The RPC socket and the metrics endpoint share the controllers' reserve
    /// (issue 19): out of descriptors, a burst of RPC and scrape connections is
    /// closed at once, the daemon stays idle and logs a line, not one per
    /// wake-up, and both answer again once descriptors are free.
    @Test func rpcAndMetricsListenersDoNotSpin() throws {
        let metricsPath = NSTemporaryDirectory() + "vb-emfile-metrics-\(getpid()).sock"
        let daemon = try DaemonProcess(extraArguments: ["--metrics", "unix:" + metricsPath])
        defer { daemon.stop(); daemon.cleanUp(); unlink(metricsPath) }
        try daemon.call("bdev_malloc_create", ["num_blocks": 4096, "block_size": 512, "name": "M0"])
        try daemon.call("vhost_create_blk_controller", ["ctrlr": "vhost.0", "dev_name": "M0"])
        usleep(100_000)
        let pid = daemon.pid
        let before = Self.descriptors(pid)
        let limit = Self.limit(leaving: 1, open: before)
        let lowered = try runCommand("/usr/bin/prlimit", ["--pid", "\(pid)", "--nofile=\(limit):\(limit)"])
        try #require(lowered.status == 0, "prlimit: \(lowered.output)")
        // One frontend takes the last free descriptor.
        let holder = try UnixSocket.connect(path: daemon.socketDirectory + "/vhost.0")
        usleep(200_000)
        var connections: [FileDescriptor] = []
        defer { for fd in connections { fd.close() } }
        for _ in 0..<Self.burst / 2 {
            if let fd = try? UnixSocket.connect(path: daemon.rpcSocket) { connections.append(fd) }
            if let fd = try? UnixSocket.connect(path: metricsPath) { connections.append(fd) }
        }
        usleep(200_000)
        let start = Self.cpuTicks(pid)
        usleep(1_000_000)
        let end = Self.cpuTicks(pid)
        let ticksPerSecond = Int(sysconf(Int32(_SC_CLK_TCK)))
        let busy = (end ?? 0) - (start ?? 0)
        print("EMFILE (RPC, metrics): limit \(limit); \(busy) of \(ticksPerSecond) CPU ticks in 1 s")
        #expect(start != nil && end != nil)
        #expect(busy * 10 < ticksPerSecond, "the daemon used \(busy) ticks in 1 s: it spins")
        #expect(daemon.isRunning)
        // Each waiting connection was closed (end of file), not left queued.
        var closed = 0
        for fd in connections {
            var pfd = pollfd(fd: fd.rawValue, events: Int16(POLLIN), revents: 0)
            var byte: UInt8 = 0
            if poll(&pfd, 1, 0) == 1 && recv(fd.rawValue, &byte, 1, Int32(MSG_DONTWAIT)) == 0 { closed += 1 }
        }
        #expect(closed == connections.count, "\(connections.count - closed) of \(connections.count) connections left waiting")
        let log = daemon.log
        let lines = log.split(separator: "\n").filter { $0.contains("out of file descriptors") || $0.contains("accept failed") }
        for line in lines { print(line) }
        #expect(lines.count >= 1 && lines.count <= 4, "\(lines.count) lines:\n\(log.suffix(2000))")
        #expect(lines.contains { $0.contains("RPC client") || $0.contains("metrics client") })

        // Free the descriptor: the RPC socket and the scrape answer again.
        holder.close()
        for fd in connections { fd.close() }
        connections.removeAll()
        let deadline = ContinuousClock.now + .seconds(5)
        while Self.descriptors(pid).count > before.count && ContinuousClock.now < deadline { usleep(20_000) }
        #expect((try? daemon.call("spdk_get_version"))?["version"] != nil)
        let scrape = try UnixSocket.connect(path: metricsPath)
        defer { scrape.close() }
        try scrape.writeAll(Array("GET /metrics HTTP/1.0\r\n\r\n".utf8))
        var reply: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buffer.withUnsafeMutableBytes { raw in (try? scrape.read(into: raw)) ?? 0 }
            if n <= 0 { break }
            reply += buffer[0..<n]
        }
        #expect(String(decoding: reply, as: UTF8.self).contains("200 OK"))
    }
}
