import DaemonTestSupport
import Foundation
import Glibc
import JSONRPC
import Posix
import Testing
import VhostUserFrontend

/// The daemon's threads other than its reactors (the control loop, thread-pool
/// workers, io_uring's kernel workers) run off the reactors' CPUs
/// (`ControlCPUs`, docs/OPERATIONS.md "CPU mask sizing"): read back from the
/// real daemon's /proc/PID/task/TID/status `Cpus_allowed_list` (proc(5)).
@Suite("Control threads off the reactors' CPUs", .serialized)
struct ControlCPUsTests {
    struct Thread: CustomStringConvertible {
        var tid: String
        var name: String
        var cpus: String
        var description: String { "\(tid) \(name): \(cpus)" }
    }

    /// Every thread of `pid`: its name (comm) and Cpus_allowed_list.
    static func threads(_ pid: Int32) -> [Thread] {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
        return tasks.sorted().compactMap { tid in
            let base = "/proc/\(pid)/task/\(tid)/"
            guard let comm = try? String(contentsOfFile: base + "comm", encoding: .utf8),
                  let status = try? String(contentsOfFile: base + "status", encoding: .utf8),
                  let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Cpus_allowed_list:") })
            else { return nil }
            let cpus = line.dropFirst("Cpus_allowed_list:".count).trimmingCharacters(in: .whitespaces)
            return Thread(tid: tid, name: comm.trimmingCharacters(in: .whitespacesAndNewlines), cpus: cpus)
        }
    }

    /// The reactor's CPU (the first allowed) and the rest; the machine must have two CPUs.
    static func layout() throws -> (reactor: Int, rest: CPUSet, allowed: CPUSet) {
        let allowed = CPUSet.allowed()
        let first = try #require(allowed.cpus.first)
        try #require(allowed.cpus.count >= 2, "these tests need two CPUs this process may use, found \(allowed.list)")
        return (first, allowed.subtracting(CPUSet([first])), allowed)
    }

