import DaemonTestSupport
import Foundation
import Glibc
import JSONRPC
import Testing
import VhostUser
import VhostUserFrontend
import Virtio

/// Busy queues on one reactor take turns: one call pops at most
/// `VirtqueueServer.batchCap` (64) heads, then the other queues go before it
/// continues (issue 8, fairness).
@Suite("Fairness between queues on one reactor")
struct FairnessTests {
    typealias D = DataPathTests

    @Test func aDeepQueueIsServedInBatchesAndItsNeighbourInBetween() throws {
        let daemon = try D.startDaemon()
        defer { daemon.stop(); daemon.cleanUp() }
        try D.withLogOnError(daemon) { () throws in
            try D.createBdev(daemon, .malloc, name: "M0")
            try D.createBdev(daemon, .malloc, name: "M1")
            try D.createController(daemon, "hog", bdev: "M0")
            try D.createController(daemon, "light", bdev: "M1")
            let memory = try FrontendMemory(size: 32 << 20)
            defer { memory.close() }
            let hog = try VhostUserFrontend(socketPath: daemon.socketDirectory + "/hog", memory: memory)
            defer { hog.close() }
            try hog.connect()
            try hog.start(queueCount: 1, queueSize: 1024)
            let light = try D.attach(daemon, "light", memory: memory, queues: 1)
            defer { light.close() }

            // Both queues get their work while the daemon is stopped, then it runs.
            kill(daemon.pid, SIGSTOP)
            let q = try hog.driverQueue(0)
            let requests = 200
            for i in 0..<requests {
                let header = try memory.allocate(16, alignment: 16)
                header.write(BlkWire.header(type: BlkWire.typeIn, sector: UInt64(i % 1000)))
                let data = try memory.allocate(512, alignment: 512)
                let status = try memory.allocate(1, alignment: 1)
                _ = try q.addChain([
                    ChainBuffer(header, writable: false), ChainBuffer(data, writable: true), ChainBuffer(status, writable: true),
                ])
            }
            _ = q.publishAndKick(force: true)
            let done = DispatchSemaphore(value: 0)
            let lightResult = ManagedResult()
            DispatchQueue.global().async {
                lightResult.ok = (try? light.read(sector: 1, count: 1).status) == BlkWire.statusOK
                done.signal()
            }
            usleep(100_000)
            kill(daemon.pid, SIGCONT)
            var completed = 0
            while completed < requests {
                _ = try q.waitUsed(timeout: .seconds(10))
                completed += 1
            }
            #expect(done.wait(timeout: .now() + .seconds(10)) == .success)
            #expect(lightResult.ok)

            let controllers = try daemon.call("vhost_get_controllers", ["name": "hog"])
            let queue = controllers.arrayValue?.first?["sessions"]?.arrayValue?.first?["queues"]?.arrayValue?.first
            let batch = queue?["mean_batch_size"]?.doubleValue ?? .infinity
            print("hog queue: \(queue?["requests"]?.intValue ?? -1) requests, mean batch \(batch)")
            #expect(batch <= 64, "one call popped more than the batch cap")
        }
    }
}

/// The light client's outcome, set on its thread, read after the semaphore.
private final class ManagedResult: @unchecked Sendable {
    var ok = false
}
