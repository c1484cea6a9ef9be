import DaemonTestSupport
import Foundation
import Glibc
import JSONRPC
import Testing
import VhostUserFrontend

/// What a connected queue costs the daemon (issue 19 item 4: queue memory
/// proportional to what can be in flight, not to the ring size a frontend
/// picks). Prints the figures docs/OPERATIONS.md ("Memory per session")
/// quotes; asserts only bounds that cannot flake.
@Suite("Memory per connected queue", .serialized)
struct QueueMemoryTests {
    static let queues = 32

    @Test(arguments: [UInt16(256), UInt16(32768)])
    func connectedQueuesCostMemoryProportionalToTheirSlots(queueSize: UInt16) throws {
        let daemon = try DaemonProcess(extraArguments: ["--log-level", "info"])
        defer { daemon.stop(); daemon.cleanUp() }
        try daemon.call("bdev_malloc_create", ["num_blocks": 2048, "block_size": 512, "name": "M0"])
        try daemon.call("vhost_create_blk_controller", ["ctrlr": "vhost.0", "dev_name": "M0"])
        // Rings of 32 queues of 32768: 26 MiB of guest memory.
        let guestBytes = 64 << 20
        let memory = try FrontendMemory(size: guestBytes)
        defer { memory.close() }
        let before = try ProcMemory(pid: daemon.pid)
        let f = try VhostUserFrontend(socketPath: daemon.socketDirectory + "/vhost.0", memory: memory)
        defer { f.close() }
        try f.connect()
        try f.start(queueCount: Self.queues, queueSize: queueSize)
        for q in 0..<Self.queues { #expect(try f.read(queue: q, sector: UInt64(q), count: 1).status == BlkWire.statusOK) }
        usleep(100_000)
        let after = try ProcMemory(pid: daemon.pid)

        // The guest memory mapping is the frontend's, not the queues'.
        let vszPerQueue = (after.vszBytes - before.vszBytes - guestBytes) / Self.queues
        let rssPerQueue = (after.rssBytes - before.rssBytes) / Self.queues
        print("queue memory: \(Self.queues) queues of \(queueSize): per queue VSZ \(vszPerQueue / 1024) KiB, "
            + "RSS \(rssPerQueue / 1024) KiB (daemon VSZ \(before.vszBytes >> 20) -> \(after.vszBytes >> 20) MiB, "
            + "RSS \(before.rssBytes >> 20) -> \(after.rssBytes >> 20) MiB)")
        // At most 1024 request slots per queue whatever the ring size: ~4.5 MiB of
        // address space each, resident only as slots are used.
        #expect(vszPerQueue < 8 << 20, "\(vszPerQueue) bytes of address space per queue")
        #expect(rssPerQueue < 1 << 20, "\(rssPerQueue) resident bytes per queue")
    }
}

/// VmSize and VmRSS of a process (/proc/PID/status).
struct ProcMemory {
    let vszBytes: Int
    let rssBytes: Int

    init(pid: Int32) throws {
        let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        func field(_ name: String) -> Int {
            for line in status.split(separator: "\n") where line.hasPrefix(name + ":") {
                return Int(line.dropFirst(name.count + 1).trimmingCharacters(in: .whitespaces).split(separator: " ").first ?? "") ?? 0
            }
            return 0
        }
        vszBytes = field("VmSize") * 1024
        rssBytes = field("VmRSS") * 1024
    }
}
