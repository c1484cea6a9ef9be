import DaemonTestSupport
import Foundation
import Glibc
import JSONRPC
import Testing
import VhostUserFrontend
import Virtio

/// The reactor loop's counters in framework_get_reactors (`loop`) and the
/// queues' pop batches in vhost_get_controllers (issue 23), against the real
/// daemon: they must follow what the loop did, with polling off and on.
@Suite("Reactor loop counters against the running daemon")
struct LoopCountersTests {
    static let names = [
        "sleeps", "poll_phases", "poll_rounds", "empty_poll_rounds", "poll_window_offs", "poll_window_grows",
        "poll_window_probes", "poll_window_ns", "engine_submits", "engine_submitted", "poll_ns",
    ]

    static func loop(_ daemon: DaemonProcess) throws -> [String: Int64] {
        let reactors = try daemon.call("framework_get_reactors")
        let r = try #require(reactors["reactors"]?.arrayValue?.first)
        let loop = try #require(r["loop"])
        var out: [String: Int64] = ["busy": StatsTests.int(r, "busy"), "idle": StatsTests.int(r, "idle")]
        for name in names { out[name] = StatsTests.int(loop, name) }
        return out
    }

    static func queue(_ daemon: DaemonProcess) throws -> JSON {
        let controller = try daemon.call("vhost_get_controllers", ["name": "vhost.0"]).arrayValue?.first
        return try #require(controller?["sessions"]?.arrayValue?.first?["queues"]?.arrayValue?.first)
    }

    /// Starts a malloc-backed daemon with `pollMaxMicroseconds`, reads
    /// `count` blocks one at a time, and returns the counters before and after.
    static func readOneAtATime(
        pollMaxMicroseconds: Int, count: Int, gapMicroseconds: UInt32 = 0
    ) throws -> (before: [String: Int64], after: [String: Int64], queue: JSON) {
        let daemon = try DaemonProcess(cpumask: "0x1", extraArguments: ["--poll-max-us", "\(pollMaxMicroseconds)"])
        defer { daemon.stop(); daemon.cleanUp() }
        try DataPathTests.createBdev(daemon, .malloc, name: "M0")
        try DataPathTests.createController(daemon, "vhost.0", bdev: "M0")
        let memory = try FrontendMemory(size: 16 << 20)
        defer { memory.close() }
        let f = try DataPathTests.attach(daemon, "vhost.0", memory: memory, queues: 1)
        defer { f.close() }
        let before = try loop(daemon)
        for i in 0..<count {
            #expect(try f.read(queue: 0, sector: UInt64(i % 64) * 8, count: 8).status == BlkWire.statusOK)
            if gapMicroseconds > 0 { usleep(gapMicroseconds) }
        }
        let after = try loop(daemon)
        return (before, after, try queue(daemon))
    }

    @Test func withoutPollingEveryRequestIsAWakeUp() throws {
        let n = 40
        let (before, after, q) = try Self.readOneAtATime(pollMaxMicroseconds: 0, count: n)
        for name in Self.names where name != "poll_window_ns" {
            #expect((after[name] ?? -1) >= (before[name] ?? 0), "\(name) never goes back")
        }
        // One request at a time, each announced by a kick to a sleeping reactor.
        #expect((after["sleeps"] ?? 0) - (before["sleeps"] ?? 0) >= Int64(n))
        #expect(after["poll_phases"] == 0 && after["poll_rounds"] == 0 && after["poll_ns"] == 0)
        #expect(after["poll_window_ns"] == 0 && after["poll_window_grows"] == 0 && after["poll_window_probes"] == 0)
        // Each kick read is re-armed: at least one submission per request, never more operations than submitted.
        let submits = (after["engine_submits"] ?? 0) - (before["engine_submits"] ?? 0)
        let submitted = (after["engine_submitted"] ?? 0) - (before["engine_submitted"] ?? 0)
        #expect(submits >= Int64(n) && submitted >= submits)
        // Pop batches: every request came alone.
        #expect(StatsTests.int(q, "batches") == StatsTests.int(q, "requests"))
        #expect(StatsTests.int(q, "requests") == Int64(n))
    }

    @Test func withAWideWindowTheReactorPolls() throws {
        // 10 ms: the gap between this client's requests always fits.
        let (before, after, q) = try Self.readOneAtATime(pollMaxMicroseconds: 10_000, count: 200)
        let phases = (after["poll_phases"] ?? 0) - (before["poll_phases"] ?? 0)
        let rounds = (after["poll_rounds"] ?? 0) - (before["poll_rounds"] ?? 0)
        let empty = (after["empty_poll_rounds"] ?? 0) - (before["empty_poll_rounds"] ?? 0)
        // A phase is counted when it starts: one that began before the first reading (the
        // window is 10 ms, wider than any gap here) may hold all 200 requests, so the phases
        // started in between can be none; the rounds are added as they run.
        #expect((after["poll_phases"] ?? 0) >= 1 && rounds >= 1 && rounds >= phases, "phases \(phases) rounds \(rounds)")
        // A phase ends after a window without work: at least one empty round each (a phase still
        // running has had some: the client's gaps); the rounds that found work found the requests.
        #expect(empty >= phases && empty <= rounds)
        #expect(rounds - empty <= 200 + phases + 8, "rounds with work: the requests, and the RPCs reading these counters")
        // Grown from 4 µs, or opened at the maximum by a probe (the first wake-up, after set-up, is late).
        #expect((after["poll_window_grows"] ?? 0) + (after["poll_window_probes"] ?? 0) >= 1)
        #expect((after["poll_ns"] ?? 0) > (before["poll_ns"] ?? 0))
        #expect((after["poll_ns"] ?? 0) <= (after["busy"] ?? 0), "polling is part of busy time")
        #expect(StatsTests.int(q, "batches") >= 1 && StatsTests.int(q, "batches") <= StatsTests.int(q, "requests"))
    }

    /// Requests 2 ms apart against a 20 µs window: every wake-up is late, so
    /// the window stays stopped but for probes, and each failed probe doubles
    /// the wait for the next (1 ms to 64 ms, `PollWindow`): over 60 requests
    /// (at least 120 ms) a handful of probes, not one per request.
    @Test func probesOfAStoppedWindowBackOff() throws {
        let n = 60
        let (before, after, _) = try Self.readOneAtATime(pollMaxMicroseconds: 20, count: n, gapMicroseconds: 2_000)
        let probes = (after["poll_window_probes"] ?? 0) - (before["poll_window_probes"] ?? 0)
        let offs = (after["poll_window_offs"] ?? 0) - (before["poll_window_offs"] ?? 0)
        // 1 + 2 + 4 + ... + 64 ms = 127 ms covers 7 probes; a slow machine stretches the run, so allow 12.
        #expect(probes >= 1 && probes <= 12, "probes \(probes)")
        #expect(offs >= probes - 1, "each failed probe stops the window again (offs \(offs))")
        #expect((after["sleeps"] ?? 0) - (before["sleeps"] ?? 0) >= Int64(n), "the reactor slept for every request")
    }
}