    /// Default placement with the thread-pool engine: the main thread and
    /// every `vb-pool-N` worker on the CPUs the reactor does not use, the
    /// reactor on its own; the log line and framework_get_reactors say so.
    @Test func threadsOtherThanReactorsLeaveTheReactorCPU() throws {
        let (reactor, rest, _) = try Self.layout()
        let daemon = try DaemonProcess(cpumask: CPUSet([reactor]).hexMask, extraArguments: ["--engine", "thread-pool"])
        defer { daemon.stop(); daemon.cleanUp() }
        // Each new thread names and pins itself once it runs (PosixThread.start),
        // which a loaded machine may delay past the daemon's readiness: wait
        // (bounded) until the four workers carry their names.
        var threads = Self.threads(daemon.pid)
        let deadline = Date().addingTimeInterval(10)
        while threads.filter({ $0.name.hasPrefix("vb-pool-") }).count < 4 && Date() < deadline {
            usleep(20_000)
            threads = Self.threads(daemon.pid)
        }
        let reactors = threads.filter { $0.name.hasPrefix("reactor_") }
        let others = threads.filter { !$0.name.hasPrefix("reactor_") }
        #expect(reactors.count == 1 && reactors.allSatisfy { $0.cpus == "\(reactor)" }, "\(threads)")
        #expect(others.contains { $0.tid == "\(daemon.pid)" }, "the main thread is listed: \(threads)")
        #expect(others.filter { $0.name.hasPrefix("vb-pool-") }.count >= 4, "\(threads)")
        for thread in others { #expect(thread.cpus == rest.list, "\(thread) should run on \(rest.list)") }
        #expect(daemon.log.contains("control threads pinned to CPU(s) \(rest.list)"), "\(daemon.log.suffix(2000))")
        let reported = try daemon.call("framework_get_reactors")
        #expect(reported["control_cpumask"] == .string(rest.hexMask))
        #expect(reported["control_pinned"] == .bool(true))
    }

    /// io_uring's kernel workers (`iou-wrk-PID`, which run a reactor's
    /// blocking requests: here every request on a tmpfs file with
    /// `--tmpfs-io engine`) run on the control CPUs too, not on the reactor's.
    @Test func ioUringWorkersLeaveTheReactorCPU() throws {
        let (reactor, rest, _) = try Self.layout()
        let daemon = try DaemonProcess(cpumask: CPUSet([reactor]).hexMask, extraArguments: ["--tmpfs-io", "engine"])
        defer { daemon.stop(); daemon.cleanUp() }
        let path = "/dev/shm/vbd-\(daemon.directory.lastPathComponent)-cpus.img"
        #expect(FileManager.default.createFile(atPath: path, contents: Data(count: 4 << 20)))
        defer { try? FileManager.default.removeItem(atPath: path) }
        try daemon.call("bdev_uring_create", ["filename": .string(path), "name": "S0", "block_size": 512])
        try DataPathTests.createController(daemon, "c0", bdev: "S0")
        let memory = try FrontendMemory(size: 4 << 20)
        defer { memory.close() }
        let frontend = try DataPathTests.attach(daemon, "c0", memory: memory, queues: 1)
        defer { frontend.close() }
        var workers: [Thread] = []
        for round in 0..<200 where workers.isEmpty || round < 20 {
            let data = DataPathTests.pattern(64 << 10, seed: round % 7)
            #expect(try frontend.write(sector: UInt64(round % 64) * 128, data: data).status == 0)
            #expect(try frontend.discard(segments: [BlkSegment(sector: 0, sectors: 8192)]).status == 0)
            workers += Self.threads(daemon.pid).filter { $0.name.hasPrefix("iou-wrk-") && !workers.map(\.tid).contains($0.tid) }
        }
        try #require(!workers.isEmpty, "no io_uring worker ran a request: \(Self.threads(daemon.pid))")
        for worker in workers { #expect(worker.cpus == rest.list, "\(worker) should run on \(rest.list)") }
        #expect(!daemon.log.contains("io_uring's kernel workers stay where the kernel puts them"), "\(daemon.log.suffix(2000))")
    }

    /// `--control-cpus` names them, even the reactor's own CPU (the
    /// operator's choice; the log line says they share it).
    @Test func controlCPUsOption() throws {
        let (reactor, _, _) = try Self.layout()
        let daemon = try DaemonProcess(cpumask: CPUSet([reactor]).hexMask, extraArguments: ["--control-cpus", "[\(reactor)]"])
        defer { daemon.stop(); daemon.cleanUp() }
        let main = Self.threads(daemon.pid).first { $0.tid == "\(daemon.pid)" }
        #expect(main?.cpus == "\(reactor)", "\(Self.threads(daemon.pid))")
        #expect(daemon.log.contains("control threads pinned to CPU(s) \(reactor) (--control-cpus; they share CPU(s) \(reactor) with reactors)"),
                "\(daemon.log.suffix(2000))")
    }

    /// Reactors on every allowed CPU leave no CPU apart: the control threads
    /// are not pinned, and one log line says so.
    @Test func reactorsEverywhereLeaveControlUnpinned() throws {
        let (_, _, allowed) = try Self.layout()
        let daemon = try DaemonProcess(cpumask: allowed.hexMask)
        defer { daemon.stop(); daemon.cleanUp() }
        let main = Self.threads(daemon.pid).first { $0.tid == "\(daemon.pid)" }
        #expect(main?.cpus == allowed.list)
        let line = "control threads not pinned: the reactors use every CPU this process may run on (\(allowed.list))"
        #expect(daemon.log.components(separatedBy: line).count == 2, "\(daemon.log.suffix(2000))")
        #expect(try daemon.call("framework_get_reactors")["control_pinned"] == .bool(false))
    }

    /// A `--control-cpus` outside the allowed CPUs, or malformed, stops the start with a clear error.
    @Test func controlCPUsOutsideTheAllowedSetAreRefused() throws {
        let (reactor, _, allowed) = try Self.layout()
        let directory = "/tmp/vbd-cpus-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let base = ["-r", directory + "/rpc.sock", "-S", directory, "-m", CPUSet([reactor]).hexMask]
        let outside = try runCommand(DaemonProcess.daemonPath, base + ["--control-cpus", "[1023]"])
        #expect(outside.status != 0)
        #expect(outside.output.contains("--control-cpus 1023 includes CPUs this process may not use (allowed: \(allowed.list)"), "\(outside.output)")
        let malformed = try runCommand(DaemonProcess.daemonPath, base + ["--control-cpus", "two"])
        #expect(malformed.status != 0)
        #expect(malformed.output.contains("invalid --control-cpus 'two'"), "\(malformed.output)")
    }
}
