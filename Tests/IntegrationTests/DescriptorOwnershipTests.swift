import DaemonTestSupport
import Posix
import Testing
import VhostUser
import VhostUserFrontend

/// Every descriptor a frontend sends is kept by its owner or closed (the
/// vhost-user spec, "Communication": the back end closes what it does not
/// keep), on a session that stays up: replaced kick and call eventfds, the
/// error eventfd and SET_LOG_FD's descriptor (never used), and the memory
/// table's fds (closed once mapped). A leak would grow the daemon's
/// descriptor table by one per message.
@Suite("Descriptors a frontend sends are kept or closed")
struct DescriptorOwnershipTests {
    @Test func replacedAndUnusedDescriptorsAreClosed() throws {
        try DataPathTests.withMallocFrontend { daemon, f in
            let memory = f.memory
            #expect(f.replyAck, "each message below is acked, so the daemon has handled it before the count")
            let q = try f.driverQueue(0)
            #expect(try DataPathTests.roundTrip(f, sector: 1, seed: 1))
            let baseline = HostileRPCTests.fdCount(daemon.pid)
            let rounds = 40
            for round in 0..<rounds {
                // A new call eventfd for the running queue: the old one is closed.
                let call = try EventFD()
                defer { call.close() }
                try f.channel.send(VhostUserMessage(request: .setVringCall, payload: .u64(0), fds: [call.fd]), ack: true)
                // The frontend's own kick again (the queue stops and restarts): the old copy is closed.
                try f.channel.send(VhostUserMessage(request: .setVringKick, payload: .u64(0), fds: [q.kickFD.fd]), ack: true)
                // Not used by the daemon: closed at once.
                try f.channel.send(VhostUserMessage(request: .setVringErr, payload: .u64(0), fds: [call.fd]), ack: true)
                try f.channel.send(VhostUserMessage(request: .setLogFD, fds: [call.fd]), ack: true)
                // The same table again: mapped anew, its fds closed, the old mapping retired.
                if round % 8 == 0 {
                    let fds = [FileDescriptor](repeating: memory.fd, count: memory.regions.count)
                    try f.channel.send(VhostUserMessage(request: .setMemTable, payload: .memoryTable(memory.regions), fds: fds), ack: true)
                }
            }
            let after = HostileRPCTests.fdCount(daemon.pid)
            #expect(after <= baseline + 4, "daemon descriptors \(baseline) -> \(after) after \(rounds) rounds")
            // The queue still runs on the last kick and the driver's own call eventfd.
            try f.channel.send(VhostUserMessage(request: .setVringCall, payload: .u64(0), fds: [q.callFD.fd]), ack: true)
            #expect(try DataPathTests.roundTrip(f, sector: 2, seed: 2))
            #expect(daemon.isRunning)
        }
    }
}
