import DaemonTestSupport
import Foundation
import JSONRPC
import Testing
import VhostUserFrontend
import Virtio

/// Where a controller's queues run (issue 9, "two queues on two reactors"):
/// queue `i` on the `i`th reactor of the controller's cpumask, starting at
/// its least-loaded home reactor; a one-CPU cpumask keeps every queue on
/// that CPU. Checked through the queues' own reports (vhost_get_controllers,
/// framework_get_reactors, per-channel iostat) while data moves on each.
@Suite("Queue placement over reactors", .serialized,
       .enabled(if: ProcessInfo.processInfo.activeProcessorCount >= 2, "needs two CPUs for two reactors"))
struct QueuePlacementTests {
    static func queueReactors(_ daemon: DaemonProcess, _ ctrlr: String) throws -> [Int64] {
        let c = try daemon.call("vhost_get_controllers", ["name": .string(ctrlr)]).arrayValue?.first
        let queues = c?["sessions"]?.arrayValue?.first?["queues"]?.arrayValue ?? []
        return queues.map { $0["reactor"]?.intValue ?? -1 }
    }

    @Test func queuesSpreadOverTheControllersCPUs() throws {
        let daemon = try DaemonProcess(cpumask: "0x3")
        defer { daemon.stop(); daemon.cleanUp() }
        for i in 0..<3 {
            try daemon.call("bdev_malloc_create", ["num_blocks": 16384, "block_size": 512, "name": .string("M\(i)")])
        }
        // c0 takes reactor 0 as home, c1 the then least loaded reactor 1; c2 is pinned to CPU 1.
        try daemon.call("vhost_create_blk_controller", ["ctrlr": "c0", "dev_name": "M0"])
        try daemon.call("vhost_create_blk_controller", ["ctrlr": "c1", "dev_name": "M1"])
        try daemon.call("vhost_create_blk_controller", ["ctrlr": "c2", "dev_name": "M2", "cpumask": "0x2"])

        let memory = try FrontendMemory(size: 16 << 20)
        defer { memory.close() }
        let layout: [(ctrlr: String, queues: Int, reactors: [Int64])] = [
            ("c0", 3, [0, 1, 0]), ("c1", 2, [1, 0]), ("c2", 2, [1, 1]),
        ]
        var frontends: [VhostUserFrontend] = []
        defer { for f in frontends { f.close() } }
        for entry in layout {
            let f = try DataPathTests.attach(daemon, entry.ctrlr, memory: memory, queues: entry.queues)
            frontends.append(f)
            // Every queue moves data, wherever it runs; queue q does q + 1 round trips.
            for q in 0..<entry.queues {
                for n in 0...q {
                    #expect(try DataPathTests.roundTrip(f, queue: q, sector: UInt64(q * 64 + n), seed: q * 7 + n),
                            "\(entry.ctrlr) queue \(q)")
                }
            }
            #expect(try Self.queueReactors(daemon, entry.ctrlr) == entry.reactors, "\(entry.ctrlr)")
        }

        // Each queue counted by its own reactor: per-channel counts are exact.
        let channels = try #require(try daemon.call("bdev_get_iostat", ["name": "M0", "per_channel": true])["channels"]?.arrayValue)
        #expect(channels.map { $0["num_write_ops"]?.intValue ?? -1 } == [1, 2, 3])
        #expect(channels.map { $0["num_read_ops"]?.intValue ?? -1 } == [1, 2, 3])
        #expect(channels.map { $0["thread_id"]?.intValue ?? -1 } == [1, 2, 1])

        // framework_get_reactors lists each controller under every reactor serving some of its queues.
        let reactors = try #require(try daemon.call("framework_get_reactors")["reactors"]?.arrayValue)
        #expect(reactors.count == 2)
        #expect(reactors[0]["controllers"] == [["ctrlr": "c0", "queues": [0, 2]], ["ctrlr": "c1", "queues": [1]]])
        #expect(reactors[1]["controllers"] == [
            ["ctrlr": "c0", "queues": [1]], ["ctrlr": "c1", "queues": [0]], ["ctrlr": "c2", "queues": [0, 1]],
        ])

        // Queues stop on their own reactors: the totals survive the disconnect.
        for f in frontends { f.close() }
        frontends.removeAll()
        for entry in layout { try StatsTests.waitForNoSession(daemon, entry.ctrlr) }
        let total = try #require(try StatsTests.iostat(daemon, "M0"))
        #expect(StatsTests.int(total, "num_write_ops") == 6 && StatsTests.int(total, "num_read_ops") == 6)
        #expect(daemon.stop() == 0)
    }

    /// The daemon's threads named `prefix*`, with the CPUs each may run on
    /// (/proc/PID/task/TID/status, Cpus_allowed_list).
    static func threads(_ pid: Int32, named prefix: String) -> [(name: String, cpus: String)] {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
        return tasks.compactMap { tid in
            guard let status = try? String(contentsOfFile: "/proc/\(pid)/task/\(tid)/status", encoding: .utf8) else { return nil }
            var name = "", cpus = ""
            for line in status.split(separator: "\n") {
                if line.hasPrefix("Name:") { name = line.dropFirst(5).trimmingCharacters(in: .whitespaces) }
                if line.hasPrefix("Cpus_allowed_list:") { cpus = line.dropFirst(18).trimmingCharacters(in: .whitespaces) }
            }
            return name.hasPrefix(prefix) ? (name, cpus) : nil
        }
    }

    /// Reactors are pinned each to its CPU; the thread-pool workers an aio
    /// bdev's queue starts (from its reactor) may run on every CPU of the
    /// daemon's cpumask, with either engine.
    @Test(arguments: [[], ["--engine", "thread-pool"]])
    func threadPoolWorkersRunOnTheDaemonsCPUs(engine: [String]) throws {
        let daemon = try DaemonProcess(cpumask: "0x3", extraArguments: engine)
        defer { daemon.stop(); daemon.cleanUp() }
        let image = daemon.directory.appendingPathComponent("disk.img").path
        #expect(FileManager.default.createFile(atPath: image, contents: Data(count: 1 << 20)))
        try daemon.call("bdev_aio_create", ["filename": .string(image), "name": "A0", "block_size": 512])
        try daemon.call("vhost_create_blk_controller", ["ctrlr": "c0", "dev_name": "A0", "cpumask": "0x2"])
        let memory = try FrontendMemory(size: 16 << 20)
        defer { memory.close() }
        let f = try DataPathTests.attach(daemon, "c0", memory: memory, queues: 1)
        defer { f.close() }
        #expect(try DataPathTests.roundTrip(f, queue: 0, sector: 0, seed: 3))

        let reactors = Self.threads(daemon.pid, named: "reactor_").sorted { $0.name < $1.name }
        #expect(reactors.map(\.cpus) == ["0", "1"], "\(reactors)")
        let workers = Self.threads(daemon.pid, named: "vb-pool-")
        #expect(workers.count >= 4, "\(workers)")
        #expect(workers.allSatisfy { $0.cpus == "0-1" }, "\(workers)")
    }
}
